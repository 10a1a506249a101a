"""Where one fp32 fine-tune step's CPU time goes: ``python -m benchmarks.step_profile [--steps N]``.

The first measurement the fine-tune speed issue asks for on a CPU without native bf16: the step of
``python -m benchmarks.finetune`` (T5-efficient ``tiny`` shape, random initialisation with seed 0, the
real T5 vocabulary; 8 XSum pairs with the ``"summarize: "`` prefix, sources 512 / targets 64 tokens,
collated by :func:`compression.data.make_collator`; model in training mode, so T5's dropout of 0.1
is on, as in ``Seq2SeqTrainer``), one forward, backward and ``torch.optim.AdamW`` step, fp32.

1. **Profile** (``torch.profiler``, CPU activities, ``--steps`` steps after two warm-up steps): each
   ATen operator's *self* CPU time, grouped into what it does (:data:`GROUPS`: matmuls of the linear
   layers and ``lm_head``, attention matmuls, softmax and masking, dropout's random masks, the
   cross-entropy, the optimizer step, everything else), in ms per step and % of the profiled total.
2. **What dropout's random masks cost**, timed: the same steps alternated, order rotated each round,
   with PyTorch's masks, with :mod:`compression.fast_dropout`'s (the fine-tune default on a CPU) and
   with every dropout probability set to 0 (``nn.Dropout`` modules and T5's attention-probability
   dropout). No dropout is the bound any faster mask generation can approach; it is not a setting to
   change, since dropout changes what the model learns.

Writes ``benchmarks/results/step_profile.{json,md}`` with the machine. Timings depend on the machine
and its load; the JSON says which machine it was.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks import common

NAME = "step_profile"
SOURCE_LENGTH, TARGET_LENGTH, BATCH_SIZE, LEARNING_RATE = 512, 64, 8, 3e-4
#: Operator-name groups of the forward and backward passes, checked in order (first match wins); the
#: optimizer step is timed apart.
GROUPS = [
    ("dropout random masks", ("bernoulli",)),
    ("attention matmuls (bmm)", ("aten::bmm", "aten::baddbmm")),
    ("linear-layer and lm_head matmuls (mm)", ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul")),
    ("cross-entropy (log-softmax, NLL)", ("log_softmax", "nll_loss", "cross_entropy")),
    ("attention softmax and masking", ("softmax", "aten::where", "isneginf", "aten::all", "masked_fill")),
    ("embedding lookup and its gradient", ("embedding",)),
]


def _batch(tokenizer, model) -> dict:
    """The first :data:`BATCH_SIZE` XSum training pairs, tokenized as the fine-tune benchmark does
    (:func:`compression.data.tokenize_pairs`) and collated (:func:`compression.data.make_collator`)."""
    import datasets

    from compression.data import make_collator, tokenize_pairs

    pairs = datasets.Dataset.from_list(common.xsum_pairs("train", BATCH_SIZE))
    tokenized = tokenize_pairs(pairs, tokenizer, prefix="summarize: ", max_source_length=SOURCE_LENGTH,
                               max_target_length=TARGET_LENGTH)
    return make_collator(tokenizer, model)([tokenized[i] for i in range(len(tokenized))])


def _step_fn(model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def _no_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout") and isinstance(module.dropout, float):  # T5Attention's probability
            module.dropout = 0.0


def profile_step(steps: int = 3) -> dict:
    """Profile ``steps`` forward+backward passes (after 2 warm-up steps) and group their self CPU time;
    time the optimizer step (``AdamW.step`` + ``zero_grad``) apart, with ``time.perf_counter``.

    Returns:
        ``{"step_ms": forward+backward wall ms + optimizer ms, "total_self_ms": the same as operator
        self CPU ms, "groups": [{"group", "ms_per_step", "percent"}...] (largest first), "top_ops": the
        12 largest operators of forward+backward [{"op", "ms_per_step", "calls_per_step"}]}``.
    """
    from torch.profiler import ProfilerActivity, profile

    model, tokenizer = common.tiny_teacher()
    model.train()
    batch = _batch(tokenizer, model)
    step = _step_fn(model, batch)
    for _ in range(2):
        step()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            model(**batch).loss.backward()
        forward_backward_ms = (time.perf_counter() - start) / steps * 1e3

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    optimizer_ms = common.median(common.time_call(optimizer_step, repeats=steps)) * 1e3
    groups = {name: 0.0 for name, _ in GROUPS}
    groups["other elementwise and bookkeeping"] = 0.0
    aten = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    for event in aten:
        ms = event.self_cpu_time_total / 1e3 / steps
        name = next((name for name, needles in GROUPS if any(needle in event.key for needle in needles)),
                    "other elementwise and bookkeeping")
        groups[name] += ms
    groups["optimizer step (AdamW, timed apart)"] = optimizer_ms
    total = sum(groups.values())
    rows = sorted(({"group": name, "ms_per_step": ms, "percent": 100 * ms / total if total else 0.0}
                   for name, ms in groups.items()), key=lambda row: -row["ms_per_step"])
    top = sorted(aten, key=lambda e: -e.self_cpu_time_total)[:12]
    return {"step_ms": forward_backward_ms + optimizer_ms, "total_self_ms": total, "groups": rows,
            "top_ops": [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                         "calls_per_step": e.count / steps} for e in top]}


def dropout_cost(steps: int = 4, rounds: int = 3) -> dict:
    """Time ``steps`` steps with PyTorch's dropout masks (T5's 0.1), with :mod:`compression.fast_dropout`'s
    masks (same dropout, :func:`compression.fast_dropout.use_fast_dropout`) and with all dropout at 0,
    ``rounds`` times, the order rotated every round.

    Returns median seconds per step ``{"with_dropout_s", "fast_masks_s", "without_dropout_s"}`` and the
    medians (min, max) of the per-round ratios: ``"ratio"`` with/without (1.25: dropout's masks make a
    step 25 % slower), ``"fast_ratio"`` fast masks/without, ``"fast_speedup"`` with/fast masks.
    """
    from compression.fast_dropout import use_fast_dropout

    steps_by_arm = {}
    for arm in ("torch", "fast", "none"):
        model, tokenizer = common.tiny_teacher()
        model.train()
        if arm == "fast":
            use_fast_dropout(model)
        elif arm == "none":
            _no_dropout(model)
        steps_by_arm[arm] = _step_fn(model, _batch(tokenizer, model))
        steps_by_arm[arm]()

    def run_steps(step: Callable[[], None]) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            return (time.perf_counter() - start) / steps
        return timed

    times = common.rotate({arm: run_steps(step) for arm, step in steps_by_arm.items()}, rounds)

    def ratios(a: str, b: str) -> tuple[float, float, float]:
        values = [x / y for x, y in zip(times[a], times[b])]
        return common.median(values), min(values), max(values)

    result = {"with_dropout_s": common.median(times["torch"]), "fast_masks_s": common.median(times["fast"]),
              "without_dropout_s": common.median(times["none"])}
    for key, (a, b) in {"ratio": ("torch", "none"), "fast_ratio": ("fast", "none"),
                        "fast_speedup": ("torch", "fast")}.items():
        result[key], result[f"{key}_min"], result[f"{key}_max"] = ratios(a, b)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the dropout alternation (default 3)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    try:
        profile = profile_step(args.steps)
        dropout = dropout_cost(rounds=args.rounds)
    except common.SharedDataMissing as error:
        print(f"error: {error}")
        return 2
    machine = common.machine_info()
    lines = [f"One fp32 fine-tune step (tiny preset, batch {BATCH_SIZE}, source {SOURCE_LENGTH} / target "
             f"{TARGET_LENGTH} tokens, dropout 0.1, AdamW) on {common.machine_note(machine)}: "
             f"{profile['step_ms']:,.0f} ms per "
             f"profiled step ({profile['total_self_ms']:,.0f} ms of operator self time)", "",
             common.format_table([{**row, "ms_per_step": round(row["ms_per_step"], 1), "percent": round(row["percent"], 1)}
                                  for row in profile["groups"]], ["group", "ms_per_step", "percent"]), "",
             "Largest operators:", "",
             common.format_table([{**row, "ms_per_step": round(row["ms_per_step"], 1)} for row in profile["top_ops"]],
                                 ["op", "ms_per_step", "calls_per_step"]), "",
             f"Dropout's cost, alternated ({args.rounds} rounds of 4 steps): {dropout['with_dropout_s']:.2f} s per "
             f"step with dropout 0.1, {dropout['without_dropout_s']:.2f} s without: x{dropout['ratio']:.2f} "
             f"({dropout['ratio_min']:.2f}-{dropout['ratio_max']:.2f}); with compression.fast_dropout's masks "
             f"{dropout['fast_masks_s']:.2f} s: x{dropout['fast_ratio']:.2f} of no dropout, "
             f"{dropout['fast_speedup']:.2f}x faster than PyTorch's masks "
             f"({dropout['fast_speedup_min']:.2f}-{dropout['fast_speedup_max']:.2f})"]
    text = "\n".join(lines)
    print(text)
    common.write_result(NAME, {"profile": profile, "dropout": dropout,
                               "settings": {"source_length": SOURCE_LENGTH, "target_length": TARGET_LENGTH,
                                            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE}}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
