"""Per-browser-session state and the operator's settings.

:class:`Session` holds one visitor's data (the loaded base model's facts, the latest run, the cancel
event of a running job, models loaded for the article comparison); it lives in a ``gr.State``, so
each browser tab has its own and nothing a visitor does leaks to another. :class:`AppSettings` holds
what the operator chose on the command line (runs folder, allowed folders, offline); it is the same
for everyone and holds no user data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from compression.guard import PublicLimits, RunOwners
from compression.jobs import JobQueue

#: ``../shared`` beside the project root: real XSum pairs and the T5 vocabulary when present.
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@dataclass(frozen=True)
class AppSettings:
    """Operator settings, fixed at launch.

    ``runs_dir``: where run folders are written and listed. ``allowed_dirs``: folders a visitor may
    point to when typing a local path (model or tokenizer folder); anything else is refused with
    :class:`compression.errors.PathNotAllowedError`. ``offline``: no model hub (``HF_HUB_OFFLINE=1``);
    hub ids and hub datasets are flagged and refused. ``shared_dir``: ``../shared`` when it exists.
    ``max_file_mb``: upload size limit in MB. ``notice``: one line shown at the top of the page
    (e.g. that the hub was unreachable at start-up). ``limits``: the public-server guard rails
    (:class:`compression.guard.PublicLimits`; ``None`` on a private server): per-run limits, a cap
    on each visitor's queued jobs, a disk quota, and each visitor seeing only their own runs and
    the operator's. ``jobs``: the server's training queue
    (:class:`compression.jobs.JobQueue`, one job at a time), shared by every visitor.
    """

    runs_dir: Path = Path("runs")
    allowed_dirs: tuple[Path, ...] = ()
    offline: bool = False
    shared_dir: Path | None = None
    max_file_mb: int = 50
    notice: str | None = None
    limits: PublicLimits | None = None
    jobs: JobQueue = field(default_factory=JobQueue, compare=False, repr=False)

    @classmethod
    def create(cls, runs_dir: str | Path = "runs", allowed_dirs: list[str | Path] | None = None,
               offline: bool = False, max_file_mb: int = 50, notice: str | None = None,
               limits: PublicLimits | None = None) -> "AppSettings":
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
                   max_file_mb=max_file_mb, notice=notice, limits=limits,
                   jobs=JobQueue(max_per_owner=limits.max_jobs_per_visitor if limits else None))

    @property
    def owners(self) -> RunOwners:
        """Which visitor made which run (:class:`compression.guard.RunOwners`)."""
        return RunOwners(self.runs_dir)

    def visible(self, folder_name: str, visitor: str | None) -> bool:
        """Whether ``visitor`` may see run ``folder_name``: always on a private server; on a public
        one, their own runs and the operator's."""
        return self.limits is None or self.owners.visible_to(folder_name, visitor)

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
    run opened from the history) and its ``{"metrics", "summaries", "config"}``; ``job_id``: the server job (:class:`compression.jobs.Job`) this tab
    watches; ``visitor``: the visitor's id (kept in the browser, so a reloaded tab finds its jobs;
    the gradio session id for API clients); ``models``: models of ``models_run`` loaded for the
    article comparison; ``importance``: the loaded base's layer-importance scores
    (:func:`compression.importance.layer_importance`) once panel 2 scored them; ``length_profile``: the
    loaded base's :func:`compression.length_plan.cost_profile` (which stack to cut for speed at a length);
    ``compared``: the runs of the latest comparison in the runs history.
    """

    model_source: str | None = None
    model_label: str | None = None
    facts: dict | None = None
    footprint: dict | None = None
    run_dir: str | None = None
    result: dict | None = None
    job_id: str | None = None
    visitor: str | None = None
    models: dict | None = None
    models_run: str | None = None
    importance: dict | None = None
    length_profile: dict | None = None
    compared: list[str] | None = None


def session_state() -> gr.State:
    """A ``gr.State`` holding a fresh :class:`Session` per browser session; gradio drops it (and the
    models it holds) an hour after the tab closes."""
    return gr.State(Session())


def bind(fn, *bound):
    """``functools.partial(fn, *bound)`` as a plain function that gradio can inspect: the signature
    without the bound arguments and the annotations resolved, so a ``request: gr.Request``
    parameter is still recognized and filled in (gradio reads no type hints through a partial)."""
    import functools
    import inspect
    import typing

    partial = functools.partial(fn, *bound)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return partial(*args, **kwargs)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):  # noqa: F811 - a generator stays a generator for gradio
            yield from partial(*args, **kwargs)

    call.__signature__ = inspect.signature(partial)
    call.__annotations__ = typing.get_type_hints(fn)
    del call.__wrapped__
    return call
