"""Run folders: one folder per SFT run, written so a crash never leaves a file half-written.

Layout of ``runs/<YYYYmmdd-HHMMSS>-<name>/``:

- ``status.json``: ``{"status": "running" | "complete" | "failed" | "cancelled", "started_at",
  "finished_at", "reason", "pid", "host", "heartbeat"}``; a run without ``"complete"`` here is never
  reported as complete. While a run goes on, its process (``pid`` on ``host``) rewrites
  ``heartbeat`` (UTC, ISO 8601) every :data:`HEARTBEAT_SECONDS`; a reader that finds a "running"
  run whose process is gone (same host) or whose heartbeat is older than :data:`STALE_SECONDS`
  reports it ``"interrupted"`` (killed, crashed, or the machine went down), never "running".
  A failed run records its ``reason``; a cancelled one (Cancel, Ctrl-C, SIGTERM) keeps its
  ``last-checkpoint/``.
- ``config.json``: the resolved :class:`compression.config.RunConfig` (``to_dict()``), with every
  secret-looking key (token, hf_token, password...) removed.
- ``metrics.json``: ``{"base": {...}, "student": {...}, "quantized": {...}}``, each an
  :func:`compression.evaluate.evaluate_model` result (predictions may be left out).
- ``loss_log.jsonl``: one JSON object per logged training step (appended, flushed).
- ``summaries.jsonl``: one JSON object per evaluation document (id, document, reference, base,
  student, quantized).

JSON files are written to a temporary file in the same folder and moved into place with
``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

from .errors import PathNotAllowedError, RunError
from .files import atomic_write_text

DEFAULT_ROOT = Path("runs")
STATUSES = ("running", "complete", "failed", "cancelled", "interrupted")
#: Seconds between two heartbeats of a running run, and the age after which a heartbeat is stale.
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0
_RUN_FILES = ("status.json", "config.json", "metrics.json", "loss_log.jsonl")
_RUN_NAME = re.compile(r"^(\d{8}-\d{6})-")
_SECRET_KEY = re.compile(
    r"^((hf|hub|access|auth|use_auth|api|write|read|user)_)?(token|password|passwd|secret|api_key)$",
    re.IGNORECASE,
)
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slugify(name: str, max_length: int = 60) -> str:
    """``name`` as a safe folder-name part: lowercase ``[a-z0-9._-]``, other runs of characters
    replaced by ``-``, at most ``max_length`` characters; ``"run"`` when nothing is left."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", str(name).lower()).strip("-._")[:max_length].strip("-._")
    return slug or "run"


def strip_secrets(value):
    """A copy of ``value`` without dict keys named like secrets (``token``, ``hf_token``,
    ``hub_token``, ``password``, ``secret``, ``api_key``...) and with strings that look like Hugging
    Face tokens (``hf_...``) masked. Keys such as ``max_new_tokens`` or ``tokens_per_s`` stay."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if not _SECRET_KEY.match(str(k))}
    if isinstance(value, (list, tuple)):
        return [strip_secrets(v) for v in value]
    if isinstance(value, str):
        return _HF_TOKEN.sub("hf_***", value)
    return value


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _clean_floats(value):
    # NaN/inf are not JSON: a diverged loss is stored as null rather than as an unreadable file
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_floats(v) for v in value]
    return value


def dumps_json(obj, **kwargs) -> str:
    """``obj`` as JSON text, the one policy of every JSON and JSONL file this project writes: numpy
    and torch scalars as numbers, paths as text, secret-looking keys dropped, Hugging Face tokens
    masked, and NaN/inf as ``null`` (JSON has no NaN: a diverged loss stays readable)."""
    obj = json.loads(json.dumps(obj, default=_json_default))  # numpy etc. -> plain values
    return json.dumps(_clean_floats(strip_secrets(obj)), ensure_ascii=False, allow_nan=False, **kwargs)


class RunFolder:
    """One run's folder; every write is atomic (temp file + ``os.replace``) or an appended line.

    Start a run with :meth:`create` (new unique folder under a root) or :meth:`open` (a folder the
    caller chose); ``RunFolder(path)`` only wraps a folder, writing nothing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    @staticmethod
    def default_path(root: str | Path = DEFAULT_ROOT, name: str = "run") -> Path:
        """``root/<YYYYmmdd-HHMMSS>-<slug of name>`` (local time), with ``-2``, ``-3``... appended
        when that folder exists already. Nothing is created."""
        base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slugify(name)}"
        path, attempt = Path(root) / base, 1
        while path.exists():
            attempt += 1
            path = Path(root) / f"{base}-{attempt}"
        return path

    @classmethod
    def create(cls, root: str | Path = DEFAULT_ROOT, name: str = "run") -> "RunFolder":
        """Make a new, unique :meth:`default_path` folder under ``root`` and mark it ``"running"``."""
        Path(root).mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            path = cls.default_path(root, name)
            try:
                path.mkdir()  # exclusive: two runs started in the same second never share a folder
            except FileExistsError:
                continue
            return cls._start(path)
        raise RunError(f"could not find a free run folder name under {root}: clean up old runs")

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        """Use ``path`` (created when missing) as a run folder and mark it ``"running"``: for a
        run folder chosen by the caller, e.g. ``RunConfig.output_dir``.

        Raises:
            RunError: ``path`` exists and is not a folder.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunError(f"{path} is a file, not a folder: choose another run folder")
        path.mkdir(parents=True, exist_ok=True)
        return cls._start(path)

    @classmethod
    def _start(cls, path: Path) -> "RunFolder":
        run = cls(path)
        run.write_json("status.json", {"status": "running", "started_at": _now(), "pid": os.getpid(),
                                       "host": socket.gethostname(), "heartbeat": _now()})
        return run

    def heartbeat(self) -> None:
        """Rewrite ``status.json``'s ``heartbeat`` with the time now, while the run is "running"."""
        with self._lock:
            status = _read_json(self.path / "status.json")
            if isinstance(status, dict) and status.get("status") == "running":
                self.write_json("status.json", {**status, "heartbeat": _now()})

    def start_heartbeat(self, seconds: float | None = None) -> threading.Event:
        """Beat every ``seconds`` (default :data:`HEARTBEAT_SECONDS`) from a daemon thread until the
        returned event is set (or the process ends: then the heartbeat goes stale)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(seconds or HEARTBEAT_SECONDS):
                try:
                    self.heartbeat()
                except OSError:  # a full disk must not kill the run; the heartbeat just goes stale
                    pass

        threading.Thread(target=beat, name=f"heartbeat {self.name}", daemon=True).start()
        return stop

    @property
    def name(self) -> str:
        return self.path.name

    def write_json(self, relpath: str | Path, obj) -> Path:
        """Write ``obj`` as indented JSON to ``relpath`` inside the run, atomically; secret-looking
        keys are dropped and NaN/inf become ``null``. Returns the file's path.

        Raises:
            PathNotAllowedError: ``relpath`` points outside the run folder.
        """
        path = resolve_inside(self.path / relpath, [self.path])
        atomic_write_text(path, dumps_json(obj, indent=2) + "\n")
        return path

    def write_summaries(self, rows: list[dict]) -> Path:
        """``summaries.jsonl`` (atomic): one line per row with keys id, document, reference, base,
        student, quantized (``null`` when a row lacks one), then any extra keys of the row."""
        keys = ("id", "document", "reference", "base", "student", "quantized")
        lines = []
        for row in rows:
            ordered = {key: row.get(key) for key in keys}
            ordered.update({k: v for k, v in row.items() if k not in ordered})
            lines.append(dumps_json(ordered))
        path = self.path / "summaries.jsonl"
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        return path

    def _finish(self, status: str, **extra) -> None:
        with self._lock:
            previous = _read_json(self.path / "status.json") or {}
            record = {"status": status, "started_at": previous.get("started_at"), "finished_at": _now(),
                      **{key: previous[key] for key in ("pid", "host") if key in previous}}
            record.update(extra)
            self.write_json("status.json", record)

    def mark_complete(self) -> None:
        """``status.json`` := complete, with ``finished_at`` (UTC, ISO 8601)."""
        self._finish("complete")

    def mark_failed(self, reason: str) -> None:
        """``status.json`` := failed, with the ``reason`` (Hugging Face tokens masked)."""
        self._finish("failed", reason=str(reason))

    def mark_cancelled(self, reason: str | None = None) -> None:
        """``status.json`` := cancelled (Cancel, Ctrl-C or SIGTERM stopped it), with the ``reason`` if given."""
        self._finish("cancelled", **({"reason": str(reason)} if reason else {}))


def clear_run_folder(path: str | Path) -> None:
    """Delete the run folder ``path`` (``--overwrite``), so a new run never mixes with an old one.
    Only a folder holding ``status.json`` (a run) is deleted; anything else is left alone.

    Raises:
        RunError: the folder could not be deleted.
    """
    path = Path(path)
    if path.is_dir() and (path / "status.json").is_file():
        try:
            shutil.rmtree(path)
        except OSError as error:
            raise RunError(f"could not clear the old run in {path} ({error.strerror}): remove it by hand") from None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: judge by the heartbeat alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists under another user
        return True
    return True


def _age_seconds(stamp) -> float | None:
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(str(stamp))).total_seconds()
    except (TypeError, ValueError):
        return None


def _status_of(path: Path) -> dict:
    """``status.json`` as read, with a "running" run whose process is gone reported "interrupted"."""
    status = _read_json(path / "status.json")
    if not isinstance(status, dict) or status.get("status") not in STATUSES:
        return {"status": "incomplete"}
    if status["status"] == "running":
        dead = status.get("host") == socket.gethostname() and not _pid_alive(status.get("pid"))
        age = _age_seconds(status.get("heartbeat"))
        if dead or (age is not None and age > STALE_SECONDS):
            why = "its process is gone" if dead else f"no heartbeat for {age:.0f} s"
            return {**status, "status": "interrupted",
                    "reason": f"interrupted: {why} (killed, crashed or the machine stopped)"}
    return status


def _is_run(path: Path) -> bool:
    return path.is_dir() and (bool(_RUN_NAME.match(path.name))
                              or any((path / f).is_file() for f in _RUN_FILES))


def _created(path: Path, status: dict) -> str:
    if status.get("started_at"):
        return str(status["started_at"])
    match = _RUN_NAME.match(path.name)
    if match:
        try:
            return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").isoformat()
        except ValueError:
            pass
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return ""


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def list_runs(root: str | Path = DEFAULT_ROOT) -> list[dict]:
    """Every run under ``root``, newest first, as flat dicts for a table.

    Keys: ``name``, ``path``, ``status`` (``running``/``complete``/``failed``/``cancelled``/
    ``interrupted`` (see :func:`_status_of`), or ``incomplete`` when ``status.json`` is missing or
    unreadable), ``reason`` (why it failed, was cancelled or interrupted), ``created``, ``model``, ``method``
    (``"sft"``, ``"kd"`` or ``"pseudo"``; ``"sft"`` for runs written before the field existed),
    ``encoder_layers``, ``decoder_layers``, ``strategy``, ``epochs`` (from ``config.json``), and the
    student's ``rouge1``, ``rougeL`` (F1, 0-100), ``percent_of_base_rouge1``,
    ``percent_of_base_rougeL`` (% of the base model's F1), ``validation_loss`` (nats/token),
    ``params``, ``size_mib`` (from ``metrics.json``); ``None`` where unknown. Corrupt or partial
    files never raise. A missing ``root`` gives ``[]``.
    """
    from .metrics import percent_of_base

    root = Path(root)
    try:
        children = sorted((p for p in root.iterdir() if not p.name.startswith(".")),
                          key=lambda p: p.name, reverse=True)
    except OSError:
        return []
    rows = []
    for path in children:
        if not _is_run(path):
            continue
        status = _status_of(path)
        config = _dict(_read_json(path / "config.json"))
        shrink = _dict(config.get("shrink"))
        train = _dict(config.get("train"))
        metrics = _dict(_read_json(path / "metrics.json"))
        student, base = _dict(metrics.get("student")), _dict(metrics.get("base"))
        try:
            kept = percent_of_base(student, base)
        except (TypeError, ValueError):
            kept = {}
        rows.append({
            "name": path.name,
            "path": str(path),
            "status": status["status"],
            "reason": status.get("reason"),
            "created": _created(path, status),
            "model": config.get("model"),
            "method": config.get("method", "sft") if config else None,
            "encoder_layers": shrink.get("encoder_layers", config.get("encoder_layers")),
            "decoder_layers": shrink.get("decoder_layers", config.get("decoder_layers")),
            "strategy": shrink.get("strategy", config.get("strategy")),
            "epochs": train.get("epochs", config.get("epochs")),
            "rouge1": _number(student.get("rouge1")),
            "rougeL": _number(student.get("rougeL")),
            "percent_of_base_rouge1": kept.get("rouge1"),
            "percent_of_base_rougeL": kept.get("rougeL"),
            "validation_loss": _number(student.get("validation_loss")),
            "params": _number(student.get("params")),
            "size_mib": _number(student.get("size_mib")),
        })
    return rows


def load_run(path: str | Path) -> dict:
    """Everything in one run folder: ``{"name", "path", "status" (status.json dict, status
    ``incomplete`` when missing/corrupt), "config", "metrics" (dicts, ``{}`` when missing/corrupt),
    "loss_log" (records; a line cut short by a crash is skipped), "summaries" (rows)}``.

    Raises:
        RunError: ``path`` is not a folder or holds none of the run files.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a folder: pick a run folder under runs/")
    if not any((path / f).is_file() for f in _RUN_FILES):
        raise RunError(f"{path} is not a run folder (no status.json, config.json or metrics.json): "
                       "pick a folder made by a run")
    return {
        "name": path.name,
        "path": str(path),
        "status": _status_of(path),
        "config": _dict(_read_json(path / "config.json")),
        "metrics": _dict(_read_json(path / "metrics.json")),
        "loss_log": _read_jsonl(path / "loss_log.jsonl"),
        "summaries": _read_jsonl(path / "summaries.jsonl"),
    }


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model sources (hub ids or folders) name the same model: equal text, or folders
    that resolve to the same path."""
    if not a or not b:
        return False
    if a == b:
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


#: A run's ``config.json`` method -> the method name of its chart point (``components.modular_charts``).
RUN_METHOD_POINTS = {"sft": "SFT", "kd": "KD", "pseudo": "pseudo-labels"}


def comparable_runs(root: str | Path, teacher_source: str | None) -> list:
    """Students of the complete runs under ``root`` whose base model is ``teacher_source``, as
    :class:`compression.metrics.Point` s to chart beside Modular Transformers students.

    ``method`` ``"KD"`` when the run's ``config.json`` says ``"method": "kd"``, ``"pseudo-labels"``
    for ``"pseudo"``, else ``"SFT"``;
    layers from ``architecture.json``; ROUGE (F1, 0-100), validation loss (nats/token), parameters
    and size (MiB) from ``metrics.json``; ``speedup`` = base latency / student latency (ms at batch
    1) as the run measured them (``None`` when missing). Those runs scored their own validation
    pairs, which ``note`` says. Unreadable runs are skipped; a missing ``root`` gives ``[]``.
    """
    from .metrics import Point

    points = []
    for row in list_runs(root):
        if row.get("status") != "complete" or not same_model(row.get("model"), teacher_source):
            continue
        try:
            run = load_run(row["path"])
        except RunError:
            continue
        layers = _dict(_dict(_read_json(Path(row["path"]) / "architecture.json")).get("student"))
        base, student = _dict(run["metrics"].get("base")), _dict(run["metrics"].get("student"))
        base_ms, student_ms = _number(base.get("latency_ms")), _number(student.get("latency_ms"))
        e, d = layers.get("encoder_layers"), layers.get("decoder_layers")
        points.append(Point(
            method=RUN_METHOD_POINTS.get(row.get("method"), "SFT"),
            label=f"{e}/{d}" if None not in (e, d) else row["name"],
            encoder_layers=e, decoder_layers=d, params=_number(student.get("params")),
            size_mib=_number(student.get("size_mib")), rouge1=_number(student.get("rouge1")),
            rouge2=_number(student.get("rouge2")), rougeL=_number(student.get("rougeL")),
            validation_loss=_number(student.get("validation_loss")),
            latency_ms=student_ms, teacher_latency_ms=base_ms,
            speedup=base_ms / student_ms if base_ms is not None and student_ms else None,
            note=f"run {row['name']} (scored on its own validation pairs)"))
    return points


def resolve_inside(path: str | Path, allowed_roots: list[Path]) -> Path:
    """``path`` fully resolved (``~``, ``..`` and symlinks followed), if it lies inside one of
    ``allowed_roots`` (also resolved); a root itself counts as inside. Relative paths are taken
    from the current working directory. The path need not exist.

    Raises:
        PathNotAllowedError: the resolved path is outside every allowed root (e.g. ``../`` escapes,
            a symlink pointing out), or no roots were given.
    """
    resolved = Path(path).expanduser().resolve()
    roots = [Path(root).expanduser().resolve() for root in allowed_roots]
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    allowed = ", ".join(str(r) for r in roots) or "(none configured)"
    raise PathNotAllowedError(
        f"{path} lies outside the folders this dashboard may read or write ({allowed}): "
        "pick a path inside one of them"
    )
