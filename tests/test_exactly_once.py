"""Exactly-once publishing: the publish gate's one atomic step in a real Redis, and whole jobs
run twice (a live execution whose heartbeat lapsed and was requeued) that publish once.

No test here waits on a wall-clock margin: executions are made to overlap with events.
"""

from __future__ import annotations

import threading

import pytest

from ml_backend import AlreadyPublished, Superseded
from ml_backend.worker import process as process_module
from ml_backend.worker.gate import RECORD_KEY, PublishGate
from ml_backend.worker.process import OWNER_KEY

from . import test_task_jobs as task_jobs
from .test_task_jobs import Hooked, point, published, run, submit

# the task-job fixtures: a stand-in Label Studio, settings, the queue and a video
ls, settings, queue, video = task_jobs.ls, task_jobs.settings, task_jobs.queue, task_jobs.video


def _as(execution: str | None):
    """Run the next block as the worker execution ``execution`` (what the worker sets)."""
    process_module._local.execution = execution


@pytest.fixture(autouse=True)
def no_execution():
    yield
    _as(None)


def gate(conn, run="r1", **kwargs) -> PublishGate:
    return PublishGate(conn, "job-1", "task:1:1", kwargs.pop("latest_key", None), run=run, **kwargs)


def test_one_run_publishes_once_whichever_execution_comes_second(redis_conn):
    _as("exec-a")
    with gate(redis_conn):
        pass
    assert redis_conn.get(RECORD_KEY.format(job_id="job-1")).decode() == "done|r1|exec-a"
    _as("exec-b")  # the same run, requeued while exec-a was presumed dead
    with pytest.raises(AlreadyPublished):
        with gate(redis_conn):
            raise AssertionError("must not be reached")
    with pytest.raises(AlreadyPublished):
        gate(redis_conn).check()
    assert int(redis_conn.get("sam2:published:job-1")) == 1


def test_a_new_run_of_the_same_job_id_publishes_again(redis_conn):
    """R1 → R2 → R1: the job id comes back, with a new run."""
    with gate(redis_conn, run="r1"):
        pass
    with gate(redis_conn, run="r2"):
        pass
    assert int(redis_conn.get("sam2:published:job-1")) == 2


def test_many_executions_at_once_publish_exactly_once(redis_conn):
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(i: int) -> None:
        _as(f"exec-{i}")
        start.wait()
        try:
            with gate(redis_conn):
                outcomes.append("published")
        except AlreadyPublished:
            outcomes.append("already")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already"] * 7 + ["published"]


def test_a_failed_publish_releases_its_claim_for_the_retry(redis_conn):
    _as("exec-a")
    with pytest.raises(RuntimeError):
        with gate(redis_conn):
            raise RuntimeError("Label Studio went away while posting")
    assert redis_conn.get(RECORD_KEY.format(job_id="job-1")) is None
    with gate(redis_conn):  # the retry
        pass


def test_a_claim_left_by_a_killed_execution_is_taken_over_by_the_owner(redis_conn):
    redis_conn.set(RECORD_KEY.format(job_id="job-1"), "publishing|r1|exec-dead")
    redis_conn.set(OWNER_KEY.format(job_id="job-1"), "exec-new")
    _as("exec-new")
    with gate(redis_conn):
        pass
    assert redis_conn.get(RECORD_KEY.format(job_id="job-1")).decode() == "done|r1|exec-new"


def test_the_gate_refuses_a_newer_version_a_denied_key_and_a_lost_owner(redis_conn):
    redis_conn.set("latest", "job-2")
    with pytest.raises(Superseded, match="newer annotation"):
        with gate(redis_conn, latest_key="latest"):
            pass
    redis_conn.set("latest", "job-1")
    redis_conn.set("deleted-annotation", 1)
    with pytest.raises(Superseded, match="withdrawn"):
        with gate(redis_conn, latest_key="latest", deny_keys=["deleted-annotation"]):
            pass
    redis_conn.delete("deleted-annotation")
    redis_conn.set(OWNER_KEY.format(job_id="job-1"), "exec-b")
    _as("exec-a")
    with pytest.raises(Superseded, match="requeued"):
        with gate(redis_conn, latest_key="latest"):
            pass
    assert redis_conn.get(RECORD_KEY.format(job_id="job-1")) is None  # nothing claimed


def test_a_live_job_requeued_by_the_watchdog_publishes_once(queue, settings, redis_conn, ls, video, monkeypatch):
    """The issue's run: a live execution's heartbeat lapsed, the watchdog put the job back on the
    queue, the first execution finished and published, then the requeued copy ran. One
    prediction, one set of files, and the second execution ends cleanly without work."""
    ls.start()
    reply = {}

    def requeue_as_the_watchdog_would() -> None:
        job = queue.fetch(reply["job_id"])
        queue.queue.push_job_id(job.id, at_front=True)

    made = Hooked(requeue_as_the_watchdog_would)
    monkeypatch.setattr(process_module, "get_predictor", lambda s: made)
    reply.update(submit(queue, ls, 1, [point(video, "disc", 0, 0)]))
    run(settings, redis_conn)  # burst: the first execution, then the requeued copy
    assert len(ls.predictions) == 1
    assert int(redis_conn.get(f"sam2:published:{reply['job_id']}")) == 1
    status = queue.status(reply["job_id"])
    assert status["status"] == "finished" and status["result"]["status"] == "already published", status
    assert published(settings)
