"""Label Studio's job columns follow RQ's truth.

A task's ``job_state``/``job_progress``/``job_error`` columns (:mod:`ml_backend.labelstudio.taskdata`) are
written by the job while it runs; but a job can also end where its own code never runs again: its
worker killed (RQ's ``AbandonedJobError``), a time-out, a cancel, a graceful stop that put it back
on the queue. This module makes the columns say how each job really ended, with a one-sentence
reason in ``job_error``:

=================  ====================================================================
RQ says            the task's columns
=================  ====================================================================
queued (again)     ``queued`` — "worker restarted; …" or "its worker was lost; …"
finished           ``done`` (its own write, or this one if that write was lost)
finished (stale)   ``superseded`` — the reason (e.g. the annotation was withdrawn)
failed             ``failed`` — the job's own sentence, or why RQ failed it (abandoned, timed out)
canceled/stopped   ``cancelled`` — why
=================  ====================================================================

Only the task's latest job (``sam2:task-latest:<project>:<task>``) owns its columns. Every task
whose columns a job wrote is kept in a Redis set (:data:`OPEN_KEY`, members
``<project>:<task>:<job id>``) until the job's end has been written; :func:`reconcile` walks it,
at every worker's start and on each watchdog pass, so no task is left ``running`` once its job
has ended, even when the write at the end was lost (Label Studio down) or nobody was left to
make it (``kill -9``). Writes here are best-effort (``LABEL_STUDIO_BEST_EFFORT_SECONDS``); a
failed one is tried again on the next pass.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job

from ml_backend.labelstudio.taskdata import update_task_data
from ml_backend.worker.gate import LATEST_KEY
from ml_backend.worker.names import OLD_NAMES, TASK_JOB
from ml_backend.worker.process import SERIALIZER

log = logging.getLogger(__name__)

#: Tasks whose columns may still say queued/running: ``<project>:<task>:<job id>``.
OPEN_KEY = "sam2:columns-open"

#: The reasons shown in ``job_error``.
WORKER_RESTARTED = "worker restarted; the job is back at the front of the queue"
WORKER_LOST = "its worker was lost (killed or its machine stopped); the job is queued to run again"
RERUN = "re-running after a restart"

_WAITING = ("queued", "scheduled", "deferred")


def task_of(job: Any) -> tuple[int, int] | None:
    """``(project, task)`` of a Label Studio task job, else None."""
    try:
        if OLD_NAMES.get(job.func_name, job.func_name) != TASK_JOB:
            return None
        return int(job.args[0]), int(job.args[1])
    except Exception:
        return None


def remember(connection: Any, project: int, task: int, job_id: str) -> None:
    """Note that ``job_id`` writes task ``task``'s columns (called before every such write)."""
    try:
        connection.sadd(OPEN_KEY, f"{project}:{task}:{job_id}")
    except Exception:
        log.debug("could not note task %s's open columns", task, exc_info=True)


def _forget(connection: Any, project: int, task: int, job_id: str) -> None:
    connection.srem(OPEN_KEY, f"{project}:{task}:{job_id}")


def _status(job: Any) -> str:
    status = job.get_status(refresh=True)
    return str(getattr(status, "value", status))


def failure_reason(job: Any) -> str:
    """One sentence: why RQ failed ``job`` (from its last result), never a traceback."""
    text = ""
    try:
        result = job.latest_result()
        text = (result.exc_string if result is not None else "") or ""
    except Exception:
        text = ""
    if "AbandonedJobError" in text:
        return (
            "the worker running it was lost (killed or its machine stopped) and no retries were left; "
            "submit the annotation again to re-run it"
        )
    if "JobTimeoutException" in text:
        return f"it ran longer than JOB_TIMEOUT ({job.timeout} s) and was stopped"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    kind, _, message = last.partition(": ")
    if kind.startswith("ml_backend.exceptions.") and message:
        return message[:300]
    name = kind.rsplit(".", 1)[-1] if kind else "error"
    return f"the job stopped on an unexpected {name}; the worker log has it"


def ended_columns(job: Any, status: str) -> dict[str, Any] | None:
    """The columns ``job`` leaves once it has ended in RQ status ``status``; None while it has
    not ended (queued, started, or finished as a stale copy of a requeued job)."""
    if status == "finished":
        result = job.return_value() if hasattr(job, "return_value") else None
        kind = result.get("status") if isinstance(result, dict) else "done"
        if kind in ("done", "already published", None):
            return {"job_state": "done", "job_progress": 100, "job_error": ""}
        reason = str(result.get("reason") or "a newer annotation replaced it")
        if "requeued" in reason:  # a stale execution; the requeued copy decides
            return None
        return {"job_state": "superseded", "job_error": f"superseded: {reason}"}
    if status == "failed":
        return {"job_state": "failed", "job_error": failure_reason(job)}
    if status == "canceled":
        by = (job.meta or {}).get("superseded_by")
        why = f"a newer annotation (job {by}) replaced it" if by else "the job was cancelled"
        return {"job_state": "cancelled", "job_error": f"cancelled: {why}"}
    if status == "stopped":
        return {"job_state": "cancelled", "job_error": "cancelled: an operator stopped the job"}
    return None


def _write(settings: Any, connection: Any, project: int, task: int, job_id: str, want: Any) -> bool:
    """Apply ``want(data) -> changes | None`` to the task's data if ``job_id`` is still the
    task's latest, checked under the task's lock; best-effort budget. False if it failed."""

    latest_key = LATEST_KEY.format(project=project, task=task)

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        latest = connection.get(latest_key)
        if latest is not None and latest.decode() != job_id:
            return None
        return want(data)

    try:
        update_task_data(settings, connection, task, change, seconds=settings.label_studio_best_effort_seconds)
        return True
    except Exception as exc:  # best-effort: the next pass tries again
        log.warning("could not write task %s's job columns (%s)", task, type(exc).__name__)
        return False


def settle(settings: Any, connection: Any, job: Any, *, reason: str = "", restarted: bool = False) -> bool:
    """Make task columns of ``job`` (a task job) follow its RQ state now. ``reason``: the
    ``job_error`` to show when the job is waiting again on the queue (a stop or a lost worker);
    ``restarted``: a worker just started, so a waiting job whose columns still say ``running``
    was left so by a worker that is gone. Returns False when Label Studio could not be written."""
    where = task_of(job)
    if where is None or not getattr(settings, "label_studio_api_key", ""):
        return True
    project, task = where

    latest = connection.get(LATEST_KEY.format(project=project, task=task))
    if latest is not None and latest.decode() != job.id:
        _forget(connection, project, task, job.id)  # a newer job owns the columns
        return True
    status = _status(job)
    if status in _WAITING:
        if not reason and not restarted:
            return True
        shown = reason or WORKER_RESTARTED

        def queued(data: dict[str, Any]) -> dict[str, Any] | None:
            if _status(job) not in _WAITING:
                return None  # a worker started it meanwhile and wrote "running"
            if not reason and data.get("job_state") != "running":
                return None
            return {"job_state": "queued", "job_progress": 0, "job_error": shown}

        return _write(settings, connection, project, task, job.id, queued)
    columns = ended_columns(job, status)
    if columns is None:
        return True

    def ended(data: dict[str, Any]) -> dict[str, Any] | None:
        if data.get("job_state") == columns["job_state"]:
            if columns["job_state"] != "failed" or data.get("job_error"):
                return None  # already said (a failed job's own sentence is kept)
        return columns

    if _write(settings, connection, project, task, job.id, ended):
        _forget(connection, project, task, job.id)
        return True
    return False


def reconcile(settings: Any, connection: Any, *, restarted: bool = False, limit: int = 200) -> int:
    """Settle every task in :data:`OPEN_KEY` (at most ``limit``); stops at the first write Label
    Studio refuses (the next pass goes on). Returns how many entries were looked at."""

    seen = 0
    for member in list(connection.sscan_iter(OPEN_KEY, count=100))[:limit]:
        seen += 1
        try:
            project, task, job_id = member.decode().split(":", 2)
            project_id, task_id = int(project), int(task)
        except ValueError:
            connection.srem(OPEN_KEY, member)
            continue
        try:
            job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
        except NoSuchJobError:
            job = None
        if job is None:
            gone = {
                "job_state": "failed",
                "job_error": "the job's record is gone from Redis; submit the annotation again",
            }

            def missing(data: dict[str, Any], gone: dict[str, Any] = gone) -> dict[str, Any] | None:
                return gone if data.get("job_state") in ("queued", "running") else None

            if _write(settings, connection, project_id, task_id, job_id, missing):
                _forget(connection, project_id, task_id, job_id)
                continue
            break
        if not settle(settings, connection, job, restarted=restarted):
            break
    return seen
