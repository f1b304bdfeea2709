"""The polling fallback for uploads: a thread of every worker that finds uploaded videos whose
``TASKS_CREATED`` webhook never came (or came while the backend was down)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.automation import project_tasks
from ml_backend.worker.process import current_settings
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.uploads import enqueue, is_upload, uploads_target

log = logging.getLogger(__name__)


def poll_once(queue: Any) -> list[str]:
    """Enqueue every upload of every uploads project that has no state yet (its webhook was lost,
    or the backend was down when it came); returns the job ids."""

    client = labelstudio.client(queue.settings.label_studio_url, queue.settings.label_studio_api_key)
    ids = []
    for project in client.projects.list():
        found = uploads_target(getattr(project, "label_config", None))
        if found is None:
            continue
        for task, data in project_tasks(client, int(project.id)):
            if is_upload(data, found[1]) and not data.get("job_state"):
                ids.append(enqueue(queue, int(project.id), task))
    return ids


def poll_forever(connection: Any, stop: threading.Event) -> None:
    """The polling fallback, a thread of every worker (``UPLOAD_POLL_SECONDS``, 0 = off): one
    worker of the queue at a time runs :func:`poll_once` every that many seconds."""

    try:
        settings = current_settings()
    except Exception:  # the worker itself reports bad settings
        return
    interval = settings.upload_poll_seconds
    if interval <= 0 or not settings.label_studio_api_key:
        return
    queue = JobQueue(connection, settings)
    while not stop.wait(interval):
        try:
            if connection.set(f"sam2:upload-poll:{settings.queue_name}", "1", nx=True, px=int(interval * 900)):
                found = poll_once(queue)
                if found:
                    log.info("polling found %d upload(s) without a state: %s", len(found), ", ".join(found))
        except Exception as exc:  # Label Studio or Redis away: the next round tries again
            log.debug("upload poll failed (%s)", type(exc).__name__, exc_info=True)
