"""Training progress: Trainer log events as plain records, a JSONL loss log, and cancellation.

The seam between the engine and whoever watches a run (the CLI's progress line, the dashboard's
``Job``): :class:`ProgressCallback` hands each record to an ``on_progress`` callable and appends it
to ``loss_log.jsonl``; a ``threading.Event`` stops training after the current optimizer step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import TrainerCallback

from .runs import dumps_json

#: File (in the output or run folder) holding one JSON line per progress record.
LOSS_LOG = "loss_log.jsonl"


class ProgressCallback(TrainerCallback):
    """Turn Trainer log events into plain progress records; stop on a cancel event.

    Each record is a dict: ``kind`` (``"train"`` or ``"eval"``), ``step`` (optimizer step),
    ``total_steps``, ``epoch`` (fractional), ``loss`` (train: mean training cross-entropy since
    the previous record, nats) or ``eval_loss`` (token-weighted validation cross-entropy, nats),
    ``learning_rate`` (latest), ``tokens_per_s`` (real source + target tokens per second of wall
    time since training began, all processes), ``elapsed_s`` and ``eta_s`` (seconds). On the
    main process only, each record goes to ``on_progress`` and is appended (flushed) as one JSON
    line to ``log_path`` (:func:`compression.runs.dumps_json`: a NaN loss is written as ``null``). Every key of ``extra_keys`` present in a Trainer log (a distillation run's
    per-term losses ``ce``, ``kl``, ``hidden``, ``attention``; Modular Transformers' ``eval_loss_g2``...)
    is added to the record as a float. In ``on_step_end``, a set ``cancel`` event makes the Trainer
    stop after the current optimizer step (agreed across processes under DDP); with
    ``checkpoint=True`` the Trainer then also saves its checkpoint (``control.should_save``; see
    :class:`compression.train.CompressionTrainer` for where), and does so every ``checkpoint_seconds`` of
    training as well (``None``: only on cancel), so a killed run can resume from the latest one.
    ``eta_s`` counts from the step training (re)started at, so a resumed run's ETA is its own.
    """

    def __init__(
        self,
        on_progress: Callable[[dict], None] | None = None,
        cancel: threading.Event | None = None,
        log_path: str | Path | None = None,
        tokens_seen: Callable[[], int] | None = None,
        extra_keys: Sequence[str] = (),
        checkpoint: bool = False,
        checkpoint_seconds: float | None = None,
    ) -> None:
        self.extra_keys = tuple(extra_keys)
        self.checkpoint, self.checkpoint_seconds = checkpoint, checkpoint_seconds
        self._start_step = 0
        self._last_checkpoint = time.monotonic()
        self.on_progress = on_progress
        self.cancel = cancel
        self.log_path = Path(log_path) if log_path is not None else None
        self.tokens_seen = tokens_seen or (lambda: 0)
        self.records: list[dict] = []
        self.cancelled = False
        self._start = time.perf_counter()
        self._learning_rate: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self._start_step = state.global_step  # > 0 when resumed from a checkpoint
        self._last_checkpoint = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        self._last_checkpoint = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        due = bool(self.checkpoint and self.checkpoint_seconds
                   and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds)
        if self.cancel is None and not (self.checkpoint and self.checkpoint_seconds):
            return control
        stop = self.cancel is not None and self.cancel.is_set()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every process must take the same decision: a save has barriers in it
            flags = torch.tensor([int(stop), int(due)], device=args.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            stop, due = bool(flags[0].item()), bool(flags[1].item())
        if due:
            control.should_save = True
        if stop:
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = control.should_save or self.checkpoint
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            kind, key = "train", "loss"
        elif "eval_loss" in logs:
            kind, key = "eval", "eval_loss"
        else:  # the end-of-training summary (train_runtime...) is in TrainResult instead
            return
        if logs.get("learning_rate") is not None:
            self._learning_rate = float(logs["learning_rate"])
        elapsed = time.perf_counter() - self._start
        step, total = state.global_step, state.max_steps
        done = step - self._start_step
        eta = elapsed / done * max(total - step, 0) if done > 0 else None
        record = {
            "kind": kind,
            "step": step,
            "total_steps": total,
            "epoch": float(state.epoch or 0.0),
            key: float(logs[key]),
            "learning_rate": self._learning_rate,
            "tokens_per_s": self.tokens_seen() / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed,
            "eta_s": eta,
        }
        record.update({name: float(logs[name]) for name in self.extra_keys if logs.get(name) is not None})
        self.records.append(record)
        if not state.is_world_process_zero:
            return
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(dumps_json(record) + "\n")
                handle.flush()
        if self.on_progress is not None:
            self.on_progress(dict(record))
