"""Synthetic videos with known ground truth, for tests, benchmarks and the demo project.

A scene is a textured background with coloured shapes moving on straight lines. Every object's
mask on every frame is known exactly, so exports can be compared pixel for pixel.

:func:`scene_pair` makes the SceneDiff case: video 2 is the same scene after a change — one
object removed, one added, one moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Shape:
    """A shape: ``kind`` (``rect`` | ``disc``), colour RGB, size in px, start and end centre (x, y)."""

    name: str
    kind: str
    color: tuple[int, int, int]
    size: int
    start: tuple[float, float]
    end: tuple[float, float]

    def mask(self, t: float, height: int, width: int) -> np.ndarray:
        cx = self.start[0] + (self.end[0] - self.start[0]) * t
        cy = self.start[1] + (self.end[1] - self.start[1]) * t
        yy, xx = np.mgrid[:height, :width]
        if self.kind == "disc":
            return (xx - cx) ** 2 + (yy - cy) ** 2 <= (self.size / 2) ** 2
        half = self.size / 2
        return (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)

    def center(self, t: float) -> tuple[float, float]:
        return (
            self.start[0] + (self.end[0] - self.start[0]) * t,
            self.start[1] + (self.end[1] - self.start[1]) * t,
        )


@dataclass
class SyntheticVideo:
    """Frames (``N×H×W×3`` uint8 RGB) and ground-truth masks per object name (``N×H×W`` bool)."""

    frames: np.ndarray
    masks: dict[str, np.ndarray]
    shapes: dict[str, Shape]

    def write(self, path: str | Path, fps: float = 10.0) -> Path:
        """Write as a video (``.mkv`` = lossless FFV1; ``.mp4``; ``.webm`` = VP9) or a folder of PNGs."""
        import cv2

        path = Path(path)
        if path.suffix == "":
            path.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(self.frames):
                Image.fromarray(frame).save(path / f"{i:05d}.png")
            return path
        fourcc = {".mkv": "FFV1", ".mp4": "mp4v", ".webm": "VP90", ".avi": "MJPG"}[path.suffix]
        height, width = self.frames.shape[1:3]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {path}")
        for frame in self.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return path


def render(shapes: list[Shape], num_frames: int, height: int, width: int, seed: int = 0) -> SyntheticVideo:
    """Render ``shapes`` over ``num_frames`` frames; later shapes are drawn over earlier ones and
    the ground-truth masks account for that occlusion."""
    rng = np.random.default_rng(seed)
    base = rng.integers(70, 130, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = np.kron(base, np.ones((8, 8, 1), np.uint8))[:height, :width]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    masks = {s.name: np.zeros((num_frames, height, width), bool) for s in shapes}
    for i in range(num_frames):
        t = i / max(1, num_frames - 1)
        frame = background.copy()
        drawn = []
        for shape in shapes:
            m = shape.mask(t, height, width)
            frame[m] = shape.color
            for other in drawn:
                masks[other][i] &= ~m
            masks[shape.name][i] = m
            drawn.append(shape.name)
        frames[i] = frame
    return SyntheticVideo(frames, masks, {s.name: s for s in shapes})


def moving_shapes(num_frames: int = 12, height: int = 96, width: int = 128, seed: int = 0) -> SyntheticVideo:
    """Two shapes crossing the frame: a red square and a blue disc."""
    return render(
        [
            Shape(
                "square", "rect", (220, 40, 40), height // 4, (width * 0.2, height * 0.3), (width * 0.7, height * 0.4)
            ),
            Shape(
                "disc", "disc", (40, 60, 220), height // 4, (width * 0.8, height * 0.75), (width * 0.3, height * 0.7)
            ),
        ],
        num_frames,
        height,
        width,
        seed,
    )


def scene_pair(
    num_frames: tuple[int, int] = (12, 10), size1: tuple[int, int] = (96, 128), size2: tuple[int, int] | None = None
) -> tuple[SyntheticVideo, SyntheticVideo]:
    """A before/after pair: ``mug`` is removed, ``box`` is added, ``ball`` moves; a static ``lamp``.

    Video 2 may have another length and resolution (``size2`` as ``(height, width)``).
    """
    h1, w1 = size1
    h2, w2 = size2 or size1

    def shapes(h: int, w: int, after: bool) -> list[Shape]:
        s = h // 4
        out = [Shape("lamp", "rect", (230, 230, 60), s, (w * 0.15, h * 0.2), (w * 0.15, h * 0.2))]
        if not after:
            out.append(Shape("mug", "disc", (220, 40, 40), s, (w * 0.5, h * 0.3), (w * 0.5, h * 0.3)))
            out.append(Shape("ball", "disc", (40, 60, 220), s, (w * 0.3, h * 0.75), (w * 0.35, h * 0.75)))
        else:
            out.append(Shape("box", "rect", (40, 200, 60), s, (w * 0.75, h * 0.3), (w * 0.75, h * 0.3)))
            out.append(Shape("ball", "disc", (40, 60, 220), s, (w * 0.7, h * 0.7), (w * 0.75, h * 0.7)))
        return out

    # the camera pans a little: shapes drift slowly
    v1 = render(shapes(h1, w1, False), num_frames[0], h1, w1, seed=1)
    v2 = render(shapes(h2, w2, True), num_frames[1], h2, w2, seed=2)
    return v1, v2
