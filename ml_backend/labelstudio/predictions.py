"""A task's annotations and predictions in Label Studio: which one is primary, deleting old ones."""

from __future__ import annotations

import re
from typing import Any

from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.backoff import with_backoff


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def task_annotations(settings: Any, task: int, seconds: float = 30.0) -> list[dict[str, Any]] | None:
    """The task's annotations in Label Studio (cancelled ones left out); None when the task is gone."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        found = with_backoff(lambda: labelstudio.for_settings(settings).annotations.list(id=task), seconds=seconds,
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

    pattern = _version_re(project, task, annotation)
    found = with_backoff(lambda: labelstudio.for_settings(settings).predictions.list(task=task), seconds=30,
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
            labelstudio.for_settings(settings).predictions.delete(id=pid)
            deleted += 1
        except ApiError as exc:
            if exc.status_code != 404:
                raise
    return deleted
