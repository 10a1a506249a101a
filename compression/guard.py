"""Guard rails for a public server (a Hugging Face Space): per-run limits, run ownership, disk quota.

A public dashboard serves strangers on one machine. :class:`PublicLimits` bounds what one run may
ask for (pairs, epochs, source length, wall time) and how many jobs one visitor may queue;
:class:`RunOwners` remembers which visitor made which run folder (``<runs>/.owners.json``; folders
without an entry are the operator's, e.g. examples made with the CLI, and everyone sees them);
:func:`enforce_quota` keeps the runs folder under a size by removing the oldest *visitor* runs first
(never the operator's). Plain Python; the dashboard turns these on when ``SPACE_ID`` is set (or with
``--public``).
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import CompressionError
from .files import atomic_write_text

OWNERS_FILE = ".owners.json"


@dataclass(frozen=True)
class PublicLimits:
    """Limits for one run on a public server.

    ``max_train_pairs``/``max_eval_pairs``: pairs trained on / evaluated; ``max_epochs``;
    ``max_source_length`` (tokens); ``max_wall_s``: seconds a run may take before it is cancelled
    (its loss log is kept); ``max_jobs_per_visitor``: jobs one visitor may have waiting or running;
    ``disk_quota_mib``: the size the runs folder is kept under (MiB).
    """

    max_train_pairs: int = 2000
    max_eval_pairs: int = 100
    max_epochs: float = 3.0
    max_source_length: int = 512
    max_wall_s: float = 1800.0
    max_jobs_per_visitor: int = 2
    disk_quota_mib: float = 2048.0

    def check(self, *, train_pairs: int | None, eval_pairs: int | None, epochs: float, source_length: int) -> None:
        """Refuse settings beyond the limits, naming each limit.

        ``train_pairs``/``eval_pairs``: the pairs asked for (``None``: the whole data set, refused
        as it is unbounded).

        Raises:
            CompressionError: the first setting over its limit, with the limit to use instead.
        """
        if train_pairs is None or train_pairs > self.max_train_pairs:
            raise CompressionError(f"this public server trains on at most {self.max_train_pairs:,} pairs per run: "
                                   f"set 'pairs to train on' to {self.max_train_pairs:,} or fewer")
        if eval_pairs is None or eval_pairs > self.max_eval_pairs:
            raise CompressionError(f"this public server evaluates at most {self.max_eval_pairs} validation pairs: "
                                   f"set 'validation pairs' to {self.max_eval_pairs} or fewer")
        if epochs > self.max_epochs:
            raise CompressionError(f"this public server trains at most {self.max_epochs:g} epochs per run: "
                                   "lower the epochs")
        if source_length > self.max_source_length:
            raise CompressionError(f"this public server reads at most {self.max_source_length} source tokens: "
                                   "lower the max source length")


class RunOwners:
    """Which visitor made which run folder: ``<runs>/.owners.json`` = ``{folder name: visitor id}``.

    Written atomically under a lock (one server process writes it). Folders without an entry are
    the operator's.
    """

    def __init__(self, runs_dir: str | Path):
        self.path = Path(runs_dir) / OWNERS_FILE
        self._lock = threading.Lock()

    def read(self) -> dict[str, str]:
        """The mapping (empty when the file is missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def set(self, folder_name: str, visitor: str) -> None:
        """Record that ``visitor`` made run folder ``folder_name``."""
        with self._lock:
            owners = self.read()
            owners[folder_name] = visitor
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(owners, indent=1) + "\n")

    def visible_to(self, folder_name: str, visitor: str | None) -> bool:
        """A visitor sees their own runs and the operator's (no entry), never another visitor's."""
        owner = self.read().get(folder_name)
        return owner is None or owner == visitor


def folder_mib(path: Path) -> float:
    """Size of the files under ``path`` in MiB (links not followed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def enforce_quota(runs_dir: str | Path, quota_mib: float, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove the oldest visitor runs (by folder name, which starts with its timestamp) until the
    runs folder holds at most ``quota_mib`` MiB. Operator runs (no owner) and the folders named in
    ``keep`` (e.g. the run about to start or still running) are never removed. Returns the names
    removed."""
    root = Path(runs_dir)
    owners = RunOwners(root)
    owned = owners.read()
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    sizes = {p.name: folder_mib(p) for p in folders}
    total = sum(sizes.values()) + sum(folder_mib(p) for p in root.glob(".modular/*") if p.is_dir())
    removed = []
    for path in sorted(folders, key=lambda p: p.name):
        if total <= quota_mib:
            break
        if path.name not in owned or path.name in keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= sizes[path.name]
        removed.append(path.name)
    return removed
