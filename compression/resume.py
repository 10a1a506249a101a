"""Continuing a stopped run from its ``last-checkpoint/``: which runs can be continued, and with what.

A run that was cancelled (Cancel, Ctrl-C, SIGTERM) or interrupted (killed, crashed, server restart)
keeps the Trainer's full checkpoint in ``RUN_DIR/last-checkpoint`` (written on cancel and every
``TrainArgs.checkpoint_minutes``; see :func:`compression.train.run_trainer`). ``run --resume`` and
the dashboard's Resume button continue it with the recipe the run recorded in its ``config.json``.
Light on purpose (no torch): the CLI's preflight and the page ask it before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import RunConfig
from .errors import RunError

#: Folder (in a run or output folder) holding the Trainer's full checkpoint.
LAST_CHECKPOINT = "last-checkpoint"
#: The Trainer's own file in a checkpoint; a folder without it cannot be resumed.
TRAINER_STATE = "trainer_state.json"
#: Run states a run can be continued from (with a checkpoint).
RESUMABLE = ("cancelled", "interrupted", "failed")
# modules.safetensors: a Modular Transformers checkpoint (compression.modular.spans.MODULES_FILE)
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "modules.safetensors")


def checkpoint_step(folder: str | Path) -> int:
    """The optimizer step a ``last-checkpoint`` folder was saved at (its ``trainer_state.json``).

    Raises:
        RunError: the folder has no readable Trainer state or no weights (not a whole checkpoint).
    """
    folder = Path(folder)
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
        step = int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RunError(f"{folder.name}/ holds no training state to resume from (no readable {TRAINER_STATE}): "
                       "start the run again instead") from None
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise RunError(f"{folder.name}/ holds no weights to resume from: start the run again instead")
    return step


def check_resumable(run_dir: str | Path) -> int:
    """Check that the run in ``run_dir`` can be continued; returns its checkpoint's optimizer step.

    Raises:
        RunError: not a run folder, a run that completed or is still running, or no whole
            ``last-checkpoint/`` (cancelled before its first step, or written by an older version).
    """
    from .runs import _status_of

    run_dir = Path(run_dir)
    if not (run_dir / "status.json").is_file():
        raise RunError(f"{run_dir.name} is not a run folder (no status.json): nothing to resume")
    status = _status_of(run_dir).get("status")
    if status == "complete":
        raise RunError(f"run {run_dir.name} is complete: there is nothing to resume")
    if status == "running":
        raise RunError(f"run {run_dir.name} is still running: wait for it or cancel it first")
    if status not in RESUMABLE:
        raise RunError(f"run {run_dir.name} is {status}: only cancelled, interrupted or failed runs can resume")
    if not (run_dir / LAST_CHECKPOINT).is_dir():
        raise RunError(f"run {run_dir.name} has no {LAST_CHECKPOINT}/ to resume from (it stopped before one was "
                       "saved): start it again with --overwrite")
    if not (run_dir / "config.json").is_file():
        raise RunError(f"run {run_dir.name} has no config.json: its recipe is unknown, start it again")
    return checkpoint_step(run_dir / LAST_CHECKPOINT)


def resume_config(run_dir: str | Path) -> RunConfig:
    """The recipe a resumable run recorded (``config.json``), with ``output_dir`` = ``run_dir`` (the
    folder may have been moved since). Checks :func:`check_resumable` first.

    Raises:
        RunError: the run cannot be resumed, or its ``config.json`` is unreadable.
        CompressionError: a recorded setting this version refuses.
    """
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    try:
        recorded = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"run {run_dir.name}'s config.json is unreadable: start the run again") from None
    if not isinstance(recorded, dict):
        raise RunError(f"run {run_dir.name}'s config.json is not a recipe: start the run again")
    recorded["output_dir"] = str(run_dir)
    return RunConfig.from_form(recorded)
