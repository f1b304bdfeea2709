"""Best-effort Label Studio writes never hold a job, and a busy job keeps its heartbeat.

- Label Studio answers 500 to every task-data write (state columns, progress, review links): the
  job still finishes and posts its prediction, spending at most the short best-effort budget on
  those writes instead of ``LABEL_STUDIO_RETRY_SECONDS``.
- The heartbeat runs on its own thread: while the job thread is stuck in a long blocking call and
  then in a tight Python loop, the job's entry in RQ's started registry keeps being renewed past
  the moment its first TTL ran out, and another worker's watchdog leaves the job alone.

No wall-clock margin decides a result here: the job is held with events the test controls.
"""

from __future__ import annotations

import threading
import time

from ml_backend.worker import process as process_module
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from . import test_task_jobs as task_jobs
from .fakes import ColorVideoPredictor
from .test_task_jobs import point, published, run, submit

ls, settings, queue, video, predictor = (
    task_jobs.ls,
    task_jobs.settings,
    task_jobs.queue,
    task_jobs.video,
    task_jobs.predictor,
)


def test_label_studio_refusing_every_task_write_never_holds_the_job(settings, redis_conn, ls, video, predictor):
    """Every PATCH of the task answers 500. With the old budget (LABEL_STUDIO_RETRY_SECONDS, here
    an hour) the job would wait an hour per write; with LABEL_STUDIO_BEST_EFFORT_SECONDS = 1 it
    posts its prediction well within BOUND seconds."""
    BOUND = 120  # seconds; the old behaviour needs at least 3600 before posting
    settings = settings.replace(label_studio_retry_seconds=3600, label_studio_best_effort_seconds=1.0)
    queue = JobQueue(redis_conn, settings)
    ls.start()
    ls.fail_task_writes = 500
    started = time.monotonic()
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    took = time.monotonic() - started
    status = queue.status(reply["job_id"])
    assert status["status"] == "finished" and status["result"]["status"] == "done", status
    assert len(ls.predictions) == 1 and len(published(settings)) == len(published(settings)) > 0
    assert ls.failed_task_writes >= 2  # the running state and the final columns were both refused
    assert ls.task_updates == []  # nothing got through, and nothing waited for it to
    print(f"prediction posted {took:.1f} s after submission with every task write refused")
    assert took < BOUND, f"the job took {took:.0f} s"


def test_a_permanent_answer_is_not_retried(settings, redis_conn, ls, video, predictor, caplog):
    """501 Not Implemented on task writes: each write is tried once, not retried as if Label
    Studio were down (the budget here would allow many retries)."""
    import logging

    settings = settings.replace(label_studio_best_effort_seconds=30.0)
    queue = JobQueue(redis_conn, settings)
    ls.start()
    ls.fail_task_writes = 501
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
        run(settings, redis_conn)
    assert queue.status(reply["job_id"])["status"] == "finished"
    assert len(ls.predictions) == 1 and ls.failed_task_writes >= 2
    assert "retrying in" not in caplog.text  # never waited for as if Label Studio were down
    assert "could not write task" in caplog.text


class Busy(ColorVideoPredictor):
    """At the second frame the job thread blocks (``release_block``), then spins in a tight
    Python loop (``release_spin``), both under the test's control."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Event()
        self.release_block = threading.Event()
        self.spinning = threading.Event()
        self.release_spin = threading.Event()

    def propagate_in_video(self, *args, **kwargs):
        for i, item in enumerate(super().propagate_in_video(*args, **kwargs)):
            if i == 1:
                self.blocked.set()
                self.release_block.wait()  # a long blocking call (GIL released)
                self.spinning.set()
                while not self.release_spin.is_set():  # a busy loop holding the GIL between switches
                    pass
            yield item


def _score(redis_conn, registry_key: str, job_id: str) -> float | None:
    for member, score in redis_conn.zrange(registry_key, 0, -1, withscores=True):
        if member.decode().startswith(f"{job_id}:"):
            return score
    return None


def test_the_heartbeat_keeps_a_busy_job_alive(settings, redis_conn, tmp_path, monkeypatch):
    from rq.registry import StartedJobRegistry

    settings = settings.replace(job_heartbeat_ttl=2, queue_name="test-busy")
    busy = Busy()
    monkeypatch.setattr(process_module, "get_predictor", lambda s: busy)
    queue = JobQueue(redis_conn, settings)
    clip = task_jobs.moving_shapes(num_frames=4, height=48, width=64).write(tmp_path / "v.mkv")
    prompts = {
        "format": "scenediff",
        "objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[20.0, 20.0]], "labels": [1]}]}],
    }
    job = queue.enqueue_prompts(prompts, {"video1": str(clip)}, str(tmp_path / "out"))
    process_module._settings = settings
    worker = make_worker(settings, redis_conn, preload=False)
    registry_key = StartedJobRegistry(queue=worker.queues[0]).key
    other = make_worker(settings, redis_conn, preload=False)  # another worker's watchdog
    seen: list[str] = []
    errors: list[BaseException] = []

    def outlives_its_first_ttl(phase: threading.Event) -> None:
        """Wait (an event, no margin) until the job's first registry expiry lies in the past
        while the job thread is busy, and the heartbeat thread has renewed it since; the other
        worker's watchdog then runs and must leave the job alone."""
        assert phase.wait(60)
        first = _score(redis_conn, registry_key, job.id)
        assert first is not None
        renewed = None
        for _ in range(6000):  # 10 ms steps, up to a minute: ends as soon as both hold
            renewed = _score(redis_conn, registry_key, job.id)
            if renewed is not None and renewed > first and time.time() > first:
                break
            time.sleep(0.01)
        assert renewed is not None and renewed > first and time.time() > first, (first, renewed)
        other.reap_abandoned()
        redis_conn.delete(f"sam2:watchdog:{settings.queue_name}")
        other.reap_abandoned()
        status = queue.fetch(job.id).get_status()
        seen.append(str(getattr(status, "value", status)))

    def check() -> None:
        try:
            outlives_its_first_ttl(busy.blocked)
            busy.release_block.set()
            outlives_its_first_ttl(busy.spinning)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            busy.release_block.set()
            busy.release_spin.set()

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    worker.work(burst=True)  # in the main thread, as a worker runs (signals, the job time-out)
    checker.join(60)
    if errors:
        raise errors[0]
    assert seen == ["started", "started"], seen  # the watchdog never took the busy job away
    done = queue.fetch(job.id)
    assert done.get_status() == "finished" and len(done.results()) == 1
    assert done.retries_left == settings.job_retries  # never requeued
