"""Propagation jobs on an RQ queue: enqueueing (with de-duplication), the job functions, status.

Job functions are importable module-level functions, as RQ wants:

- :func:`propagate_prompts` — a prompt document (:mod:`.prompts`) and video paths, no Label Studio;
- :func:`propagate_task` — a Label Studio task and annotation, fetched with the SDK; results are
  exported and posted back to the task as a prediction.

Job ids are deterministic: ``p<project>-t<task>-a<annotation>-<fingerprint of the result>``, so
the same annotation submitted twice makes one job. A newer annotation of a task supersedes a
queued older one: the older job is cancelled if it has not started, and skips itself if it has.
Progress is kept in ``job.meta["progress"]``: ``{video: {"done": n, "total": N}}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)

LATEST_KEY = "sam2:task-latest:{project}:{task}"


class ProgressMeta:
    """Progress callback that writes ``job.meta["progress"]`` at most every ``interval`` seconds."""

    def __init__(self, job: Any, interval: float = 0.5) -> None:
        self.job = job
        self.interval = interval
        self._last = 0.0
        if job is not None:
            job.meta.setdefault("progress", {})

    def __call__(self, video: str, done: int, total: int) -> None:
        if self.job is None:
            return
        self.job.meta["progress"][video] = {"done": done, "total": total}
        now = time.monotonic()
        if done == total or now - self._last >= self.interval:
            self._last = now
            self.job.save_meta()

    def stage(self, name: str) -> None:
        if self.job is not None:
            self.job.meta["stage"] = name
            self.job.save_meta()


def _no_retry_on_bad_input(func):
    """Input errors (:class:`~ml_backend.exceptions.JobError`) fail the job at once: a retry would
    read the same input and fail the same way. Other errors (a crash, a lost connection) keep
    the job's retries."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rq import get_current_job

        from .exceptions import JobError

        try:
            return func(*args, **kwargs)
        except JobError:
            job = get_current_job()
            if job is not None:
                job.retries_left = 0
            raise

    return wrapper


def _run(spec: Any, videos: dict[str, str], out_dir: Path, settings: Settings, progress: ProgressMeta) -> Any:
    from .models import autocast, resolve_device
    from .pipeline import run_job
    from .worker import get_predictor

    progress.stage("loading model")
    predictor = get_predictor(settings)
    device = resolve_device(settings.device)
    progress.stage("propagating")
    result = run_job(
        predictor,
        spec,
        videos,
        out_dir,
        image_size=settings.image_size,
        progress=progress,
        review=settings.review_exports,
        prefetch=settings.prefetch_frames,
        prefetch_workers=settings.prefetch_workers,
        offload_state_to_cpu=settings.offload_state_to_cpu,
        autocast=lambda: autocast(settings, device),
        greenscreen_mp4=settings.greenscreen_mp4,
        greenscreen_fps=settings.greenscreen_fps,
    )
    progress.stage("exported")
    return result


def _summary(result: Any) -> dict[str, Any]:
    return {
        "status": "done",
        "out_dir": str(result.out_dir),
        "files": [str(p) for p in result.files],
        "frames": result.num_frames,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
    }


@_no_retry_on_bad_input
def propagate_prompts(prompts: dict[str, Any], videos: dict[str, str], out_dir: str) -> dict[str, Any]:
    """RQ job: propagate a prompt document through ``videos`` into ``out_dir``."""
    from rq import get_current_job

    from .prompts import parse_prompts
    from .worker import current_settings

    spec = parse_prompts(prompts)
    merged = {**spec.videos, **{k: v for k, v in videos.items() if v}}
    with _run(spec, merged, Path(out_dir), current_settings(), ProgressMeta(get_current_job())) as result:
        return _summary(result)


@_no_retry_on_bad_input
def propagate_task(project_id: int, task_id: int, annotation_id: int) -> dict[str, Any]:
    """RQ job: propagate a Label Studio annotation and post the result back as a prediction."""
    from rq import get_current_job

    from .worker import current_settings

    settings = current_settings()
    job = get_current_job()
    if job is not None:
        latest = job.connection.get(LATEST_KEY.format(project=project_id, task=task_id))
        if latest is not None and latest.decode() != job.id:
            return {"status": "superseded", "by": latest.decode()}
    progress = ProgressMeta(job)
    progress.stage("loading task")
    from .annotations import load_task_job

    task_job = load_task_job(settings, project_id, task_id, annotation_id)
    out_dir = (
        settings.results_root
        / f"project_{project_id}"
        / ("greenscreen" if task_job.spec.format == "greenscreen" else f"task_{task_id}")
    )
    with _run(task_job.spec, task_job.videos, out_dir, settings, progress) as result:
        return _finish_task(result, task_job, task_id, settings, job, progress)


def _finish_task(
    result: Any, task_job: Any, task_id: int, settings: Settings, job: Any, progress: ProgressMeta
) -> dict[str, Any]:
    from . import labelstudio

    progress.stage("posting prediction")
    from .models import model_version

    version = f"{model_version(settings)}-job-{job.id if job else 'local'}"
    prediction = task_job.prediction(result, version)
    client = labelstudio.client(settings.label_studio_url, settings.label_studio_api_key)
    client.predictions.create(task=task_id, result=prediction, model_version=version, score=1.0)
    summary = _summary(result)
    summary["prediction_regions"] = len(prediction)
    return summary


def fingerprint(annotation: dict[str, Any]) -> str:
    body = json.dumps(annotation.get("result") or [], sort_keys=True, default=str)
    return hashlib.sha1(body.encode()).hexdigest()[:10]


class JobQueue:
    """Enqueue and inspect propagation jobs on ``settings.queue_name``."""

    def __init__(self, connection: Any, settings: Settings) -> None:
        from rq import Queue

        self.connection = connection
        self.settings = settings
        self.queue = Queue(settings.queue_name, connection=connection, default_timeout=settings.job_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        from redis import Redis

        return cls(Redis.from_url(settings.redis_url), settings)

    def _retry(self) -> Any:
        from rq import Retry

        return Retry(max=self.settings.job_retries) if self.settings.job_retries > 0 else None

    def enqueue_prompts(
        self, prompts: dict[str, Any], videos: dict[str, str], out_dir: str, job_id: str | None = None
    ) -> Any:
        return self.queue.enqueue(
            propagate_prompts,
            prompts,
            videos,
            str(out_dir),
            job_id=job_id,
            retry=self._retry(),
            result_ttl=7 * 24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description="propagate prompt file",
        )

    def enqueue_task(self, project_id: int, task_id: int, annotation_id: int, fp: str) -> tuple[Any, bool]:
        """``(job, created)``: the job for this annotation version, enqueued unless it exists."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job, JobStatus

        job_id = f"p{project_id}-t{task_id}-a{annotation_id}-{fp}"
        latest_key = LATEST_KEY.format(project=project_id, task=task_id)
        try:
            existing = Job.fetch(job_id, connection=self.connection)
            status = existing.get_status()
            if status not in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
                self.connection.set(latest_key, job_id)
                return existing, False
            existing.delete()
        except NoSuchJobError:
            pass
        previous = self.connection.get(latest_key)
        if previous is not None and previous.decode() != job_id:
            try:
                old = Job.fetch(previous.decode(), connection=self.connection)
                if old.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
                    old.meta["superseded_by"] = job_id
                    old.save_meta()
                    old.cancel()
            except NoSuchJobError:
                pass
        self.connection.set(latest_key, job_id)
        job = self.queue.enqueue(
            propagate_task,
            project_id,
            task_id,
            annotation_id,
            job_id=job_id,
            retry=self._retry(),
            result_ttl=30 * 24 * 3600,
            failure_ttl=30 * 24 * 3600,
            description=f"propagate task {task_id} annotation {annotation_id}",
        )
        return job, True

    # -- webhooks -----------------------------------------------------------------------------
    def on_webhook(self, payload: dict[str, Any]) -> dict[str, Any]:
        from .exceptions import BadPayload

        action = payload["action"]
        project = payload.get("project") or {}
        project_id = project.get("id") if isinstance(project, dict) else project
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            if self.settings.webhook_mode != "auto":
                return {
                    "status": "ignored",
                    "reason": "WEBHOOK_MODE=batch: use Start training or scripts/process_all.py",
                }
            annotation = payload.get("annotation")
            if not isinstance(annotation, dict) or "id" not in annotation:
                raise BadPayload(f"{action} webhook without an annotation")
            if annotation.get("was_cancelled"):
                return {"status": "ignored", "reason": "skipped task"}
            task = (
                annotation.get("task") if annotation.get("task") is not None else (payload.get("task") or {}).get("id")
            )
            task_id = task.get("id") if isinstance(task, dict) else task
            project_id = project_id or annotation.get("project")
            if task_id is None or project_id is None:
                raise BadPayload(f"{action} webhook without task or project ids")
            job, created = self.enqueue_task(
                int(project_id), int(task_id), int(annotation["id"]), fingerprint(annotation)
            )
            return {"status": "queued" if created else "exists", "job_id": job.id}
        if action == "START_TRAINING":
            if project_id is None:
                raise BadPayload("START_TRAINING webhook without a project id")
            jobs = self.enqueue_project(int(project_id))
            return {"status": "queued", "job_ids": jobs}
        return {"status": "ignored", "reason": f"action {action} does not start propagation"}

    def enqueue_project(self, project_id: int) -> list[str]:
        """Enqueue the newest annotation of every annotated task of a project ("Process all")."""
        from . import labelstudio

        client = labelstudio.client(self.settings.label_studio_url, self.settings.label_studio_api_key)
        ids = []
        for task in client.tasks.list(project=project_id, fields="all"):
            annotations = [a for a in (getattr(task, "annotations", None) or []) if not _get(a, "was_cancelled")]
            if not annotations:
                continue
            newest = max(annotations, key=lambda a: (str(_get(a, "updated_at") or ""), _get(a, "id")))
            body = newest if isinstance(newest, dict) else newest.dict()
            job, _ = self.enqueue_task(project_id, int(task.id), int(_get(newest, "id")), fingerprint(body))
            ids.append(job.id)
        return ids

    def status(self, job_id: str) -> dict[str, Any] | None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
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
        if job.meta.get("superseded_by"):
            out["superseded_by"] = job.meta["superseded_by"]
        if out["status"] == "finished":
            out["result"] = job.return_value()
        if out["status"] == "failed":
            out["error"] = _reason(job)
        return out

    def jobs(self) -> list[str]:
        from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

        ids = list(self.queue.job_ids)
        for registry in (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry):
            ids.extend(registry(queue=self.queue).get_job_ids())
        return ids


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
