"""Publishing exactly once: the per-task gate a job passes before its exports and prediction go out."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ml_backend.exceptions import AlreadyPublished, Superseded
from ml_backend.worker.process import OWNER_KEY, current_execution

log = logging.getLogger(__name__)


LATEST_KEY = "sam2:task-latest:{project}:{task}"


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
