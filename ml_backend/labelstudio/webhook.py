"""A Label Studio webhook, checked once: its action and its ids as a small typed value."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Webhook:
    """A webhook body parsed once (:meth:`parse`): the job queue and the first-frame preview
    both read it. ``payload`` is the body with its ids checked and made ints
    (:func:`clean_webhook`); ``project_id``, ``task_id`` and ``annotation`` are found where Label
    Studio puts them (on the body, or on its annotation), None where it sends none."""

    action: str
    payload: dict[str, Any]
    project_id: int | None = None
    task_id: int | None = None
    annotation: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: Any) -> Webhook:
        """Check a webhook body; :class:`BadPayload` naming what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("action"), str):
            raise BadPayload("a webhook body is a JSON object with an 'action'")
        return cls.of(clean_webhook(data))

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Webhook:
        """The value of a body whose ids are checked already (:func:`clean_webhook`)."""
        annotation = payload.get("annotation") if isinstance(payload.get("annotation"), dict) else None
        project = payload.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if project_id is None and annotation is not None:
            project_id = annotation.get("project")
        task = annotation.get("task") if annotation and annotation.get("task") is not None else payload.get("task")
        task_id = task.get("id") if isinstance(task, dict) else task
        return cls(payload["action"], payload, project_id, task_id, annotation)

    @property
    def project(self) -> Any:
        """The body's ``project`` as sent: an id, or an object (with its ``label_config``)."""
        return self.payload.get("project")

    @property
    def task(self) -> Any:
        """The body's ``task`` as sent: an object with an ``id`` (and its ``data``), or None."""
        return self.payload.get("task")
