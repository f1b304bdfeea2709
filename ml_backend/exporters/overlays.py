"""Review outputs: an overlay video per input video and a contact sheet per object.

Rendered while the video propagates, on the job's export thread: each frame is scaled to the
review size (at most ``max_height`` pixels high) and the masks are blended in at that size. The
frame is then stored (JPEG, quality 95) in the job's private staging area, because frames arrive
in propagation order (forward from the first prompt, then backward). When the job finishes, the
frames are encoded in order into a VP9 WebM (browsers play it; ffmpeg's realtime VP9 when ffmpeg
is installed, else OpenCV's). Memory stays flat; the temporary store takes about 100 KB per
frame on disk.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.exporters.interface import Exporter, ExportJob
from ml_backend.exporters.masks import resize_nearest
from ml_backend.exporters.staging import atomic_write_bytes

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


class _FrameStore:
    """JPEG frames (quality 95) by index in one private file, written by one thread and read
    after. The review video is VP9 at CRF 40, far lossier than this intermediate step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self.index: dict[int, tuple[int, int]] = {}

    def put(self, i: int, rgb: np.ndarray) -> None:
        import cv2

        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        self._file.seek(0, 2)
        self.index[i] = (self._file.tell(), len(jpeg))
        self._file.write(jpeg.tobytes())

    def get(self, i: int) -> np.ndarray:
        import cv2

        offset, size = self.index[i]
        self._file.seek(offset)
        data = np.frombuffer(self._file.read(size), np.uint8)
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class _VideoReview:
    """One video's review: the scaled overlay frames, and thumbnails of the sampled frames."""

    def __init__(self, source: Any, label: str, store: Path, max_height: int, samples: int) -> None:
        n = source.num_frames
        self.label, self.num_frames, self.fps = label, n, source.fps
        self.size = _scaled(source.width, source.height, max_height)
        self.samples = sorted({int(round(i * (n - 1) / max(1, samples - 1))) for i in range(min(samples, n))})
        thumb_h = min(160, self.size[1])
        self.thumb_size = (max(2, int(round(self.size[0] * thumb_h / self.size[1]))), thumb_h)
        self.thumbs: dict[int, dict[int, np.ndarray]] = {}  # frame -> object -> thumbnail
        self.frames = _FrameStore(store)

    def add(self, i: int, frame: np.ndarray, masks: dict[int, np.ndarray]) -> None:
        import cv2

        small = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        small_masks = {
            obj_id: resize_nearest(mask, self.size[1], self.size[0]) for obj_id, mask in masks.items() if mask.any()
        }
        self.frames.put(i, overlay(small, small_masks))
        if i in self.samples:
            self.thumbs[i] = {}
            for obj_id in masks:
                one = overlay(small, {obj_id: small_masks[obj_id]} if obj_id in small_masks else {})
                thumb = cv2.resize(one, self.thumb_size, interpolation=cv2.INTER_AREA)
                cv2.putText(thumb, f"#{i}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
                self.thumbs[i][obj_id] = thumb

    def write(self, out_dir: Path, objects: list[int]) -> None:
        """``<label>_overlay.webm`` (every frame, in order) and ``<label>_obj<id>_contact.png``."""
        import cv2

        out_dir.mkdir(parents=True, exist_ok=True)
        video_path = out_dir / f"{self.label}_overlay.webm"
        tmp_video = out_dir / f".{self.label}_overlay.part.webm"
        writer = _WebmWriter(tmp_video, *self.size, self.fps)
        try:
            for i in range(self.num_frames):
                writer.write(self.frames.get(i))
        finally:
            writer.close()
        tmp_video.replace(video_path)
        for obj_id in objects:
            row = [self.thumbs[i][obj_id] for i in self.samples if obj_id in self.thumbs.get(i, {})]
            if row:
                ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(row, axis=1), cv2.COLOR_RGB2BGR))
                atomic_write_bytes(out_dir / f"{self.label}_obj{obj_id}_contact.png", png.tobytes())


class ReviewExport(Exporter):
    """``review/<video>_overlay.webm`` and ``review/<video>_obj<id>_contact.png`` per video (see
    the module docstring)."""

    name = "review"
    per_frame = True
    needs_frames = True

    def __init__(self, job: ExportJob, *, max_height: int = 480, samples: int = 8) -> None:
        super().__init__(job)
        self.max_height, self.samples = max_height, samples
        self.videos: dict[str, _VideoReview] = {}

    def start_video(self, video: str, source: Any) -> None:
        store = self.job.staging.private(f"review-{video}.frames")
        self.videos[video] = _VideoReview(source, self.job.video_label(video), store, self.max_height, self.samples)

    def add(
        self,
        video: str,
        frame_idx: int,
        masks: dict[int, np.ndarray],
        frame: np.ndarray | None,
        scores: Any = None,
    ) -> None:
        self.videos[video].add(frame_idx, frame, masks)

    def finish(self, masks: Mapping[str, Any]) -> None:
        try:
            for video, review in self.videos.items():
                review.write(self.job.staging.path("review"), list(masks[video]))
        finally:
            self.abort()

    def abort(self) -> None:
        for review in self.videos.values():
            review.frames.close()
