"""Per-browser-session state and the operator's settings.

:class:`Session` holds one visitor's data (the loaded base model's facts, the latest run, the cancel
event of a running job, models loaded for the article comparison); it lives in a ``gr.State``, so
each browser tab has its own and nothing a visitor does leaks to another. :class:`AppSettings` holds
what the operator chose on the command line (runs folder, allowed folders, offline); it is the same
for everyone and holds no user data.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

#: ``../shared`` beside the project root: real XSum pairs and the T5 vocabulary when present.
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@dataclass(frozen=True)
class AppSettings:
    """Operator settings, fixed at launch.

    ``runs_dir``: where run folders are written and listed. ``allowed_dirs``: folders a visitor may
    point to when typing a local path (model or tokenizer folder); anything else is refused with
    :class:`compression.errors.PathNotAllowedError`. ``offline``: no model hub (``HF_HUB_OFFLINE=1``);
    hub ids and hub datasets are flagged and refused. ``shared_dir``: ``../shared`` when it exists.
    ``max_file_mb``: upload size limit in MB.
    """

    runs_dir: Path = Path("runs")
    allowed_dirs: tuple[Path, ...] = ()
    offline: bool = False
    shared_dir: Path | None = None
    max_file_mb: int = 50

    @classmethod
    def create(cls, runs_dir: str | Path = "runs", allowed_dirs: list[str | Path] | None = None,
               offline: bool = False, max_file_mb: int = 50) -> "AppSettings":
        """Settings with defaults filled in: allowed folders default to the runs folder and the
        current working directory; ``../shared`` (read-only data and tokenizer) is always allowed
        when it exists, since the dashboard offers its files itself."""
        runs = Path(runs_dir).expanduser().resolve()
        shared = SHARED_DIR if SHARED_DIR.is_dir() else None
        roots = [Path(d).expanduser().resolve() for d in (allowed_dirs or [])] or [runs, Path.cwd().resolve()]
        if shared is not None and shared not in roots:
            roots.append(shared)
        if runs not in roots:
            roots.append(runs)
        return cls(runs_dir=runs, allowed_dirs=tuple(roots), offline=offline, shared_dir=shared,
                   max_file_mb=max_file_mb)

    @property
    def bases_dir(self) -> Path:
        """``runs/.bases``: untrained preset base models saved so a run (and later the article
        comparison) can load them by path; hidden from the runs list by its leading dot."""
        return self.runs_dir / ".bases"

    def is_offline(self) -> bool:
        """True when launched with ``--offline`` or when ``HF_HUB_OFFLINE`` is set."""
        return self.offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


@dataclass
class Session:
    """One visitor's state (kept in a ``gr.State``; handlers mutate it in place).

    ``model_source``: what a run loads as the base (hub id or resolved local folder);
    ``model_label``: how the page names it; ``facts``: :func:`compression.load.describe_model` of it;
    ``footprint``: per-layer parameter counts and bytes for the plan estimate (see
    :func:`compression.layers.layer_footprint`); ``run_dir``/``result``: the latest run (or the
    run opened from the history) and its ``{"metrics", "summaries", "config"}``; ``cancel``: set it to stop the running job; ``models``: models of
    ``models_run`` loaded for the article comparison.
    """

    model_source: str | None = None
    model_label: str | None = None
    facts: dict | None = None
    footprint: dict | None = None
    run_dir: str | None = None
    result: dict | None = None
    cancel: threading.Event | None = None
    models: dict | None = None
    models_run: str | None = None


def session_state() -> gr.State:
    """A ``gr.State`` holding a fresh :class:`Session` per browser session; gradio drops it (and the
    models it holds) an hour after the tab closes."""
    return gr.State(Session())
