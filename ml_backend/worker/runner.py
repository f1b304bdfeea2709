"""The propagation worker: an RQ ``SimpleWorker`` that keeps SAM 2 loaded between jobs.

Forking workers would rebuild the model for every job, and CUDA cannot be initialised again in a
forked child, so jobs run in the worker process itself. Around RQ's loop this worker adds:

- **a heartbeat thread** while a job runs: it keeps the job's entry in RQ's started registry
  alive for ``JOB_HEARTBEAT_TTL`` seconds at a time;
- **a liveness key** (``sam2:worker-alive:<name>``, :mod:`ml_backend.worker.liveness`) renewed by a thread
  of its own every ``WORKER_ALIVE_TTL``/5 seconds and deleted on a clean exit;
- **a watchdog thread** all the time: every few seconds one worker of the queue (a Redis lock
  picks it) requeues the started jobs whose worker is known gone (its liveness key missing on two
  passes), within :func:`ml_backend.worker.liveness.requeue_bound` seconds of the death (about 22 s with
  the defaults), and those whose heartbeat expired (``JOB_HEARTBEAT_TTL``), with the same job id
  (``JOB_RETRIES`` permitting). RQ's own maintenance would do it only every 10 minutes. The first
  pass runs when the worker starts;
- **a columns thread**: Label Studio's job columns follow RQ's truth however a job ends
  (:mod:`ml_backend.worker.columns`), reconciled at start and every few seconds;
- **graceful stops**: SIGINT/SIGTERM stop the running job at its next frame and put it back at the
  front of the queue without using a retry, its columns saying ``queued`` ("worker restarted");
  a second signal stops at once (the job is still put back);
- **a job owner record** (``sam2:job-owner:<job id>`` = the execution's id): a job publishes
  only while its execution still owns the job (:mod:`ml_backend.worker.jobs`), so a job requeued by the
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
import queue as queue_module
import threading
import time
from typing import Any

from rq import Queue
from rq.registry import StartedJobRegistry
from rq.utils import now
from rq.worker import SimpleWorker

from ml_backend.connection import redis_for
from ml_backend.exceptions import JobRefused, WorkerStopping
from ml_backend.settings import Settings
from ml_backend.stopping import job_ended, job_started, request_stop, reset
from ml_backend.video.speed import measure_worker
from ml_backend.worker import process
from ml_backend.worker.columns import WORKER_LOST, WORKER_RESTARTED, reconcile, settle
from ml_backend.worker.gate import run_token
from ml_backend.worker.liveness import AliveKey, count_execution, holder_gone
from ml_backend.worker.names import OLD_NAMES, PROMPTS_JOB, TASK_JOB, UPLOAD_JOB
from ml_backend.worker.process import OWNER_KEY, SERIALIZER, _local, configure, current_settings
from ml_backend.worker.uploadpoll import poll_forever

log = logging.getLogger(__name__)

#: The only job functions a worker runs.
#: Jobs queued under a name of an earlier release run as the function that replaced it.
ALLOWED_FUNCTIONS = frozenset({TASK_JOB, PROMPTS_JOB, UPLOAD_JOB, *OLD_NAMES})


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
    """``SimpleWorker`` with heartbeats, liveness, an abandoned-job watchdog, graceful stops that
    requeue the job, job owners, columns that follow RQ, and a job allowlist."""

    heartbeat_ttl = 120
    alive_ttl = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_job = False
        self._columns: queue_module.Queue = queue_module.Queue()

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return int(self.heartbeat_ttl)

    # -- the watchdog ---------------------------------------------------------------------------
    def reap_abandoned(self) -> None:
        """Requeue (or fail, without retries left) the started jobs whose worker is known gone or
        whose heartbeat expired. One worker of a queue does it at a time."""

        interval = watchdog_interval(self.heartbeat_ttl)
        for queue in self.queues:
            lock = f"sam2:watchdog:{queue.name}"
            if not self.connection.set(lock, self.name, nx=True, px=int(interval * 1000)):
                continue
            registry = StartedJobRegistry(queue=queue)
            for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
                job = queue.fetch_job(job_id)
                name = getattr(job, "worker_name", None) if job is not None else None
                if name and name != self.name and holder_gone(self.connection, name, self.alive_ttl):
                    log.warning("job %s: its worker %s is gone; requeueing the job now", job_id, name)
                    # expired now: RQ's cleanup below retries it (or fails it without retries left)
                    self.connection.zadd(registry.key, {f"{job_id}:{execution_id}": 1}, xx=True)
            lost: list[Any] = []
            registry.cleanup(exception_handlers=[lambda job, *exc, lost=lost: lost.append(job)])
            for job in lost:
                self._columns.put((job, WORKER_LOST))

    def _watch(self, stop: threading.Event) -> None:
        interval = watchdog_interval(self.heartbeat_ttl)
        while True:
            try:
                self.reap_abandoned()
            except Exception:  # Redis away: the next pass tries again
                log.debug("watchdog pass failed", exc_info=True)
            if stop.wait(interval):
                return

    def _keep_columns(self, stop: threading.Event) -> None:
        """Settle the columns of jobs that ended outside their own code, and reconcile every open
        task: at start (a job left ``running`` by a worker that is gone says ``queued``), then
        every few seconds. Best-effort; Label Studio away just delays it."""

        settings = current_settings()
        restarted, last = True, 0.0
        interval = max(2.0, watchdog_interval(self.heartbeat_ttl))
        while not stop.is_set():
            try:
                job, reason = self._columns.get(timeout=0.5)
            except queue_module.Empty:
                job = None
            try:
                if job is not None:
                    settle(settings, self.connection, job, reason=reason)
                if time.monotonic() - last >= interval and self.connection.set(
                    "sam2:columns-reconcile", self.name, nx=True, px=int(interval * 1000)
                ):
                    last = time.monotonic()
                    reconcile(settings, self.connection, restarted=restarted)
                    restarted = False
            except Exception:  # Redis or Label Studio away: the next round tries again
                log.debug("columns pass failed", exc_info=True)

    def work(self, *args: Any, **kwargs: Any) -> bool:

        reset()
        alive = AliveKey(self.connection, self.name, self.alive_ttl).start()
        stop = threading.Event()
        threads = [
            threading.Thread(target=self._watch, args=(stop,), name="job-watchdog", daemon=True),
            threading.Thread(target=self._keep_columns, args=(stop,), name="job-columns", daemon=True),
            threading.Thread(target=poll_forever, args=(self.connection, stop), name="upload-poll", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            stop.set()
            alive.stop()  # a clean exit: other workers know at once that nothing runs here

    # -- stopping -------------------------------------------------------------------------------
    def request_stop(self, signum: Any, frame: Any) -> None:
        """First SIGINT/SIGTERM: the running job stops at its next frame and goes back to the
        front of the queue; the worker exits after that."""

        if self._in_job:
            log.info("stop requested: the running job stops at its next frame and goes back on the queue")
            request_stop()
        super().request_stop(signum, frame)

    def request_force_stop(self, signum: Any, frame: Any) -> None:
        """Second signal: stop at once; a running job is still put back on the queue."""

        if self._in_job and self._shutdown_requested_date is not None:
            if (now() - self._shutdown_requested_date).total_seconds() >= 1:  # not the same Ctrl-C twice
                log.warning("second stop signal: stopping at once")
                self._in_job = False
                raise WorkerStopping("stopped at once by a second signal")
            return
        super().request_force_stop(signum, frame)

    def _finalize_failure(self, job: Any, queue: Any, execution: Any, exc_info: Any) -> None:

        if exc_info[0] is not None and issubclass(exc_info[0], WorkerStopping):
            self._put_back(job, queue, execution, at_once="second" in str(exc_info[1]))
            return
        super()._finalize_failure(job, queue, execution, exc_info)
        self._columns.put((job, ""))  # failed, or queued for a retry: the columns say so

    def _put_back(self, job: Any, queue: Any, execution: Any, at_once: bool) -> None:
        """Put a stopped job back at the front of the queue, its retries untouched, then (unless
        stopping at once) make its columns say ``queued`` — "worker restarted"."""

        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            queue._enqueue_job(job, pipeline=pipeline, at_front=True)
            pipeline.execute()
        log.info("job %s is back at the front of the queue (retries left: %s)", job.id, job.retries_left)
        if not at_once:
            settle(current_settings(), self.connection, job, reason=WORKER_RESTARTED)

    # -- one job --------------------------------------------------------------------------------
    def execute_job(self, job: Any, queue: Any) -> None:

        reason = refusal(job)
        if reason is not None:
            self._refuse(job, queue, reason)
            return
        if job.func_name in OLD_NAMES:  # queued by an earlier release
            job.func_name = OLD_NAMES[job.func_name]
        execution = self.prepare_execution(job)
        owner_ttl = int(max(job.timeout or 0, 0)) + 3600
        self.connection.set(OWNER_KEY.format(job_id=job.id), execution.id, ex=owner_ttl)
        runs = count_execution(self.connection, job.id, run_token(job), owner_ttl)
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
        _local.rerun = runs > 1
        job_started()
        self._in_job = True
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._in_job = False
            job_ended()
            _local.execution = None
            _local.rerun = False
            stop.set()
            thread.join()
        self.set_state("idle")

    def _refuse(self, job: Any, queue: Any, reason: str) -> None:

        message = f"{JobRefused.__module__}.{JobRefused.__name__}: job {job.id} refused: {reason}"
        log.warning(message)
        job.retries_left = 0
        self.handle_job_failure(job, queue, exc_string=message)
        self.set_state("idle")


def make_worker(settings: Settings, connection: Any = None, *, preload: bool = True, **kwargs: Any) -> Worker:
    """A worker on ``settings.queue_name``; ``preload`` builds the model before the first job and
    times a few propagated frames (logged, and left in Redis for ``scripts/stack.py``)."""

    configure(settings)
    connection = connection or redis_for(settings)
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    worker = Worker([queue], connection=connection, serializer=SERIALIZER, **kwargs)
    worker.heartbeat_ttl = settings.job_heartbeat_ttl
    worker.alive_ttl = settings.worker_alive_ttl
    if preload:
        measure_worker(process.get_predictor(settings), settings, connection)
    return worker
