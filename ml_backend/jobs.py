"""Propagation jobs on an RQ queue: enqueueing (with de-duplication), the job functions, status.

Job functions are importable module-level functions, as RQ wants:

- :func:`propagate_prompts` — a prompt document (:mod:`.prompts`) and video paths, no Label Studio;
- :func:`propagate_task` — a Label Studio task and annotation, fetched with the SDK; results are
  exported and posted back to the task as a prediction.

Job ids are deterministic: ``p<project>-t<task>-a<annotation>-<fingerprint of the result>``, so
the same annotation submitted twice makes one job. A newer annotation of a task supersedes an
older one: the older job is cancelled if it has not started, and publishes nothing if it has.
Submitting an earlier state again (R1 → R2 → R1) makes R1 the latest again and runs it again.

**Publishing** (:class:`PublishGate`): a job writes its exports to a hidden staging folder, then,
holding a per-task Redis lock, checks that its annotation is still the task's latest and that its
execution still owns the job (a job requeued after its worker was presumed dead is not
published twice); only then are the files renamed into place and the prediction posted.

**Faults**: Label Studio unreachable or answering 5xx is retried with backoff for
``LABEL_STUDIO_RETRY_SECONDS`` (:mod:`.backoff`); input errors (:class:`JobError`) fail at once,
without retries. Progress writes are best-effort: a Redis hiccup never stops a job.
Progress is kept in ``job.meta["progress"]``: ``{video: {"done": n, "total": N}}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)

LATEST_KEY = "sam2:task-latest:{project}:{task}"

#: Largest id accepted from a webhook (Label Studio ids are 64-bit).
MAX_ID = 2**63 - 1


class ProgressMeta:
    """Progress callback that writes ``job.meta["progress"]`` at most every ``interval`` seconds.

    Best-effort: when Redis cannot take the write (a restart), the error is logged and the next
    write waits ``retry_after`` seconds; the job goes on either way.
    """

    def __init__(self, job: Any, interval: float = 0.5, retry_after: float = 2.0, on_percent: Any = None) -> None:
        self.job = job
        self.interval = interval
        self.retry_after = retry_after
        self.on_percent = on_percent  # called with the percent of all frames when it changes
        self._percent = -1
        self._last = 0.0
        self._blocked_until = 0.0
        if job is not None:
            job.meta.setdefault("progress", {})

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._blocked_until:
            return
        try:
            self.job.save_meta()
            self._last = now
        except Exception as exc:  # Redis away: progress is not worth a failed job
            self._blocked_until = now + self.retry_after
            log.warning("could not save the progress of job %s (%s); going on", self.job.id, type(exc).__name__)

    def declare(self, totals: dict[str, int]) -> None:
        """Every video's frame count before the first frame, so progress counts all videos and
        the clock for frames per second starts now (``meta["propagation_started"]``, epoch s)."""
        if self.job is None:
            return
        for video, total in totals.items():
            self.job.meta["progress"].setdefault(video, {"done": 0, "total": total})
        self.job.meta["propagation_started"] = time.time()
        self._save(force=True)

    def __call__(self, video: str, done: int, total: int) -> None:
        if self.job is None:
            return
        self.job.meta["progress"][video] = {"done": done, "total": total}
        if self.on_percent is not None:
            parts = self.job.meta["progress"].values()
            whole = sum(int(p.get("total", 0)) for p in parts)
            percent = int(100 * sum(int(p.get("done", 0)) for p in parts) / whole) if whole else 0
            if percent != self._percent:
                self._percent = percent
                self.on_percent(min(percent, 99))  # 100 once everything is published
        if done == total or time.monotonic() - self._last >= self.interval:
            self._save(force=done == total)

    def stage(self, name: str) -> None:
        if self.job is not None:
            self.job.meta["stage"] = name
            self._save(force=True)


class JobState:
    """The task's state columns in Label Studio (:mod:`ml_backend.taskdata`), written only while
    this job is the task's latest. Progress goes out from a background thread, at most every
    ``interval`` seconds, so the job never waits for Label Studio; every write is best-effort.
    """

    def __init__(self, settings: Settings, job: Any, project_id: int, task_id: int, interval: float = 3.0) -> None:
        self.settings, self.job, self.task_id, self.interval = settings, job, task_id, interval
        self.latest_key = LATEST_KEY.format(project=project_id, task=task_id)
        self._pending: int | None = None
        self._sent = -1
        self._last = 0.0
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def is_latest(self) -> bool:
        if self.job is None:
            return True
        try:
            latest = self.job.connection.get(self.latest_key)
        except Exception:
            return False
        return latest is None or latest.decode() == self.job.id

    def write(self, changes: dict[str, Any], *, seconds: float | None = None) -> bool:
        """Merge ``changes`` into the task data now, if this job is still the latest."""
        from .taskdata import update_task_data

        if not self.is_latest():
            return False
        try:
            update_task_data(
                self.settings,
                self.job.connection if self.job is not None else None,
                self.task_id,
                changes,
                seconds=min(30.0, self.settings.label_studio_retry_seconds) if seconds is None else seconds,
            )
            return True
        except Exception as exc:  # the state columns are not worth a failed job
            log.warning("could not write task %s's state (%s)", self.task_id, type(exc).__name__)
            return False

    def progress(self, percent: int) -> None:
        """Queue ``job_state=running, job_progress=percent`` (sent from the background thread)."""
        self._pending = percent
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="task-state", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            wait = self.interval - (time.monotonic() - self._last)
            if wait > 0 and not self._closed:
                time.sleep(wait)
            percent = self._pending
            if self._closed or percent is None or percent == self._sent:
                continue
            self._last = time.monotonic()
            if self.write({"job_state": "running", "job_progress": percent, "job_error": ""}, seconds=5.0):
                self._sent = percent

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def failed(self, exc: BaseException) -> None:
        """``job_state=failed`` with the reason (an input error's sentence; for anything else a
        sentence naming the error's kind), or ``queued`` with the reason while RQ retries."""
        from .exceptions import JobError

        if isinstance(exc, JobError):
            reason, retrying = str(exc), False
        else:
            kind = type(exc).__name__
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            transient = getattr(exc, "transient", False)
            reason = text if transient and text else f"the job stopped on an unexpected {kind}; the worker log has it"
            retrying = self.job is not None and (self.job.retries_left or 0) > 0
        if retrying:
            self.write(
                {"job_state": "queued", "job_progress": 0, "job_error": f"retrying after: {reason}"}, seconds=5.0
            )
        else:
            self.write({"job_state": "failed", "job_error": reason}, seconds=5.0)


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


class PublishGate:
    """Publish a job's results only while the job is still entitled to (see the module docstring).

    ``latest_key`` is the Redis key naming the task's latest job (None for prompt-file jobs, which
    only need to own their execution). Use as ``with gate: ...publish...``; entering raises
    :class:`~ml_backend.exceptions.Superseded` when the job must not publish. The lock is held
    until the block ends, so a newer job publishes strictly after an older one.
    """

    #: Seconds the publish lock lives if its holder dies; long enough to post a prediction
    #: through a Label Studio restart.
    LOCK_SECONDS = 900

    def __init__(self, connection: Any, job_id: str, scope: str, latest_key: str | None) -> None:
        self.connection = connection
        self.job_id = job_id
        self.latest_key = latest_key
        self._lock = connection.lock(f"sam2:publish-lock:{scope}", timeout=self.LOCK_SECONDS, blocking_timeout=None)

    def check(self) -> None:
        """Raise :class:`Superseded` unless this job may publish now."""
        from .exceptions import Superseded
        from .worker import OWNER_KEY, current_execution

        if self.latest_key is not None:
            latest = self.connection.get(self.latest_key)
            if latest is not None and latest.decode() != self.job_id:
                raise Superseded(f"a newer annotation of the task is job {latest.decode()}")
        execution = current_execution()
        if execution is not None:
            owner = self.connection.get(OWNER_KEY.format(job_id=self.job_id))
            if owner is not None and owner.decode() != execution:
                raise Superseded("the job was requeued and runs elsewhere; that run publishes")

    def __enter__(self) -> PublishGate:
        self._lock.acquire()
        try:
            self.check()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.connection.incr(f"sam2:published:{self.job_id}")
            self.connection.expire(f"sam2:published:{self.job_id}", 30 * 24 * 3600)
        self._release()

    def _release(self) -> None:
        try:
            self._lock.release()
        except Exception:  # expired meanwhile: nothing to release
            log.warning("the publish lock of job %s had expired", self.job_id)


def _run(spec: Any, videos: dict[str, str], out_dir: Path, settings: Settings, progress: ProgressMeta) -> Any:
    """Propagate and stage the exports (not published yet)."""
    from .models import autocast, resolve_device
    from .pipeline import check_job, run_job
    from .worker import get_predictor

    shapes = check_job(spec, videos)  # input errors before the model is asked for
    progress.stage("loading model")
    predictor = get_predictor(settings)
    device = resolve_device(settings.device)
    progress.stage("propagating")
    progress.declare({video: shape[0] for video, shape in shapes.items()})
    result = run_job(
        predictor,
        spec,
        videos,
        out_dir,
        image_size=settings.image_size,
        exports=settings.export_list,
        progress=progress,
        review=settings.review_exports,
        quality=settings.quality_flags,
        quality_rule=settings.quality_rule,
        prefetch=settings.prefetch_frames,
        prefetch_workers=settings.prefetch_workers,
        offload_state_to_cpu=settings.offload_state_to_cpu,
        autocast=lambda: autocast(settings, device),
        greenscreen_mp4=settings.greenscreen_mp4,
        greenscreen_fps=settings.greenscreen_fps,
        publish=False,
    )
    progress.stage("staged")
    return result


def _summary(result: Any) -> dict[str, Any]:
    return {
        "status": "done",
        "out_dir": str(result.out_dir),
        "files": [str(p) for p in result.files],
        "frames": result.num_frames,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
    }


def _superseded(job: Any, reason: str) -> dict[str, Any]:
    log.info("job %s publishes nothing: %s", getattr(job, "id", "?"), reason)
    return {"status": "superseded", "reason": reason}


@_no_retry_on_bad_input
def propagate_prompts(prompts: dict[str, Any], videos: dict[str, str], out_dir: str) -> dict[str, Any]:
    """RQ job: propagate a prompt document through ``videos`` into ``out_dir``."""
    from rq import get_current_job

    from .exceptions import Superseded
    from .prompts import parse_prompts
    from .worker import current_settings

    spec = parse_prompts(prompts)
    merged = {**spec.videos, **{k: v for k, v in (videos or {}).items() if v}}
    job = get_current_job()
    progress = ProgressMeta(job)
    with _run(spec, merged, Path(out_dir), current_settings(), progress) as result:
        if job is None:
            result.publish()
            return _summary(result)
        scope = "dir:" + hashlib.sha1(str(Path(out_dir).resolve()).encode()).hexdigest()[:16]
        try:
            with PublishGate(job.connection, job.id, scope, latest_key=None):
                progress.stage("publishing")
                result.publish()
        except Superseded as exc:
            return _superseded(job, str(exc))
        progress.stage("exported")
        return _summary(result)


def job_out_dir(results_root: Path, project_id: int, task_id: int, spec: Any) -> Path:
    """The one folder a Label Studio task job publishes into (``spec``: its
    :class:`~ml_backend.prompts.PromptSpec`):

    - a green-screen segment: ``<results>/project_<id>/greenscreen/<take>/``, one folder per
      source video (take), shared by the take's segments, so two takes never touch each other's
      files; a task imported before takes existed (no ``take`` in its data) keeps today's
      ``<results>/project_<id>/greenscreen/``;
    - a SceneDiff pair: ``<results>/project_<id>/task_<id>/``.
    """
    project = Path(results_root) / f"project_{project_id}"
    if spec.format == "greenscreen":
        take = spec.greenscreen.take if spec.greenscreen else ""
        return project / "greenscreen" / take if take else project / "greenscreen"
    return project / f"task_{task_id}"


@_no_retry_on_bad_input
def propagate_task(project_id: int, task_id: int, annotation_id: int) -> dict[str, Any]:
    """RQ job: propagate a Label Studio annotation and post the result back as a prediction."""
    from rq import get_current_job

    from .annotations import load_task_job
    from .exceptions import Superseded
    from .worker import current_settings

    settings = current_settings()
    job = get_current_job()
    latest_key = LATEST_KEY.format(project=project_id, task=task_id)
    gate = PublishGate(job.connection, job.id, f"task:{project_id}:{task_id}", latest_key) if job else None
    if gate is not None:
        try:
            gate.check()  # not worth propagating: a newer annotation exists already
        except Superseded as exc:
            return _superseded(job, str(exc))
    state = JobState(settings, job, project_id, task_id)
    progress = ProgressMeta(job, on_percent=state.progress)
    try:
        state.write({"job_state": "running", "job_progress": 0, "job_error": ""}, seconds=5.0)
        progress.stage("loading task")
        task_job = load_task_job(
            settings, project_id, task_id, annotation_id, connection=job.connection if job else None
        )
        out_dir = job_out_dir(settings.results_root, project_id, task_id, task_job.spec)
        with _run(task_job.spec, task_job.videos, out_dir, settings, progress) as result:
            state.close()  # no progress write may land after the final state
            try:
                if gate is None:
                    result.publish()
                    return _finish_task(result, task_job, task_id, settings, job, progress, project_id)
                with gate:
                    progress.stage("publishing")
                    result.publish()
                    return _finish_task(result, task_job, task_id, settings, job, progress, project_id)
            except Superseded as exc:
                return _superseded(job, str(exc))
    except BaseException as exc:
        state.close()
        if not isinstance(exc, Superseded):
            state.failed(exc)
        raise
    finally:
        state.close()


def _finish_task(
    result: Any,
    task_job: Any,
    task_id: int,
    settings: Settings,
    job: Any,
    progress: ProgressMeta,
    project_id: int | None = None,
) -> dict[str, Any]:
    from . import labelstudio
    from .backoff import with_backoff
    from .models import model_version
    from .taskdata import update_task_data
    from .taskreview import review_task

    progress.stage("updating the task")
    key = (job.id.rsplit("-", 1)[-1] if job else "local")[:16]
    summary_review: dict[str, Any] = {}

    def change(data: dict[str, Any]) -> dict[str, Any]:
        changes, review = review_task(settings, task_job, result, data, key)
        summary_review.update(review)
        return changes

    data = update_task_data(settings, job.connection if job else None, task_id, change)
    if job is not None and data:
        _request_prefetch(job.connection, project_id, task_id, task_job, data)
    progress.stage("posting prediction")
    version = f"{model_version(settings)}-job-{job.id if job else 'local'}"
    prediction = task_job.prediction(result, version)
    score = float(summary_review.get("confidence", 1.0))
    with_backoff(
        lambda: labelstudio.client(settings.label_studio_url, settings.label_studio_api_key).predictions.create(
            task=task_id, result=prediction, model_version=version, score=score
        ),
        seconds=settings.label_studio_retry_seconds,
        what=f"Label Studio at {settings.label_studio_url}",
    )
    progress.stage("exported")
    summary = _summary(result)
    summary["prediction_regions"] = len(prediction)
    summary["review"] = summary_review
    summary["signs"] = task_job.signs  # keypoints whose sign was given, recorded or unknown
    return summary


def _request_prefetch(connection: Any, project: Any, task: int, task_job: Any, data: dict[str, Any]) -> None:
    """Ask the backend to embed the task's pages, appended flagged frames included, so the
    reviewer's first click on any of them costs only the mask decoder (best effort)."""
    from .prefetch import page_order, push_request

    lists = [data.get(info.data_key) for info in task_job.images.values()]
    refs = page_order([value for value in lists if isinstance(value, list)])
    if not refs:
        return
    try:
        push_request(connection, project, task, refs)
    except Exception as exc:  # the job's result does not depend on it
        log.info("could not queue the task's pages for prefetching: %s", type(exc).__name__)


def fingerprint(annotation: dict[str, Any]) -> str:
    body = json.dumps(annotation.get("result") or [], sort_keys=True, default=str)
    return hashlib.sha1(body.encode()).hexdigest()[:10]


class JobQueue:
    """Enqueue and inspect propagation jobs on ``settings.queue_name``."""

    def __init__(self, connection: Any, settings: Settings) -> None:
        from rq import Queue

        from .worker import SERIALIZER

        self.connection = connection
        self.settings = settings
        self.serializer = SERIALIZER
        self.queue = Queue(
            settings.queue_name, connection=connection, default_timeout=settings.job_timeout, serializer=SERIALIZER
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> JobQueue:
        from .connection import redis_for

        return cls(redis_for(settings), settings)

    def fetch(self, job_id: str) -> Any:
        """The RQ job ``job_id``, or None."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            return Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            return None

    def _retry(self) -> Any:
        from rq import Retry

        # a retried job (its worker died, or Label Studio stayed away) goes to the front of the queue
        return Retry(max=self.settings.job_retries, enqueue_at_front=True) if self.settings.job_retries > 0 else None

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
        """``(job, created)``: the job for this annotation version, which becomes the task's latest.

        An unfinished job for the same version is reused. A finished one is reused only if it
        is already the latest (the same submission twice); when another version was submitted
        in between (R1 → R2 → R1), R1 runs again, since R2's results were published after it.
        A queued job of another version is cancelled; a running one publishes nothing.
        """
        from rq.job import JobStatus

        job_id = f"p{project_id}-t{task_id}-a{annotation_id}-{fp}"
        latest_key = LATEST_KEY.format(project=project_id, task=task_id)
        previous = self.connection.get(latest_key)
        previous = previous.decode() if previous is not None else None
        existing = self.fetch(job_id)
        if existing is not None:
            status = existing.get_status()
            unfinished = status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
            if unfinished or (status == JobStatus.FINISHED and previous == job_id):
                self.connection.set(latest_key, job_id)
                return existing, False
            existing.delete()
        if previous is not None and previous != job_id:
            old = self.fetch(previous)
            if old is not None and old.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
                old.meta["superseded_by"] = job_id
                old.save_meta()
                old.cancel()
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

        action = payload.get("action")
        if not isinstance(action, str):
            raise BadPayload("a webhook body is a JSON object with an 'action'")
        payload = clean_webhook(payload)
        project = payload.get("project")
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
            task = annotation.get("task") if annotation.get("task") is not None else payload.get("task")
            task_id = task.get("id") if isinstance(task, dict) else task
            project_id = project_id if project_id is not None else annotation.get("project")
            if task_id is None or project_id is None:
                raise BadPayload(f"{action} webhook without task or project ids")
            job, created = self.enqueue_task(project_id, task_id, annotation["id"], fingerprint(annotation))
            if created:
                self.mark_queued([(project_id, task_id, job.id)])
            return {"status": "queued" if created else "exists", "job_id": job.id}
        if action == "START_TRAINING":
            if project_id is None:
                raise BadPayload("START_TRAINING webhook without a project id")
            jobs = self.enqueue_project(project_id)
            return {"status": "queued", "job_ids": jobs}
        return {"status": "ignored", "reason": f"action {action} does not start propagation"}

    def enqueue_project(self, project_id: int) -> list[str]:
        """Enqueue the newest annotation of every annotated task of a project ("Process all")."""
        from . import labelstudio
        from .backoff import with_backoff

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

        from rq.job import JobStatus

        waiting = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)

        def run() -> None:
            for project_id, task_id, job_id in jobs:
                state = JobState(
                    self.settings, SimpleNamespace(id=job_id, connection=self.connection), project_id, task_id
                )

                def queued(data: dict[str, Any], job_id: str = job_id) -> dict[str, Any] | None:
                    # checked under the task's lock: a worker that started the job already wrote
                    # "running", which must not go back to "queued"
                    job = self.fetch(job_id)
                    if job is None or job.get_status() not in waiting:
                        return None
                    return {"job_state": "queued", "job_progress": 0, "job_error": ""}

                state.write(queued, seconds=10.0)

        thread = threading.Thread(target=run, name="task-state-queued", daemon=True)
        thread.start()
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
        out.update(_speed(out["progress"], job.meta.get("propagation_started"), out["status"]))
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


def _id(value: Any, where: str) -> int:
    """``value`` as a positive integer id; :class:`BadPayload` naming ``where`` otherwise."""
    from .exceptions import BadPayload

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
    from .exceptions import BadPayload

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


def _speed(progress: dict[str, Any], started: float | None, status: str, now: float | None = None) -> dict[str, Any]:
    """``frames`` (done, total and percent over every video of the job), ``fps`` since
    propagation started, and ``eta_seconds`` while the job runs (None until a frame is done)."""
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
        out["eta_seconds"] = round((total - done) / (done / elapsed), 1) if status == "started" else 0.0
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
