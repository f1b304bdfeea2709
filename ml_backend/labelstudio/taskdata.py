"""What a task shows about its propagation: fields of the task's data in Label Studio.

Label Studio's Data Manager shows every key of a task's data as a column that a reviewer can sort
and filter, so the job's state lives there (task meta is not shown). The keys:

================  ======  ==================================================================
key               type    meaning
================  ======  ==================================================================
``job_state``     str     ``queued``, ``running``, ``done``, ``failed``, ``cancelled``,
                          ``superseded`` or ``deleted`` (the annotation whose job the columns
                          showed was deleted); :mod:`ml_backend.worker.columns` keeps it true to RQ
``job_progress``  int     percent of all frames of all videos of the job (0–100)
``job_error``     str     why, one sentence: the failure, "worker restarted…", "re-running
                          after a restart" ("" when there is nothing to say)
``flagged_ranges`` int    drift-flagged frame ranges of the last finished job
``lowest_score``  float   lowest SAM 2 object score on a shown mask (None without scores)
``review_video*`` str     the overlay WebM of each video (``review_video1``/``review_video2``
                          for a pair, ``review_video`` for a segment), a local-files URL
``review_flags``  str     the flagged ranges with frames and times, one per line
``preview``       str     a preview image URL (grid view)
``job_message``   str     one line per annotation: its job's state, whether its result is the
                          task's, where its files are, why it failed (:mod:`ml_backend.worker.lifecycle`)
================  ======  ==================================================================

Label Studio replaces a task's whole ``data`` on update, so :func:`update_task_data` reads,
merges and writes it under a per-task Redis lock (the backend and the worker both write), with
backoff while Label Studio is away. Only the task's latest job writes its state
(:func:`ml_backend.worker.jobs.JobState`).

Files the reviewer's browser must load (appended frames, overlay videos, previews) are written
under Label Studio's local-files document root (``LOCAL_FILES_DOCUMENT_ROOT``), beside the task's
own frames, and referenced as ``/data/local-files/?d=...``: Label Studio serves them to logged-in
users through the project's local-files storage, so no new route and no weaker auth is needed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ml_backend.exceptions import MLBackendError
from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.backoff import with_backoff
from ml_backend.labelstudio.fetch import FileFetcher

log = logging.getLogger(__name__)

STATE_KEYS = ("job_state", "job_progress", "job_error", "flagged_ranges", "lowest_score")
LOCK_KEY = "sam2:task-data-lock:{task}"


def update_task_data(
    settings: Any,
    connection: Any,
    task_id: int,
    change: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    seconds: float | None = None,
) -> dict[str, Any] | None:
    """Merge ``change`` into task ``task_id``'s data and save it; returns the new data.

    ``change`` is a dict of keys to set, or a function of the current data returning one (None:
    nothing to change). Runs under a Redis lock per task when ``connection`` is given, and
    retries transient Label Studio trouble for ``seconds`` (default
    ``settings.label_studio_retry_seconds``).
    """

    seconds = settings.label_studio_retry_seconds if seconds is None else seconds
    what = f"Label Studio at {settings.label_studio_url}"

    def merge() -> dict[str, Any] | None:
        task = labelstudio.get(settings, "tasks", task_id, seconds=seconds)
        data = dict(getattr(task, "data", None) or {})
        updates = change(data) if callable(change) else change
        if not updates or all(data.get(k) == v for k, v in updates.items()):
            return data
        data.update(updates)
        with_backoff(
            lambda: labelstudio.for_settings(settings).tasks.update(id=task_id, data=data), seconds=seconds, what=what
        )
        return data

    if connection is None:
        return merge()
    lock = connection.lock(LOCK_KEY.format(task=task_id), timeout=max(60, int(seconds) + 30), blocking_timeout=None)
    with lock:
        return merge()


def local_path(settings: Any, url: str) -> Path | None:
    """The file under ``LOCAL_FILES_DOCUMENT_ROOT`` that a ``/data/local-files/?d=...`` URL names,
    resolved and checked exactly as the backend reads task files
    (:meth:`ml_backend.labelstudio.fetch.FileFetcher.resolve`: no ``..``, never outside the root); None when
    the URL is not a local-files URL under it, or there is no local root."""

    if not getattr(settings, "local_files_root", "") or not isinstance(url, str) or not url:
        return None
    resolver = FileFetcher(settings.label_studio_url, Path(settings.data_dir) / "downloads",
                           local_root=settings.local_files_root)  # fmt: skip
    try:
        found = resolver.resolve(url)
    except (MLBackendError, ValueError):
        return None
    return found if isinstance(found, Path) else None


#: Where Label Studio serves files under ``LOCAL_FILES_DOCUMENT_ROOT``.
LOCAL_FILES_URL = "/data/local-files/?d="


def local_url(root: Path, path: Path) -> str:
    """The ``/data/local-files/?d=...`` URL of ``path`` under the local-files document ``root``
    (``LOCAL_FILES_DOCUMENT_ROOT``)."""
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return LOCAL_FILES_URL + quote(rel.as_posix(), safe="/")


def task_folder(settings: Any, frame_urls: list[Any]) -> Path | None:
    """The folder of a task's own files: the parent of the folder holding its first annotation
    frame (``pairs/<name>/`` for ``pairs/<name>/frames1/frame_000000.jpg``), when that frame is a
    local-files file; None otherwise (frames uploaded to Label Studio, or no local root)."""
    first = next((u for u in frame_urls if isinstance(u, str) and u), None)
    path = local_path(settings, first) if first else None
    return path.parent.parent if path is not None else None


def format_flags(ranges: list[dict[str, Any]], videos: dict[str, dict[str, Any]], labels: dict[int, str]) -> str:
    """``review_flags``: one line per flagged range, ranked, e.g.
    ``video1 · Object 2 · frames 40–44 (1.33–1.47 s) · vanished · score 0.12``."""
    lines = []
    for r in ranges:
        fps = float(videos.get(r["video"], {}).get("fps") or 0.0)
        frames = f"frame {r['start']}" if r["start"] == r["end"] else f"frames {r['start']}–{r['end']}"
        if fps > 0:
            t0, t1 = r["start"] / fps, r["end"] / fps
            frames += f" ({t0:.2f} s)" if r["start"] == r["end"] else f" ({t0:.2f}–{t1:.2f} s)"
        score = "" if r.get("score") is None else f" · score {r['score']:.2f}"
        name = labels.get(r["object"], f"object {r['object']}")
        label = videos.get(r["video"], {}).get("label", r["video"])
        lines.append(f"{label} · {name} · {frames} · {', '.join(r['reasons'])}{score}")
    return "\n".join(lines) if lines else "no flagged frames"


def shown_ref(ref: Any) -> str:
    """A task file as the user gave it: a local-files URL as its path relative to the storage
    root (``pairs/x/video1.mp4``), anything else unchanged."""
    text = str(ref)
    match = re.match(r"^(?:https?://[^/]+)?/data/local-files/?\?d=(.*)$", text)
    return unquote(match.group(1)) if match else text
