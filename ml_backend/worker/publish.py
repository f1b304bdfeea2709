"""The end of a Label Studio task job: the prediction, the task's columns, review pages, prefetch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ml_backend.exceptions import Superseded
from ml_backend.exporters.greenscreen import assemble_greenscreen_mp4
from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio import predictions
from ml_backend.labelstudio.backoff import with_backoff
from ml_backend.labelstudio.review import review_task
from ml_backend.labelstudio.taskdata import update_task_data
from ml_backend.models import model_version
from ml_backend.settings import Settings
from ml_backend.worker import lifecycle, records
from ml_backend.worker.pagerequests import page_order, push_request
from ml_backend.worker.progress import ProgressMeta

log = logging.getLogger(__name__)


def _finish_task(
    result: Any,
    task_job: Any,
    task_id: int,
    settings: Settings,
    job: Any,
    progress: ProgressMeta,
    *,
    project_id: int | None = None,
    annotation_id: int | None = None,
    primary: int | None = None,
    task_dir: Path | None = None,
) -> dict[str, Any]:
    """Publish a finished task job (called with the publish gate held, files published under
    ``result.out_dir``): the task's export folder and review fields when the annotation is the
    task's primary one, the prediction (older ones of the same annotation deleted after it), and
    the annotation's status line."""

    conn = job.connection if job else None
    lifecycled = conn is not None and annotation_id is not None
    is_primary = not lifecycled or primary == annotation_id

    def deleted_now() -> None:
        if lifecycled and records.is_deleted(conn, task_id, annotation_id):
            lifecycle.remove_annotation(settings, conn, project_id, task_id, annotation_id, lock_held=True)
            raise Superseded(f"annotation {annotation_id} was deleted while its job published")

    progress.stage("updating the task")
    key = (job.id.rsplit("-", 1)[-1] if job else "local")[:16]
    summary_review: dict[str, Any] = {}
    where, rels = str(result.out_dir), []
    if lifecycled:
        deleted_now()
        shared = task_job.spec.format == "greenscreen"
        if is_primary:
            rels = lifecycle.mirror(result.files, Path(result.out_dir), task_dir, shared=shared)
            lifecycle.set_primary(conn, project_id, task_id, annotation_id, job.id, task_dir, rels, shared)
            gs = task_job.spec.greenscreen
            if shared and settings.greenscreen_mp4 and gs is not None and gs.segment_frames:
                assemble_greenscreen_mp4(task_dir, list(gs.segment_frames), gs.start_frame,
                                         gs.fps or settings.greenscreen_fps or 30.0)  # fmt: skip
            where = str(task_dir)
        else:
            record = lifecycle.primary_record(conn, project_id, task_id)
            if record is not None and int(record["annotation"]) == annotation_id:
                lifecycle.remove_task_result(conn, project_id, task_id)  # its older version was primary

    root = Path(settings.results_root)
    if lifecycled:  # the annotation's line is written with the task's review fields (one write)
        if is_primary:
            records.note(conn, project_id, task_id, annotation_id, "done", role="primary", job=job.id,
                           task_dir=_relative(task_dir, root), dir=_relative(result.out_dir, root), reason="")  # fmt: skip
        else:
            why = f"annotation {primary} is the task's primary one: the ground truth, else the most recently updated"
            records.note(conn, project_id, task_id, annotation_id, "done", role="other", job=job.id,
                           dir=_relative(result.out_dir, root), reason=why)  # fmt: skip

    def change(data: dict[str, Any]) -> dict[str, Any]:
        changes, review = review_task(settings, task_job, result, data, key)
        summary_review.update(review)
        if lifecycled and not is_primary:  # the task shows its primary annotation's review
            changes = {}
        if lifecycled:
            changes["job_message"] = records.message(conn, project_id, task_id)
        return changes

    data = None
    try:  # best-effort: the prediction is the job's result, not the columns
        data = update_task_data(settings, conn, task_id, change, seconds=settings.label_studio_best_effort_seconds)
    except Exception as exc:
        log.warning(
            "could not write task %s's review columns (%s); posting the prediction", task_id, type(exc).__name__
        )
    if job is not None and data:
        _request_prefetch(conn, project_id, task_id, task_job, data)
    progress.stage("posting prediction")
    version = f"{model_version(settings)}-job-{job.id if job else 'local'}"
    prediction = task_job.prediction(result, version)
    score = float(summary_review.get("confidence", 1.0))
    if lifecycled:
        deleted_now()
    posted = with_backoff(
        lambda: labelstudio.client(settings.label_studio_url, settings.label_studio_api_key).predictions.create(
            task=task_id, result=prediction, model_version=version, score=score
        ),
        seconds=settings.label_studio_retry_seconds,
        what=f"Label Studio at {settings.label_studio_url}",
    )
    replaced = 0
    if lifecycled:
        try:
            replaced = predictions.delete_predictions(
                settings, project_id, task_id, annotation_id, keep=int(getattr(posted, "id", 0) or 0)
            )
        except Exception as exc:  # the new one is posted: an old tab left is not worth a failed job
            log.warning("could not delete older predictions of annotation %s (%s)", annotation_id, exc)
    progress.stage("exported")
    summary = _summary(result)
    summary["prediction_regions"] = len(prediction)
    summary["review"] = summary_review
    summary["signs"] = task_job.signs  # keypoints whose sign was given, recorded or unknown
    if lifecycled:
        summary.update(annotation=annotation_id, primary=is_primary, annotation_dir=str(result.out_dir),
                       replaced_predictions=replaced)  # fmt: skip
        if is_primary:  # where the task's export is (the annotation's own folder holds the same files)
            summary.update(out_dir=where, files=[str(Path(where) / rel) for rel in rels])
    return summary


def _relative(path: Any, root: Path) -> str:
    try:
        return "results/" + Path(path).relative_to(root).as_posix() + "/"
    except ValueError:
        return Path(path).name


def _request_prefetch(connection: Any, project: Any, task: int, task_job: Any, data: dict[str, Any]) -> None:
    """Ask the backend to embed the task's pages, appended flagged frames included, so the
    reviewer's first click on any of them costs only the mask decoder (best effort)."""

    lists = [data.get(info.data_key) for info in task_job.images.values()]
    refs = page_order([value for value in lists if isinstance(value, list)])
    if not refs:
        return
    try:
        push_request(connection, project, task, refs)
    except Exception as exc:  # the job's result does not depend on it
        log.info("could not queue the task's pages for prefetching: %s", type(exc).__name__)


def _summary(result: Any) -> dict[str, Any]:
    return {
        "status": "done",
        "out_dir": str(result.out_dir),
        "files": [str(p) for p in result.files],
        "frames": result.num_frames,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
    }
