"""Propagation jobs on an RQ queue: enqueueing (with de-duplication), the job functions, status.

Job functions are importable module-level functions, as RQ wants:

- :func:`propagate_prompts` — a prompt document (:mod:`.prompts`) and video paths, no Label Studio;
- :func:`propagate_task` — a Label Studio task and annotation, fetched with the SDK; results are
  exported and posted back to the task as a prediction.

Job ids are deterministic: ``p<project>-t<task>-a<annotation>-<fingerprint of the result>``, so
the same annotation submitted twice makes one job. A newer version of an annotation supersedes
the older one: the older job is cancelled if it has not started, stops at its next frame and
publishes nothing if it has. Other annotations of the task keep their own jobs and results
(:mod:`ml_backend.lifecycle`).
Submitting an earlier state again (R1 → R2 → R1) makes R1 the latest again and runs it again.

**Publishing** (:class:`PublishGate`): a job writes its exports to a hidden staging folder, then,
holding a per-task Redis lock, checks that its annotation version is still the latest (and not
deleted) and that its
execution still owns the job (a job requeued after its worker was presumed dead is not
published twice); only then are the files renamed into place and the prediction posted.

**Faults**: Label Studio unreachable or answering 5xx is retried with backoff for
``LABEL_STUDIO_RETRY_SECONDS`` (:mod:`.backoff`) when it reads the job's input or posts its
prediction; the task's state columns, progress, preview and review links are best-effort writes
with a short budget (``LABEL_STUDIO_BEST_EFFORT_SECONDS``), sent from a background thread while
the job propagates, so they never hold it up. Input errors (:class:`JobError`) fail at once,
without retries. Progress writes are best-effort: a Redis hiccup never stops a job.

**Stops**: the progress callback is where a worker's stop request (SIGINT/SIGTERM) meets the job:
it raises :class:`~ml_backend.exceptions.WorkerStopping` at the next frame, before publishing
(:mod:`.liveness`); the worker puts the job back at the front of the queue.
Progress is kept in ``job.meta["progress"]``: ``{video: {"done": n, "total": N}}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)

LATEST_KEY = "sam2:task-latest:{project}:{task}"

#: ``job_error`` while a job runs again after its worker stopped or was lost.
RERUN_NOTE = "re-running after a restart"

#: Largest id accepted from a webhook (Label Studio ids are 64-bit).
MAX_ID = 2**63 - 1


class ProgressMeta:
    """Progress callback that writes ``job.meta["progress"]`` at most every ``interval`` seconds.

    Best-effort: when Redis cannot take the write (a restart), the error is logged and the next
    write waits ``retry_after`` seconds; the job goes on either way.
    """

    #: Stages at which a stopping worker's job stops (all before publishing).
    STOPPABLE_STAGES = ("loading task", "loading model", "propagating", "staged")

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
        if self.job is None:
            return
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
        from .liveness import check_stop

        check_stop()  # a stopping worker: the job stops here, at its next frame
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
        from .liveness import check_stop, stoppable

        if name == "publishing":
            stoppable(False)  # a stop never cuts a publish in two
        elif name in self.STOPPABLE_STAGES:
            check_stop()
        if self.job is not None:
            self.job.meta["stage"] = name
            self._save(force=True)


class JobState:
    """The task's state columns in Label Studio (:mod:`ml_backend.taskdata`), written only while
    this job is the task's latest. ``running`` and the progress go out from a background thread,
    at most every ``interval`` seconds, so the job never waits for Label Studio; every write is
    best-effort, with ``LABEL_STUDIO_BEST_EFFORT_SECONDS`` of retries. Progress never goes back
    within an execution; ``note`` is shown in ``job_error`` while running ("re-running after a
    restart"). Each write first notes the task in :data:`ml_backend.jobcolumns.OPEN_KEY`, so the
    columns are settled however the job ends.
    """

    def __init__(self, settings: Settings, job: Any, project_id: int, task_id: int, interval: float = 3.0) -> None:
        self.settings, self.job, self.task_id, self.interval = settings, job, task_id, interval
        self.project_id = project_id
        self.latest_key = LATEST_KEY.format(project=project_id, task=task_id)
        self.note = ""
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
        from .jobcolumns import remember
        from .taskdata import update_task_data

        if not self.is_latest():
            return False
        if self.job is not None:
            remember(self.job.connection, self.project_id, self.task_id, self.job.id)
        try:
            update_task_data(
                self.settings,
                self.job.connection if self.job is not None else None,
                self.task_id,
                changes,
                seconds=self.settings.label_studio_best_effort_seconds if seconds is None else seconds,
            )
            return True
        except Exception as exc:  # the state columns are not worth a failed job
            log.warning("could not write task %s's state (%s)", self.task_id, type(exc).__name__)
            return False

    def progress(self, percent: int) -> None:
        """Queue ``job_state=running, job_progress=percent`` (sent from the background thread);
        a percent below one queued before is ignored (progress never goes back)."""
        if self._pending is not None and percent < self._pending:
            return
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
            if self.write({"job_state": "running", "job_progress": percent, "job_error": self.note}):
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
        elif type(exc).__name__ == "JobTimeoutException":
            timeout = getattr(self.job, "timeout", None)
            reason = f"it ran longer than JOB_TIMEOUT ({timeout} s) and was stopped"
            retrying = self.job is not None and (self.job.retries_left or 0) > 0
        else:
            kind = type(exc).__name__
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            transient = getattr(exc, "transient", False)
            reason = text if transient and text else f"the job stopped on an unexpected {kind}; the worker log has it"
            retrying = self.job is not None and (self.job.retries_left or 0) > 0
        if retrying:
            self.write({"job_state": "queued", "job_progress": 0, "job_error": f"retrying after: {reason}"})
        else:
            self.write({"job_state": "failed", "job_error": reason})


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


#: Redis key of a job's publish record: ``<state>|<run>|<execution>``, state ``publishing`` or
#: ``done`` (see :class:`PublishGate`).
RECORD_KEY = "sam2:publish-record:{job_id}"

#: The gate's one atomic step (a Lua script): KEYS = record, latest (or ""), owner, deny keys...;
#: ARGV = job id, run, execution (or ""), record TTL. Answers ``{"ok"}`` after claiming the
#: record, or ``{why, detail}`` with why in already / superseded / denied / requeued.
_GATE_SCRIPT = """
local record = redis.call('GET', KEYS[1])
if record then
  local state, run = string.match(record, '^([^|]*)|([^|]*)|')
  if state == 'done' and run == ARGV[2] then return {'already', record} end
end
if KEYS[2] ~= '' then
  local latest = redis.call('GET', KEYS[2])
  if latest and latest ~= ARGV[1] then return {'superseded', latest} end
end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {'denied', KEYS[i]} end
end
if ARGV[3] ~= '' then
  local owner = redis.call('GET', KEYS[3])
  if owner and owner ~= ARGV[3] then return {'requeued', owner} end
end
redis.call('SET', KEYS[1], 'publishing|' .. ARGV[2] .. '|' .. ARGV[3], 'EX', tonumber(ARGV[4]))
return {'ok'}
"""


def run_token(job: Any) -> str:
    """The id of one *run* of ``job``: made when the job is enqueued (``job.meta["run"]``) and kept
    through RQ's retries and the watchdog's requeues, new when the same annotation version is
    enqueued again later (R1 → R2 → R1). Jobs enqueued without one use their enqueue time."""
    if job is None:
        return "local"
    run = (getattr(job, "meta", None) or {}).get("run")
    if run:
        return str(run)
    enqueued = getattr(job, "enqueued_at", None)
    return enqueued.isoformat() if enqueued is not None else "unknown"


class PublishGate:
    """Publish a job's results at most once per run, and only while the job is entitled to.

    Entering the gate (``with gate: ...publish...``) takes the scope's lock (a newer job of a task
    publishes strictly after an older one), then decides in **one atomic Redis step**
    (:data:`_GATE_SCRIPT`) whether this execution may publish:

    - this run was published already (by an execution presumed dead that finished after all) →
      :class:`~ml_backend.exceptions.AlreadyPublished`;
    - ``latest_key`` names another job (a newer annotation version) → ``Superseded``;
    - any of ``deny_keys`` exists (e.g. the annotation was deleted) → ``Superseded``;
    - the job's owner record names another execution (the job was requeued and runs elsewhere)
      → ``Superseded``;
    - otherwise the run's record becomes ``publishing`` for this execution. Leaving the block
      without an error marks it ``done``; an error deletes the claim, so a retry can publish.

    An execution killed while publishing leaves a ``publishing`` claim: the next execution of
    the run, once the lock has lapsed (``LOCK_SECONDS``, kept alive while the holder lives),
    takes it over. ``check()`` makes the same decision without claiming anything (used before
    propagating, to skip work that could not be published).
    """

    #: Seconds the publish lock lives without its holder renewing it (a thread renews it every
    #: third of that while the block runs), so a killed holder blocks the next one that long.
    LOCK_SECONDS = 60

    #: Seconds a publish record is kept (the job's result TTL).
    RECORD_SECONDS = 30 * 24 * 3600

    def __init__(
        self,
        connection: Any,
        job_id: str,
        scope: str,
        latest_key: str | None,
        *,
        deny_keys: tuple[str, ...] | list[str] = (),
        run: str = "local",
    ) -> None:
        self.connection = connection
        self.job_id = job_id
        self.latest_key = latest_key
        self.deny_keys = tuple(deny_keys)
        self.run = run
        self.record_key = RECORD_KEY.format(job_id=job_id)
        self._lock = connection.lock(f"sam2:publish-lock:{scope}", timeout=self.LOCK_SECONDS, blocking_timeout=None)
        self._keeper: threading.Thread | None = None
        self._held = threading.Event()

    def _decide(self, claim: bool) -> None:
        from .exceptions import AlreadyPublished, Superseded
        from .worker import OWNER_KEY, current_execution

        execution = current_execution() or ""
        keys = [self.record_key, self.latest_key or "", OWNER_KEY.format(job_id=self.job_id), *self.deny_keys]
        if claim:
            answer = self.connection.eval(
                _GATE_SCRIPT, len(keys), *keys, self.job_id, self.run, execution, self.RECORD_SECONDS
            )
        else:  # the same rules, read only
            answer = self._read_only(keys, execution)
        why = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        detail = answer[1].decode() if len(answer) > 1 and isinstance(answer[1], bytes) else ""
        if why == "ok":
            return
        if why == "already":
            raise AlreadyPublished("this run of the job was published already by an earlier execution")
        if why == "superseded":
            raise Superseded(f"a newer annotation of the task is job {detail}")
        if why == "denied":
            raise Superseded(self.denied_reason(detail))
        raise Superseded("the job was requeued and runs elsewhere; that run publishes")

    def _read_only(self, keys: list[str], execution: str) -> list[Any]:
        record = self.connection.get(self.record_key)
        if record is not None:
            parts = record.decode().split("|")
            if len(parts) >= 2 and parts[0] == "done" and parts[1] == self.run:
                return ["already"]
        if self.latest_key is not None:
            latest = self.connection.get(self.latest_key)
            if latest is not None and latest.decode() != self.job_id:
                return ["superseded", latest]
        for key in self.deny_keys:
            if self.connection.exists(key):
                return ["denied", key]
        if execution:
            owner = self.connection.get(keys[2])
            if owner is not None and owner.decode() != execution:
                return ["requeued", owner]
        return ["ok"]

    def denied_reason(self, key: str) -> str:
        """The sentence for a publish refused because ``key`` (one of ``deny_keys``) exists."""
        return f"its annotation was withdrawn ({key})"

    def check(self) -> None:
        """Raise :class:`Superseded` (or :class:`AlreadyPublished`) unless this job may publish
        now; claims nothing."""
        self._decide(claim=False)

    def _keep_lock(self) -> None:
        while not self._held.wait(self.LOCK_SECONDS / 3):
            try:
                self._lock.reacquire()
            except Exception:  # Redis away or the lock lost: the next pass tries again
                log.debug("could not renew the publish lock of job %s", self.job_id, exc_info=True)

    def __enter__(self) -> PublishGate:
        self._lock.acquire()
        try:
            self._decide(claim=True)
        except BaseException:
            self._release()
            raise
        self._held.clear()
        self._keeper = threading.Thread(target=self._keep_lock, name="publish-lock", daemon=True)
        self._keeper.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from .worker import current_execution

        try:
            if exc[0] is None:
                record = f"done|{self.run}|{current_execution() or ''}"
                pipe = self.connection.pipeline()
                pipe.set(self.record_key, record, ex=self.RECORD_SECONDS)
                pipe.incr(f"sam2:published:{self.job_id}")
                pipe.expire(f"sam2:published:{self.job_id}", self.RECORD_SECONDS)
                pipe.execute()
            else:
                self.connection.delete(self.record_key)  # our claim: a retry may publish
        finally:
            self._held.set()
            if self._keeper is not None:
                self._keeper.join(timeout=5)
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


def _superseded(job: Any, exc: BaseException) -> dict[str, Any]:
    """The result of a job that publishes nothing (``exc``: a :class:`Superseded`)."""
    from .exceptions import AlreadyPublished

    log.info("job %s publishes nothing: %s", getattr(job, "id", "?"), exc)
    status = "already published" if isinstance(exc, AlreadyPublished) else "superseded"
    return {"status": status, "reason": str(exc)}


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
    gate = None
    if job is not None:
        scope = "dir:" + hashlib.sha1(str(Path(out_dir).resolve()).encode()).hexdigest()[:16]
        gate = PublishGate(job.connection, job.id, scope, latest_key=None, run=run_token(job))
        try:
            gate.check()  # this run was published already: no work to do
        except Superseded as exc:
            return _superseded(job, exc)
    with _run(spec, merged, Path(out_dir), current_settings(), progress) as result:
        if gate is None:
            result.publish()
            return _summary(result)
        try:
            with gate:
                progress.stage("publishing")
                result.publish()
        except Superseded as exc:
            return _superseded(job, exc)
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
    """RQ job: propagate a Label Studio annotation and post the result back as a prediction.

    Each annotation has its own job and result (:mod:`ml_backend.lifecycle`): the job publishes
    into the annotation's folder and, when its annotation is the task's primary one, into the
    task's export folder too. It stops at its next frame once its annotation is deleted or
    updated, and publishes nothing then.
    """
    from rq import get_current_job

    from . import lifecycle
    from .annotations import load_task_job
    from .exceptions import JobError, Superseded
    from .worker import current_settings

    settings = current_settings()
    job = get_current_job()
    conn = job.connection if job else None
    gate = None
    if job is not None:
        gate = PublishGate(
            conn,
            job.id,
            f"task:{project_id}:{task_id}",
            lifecycle.latest_key(project_id, task_id, annotation_id),
            deny_keys=lifecycle.deny_keys(task_id, annotation_id),
            run=run_token(job),
        )
        try:
            gate.check()  # not worth propagating: deleted, or a newer version exists already
        except Superseded as exc:
            return _task_superseded(settings, job, project_id, task_id, annotation_id, exc)
    state = JobState(settings, job, project_id, task_id)
    progress = (
        lifecycle.Watched(job, gate.check, on_percent=state.progress)
        if gate is not None
        else ProgressMeta(job, on_percent=state.progress)
    )
    running: dict[str, Any] = {"job_state": "running", "job_progress": 0, "job_error": ""}
    if job is not None:  # the annotation's line goes with the columns (one write), or alone
        lifecycle.note(conn, project_id, task_id, annotation_id, "running", job=job.id, reason="")
        if state.is_latest():
            running["job_message"] = lifecycle.message(conn, project_id, task_id)
        else:
            lifecycle.write_message(settings, conn, project_id, task_id)
    try:
        from .worker import current_rerun

        state.note = running["job_error"] = RERUN_NOTE if current_rerun() else ""
        state.write(running)  # best-effort: LABEL_STUDIO_BEST_EFFORT_SECONDS at most
        progress.stage("loading task")
        try:
            task_job = load_task_job(settings, project_id, task_id, annotation_id, connection=conn)
        except JobError:
            if gate is not None:
                gate.check()  # a deletion seen meanwhile is the reason, not the missing annotation
            raise
        task_dir = job_out_dir(settings.results_root, project_id, task_id, task_job.spec)
        if job is None:  # a local run: the task's folder, no Label Studio lifecycle
            with _run(task_job.spec, task_job.videos, task_dir, settings, progress) as result:
                state.close()
                result.publish()
                return _finish_task(result, task_job, task_id, settings, job, progress)
        out_dir = lifecycle.annotation_dir(settings.results_root, project_id, task_id, annotation_id)
        with _run(task_job.spec, task_job.videos, out_dir, settings, progress) as result:
            state.close()  # no progress write may land after the final state
            with gate:
                progress.stage("publishing")
                queue = JobQueue(conn, settings)
                # the version this job propagated (as loaded), not the one its id was made from
                loaded = task_job.annotation_fp or job.id.rsplit("-", 1)[-1]
                primary = lifecycle.verify(settings, conn, queue, project_id, task_id, annotation_id, loaded)
                result.publish()
                return _finish_task(
                    result, task_job, task_id, settings, job, progress,
                    project_id=project_id, annotation_id=annotation_id, primary=primary, task_dir=task_dir,
                )  # fmt: skip
    except Superseded as exc:
        state.close()
        if job is None:
            raise
        return _task_superseded(settings, job, project_id, task_id, annotation_id, exc)
    except BaseException as exc:
        from .exceptions import WorkerStopping

        state.close()
        if isinstance(exc, WorkerStopping):  # the worker puts it back and says "queued"
            if job is not None:
                lifecycle.note(conn, project_id, task_id, annotation_id, "queued", reason="worker restarted")
                lifecycle.write_message(settings, conn, project_id, task_id)
            raise
        state.failed(exc)
        if job is not None:
            reason = str(exc) if isinstance(exc, JobError) else f"the job stopped on an unexpected {type(exc).__name__}"
            retrying = not isinstance(exc, JobError) and (job.retries_left or 0) > 0
            lifecycle.note(
                conn, project_id, task_id, annotation_id, "queued" if retrying else "failed",
                reason=("retrying after: " if retrying else "") + lifecycle.user_reason(reason, settings),
            )  # fmt: skip
            lifecycle.write_message(settings, conn, project_id, task_id)
        raise
    finally:
        state.close()


def _task_superseded(
    settings: Settings, job: Any, project_id: int, task_id: int, annotation_id: int, exc: BaseException
) -> dict[str, Any]:
    """A task job that publishes nothing: its annotation's status line says why; a deleted
    annotation's results are removed (again: idempotent)."""
    from . import lifecycle
    from .exceptions import AlreadyPublished

    conn = job.connection
    if isinstance(exc, AlreadyPublished):
        return _superseded(job, exc)
    if lifecycle.is_deleted(conn, task_id, annotation_id):
        lifecycle.remove_annotation(settings, conn, project_id, task_id, annotation_id, queue=JobQueue(conn, settings))
    else:
        latest = conn.get(lifecycle.latest_key(project_id, task_id, annotation_id))
        if latest is None or latest.decode() == job.id:  # e.g. requeued elsewhere: that run reports
            return _superseded(job, exc)
        lifecycle.note(conn, project_id, task_id, annotation_id, "superseded",
                       reason=f"a newer version of this annotation runs ({latest.decode()})")  # fmt: skip
        lifecycle.write_message(settings, conn, project_id, task_id)
    return _superseded(job, exc)


def _finish_task(
    result: Any,
    task_job: Any,
    task_id: int,
    settings: Settings,
    job: Any,
    progress: ProgressMeta,
    *,
    project_id: int | None = None,
    annotation_id: int | None = None,
    primary: int | None = None,
    task_dir: Path | None = None,
) -> dict[str, Any]:
    """Publish a finished task job (called with the publish gate held, files published under
    ``result.out_dir``): the task's export folder and review fields when the annotation is the
    task's primary one, the prediction (older ones of the same annotation deleted after it), and
    the annotation's status line."""
    from . import labelstudio, lifecycle
    from .backoff import with_backoff
    from .exceptions import Superseded
    from .models import model_version
    from .taskdata import update_task_data
    from .taskreview import review_task

    conn = job.connection if job else None
    lifecycled = conn is not None and annotation_id is not None
    is_primary = not lifecycled or primary == annotation_id

    def deleted_now() -> None:
        if lifecycled and lifecycle.is_deleted(conn, task_id, annotation_id):
            lifecycle.remove_annotation(settings, conn, project_id, task_id, annotation_id, lock_held=True)
            raise Superseded(f"annotation {annotation_id} was deleted while its job published")

    progress.stage("updating the task")
    key = (job.id.rsplit("-", 1)[-1] if job else "local")[:16]
    summary_review: dict[str, Any] = {}
    where, rels = str(result.out_dir), []
    if lifecycled:
        deleted_now()
        shared = task_job.spec.format == "greenscreen"
        if is_primary:
            rels = lifecycle.mirror(result.files, Path(result.out_dir), task_dir, shared=shared)
            lifecycle.set_primary(conn, project_id, task_id, annotation_id, job.id, task_dir, rels, shared)
            gs = task_job.spec.greenscreen
            if shared and settings.greenscreen_mp4 and gs is not None and gs.segment_frames:
                from .greenscreen import assemble_greenscreen_mp4

                assemble_greenscreen_mp4(task_dir, list(gs.segment_frames), gs.start_frame,
                                         gs.fps or settings.greenscreen_fps or 30.0)  # fmt: skip
            where = str(task_dir)
        else:
            record = lifecycle.primary_record(conn, project_id, task_id)
            if record is not None and int(record["annotation"]) == annotation_id:
                lifecycle.remove_task_result(conn, project_id, task_id)  # its older version was primary

    root = Path(settings.results_root)
    if lifecycled:  # the annotation's line is written with the task's review fields (one write)
        if is_primary:
            lifecycle.note(conn, project_id, task_id, annotation_id, "done", role="primary", job=job.id,
                           task_dir=_relative(task_dir, root), dir=_relative(result.out_dir, root), reason="")  # fmt: skip
        else:
            why = f"annotation {primary} is the task's primary one: the ground truth, else the most recently updated"
            lifecycle.note(conn, project_id, task_id, annotation_id, "done", role="other", job=job.id,
                           dir=_relative(result.out_dir, root), reason=why)  # fmt: skip

    def change(data: dict[str, Any]) -> dict[str, Any]:
        changes, review = review_task(settings, task_job, result, data, key)
        summary_review.update(review)
        if lifecycled and not is_primary:  # the task shows its primary annotation's review
            changes = {}
        if lifecycled:
            changes["job_message"] = lifecycle.message(conn, project_id, task_id)
        return changes

    data = None
    try:  # best-effort: the prediction is the job's result, not the columns
        data = update_task_data(settings, conn, task_id, change, seconds=settings.label_studio_best_effort_seconds)
    except Exception as exc:
        log.warning(
            "could not write task %s's review columns (%s); posting the prediction", task_id, type(exc).__name__
        )
    if job is not None and data:
        _request_prefetch(conn, project_id, task_id, task_job, data)
    progress.stage("posting prediction")
    version = f"{model_version(settings)}-job-{job.id if job else 'local'}"
    prediction = task_job.prediction(result, version)
    score = float(summary_review.get("confidence", 1.0))
    if lifecycled:
        deleted_now()
    posted = with_backoff(
        lambda: labelstudio.client(settings.label_studio_url, settings.label_studio_api_key).predictions.create(
            task=task_id, result=prediction, model_version=version, score=score
        ),
        seconds=settings.label_studio_retry_seconds,
        what=f"Label Studio at {settings.label_studio_url}",
    )
    replaced = 0
    if lifecycled:
        try:
            replaced = lifecycle.delete_predictions(
                settings, project_id, task_id, annotation_id, keep=int(getattr(posted, "id", 0) or 0)
            )
        except Exception as exc:  # the new one is posted: an old tab left is not worth a failed job
            log.warning("could not delete older predictions of annotation %s (%s)", annotation_id, exc)
    progress.stage("exported")
    summary = _summary(result)
    summary["prediction_regions"] = len(prediction)
    summary["review"] = summary_review
    summary["signs"] = task_job.signs  # keypoints whose sign was given, recorded or unknown
    if lifecycled:
        summary.update(annotation=annotation_id, primary=is_primary, annotation_dir=str(result.out_dir),
                       replaced_predictions=replaced)  # fmt: skip
        if is_primary:  # where the task's export is (the annotation's own folder holds the same files)
            summary.update(out_dir=where, files=[str(Path(where) / rel) for rel in rels])
    return summary


def _relative(path: Any, root: Path) -> str:
    try:
        return "results/" + Path(path).relative_to(root).as_posix() + "/"
    except ValueError:
        return Path(path).name


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
        self.cleanups: list[threading.Thread] = []  # background removals and import checks
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
            meta={"run": uuid.uuid4().hex[:16]},
        )

    def enqueue_task(
        self, project_id: int, task_id: int, annotation_id: int, fp: str, *, rerun: bool = False
    ) -> tuple[Any, bool]:
        """``(job, created)``: the job for this annotation version, which becomes the annotation's
        latest (:data:`ml_backend.lifecycle.LATEST_KEY`) and the task's newest (its state columns).

        An unfinished job for the same version is reused. A finished one is reused only if it
        is already the annotation's latest (the same submission twice) and ``rerun`` is not set;
        when another version was submitted in between (R1 → R2 → R1), R1 runs again, since R2's
        results were published after it. A queued job of another version of the *same*
        annotation is cancelled; a running one stops at its next frame and publishes nothing.
        Other annotations of the task keep their jobs (:mod:`ml_backend.lifecycle`).
        """
        from rq.job import JobStatus

        from . import lifecycle

        job_id = f"p{project_id}-t{task_id}-a{annotation_id}-{fp}"
        task_key = LATEST_KEY.format(project=project_id, task=task_id)
        ann_key = lifecycle.latest_key(project_id, task_id, annotation_id)
        previous = self.connection.get(ann_key)
        previous = previous.decode() if previous is not None else None
        lifecycle.remember(self.connection, project_id, task_id, annotation_id)
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
            propagate_task,
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
        lifecycle.note(self.connection, project_id, task_id, annotation_id, "queued", job=job_id, reason="")
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
        if action in ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED", "TASKS_DELETED"):
            from .lifecycle import on_deleted

            return on_deleted(self, action, payload)
        if action == "TASKS_CREATED":
            from .lifecycle import check_imported
            from .uploads import on_tasks_created

            payload, uploads = on_tasks_created(self, payload)  # uploaded videos: their own jobs
            return {**check_imported(self, payload), **uploads}
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

                def queued(
                    data: dict[str, Any], job_id: str = job_id, project_id: int = project_id, task_id: int = task_id
                ) -> dict[str, Any] | None:
                    # checked under the task's lock: a worker that started the job already wrote
                    # "running", which must not go back to "queued"
                    job = self.fetch(job_id)
                    if job is None or job.get_status() not in waiting:
                        return None
                    from .lifecycle import message

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
        """Rewrite the task's ``job_message`` (:mod:`ml_backend.lifecycle`) in the background."""
        if not self.settings.label_studio_api_key:
            return None
        from .lifecycle import write_message

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
        from .liveness import is_alive

        try:
            return is_alive(self.connection, job.worker_name)
        except Exception:
            return False

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
