"""The propagation queue: enqueueing with de-duplication, webhooks, Process all, status."""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from ml_backend.connection import redis_for
from ml_backend.exceptions import BadPayload
from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.annotations import fingerprint
from ml_backend.labelstudio.backoff import with_backoff
from ml_backend.labelstudio.webhook import Webhook
from ml_backend.settings import Settings
from ml_backend.worker import records
from ml_backend.worker.checks import check_imported
from ml_backend.worker.gate import LATEST_KEY
from ml_backend.worker.lifecycle import on_deleted
from ml_backend.worker.liveness import is_alive
from ml_backend.worker.names import PROMPTS_JOB, TASK_JOB
from ml_backend.worker.process import SERIALIZER
from ml_backend.worker.progress import JobState
from ml_backend.worker.records import message, write_message
from ml_backend.worker.uploads import on_tasks_created


class JobQueue:
    """Enqueue and inspect propagation jobs on ``settings.queue_name``."""

    def __init__(self, connection: Any, settings: Settings) -> None:

        self.connection = connection
        self.settings = settings
        self.serializer = SERIALIZER
        self.cleanups: list[threading.Thread] = []  # background removals and import checks
        self.queue = Queue(
            settings.queue_name, connection=connection, default_timeout=settings.job_timeout, serializer=SERIALIZER
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:

        return cls(redis_for(settings), settings)

    def fetch(self, job_id: str) -> Any:
        """The RQ job ``job_id``, or None."""

        try:
            return Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            return None

    def _retry(self) -> Any:

        # a retried job (its worker died, or Label Studio stayed away) goes to the front of the queue
        return Retry(max=self.settings.job_retries, enqueue_at_front=True) if self.settings.job_retries > 0 else None

    def enqueue_prompts(
        self, prompts: dict[str, Any], videos: dict[str, str], out_dir: str, job_id: str | None = None
    ) -> Any:
        return self.queue.enqueue(
            PROMPTS_JOB,
            prompts,
            videos,
            str(out_dir),
            job_id=job_id,
            retry=self._retry(),
            result_ttl=7 * 24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description="propagate prompt file",
            meta={"run": uuid.uuid4().hex[:16]},
        )

    def enqueue_task(
        self, project_id: int, task_id: int, annotation_id: int, fp: str, *, rerun: bool = False
    ) -> tuple[Any, bool]:
        """``(job, created)``: the job for this annotation version, which becomes the annotation's
        latest (:data:`ml_backend.worker.records.LATEST_KEY`) and the task's newest (its state columns).

        An unfinished job for the same version is reused. A finished one is reused only if it
        is already the annotation's latest (the same submission twice) and ``rerun`` is not set;
        when another version was submitted in between (R1 → R2 → R1), R1 runs again, since R2's
        results were published after it. A queued job of another version of the *same*
        annotation is cancelled; a running one stops at its next frame and publishes nothing.
        Other annotations of the task keep their jobs (:mod:`ml_backend.worker.lifecycle`).
        """

        job_id = f"p{project_id}-t{task_id}-a{annotation_id}-{fp}"
        task_key = LATEST_KEY.format(project=project_id, task=task_id)
        ann_key = records.latest_key(project_id, task_id, annotation_id)
        previous = self.connection.get(ann_key)
        previous = previous.decode() if previous is not None else None
        records.remember(self.connection, project_id, task_id, annotation_id)
        existing = self.fetch(job_id)
        if existing is not None:
            status = existing.get_status()
            unfinished = status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
            if unfinished or (status == JobStatus.FINISHED and previous == job_id and not rerun):
                self.connection.set(ann_key, job_id)
                self.connection.set(task_key, job_id)
                return existing, False
            existing.delete()
        if previous is not None and previous != job_id:
            old = self.fetch(previous)
            if old is not None and old.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
                old.meta["superseded_by"] = job_id
                old.save_meta()
                old.cancel()
        self.connection.set(ann_key, job_id)
        self.connection.set(task_key, job_id)
        job = self.queue.enqueue(
            TASK_JOB,
            project_id,
            task_id,
            annotation_id,
            job_id=job_id,
            retry=self._retry(),
            result_ttl=30 * 24 * 3600,
            failure_ttl=30 * 24 * 3600,
            description=f"propagate task {task_id} annotation {annotation_id}",
            meta={"run": uuid.uuid4().hex[:16]},
        )
        records.note(self.connection, project_id, task_id, annotation_id, "queued", job=job_id, reason="")
        return job, True

    # -- webhooks -----------------------------------------------------------------------------
    def on_webhook(self, webhook: Webhook | dict[str, Any]) -> dict[str, Any]:
        """Act on a webhook (a body is parsed first: :meth:`Webhook.parse`)."""
        hook = webhook if isinstance(webhook, Webhook) else Webhook.parse(webhook)
        action = hook.action
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            return self._on_annotation(hook)
        if action in ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED", "TASKS_DELETED"):
            return on_deleted(self, action, hook.payload)
        if action == "TASKS_CREATED":
            payload, uploads = on_tasks_created(self, hook.payload)  # uploaded videos: their own jobs
            return {**check_imported(self, payload), **uploads}
        if action == "START_TRAINING":
            if hook.project_id is None:
                raise BadPayload("START_TRAINING webhook without a project id")
            jobs = self.enqueue_project(hook.project_id)
            return {"status": "queued", "job_ids": jobs}
        return {"status": "ignored", "reason": f"action {action} does not start propagation"}

    def _on_annotation(self, hook: Webhook) -> dict[str, Any]:
        if self.settings.webhook_mode != "auto":
            return {
                "status": "ignored",
                "reason": "WEBHOOK_MODE=batch: use Start training or scripts/process_all.py",
            }
        annotation = hook.annotation
        if annotation is None or "id" not in annotation:
            raise BadPayload(f"{hook.action} webhook without an annotation")
        if annotation.get("was_cancelled"):
            return {"status": "ignored", "reason": "skipped task"}
        if hook.task_id is None or hook.project_id is None:
            raise BadPayload(f"{hook.action} webhook without task or project ids")
        job, created = self.enqueue_task(hook.project_id, hook.task_id, annotation["id"], fingerprint(annotation))
        if created:
            self.mark_queued([(hook.project_id, hook.task_id, job.id)])
        return {"status": "queued" if created else "exists", "job_id": job.id}

    def enqueue_project(self, project_id: int) -> list[str]:
        """Enqueue the newest annotation of every annotated task of a project ("Process all")."""

        client = labelstudio.client(self.settings.label_studio_url, self.settings.label_studio_api_key)
        ids: list[str] = []
        queued: list[tuple[int, int, str]] = []
        tasks = with_backoff(
            lambda: list(client.tasks.list(project=project_id, fields="all")),
            seconds=min(self.settings.label_studio_retry_seconds, 10),
            what=f"Label Studio at {self.settings.label_studio_url}",
        )
        for task in tasks:
            annotations = [a for a in (getattr(task, "annotations", None) or []) if not _get(a, "was_cancelled")]
            if not annotations:
                continue
            newest = max(annotations, key=lambda a: (str(_get(a, "updated_at") or ""), _get(a, "id")))
            body = newest if isinstance(newest, dict) else newest.dict()
            job, created = self.enqueue_task(project_id, int(task.id), int(_get(newest, "id")), fingerprint(body))
            ids.append(job.id)
            if created:
                queued.append((project_id, int(task.id), job.id))
        self.mark_queued(queued)
        return ids

    def mark_queued(self, jobs: list[tuple[int, int, str]]) -> threading.Thread | None:
        """Set ``job_state=queued`` on each ``(project, task, job id)``'s task in Label Studio, from
        a background thread (a webhook answers at once); skipped for a job no longer the latest."""
        if not jobs or not self.settings.label_studio_api_key:
            return None

        waiting = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)

        def run() -> None:
            for project_id, task_id, job_id in jobs:
                state = JobState(
                    self.settings, SimpleNamespace(id=job_id, connection=self.connection), project_id, task_id
                )

                def queued(
                    data: dict[str, Any], job_id: str = job_id, project_id: int = project_id, task_id: int = task_id
                ) -> dict[str, Any] | None:
                    # checked under the task's lock: a worker that started the job already wrote
                    # "running", which must not go back to "queued"
                    job = self.fetch(job_id)
                    if job is None or job.get_status() not in waiting:
                        return None

                    return {
                        "job_state": "queued",
                        "job_progress": 0,
                        "job_error": "",
                        "job_message": message(self.connection, project_id, task_id),
                    }

                state.write(queued)

        thread = threading.Thread(target=run, name="task-state-queued", daemon=True)
        thread.start()
        return thread

    def write_message(self, project_id: int, task_id: int) -> threading.Thread | None:
        """Rewrite the task's ``job_message`` (:mod:`ml_backend.worker.lifecycle`) in the background."""
        if not self.settings.label_studio_api_key:
            return None

        thread = threading.Thread(
            target=write_message, args=(self.settings, self.connection, project_id, task_id), daemon=True
        )
        thread.start()
        self.cleanups.append(thread)
        return thread

    def status(self, job_id: str) -> dict[str, Any] | None:
        job = self.fetch(job_id)
        if job is None:
            return None
        status = job.get_status()
        out: dict[str, Any] = {
            "id": job.id,
            "status": str(getattr(status, "value", status)),
            "description": job.description,
            "stage": job.meta.get("stage"),
            "progress": job.meta.get("progress", {}),
            "enqueued_at": job.enqueued_at.isoformat() if job.enqueued_at else None,
            "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        }
        orphaned = out["status"] == "started" and not self._held(job)  # no live worker holds it
        out.update(
            _speed(out["progress"], job.meta.get("propagation_started"), "waiting" if orphaned else out["status"])
        )
        if orphaned:
            out["worker"] = "gone: the job is requeued within seconds"
            out["eta_seconds"] = None
        if job.meta.get("superseded_by"):
            out["superseded_by"] = job.meta["superseded_by"]
        if out["status"] == "finished":
            out["result"] = job.return_value()
        if out["status"] == "failed":
            out["error"] = _reason(job)
        return out

    def _held(self, job: Any) -> bool:
        """Whether a live worker holds ``job`` (its liveness key exists)."""

        try:
            return is_alive(self.connection, job.worker_name)
        except Exception:
            return False

    def jobs(self) -> list[str]:

        ids = list(self.queue.job_ids)
        for registry in (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry):
            ids.extend(registry(queue=self.queue).get_job_ids())
        return ids


def _speed(progress: dict[str, Any], started: float | None, status: str, now: float | None = None) -> dict[str, Any]:
    """``frames`` (done, total and percent over every video of the job), ``fps`` since
    propagation started, and ``eta_seconds`` while a worker runs the job (None until a frame is
    done, and for a job no worker holds: queued again, or its worker gone; 0 once finished)."""
    done = sum(int(p.get("done", 0)) for p in progress.values())
    total = sum(int(p.get("total", 0)) for p in progress.values())
    out: dict[str, Any] = {
        "frames": {"done": done, "total": total, "percent": round(100.0 * done / total, 1) if total else 0.0},
        "fps": None,
        "eta_seconds": None,
    }
    if started and done:
        elapsed = max(1e-6, (now if now is not None else time.time()) - float(started))
        out["fps"] = round(done / elapsed, 3)
        if status == "started":  # held by a live worker (see JobQueue.status)
            out["eta_seconds"] = round((total - done) / (done / elapsed), 1)
        elif status == "finished":
            out["eta_seconds"] = 0.0
    return out


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _reason(job: Any) -> str:
    """The last line of a failed job's traceback: the error's class and message."""
    text = ""
    try:
        result = job.latest_result()
        text = (result.exc_string if result is not None else "") or ""
    except Exception:
        text = getattr(job, "exc_info", "") or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
