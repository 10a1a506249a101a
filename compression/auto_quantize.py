"""``--quantize auto``: the smallest quantized copy that is not slower than the float32 student,
chosen by measuring on this machine, cached per machine; never "no copy".

Why measure: whether a quantized copy is faster depends on the CPU. bitsandbytes' CPU kernels
dequantize their weights at every matmul (Dettmers et al. 2022, LLM.int8(), section 3), so they
gain only by moving fewer bytes; bf16 is fast only with native bf16 instructions (AVX512-BF16,
AMX) and emulated, several times slower, elsewhere. Measured in this project: on a 2-core AMD EPYC
with AVX512-BF16 every mode beat float32; on a Xeon with AMX 8-bit and 4-bit only tied; on an
EPYC without AVX-512 the 8-bit copy took 2,792 ms per summary against 1,521 ms for float32
(``benchmarks/results/size.json``, issue 14). So a fixed rule picks wrong somewhere.

How: at run time the student (float32) and each candidate mode are timed alternately
(:func:`compression.timing.measure_latency`: greedy, batch 1, a few short forced-length
generations, median of the rounds), and each candidate's size on disk is measured. On a CPU
without native bf16 the weights bitsandbytes leaves unquantized (embedding, ``lm_head``, T5's
``wo``) are kept in float32 rather than bf16, which such a CPU only emulates. The choice is
the smallest candidate whose speed is at least :data:`NOT_SLOWER` times float32's (timing noise on a
shared machine is a few per cent); when every candidate is slower, the fastest of them, saying so.
bf16 is not timed on a CPU without native bf16 (skipped, with the reason). The measured ratios are
cached in a small JSON file keyed by the machine (CPU model, cores, bf16 support, torch and
bitsandbytes versions, device) and the model's shape, so the next run on the same machine and
shape decides at once.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import CompressionError

logger = logging.getLogger(__name__)

#: Candidates, smallest file first (bitsandbytes NF4, LLM.int8(), bfloat16).
CANDIDATES = ("4bit", "8bit", "bf16")
#: A candidate at least this fraction of float32's speed counts as "not slower" (timing noise).
NOT_SLOWER = 0.95
_LABELS = {"4bit": "4-bit", "8bit": "8-bit", "bf16": "bf16", "fp16": "fp16", "fp4": "fp4"}


@dataclass
class AutoChoice:
    """What ``auto`` chose and why.

    ``mode``: the chosen quantization mode (never ``"none"``). ``reason``: one line for people,
    e.g. ``"8-bit chosen: 45 % smaller, 0.96x speed; bf16 skipped: this CPU has no native bf16"``.
    ``speed``: candidate -> speed relative to the float32 student (x, > 1 faster).
    ``size_fraction``: candidate -> its size on disk / the float32 student's. ``skipped``:
    candidate -> why it was not timed. ``all_slower``: every timed candidate was slower than
    float32. ``cached``: the figures came from the machine's cache file. ``rest_dtype``: the dtype
    of the weights bitsandbytes leaves unquantized (:func:`compression.quantize.quantize`):
    ``"float32"`` on a CPU without native bf16, where bf16 arithmetic is emulated, else
    ``"bfloat16"``; pass it to ``quantize`` with the mode.
    """

    mode: str
    reason: str
    speed: dict[str, float] = field(default_factory=dict)
    size_fraction: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    all_slower: bool = False
    cached: bool = False
    rest_dtype: str = "bfloat16"

    def to_dict(self) -> dict:
        return asdict(self)


def choose(speed: dict[str, float], size_fraction: dict[str, float], skipped: dict[str, str] | None = None,
           *, not_slower: float = NOT_SLOWER) -> AutoChoice:
    """The choice from measured figures (pure: no timing, no CPU check).

    ``speed``/``size_fraction``: per timed candidate, as in :class:`AutoChoice`. Picks the smallest
    candidate with ``speed >= not_slower``; when none is, the fastest candidate (``all_slower``).
    With no timed candidate at all (every one skipped or failed), ``"8bit"`` (the most widely
    supported bitsandbytes mode) - never ``"none"``.
    """
    skipped = dict(skipped or {})
    timed = [mode for mode in speed if mode in size_fraction]
    notes = [f"{_LABELS.get(m, m)} skipped: {why}" for m, why in skipped.items()]
    if not timed:
        reason = "8-bit chosen: no quantized mode could be timed here"
        return AutoChoice("8bit", "; ".join([reason] + notes), dict(speed), dict(size_fraction), skipped, False)
    fast_enough = [m for m in timed if speed[m] >= not_slower]
    all_slower = not fast_enough
    if fast_enough:
        mode = min(fast_enough, key=lambda m: (size_fraction[m], -speed[m]))
        head = (f"{_LABELS.get(mode, mode)} chosen: {100 * (1 - size_fraction[mode]):.0f} % smaller, "
                f"{speed[mode]:.2f}x speed")
    else:
        mode = max(timed, key=lambda m: speed[m])
        head = (f"{_LABELS.get(mode, mode)} chosen as the fastest quantized copy, yet every quantized mode "
                f"is slower than float32 on this machine ({speed[mode]:.2f}x speed, "
                f"{100 * (1 - size_fraction[mode]):.0f} % smaller)")
    others = [f"{_LABELS.get(m, m)} {speed[m]:.2f}x, {100 * (1 - size_fraction[m]):.0f} % smaller"
              for m in timed if m != mode]
    parts = [head] + ([f"also timed: {'; '.join(others)}"] if others else []) + notes
    return AutoChoice(mode, "; ".join(parts), dict(speed), dict(size_fraction), skipped, all_slower)


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/summarizer-compression/quantize-auto.json`` (``~/.cache/...`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "summarizer-compression" / "quantize-auto.json"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(config, device: torch.device, native_bf16: bool) -> str:
    """The machine and model shape the cached figures hold for (one string)."""
    try:
        import bitsandbytes

        bnb = bitsandbytes.__version__
    except Exception:
        bnb = "none"
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{_cpu_name()} x{os.cpu_count()} threads {torch.get_num_threads()}")
    shape = [getattr(config, name, None) for name in ("model_type", "d_model", "d_ff", "encoder_ffn_dim",
                                                       "num_layers", "num_decoder_layers", "encoder_layers",
                                                       "decoder_layers", "vocab_size")]
    return json.dumps([machine, device.type, bool(native_bf16), torch.__version__, bnb, shape])


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, choice: AutoChoice) -> None:
    from .files import atomic_write_text

    cache = _read_cache(path)
    cache[key] = {"speed": choice.speed, "size_fraction": choice.size_fraction, "skipped": choice.skipped,
                  "rest_dtype": choice.rest_dtype}
    try:
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        logger.warning("could not cache the auto quantization choice in %s (%s)", path, exc)


def _measure(student_dir: Path, device: torch.device, candidates, skipped: dict, documents: list[str],
             prefix: str, rounds: int, max_new_tokens: int, rest_dtype: str,
             on_progress: Callable[[int, int, str], None] | None = None) -> tuple[dict, dict]:
    """Time float32 and each candidate alternately; size each candidate. Returns (speed, size).
    ``on_progress(done, total, what)`` after each copy made and each timing (``total``: copies + rounds x
    copies, fewer when a copy cannot run here)."""
    from .evaluate import size_on_disk_mib
    from .export import model_files_size_mib
    from .load import load_tokenizer
    from .quantize import quantize
    from .timing import measure_latency

    tokenizer = load_tokenizer(student_dir)
    reference = quantize(student_dir, "none", device=device)
    base_mib = model_files_size_mib(student_dir)
    models, sizes = {}, {}
    done, total = 0, len(candidates) * (1 + rounds)

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total, what)
    for mode in candidates:
        try:
            models[mode] = quantize(student_dir, mode, device=device, rest_dtype=rest_dtype)
        except CompressionError as exc:
            skipped[mode] = f"cannot run here ({str(exc).split(':')[0]})"
            total -= 1 + rounds
            continue
        sizes[mode] = size_on_disk_mib(models[mode]) / base_mib
        step(f"made the {mode} copy")
    common = dict(prefix=prefix, max_source_length=128, max_new_tokens=max_new_tokens, batch_size=1)
    times: dict[str, list[float]] = {mode: [] for mode in models}
    for _ in range(rounds):
        for mode, model in models.items():  # float32 before each candidate: load falls on both alike
            fp32 = measure_latency(reference, tokenizer, documents, **common)["ms_per_sample"]
            times[mode].append(fp32 / measure_latency(model, tokenizer, documents, **common)["ms_per_sample"])
            step(f"timed the {mode} copy against float32")
    return {mode: statistics.median(ratios) for mode, ratios in times.items()}, sizes


def auto_quantization(student_dir: str | Path, *, device: str | torch.device = "cpu",
                      documents: list[str] | None = None, prefix: str = "", candidates=CANDIDATES,
                      native_bf16: bool | None = None, cache_path: str | Path | None = None,
                      use_cache: bool = True, rounds: int = 2, max_new_tokens: int = 8,
                      on_progress: Callable[[int, int, str], None] | None = None) -> AutoChoice:
    """Choose the quantization mode for ``auto`` by measuring the saved student on this machine.

    Args:
        student_dir: the float32 student's ``save_pretrained`` folder (with its tokenizer).
        device: where the copy will run (``"cpu"``, ``"cuda"``, ``"auto"``).
        documents: texts to time on (the first is used; default: one fixed English sentence); timed greedily at
            batch 1 with exactly ``max_new_tokens`` new tokens, ``rounds`` alternated rounds.
        candidates: modes to consider (default :data:`CANDIDATES`).
        native_bf16: whether bf16 runs natively here (default: :func:`compression.device.bf16_native`);
            without it bf16 is skipped on a CPU, not timed.
        cache_path: the per-machine cache file (default :func:`default_cache_path`); ``use_cache``
            False times afresh (and updates the cache).
        on_progress: called as ``on_progress(done, total, what)`` after each quantized copy is made
            and each timing round of a copy (not called when the cache answers).

    Returns:
        :class:`AutoChoice` (its ``mode`` is never ``"none"``).

    Raises:
        ModelLoadError: ``student_dir`` is not a loadable model folder.
    """
    from transformers import AutoConfig

    from .device import bf16_native
    from .quantize import _resolve_device

    student_dir = Path(student_dir)
    target = _resolve_device(device)
    if native_bf16 is None:
        native_bf16 = bf16_native(target)
    config = AutoConfig.from_pretrained(student_dir, trust_remote_code=False)
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    key = cache_key(config, target, native_bf16)
    if use_cache:
        entry = _read_cache(path).get(key)
        if entry:
            choice = choose(entry["speed"], entry["size_fraction"], entry.get("skipped"))
            choice.cached = True
            choice.rest_dtype = entry.get("rest_dtype", "bfloat16")
            choice.reason += " (measured earlier on this machine)"
            return choice
    rest_dtype = "bfloat16" if native_bf16 or target.type == "cuda" else "float32"
    skipped = {}
    timed = []
    for mode in candidates:
        if mode in ("bf16", "fp16") and target.type == "cpu" and not native_bf16:
            skipped[mode] = "this CPU has no native bf16 (emulated, several times slower than float32)"
        else:
            timed.append(mode)
    texts = documents or ["The council approved a new budget for the city library on Monday after a long debate "
                          "about opening hours, staff and the cost of new books."]
    speed, sizes = _measure(student_dir, target, timed, skipped, texts[:1], prefix, rounds, max_new_tokens,
                            rest_dtype, on_progress)
    choice = choose(speed, sizes, skipped)
    choice.rest_dtype = rest_dtype
    _write_cache(path, key, choice)
    logger.info("auto quantization: %s", choice.reason)
    return choice
