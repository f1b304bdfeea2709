"""Green-screen export: ``frame_XXXXXX_masked.png`` per frame, and ``greenscreen.mp4``.

``frame_{offset + i:06d}_masked.png`` for frame
``i`` of the segment, the background colour everywhere outside the union of the object masks.
Consecutive segments share one boundary frame, so a segment exports all its frames but the last
(the last segment exports all). The offset is derived from the segment list, never remembered:
``offset(k) = start_frame + Σ_{j<k} (frames_j − 1)`` (:func:`greenscreen_offset`). Re-running a
segment rewrites exactly its own files. The folder is the take's own
(:func:`ml_backend.worker.jobs.job_out_dir`), and the mp4 plays at the take's frame rate
(:meth:`ml_backend.exporters.interface.ExportJob.fps_of`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.exceptions import PromptError
from ml_backend.exporters.interface import Exporter, ExportJob
from ml_backend.exporters.staging import FILE_MODE


def greenscreen_offset(segment_frames: list[int], index: int, start_frame: int = 0) -> tuple[int, int]:
    """``(offset, count)``: the first output number of segment ``index`` and how many frames it exports."""
    if not 0 <= index < len(segment_frames):
        raise ValueError(f"segment {index} is not in a list of {len(segment_frames)} segments")
    offset = start_frame + sum(n - 1 for n in segment_frames[:index])
    last = index == len(segment_frames) - 1
    count = segment_frames[index] if last else segment_frames[index] - 1
    return offset, count


def segment_plan(spec: Any, num_frames: int) -> tuple[list[int], int, int, int]:
    """``(segment_frames, index, offset, count)`` of a green-screen job whose segment video has
    ``num_frames`` frames; raises :class:`PromptError` when the segment list disagrees."""
    gs = spec.greenscreen
    frames_list = gs.segment_frames if gs and gs.segment_frames else [num_frames]
    index = gs.segment_index if gs and gs.segment_frames else 0
    if frames_list[index] != num_frames:
        raise PromptError(f"segment {index} has {num_frames} frames but the segment list says {frames_list[index]}")
    offset, count = greenscreen_offset(frames_list, index, gs.start_frame if gs else 0)
    return frames_list, index, offset, count


class GreenScreenExport(Exporter):
    """Writes ``frame_XXXXXX_masked.png`` for the segment's frames as they come (see the module
    docstring), and after publishing assembles ``greenscreen.mp4`` once every segment exists."""

    name = "greenscreen"
    per_frame = True
    needs_frames = True

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        gs = job.spec.greenscreen
        self.background = np.array(gs.background if gs else (0, 255, 0), np.uint8)
        self.out_dir = job.staging.dir
        self.plan: tuple[list[int], int, int, int] | None = None
        self.fps = 30.0  # frames per second of the mp4, known at start_video

    def start_video(self, video: str, source: Any) -> None:
        self.plan = segment_plan(self.job.spec, source.num_frames)
        self.fps = self.job.fps_of(source)

    def name_of(self, frame_idx: int) -> str:
        return f"frame_{self.plan[2] + frame_idx:06d}_masked.png"

    def add(
        self,
        video: str,
        frame_idx: int,
        masks: dict[int, np.ndarray],
        frame: np.ndarray | None,
        scores: Any = None,
    ) -> None:
        import cv2

        if frame_idx >= self.plan[3]:
            return  # the boundary frame belongs to the next segment
        keep = np.zeros(frame.shape[:2], bool)
        for mask in masks.values():
            keep |= mask
        out = np.empty_like(frame)
        out[:] = self.background
        out[keep] = frame[keep]
        ok, png = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        (self.out_dir / self.name_of(frame_idx)).write_bytes(png.tobytes())

    def published(self) -> list[Path]:
        if not self.job.greenscreen_mp4 or self.plan is None:
            return []
        start = self.job.spec.greenscreen.start_frame if self.job.spec.greenscreen else 0
        mp4 = assemble_greenscreen_mp4(self.job.staging.out_dir, self.plan[0], start, self.fps)
        return [mp4] if mp4 is not None else []


def video_frame_count(path: Path) -> int:
    """Frames in a video file as OpenCV reports them (0 when it cannot be read)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) if capture.isOpened() else 0
    finally:
        capture.release()


def assemble_greenscreen_mp4(
    out_dir: Path, segment_frames: list[int], start_frame: int = 0, fps: float = 30.0
) -> Path | None:
    """Encode ``greenscreen.mp4`` from the exported frames once every segment's files exist.

    Returns the mp4's path, or None when frames are still missing, ffmpeg is not installed, or
    the existing mp4 is longer than this segment list makes (a longer, complete video is never
    replaced by a shorter one; delete it to rebuild). Whichever segment finishes last assembles
    the video; two assemblies at once each write their own temporary file.
    """

    if not segment_frames or shutil.which("ffmpeg") is None:
        return None
    total = sum(n - 1 for n in segment_frames) + 1
    names = [Path(out_dir) / f"frame_{start_frame + i:06d}_masked.png" for i in range(total)]
    if not all(p.is_file() for p in names):
        return None
    target = Path(out_dir) / "greenscreen.mp4"
    existing = video_frame_count(target) if target.is_file() else 0
    if existing > total:
        logging.getLogger(__name__).warning(
            "kept %s: it has %d frames, the segment list gives only %d", target, existing, total
        )
        return None
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".greenscreen.", suffix=".part.mp4")
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        "ffmpeg", "-loglevel", "error", "-y", "-framerate", f"{fps:g}", "-start_number", str(start_frame),
        "-i", str(Path(out_dir) / "frame_%06d_masked.png"), "-frames:v", str(total),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-crf", "20", str(tmp),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
