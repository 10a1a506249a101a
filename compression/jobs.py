"""Long jobs that belong to the server, not to whoever started them: a FIFO queue with one worker.

A training run takes minutes. The dashboard submits it here as a :class:`Job` (an id, an owner, a
``work(emit, cancel)`` callable) and then only *watches* it: any number of watchers (browser tabs)
may wait on :meth:`Job.wait` for new progress, and a watcher going away does nothing to the job.
Only :meth:`JobQueue.cancel` (the visitor's Cancel button, or the operator) stops it. The queue runs
one job at a time (one training job on the machine, as the page always did) in a daemon worker
thread, in submission order; :meth:`JobQueue.position` tells a waiting job its place.

Plain Python and threads (no UI code); the progress events are those of the engine's
``on_progress`` callbacks (:func:`compression.pipeline.run_pipeline`, :func:`compression.modular.train_modules`).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CompressionError

logger = logging.getLogger("compression.jobs")

#: job states; the last three are final.
QUEUED, RUNNING, COMPLETE, CANCELLED, FAILED = "queued", "running", "complete", "cancelled", "failed"
FINAL = (COMPLETE, CANCELLED, FAILED)


class JobLimitError(CompressionError):
    """A visitor already has as many jobs waiting or running as the operator allows."""


class UnknownJobError(CompressionError):
    """No job with that id on this server (it never existed, or the server restarted since)."""


class Job:
    """One unit of long work and everything a watcher needs to show it.

    ``work(emit, cancel)`` runs in the queue's worker thread; ``emit`` takes one progress event
    (a dict; ``{"kind": "stage", ...}`` events go to :attr:`stages`, all others to :attr:`records`)
    and ``cancel`` is the ``threading.Event`` the work must watch (the engine's ``cancel=``).

    Attributes:
        id: a short random hex id, unguessable (a link ``?run=<id>`` is the capability to watch it).
        kind: what it is (``"run"``, ``"modular"``...), for the page.
        owner: who submitted it (a visitor id); the queue caps jobs per owner.
        label: one line naming the job (a run folder name), shown in the queue.
        status: ``queued``, ``running``, ``complete``, ``cancelled`` or ``failed``.
        stages, records: progress events received so far, in order.
        result: what ``work`` returned (once complete). error: what it raised (once failed).
        submitted, started, finished: ``time.time()`` stamps (seconds), ``None`` until reached.
        info: free-form facts the submitter attaches (e.g. the run folder, the config).
    """

    _ids = itertools.count()

    def __init__(self, work: Callable[[Callable[[dict], None], threading.Event], Any], *, kind: str = "run",
                 owner: str = "", label: str = "", info: dict | None = None):
        self.id = secrets.token_hex(6)
        self.kind, self.owner, self.label, self.work = kind, owner, label, work
        self.info = dict(info or {})
        self.cancel_event = threading.Event()
        self.status = QUEUED
        self.stages: list[dict] = []
        self.records: list[dict] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.submitted, self.started, self.finished = time.time(), None, None
        self.order = next(self._ids)
        self._version = 0
        self._changed = threading.Condition()

    @property
    def done(self) -> bool:
        """True once the job is complete, cancelled or failed."""
        return self.status in FINAL

    @property
    def version(self) -> int:
        """A counter that grows with every event and state change (watchers compare it)."""
        return self._version

    def emit(self, event: dict) -> None:
        """Record one progress event and wake the watchers (thread-safe)."""
        with self._changed:
            (self.stages if event.get("kind") == "stage" else self.records).append(event)
            self._version += 1
            self._changed.notify_all()

    def _set_status(self, status: str) -> None:
        with self._changed:
            self.status = status
            if status == RUNNING:
                self.started = time.time()
            elif status in FINAL:
                self.finished = time.time()
            self._version += 1
            self._changed.notify_all()

    def wait(self, version: int, timeout: float) -> int:
        """Block until :attr:`version` differs from ``version``, the job ends, or ``timeout``
        seconds pass; returns the current version. Any number of threads may wait at once."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version or self.done, timeout=timeout)
            return self._version

    def _run(self) -> None:
        if self.cancel_event.is_set():  # cancelled while it waited
            self._set_status(CANCELLED)
            return
        self._set_status(RUNNING)
        try:
            self.result = self.work(self.emit, self.cancel_event)
        except BaseException as error:  # noqa: BLE001 - kept for the watchers, who show it
            self.error = error
            if not isinstance(error, CompressionError):
                logger.error("job %s (%s) failed", self.id, self.label, exc_info=error)
            self._set_status(FAILED)
            return
        status = self.result.get("status") if isinstance(self.result, dict) else None
        self._set_status(CANCELLED if status == CANCELLED or (status is None and self.cancel_event.is_set())
                         else COMPLETE)


class JobQueue:
    """Jobs run one at a time, in submission order, by one daemon worker thread.

    ``max_per_owner``: how many jobs one owner may have waiting or running at once (``None``: no
    limit). ``keep``: how many finished jobs are remembered for watchers (oldest forgotten first).
    """

    def __init__(self, max_per_owner: int | None = None, keep: int = 200):
        self.max_per_owner, self.keep = max_per_owner, keep
        self._jobs: dict[str, Job] = {}
        self._pending: deque[Job] = deque()
        self._lock = threading.Condition()
        self._current: Job | None = None
        self._worker: threading.Thread | None = None

    def submit(self, work, *, kind: str = "run", owner: str = "", label: str = "", info: dict | None = None) -> Job:
        """Queue ``work`` (see :class:`Job`) and return its job; it starts when those before it end.

        Raises:
            JobLimitError: ``owner`` already has ``max_per_owner`` jobs waiting or running.
        """
        job = Job(work, kind=kind, owner=owner, label=label, info=info)
        with self._lock:
            if self.max_per_owner is not None and owner:
                active = sum(1 for j in self._jobs.values() if j.owner == owner and not j.done)
                if active >= self.max_per_owner:
                    raise JobLimitError(f"you already have {active} job(s) waiting or running (the limit here is "
                                        f"{self.max_per_owner}): wait for one to finish, or cancel it")
            self._jobs[job.id] = job
            self._pending.append(job)
            self._forget_old()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="job-queue", daemon=True)
                self._worker.start()
            self._lock.notify_all()
        return job

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.done]
        for job in sorted(finished, key=lambda j: j.order)[:max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
                job = self._current = self._pending.popleft()
            try:
                job._run()
            finally:
                with self._lock:
                    self._current = None
                    self._lock.notify_all()

    def get(self, job_id: str | None) -> Job:
        """The job with id ``job_id``.

        Raises:
            UnknownJobError: no such job on this server.
        """
        job = self._jobs.get((job_id or "").strip())
        if job is None:
            raise UnknownJobError(f"no job {job_id!r} on this server: it finished long ago or the server "
                                  "restarted; look for its run in the runs history")
        return job

    def find(self, job_id: str | None) -> Job | None:
        """The job with id ``job_id``, or ``None``."""
        return self._jobs.get((job_id or "").strip())

    def position(self, job: Job) -> int | None:
        """0 when ``job`` runs, its 1-based place among the waiting jobs, ``None`` when it is done."""
        with self._lock:
            if job is self._current and not job.done:
                return 0
            for place, waiting in enumerate(self._pending, start=1):
                if waiting is job:
                    return place
        return None

    def waiting(self) -> int:
        """How many jobs wait (not counting the running one)."""
        with self._lock:
            return len(self._pending)

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Known jobs (``owner``'s only when given), oldest first."""
        with self._lock:
            return sorted((j for j in self._jobs.values() if owner is None or j.owner == owner),
                          key=lambda j: j.order)

    def latest(self, owner: str, kind: str | None = None) -> Job | None:
        """``owner``'s most recent job (of ``kind`` when given), or ``None``."""
        mine = [j for j in self.jobs(owner) if kind is None or j.kind == kind]
        return mine[-1] if mine else None

    def cancel(self, job_id: str) -> bool:
        """Stop job ``job_id``: a waiting job leaves the queue (cancelled, it never starts); a running
        one has its cancel event set (the engine stops after the current step). Returns ``False``
        when the job had already ended (or was already cancelled), ``True`` otherwise.

        Raises:
            UnknownJobError: no such job.
        """
        job = self.get(job_id)
        with self._lock:
            if job.done or job.cancel_event.is_set():
                return False
            job.cancel_event.set()
            if job in self._pending:
                self._pending.remove(job)
                job._set_status(CANCELLED)
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job waits or runs (tests, shutdown); ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending or self._current is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(timeout=left)
        return True


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def mark_interrupted(runs_dir: str | Path) -> list[str]:
    """Mark run folders left ``"running"`` by a process that no longer exists as ``"interrupted"``.

    Called when the dashboard starts: no job of this new process runs yet, so a folder that still
    says ``running`` was left by a server (or CLI run) that died. A folder whose ``status.json``
    names a live process id on this host is left alone. Looks one level below ``runs_dir`` and in
    its ``modular/`` folder. Returns the names of the folders marked.
    """
    import json
    import socket

    from .runs import RunFolder

    root = Path(runs_dir)
    marked = []
    candidates = [p for p in root.glob("*/status.json")] + [p for p in root.glob("modular/*/status.json")]
    for status_file in candidates:
        try:
            status = json.loads(status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(status, dict) or status.get("status") != RUNNING:
            continue
        if status.get("pid") and status.get("host", socket.gethostname()) == socket.gethostname() \
                and int(status["pid"]) != os.getpid() and _pid_alive(status["pid"]):
            continue
        record = dict(status, status="interrupted", finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      reason="the process running it stopped (server restart or kill) before it finished")
        RunFolder(status_file.parent).write_json("status.json", record)
        marked.append(status_file.parent.name)
    if marked:
        logger.warning("marked %d run(s) left running by a stopped process as interrupted: %s", len(marked),
                       ", ".join(marked))
    return marked
