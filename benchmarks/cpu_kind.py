"""``python -m benchmarks.cpu_kind avx2 MODULE [ARGS...]``: run a benchmark module as if on an
AVX2-only CPU (no AVX-512, no VNNI, no native bf16; the kind most laptops are, and one of the kinds
this project's machines come in), on a CPU that has more.

Every library that picks its kernels by CPU feature is told to stop at AVX2, through its own switch:

- PyTorch's ATen kernels: ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's dispatch, ``torch.backends.cpu``);
- oneDNN (PyTorch's mkldnn and CTranslate2's int8 paths): ``ONEDNN_MAX_CPU_ISA=AVX2``;
- Intel MKL (PyTorch's fp32 GEMM, CTranslate2's GEMMs): ``MKL_ENABLE_INSTRUCTIONS=AVX2``;
- CTranslate2's own kernels: ``CT2_FORCE_CPU_ISA=AVX2``;
- this project's one ISA-dependent decision, :func:`compression.device.cpu_has_native_bf16`
  (bf16 autocast ``auto``, the quantize ``auto`` rule), answers False through
  ``tests/cpu_kind/sitecustomize.py`` (``COMPRESSION_TEST_CPU_KIND=no-bf16``).

What this gives is the AVX2 code paths at this CPU's clock, caches and memory, not an AVX2-only
CPU's speed: ratios measured this way (one model against another, one setting against another) are
a stand-in for that kind, labelled as such in every result (``machine["cpu_kind_limit"]``) and kept
apart from the real machine's (results go to ``benchmarks/results/cpu-kind-avx2[/full]/``).
"""

from __future__ import annotations

import os
import sys

from benchmarks import common

#: The environment each emulated CPU kind sets (see the module docstring).
KINDS = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "CT2_FORCE_CPU_ISA": "AVX2",
        "COMPRESSION_TEST_CPU_KIND": "no-bf16",
    },
}


def kind_env(kind: str, base: dict | None = None) -> dict:
    """``base`` (default ``os.environ``) with ``kind``'s limits, ``PYTHONPATH`` extended by
    ``tests/cpu_kind`` (the bf16 probe's override) and :data:`common.CPU_KIND_LIMIT_VAR` set.

    Raises:
        ValueError: an unknown ``kind`` (the message lists :data:`KINDS`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown CPU kind {kind!r}: choose one of {', '.join(KINDS)}")
    env = dict(os.environ if base is None else base)
    paths = [str(common.ROOT / "tests" / "cpu_kind"), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, **KINDS[kind], "PYTHONPATH": os.pathsep.join(paths), common.CPU_KIND_LIMIT_VAR: kind}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in KINDS:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        print(f"usage: python -m benchmarks.cpu_kind {{{','.join(KINDS)}}} MODULE [ARGS...]  "
              "(MODULE: e.g. benchmarks.deploy)", file=sys.stderr)
        return 2
    kind, module, *args = argv
    os.execvpe(sys.executable, [sys.executable, "-m", module, *args], kind_env(kind))
    return 0  # not reached: the module replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
