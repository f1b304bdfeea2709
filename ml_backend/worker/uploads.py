"""Videos uploaded in Label Studio's Import dialog become annotatable tasks, with no script.

Label Studio 1.23.2 refuses a direct file upload into a project whose labeling config reads more
than one data key ("direct file upload supports only one data key"), and a CSV/JSON import must
carry every key the config reads; our annotation configs read several (frames, preview, review
video, job message). So each annotation project gets an **uploads project** beside it
(``scripts/create_project.py --uploads``, the local stack makes them too), whose config reads one
key and names its target in a comment (:data:`MARKER`):

- green-screen: upload long videos (or add them by URL or local-files storage); each becomes
  one task per segment in the target project, cut as ``import_segments.py`` cuts
  (:func:`ml_backend.labelstudio.importing.split_video`: segments share their boundary frame, the offset is
  derived from ``segment_frames``). The uploaded video's own task stays in the uploads project,
  marked as the source: its ``job_state`` says ``ready`` and ``job_message`` names the tasks.
- SceneDiff: :data:`PAIR_RULE`. A video whose partner has not arrived says ``waiting``.

Label Studio's ``TASKS_CREATED`` webhook (:func:`on_tasks_created`) enqueues one RQ job per new
task (:func:`ml_backend.worker.uploadjob.prepare_upload`); the job downloads the video through Label
Studio's API with the backend's token, checks it, extracts the frames under the local-files
root and imports the tasks. The uploaded task's job columns say ``preparing``, then ``ready``,
``waiting``, ``duplicate`` (the same video was imported already: nothing new is made) or
``failed`` with a one-sentence reason in ``job_error``.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from rq.job import JobStatus

from ml_backend.exceptions import JobError, VideoError
from ml_backend.labelstudio.automation import ensure_project
from ml_backend.labelstudio.taskdata import update_task_data
from ml_backend.video.frames import open_frames
from ml_backend.worker.names import UPLOAD_JOB

log = logging.getLogger(__name__)

#: The comment in an uploads project's config: ``<!-- sam2-uploads: project=<id> kind=<kind> -->``.
MARKER = re.compile(r"sam2-uploads:\s*project=(\d+)\s+kind=(greenscreen|scenediff)")

#: The pairing rule, as the project description and the README say it.
PAIR_RULE = (
    "A pair is two uploads named <scene>_1.* and <scene>_2.* (or <scene>_before.* and <scene>_after.*), "
    "or one row of a CSV/JSON import with video1 and video2 columns (and an optional pair column)."
)

#: A pair video's file stem: ``<scene>_<role>`` with ``_`` or ``-`` before the role.
_ROLE = re.compile(r"^(?P<scene>.+?)[_-](?P<role>1|2|before|after)$", re.IGNORECASE)
_ROLES = {"1": 1, "before": 1, "2": 2, "after": 2}
#: Label Studio prefixes every uploaded file's name with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")

#: The data key an upload lands in, per kind (the uploads config's one object tag).
UPLOAD_KEY = {"greenscreen": "video", "scenediff": "video1"}

STATES = ("preparing", "ready", "waiting", "duplicate", "failed")


def uploads_config(target: int, kind: str, title: str = "") -> str:
    """The labeling config of the uploads project of project ``target`` (``kind``: greenscreen or
    scenediff): one ``<Video>`` on the key an upload lands in, and what happens to uploads."""
    key = UPLOAD_KEY[kind]
    where = f"project {target}" + (f" ({_xml_text(title)})" if title else "")
    if kind == "greenscreen":
        say = (f"Upload long videos here (Import). Each becomes one task per segment in {where}; "
               "this task is its source and shows its state (job_state, job_message).")  # fmt: skip
    else:
        say = f"Upload SceneDiff pairs here (Import); each pair becomes one task in {where}. {_xml_text(PAIR_RULE)}"
    return (
        f"<View>\n  <!-- sam2-uploads: project={target} kind={kind} -->\n"
        f'  <Header value="{say}" size="5"/>\n'
        f'  <Video name="{key}" value="${key}"/>\n</View>\n'
    )


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def uploads_target(label_config: Any) -> tuple[int, str] | None:
    """``(target project, kind)`` of an uploads project's config, else None."""
    match = MARKER.search(label_config) if isinstance(label_config, str) else None
    return (int(match.group(1)), match.group(2)) if match else None


def file_name(ref: Any) -> str:
    """The file name a task reference points at, as the user named it: Label Studio's upload
    prefix removed (``/data/upload/3/1a2b3c4d-kitchen_1.mp4`` → ``kitchen_1.mp4``)."""
    if not isinstance(ref, str) or not ref:
        return ""
    parts = urlsplit(ref)
    path = dict(parse_qsl(parts.query)).get("d") or parts.path
    return _UPLOAD_PREFIX.sub("", PurePosixPath(unquote(path)).name)


def pair_role(ref: Any) -> tuple[str, int] | None:
    """``(scene, 1 or 2)`` by the pairing rule for a video's file name, else None."""
    match = _ROLE.match(PurePosixPath(file_name(ref)).stem)
    return (match.group("scene"), _ROLES[match.group("role").lower()]) if match else None


def take_for(ref: Any, fallback: str) -> str:
    """A take name (letters, digits, ``.``, ``_``, ``-``) from an uploaded file's name."""
    stem = PurePosixPath(file_name(ref)).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80]
    if not name or name == "review" or name.startswith(("frame_", "greenscreen")):
        return fallback
    return name


def is_upload(data: Any, kind: str | None = None) -> bool:
    """Whether task data looks like an upload waiting to be prepared: a video key and no frames."""
    if not isinstance(data, dict):
        return False
    kinds = [kind] if kind else list(UPLOAD_KEY)
    for k in kinds:
        frames = "frames" if k == "greenscreen" else "frames1"
        if isinstance(data.get(UPLOAD_KEY[k]), str) and data[UPLOAD_KEY[k]] and frames not in data:
            return True
    return False


def ensure_uploads_project(client: Any, target: Any, kind: str, backend_url: str | None) -> Any:
    """The uploads project of ``target`` (a project record), created or updated, with a webhook
    sending ``TASKS_CREATED`` to ``<backend_url>/webhook`` (none when ``backend_url`` is None)."""

    title = f"{target.title} · uploads"
    about = (f"Upload videos here; they become tasks of project {target.id} ({target.title})."
             + (f" {PAIR_RULE}" if kind == "scenediff" else ""))  # fmt: skip
    project = ensure_project(client, title, uploads_config(target.id, kind, target.title), description=about)
    if backend_url:
        hook = f"{backend_url.rstrip('/')}/webhook"
        if not any(h.url == hook for h in client.webhooks.list(project=str(project.id))):
            client.webhooks.create(url=hook, project=project.id, send_payload=True, send_for_all_actions=False,
                                   actions=["TASKS_CREATED"])  # fmt: skip
    return project


# -- checking an uploaded video ------------------------------------------------------------------
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".svg", ".pdf", ".txt", ".csv", ".json")


class UploadRefused(JobError):
    """An upload that cannot become tasks; the message is the one sentence the task shows."""


@dataclass
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


def probe(path: Path, name: str, settings: Any) -> VideoInfo:
    """The video's size, length and rate; :class:`UploadRefused` with the reason when it is not
    a video, is empty or cannot be decoded, or exceeds ``UPLOAD_MAX_SIDE``/``UPLOAD_MAX_SECONDS``."""

    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
        raise UploadRefused(f"{name} is not a video; upload an mp4, webm, mkv, mov or avi file")
    if path.stat().st_size == 0:
        raise UploadRefused(f"{name} is empty (0 bytes)")
    try:
        with open_frames(path, cache_frames=1) as source:
            info = VideoInfo(source.num_frames, source.width, source.height, round(float(source.fps or 0.0), 4))
    except VideoError as exc:
        detail = "it has no decodable frame" if "decodable" in str(exc) or "no frames" in str(exc) else "unknown"
        raise UploadRefused(
            f"{name} cannot be decoded ({detail if detail != 'unknown' else 'not a video, or an unsupported codec'}); "
            "upload an H.264, VP8/VP9 or MPEG-4 video"
        ) from None
    if info.frames < 2:
        raise UploadRefused(f"{name} has only {info.frames} frame: it is not a video")
    if max(info.width, info.height) > settings.upload_max_side:
        raise UploadRefused(
            f"{name} is {info.width}×{info.height} pixels, larger than UPLOAD_MAX_SIDE={settings.upload_max_side}; "
            "scale it down or raise the limit"
        )
    seconds = info.frames / info.fps if info.fps > 0 else 0.0
    if seconds > settings.upload_max_seconds:
        raise UploadRefused(
            f"{name} lasts {_clock(seconds)}, longer than UPLOAD_MAX_SECONDS={settings.upload_max_seconds:g} "
            f"({_clock(settings.upload_max_seconds)}); cut it or raise the limit"
        )
    return info


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def decode_error(exc: Exception, name: str) -> UploadRefused:
    """A frame that could not be read while extracting: the file is truncated or damaged."""
    text = str(exc)
    at = text.split("ended at frame ", 1)[1].split(" ", 1)[0] if "ended at frame " in text else ""
    where = f"ends at frame {at} although its header promises more" if at else "has a frame that cannot be decoded"
    return UploadRefused(f"{name} {where} (truncated or damaged); upload the whole file again")


# -- the webhook ----------------------------------------------------------------------------------
def job_id(project: int, task: int) -> str:
    return f"upload-p{project}-t{task}"


def on_tasks_created(queue: Any, payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``TASKS_CREATED``: take the uploads out of ``payload`` and enqueue a job for each.

    Returns ``(payload with the other tasks, answer)``. Tasks of an uploads project (its config
    carries :data:`MARKER`; when the payload has no config, any task that :func:`is_upload`)
    each get :func:`~ml_backend.worker.uploadjob.prepare_upload`, once (the job id is the task's).
    """
    project = payload.get("project")
    project_id = project.get("id") if isinstance(project, dict) else project
    config = project.get("label_config") if isinstance(project, dict) else None
    known = uploads_target(config) if config else None
    tasks = payload.get("tasks") if isinstance(payload.get("tasks"), list) else []
    if project_id is None or (config and known is None):
        return payload, {}
    mine = [t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int)
            and (known is not None or is_upload(t.get("data")))]  # fmt: skip
    if not mine:
        return payload, {}
    ids = [enqueue(queue, int(project_id), int(t["id"])) for t in mine]
    if known is not None:  # else the job finds out whether the project is an uploads project
        mark_preparing(queue, [int(t["id"]) for t in mine])
    rest = [t for t in tasks if t not in mine]
    return {**payload, "tasks": rest}, {"uploads": ids}


def enqueue(queue: Any, project: int, task: int) -> str:
    """Enqueue the preparation of uploaded task ``task`` (once: an unfinished job is kept)."""

    jid = job_id(project, task)
    existing = queue.fetch(jid)
    if existing is not None:
        if existing.get_status() in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            return jid
        existing.delete()
    queue.queue.enqueue(
        UPLOAD_JOB, project, task, job_id=jid, retry=queue._retry(), result_ttl=7 * 24 * 3600,
        failure_ttl=7 * 24 * 3600, description=f"prepare uploaded task {task}", meta={"run": uuid.uuid4().hex[:16]},
    )  # fmt: skip
    return jid


def mark_preparing(queue: Any, tasks: list[int]) -> None:
    """Set ``job_state=preparing`` on the uploaded tasks, from a background thread."""
    settings, conn = queue.settings, queue.connection
    if not settings.label_studio_api_key:
        return

    def run() -> None:
        for task in tasks:
            write_state(settings, conn, task, "preparing", "", "The video is being checked and its frames extracted.",
                        only_if_new=True)  # fmt: skip

    thread = threading.Thread(target=run, name="upload-preparing", daemon=True)
    thread.start()
    queue.cleanups.append(thread)


def write_state(settings: Any, conn: Any, task: int, state: str, error: str, message: str, *,
                only_if_new: bool = False, extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write an uploaded task's job columns: ``preparing`` best effort and never over a later
    state (``only_if_new``), a final state with ``LABEL_STUDIO_RETRY_SECONDS`` of retries."""

    fields = {"job_state": state, "job_progress": 100 if state == "ready" else 0, "job_error": error,
              "job_message": message, **(extra or {})}  # fmt: skip

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        return None if only_if_new and data.get("job_state") in STATES else fields

    try:
        seconds = settings.label_studio_best_effort_seconds if only_if_new else settings.label_studio_retry_seconds
        update_task_data(settings, conn, task, change, seconds=seconds)
    except Exception as exc:
        log.warning("could not write uploaded task %s's state (%s)", task, type(exc).__name__)
