"""Label Studio automation on the SDK: projects, the ML backend connection, storage, imports.

The ``scripts/`` commands are thin wrappers around these functions, and the local stack and the
end-to-end tests call them too. Every function takes a ``label_studio_sdk.LabelStudio`` client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "START_TRAINING"]


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


def import_tasks(client: Any, project_id: int, tasks: Iterable[dict[str, Any]]) -> list[int]:
    """Import task data dicts; return the new task ids."""
    payload = [{"data": data} for data in tasks]
    if not payload:
        return []
    before = {t.id for t in client.tasks.list(project=project_id, fields="task_only")}
    client.projects.import_tasks(id=project_id, request=payload)
    after = [t.id for t in client.tasks.list(project=project_id, fields="task_only")]
    return [i for i in after if i not in before]
