"""The masks a measurement's model yields: SAM 2's own (noise with random weights), or the
synthetic video's shapes (realistic).

With random weights SAM 2's masks are noise: hundreds of KB of COCO RLE per 1080p mask, against
a few KB for a real object, so export and RLE costs would be those of a worst case only. In
**realistic** mode (``--masks realistic``) SAM 2 still computes every frame as usual, but the
masks it yields are replaced by the ground truth that :mod:`bench.video` draws (each object's
moving shape, as ``N×1×H×W`` logits: +1 inside, -1 outside). The pipeline-alone stand-in
(:class:`bench.pipeline_alone.StandInPredictor`) yields the same shapes, or noise.

:class:`ShapeLogits` keeps one buffer per model and only redraws each object's previous and new
bounding box per frame (on CUDA, only those boxes are copied to the device), so drawing costs
next to nothing in both the job and model-only runs it is compared between.
"""

from __future__ import annotations

from typing import Any

from bench.video import HEIGHT, WIDTH, shape_tracks, track_center

#: The mask modes a measurement can run with.
MODES = ("realistic", "noise")


class ShapeLogits:
    """Frame ``i``'s ground-truth logits of the first ``objects`` shapes, ``N×1×H×W`` float32.

    The returned tensor is the same buffer every call (callers threshold it before asking for the
    next frame, as SAM 2's callers do with its fresh tensors)."""

    def __init__(self, objects: int, device: Any = "cpu", height: int = HEIGHT, width: int = WIDTH) -> None:
        import numpy as np
        import torch

        self.tracks = shape_tracks(objects)
        self.height, self.width = height, width
        self.host = np.full((objects, 1, height, width), -1.0, np.float32)
        self.device = torch.device(device)
        self.tensor = torch.from_numpy(self.host)
        if self.device.type != "cpu":
            self.tensor = self.tensor.to(self.device)
        self.boxes: list[tuple[int, int, int, int] | None] = [None] * objects

    def __call__(self, frame_idx: int, count: int | None = None) -> Any:
        import cv2

        n = len(self.tracks) if count is None else count
        for k, track in enumerate(self.tracks[:n]):
            plane = self.host[k, 0]
            old = self.boxes[k]
            if old is not None:
                plane[old[0] : old[1], old[2] : old[3]] = -1.0
            cx, cy = track_center(track, frame_idx)
            r = track["r"]
            if track["kind"] == "disc":
                cv2.circle(plane, (round(cx), round(cy)), r, 1.0, -1)
            else:
                cv2.rectangle(plane, (round(cx - r), round(cy - r)), (round(cx + r), round(cy + r)), 1.0, -1)
            new = (
                max(0, round(cy) - r - 1),
                min(self.height, round(cy) + r + 2),
                max(0, round(cx) - r - 1),
                min(self.width, round(cx) + r + 2),
            )
            self.boxes[k] = new
            if self.device.type != "cpu":
                for box in (old, new):
                    if box is not None:
                        t, b, left, right = box
                        self.tensor[k, 0, t:b, left:right].copy_(
                            self.tensor.new_tensor(plane[t:b, left:right]), non_blocking=False
                        )
        return self.tensor[:n]


class NoiseLogits:
    """Blobby noise like SAM 2's masks with random weights (low-resolution random logits
    upsampled bilinearly): a few frames made once, then cycled."""

    def __init__(self, objects: int, device: Any = "cpu", height: int = HEIGHT, width: int = WIDTH, kinds: int = 4):
        import torch

        gen = torch.Generator().manual_seed(0)
        low = torch.randn(kinds, objects, 1, height // 8, width // 8, generator=gen)
        self.frames = [
            torch.nn.functional.interpolate(low[i], size=(height, width), mode="bilinear").to(device)
            for i in range(kinds)
        ]

    def __call__(self, frame_idx: int, count: int | None = None) -> Any:
        frame = self.frames[frame_idx % len(self.frames)]
        return frame if count is None else frame[:count]


class RealisticPredictor:
    """SAM 2's predictor, unchanged, except that the masks ``propagate_in_video`` yields are
    the synthetic video's shapes (:class:`ShapeLogits`). Everything else is delegated."""

    def __init__(self, predictor: Any, objects: int) -> None:
        self._predictor = predictor
        self._shapes = ShapeLogits(objects, predictor.device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def propagate_in_video(self, state: Any, *args: Any, **kwargs: Any):
        for frame_idx, obj_ids, _masks in self._predictor.propagate_in_video(state, *args, **kwargs):
            yield frame_idx, obj_ids, self._shapes(frame_idx, len(obj_ids))


def with_masks(predictor: Any, mode: str, objects: int) -> Any:
    """``predictor`` yielding ``mode`` masks: ``noise`` (SAM 2's own) or ``realistic``."""
    if mode not in MODES:
        raise ValueError(f"masks must be one of {MODES}, not {mode!r}")
    return RealisticPredictor(predictor, objects) if mode == "realistic" else predictor
