"""Run the test suite as if on another CPU kind: the project's one ISA-dependent decision point,
:func:`compression.device.cpu_has_native_bf16` (bf16 autocast ``auto``, the quantize ``auto``
rule, the bf16 variants of the benchmarks), reads torch's CPU probes, and this file replaces them
in every Python process started with it on ``PYTHONPATH`` (the test processes and the CLI/app
subprocesses they start):

    COMPRESSION_TEST_CPU_KIND=native-bf16 PYTHONPATH=tests/cpu_kind bash .ci/run   # as on AVX512-BF16/AMX
    COMPRESSION_TEST_CPU_KIND=no-bf16 PYTHONPATH=tests/cpu_kind bash .ci/run       # as on AVX2 only

The kernels torch runs are the real CPU's (bf16 is emulated, slower, where the CPU lacks it): what
this checks is that no test's expectation depends on what the CPU reports, the failure that once
made the suite red on CPUs without native bf16.
"""

import os

_KINDS = {"native-bf16": True, "no-bf16": False}
_kind = os.environ.get("COMPRESSION_TEST_CPU_KIND")
if _kind:
    if _kind not in _KINDS:
        raise SystemExit(f"COMPRESSION_TEST_CPU_KIND={_kind!r}: choose one of {', '.join(_KINDS)}")
    import torch.cpu

    _native = _KINDS[_kind]
    torch.cpu._is_avx512_bf16_supported = lambda: _native
    torch.cpu._is_amx_tile_supported = lambda: _native
