"""The RQ job that turns an uploaded video (or pair) into annotatable tasks (:mod:`ml_backend.worker.uploads`).

The job downloads the upload through Label Studio's API (:func:`ml_backend.labelstudio.fetch.default_fetcher`,
the backend's token), checks it (:func:`ml_backend.worker.uploads.probe`: a video that decodes, within ``UPLOAD_MAX_SIDE``
and ``UPLOAD_MAX_SECONDS``), extracts the frames with the scripts' own code
(:func:`~ml_backend.labelstudio.importing.split_video` + :func:`~ml_backend.labelstudio.importing.segment_tasks`, or
:func:`~ml_backend.labelstudio.importing.pair_task`) into a hidden folder under the local-files root, and
then, inside a :class:`~ml_backend.worker.gate.PublishGate` scoped to the video's content hash, renames
the folder into place and imports the tasks into the target project. The gate serialises jobs of
the same content, refuses to publish for a deleted upload task and publishes each run once; a
video already imported (same SHA-256) makes nothing new.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rq import get_current_job

from ml_backend.exceptions import FetchError, Superseded, VideoError
from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.automation import import_tasks, local_storage, project_tasks
from ml_backend.labelstudio.backoff import with_backoff
from ml_backend.labelstudio.fetch import default_fetcher
from ml_backend.labelstudio.importing import (
    file_sha256,
    pair_sha256,
    pair_task,
    segment_folders,
    segment_tasks,
    split_video,
)
from ml_backend.labelstudio.taskdata import update_task_data
from ml_backend.worker.gate import PublishGate, run_token
from ml_backend.worker.process import current_settings
from ml_backend.worker.records import TASK_DELETED_KEY
from ml_backend.worker.uploads import (
    PAIR_RULE,
    UploadRefused,
    decode_error,
    file_name,
    is_upload,
    pair_role,
    probe,
    take_for,
    uploads_target,
    write_state,
)

log = logging.getLogger(__name__)


@dataclass
class Upload:
    """What one job works with."""

    settings: Any
    conn: Any
    client: Any
    job: Any
    project: int  # the uploads project
    target: int  # the annotation project
    kind: str

    def retry(self, call: Any, what: str = "") -> Any:

        what = what or f"Label Studio at {self.settings.label_studio_url}"
        return with_backoff(call, seconds=self.settings.label_studio_retry_seconds, what=what)

    @property
    def job_key(self) -> str:
        return getattr(self.job, "id", None) or f"local-{int(time.time())}"


def prepare_upload(project_id: int, task_id: int) -> dict[str, Any]:
    """RQ job: make the tasks of uploaded task ``task_id`` of uploads project ``project_id``."""

    settings, job = current_settings(), get_current_job()
    conn = job.connection if job is not None else None
    client = labelstudio.client(settings.label_studio_url, settings.label_studio_api_key)
    ctx = Upload(settings, conn, client, job, project_id, 0, "")
    project = ctx.retry(lambda: client.projects.get(id=project_id))
    found = uploads_target(getattr(project, "label_config", ""))
    if found is None:
        return {"status": "ignored", "reason": f"project {project_id} is not an uploads project"}
    ctx.target, ctx.kind = found
    data = dict(ctx.retry(lambda: client.tasks.get(id=task_id)).data or {})
    if not is_upload(data, ctx.kind):
        return {"status": "ignored", "reason": f"task {task_id} holds no upload"}
    try:
        if made := made_from(ctx, task_id):  # this upload's tasks exist (a rerun, or its partner's job)
            return finish_existing(ctx, [task_id], made)
        write_state(settings, conn, task_id, "preparing", "", "The video is being checked and its frames extracted.")
        return (prepare_segments if ctx.kind == "greenscreen" else prepare_pair)(ctx, task_id, data)
    except UploadRefused as exc:
        write_state(settings, conn, task_id, "failed", str(exc), f"Nothing was imported: {exc}")
        return {"status": "failed", "reason": str(exc)}
    except Superseded as exc:
        return {"status": "superseded", "reason": str(exc)}
    except Exception as exc:
        reason = f"preparing the upload failed ({type(exc).__name__}); it is tried again if retries are left"
        write_state(settings, conn, task_id, "failed", reason, f"Nothing was imported: {reason}.")
        raise


# -- reading and checking a video ------------------------------------------------------------------
def fetch(ctx: Upload, ref: str) -> Path:
    """The uploaded file, downloaded through Label Studio with the backend's token."""

    name = file_name(ref) or "the upload"
    try:
        return Path(default_fetcher(ctx.settings, max_bytes=ctx.settings.upload_max_bytes).path(ref))
    except FetchError as exc:
        why = str(exc).replace(repr(ref), "").replace(ref, "").replace("MAX_DOWNLOAD_BYTES", "UPLOAD_MAX_BYTES")
        why = why.strip(" :.") or "it cannot be downloaded"
        raise UploadRefused(f"{name} could not be read from Label Studio: {why}") from None


def local_root(ctx: Upload) -> Path:
    root = ctx.settings.local_files_root
    if not root or not Path(root).is_dir():
        raise UploadRefused(
            "the backend has no LOCAL_FILES_DOCUMENT_ROOT folder, so the frames cannot be served to Label Studio"
        )
    return Path(root).resolve()


# -- the target project's tasks ------------------------------------------------------------------
def imported_from(ctx: Upload, sha: str) -> list[tuple[int, dict[str, Any]]]:
    """Tasks of the target project made from content ``sha`` (any import: upload or script)."""

    return [
        (i, d) for i, d in ctx.retry(lambda: project_tasks(ctx.client, ctx.target)) if d.get("source_sha256") == sha
    ]


def made_from(ctx: Upload, task: int) -> list[tuple[int, dict[str, Any]]]:
    """Tasks of the target project made from uploaded task ``task``."""

    tasks = ctx.retry(lambda: project_tasks(ctx.client, ctx.target))
    return [(i, d) for i, d in tasks if task in (d.get("source_tasks") or [])]


def finish_existing(ctx: Upload, tasks: list[int], existing: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The content was imported already: ``ready`` when this upload made those tasks (a retry,
    or the partner's job), else ``duplicate``."""
    ids = sorted(i for i, _ in existing)
    mine = any(t in (d.get("source_tasks") or []) for _, d in existing for t in tasks)
    if mine:
        for t in tasks:
            write_state(ctx.settings, ctx.conn, t, "ready", "", ready_message(ctx, ids))
        return {"status": "ready", "tasks": ids}
    text = f"the same video content was imported already as task(s) {_ids(ids)} of project {ctx.target}"
    for t in tasks:
        write_state(ctx.settings, ctx.conn, t, "duplicate", text, f"Nothing new was made: {text}.")
    return {"status": "duplicate", "tasks": ids}


def ready_message(ctx: Upload, ids: list[int]) -> str:
    what = "segment task(s)" if ctx.kind == "greenscreen" else "pair task"
    return f"Source of {len(ids)} {what} {_ids(ids)} in project {ctx.target}: annotate there."


def _ids(ids: list[int]) -> str:
    ids = sorted(ids)
    return f"{ids[0]}–{ids[-1]}" if len(ids) > 2 and ids[-1] - ids[0] == len(ids) - 1 else ", ".join(map(str, ids))


def gate_for(ctx: Upload, scope: str, tasks: list[int]) -> Any:
    """The publish gate of this job: one import per content hash at a time, none for a deleted
    upload task, each run published once."""

    deny = [TASK_DELETED_KEY.format(task=t) for t in tasks]
    return PublishGate(ctx.conn, ctx.job_key, scope, latest_key=None, deny_keys=deny, run=run_token(ctx.job))


def publish(ctx: Upload, tasks: list[int], sha: str, scope: str, place: Any) -> dict[str, Any]:
    """Under the gate: import ``place()``'s task data (it renames the files into place) unless
    the content is there already; then mark ``tasks`` ready."""

    if ctx.conn is None:  # run outside a worker (tests of the pieces)
        return _import(ctx, tasks, sha, place, import_tasks)
    with gate_for(ctx, scope, tasks):
        return _import(ctx, tasks, sha, place, import_tasks)


def _import(ctx: Upload, tasks: list[int], sha: str, place: Any, import_tasks: Any) -> dict[str, Any]:
    existing = imported_from(ctx, sha)
    if existing:
        place(None)  # remove the staged files
        return finish_existing(ctx, tasks, existing)
    made, storage_dir = place(True)

    ctx.retry(lambda: local_storage(ctx.client, ctx.target, storage_dir))
    for data in made:
        data.update(source_tasks=tasks, source_project=ctx.project)
    ids = ctx.retry(lambda: import_tasks(ctx.client, ctx.target, made))
    for t in tasks:
        write_state(ctx.settings, ctx.conn, t, "ready", "", ready_message(ctx, ids))
    return {"status": "ready", "tasks": ids}


# -- green-screen: one task per segment ------------------------------------------------------------
def prepare_segments(ctx: Upload, task_id: int, data: dict[str, Any]) -> dict[str, Any]:

    ref = data["video"]
    name = file_name(ref) or f"task {task_id}"
    root = local_root(ctx)
    path = fetch(ctx, ref)
    info = probe(path, name, ctx.settings)
    sha = file_sha256(path)
    if existing := imported_from(ctx, sha):
        return finish_existing(ctx, [task_id], existing)
    take = unique_folder(root / "segments", take_for(ref, f"upload_{task_id}"), sha)
    staged = root / "segments" / f".{take}.part-{ctx.job_key}"
    progress = Progress(ctx, task_id)
    try:
        split_video(path, staged, ctx.settings.upload_segment_seconds, progress=progress)
    except VideoError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise decode_error(exc, name) from None

    def place(keep: bool | None) -> Any:
        if not keep:
            shutil.rmtree(staged, ignore_errors=True)
            return None
        final = root / "segments" / take
        shutil.rmtree(final, ignore_errors=True)  # leftovers of this content's failed attempt
        staged.rename(final)
        (final / ".source_sha256").write_text(sha)
        made = segment_tasks(segment_folders(final), root, take=take, fps=info.fps, source_sha256=sha)
        return made, final.parent

    try:
        return publish(ctx, [task_id], sha, f"upload:{ctx.target}:{sha}", place)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def unique_folder(parent: Path, name: str, sha: str) -> str:
    """``name``, or ``<name>-<sha[:8]>`` when a folder of that name exists (another video's)."""
    if not (parent / name).exists():
        return name
    marker = parent / name / ".source_sha256"
    if marker.is_file() and marker.read_text().strip() == sha:
        return name
    return f"{name}-{sha[:8]}"


class Progress:
    """Writes ``job_progress`` of the uploaded task while frames are extracted (every 5 s at most)."""

    def __init__(self, ctx: Upload, task_id: int) -> None:
        self.ctx, self.task_id, self.last = ctx, task_id, 0.0

    def __call__(self, done: int, total: int) -> None:

        now = time.monotonic()
        if now - self.last < 5 or done >= total:
            return
        self.last = now
        try:
            update_task_data(self.ctx.settings, self.ctx.conn, self.task_id,
                             {"job_progress": int(99 * done / max(1, total))}, seconds=2.0)  # fmt: skip
        except Exception:
            log.debug("progress of task %s not written", self.task_id, exc_info=True)


# -- SceneDiff: one task per pair ----------------------------------------------------------------
def find_partner(ctx: Upload, task_id: int, scene: str, role: int) -> int | None:
    """The lowest-id upload of the uploads project with the same scene and the other role that
    has not been made into a pair yet."""

    for other, data in sorted(ctx.retry(lambda: project_tasks(ctx.client, ctx.project))):
        if other == task_id or data.get("video2") or data.get("job_state") == "ready":
            continue
        if is_upload(data, "scenediff") and pair_role(data.get("video1")) == (scene, 3 - role):
            return other
    return None


def prepare_pair(ctx: Upload, task_id: int, data: dict[str, Any]) -> dict[str, Any]:
    if data.get("video2"):  # a CSV/JSON row with both videos
        refs, tasks = [data["video1"], data["video2"]], [task_id]
        scene = str(data.get("pair") or (pair_role(data["video1"]) or ("",))[0] or f"pair_{task_id}")
    else:
        found = pair_role(data["video1"])
        if found is None:
            raise UploadRefused(f"{file_name(data['video1'])} does not name its pair. {PAIR_RULE}")
        scene, role = found
        partner = find_partner(ctx, task_id, scene, role)
        if partner is None:
            other = "2" if role == 1 else "1"
            text = f"Waiting for its partner {scene}_{other}.* ({scene}_{'after' if role == 1 else 'before'}.*)."
            write_state(ctx.settings, ctx.conn, task_id, "waiting", "", text)
            return {"status": "waiting", "scene": scene}
        partner_data = dict(ctx.retry(lambda: ctx.client.tasks.get(id=partner)).data or {})
        pair = {role: (task_id, data["video1"]), 3 - role: (partner, partner_data["video1"])}
        refs, tasks = [pair[1][1], pair[2][1]], [pair[1][0], pair[2][0]]
    return make_pair(ctx, tasks, refs, take_for(f"x/{scene}.mp4", f"pair_{task_id}"))


def make_pair(ctx: Upload, tasks: list[int], refs: list[str], name: str) -> dict[str, Any]:

    root = local_root(ctx)
    paths = [fetch(ctx, ref) for ref in refs]
    names = [file_name(ref) or f"video{k + 1}" for k, ref in enumerate(refs)]
    for path, shown in zip(paths, names, strict=True):
        probe(path, shown, ctx.settings)  # sizes and rates may differ between the two
    sha = pair_sha256(*paths)
    if existing := imported_from(ctx, sha):
        return finish_existing(ctx, tasks, existing)
    name = unique_folder(root / "pairs", name, sha)
    staged_name = f".{name}.part-{ctx.job_key}"
    staged = root / "pairs" / staged_name
    try:
        made = pair_task(paths[0], paths[1], root, staged_name, stride=ctx.settings.upload_pair_stride,
                         source_sha256=sha)  # fmt: skip
    except VideoError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise decode_error(exc, " and ".join(names)) from None

    def place(keep: bool | None) -> Any:
        if not keep:
            shutil.rmtree(staged, ignore_errors=True)
            return None
        final = root / "pairs" / name
        shutil.rmtree(final, ignore_errors=True)
        staged.rename(final)
        (final / ".source_sha256").write_text(sha)
        text = json.dumps(made).replace(f"pairs/{staged_name}/", f"pairs/{name}/")
        return [{**json.loads(text), "pair": name}], final.parent

    try:
        return publish(ctx, tasks, sha, f"upload-pair:{ctx.target}:{sha}", place)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
