"""Building Label Studio tasks from videos: annotation frames, task data, segments.

Frames are extracted with the same decoder the worker uses (:func:`ml_backend.video.frames.open_frames`),
so image ``i`` of a task is exactly frame ``frame_indices[i]`` of its video. Files are written under
a Label Studio local-files document root and referenced as ``/data/local-files/?d=<relative path>``.

Task data (see :mod:`ml_backend.labelstudio.annotations` for how the worker reads it):

- SceneDiff pair: ``frames1``, ``frames2`` (image URLs), ``video1``, ``video2`` (video URLs),
  ``frame_indices1``, ``frame_indices2``, ``pair`` (a name);
- green-screen segment: ``frames``, ``video``, ``frame_indices`` (frame numbers **within the
  segment**), ``segment_index`` (0-based, as in the ``video_part_XXX`` folders this module cuts),
  ``segment_frames`` (frame count of every segment of the video, in order), ``start_frame``,
  ``take`` (the source video's name: it keys the export folder), ``fps`` (the source's frame
  rate, 0 when unknown), ``first_frame``/``last_frame`` (the original frame numbers of the
  segment's first and last frame) and, for a cut video, ``source_sha256`` (its content hash:
  an import run twice finds its tasks by it or by the take);
- both: the review fields (:func:`review_fields`) that jobs fill in later: ``preview``,
  ``review_video`` (``review_video1``/``review_video2`` for a pair), ``review_flags`` and the
  job-state columns (:mod:`ml_backend.labelstudio.taskdata`). The labeling configs show some of them, so
  Label Studio needs them at import; they are empty until a job has run.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ml_backend.exceptions import VideoError
from ml_backend.labelstudio.taskdata import local_url
from ml_backend.video.frames import ImageFolderFrames, open_frames
from ml_backend.video.prompts import TAKE_NAME


def take_name(text: str, what: str = "take name") -> str:
    """``text`` if it can name a take (a folder under the local-files root and under
    ``RESULTS_DIR``: letters, digits, ``.``, ``_``, ``-``, not starting with a dot);
    :class:`VideoError` saying why otherwise."""

    if not isinstance(text, str) or not TAKE_NAME.fullmatch(text):
        raise VideoError(
            f"{what} {text!r:.60} cannot name a take: use letters, digits, '.', '_' and '-' "
            "(up to 100, starting with a letter or digit)"
        )
    if text == "review" or text.startswith(("frame_", "greenscreen")):
        # names of files in greenscreen/ of tasks imported before takes existed
        raise VideoError(f"{what} {text!r} is reserved (a file name of the green-screen exports); choose another")
    return text


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, hex (how an import recognises a video it has seen)."""

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pair_sha256(video1: str | Path, video2: str | Path) -> str:
    """The content hashes of a pair's two videos, ``<sha256 of 1>+<sha256 of 2>``."""
    return f"{file_sha256(video1)}+{file_sha256(video2)}"


def video_fps(video: str | Path) -> float:
    """The frame rate a video's header gives (0 for a folder of frames, which has none)."""
    if Path(video).is_dir():
        return 0.0
    with open_frames(video, cache_frames=1) as source:
        return round(float(source.fps or 0.0), 4)


def review_fields(videos: Sequence[str]) -> dict[str, Any]:
    """The review fields of a new task (all empty) for ``videos`` (``["video1", "video2"]`` for a
    pair, ``["video"]`` for a segment)."""
    return {  # first in the task data: Label Studio shows data columns in this order
        "job_state": "",
        "job_progress": 0,
        "flagged_ranges": None,
        "lowest_score": None,
        "job_error": "",
        "preview": "",
        **{f"review_{video}": "" for video in videos},
        "review_flags": "",
        "job_message": "",
    }


def frame_indices(num_frames: int, stride: int, extra: Sequence[int] = ()) -> list[int]:
    """Every ``stride``-th frame from 0, plus ``extra``, sorted and within range."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    return sorted({*range(0, num_frames, stride), *(i for i in extra if 0 <= i < num_frames)})


def extract_frames(
    video: str | Path,
    out_dir: Path,
    indices: Sequence[int] | None = None,
    *,
    stride: int = 30,
    ext: str = ".jpg",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Path], list[int]]:
    """Write the chosen frames of ``video`` as ``<out_dir>/frame_XXXXXX<ext>``; return paths, indices."""

    out_dir.mkdir(parents=True, exist_ok=True)
    with open_frames(video, cache_frames=4) as source:
        chosen = list(indices) if indices is not None else frame_indices(source.num_frames, stride)
        bad = [i for i in chosen if not 0 <= i < source.num_frames]
        if bad:
            raise VideoError(f"frame {bad[0]} is not in {video} ({source.num_frames} frames)")
        paths = []
        for n, i in enumerate(chosen):
            path = out_dir / f"frame_{i:06d}{ext}"
            if not path.exists():
                tmp = path.with_name(f".{path.name}.part{ext}")
                Image.fromarray(source.read(i)).save(tmp, quality=95) if ext == ".jpg" else Image.fromarray(
                    source.read(i)
                ).save(tmp)
                tmp.replace(path)
            paths.append(path)
            if progress:
                progress(n + 1, len(chosen))
    return paths, chosen


def pair_task(
    video1: str | Path,
    video2: str | Path,
    root: Path,
    name: str,
    *,
    stride: int = 30,
    progress: Callable[[int, int], None] | None = None,
    source_sha256: str = "",
) -> dict[str, Any]:
    """Task data for a SceneDiff pair; videos are copied under ``<root>/pairs/<name>/``.
    ``source_sha256`` (:func:`pair_sha256`, computed when not given) identifies the pair's videos."""
    base = Path(root) / "pairs" / name
    data: dict[str, Any] = {"pair": name}
    if not source_sha256 and Path(video1).is_file() and Path(video2).is_file():
        source_sha256 = pair_sha256(video1, video2)
    if source_sha256:
        data["source_sha256"] = source_sha256
    for k, video in ((1, Path(video1)), (2, Path(video2))):
        target = base / f"video{k}{video.suffix}" if video.is_file() else Path(video)
        if video.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, target)
        paths, indices = extract_frames(target, base / f"frames{k}", stride=stride, progress=progress)
        data[f"frames{k}"] = [local_url(root, p) for p in paths]
        data[f"video{k}"] = local_url(root, target)
        data[f"frame_indices{k}"] = indices
    return {**review_fields(["video1", "video2"]), **data}


def _part_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.name)
    return int(numbers[-1]) if numbers else -1


def segment_folders(parent: Path) -> list[Path]:
    """``video_part_XXX`` folders of frames under ``parent``, in numeric order."""
    folders = sorted(
        (p for p in Path(parent).iterdir() if p.is_dir() and p.name.startswith("video_part_")), key=_part_number
    )
    if not folders:
        raise VideoError(f"no video_part_XXX folders in {parent}")
    return folders


def split_video(
    video: str | Path, out_dir: Path, seconds: float, *, progress: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Cut ``video`` into segments of ``seconds`` that share one boundary frame.

    Segment ``k`` holds frames ``[k·L, (k+1)·L]`` (L = seconds × fps), so its last frame is the
    next segment's first. Each segment is a ``video_part_XXX`` folder of PNG frames (lossless, and
    read by the same decoder), numbered from 000 like ``segment_index``; ``progress(done, total)``
    counts segments.
    """

    with open_frames(video, cache_frames=4) as source:
        length = max(1, int(round(seconds * source.fps)))
        n = source.num_frames
        starts = list(range(0, max(1, n - 1), length))
        folders = []
        for k, start in enumerate(starts):
            end = min(start + length, n - 1)
            folder = out_dir / f"video_part_{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start, end + 1):
                path = folder / f"{i - start:06d}.png"
                if not path.exists():
                    Image.fromarray(source.read(i)).save(path)
            folders.append(folder)
            if progress:
                progress(k + 1, len(starts))
    return folders


def segment_tasks(
    folders: Sequence[Path],
    root: Path,
    *,
    later_frames: int = 2,
    start_frame: int = 0,
    take: str = "",
    fps: float = 0.0,
    source_sha256: str = "",
) -> list[dict[str, Any]]:
    """Task data for green-screen segments (folders of frames, in order) of one take.

    Each task shows the segment's first frame and ``later_frames`` more, evenly spaced, for drift
    fixes. ``segment_frames`` lists every segment's length so the worker derives frame offsets;
    ``take`` names the source video (the export folder), ``fps`` its frame rate (0 = unknown).
    """
    counts = [ImageFolderFrames(f, cache_frames=2).num_frames for f in folders]
    tasks = []
    first = start_frame
    for k, folder in enumerate(folders):
        n = counts[k]
        picks = sorted({0, *(round(j * (n - 1) / (later_frames + 1)) for j in range(1, later_frames + 1))})
        source = ImageFolderFrames(folder, cache_frames=2)
        tasks.append(
            {
                **review_fields(["video"]),
                "take": take,
                "frames": [local_url(root, source.files[i]) for i in picks],
                "frame_indices": picks,
                "video": local_url(root, folder),
                "segment_index": k,
                "segment_frames": counts,
                "start_frame": start_frame,
                "first_frame": first,
                "last_frame": first + n - 1,
                "fps": fps,
                **({"source_sha256": source_sha256} if source_sha256 else {}),
            }
        )
        first += n - 1
    return tasks
