"""Review outputs: an overlay video per input video and a contact sheet per object.

Both are made after propagation from the stored RLE masks and one more sequential decode of
the video, so they cost no memory during tracking and frames arrive in order. The overlay video
is VP9 WebM (browsers play it; ffmpeg's realtime VP9 when ffmpeg is installed, else OpenCV's),
scaled to at most ``max_height`` pixels high.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .exporter import Exporter, ExportJob
from .exports import atomic_write_bytes, rle_decode

PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip


def color(obj_id: int) -> tuple[int, int, int]:
    return PALETTE[obj_id % len(PALETTE)]


def overlay(frame: np.ndarray, masks: dict[int, np.ndarray], alpha: float = 0.5) -> np.ndarray:
    out = frame.astype(np.float32)
    for obj_id, mask in masks.items():
        out[mask] = out[mask] * (1 - alpha) + np.array(color(obj_id), np.float32) * alpha
    return out.astype(np.uint8)


def _scaled(width: int, height: int, max_height: int) -> tuple[int, int]:
    if height <= max_height:
        return width - width % 2, height - height % 2
    w = int(round(width * max_height / height))
    return w - w % 2, max_height


class _WebmWriter:
    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        import cv2

        self.path = path
        self.size = (width, height)
        self.proc = None
        self.cv = None
        if shutil.which("ffmpeg"):
            self.proc = subprocess.Popen(
                ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                 "-r", f"{fps:g}", "-i", "-", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                 "-b:v", "0", "-crf", "40", "-row-mt", "1", "-f", "webm", str(path)],
                stdin=subprocess.PIPE,
            )  # fmt: skip
        else:
            self.cv = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP90"), fps, (width, height))

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        else:
            self.cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            if self.proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed writing {self.path}")
        else:
            self.cv.release()


def write_review(
    source: Any,
    masks: dict[int, dict[str, dict[str, Any]]],
    out_dir: Path,
    name: str,
    *,
    max_height: int = 480,
    samples: int = 8,
) -> list[Path]:
    """Write ``<name>_overlay.webm`` and ``<name>_obj<id>_contact.png`` into ``out_dir``.

    ``source`` is a :class:`~ml_backend.frames.FrameSource`; ``masks`` maps object id → frame
    index (str) → COCO RLE.
    """
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    n = source.num_frames
    width, height = _scaled(source.width, source.height, max_height)
    video_path = out_dir / f"{name}_overlay.webm"
    tmp_video = out_dir / f".{name}_overlay.part.webm"
    writer = _WebmWriter(tmp_video, width, height, source.fps)
    sample_idx = sorted({int(round(i * (n - 1) / max(1, samples - 1))) for i in range(min(samples, n))})
    thumbs: dict[int, list[np.ndarray]] = {obj_id: [] for obj_id in masks}
    thumb_h = min(160, height)
    thumb_w = max(2, int(round(width * thumb_h / height)))
    try:
        for i in range(n):
            frame = source.read(i)
            frame_masks = {obj_id: rle_decode(per[str(i)]) for obj_id, per in masks.items() if str(i) in per}
            shown = overlay(frame, frame_masks)
            writer.write(cv2.resize(shown, (width, height), interpolation=cv2.INTER_AREA))
            if i in sample_idx:
                for obj_id in masks:
                    one = overlay(frame, {obj_id: frame_masks[obj_id]} if obj_id in frame_masks else {})
                    thumb = cv2.resize(one, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA)
                    cv2.putText(thumb, f"#{i}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
                    thumbs[obj_id].append(thumb)
    finally:
        writer.close()
    tmp_video.replace(video_path)
    paths = [video_path]
    for obj_id, row in thumbs.items():
        if not row:
            continue
        sheet = np.concatenate(row, axis=1)
        ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        path = out_dir / f"{name}_obj{obj_id}_contact.png"
        atomic_write_bytes(path, png.tobytes())
        paths.append(path)
    return paths


class ReviewExport(Exporter):
    """``review/<video>_overlay.webm`` and ``review/<video>_obj<id>_contact.png`` per video,
    made at the end from the spool and one more sequential decode of each video."""

    name = "review"

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        self.paths: dict[str, Any] = {}

    def start_video(self, video: str, source: Any) -> None:
        self.paths[video] = source.path

    def finish(self, masks: Mapping[str, Any]) -> None:
        from .frames import open_frames

        for video, path in self.paths.items():
            with open_frames(path) as source:
                write_review(source, masks[video], self.job.staging.path("review"), self.job.video_label(video))
