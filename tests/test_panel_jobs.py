"""Dashboard: long jobs (components.jobs) (split from the former tests/test_components.py)."""

from __future__ import annotations

import pytest

from components.jobs import Job
from compression.errors import DatasetError

# ---------------------------------------------------------------- long jobs (components.jobs)

def test_job_streams_stages_and_records_then_keeps_the_result():
    import threading

    emitted, go_on = threading.Event(), threading.Event()

    def work(emit):
        emit({"kind": "stage", "stage": "train"})
        emit({"kind": "train", "step": 1})
        emitted.set()
        go_on.wait(timeout=30)
        emit({"kind": "eval", "step": 1})
        return "done"

    job = Job(work, threading.Event(), name="test-job")
    records = job.records
    stream = job.stream(poll_seconds=0.01)
    next(stream)  # right after the start, before any event is read
    assert emitted.wait(timeout=30)
    next(stream)  # the first events arrived while the thread still runs
    assert job.stages == [{"kind": "stage", "stage": "train"}] and job.records == [{"kind": "train", "step": 1}]
    go_on.set()
    for _ in stream:  # until the thread ends
        pass
    assert job.records is records and [r["kind"] for r in records] == ["train", "eval"]
    assert job.result == "done" and not job.cancel.is_set()
    with pytest.raises(RuntimeError, match="already started"):
        next(job.stream())


def test_closing_a_job_stream_cancels_and_worker_errors_are_raised():
    import threading

    cancel = threading.Event()

    def slow(emit):
        assert cancel.wait(timeout=30)

    stream = Job(slow, cancel, name="slow-job").stream(poll_seconds=0.01)
    next(stream)
    stream.close()
    assert cancel.is_set()

    def failing(emit):
        emit({"kind": "stage", "stage": "load"})
        raise DatasetError("no column 'text'")

    job = Job(failing, threading.Event(), name="failing-job")
    with pytest.raises(DatasetError, match="no column"):
        list(job.stream(poll_seconds=0.01))
    assert job.stages == [{"kind": "stage", "stage": "load"}] and job.result is None
