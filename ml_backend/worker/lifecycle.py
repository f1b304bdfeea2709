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
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ml_backend.worker.jobs import ProgressMeta

log = logging.getLogger(__name__)

#: The job id of an annotation's newest version (the publish gate's latest key).
LATEST_KEY = "sam2:annotation-latest:{project}:{task}:{annotation}"
#: Set when Label Studio says an annotation (ids are global) or a task was deleted.
DELETED_KEY = "sam2:annotation-deleted:{annotation}"
TASK_DELETED_KEY = "sam2:task-deleted:{task}"
#: ``<project>:<task>`` of an annotation (deletion webhooks carry only the annotation id).
ANNOTATION_TASK_KEY = "sam2:annotation-task:{annotation}"
#: Hash of a task's annotations: annotation id -> JSON status (:func:`note`).
STATUS_KEY = "sam2:task-annotations:{project}:{task}"
#: JSON ``{annotation, job, dir, files, shared}``: what the task's export folder holds.
PRIMARY_KEY = "sam2:task-primary:{project}:{task}"
#: The publish gate's lock of a task (:class:`ml_backend.worker.jobs.PublishGate`, scope ``task:P:T``).
PUBLISH_LOCK = "sam2:publish-lock:task:{project}:{task}"
KEEP_SECONDS = 30 * 24 * 3600

RULE = (
    "Rule: each annotation has its own job and result. The task's export folder holds the ground-truth "
    "annotation's result, else the most recently updated one's; the others are kept in "
    "annotations/task_{task}/annotation_<id>/ beside it."
)


def latest_key(project: int, task: int, annotation: int) -> str:
    return LATEST_KEY.format(project=project, task=task, annotation=annotation)


def deny_keys(task: int, annotation: int) -> list[str]:
    return [DELETED_KEY.format(annotation=annotation), TASK_DELETED_KEY.format(task=task)]


def is_deleted(connection: Any, task: int, annotation: int) -> bool:
    return bool(connection.exists(*deny_keys(task, annotation)))


def annotation_dir(results_root: Path, project: int, task: int, annotation: int) -> Path:
    return Path(results_root) / f"project_{project}" / "annotations" / f"task_{task}" / f"annotation_{annotation}"


def shown_ref(ref: Any) -> str:
    """A task file as the user gave it: a local-files URL as its path relative to the storage
    root (``pairs/x/video1.mp4``), anything else unchanged."""
    text = str(ref)
    match = re.match(r"^(?:https?://[^/]+)?/data/local-files/?\?d=(.*)$", text)
    return unquote(match.group(1)) if match else text


def user_reason(text: str, settings: Any) -> str:
    """``text`` with server paths made relative: under the local-files root as the storage-relative
    path, under the results folder as ``results/...``, any other absolute path as its file name."""
    text = str(text).strip().splitlines()[0] if str(text).strip() else ""
    roots = []
    if getattr(settings, "local_files_root", ""):
        roots.append((str(Path(settings.local_files_root).resolve()), ""))
        roots.append((str(settings.local_files_root), ""))
    if getattr(settings, "results_root", None):
        roots.append((str(Path(settings.results_root)), "results"))
    for root, name in roots:
        root = root.rstrip("/")
        if root:
            text = re.sub(re.escape(root) + r"/(\S+)", lambda m, n=name: f"{n}/{m.group(1)}" if n else m.group(1), text)
    return re.sub(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+([^\s/'\"]+)", r"\1", text)


# -- per-annotation status and the task's job_message --------------------------------------------
def remember(connection: Any, project: int, task: int, annotation: int) -> None:
    connection.set(ANNOTATION_TASK_KEY.format(annotation=annotation), f"{project}:{task}", ex=KEEP_SECONDS)


def where_is(connection: Any, annotation: int) -> tuple[int, int] | None:
    value = connection.get(ANNOTATION_TASK_KEY.format(annotation=annotation))
    if value is None:
        return None
    project, task = value.decode().split(":")
    return int(project), int(task)


def note(connection: Any, project: int, task: int, annotation: int, state: str, **fields: Any) -> None:
    """Record annotation ``annotation``'s state (queued, running, done, failed, superseded, deleted)."""
    key = STATUS_KEY.format(project=project, task=task)
    try:
        old = connection.hget(key, str(annotation))
        status = json.loads(old) if old else {}
        if state != "done":
            status.pop("role", None)
        status.update(fields, state=state, at=time.time())
        connection.hset(key, str(annotation), json.dumps(status))
        connection.expire(key, KEEP_SECONDS)
    except Exception as exc:  # a status line is not worth a failed job
        log.warning("could not record annotation %s's state (%s)", annotation, type(exc).__name__)


def statuses(connection: Any, project: int, task: int) -> dict[int, dict[str, Any]]:
    raw = connection.hgetall(STATUS_KEY.format(project=project, task=task))
    return {int(k): json.loads(v) for k, v in raw.items()}


def message(connection: Any, project: int, task: int) -> str:
    """``job_message``: the rule, then one line per annotation (module docstring)."""
    lines = []
    for annotation, status in sorted(statuses(connection, project, task).items()):
        state, reason = status.get("state", "?"), status.get("reason", "")
        line = f"Annotation {annotation}: {state}"
        if state == "done" and status.get("role") == "primary":
            line += (
                f" · the task's result (export folder {status.get('task_dir', '')}, prediction {status.get('job', '')})"
            )
        elif state == "done":
            line += (
                f" · not the task's result ({reason}); its own result is in {status.get('dir', '')} "
                f"and its prediction {status.get('job', '')}"
            )
        elif reason:
            line += f" · {reason}"
        lines.append(line)
    if not lines:
        return ""
    return "\n".join([RULE.format(task=task), *lines])


def write_message(settings: Any, connection: Any, project: int, task: int, extra: dict[str, Any] | None = None) -> None:
    """Write ``job_message`` (and ``extra`` keys) into the task's data; best-effort."""
    from ml_backend.labelstudio.taskdata import update_task_data

    if connection.exists(TASK_DELETED_KEY.format(task=task)):
        return
    try:
        update_task_data(
            settings,
            connection,
            task,
            lambda data: {"job_message": message(connection, project, task), **(extra or {})},
            seconds=min(10.0, settings.label_studio_retry_seconds),
        )
    except Exception as exc:
        log.warning("could not write task %s's job_message (%s)", task, type(exc).__name__)


# -- Label Studio: the task's annotations and predictions -----------------------------------------
def _client(settings: Any) -> Any:
    from ml_backend.labelstudio import client as labelstudio

    return labelstudio.client(settings.label_studio_url, settings.label_studio_api_key)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def task_annotations(settings: Any, task: int, seconds: float = 30.0) -> list[dict[str, Any]] | None:
    """The task's annotations in Label Studio (cancelled ones left out); None when the task is gone."""
    from label_studio_sdk.core.api_error import ApiError

    from ml_backend.labelstudio.backoff import with_backoff

    try:
        found = with_backoff(lambda: _client(settings).annotations.list(id=task), seconds=seconds,
                             what=f"Label Studio at {settings.label_studio_url}")  # fmt: skip
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise
    out = []
    for a in found or []:
        body = a if isinstance(a, dict) else a.dict()
        if not body.get("was_cancelled"):
            out.append(body)
    return out


def choose_primary(annotations: list[dict[str, Any]]) -> int | None:
    """The ground-truth annotation, else the most recently updated one (ties: the higher id)."""
    if not annotations:
        return None
    truth = [a for a in annotations if a.get("ground_truth")]
    pool = truth or annotations
    return int(max(pool, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a["id"])))["id"])


def _version_re(project: int, task: int, annotation: int) -> re.Pattern[str]:
    return re.compile(rf"-job-p{project}-t{task}-a{annotation}-[0-9a-f]+$")


def annotation_predictions(settings: Any, project: int, task: int, annotation: int) -> list[Any]:
    from ml_backend.labelstudio.backoff import with_backoff

    pattern = _version_re(project, task, annotation)
    found = with_backoff(lambda: _client(settings).predictions.list(task=task), seconds=30,
                         what=f"Label Studio at {settings.label_studio_url}")  # fmt: skip
    return [p for p in found or [] if pattern.search(str(_get(p, "model_version") or ""))]


def delete_predictions(settings: Any, project: int, task: int, annotation: int, keep: int | None = None) -> int:
    """Delete the job predictions of ``annotation`` but ``keep``; how many were deleted."""
    from label_studio_sdk.core.api_error import ApiError

    deleted = 0
    for prediction in annotation_predictions(settings, project, task, annotation):
        pid = int(_get(prediction, "id"))
        if pid == keep:
            continue
        try:
            _client(settings).predictions.delete(id=pid)
            deleted += 1
        except ApiError as exc:
            if exc.status_code != 404:
                raise
    return deleted


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
    from ml_backend.worker.jobs import PublishGate

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
    from ml_backend.worker.jobs import LATEST_KEY as TASK_LATEST_KEY

    newest = connection.get(TASK_LATEST_KEY.format(project=project, task=task))
    if was_primary or (newest is not None and newest.decode().startswith(f"p{project}-t{task}-a{annotation}-")):
        # the columns showed this annotation's job: they say it is gone (or what runs instead)
        extra = {"job_state": "deleted", "job_progress": 0, "job_error": ""}
    if was_primary:
        from ml_backend.labelstudio.taskdata import update_task_data

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
            from ml_backend.worker.jobs import fingerprint

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
    from rq.job import JobStatus

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
    from ml_backend.exceptions import Superseded
    from ml_backend.worker.jobs import fingerprint

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
    from ml_backend.exceptions import FetchError, VideoError
    from ml_backend.server.app import default_fetcher
    from ml_backend.video.frames import open_frames

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
    from ml_backend.labelstudio.taskdata import update_task_data

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
