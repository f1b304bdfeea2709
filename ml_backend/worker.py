"""The propagation worker: an RQ ``SimpleWorker`` that keeps SAM 2 loaded between jobs.

Forking workers would rebuild the model for every job, and CUDA cannot be initialised again in a
forked child, so jobs run in the worker process itself. While a job runs, a heartbeat thread
keeps the job's entry in RQ's started registry alive for ``JOB_HEARTBEAT_TTL`` seconds at a
time; if the worker is killed, the entry expires and the next worker's maintenance pass retries
the job (``JOB_RETRIES``).

Run with ``python -m ml_backend worker``; several workers on several machines may share one Redis.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq.worker import SimpleWorker

from .settings import Settings

log = logging.getLogger(__name__)

_predictor: Any = None
_predictor_key: Any = None
_settings: Settings | None = None
_lock = threading.Lock()


def configure(settings: Settings) -> None:
    """Set the settings jobs in this process use (default: read from the environment)."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def get_predictor(settings: Settings) -> Any:
    """The process's SAM 2 video predictor for ``settings``, built on first use."""
    global _predictor, _predictor_key
    key = (
        settings.model_size,
        settings.checkpoint,
        str(settings.checkpoint_path),
        settings.image_size,
        settings.device,
        settings.compile,
    )
    with _lock:
        if _predictor is None or _predictor_key != key:
            from .models import build_video_predictor

            _predictor = build_video_predictor(settings)
            _predictor_key = key
        return _predictor


class Worker(SimpleWorker):
    """``SimpleWorker`` with a heartbeat thread during jobs and a short abandoned-job TTL."""

    heartbeat_ttl = 120

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return int(self.heartbeat_ttl)

    def execute_job(self, job: Any, queue: Any) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()

        def beat() -> None:
            interval = max(1.0, self.heartbeat_ttl / 4)
            while not stop.wait(interval):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # a missed beat is retried at the next interval
                    log.debug("heartbeat failed", exc_info=True)

        thread = threading.Thread(target=beat, name="job-heartbeat", daemon=True)
        thread.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            thread.join()
        self.set_state("idle")


def make_worker(settings: Settings, connection: Any = None, *, preload: bool = True, **kwargs: Any) -> Worker:
    """A worker on ``settings.queue_name``; ``preload`` builds the model before the first job."""
    from redis import Redis
    from rq import Queue

    configure(settings)
    connection = connection or Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=connection)
    worker = Worker([queue], connection=connection, **kwargs)
    worker.heartbeat_ttl = settings.job_heartbeat_ttl
    if preload:
        get_predictor(settings)
    return worker
