"""Worker liveness: a key each worker renews, and how soon a lost worker's job is requeued.

**Liveness.** Each worker keeps ``sam2:worker-alive:<name>`` in Redis with a short TTL
(``WORKER_ALIVE_TTL``, 10 s), renewed every fifth of it by a thread of its own (:class:`AliveKey`),
and deletes it when it exits cleanly. A job in RQ's started registry whose worker's key is gone
is certain to have no one running it: the watchdog (:mod:`ml_backend.worker.runner`) requeues it at once
instead of waiting for the job's heartbeat TTL (``JOB_HEARTBEAT_TTL``, 120 s). To tell a dead
worker from a Redis restart that dropped keys, a key must be missing on two watchdog passes at
least a renewal apart (:func:`holder_gone`), so a job whose worker was killed is requeued within
``WORKER_ALIVE_TTL`` + ``WORKER_ALIVE_TTL``/5 + two watchdog intervals (:func:`requeue_bound`):
about 22 s with the defaults (a watchdog interval is 1–5 s).

**Graceful stop** (:mod:`ml_backend.stopping`). On SIGINT/SIGTERM the worker calls `request_stop`; the job meets
:func:`check_stop` at its next frame (the progress callback), at a stage before publishing, or in
a backoff pause, and raises :class:`~ml_backend.exceptions.WorkerStopping`. The worker then puts
the job back at the front of the queue without using a retry. Once the job is publishing it is no
longer stoppable (:func:`stoppable`), so a stop never cuts a publish in two.

**Re-runs.** :func:`count_execution` counts the executions of one run of a job, so a job started
again after a restart says so ("re-running after a restart").
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

ALIVE_KEY = "sam2:worker-alive:{name}"
MISSING_KEY = "sam2:worker-missing:{name}"
EXECUTIONS_KEY = "sam2:job-executions:{job_id}:{run}"


def renew_interval(alive_ttl: float) -> float:
    """Seconds between two renewals of a worker's liveness key: a fifth of its TTL."""
    return max(0.4, alive_ttl / 5)


def requeue_bound(alive_ttl: float, watchdog_interval: float) -> float:
    """The longest time, in seconds, from a worker's death to its job being requeued."""
    return alive_ttl + renew_interval(alive_ttl) + 2 * watchdog_interval


class AliveKey:
    """Keeps ``sam2:worker-alive:<name>`` set while the worker lives (its own thread, so a busy
    job thread never lets it lapse); :meth:`stop` deletes it (a clean exit)."""

    def __init__(self, connection: Any, name: str, ttl: float) -> None:
        self.connection, self.name, self.ttl = connection, name, max(2, int(ttl))
        self.key = ALIVE_KEY.format(name=name)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.connection.set(self.key, str(time.time()), ex=self.ttl)

    def _run(self) -> None:
        while not self._done.wait(renew_interval(self.ttl)):
            try:
                self.beat()
            except Exception:  # Redis away: the next renewal tries again
                log.debug("could not renew %s", self.key, exc_info=True)

    def start(self) -> AliveKey:
        try:
            self.beat()
        except Exception:
            log.debug("could not set %s", self.key, exc_info=True)
        self._thread = threading.Thread(target=self._run, name="worker-alive", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.connection.delete(self.key)
        except Exception:  # Redis away: the key lapses by itself
            log.debug("could not delete %s", self.key, exc_info=True)


def is_alive(connection: Any, name: str | None) -> bool:
    """Whether worker ``name``'s liveness key exists (False for no name)."""
    return bool(name) and bool(connection.exists(ALIVE_KEY.format(name=name)))


def holder_gone(connection: Any, name: str | None, alive_ttl: float, now: float | None = None) -> bool:
    """True when worker ``name`` is certainly gone: its liveness key is missing now and was
    missing at least one renewal interval ago (first sight records the time). A key that comes
    back clears the record."""
    if not name:
        return False
    now = time.time() if now is None else now
    missing = MISSING_KEY.format(name=name)
    if is_alive(connection, name):
        connection.delete(missing)
        return False
    connection.set(missing, str(now), nx=True, ex=max(60, int(4 * alive_ttl)))
    first = connection.get(missing)
    return first is not None and now - float(first) >= renew_interval(alive_ttl)


def count_execution(connection: Any, job_id: str, run: str, ttl: int) -> int:
    """Count one more execution of run ``run`` of job ``job_id``; returns how many there were
    (2 or more: this one re-runs the job after a restart)."""
    key = EXECUTIONS_KEY.format(job_id=job_id, run=run)
    pipe = connection.pipeline()
    pipe.incr(key)
    pipe.expire(key, ttl)
    return int(pipe.execute()[0])
