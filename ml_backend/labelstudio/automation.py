"""Label Studio automation on the SDK: projects, the ML backend connection, storage, imports.

The ``scripts/`` commands are thin wrappers around these functions, and the local stack and the
end-to-end tests call them too. Every function takes a ``label_studio_sdk.LabelStudio`` client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ml_backend.labelstudio.config import parse_label_config

log = logging.getLogger(__name__)

#: What the backend's webhook is sent: submissions start jobs, deletions remove their results
#: (:mod:`ml_backend.worker.lifecycle`), new tasks have their videos checked. (Label Studio sends
#: ``START_TRAINING`` to ``/webhook`` itself; it is not a webhook action it accepts.) The webhook
#: Label Studio makes on its own when a backend is connected is sent every action.
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "TASKS_CREATED", "TASKS_DELETED"]


def ensure_project(client: Any, title: str, label_config: str, description: str = "") -> Any:
    """The project called ``title``, created or updated to ``label_config``."""
    for project in client.projects.list():
        if project.title == title:
            if (project.label_config or "").strip() != label_config.strip():
                project = client.projects.update(id=project.id, label_config=label_config)
            return project
    return client.projects.create(title=title, label_config=label_config, description=description)


def connect_backend(
    client: Any,
    project_id: int,
    backend_url: str,
    *,
    title: str = "SAM 2",
    basic_auth: tuple[str, str] | None = None,
    webhook: bool = True,
) -> Any:
    """Attach the ML backend (interactive) to the project, and a webhook to ``<backend>/webhook``.

    Label Studio calls the backend's ``/health`` and ``/setup`` when it is attached; it must be up.
    Returns the ML backend record.
    """
    url = backend_url.rstrip("/")
    kwargs: dict[str, Any] = {"is_interactive": True, "title": title}
    if basic_auth:
        kwargs.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
    existing = [b for b in client.ml.list(project=project_id) if (b.url or "").rstrip("/") == url]
    if existing:
        backend = client.ml.update(id=existing[0].id, url=url, project=project_id, **kwargs)
    else:
        backend = client.ml.create(url=url, project=project_id, **kwargs)
    if webhook:
        hook_url = f"{url}/webhook"
        hooks = [h for h in client.webhooks.list(project=str(project_id)) if h.url == hook_url]
        if not hooks:
            client.webhooks.create(
                url=hook_url, project=project_id, send_payload=True, send_for_all_actions=False, actions=WEBHOOK_ACTIONS
            )
        elif not getattr(hooks[0], "send_for_all_actions", False) and not set(WEBHOOK_ACTIONS) <= set(
            getattr(hooks[0], "actions", None) or []
        ):  # made by an older version of this function
            client.webhooks.update(id=hooks[0].id, actions=WEBHOOK_ACTIONS, url=hook_url, send_payload=True)
    return backend


def ensure_local_storage(client: Any, project_id: int, path: Path, title: str = "frames and videos") -> Any:
    """A local-files import storage on ``path`` (a folder under LOCAL_FILES_DOCUMENT_ROOT).

    Label Studio serves ``/data/local-files/?d=...`` only for folders that some storage covers.
    """
    path = Path(path).resolve()
    for storage in client.import_storage.local.list(project=project_id):
        if Path(storage.path or "").resolve() == path:
            return storage
    return client.import_storage.local.create(project=project_id, path=str(path), title=title, use_blob_urls=False)


def covering_storage(client: Any, project_id: int, path: Path) -> Any | None:
    """The project's local-files storage on ``path`` or on a folder above it (Label Studio serves
    a file to any storage whose path is a prefix of it), or None."""
    path = Path(path).resolve()
    for storage in client.import_storage.local.list(project=project_id):
        if storage.path and path.is_relative_to(Path(storage.path).resolve()):
            return storage
    return None


def local_storage(client: Any, project_id: int, path: Path, title: str = "frames and videos") -> tuple[Any, bool]:
    """``(storage, created)``: a local-files storage covering ``path`` (:func:`covering_storage`),
    made on ``path`` when the project has none; ``created`` says which (to undo it)."""
    found = covering_storage(client, project_id, path)
    if found is not None:
        return found, False
    return ensure_local_storage(client, project_id, path, title), True


def project_tasks(client: Any, project_id: int) -> list[tuple[int, dict[str, Any]]]:
    """``(id, data)`` of every task of the project."""
    return [(int(t.id), dict(t.data or {})) for t in client.tasks.list(project=project_id, fields="task_only")]


def delete_tasks(client: Any, ids: Iterable[int]) -> None:
    for task_id in ids:
        client.tasks.delete(id=task_id)


#: The task-data keys that tell which source video a task was imported from.
SOURCE_KEYS = ("take", "pair", "source_sha256", "video", "video1")


def same_source(tasks: list[tuple[int, dict[str, Any]]], new: dict[str, Any]) -> list[int]:
    """Ids of ``tasks`` imported from the same source as the task data ``new``: the same take
    (or pair) name, the same content hash of the video(s), or the same video URL."""
    out = []
    for task_id, data in tasks:
        for key in SOURCE_KEYS:
            if new.get(key) and data.get(key) == new.get(key):
                out.append(task_id)
                break
    return out


def project_kind(label_config: str) -> str | None:
    """``"greenscreen"`` (one ``<Image valueList>`` with keypoints or brushes), ``"scenediff"``
    (two), or None (neither: not one of our configs)."""

    config = parse_label_config(label_config)
    used = {img for img, _ in config.keypoints.values()} | {img for img, _ in config.brushes.values()}
    lists = [name for name, image in config.images.items() if image.is_list and name in used]
    return {1: "greenscreen", 2: "scenediff"}.get(len(lists))


def required_data_keys(label_config: str) -> list[str]:
    """The task-data keys Label Studio requires on import: the ``value="$key"`` of every object
    tag (an ``<Image>``, ``<Video>``, ``<Text>``...). ``valueList`` keys are not checked by it."""
    from label_studio_sdk.label_interface import LabelInterface

    keys = []
    for obj in LabelInterface(label_config).objects:
        value = (obj.attr or {}).get("value") or ""
        if value.startswith("$") and "valueList" not in (obj.attr or {}):
            keys.append(value[1:])
    return keys


def import_tasks(client: Any, project_id: int, tasks: Iterable[dict[str, Any]]) -> list[int]:
    """Import task data dicts; return the new task ids."""
    payload = [{"data": data} for data in tasks]
    if not payload:
        return []
    before = {t.id for t in client.tasks.list(project=project_id, fields="task_only")}
    client.projects.import_tasks(id=project_id, request=payload)
    after = [t.id for t in client.tasks.list(project=project_id, fields="task_only")]
    return [i for i in after if i not in before]
