"""The propagation worker: an RQ ``SimpleWorker`` that keeps SAM 2 loaded between jobs.

Forking workers would rebuild the model for every job, and CUDA cannot be initialised again in a
forked child, so jobs run in the worker process itself. Around RQ's loop this worker adds:

- **a heartbeat thread** while a job runs: it keeps the job's entry in RQ's started registry
  alive for ``JOB_HEARTBEAT_TTL`` seconds at a time;
- **a watchdog thread** all the time: every few seconds one worker of the queue (a Redis lock
  picks it) requeues jobs whose heartbeat expired — their worker was killed — so an abandoned job
  runs again within ``JOB_HEARTBEAT_TTL`` + :func:`watchdog_interval` seconds, with the same job id
  (``JOB_RETRIES`` permitting). RQ's own maintenance would do it only every 10 minutes;
- **a job owner record** (``sam2:job-owner:<job id>`` = the execution's id): a job publishes
  only while its execution still owns the job (:mod:`ml_backend.jobs`), so a job requeued by the
  watchdog is never published twice;
- **a refusal of foreign jobs**: the queue is read with RQ's JSON serializer (nothing is ever
  unpickled) and the worker runs only the functions in :data:`ALLOWED_FUNCTIONS`, with no
  callbacks. Anyone who can write to Redis could otherwise make the worker run any importable
  function; see "Trust boundary" in the README;
- **Redis retries**: the connection retries every command for ``REDIS_RETRY_SECONDS``
  (:mod:`ml_backend.connection`), so a Redis restart does not stop the worker.

Run with ``python -m ml_backend worker``; several workers on several machines may share one Redis.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from .settings import Settings

log = logging.getLogger(__name__)

#: The only job functions a worker runs.
ALLOWED_FUNCTIONS = frozenset({"ml_backend.jobs.propagate_task", "ml_backend.jobs.propagate_prompts"})

#: Redis key holding the id of the execution that owns a job (the one allowed to publish it).
OWNER_KEY = "sam2:job-owner:{job_id}"

#: Serializer of the propagation queue: JSON, so reading a job never unpickles anything.
SERIALIZER = JSONSerializer

_predictor: Any = None
_predictor_key: Any = None
_settings: Settings | None = None
_lock = threading.Lock()
_local = threading.local()


def configure(settings: Settings) -> None:
    """Set the settings jobs in this process use (default: read from the environment)."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def current_execution() -> str | None:
    """The id of the execution running in this thread (None outside a worker's job)."""
    return getattr(_local, "execution", None)


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


def watchdog_interval(heartbeat_ttl: float) -> float:
    """Seconds between two watchdog passes: a third of the heartbeat TTL, between 1 and 5 s."""
    return max(1.0, min(5.0, heartbeat_ttl / 3))


def refusal(job: Any) -> str | None:
    """Why ``job`` must not run here, or None when it is one of ours."""
    try:
        name = job.func_name
    except Exception:
        return "its data is not a JSON job of this product"
    if name not in ALLOWED_FUNCTIONS:
        return f"{name!r} is not a propagation job function"
    callbacks = (job._success_callback_name, job._failure_callback_name, job._stopped_callback_name)
    if any(callbacks):
        return "it asks for callbacks, which propagation jobs never use"
    return None


class Worker(SimpleWorker):
    """``SimpleWorker`` with heartbeats, an abandoned-job watchdog, job owners and a job allowlist."""

    heartbeat_ttl = 120

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return int(self.heartbeat_ttl)

    # -- the watchdog ---------------------------------------------------------------------------
    def reap_abandoned(self) -> None:
        """Requeue (or fail, without retries left) the jobs whose heartbeat expired. One worker
        of a queue does it at a time."""
        from rq.registry import StartedJobRegistry

        interval = watchdog_interval(self.heartbeat_ttl)
        for queue in self.queues:
            lock = f"sam2:watchdog:{queue.name}"
            if not self.connection.set(lock, self.name, nx=True, px=int(interval * 1000)):
                continue
            StartedJobRegistry(queue=queue).cleanup()

    def _watch(self, stop: threading.Event) -> None:
        interval = watchdog_interval(self.heartbeat_ttl)
        while not stop.wait(interval):
            try:
                self.reap_abandoned()
            except Exception:  # Redis away: the next pass tries again
                log.debug("watchdog pass failed", exc_info=True)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        stop = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(stop,), name="job-watchdog", daemon=True)
        watchdog.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            stop.set()

    # -- one job --------------------------------------------------------------------------------
    def execute_job(self, job: Any, queue: Any) -> None:
        reason = refusal(job)
        if reason is not None:
            self._refuse(job, queue, reason)
            return
        execution = self.prepare_execution(job)
        owner_ttl = int(max(job.timeout or 0, 0)) + 3600
        self.connection.set(OWNER_KEY.format(job_id=job.id), execution.id, ex=owner_ttl)
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
        _local.execution = execution.id
        try:
            self.perform_job(job, queue, execution)
        finally:
            _local.execution = None
            stop.set()
            thread.join()
        self.set_state("idle")

    def _refuse(self, job: Any, queue: Any, reason: str) -> None:
        from .exceptions import JobRefused

        message = f"{JobRefused.__module__}.{JobRefused.__name__}: job {job.id} refused: {reason}"
        log.warning(message)
        job.retries_left = 0
        self.handle_job_failure(job, queue, exc_string=message)
        self.set_state("idle")


def make_worker(settings: Settings, connection: Any = None, *, preload: bool = True, **kwargs: Any) -> Worker:
    """A worker on ``settings.queue_name``; ``preload`` builds the model before the first job and
    times a few propagated frames (logged, and left in Redis for ``scripts/stack.py``)."""
    from rq import Queue

    from .connection import redis_for

    configure(settings)
    connection = connection or redis_for(settings)
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    worker = Worker([queue], connection=connection, serializer=SERIALIZER, **kwargs)
    worker.heartbeat_ttl = settings.job_heartbeat_ttl
    if preload:
        from .speed import measure_worker

        measure_worker(get_predictor(settings), settings, connection)
    return worker
