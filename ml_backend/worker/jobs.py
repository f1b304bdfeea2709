"""The RQ job functions: propagate a prompt document, or a Label Studio annotation, and publish it.

Job functions are importable module-level functions, as RQ wants:

- :func:`propagate_prompts` — a prompt document (:mod:`~ml_backend.video.prompts`) and video paths, no Label Studio;
- :func:`propagate_task` — a Label Studio task and annotation, fetched with the SDK; results are
  exported and posted back to the task as a prediction.

Job ids are deterministic: ``p<project>-t<task>-a<annotation>-<fingerprint of the result>``, so
the same annotation submitted twice makes one job. A newer version of an annotation supersedes
the older one: the older job is cancelled if it has not started, stops at its next frame and
publishes nothing if it has. Other annotations of the task keep their own jobs and results
(:mod:`ml_backend.worker.lifecycle`).
Submitting an earlier state again (R1 → R2 → R1) makes R1 the latest again and runs it again.

**Publishing** (:class:`PublishGate`): a job writes its exports to a hidden staging folder, then,
holding a per-task Redis lock, checks that its annotation version is still the latest (and not
deleted) and that its
execution still owns the job (a job requeued after its worker was presumed dead is not
published twice); only then are the files renamed into place and the prediction posted.

**Faults**: Label Studio unreachable or answering 5xx is retried with backoff for
``LABEL_STUDIO_RETRY_SECONDS`` (:mod:`~ml_backend.labelstudio.backoff`) when it reads the job's input or posts its
prediction; the task's state columns, progress, preview and review links are best-effort writes
with a short budget (``LABEL_STUDIO_BEST_EFFORT_SECONDS``), sent from a background thread while
the job propagates, so they never hold it up. Input errors (:class:`JobError`) fail at once,
without retries. Progress writes are best-effort: a Redis hiccup never stops a job.

**Stops**: the progress callback is where a worker's stop request (SIGINT/SIGTERM) meets the job:
it raises :class:`~ml_backend.exceptions.WorkerStopping` at the next frame, before publishing
(:mod:`.liveness`); the worker puts the job back at the front of the queue.
Progress is kept in ``job.meta["progress"]``: ``{video: {"done": n, "total": N}}``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rq import get_current_job

from ml_backend.exceptions import AlreadyPublished, JobError, Superseded, WorkerStopping
from ml_backend.labelstudio.annotations import load_task_job
from ml_backend.models import resolve_device
from ml_backend.settings import Settings
from ml_backend.video.options import JobOptions
from ml_backend.video.pipeline import check_job, run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.worker import checks, lifecycle, process, records
from ml_backend.worker.gate import PublishGate, run_token
from ml_backend.worker.process import current_rerun, current_settings
from ml_backend.worker.progress import RERUN_NOTE, JobState, ProgressMeta
from ml_backend.worker.publish import _finish_task, _summary
from ml_backend.worker.queue import JobQueue

log = logging.getLogger(__name__)


def _no_retry_on_bad_input(func):
    """Input errors (:class:`~ml_backend.exceptions.JobError`) fail the job at once: a retry would
    read the same input and fail the same way. Other errors (a crash, a lost connection) keep
    the job's retries."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:

        try:
            return func(*args, **kwargs)
        except JobError:
            job = get_current_job()
            if job is not None:
                job.retries_left = 0
            raise

    return wrapper


def _run(spec: Any, videos: dict[str, str], out_dir: Path, settings: Settings, progress: ProgressMeta) -> Any:
    """Propagate and stage the exports (not published yet)."""

    shapes = check_job(spec, videos)  # input errors before the model is asked for
    progress.stage("loading model")
    predictor = process.get_predictor(settings)  # looked up here, so tests can stand in for it
    device = resolve_device(settings.device)
    progress.stage("propagating")
    progress.declare({video: shape[0] for video, shape in shapes.items()})
    result = run_job(
        predictor,
        spec,
        videos,
        out_dir,
        JobOptions.from_settings(settings, device=device),
        progress=progress,
        publish=False,
    )
    progress.stage("staged")
    return result


def _superseded(job: Any, exc: BaseException) -> dict[str, Any]:
    """The result of a job that publishes nothing (``exc``: a :class:`Superseded`)."""

    log.info("job %s publishes nothing: %s", getattr(job, "id", "?"), exc)
    status = "already published" if isinstance(exc, AlreadyPublished) else "superseded"
    return {"status": status, "reason": str(exc)}


@_no_retry_on_bad_input
def propagate_prompts(prompts: dict[str, Any], videos: dict[str, str], out_dir: str) -> dict[str, Any]:
    """RQ job: propagate a prompt document through ``videos`` into ``out_dir``."""

    spec = parse_prompts(prompts)
    merged = {**spec.videos, **{k: v for k, v in (videos or {}).items() if v}}
    job = get_current_job()
    progress = ProgressMeta(job)
    gate = None
    if job is not None:
        scope = "dir:" + hashlib.sha1(str(Path(out_dir).resolve()).encode()).hexdigest()[:16]
        gate = PublishGate(job.connection, job.id, scope, latest_key=None, run=run_token(job))
        try:
            gate.check()  # this run was published already: no work to do
        except Superseded as exc:
            return _superseded(job, exc)
    with _run(spec, merged, Path(out_dir), current_settings(), progress) as result:
        if gate is None:
            result.publish()
            return _summary(result)
        try:
            with gate:
                progress.stage("publishing")
                result.publish()
        except Superseded as exc:
            return _superseded(job, exc)
        progress.stage("exported")
        return _summary(result)


def job_out_dir(results_root: Path, project_id: int, task_id: int, spec: Any) -> Path:
    """The one folder a Label Studio task job publishes into (``spec``: its
    :class:`~ml_backend.video.prompts.PromptSpec`):

    - a green-screen segment: ``<results>/project_<id>/greenscreen/<take>/``, one folder per
      source video (take), shared by the take's segments, so two takes never touch each other's
      files; a task imported before takes existed (no ``take`` in its data) keeps today's
      ``<results>/project_<id>/greenscreen/``;
    - a SceneDiff pair: ``<results>/project_<id>/task_<id>/``.
    """
    project = Path(results_root) / f"project_{project_id}"
    if spec.format == "greenscreen":
        take = spec.greenscreen.take if spec.greenscreen else ""
        return project / "greenscreen" / take if take else project / "greenscreen"
    return project / f"task_{task_id}"


@_no_retry_on_bad_input
def propagate_task(project_id: int, task_id: int, annotation_id: int) -> dict[str, Any]:
    """RQ job: propagate a Label Studio annotation and post the result back as a prediction.

    Each annotation has its own job and result (:mod:`ml_backend.worker.lifecycle`): the job publishes
    into the annotation's folder and, when its annotation is the task's primary one, into the
    task's export folder too. It stops at its next frame once its annotation is deleted or
    updated, and publishes nothing then.
    """

    settings = current_settings()
    job = get_current_job()
    ids = _TaskIds(project_id, task_id, annotation_id)
    gate = None
    if job is not None:
        gate = PublishGate(
            job.connection,
            job.id,
            f"task:{project_id}:{task_id}",
            records.latest_key(project_id, task_id, annotation_id),
            deny_keys=records.deny_keys(task_id, annotation_id),
            run=run_token(job),
        )
        try:
            gate.check()  # not worth propagating: deleted, or a newer version exists already
        except Superseded as exc:
            return _task_superseded(settings, job, project_id, task_id, annotation_id, exc)
    state = JobState(settings, job, project_id, task_id)
    progress = (
        checks.Watched(job, gate.check, on_percent=state.progress)
        if gate is not None
        else ProgressMeta(job, on_percent=state.progress)
    )
    running = _announce(settings, job, state, ids)
    try:
        state.note = running["job_error"] = RERUN_NOTE if current_rerun() else ""
        state.write(running)  # best-effort: LABEL_STUDIO_BEST_EFFORT_SECONDS at most
        return _propagate_task(settings, job, gate, state, progress, ids)
    except Superseded as exc:
        state.close()
        if job is None:
            raise
        return _task_superseded(settings, job, project_id, task_id, annotation_id, exc)
    except BaseException as exc:
        state.close()
        _note_failure(settings, job, state, ids, exc)
        raise
    finally:
        state.close()


@dataclass(frozen=True)
class _TaskIds:
    project: int
    task: int
    annotation: int


def _announce(settings: Settings, job: Any, state: JobState, ids: _TaskIds) -> dict[str, Any]:
    """Note the annotation as running; the task's columns to write first (with its message when
    this job is the task's latest, which goes in the same write)."""
    running: dict[str, Any] = {"job_state": "running", "job_progress": 0, "job_error": ""}
    if job is not None:  # the annotation's line goes with the columns (one write), or alone
        conn = job.connection
        records.note(conn, ids.project, ids.task, ids.annotation, "running", job=job.id, reason="")
        if state.is_latest():
            running["job_message"] = records.message(conn, ids.project, ids.task)
        else:
            records.write_message(settings, conn, ids.project, ids.task)
    return running


def _propagate_task(
    settings: Settings, job: Any, gate: PublishGate | None, state: JobState, progress: Any, ids: _TaskIds
) -> dict[str, Any]:
    """Load the task, propagate, and publish through ``gate`` (a local run, without a job,
    publishes into the task's folder at once)."""
    conn = job.connection if job else None
    progress.stage("loading task")
    try:
        task_job = load_task_job(settings, ids.project, ids.task, ids.annotation, connection=conn)
    except JobError:
        if gate is not None:
            gate.check()  # a deletion seen meanwhile is the reason, not the missing annotation
        raise
    task_dir = job_out_dir(settings.results_root, ids.project, ids.task, task_job.spec)
    if job is None or gate is None:  # a local run: the task's folder, no Label Studio lifecycle
        with _run(task_job.spec, task_job.videos, task_dir, settings, progress) as result:
            state.close()
            result.publish()
            return _finish_task(result, task_job, ids.task, settings, job, progress)
    out_dir = records.annotation_dir(settings.results_root, ids.project, ids.task, ids.annotation)
    with _run(task_job.spec, task_job.videos, out_dir, settings, progress) as result:
        state.close()  # no progress write may land after the final state
        with gate:
            progress.stage("publishing")
            queue = JobQueue(conn, settings)
            # the version this job propagated (as loaded), not the one its id was made from
            loaded = task_job.annotation_fp or job.id.rsplit("-", 1)[-1]
            primary = checks.verify(settings, conn, queue, ids.project, ids.task, ids.annotation, loaded)
            result.publish()
            return _finish_task(
                result, task_job, ids.task, settings, job, progress,
                project_id=ids.project, annotation_id=ids.annotation, primary=primary, task_dir=task_dir,
            )  # fmt: skip


def _note_failure(settings: Settings, job: Any, state: JobState, ids: _TaskIds, exc: BaseException) -> None:
    """Say why the job stopped: queued again after a worker stop, retrying, or failed."""
    if isinstance(exc, WorkerStopping):  # the worker puts it back and says "queued"
        if job is not None:
            records.note(job.connection, ids.project, ids.task, ids.annotation, "queued", reason="worker restarted")
            records.write_message(settings, job.connection, ids.project, ids.task)
        return
    state.failed(exc)
    if job is not None:
        reason = str(exc) if isinstance(exc, JobError) else f"the job stopped on an unexpected {type(exc).__name__}"
        retrying = not isinstance(exc, JobError) and (job.retries_left or 0) > 0
        records.note(
            job.connection, ids.project, ids.task, ids.annotation, "queued" if retrying else "failed",
            reason=("retrying after: " if retrying else "") + records.user_reason(reason, settings),
        )  # fmt: skip
        records.write_message(settings, job.connection, ids.project, ids.task)


def _task_superseded(
    settings: Settings, job: Any, project_id: int, task_id: int, annotation_id: int, exc: BaseException
) -> dict[str, Any]:
    """A task job that publishes nothing: its annotation's status line says why; a deleted
    annotation's results are removed (again: idempotent)."""

    conn = job.connection
    if isinstance(exc, AlreadyPublished):
        return _superseded(job, exc)
    if records.is_deleted(conn, task_id, annotation_id):
        lifecycle.remove_annotation(settings, conn, project_id, task_id, annotation_id, queue=JobQueue(conn, settings))
    else:
        latest = conn.get(records.latest_key(project_id, task_id, annotation_id))
        if latest is None or latest.decode() == job.id:  # e.g. requeued elsewhere: that run reports
            return _superseded(job, exc)
        records.note(conn, project_id, task_id, annotation_id, "superseded",
                       reason=f"a newer version of this annotation runs ({latest.decode()})")  # fmt: skip
        records.write_message(settings, conn, project_id, task_id)
    return _superseded(job, exc)
