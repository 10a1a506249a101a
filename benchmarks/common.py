"""Shared helpers of the benchmark suite: machine facts, A/B alternation, timing, result files, tables.

Every comparison in the suite is measured in the same process, alternating A and B (A, B, A, B ...)
so that load from other processes on a shared machine hits both sides alike, and is reported as the
median of the per-pair ratios A_i / B_i with its min and max.

Data come from ``../shared`` (relative to the repository root): the XSum pairs in
``../shared/data/xsum/{train,validation}.jsonl`` and the T5 SentencePiece vocabulary in
``../shared/tokenizers/t5``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compression.files import atomic_write_text

#: Repository root (the folder holding ``compression/`` and ``benchmarks/``).
ROOT = Path(__file__).resolve().parent.parent
#: Set by ``python -m benchmarks.cpu_kind KIND ...`` to the CPU kind the run emulates (``avx2``).
CPU_KIND_LIMIT_VAR = "BENCHMARK_CPU_KIND_LIMIT"


def cpu_kind_limit() -> str | None:
    """The CPU kind this process emulates (:mod:`benchmarks.cpu_kind`), or None on the real CPU."""
    return os.environ.get(CPU_KIND_LIMIT_VAR) or None


#: Where ``write_result`` puts ``<name>.json`` (and modules put their figures); under an emulated
#: CPU kind its own ``cpu-kind-KIND/`` subfolder, so those results never replace the real CPU's.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
if cpu_kind_limit():
    RESULTS_DIR = RESULTS_DIR / f"cpu-kind-{cpu_kind_limit()}"


def use_results_dir(quick: bool) -> Path:
    """In full mode, move :data:`RESULTS_DIR` to its ``full/`` subfolder (the quick tables are the
    README's; the full ones live beside them), for the suite and for a module run on its own;
    returns it."""
    global RESULTS_DIR
    if not quick and RESULTS_DIR.name != "full":
        RESULTS_DIR = RESULTS_DIR / "full"
    return RESULTS_DIR
#: The shared data folder next to the repository.
SHARED_DIR = ROOT.parent / "shared"
XSUM_DIR = SHARED_DIR / "data" / "xsum"
T5_TOKENIZER_DIR = SHARED_DIR / "tokenizers" / "t5"
#: CPU flags worth reporting (bf16/int8 matrix units and vector extensions).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8",
             "amx_tile", "avx512_fp16")


class SharedDataMissing(RuntimeError):
    """``../shared`` (XSum pairs or the T5 vocabulary) is not next to the repository."""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty set where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed
        return None


def machine_info() -> dict:
    """Facts about this machine and software stack, stored with every result.

    Returns a dict: ``cpu`` (model name), ``cpu_count`` (``os.cpu_count()``), ``torch_threads``,
    ``ram_gib``, ``gpu`` (name) and ``gpu_memory_gib`` (``None`` without CUDA), ``isa`` (flags of
    :data:`ISA_FLAGS` the CPU reports), ``python``, ``torch``, ``transformers``, ``bitsandbytes``,
    ``platform``, ``env`` (the OpenMP/MKL thread variables and the ISA limits of
    :mod:`benchmarks.cpu_kind`), ``cpu_kind_limit`` (the emulated CPU kind, or None) and ``date``
    (ISO, UTC).
    """
    import torch

    flags = cpu_flags()
    gpu = gpu_mem = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu, gpu_mem = props.name, round(props.total_memory / 2**30, 1)
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "gpu": gpu,
        "gpu_memory_gib": gpu_mem,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"),
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                                          "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                          "MKL_ENABLE_INSTRUCTIONS", "CT2_FORCE_CPU_ISA")},
        "cpu_kind_limit": cpu_kind_limit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_note(machine: dict) -> str:
    """One line naming the machine of :func:`machine_info` for a table's caption: CPU, cores, the
    reported ISA flags (``baseline`` when none), the emulated CPU kind when :mod:`benchmarks.cpu_kind`
    limits it, torch and the GPU when there is one."""
    limit = machine.get("cpu_kind_limit")
    return (f"{machine['cpu']}, {machine['cpu_count']} cores (ISA: {', '.join(machine['isa']) or 'baseline'}"
            + (f"; every library limited to {limit.upper()} code paths, emulating a {limit.upper()}-only CPU"
               if limit else "")
            + f"), torch {machine['torch']}" + (f", {machine['gpu']}" if machine["gpu"] else ""))


def _timed(fn: Callable[[], float | None]) -> float:
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    return float(value) if value is not None else elapsed


def alternate(a: Callable[[], float | None], b: Callable[[], float | None], repeats: int) -> dict:
    """Time ``a`` and ``b`` alternately (a, b, a, b, ... ``repeats`` times each).

    Each callable returns its own elapsed seconds, or ``None`` to be timed with ``perf_counter``
    around the call. Returns ``{"a": [s, ...], "b": [s, ...], "ratio_median", "ratio_min",
    "ratio_max"`` (of ``a_i / b_i``: above 1 means ``a`` is slower), ``"a_median", "b_median"}``.

    Raises:
        ValueError: ``repeats`` < 1.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        times_a.append(_timed(a))
        times_b.append(_timed(b))
    ratios = [x / y if y > 0 else float("inf") for x, y in zip(times_a, times_b)]
    return {
        "a": times_a,
        "b": times_b,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "a_median": statistics.median(times_a),
        "b_median": statistics.median(times_b),
    }


def rotated(names: list, round_index: int) -> list:
    """``names`` rotated left by ``round_index`` (mod its length): the order of round ``round_index``
    in a benchmark that rotates its arms (A B C, B C A, C A B, ...)."""
    shift = round_index % len(names) if names else 0
    return list(names[shift:]) + list(names[:shift])


def rotate(arms: dict[str, Callable[[], float | None]], rounds: int) -> dict[str, list[float]]:
    """Time any number of ``arms`` in turn, ``rounds`` times, the order rotated by one every round
    (a, b, c; b, c, a; c, a, b; ...) so no arm always runs first after another's warm caches.

    Each callable returns its own elapsed seconds, or ``None`` to be timed with ``perf_counter``
    around the call. Returns ``{name: [seconds per round, ...]}`` in the order of ``arms``.

    Raises:
        ValueError: ``rounds`` < 1 or no arms.
    """
    if rounds < 1 or not arms:
        raise ValueError("rotate needs at least one arm and one round")
    names = list(arms)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in rotated(names, index):
            times[name].append(_timed(arms[name]))
    return times


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``n`` inside the block (``torch.set_num_threads``),
    the previous count restored on leaving it, also after an error."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` (``perf_counter``), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


def write_result(name: str, payload: dict, report_text: str | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` = ``{"machine": machine_info(), "results": payload}``,
    and with ``report_text`` the printed tables as ``<name>.md`` (in a code block) beside it.

    Written to a temporary file in the same folder and renamed, so a reader never sees half a file.
    NaN/inf become ``null``; tensors and numpy scalars become numbers. Returns the JSON's path.
    """
    text = json.dumps({"machine": machine_info(), "results": _jsonable(payload)}, indent=2)
    path = atomic_write_text(RESULTS_DIR / f"{name}.json", text + "\n")
    if report_text is not None:
        atomic_write_text(RESULTS_DIR / f"{name}.md", "```\n" + report_text + "\n```\n")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table: a header of ``columns``, a rule, then one line per row (missing cells ``-``).

    Numbers are right-aligned (floats to 3 significant-ish digits, thousands separated), text left.
    """
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    numeric = [all(isinstance(row.get(col), (int, float)) or row.get(col) is None for row in rows)
               for col in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """The same table as :func:`format_table`, in GitHub markdown."""
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out.extend("| " + " | ".join(_cell(row.get(col)) for col in columns) + " |" for row in rows)
    return "\n".join(out)


def require_shared() -> Path:
    """The ``../shared`` folder. Raises :class:`SharedDataMissing` (saying what to do) when absent."""
    if not XSUM_DIR.is_dir():
        raise SharedDataMissing(
            f"{XSUM_DIR} not found: the benchmarks read the XSum pairs from ../shared/data/xsum next to the "
            "repository; put train.jsonl/validation.jsonl (fields id, document, summary) there"
        )
    return SHARED_DIR


def xsum_pairs(split: str, n: int | None = None) -> list[dict]:
    """The first ``n`` (all when ``None``) usable XSum pairs of ``split`` (``"train"``/``"validation"``).

    Each pair is ``{"id", "document", "summary"}``; rows with an empty document or summary are skipped.

    Raises:
        SharedDataMissing: ``../shared/data/xsum/<split>.jsonl`` does not exist.
    """
    require_shared()
    path = XSUM_DIR / f"{split}.jsonl"
    if not path.is_file():
        raise SharedDataMissing(f"{path} not found: splits present are "
                                f"{sorted(p.stem for p in XSUM_DIR.glob('*.jsonl'))}")
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if str(row.get("document") or "").strip() and str(row.get("summary") or "").strip():
                pairs.append({"id": row.get("id"), "document": row["document"], "summary": row["summary"]})
            if n is not None and len(pairs) >= n:
                break
    return pairs


def xsum_files() -> tuple[Path, Path]:
    """``(train.jsonl, validation.jsonl)`` paths. Raises :class:`SharedDataMissing` when absent."""
    require_shared()
    return XSUM_DIR / "train.jsonl", XSUM_DIR / "validation.jsonl"


def t5_tokenizer():
    """The real T5 vocabulary (``../shared/tokenizers/t5``) via ``compression.load.load_tokenizer``.

    Without ``../shared`` it falls back to ByT5's byte tokenizer (no files needed) and prints that it
    did: numbers then are not comparable to the reference ones.
    """
    from compression.load import load_tokenizer

    if (T5_TOKENIZER_DIR / "spiece.model").is_file():
        return load_tokenizer(T5_TOKENIZER_DIR)
    print(f"[benchmarks] {T5_TOKENIZER_DIR} not found: falling back to the ByT5 byte tokenizer "
          "(results are not comparable to the T5-vocabulary reference)", file=sys.stderr)
    return load_tokenizer("byt5")


def tokenizer_path() -> str:
    """The tokenizer argument for ``compression.load.build_preset``: the shared T5 folder or ``"byt5"``."""
    if (T5_TOKENIZER_DIR / "spiece.model").is_file():
        return str(T5_TOKENIZER_DIR)
    print(f"[benchmarks] {T5_TOKENIZER_DIR} not found: using the ByT5 byte tokenizer", file=sys.stderr)
    return "byt5"


def tiny_teacher(preset: str = "tiny", *, seed: int = 0):
    """``(model, tokenizer)``: a randomly initialised T5-efficient ``preset`` shape with the real T5
    vocabulary (ByT5 fallback), from ``compression.load.build_preset``; eval mode, fp32, CPU."""
    from compression.load import build_preset

    return build_preset(preset, tokenizer_path(), seed=seed)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB) since the last :func:`reset_peak_rss`.

    Linux: ``VmHWM`` of ``/proc/self/status``; elsewhere ``resource.getrusage`` (since start).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux ``/proc/self/clear_refs`` ``5``); ``False``
    where that is not possible (then :func:`peak_rss_mib` is the peak since the process started)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mib() -> float:
    """Current resident set size of this process (MiB) from ``/proc/self/statm`` (0 where absent)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def median(values: list[float]) -> float:
    """``statistics.median`` (re-exported so modules need one import)."""
    return statistics.median(values)


# ------------------------------------------------------------------------- one run per process
#: Prefix of the line a child process of :func:`run_child` prints its result on (see :func:`report`).
RESULT = "BENCH_RESULT"


def report(payload: dict) -> None:
    """In a child of :func:`run_child`: hand ``payload`` (JSON-able) back to the parent on stdout."""
    print(RESULT + " " + json.dumps(_jsonable(payload)), flush=True)


def run_child(command: list[str], *, env: dict | None = None, timeout_s: float = 3600.0) -> dict:
    """Run one benchmark child process (``python -m benchmarks.<module> ...``) from the repository root
    and return the payload it passed to :func:`report`.

    One measurement per fresh process, one process at a time: its peak RSS is its own, and no other
    benchmark process holds memory meanwhile (on this project's VMs two idle processes holding 2.5 GB
    each slowed a fine-tune run by half, through the page faults of its fresh allocations).

    Raises:
        RuntimeError: the child failed (exit status and the end of its stderr), reported nothing, or
            ran past ``timeout_s``.
    """
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"benchmark child {' '.join(command[-6:])} ran past {timeout_s:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {' '.join(command[-6:])} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


def child_env() -> dict:
    """Environment for :func:`run_child`: this one, quiet progress bars, and ``OMP_WAIT_POLICY=PASSIVE``
    unless set (see ``benchmarks/run.py``)."""
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
