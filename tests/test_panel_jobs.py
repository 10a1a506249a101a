"""Server-side jobs (compression.jobs) and watching them from the page (components.jobs)."""

from __future__ import annotations

import pytest

from compression.errors import DatasetError


def test_job_queue_runs_one_at_a_time_in_order_and_keeps_events():
    import threading

    from compression.jobs import JobQueue

    queue, order, gate = JobQueue(), [], threading.Event()

    def work(name):
        def run(emit, cancel):
            emit({"kind": "stage", "stage": name})
            emit({"kind": "train", "step": 1})
            if name == "first":
                assert gate.wait(timeout=30)
            order.append(name)
            return {"status": "complete", "name": name}
        return run

    first, second = queue.submit(work("first"), owner="a"), queue.submit(work("second"), owner="b")
    for _ in range(300):
        if first.status == "running":
            break
        first.wait(first.version, 0.1)
    assert queue.position(first) == 0 and queue.position(second) == 1 and second.status == "queued"
    gate.set()
    assert queue.wait_idle(timeout=30)
    assert order == ["first", "second"] and first.status == second.status == "complete"
    assert first.stages == [{"kind": "stage", "stage": "first"}] and first.records == [{"kind": "train", "step": 1}]
    assert second.result["name"] == "second" and queue.position(second) is None
    assert queue.latest("b") is second and queue.jobs("a") == [first]


def test_job_queue_cancel_limits_and_errors():
    import threading

    from compression.jobs import JobLimitError, JobQueue, UnknownJobError

    queue, started = JobQueue(max_per_owner=2), threading.Event()

    def blocking(emit, cancel):
        started.set()
        assert cancel.wait(timeout=30)
        return {"status": "cancelled"}

    running = queue.submit(blocking, owner="a")
    waiting = queue.submit(lambda emit, cancel: {"status": "complete"}, owner="a")
    with pytest.raises(JobLimitError, match="limit here is 2"):
        queue.submit(blocking, owner="a")
    assert started.wait(timeout=30)
    assert queue.cancel(waiting.id) and waiting.status == "cancelled" and waiting.started is None
    assert queue.cancel(running.id) and not queue.cancel(running.id)  # cancel twice: the second does nothing
    assert queue.wait_idle(timeout=30) and running.status == "cancelled"
    with pytest.raises(UnknownJobError, match="no job"):
        queue.get("nope")

    def failing(emit, cancel):
        emit({"kind": "stage", "stage": "load"})
        raise DatasetError("no column 'text'")

    job = queue.submit(failing, owner="b")
    assert queue.wait_idle(timeout=30)
    assert job.status == "failed" and isinstance(job.error, DatasetError) and job.result is None


def test_watching_a_job_and_closing_the_watcher_leaves_it_running():
    import threading

    from components.jobs import watch
    from compression.jobs import JobQueue

    queue, gate = JobQueue(), threading.Event()

    def work(emit, cancel):
        emit({"kind": "train", "step": 1})
        assert gate.wait(timeout=30)
        emit({"kind": "train", "step": 2})
        return {"status": "complete"}

    job = queue.submit(work)
    first = watch(job, poll_seconds=0.01)
    next(first)
    first.close()  # the tab went away
    assert not job.cancel_event.is_set()
    gate.set()
    seen = list(watch(job, poll_seconds=0.01))  # a second watcher sees the end
    assert seen[-1].status == "complete" and [r["step"] for r in job.records] == [1, 2]


def test_mark_interrupted_runs(tmp_path):
    import json
    import os

    from compression.jobs import mark_interrupted
    from compression.runs import list_runs

    for name, status in (("dead", {"status": "running"}), ("done", {"status": "complete"}),
                         ("alive", {"status": "running", "pid": os.getppid()})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(json.dumps(status))
    assert mark_interrupted(tmp_path) == ["dead"]
    statuses = {run["name"]: run["status"] for run in list_runs(tmp_path)}
    assert statuses == {"dead": "interrupted", "done": "complete", "alive": "running"}
