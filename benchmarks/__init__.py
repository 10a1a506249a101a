"""The benchmark suite: fine-tune throughput and the GEMM limit, evaluation, generation speed, size,
and scaling, each measured against plain Hugging Face in the same run (``python -m benchmarks``).

Every module exposes ``NAME`` and ``run(quick: bool) -> dict``, which prints its table, writes
``benchmarks/results/<NAME>.json`` (with the machine it ran on) and returns the payload; optionally
``table(payload) -> str`` and ``headline(payload) -> list[dict]`` (rows for the summary table with
keys ``benchmark``, ``measure``, ``result``, ``baseline``, ``ratio``).
"""
