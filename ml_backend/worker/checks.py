"""Checks around a job: is its annotation still there and unchanged, are a new task's videos readable."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from ml_backend.exceptions import FetchError, Superseded, VideoError
from ml_backend.labelstudio.annotations import fingerprint
from ml_backend.labelstudio.fetch import default_fetcher
from ml_backend.labelstudio.predictions import choose_primary, task_annotations
from ml_backend.labelstudio.taskdata import shown_ref, update_task_data
from ml_backend.video.frames import open_frames
from ml_backend.worker.lifecycle import _is_id
from ml_backend.worker.progress import ProgressMeta
from ml_backend.worker.records import DELETED_KEY, KEEP_SECONDS, user_reason

log = logging.getLogger(__name__)


# -- inside a job ---------------------------------------------------------------------------------
class Watched(ProgressMeta):
    """Progress that also stops the job at its next frame once ``stop()`` raises (the annotation
    deleted or superseded); ``stop`` is asked at most every ``every`` seconds."""

    def __init__(self, job: Any, stop: Any, every: float = 0.2, **kwargs: Any) -> None:
        super().__init__(job, **kwargs)
        self.stop, self.every, self._asked = stop, every, 0.0

    def __call__(self, video: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._asked >= self.every:
            self._asked = now
            self.stop()
        super().__call__(video, done, total)

    def stage(self, name: str) -> None:
        self.stop()
        super().stage(name)


def verify(settings: Any, connection: Any, queue: Any, project: int, task: int, annotation: int, fp: str) -> int | None:
    """Ask Label Studio, just before publishing, whether ``annotation`` still exists at version
    ``fp`` (the fingerprint of the annotation as the job loaded it); returns the task's primary annotation. Raises :class:`Superseded` when it was deleted
    (recorded as if the webhook had come) or changed (its newer version is enqueued)."""

    annotations = task_annotations(settings, task, min(30.0, settings.label_studio_retry_seconds))
    mine = next((a for a in annotations or [] if int(a["id"]) == annotation), None)
    if mine is None:
        connection.set(DELETED_KEY.format(annotation=annotation), 1, ex=KEEP_SECONDS)
        raise Superseded(f"annotation {annotation} no longer exists in Label Studio")
    if fingerprint(mine) != fp:
        if queue is not None:
            queue.enqueue_task(project, task, annotation, fingerprint(mine))
        raise Superseded(f"annotation {annotation} changed in Label Studio since; its newer version runs")
    return choose_primary(annotations or [])


# -- at import ------------------------------------------------------------------------------------
def video_problem(settings: Any, data: dict[str, Any]) -> str | None:
    """Why a task's video cannot be opened (one sentence), or None when every video opens."""

    fetcher = default_fetcher(settings, max_bytes=64 * 1024**3)
    for key in sorted(k for k in data if re.fullmatch(r"video\d*", k)):
        ref = data.get(key)
        if not isinstance(ref, str) or not ref:
            continue
        shown = shown_ref(ref)
        try:
            path = str(fetcher.path(ref))
        except FetchError as exc:
            why = str(exc).replace(repr(ref), "").replace(ref, "").strip(" :") or "cannot be fetched"
            return user_reason(f"{key} {shown}: {why}", settings)
        try:
            with open_frames(path, cache_frames=1) as source:
                if source.num_frames < 1:
                    return f"{key} {shown} has no frames"
        except VideoError as exc:
            why = str(exc).replace(f"video {path}", "").strip() or "cannot be opened"
            return user_reason(f"{key} {shown} {why}", settings)
    return None


def check_imported(queue: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """``TASKS_CREATED``: open each new task's videos in a background thread; a task whose video
    cannot be opened gets ``job_state`` failed and the reason before anyone annotates it."""

    settings, conn = queue.settings, queue.connection
    items = payload.get("tasks")
    tasks = [t for t in items if isinstance(t, dict) and _is_id(t.get("id"))] if isinstance(items, list) else []

    def run() -> None:
        for task in tasks:
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            try:
                problem = video_problem(settings, data)
            except Exception:
                log.exception("checking task %s's videos failed", task["id"])
                continue
            if problem is None:
                continue
            text = f"The task's video cannot be opened, so no job can run: {problem}. Fix the file or the task."
            try:
                update_task_data(settings, conn, task["id"],
                                 {"job_state": "failed", "job_progress": 0, "job_error": problem, "job_message": text},
                                 seconds=10.0)  # fmt: skip
            except Exception as exc:
                log.warning("could not flag task %s (%s)", task["id"], type(exc).__name__)

    if tasks and settings.label_studio_api_key:
        thread = threading.Thread(target=run, name="import-check", daemon=True)
        thread.start()
        queue.cleanups.append(thread)
    return {"status": "checking", "tasks": [t["id"] for t in tasks]}
