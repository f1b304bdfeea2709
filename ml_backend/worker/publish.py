"""The end of a Label Studio task job: the prediction, the task's columns, review pages, prefetch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
    finish = _Finish(result, task_job, task_id, settings, job, progress, project_id, annotation_id, primary, task_dir)
    return finish.run()


@dataclass
class _Finish:
    result: Any
    task_job: Any
    task_id: int
    settings: Settings
    job: Any
    progress: ProgressMeta
    project_id: int | None
    annotation_id: int | None
    primary: int | None
    task_dir: Path | None

    def __post_init__(self) -> None:
        self.conn = self.job.connection if self.job else None
        self.lifecycled = self.conn is not None and self.annotation_id is not None
        self.is_primary = not self.lifecycled or self.primary == self.annotation_id
        self.review: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        self.progress.stage("updating the task")
        where, rels = self.place()
        self.note_done()
        data = self.write_review()
        if self.job is not None and data:
            _request_prefetch(self.conn, self.project_id, self.task_id, self.task_job, data)
        self.progress.stage("posting prediction")
        prediction, replaced = self.post_prediction()
        self.progress.stage("exported")
        summary = _summary(self.result)
        summary["prediction_regions"] = len(prediction)
        summary["review"] = self.review
        summary["signs"] = self.task_job.signs  # keypoints whose sign was given, recorded or unknown
        if self.lifecycled:
            summary.update(annotation=self.annotation_id, primary=self.is_primary,
                           annotation_dir=str(self.result.out_dir), replaced_predictions=replaced)  # fmt: skip
            if self.is_primary:  # where the task's export is (the annotation's own folder holds the same files)
                summary.update(out_dir=where, files=[str(Path(where) / rel) for rel in rels])
        return summary

    def deleted_now(self) -> None:
        if self.lifecycled and records.is_deleted(self.conn, self.task_id, self.annotation_id):
            lifecycle.remove_annotation(
                self.settings, self.conn, self.project_id, self.task_id, self.annotation_id, lock_held=True
            )
            raise Superseded(f"annotation {self.annotation_id} was deleted while its job published")

    def place(self) -> tuple[str, list[str]]:
        """The primary annotation's files mirrored into the task's folder; ``(where, files)``."""
        where, rels = str(self.result.out_dir), []
        if not self.lifecycled:
            return where, rels
        self.deleted_now()
        conn, project_id, task_id, task_dir = self.conn, self.project_id, self.task_id, self.task_dir
        shared = self.task_job.spec.format == "greenscreen"
        if self.is_primary:
            rels = lifecycle.mirror(self.result.files, Path(self.result.out_dir), task_dir, shared=shared)
            lifecycle.set_primary(conn, project_id, task_id, self.annotation_id, self.job.id, task_dir, rels, shared)
            gs = self.task_job.spec.greenscreen
            if shared and self.settings.greenscreen_mp4 and gs is not None and gs.segment_frames:
                assemble_greenscreen_mp4(task_dir, list(gs.segment_frames), gs.start_frame,
                                         gs.fps or self.settings.greenscreen_fps or 30.0)  # fmt: skip
            where = str(task_dir)
        else:
            record = lifecycle.primary_record(conn, project_id, task_id)
            if record is not None and int(record["annotation"]) == self.annotation_id:
                lifecycle.remove_task_result(conn, project_id, task_id)  # its older version was primary
        return where, rels

    def note_done(self) -> None:
        """The annotation's line, written with the task's review fields (one write)."""
        if not self.lifecycled:
            return
        root = Path(self.settings.results_root)
        ids = (self.conn, self.project_id, self.task_id, self.annotation_id, "done")
        if self.is_primary:
            records.note(*ids, role="primary", job=self.job.id, task_dir=_relative(self.task_dir, root),
                         dir=_relative(self.result.out_dir, root), reason="")  # fmt: skip
        else:
            why = (
                f"annotation {self.primary} is the task's primary one: the ground truth, else the most recently updated"
            )
            records.note(*ids, role="other", job=self.job.id, dir=_relative(self.result.out_dir, root), reason=why)

    def write_review(self) -> dict[str, Any] | None:
        """The task's review columns (best-effort: the prediction is the job's result, not the columns)."""
        key = (self.job.id.rsplit("-", 1)[-1] if self.job else "local")[:16]

        def change(data: dict[str, Any]) -> dict[str, Any]:
            changes, review = review_task(self.settings, self.task_job, self.result, data, key)
            self.review.update(review)
            if self.lifecycled and not self.is_primary:  # the task shows its primary annotation's review
                changes = {}
            if self.lifecycled:
                changes["job_message"] = records.message(self.conn, self.project_id, self.task_id)
            return changes

        seconds = self.settings.label_studio_best_effort_seconds
        try:
            return update_task_data(self.settings, self.conn, self.task_id, change, seconds=seconds)
        except Exception as exc:
            log.warning(
                "could not write task %s's review columns (%s); posting the prediction",
                self.task_id,
                type(exc).__name__,
            )
            return None

    def post_prediction(self) -> tuple[list[dict[str, Any]], int]:
        """Post the prediction, then delete the annotation's older ones; ``(regions, deleted)``."""
        settings, job = self.settings, self.job
        version = f"{model_version(settings)}-job-{job.id if job else 'local'}"
        prediction = self.task_job.prediction(self.result, version)
        score = float(self.review.get("confidence", 1.0))
        if self.lifecycled:
            self.deleted_now()
        posted = with_backoff(
            lambda: labelstudio.for_settings(settings).predictions.create(
                task=self.task_id, result=prediction, model_version=version, score=score
            ),
            seconds=settings.label_studio_retry_seconds,
            what=f"Label Studio at {settings.label_studio_url}",
        )
        replaced = 0
        if self.lifecycled:
            keep = int(getattr(posted, "id", 0) or 0)
            try:
                replaced = predictions.delete_predictions(
                    settings, self.project_id, self.task_id, self.annotation_id, keep=keep
                )
            except Exception as exc:  # the new one is posted: an old tab left is not worth a failed job
                log.warning("could not delete older predictions of annotation %s (%s)", self.annotation_id, exc)
        return prediction, replaced


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
