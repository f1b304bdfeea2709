"""Each annotation of a task has its own job and its own result; deletions remove them.

The rule (README, "Several annotations, Updates and deletions"):

- **Every annotation has its own job and result.** A newer version of the *same* annotation (an
  Update) supersedes the older one: the older job is cancelled if queued, stops at its next frame
  if running, and publishes nothing (per-annotation latest key :data:`LATEST_KEY`). Another
  annotation of the same task never supersedes it.
- **Where results go.** Every annotation's job publishes into its own folder
  ``<results>/project_<P>/annotations/task_<T>/annotation_<A>/``. The task's export folder
  (:func:`ml_backend.worker.jobs.job_out_dir`, e.g. ``project_<P>/task_<T>/``) holds the **primary**
  annotation's result: Label Studio's ground-truth annotation, else the most recently updated
  one. Its files are hard links of the primary's own (copies where links fail).
- **One job prediction per annotation**: the new one is posted, then the older ones of the same
  annotation are deleted (so there is never none).
- **Deletion** (``ANNOTATIONS_DELETED``, ``TASKS_DELETED``): recorded in Redis
  (:data:`DELETED_KEY`, :data:`TASK_DELETED_KEY`, which the publish gate reads in the same
  atomic step as the latest key); queued jobs are cancelled, a running job stops at its next
  frame; the annotation's predictions, its folder and — when it was primary — the task's export
  folder and review fields are removed, under the task's publish lock (so a publish in progress
  is never half-removed). If another annotation remains, it becomes primary: its job runs again.
- Just before publishing, the job asks Label Studio for the task's annotations: a deleted
  annotation (a lost webhook) or a changed one publishes nothing.
- **What people see**: ``job_message`` in the task data (a ``<Text>`` in both labeling configs)
  holds one line per annotation with its state, whether it is the task's result, where its files
  are, and a failed job's reason; reasons name files as the user gave them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from rq.job import JobStatus

from ml_backend.labelstudio.annotations import fingerprint
from ml_backend.labelstudio.predictions import choose_primary, delete_predictions, task_annotations
from ml_backend.labelstudio.taskdata import update_task_data
from ml_backend.worker.gate import LATEST_KEY as TASK_LATEST_KEY
from ml_backend.worker.gate import PublishGate
from ml_backend.worker.records import (
    DELETED_KEY,
    KEEP_SECONDS,
    PRIMARY_KEY,
    PUBLISH_LOCK,
    STATUS_KEY,
    TASK_DELETED_KEY,
    annotation_dir,
    note,
    statuses,
    where_is,
    write_message,
)

log = logging.getLogger(__name__)


# -- files ----------------------------------------------------------------------------------------
def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link of the file ``src`` names (through symbolic links: the SceneDiff
    pair's files are links into its ``.scenediff`` folder), or a copy where links fail."""
    src = Path(src).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _remove_tree(path: Path) -> None:
    """Rename ``path`` aside (one atomic step: it is gone from its place), then delete it."""
    if not path.exists():
        return
    aside = path.parent / f".{path.name}.removed-{uuid.uuid4().hex[:8]}"
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def mirror(files: list[Path], source_dir: Path, task_dir: Path, *, shared: bool) -> list[str]:
    """Make ``task_dir`` hold ``files`` (under ``source_dir``) as hard links; returns their
    relative paths. A task's own folder is swapped whole (built aside, then renamed into place);
    a folder shared by several tasks (a take's green-screen folder) gets the files one by one."""
    rels = sorted({Path(f).relative_to(source_dir).as_posix() for f in files if Path(f).is_file()})
    task_dir.parent.mkdir(parents=True, exist_ok=True)
    if shared:
        task_dir.mkdir(parents=True, exist_ok=True)
        for rel in rels:
            target = task_dir / rel
            tmp = target.parent / f".{target.name}.part-{uuid.uuid4().hex[:8]}"
            _link_or_copy(source_dir / rel, tmp)
            os.replace(tmp, target)
        return rels
    new = task_dir.parent / f".{task_dir.name}.new-{uuid.uuid4().hex[:8]}"
    for rel in rels:
        _link_or_copy(source_dir / rel, new / rel)
    new.mkdir(parents=True, exist_ok=True)
    old = task_dir.parent / f".{task_dir.name}.old-{uuid.uuid4().hex[:8]}"
    if task_dir.exists():
        os.rename(task_dir, old)
    os.rename(new, task_dir)
    shutil.rmtree(old, ignore_errors=True)
    return rels


def primary_record(connection: Any, project: int, task: int) -> dict[str, Any] | None:
    raw = connection.get(PRIMARY_KEY.format(project=project, task=task))
    return json.loads(raw) if raw else None


def set_primary(connection: Any, project: int, task: int, annotation: int, job_id: str, task_dir: Path,
                rels: list[str], shared: bool) -> None:  # fmt: skip
    record = {"annotation": annotation, "job": job_id, "dir": str(task_dir), "files": rels, "shared": shared}
    connection.set(PRIMARY_KEY.format(project=project, task=task), json.dumps(record), ex=KEEP_SECONDS)


def remove_task_result(connection: Any, project: int, task: int) -> dict[str, Any] | None:
    """Remove what the task's export folder holds (the primary's mirror); returns its record."""
    record = primary_record(connection, project, task)
    if record is None:
        return None
    task_dir = Path(record["dir"])
    if record.get("shared"):
        for rel in record.get("files", []):
            (task_dir / rel).unlink(missing_ok=True)
        (task_dir / "greenscreen.mp4").unlink(missing_ok=True)  # it showed the removed frames
    else:
        _remove_tree(task_dir)
    connection.delete(PRIMARY_KEY.format(project=project, task=task))
    return record


REVIEW_FIELDS = ("preview", "review_video", "review_video1", "review_video2", "review_flags")


def cleared_review(data: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {k: "" for k in REVIEW_FIELDS if k in data}
    changes.update(flagged_ranges=None, lowest_score=None)
    return changes


# -- deletion -------------------------------------------------------------------------------------
def publish_lock(connection: Any, project: int, task: int) -> Any:
    return connection.lock(PUBLISH_LOCK.format(project=project, task=task), timeout=PublishGate.LOCK_SECONDS,
                           blocking_timeout=None)  # fmt: skip


def remove_annotation(settings: Any, connection: Any, project: int, task: int, annotation: int, *,
                      lock_held: bool = False, queue: Any = None) -> dict[str, Any]:  # fmt: skip
    """Remove a deleted annotation's results (module docstring), under the task's publish lock
    unless the caller holds it. Idempotent. Returns what was done."""
    lock = None if lock_held else publish_lock(connection, project, task)
    if lock is not None:
        lock.acquire()
    try:
        return _remove(settings, connection, project, task, annotation, queue)
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception:
                log.warning("the publish lock of task %s had expired during a removal", task)


def _remove(settings: Any, connection: Any, project: int, task: int, annotation: int, queue: Any) -> dict[str, Any]:
    task_gone = bool(connection.exists(TASK_DELETED_KEY.format(task=task)))
    done: dict[str, Any] = {"annotation": annotation, "predictions": 0, "task_result": False, "rerun": None}
    if not task_gone:
        try:
            done["predictions"] = delete_predictions(settings, project, task, annotation)
        except Exception as exc:  # the task itself may be gone
            log.warning("could not delete annotation %s's predictions (%s)", annotation, type(exc).__name__)
    _remove_tree(annotation_dir(settings.results_root, project, task, annotation))
    record = primary_record(connection, project, task)
    was_primary = record is not None and int(record["annotation"]) == annotation
    if was_primary or task_gone:
        remove_task_result(connection, project, task)
        done["task_result"] = was_primary
    note(connection, project, task, annotation, "deleted",
         reason="deleted in Label Studio: its job stopped, its prediction and result files were removed")  # fmt: skip
    if task_gone:
        return done
    extra: dict[str, Any] = {}

    newest = connection.get(TASK_LATEST_KEY.format(project=project, task=task))
    if was_primary or (newest is not None and newest.decode().startswith(f"p{project}-t{task}-a{annotation}-")):
        # the columns showed this annotation's job: they say it is gone (or what runs instead)
        extra = {"job_state": "deleted", "job_progress": 0, "job_error": ""}
    if was_primary:
        try:
            update_task_data(settings, connection, task, cleared_review, seconds=10.0)
        except Exception as exc:
            log.warning("could not clear task %s's review fields (%s)", task, type(exc).__name__)
        try:
            remaining = [a for a in task_annotations(settings, task, 10.0) or [] if int(a["id"]) != annotation]
        except Exception:
            remaining = []
        new = choose_primary(remaining)
        if new is not None and queue is not None:
            body = next(a for a in remaining if int(a["id"]) == new)
            job, created = queue.enqueue_task(project, task, new, fingerprint(body), rerun=True)
            note(connection, project, task, new, "queued",
                 reason=f"runs again to become the task's result (annotation {annotation} was deleted)", job=job.id)  # fmt: skip
            done["rerun"] = job.id
            extra = {"job_state": "queued", "job_progress": 0, "job_error": ""}
    write_message(settings, connection, project, task, extra)
    return done


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def cancel_jobs(queue: Any, project: int, task: int, annotation: int | None) -> list[str]:
    """Cancel the queued jobs of ``annotation`` (every annotation of the task when None)."""

    prefix = f"p{project}-t{task}-" + (f"a{annotation}-" if annotation is not None else "")
    cancelled = []
    for job_id in list(queue.queue.job_ids):
        if not job_id.startswith(prefix):
            continue
        job = queue.fetch(job_id)
        if job is not None and job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.meta["superseded_by"] = "deleted"
            job.save_meta()
            job.cancel()
            cancelled.append(job_id)
    return cancelled


def on_deleted(queue: Any, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``ANNOTATIONS_DELETED`` / ``ANNOTATION_DELETED`` / ``TASKS_DELETED``: record each deletion in
    Redis at once (the gate refuses from now on), cancel queued jobs, and remove the results in a
    background thread (``queue.cleanups``) that waits for a publish in progress."""
    conn, settings = queue.connection, queue.settings
    targets: list[tuple[int, int, int]] = []
    if action == "TASKS_DELETED":
        items = payload.get("tasks") or []
        for item in items if isinstance(items, list) else []:
            task = item.get("id") if isinstance(item, dict) else item
            if not _is_id(task):
                continue
            conn.set(TASK_DELETED_KEY.format(task=task), 1, ex=KEEP_SECONDS)
            for key in conn.scan_iter(STATUS_KEY.format(project="*", task=task)):
                project = int(key.decode().split(":")[2])
                cancel_jobs(queue, project, task, None)
                for annotation in statuses(conn, project, task):
                    targets.append((project, task, annotation))
    else:
        items = payload.get("annotations")
        if items is None and isinstance(payload.get("annotation"), dict):
            items = [payload["annotation"]]
        for item in items if isinstance(items, list) else []:
            annotation = item.get("id") if isinstance(item, dict) else item
            if not _is_id(annotation):
                continue
            conn.set(DELETED_KEY.format(annotation=annotation), 1, ex=KEEP_SECONDS)
            found = where_is(conn, annotation)
            if found is None:
                continue
            cancel_jobs(queue, found[0], found[1], annotation)
            targets.append((found[0], found[1], annotation))
    if targets:

        def run() -> None:
            for project, task, annotation in targets:
                try:
                    remove_annotation(settings, conn, project, task, annotation, queue=queue)
                except Exception:
                    log.exception("removing annotation %s's results failed", annotation)

        thread = threading.Thread(target=run, name="annotation-removal", daemon=True)
        thread.start()
        queue.cleanups.append(thread)
    return {"status": "deleted", "annotations": [a for _, _, a in targets]}
