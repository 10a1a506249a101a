"""Long jobs behind generator handlers: a worker thread streaming progress events to the page.

Training (the Run button, module training) takes minutes, while a Gradio handler must keep
yielding to update the page. :class:`Job` runs the work in a daemon thread that pushes progress
events into a ``queue.Queue``; the handler iterates :meth:`Job.stream`, which wakes every
``poll_seconds``, moves the new events into :attr:`Job.stages` (events with ``"kind": "stage"``)
and :attr:`Job.records` (everything else: the training records of
:func:`compression.train.finetune` and friends) and yields whenever some arrived. If the handler
is closed while the thread still runs (the visitor left, or Gradio cancelled the event) the job's
``threading.Event`` is set, so the work stops after its current step. The worker's exception, if
any, is raised in the handler's thread when the stream ends, where
:func:`components.feedback.user_errors` turns it into a message.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger("dashboard")


class Job:
    """``work(emit)`` in a daemon thread, its progress events collected for a generator handler.

    ``work`` receives ``emit`` (a callable taking one event dict; pass it as the engine's
    ``on_progress``) and returns the job's result, kept in :attr:`result`. ``cancel`` is the event
    the work watches (the engine's ``cancel=``); the caller keeps it too, for its Cancel button.
    ``name`` names the thread and the log line written when a closed stream cancels the job.

    Attributes:
        stages: ``{"kind": "stage", ...}`` events received so far, in order.
        records: every other event received so far, in order (the same list object throughout,
            so a session can hold it while the job runs).
        result: what ``work`` returned, once :meth:`stream` has ended without an error.
    """

    def __init__(self, work: Callable[[Callable[[dict], None]], Any], cancel: threading.Event, *, name: str):
        self.work, self.cancel, self.name = work, cancel, name
        self.stages: list[dict] = []
        self.records: list[dict] = []
        self.result: Any = None
        self._events: queue.Queue = queue.Queue()
        self._outcome: dict = {}
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            self._outcome["result"] = self.work(self._events.put)
        except BaseException as error:  # noqa: BLE001 - handed to the stream, which raises it
            self._outcome["error"] = error

    def _drain(self) -> bool:
        """Move the queued events into :attr:`stages` and :attr:`records`; whether any arrived."""
        changed = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return changed
            changed = True
            (self.stages if event.get("kind") == "stage" else self.records).append(event)

    def stream(self, poll_seconds: float = 1.0) -> Iterator[None]:
        """Start the worker thread and yield as it makes progress (call once per job).

        Yields ``None`` once right after the thread starts (nothing received yet), then after
        each wait of at most ``poll_seconds`` seconds (``Thread.join`` timeout) that brought new
        events while the thread is still running; read :attr:`stages` and :attr:`records` at each
        yield. When the thread has ended, the last events are collected without a further yield
        and the generator returns, with :attr:`result` set.

        If the generator is closed (``GeneratorExit``) or fails while the thread still runs,
        ``cancel`` is set and the cancellation logged; the thread is not waited for.

        Raises:
            RuntimeError: the job was already started.
            BaseException: whatever ``work`` raised, re-raised here once the thread has ended.
        """
        if self._thread is not None:
            raise RuntimeError(f"job {self.name!r} was already started: make a new Job for each run")
        self._thread = thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        thread.start()
        try:
            yield
            while thread.is_alive():
                thread.join(timeout=poll_seconds)
                if self._drain() and thread.is_alive():
                    yield
            self._drain()
        finally:
            if thread.is_alive():  # the visitor left or the event was cancelled: stop the work too
                self.cancel.set()
                logger.info("%s: generator closed while the job ran: cancelling it", self.name)
        if "error" in self._outcome:
            raise self._outcome["error"]
        self.result = self._outcome["result"]
