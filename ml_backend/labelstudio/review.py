"""Review and correction inside Label Studio, after a job has published its exports.

:func:`review_task` turns a finished job into what the reviewer sees on the task:

1. **Flagged frames become pages.** The first frame of each ranked flagged range
   (:mod:`ml_backend.video.quality`), up to ``REVIEW_MAX_PAGES`` per video, is extracted from the video
   (JPEG, ``review/<video>_pages/frame_XXXXXX.jpg``) and appended to the task's image list (``framesN``) and frame-index list
   (``frame_indicesN``). Appending keeps every existing ``item_index`` valid; a frame that is
   already a page is never added again, so re-running a job appends nothing twice. The job's
   prediction then carries masks on the new pages too (:meth:`TaskJob.prediction` reads the
   extended lists), and a correction submitted there becomes a prompt on that frame.
2. **The whole video, in the task.** Each video's overlay WebM (``review/<video>_overlay.webm``)
   is copied beside the task's frames and set as ``review_videoN``; ``review_flags`` lists the
   flagged ranges with their times.
3. **A preview** of the result: one strip per video (first, middle, last and worst flagged
   frame), set as ``preview`` (:func:`ml_backend.video.previews.job_preview`).
4. **State**: ``job_state`` done, ``job_progress`` 100, ``flagged_ranges``, ``lowest_score``.

Files go into ``<task folder>/review/`` (:func:`ml_backend.labelstudio.taskdata.task_folder`), named with
the job's fingerprint so a browser never shows a stale cached copy. Older copies are **kept** up
to ``REVIEW_KEEP_VERSIONS`` versions of each file (:func:`prune_versions`): a task page opened
before a newer job published still references the older overlay video and preview, and Label
Studio blocks the whole page with an error dialog when its video answers 404. A reload shows the
new files.
When the task's frames are not local-files files (or the worker has no
``LOCAL_FILES_DOCUMENT_ROOT``), no files can be served: pages, videos and previews are skipped
with a log line and the state columns are still set.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from ml_backend.exporters.staging import atomic_write_bytes
from ml_backend.labelstudio.regions import label_for
from ml_backend.labelstudio.taskdata import format_flags, local_url, task_folder
from ml_backend.video.frames import open_frames
from ml_backend.video.previews import job_preview
from ml_backend.video.quality import pages_to_add, quality_file

log = logging.getLogger(__name__)


def _published(result: Any, relpath: str) -> Path | None:
    """``out_dir/relpath`` if this job published it (the folder may hold older jobs' files)."""
    path = Path(result.out_dir) / relpath
    return path if path in {Path(p) for p in result.files} and path.is_file() else None


def load_report(result: Any, spec: Any) -> dict[str, Any] | None:
    """The job's published ``quality.json``, or None when quality signals were off."""
    path = _published(result, quality_file(spec))
    return json.loads(path.read_text()) if path is not None else None


def _extract(video_path: str, frames: list[int], folder: Path) -> dict[int, Path]:
    """Frames of a video as JPEG files ``frame_XXXXXX.jpg`` in ``folder`` (kept if present)."""

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with open_frames(video_path, cache_frames=4) as source:
        for frame in sorted(frames):
            path = folder / f"frame_{frame:06d}.jpg"
            if not path.exists():
                tmp = folder / f".{path.name}.part"
                Image.fromarray(source.read(frame)).save(tmp, format="JPEG", quality=95)
                tmp.replace(path)
            out[frame] = path
    return out


def prune_versions(folder: Path, stem: str, suffix: str, keep: int, current: Path | None = None) -> list[Path]:
    """Keep ``keep`` versions of ``<stem>-*<suffix>`` in ``folder``: ``current`` (the one just
    published, or None when this job has no such file; it counts as a version either way) and
    the ``keep - 1`` newest others; delete the rest. Returns the files kept, newest first. Newest = latest mtime, ties
    broken by name."""
    keep = max(1, int(keep))
    files = [p for p in folder.glob(f"{stem}-*{suffix}") if p.is_file() and p != current]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    kept = ([current] if current is not None else []) + files[: keep - 1]
    for old in files[keep - 1 :]:
        old.unlink(missing_ok=True)
    return kept


def _replace_copy(src: Path, folder: Path, stem: str, suffix: str, key: str, keep: int) -> Path:
    """Copy ``src`` to ``folder/<stem>-<key><suffix>`` (atomically); keep ``keep`` versions."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}-{key}{suffix}"
    tmp = folder / f".{target.name}.part"
    shutil.copyfile(src, tmp)
    tmp.chmod(0o644)
    tmp.replace(target)
    prune_versions(folder, stem, suffix, keep, current=target)
    return target


def object_name(obj: Any, task_job: Any) -> str:
    """How ``review_flags`` names an object: its SceneDiff label (``lamp_1``) when the annotator
    named it, else its label in the config (``Subject 1``)."""

    if obj.name != f"object{obj.id}":
        return obj.label
    for info in task_job.images.values():
        label = label_for(info.labels, obj.id)
        if label:
            return label
    return obj.label


def review_task(
    settings: Any, task_job: Any, result: Any, task_data: dict[str, Any], key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Files and task-data changes for a finished job (module docstring); returns
    ``(data changes, summary)``. ``task_data`` is the task's current data; ``key`` a short name
    of the job (its fingerprint). Extends ``task_job.images[*].frame_indices`` with the appended
    pages, so the prediction built afterwards covers them. When the review files cannot be
    written (a read-only or full disk), the state columns are still set and the pages are not
    appended."""
    changes, summary, report = _state(task_job, result)
    folder = task_folder(settings, task_data.get(task_job.images["video1"].data_key) or [])
    summary["pages_added"] = {}
    if folder is None:
        log.info("task frames are not local-files files under LOCAL_FILES_DOCUMENT_ROOT: no pages, videos or preview")
        summary["review_files"] = "skipped: the task's frames are not in local-files storage"
        return changes, summary
    for info in task_job.images.values():  # pages an earlier job appended since this one began count too
        current = task_data.get(info.indices_key)
        if isinstance(current, list) and current[: len(info.frame_indices)] == info.frame_indices:
            info.frame_indices = list(current)
    before = {video: list(info.frame_indices) for video, info in task_job.images.items()}
    try:
        changes.update(_review_files(settings, task_job, result, task_data, key, folder, report, summary))
    except OSError as exc:
        for video, info in task_job.images.items():  # the prediction covers the pages as they are
            info.frame_indices = before[video]
        summary["pages_added"] = {}
        summary["review_files"] = f"skipped: {exc.strerror or type(exc).__name__} under {folder}"
        log.warning("task review files could not be written under %s (%s); state columns only", folder, exc)
    return changes, summary


def _state(task_job: Any, result: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The state columns and ``review_flags`` of a finished job, its summary and its report."""
    report = load_report(result, task_job.spec)
    ranges = report["ranges"] if report else []
    summary = dict(report["summary"]) if report else {"flagged_ranges": 0, "lowest_score": None, "confidence": 1.0}
    changes: dict[str, Any] = {
        "job_state": "done",
        "job_progress": 100,
        "job_error": "",
        "flagged_ranges": summary["flagged_ranges"],
        "lowest_score": summary["lowest_score"],
    }
    labels = {o.id: object_name(o, task_job) for o in task_job.spec.objects}
    if report:
        changes["review_flags"] = format_flags(ranges, report["videos"], labels)
    return changes, summary, report


def _review_files(
    settings: Any,
    task_job: Any,
    result: Any,
    task_data: dict[str, Any],
    key: str,
    folder: Path,
    report: dict[str, Any] | None,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Steps 1–3 of the module docstring: write the files under ``folder`` and return the
    task-data changes that reference them."""
    changes: dict[str, Any] = {}
    ranges = report["ranges"] if report else []
    images = task_job.images
    # 1. flagged frames → appended pages
    # the pages as the task has them now (an earlier job may have appended some since this one began)
    existing = {video: list(task_data.get(info.indices_key) or info.frame_indices) for video, info in images.items()}
    new_pages = pages_to_add(ranges, existing, settings.review_max_pages)
    labels_of = {v: (report["videos"].get(v, {}).get("label", v) if report else v) for v in images}
    for video, frames in new_pages.items():
        info = images[video]
        # never into the folder of the task's own frames: for a segment that folder is the video
        files = _extract(task_job.videos[video], frames, folder / "review" / f"{labels_of[video]}_pages")
        urls = list(task_data.get(info.data_key) or [])
        indices = list(task_data.get(info.indices_key) or info.frame_indices)
        for frame in frames:
            urls.append(local_url(settings.local_files_root, files[frame]))
            indices.append(frame)
        changes[info.data_key], changes[info.indices_key] = urls, indices
        info.frame_indices = list(indices)
        summary["pages_added"][video] = frames

    # 2. overlay videos
    review_dir = folder / "review"
    single = len(images) == 1
    for video in images:
        label = labels_of[video]
        webm = _published(result, f"review/{label}_overlay.webm")
        field = "review_video" if single else f"review_{video}"
        if webm is not None:
            copy = _replace_copy(webm, review_dir, f"{label}_overlay", ".webm", key, settings.review_keep_versions)
            changes[field] = local_url(settings.local_files_root, copy)
        else:  # nothing propagated there this time (no object in it, or REVIEW_EXPORTS=0)
            changes[field] = ""
            prune_versions(review_dir, f"{label}_overlay", ".webm", settings.review_keep_versions)

    # 3. preview strip

    propagated = {v: path for v, path in task_job.videos.items() if v in result.masks}
    gs = task_job.spec.greenscreen if task_job.spec.format == "greenscreen" else None
    first_frames = {v: gs.first_frame() for v in images} if gs is not None else {}
    data = job_preview(propagated, result.masks, ranges, first_frames)
    stem = f"{labels_of['video1'] if single else 'pair'}_preview"
    target = review_dir / f"{stem}-{key}.png"
    atomic_write_bytes(target, data)
    prune_versions(review_dir, stem, ".png", settings.review_keep_versions, current=target)
    changes["preview"] = local_url(settings.local_files_root, target)
    return changes
