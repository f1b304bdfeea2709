"""Frames of a video, decoded on demand: never a whole-video array.

:func:`open_frames` opens a video file (anything OpenCV/FFmpeg reads: mp4, webm, mkv, avi) or a
folder of images (``video_part_XXX`` of ``*.jpg``/``*.png``, ordered by the number in the name).
``source.read(i)`` returns frame ``i`` (**0-based**, in decode order) as an ``H×W×3`` uint8 RGB
array. Reads are cached in a small LRU; sequential reads decode sequentially; a backward read
seeks to a chunk before it and decodes that chunk forward once, so a reverse pass costs about
one decode per frame too.

The importer that extracts annotation frames and the worker that propagates use this one
decoder, so frame index ``i`` means the same picture everywhere.

:class:`SamFrames` wraps a source as SAM 2's ``inference_state["images"]``: ``frames[i]`` is the
``3×S×S`` float32 tensor SAM 2 would have built itself (PIL bicubic resize, /255, ImageNet
mean/std), computed when asked for, with prefetch threads running ahead in the direction of
travel.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ml_backend.exceptions import VideoError
from ml_backend.video.resize import exact_resize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


class FrameSource:
    """Random access to frames. Subclasses implement ``_decode(i)`` and set the size fields."""

    num_frames: int
    height: int
    width: int
    fps: float

    def __init__(self, cache_frames: int = 32) -> None:
        self.cache_frames = max(2, cache_frames)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self.decoded = 0

    def __len__(self) -> int:
        return self.num_frames

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as ``H×W×3`` uint8 RGB."""
        if not 0 <= index < self.num_frames:
            raise VideoError(
                f"frame {index} is out of range: the video has {self.num_frames} frames (0–{self.num_frames - 1})"
            )
        with self._lock:
            frame = self._cache.get(index)
            if frame is not None:
                self._cache.move_to_end(index)
                return frame
            for i, decoded in self._decode(index):
                self._remember(i, decoded)
            return self._cache[index]

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        self.decoded += 1
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def _decode(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class VideoFileFrames(FrameSource):
    """Frames of a video file, decoded with OpenCV."""

    def __init__(self, path: str | Path, cache_frames: int = 32, chunk: int = 16) -> None:
        import cv2

        super().__init__(cache_frames)
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"video {self.path} does not exist")
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise VideoError(f"video {self.path} cannot be opened (corrupt or unknown format)")
        self.num_frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 30.0)
        self.chunk = min(chunk, max(1, self.cache_frames // 2))
        self._next = 0  # index the capture will return on the next read()
        if self.num_frames <= 0 or self.width <= 0:
            raise VideoError(f"video {self.path} has no frames")
        ok, first = self._cap.read()
        if not ok:
            raise VideoError(f"video {self.path} has no decodable frame (corrupt?)")
        self._next = 1
        self._remember(0, self._cv2.cvtColor(first, self._cv2.COLOR_BGR2RGB))

    def _decode(self, index: int):
        if index < self._next - 1 or index > self._next + 2 * self.chunk:
            start = max(0, index - self.chunk + 1) if index < self._next else index
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, start)
            self._next = start
        while self._next <= index:
            ok, frame = self._cap.read()
            if not ok:
                raise VideoError(
                    f"video {self.path} ended at frame {self._next} but its header says {self.num_frames} frames"
                )
            yield self._next, self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)
            self._next += 1

    def close(self) -> None:
        super().close()
        self._cap.release()


def _frame_number(path: Path) -> tuple[int, str]:
    numbers = re.findall(r"\d+", path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


class ImageFolderFrames(FrameSource):
    """Frames stored as image files in one folder, ordered by the last number in each name."""

    def __init__(self, folder: str | Path, cache_frames: int = 32) -> None:
        super().__init__(cache_frames)
        self.path = Path(folder)
        if not self.path.is_dir():
            raise VideoError(f"frame folder {self.path} does not exist")
        self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_frame_number)
        self.num_frames = len(self.files)
        if not self.files:
            raise VideoError(f"frame folder {self.path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        first = self._load(0)
        self.height, self.width = first.shape[:2]
        self.fps = 30.0
        self._remember(0, first)

    def _load(self, index: int) -> np.ndarray:

        try:
            with Image.open(self.files[index]) as img:
                return np.array(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise VideoError(f"frame {self.files[index]} is not a readable image: {exc}") from None

    def _decode(self, index: int):
        frame = self._load(index)
        if frame.shape[:2] != (self.height, self.width):
            raise VideoError(
                f"frame {self.files[index]} is {frame.shape[1]}×{frame.shape[0]}, not {self.width}×{self.height}"
            )
        yield index, frame


def prefetch_workers(device: Any, requested: int = 0) -> int:
    """Threads preparing frames for a model on ``device``: ``requested`` if above 0; else 1 on the
    CPU (the model needs the other cores) and up to 8 for a GPU, which tracks a frame faster than
    one core resizes a 1080p frame to 1024² (~50 ms)."""

    if requested > 0:
        return requested
    if str(device).startswith("cuda"):
        return max(1, min(8, (os.cpu_count() or 2) - 1))
    return 1


def single_threaded_opencv() -> None:
    """One thread per OpenCV call in this process. The job's own threads (prefetch workers,
    export thread) already run OpenCV calls side by side; OpenCV's pool (one thread per core)
    inside each of them would oversubscribe the cores (8 workers × 16 threads on a 16-core GPU
    server). Decoding (FFmpeg's own threads) is not affected."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def open_frames(path: str | Path, cache_frames: int = 32) -> FrameSource:
    """A :class:`FrameSource` for a video file or a folder of frames."""
    path = Path(path)
    if path.is_dir():
        return ImageFolderFrames(path, cache_frames)
    return VideoFileFrames(path, cache_frames)


def _normalise_lut() -> np.ndarray:
    """``lut[c, v]``: the float32 value SAM 2's loader gives channel ``c`` of a uint8 pixel ``v``.

    The loader computes ``float32(v / 255)`` (in float64, then cast), then subtracts the mean and
    divides by the std in float32; per element, so a 256-entry table per channel is exact.
    """
    scaled = (np.arange(256) / 255.0).astype(np.float32)
    return (scaled[None, :] - _MEAN[:, None]) / _STD[:, None]


def resize_for_sam(frame: np.ndarray, image_size: int) -> np.ndarray:
    """``frame`` (``H×W×3`` uint8 RGB) resized to ``S×S×3`` uint8 as SAM 2's loader does (PIL,
    bicubic). PIL releases the GIL while resizing, so several threads resize in parallel."""

    return np.asarray(Image.fromarray(frame).resize((image_size, image_size)))


def normalise(resized: np.ndarray) -> Any:
    """``S×S×3`` uint8 → ``3×S×S`` float32 CPU tensor, bit-identical to SAM 2's loader.

    Each channel goes through its 256-entry table with OpenCV's ``LUT`` (one pass, written
    straight into the channel's plane; about 5× faster than ``np.take`` on 1024², GIL released)."""
    import cv2
    import torch

    out = np.empty((3, *resized.shape[:2]), np.float32)
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(resized))):
        cv2.LUT(plane, _LUT_ROWS[c], dst=out[c])
    return torch.from_numpy(out)


def normalise_on(resized: Any, lut: Any) -> Any:
    """Like :func:`normalise` for an ``S×S×3`` uint8 tensor, computed where ``lut`` (the ``3×256``
    table as a tensor) lives; a GPU gets 3 bytes a pixel instead of 12."""
    import torch

    x = resized.to(lut.device, non_blocking=True).permute(2, 0, 1).long()
    return torch.gather(lut, 1, x.reshape(3, -1)).reshape(x.shape)


def sam_input(frame: np.ndarray, image_size: int) -> Any:
    """One frame as SAM 2's video predictor prepares it: ``3×S×S`` float32, normalised.

    Bit-identical to ``sam2.utils.misc`` (PIL bicubic resize, ``/ 255`` in float64, cast to
    float32, then mean and std in float32), computed with a per-channel lookup table.
    """
    return normalise(resize_for_sam(frame, image_size))


def _is_cuda(device: Any) -> bool:
    return str(getattr(device, "type", device)).startswith("cuda")


_MEAN = np.array(IMG_MEAN, np.float32)
_STD = np.array(IMG_STD, np.float32)
_LUT = _normalise_lut()
_LUT_ROWS = [np.ascontiguousarray(_LUT[c].reshape(1, 256)) for c in range(3)]


class SamFrames:
    """``inference_state["images"]`` for SAM 2, computed lazily from a :class:`FrameSource`.

    ``frames[i]`` returns frame ``i``'s ``3×S×S`` float32 tensor. After each access the next
    ``prefetch`` frames in the current direction are prepared by ``workers`` background threads
    (decoding is sequential under the source's lock; resizing runs in parallel); at most
    ``2 × prefetch`` prepared frames are held.

    ``device``: where frames are normalised. ``None`` (CPU models) normalises in the workers;
    a CUDA device gets each frame as ``S×S×3`` uint8 and normalises it there, on the caller's
    thread, so the returned tensor already lives on that device. With ``resize_on_device`` (and
    a CUDA device), the workers only decode: the device gets the ``H×W×3`` frame and resizes it
    with Pillow's arithmetic (:func:`~ml_backend.video.resize.exact_resize`; where the installed
    Pillow's bytes cannot be reproduced, PIL resizes in the workers as before). All bit-identical.
    """

    def __init__(
        self,
        source: FrameSource,
        image_size: int,
        prefetch: int = 8,
        workers: int = 1,
        device: Any = None,
        resize_on_device: bool = False,
    ) -> None:
        self.source = source
        self.image_size = image_size
        self.workers = max(1, workers)
        # enough frames in flight to keep every worker busy
        self.prefetch = max(prefetch, 2 * self.workers) if prefetch > 0 else 0
        self.device = device
        self._lut = None
        if device is not None:
            import torch

            self._lut = torch.from_numpy(_LUT).to(device)  # uploaded once, not per frame
        self._resize = None
        if device is not None and resize_on_device:
            self._resize = exact_resize(source.height, source.width, image_size, device)
        self._pool = (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="frame-prefetch") if self.prefetch else None
        )
        if self._pool is not None:
            single_threaded_opencv()
        self._pending: OrderedDict[int, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._last = -1

    def __len__(self) -> int:
        return self.source.num_frames

    def _prepare(self, index: int) -> Any:
        import torch

        if self._resize is not None:  # the device resizes: hand over the decoded frame
            tensor = torch.from_numpy(self.source.read(index))
            return tensor.pin_memory() if _is_cuda(self.device) else tensor
        resized = resize_for_sam(self.source.read(index), self.image_size)
        if self.device is None:
            return normalise(resized)
        tensor = torch.from_numpy(np.array(resized))  # PIL's buffer is read-only
        if _is_cuda(self.device):
            # page-locked here, in the worker, so the model's thread uploads it without waiting
            tensor = tensor.pin_memory()
        return tensor

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(index)
        with self._lock:
            future = self._pending.pop(index, None)
            step = -1 if index < self._last else 1
            self._last = index
        prepared = future.result() if future is not None else self._prepare(index)
        self._schedule(index, step)
        if self._lut is None:
            return prepared
        if self._resize is not None:
            prepared = self._resize(prepared.to(self._lut.device, non_blocking=True))
        return normalise_on(prepared, self._lut)

    def _schedule(self, index: int, step: int) -> None:
        if self._pool is None:
            return
        with self._lock:
            for k in range(1, self.prefetch + 1):
                j = index + step * k
                if 0 <= j < len(self) and j not in self._pending:
                    self._pending[j] = self._pool.submit(self._prepare, j)
            while len(self._pending) > 2 * self.prefetch:
                _, old = self._pending.popitem(last=False)
                old.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
