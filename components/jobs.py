"""Watching server-side jobs from the page.

Training (the Run button, module training) is a :class:`compression.jobs.Job` on the server's
:class:`compression.jobs.JobQueue` (``settings.jobs``): it belongs to the server, not to the tab
that started it. A handler only *watches* it with :func:`watch`, a generator that yields whenever
the job made progress (and about once a second while it waits in the queue, so its position stays
current). Closing that generator — the visitor closed or reloaded the tab, gradio cancelled the
event — leaves the job running; any number of tabs can watch the same job, and a reopened page
reattaches to it (``?run=<id>`` or the visitor's latest job). Only Cancel stops it.
"""

from __future__ import annotations

from collections.abc import Iterator

from compression.jobs import QUEUED, Job, JobQueue

from .feedback import message_for


def watch(job: Job, poll_seconds: float = 1.0) -> Iterator[Job]:
    """Yield ``job`` at once, then after each change (new progress event, new state) and, while it
    waits in the queue, after each ``poll_seconds`` wait; the last yield is the ended job.
    Closing the generator does nothing to the job."""
    version, ended = job.version, job.done
    yield job
    while not ended:
        seen = job.wait(version, poll_seconds)
        ended = job.done
        if seen != version or ended or job.status == QUEUED:
            version = seen
            yield job


def queue_markdown(jobs: JobQueue, job: Job) -> str:
    """The waiting line of a queued job: its place, and what runs before it."""
    place = jobs.position(job)
    if place is None:
        return ""
    return (f"⏳ **Waiting in the queue: position {place}** of {jobs.waiting()} — one training job runs at a "
            f"time on this machine; this one starts when those before it end. Closing this tab keeps its place.")


def job_link(job: Job) -> str:
    """The line that says how to come back to ``job`` from any tab."""
    return f"Job `{job.id}` · reopen it from any tab with `?run={job.id}` after the page address"


def failure_markdown(job: Job) -> str:
    """How a failed job is shown: its readable message (never a traceback)."""
    return f"✗ **Failed:** {message_for(job.error) if job.error is not None else 'unknown error'}"
