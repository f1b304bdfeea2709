"""A Label Studio webhook, checked once: its action and its ids as a small typed value."""

from __future__ import annotations

from typing import Any

from ml_backend.exceptions import BadPayload

#: Largest id accepted from a webhook (Label Studio ids are 64-bit).
MAX_ID = 2**63 - 1


def _id(value: Any, where: str) -> int:
    """``value`` as a positive integer id; :class:`BadPayload` naming ``where`` otherwise."""

    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value) if len(value) <= 19 else MAX_ID + 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        shown = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)[:60]
        raise BadPayload(f"{where} must be a positive integer id, got {shown}")
    return value


def _id_or_object(value: Any, where: str) -> int:
    """An id given as itself or as an object with an ``id`` (Label Studio sends both forms)."""
    if isinstance(value, dict):
        return _id(value.get("id"), f"{where}.id")
    return _id(value, where)


def clean_webhook(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a webhook ``payload`` whose ids are checked and made ints; the rest unchanged.

    ``project`` (an id or an object with ``id``), ``task`` (the same), ``annotation`` (an object)
    and its ``id``, ``task`` and ``project``: each that is present must be a positive integer
    (digits in a string are accepted). Missing ids are left to the job queue, which says which
    one an action needs. Raises :class:`BadPayload` with the field that is wrong.
    """

    cleaned = dict(payload)
    project = payload.get("project")
    if project is not None:
        project_id = _id_or_object(project, "project")
        cleaned["project"] = dict(project, id=project_id) if isinstance(project, dict) else project_id
    task = payload.get("task")
    if task is not None:
        cleaned["task"] = (
            dict(task, id=_id_or_object(task, "task")) if isinstance(task, dict) else {"id": _id(task, "task")}
        )
    annotation = payload.get("annotation")
    if annotation is not None:
        if not isinstance(annotation, dict):
            raise BadPayload(f"'annotation' must be an object with an 'id', got {type(annotation).__name__}")
        annotation = dict(annotation)
        if "id" in annotation:
            annotation["id"] = _id(annotation["id"], "annotation.id")
        for key in ("task", "project"):
            if annotation.get(key) is not None:
                annotation[key] = _id_or_object(annotation[key], f"annotation.{key}")
        cleaned["annotation"] = annotation
    return cleaned
