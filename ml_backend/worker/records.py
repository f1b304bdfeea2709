"""Each annotation's job record in Redis: its keys, its status notes, the message its task shows."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from ml_backend.labelstudio.taskdata import update_task_data

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
