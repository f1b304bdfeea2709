"""Preview images for the Data Manager's grid view: masks blended over frames, as PNG.

- :func:`tile`: one frame (``H×W×3`` uint8 RGB) with its masks (``{obj_id: H×W bool}``) blended
  in the review colours (:func:`ml_backend.exporters.overlays.overlay`), scaled to ``height`` pixels, with a
  caption in the corner;
- :func:`strip`: tiles side by side; :func:`stack`: strips one above the other (one per video);
- :func:`png`: the image as PNG bytes.

After a job, a task's preview is one strip per video: its first, middle and last frames plus the
worst flagged frame (:func:`job_preview`). Before a job, a green-screen segment's preview is its
first frame with the mask of the submitted clicks (:mod:`ml_backend.server.firstframe`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml_backend.exporters.masks import resize_nearest, rle_decode
from ml_backend.exporters.overlays import overlay
from ml_backend.video.frames import open_frames
from ml_backend.video.quality import segment_frame

#: Height of one tile, pixels.
TILE_HEIGHT = 160


def tile(
    frame: np.ndarray, masks: Mapping[int, np.ndarray], caption: str = "", height: int = TILE_HEIGHT
) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    size = (max(2, int(round(w * height / h))), height)
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    small_masks = {
        obj_id: resize_nearest(mask, size[1], size[0])
        for obj_id, mask in masks.items()
        if mask is not None and np.any(mask)
    }
    out = overlay(small, small_masks)
    if caption:
        cv2.putText(out, caption, (5, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, caption, (5, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def strip(tiles: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    parts: list[np.ndarray] = []
    for t in tiles:
        if parts:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
        parts.append(np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


def stack(rows: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    parts: list[np.ndarray] = []
    for r in rows:
        if parts:
            parts.append(np.full((gap, width, 3), 255, np.uint8))
        parts.append(np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=0)


def png(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def preview_frames(num_frames: int, worst: int | None, first_frame: int = 0) -> list[tuple[int, str]]:
    """``(frame, caption)`` of a video's strip: first, middle, last, then the worst flagged frame.
    ``frame`` indexes the video; the caption shows ``first_frame + frame`` (the original number)."""
    picks = [(0, "first"), ((num_frames - 1) // 2, "middle"), (num_frames - 1, "last")]
    seen: set[int] = set()
    out = []
    for frame, what in picks:
        if frame not in seen:
            seen.add(frame)
            out.append((frame, f"{what} #{first_frame + frame}"))
    if worst is not None:
        out.append((worst, f"flagged #{first_frame + worst}"))
    return out


def job_preview(
    videos: Mapping[str, Any],
    masks: Mapping[str, Any],
    ranges: list[dict[str, Any]],
    first_frames: Mapping[str, int] | None = None,
) -> bytes:
    """The preview of a finished job as PNG: one strip per video (``videos``: ``{video: path}``;
    ``masks[video][obj_id][str(frame)]``: COCO RLE; ``ranges``: ranked flagged ranges, as in
    ``quality.json``). ``first_frames[video]``: the original frame number of the video's frame 0
    (a green-screen segment), so captions show original numbers."""

    rows = []
    for video, path in videos.items():
        worst = next((segment_frame(r) for r in ranges if r["video"] == video), None)
        first = (first_frames or {}).get(video, 0)
        with open_frames(path, cache_frames=2) as source:
            tiles = []
            for frame, caption in preview_frames(source.num_frames, worst, first):
                frame_masks = {
                    obj_id: rle_decode(per_frame[str(frame)])
                    for obj_id, per_frame in masks.get(video, {}).items()
                    if str(frame) in per_frame
                }
                tiles.append(tile(source.read(frame), frame_masks, caption))
        rows.append(strip(tiles))
    return png(stack(rows))
