"""Where to compute, and whether bfloat16 pays there: one device resolution, one CPU bf16 check.

Training (:mod:`compression.train`), distillation, quantization (:mod:`compression.auto_quantize`)
and the benchmarks all ask these two questions; they get the same answers from here.
"""

from __future__ import annotations

import torch

from .errors import CompressionError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _has_mps() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(name: str | torch.device = "auto", *, allowed: tuple[str, ...] = ("cpu", "cuda", "mps"),
                   error: type[CompressionError] = CompressionError) -> torch.device:
    """Turn a device name into a ``torch.device`` that exists on this machine.

    ``"auto"`` -> CUDA if available, then Apple MPS, then CPU (only kinds in ``allowed``);
    ``"cpu"``/``"cuda"``/``"mps"`` (or ``"cuda:1"``, or a ``torch.device``) as named.

    Args:
        allowed: device kinds the caller can use (bitsandbytes quantization: ``("cpu", "cuda")``).
        error: the :class:`CompressionError` subclass to raise (e.g. ``QuantizationError``).

    Raises:
        CompressionError (or ``error``): unknown device name, or a device not available here.
    """
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _has_mps()}
    choices = ", ".join(repr(kind) for kind in ("auto",) + allowed)
    if str(name) == "auto":
        kind = next(kind for kind in ("cuda", "mps", "cpu") if kind in allowed + ("cpu",) and available[kind])
        return torch.device(kind)
    try:
        resolved = torch.device(name)
    except (RuntimeError, TypeError):
        raise error(f"unknown device {name!r}: choose {choices}") from None
    if resolved.type not in allowed:
        raise error(f"unknown device {name!r}: choose {choices}")
    if not available.get(resolved.type, False):
        raise error(f"device {name!r} is not available on this machine: choose 'auto' or 'cpu'")
    return resolved


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: AVX512-BF16 or AMX-BF16 (Intel Cooper
    Lake / Sapphire Rapids and later, AMD Zen 4 and later). There oneDNN's bf16 GEMM runs several
    times faster than fp32 (measured on a 2-core AMD EPYC with AVX512-BF16: 858 against 199 GFLOP/s
    at 2048^3, ``benchmarks/results/full/finetune.json``). Elsewhere bf16 is emulated, and slower.

    One check order: torch's own CPU capability probes (``torch.cpu._is_avx512_bf16_supported``,
    ``_is_amx_tile_supported``) where this torch has them, else the ``/proc/cpuinfo`` flags, else
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported``.
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(check is not None for check in checks):
        return any(check() for check in checks)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_native(device: torch.device) -> bool:
    """Whether bfloat16 matrix multiplication runs natively on ``device``: a CUDA GPU that supports
    bf16 (Ampere or newer), or a CPU per :func:`cpu_has_native_bf16`. False elsewhere (MPS)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def device_facts() -> dict:
    """The device ``resolve_device("auto")`` picks, for a one-line description: ``{"kind": "cuda"|"mps"|
    "cpu", "name": the GPU's name or ``None``, "memory_gib": its memory in GiB or ``None``}``."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"kind": "cuda", "name": props.name, "memory_gib": props.total_memory / 2**30}
    if _has_mps():
        return {"kind": "mps", "name": None, "memory_gib": None}
    return {"kind": "cpu", "name": None, "memory_gib": None}
