"""A job's progress: frames done per video in ``job.meta``, and the task's state columns in Label Studio."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ml_backend.exceptions import JobError
from ml_backend.labelstudio.taskdata import update_task_data
from ml_backend.settings import Settings
from ml_backend.stopping import check_stop, stoppable
from ml_backend.worker.columns import remember
from ml_backend.worker.gate import LATEST_KEY

log = logging.getLogger(__name__)


#: ``job_error`` while a job runs again after its worker stopped or was lost.
RERUN_NOTE = "re-running after a restart"


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

        if name == "publishing":
            stoppable(False)  # a stop never cuts a publish in two
        elif name in self.STOPPABLE_STAGES:
            check_stop()
        if self.job is not None:
            self.job.meta["stage"] = name
            self._save(force=True)


class JobState:
    """The task's state columns in Label Studio (:mod:`ml_backend.labelstudio.taskdata`), written only while
    this job is the task's latest. ``running`` and the progress go out from a background thread,
    at most every ``interval`` seconds, so the job never waits for Label Studio; every write is
    best-effort, with ``LABEL_STUDIO_BEST_EFFORT_SECONDS`` of retries. Progress never goes back
    within an execution; ``note`` is shown in ``job_error`` while running ("re-running after a
    restart"). Each write first notes the task in :data:`ml_backend.worker.columns.OPEN_KEY`, so the
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
