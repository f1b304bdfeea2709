"""The prompt file: everything a propagation job needs besides the videos, as JSON.

    {
      "format": "scenediff",                      # or "greenscreen"
      "scene_type": "kitchen",                    # SceneDiff only
      "comments": {},                             # free-form, copied into the exports
      "videos": {"video1": "a.mp4", "video2": "b.mp4"},   # optional; CLI flags win
      "objects": [
        {"id": 1, "name": "mug", "number": 1,
         "in_video1": true, "in_video2": false, "deformability": "rigid",
         "prompts": [
           {"video": "video1", "frame": 12, "points": [[320.5, 240], [400, 250]], "labels": [1, 0]}
         ]}
      ],
      "greenscreen": {"segment_index": 0, "segment_frames": [301, 301, 120],
                      "start_frame": 0, "background": [0, 255, 0]}
    }

Coordinates are **pixels of the original video frame** (x right, y down, origin top-left);
``frame`` is the **0-based** index in decode order. ``labels``: 1 positive, 0 negative. A prompt
may give ``"mask_rle"`` (COCO RLE ``{"size": [h, w], "counts": str}``) instead of points.
Object ids are positive integers, unique in the file; they become ``original_obj_idx`` in
``segments.pkl``. ``in_video1``/``in_video2`` default to "has prompts in that video".
For green-screen, ``segment_frames`` lists the frame count of every segment in order;
the frame offset of a segment is derived from it (see :mod:`ml_backend.exports`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import PromptError
from .propagation import FramePrompt

VIDEO_KEYS = ("video1", "video2")


@dataclass
class ObjectSpec:
    id: int
    name: str
    number: int = 1
    in_video: dict[str, bool] = field(default_factory=dict)
    deformability: str = "rigid"
    prompts: dict[str, list[FramePrompt]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}_{self.number}"


@dataclass
class GreenScreenSpec:
    segment_index: int = 0
    segment_frames: list[int] = field(default_factory=list)
    start_frame: int = 0
    background: tuple[int, int, int] = (0, 255, 0)


@dataclass
class PromptSpec:
    format: str
    objects: list[ObjectSpec]
    scene_type: str = ""
    comments: dict[str, Any] = field(default_factory=dict)
    videos: dict[str, str] = field(default_factory=dict)
    greenscreen: GreenScreenSpec | None = None

    def objects_in(self, video: str) -> dict[int, list[FramePrompt]]:
        """``{object id: prompts}`` for the objects present in ``video``."""
        return {o.id: o.prompts.get(video, []) for o in self.objects if o.in_video.get(video)}


def _merge_same_frame(prompts: list[FramePrompt]) -> list[FramePrompt]:
    by_frame: dict[int, FramePrompt] = {}
    for p in prompts:
        if p.frame in by_frame and p.mask is None and by_frame[p.frame].mask is None:
            q = by_frame[p.frame]
            by_frame[p.frame] = FramePrompt(
                p.frame, np.concatenate([q.points, p.points]), np.concatenate([q.labels, p.labels])
            )
        elif p.frame in by_frame and p.mask is not None:
            by_frame[p.frame] = p  # a mask on a frame replaces points there
        elif p.frame not in by_frame:
            by_frame[p.frame] = p
    return [by_frame[f] for f in sorted(by_frame)]


def _prompt(raw: Any, where: str) -> tuple[str, FramePrompt]:
    if not isinstance(raw, dict):
        raise PromptError(f"{where} must be an object")
    video = raw.get("video", "video1")
    if video not in VIDEO_KEYS:
        raise PromptError(f"{where}.video must be 'video1' or 'video2', got {video!r}")
    frame = raw.get("frame")
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise PromptError(f"{where}.frame must be a 0-based frame index, got {frame!r}")
    if raw.get("mask_rle") is not None:
        from pycocotools import mask as mask_utils

        rle = dict(raw["mask_rle"])
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
        try:
            mask = mask_utils.decode(rle).astype(bool)
        except Exception as exc:
            raise PromptError(f"{where}.mask_rle is not a COCO RLE: {exc}") from None
        return video, FramePrompt(frame, mask=mask)
    try:
        points = np.asarray(raw.get("points"), dtype=np.float32).reshape(-1, 2)
        labels = np.asarray(raw.get("labels"), dtype=np.int32).reshape(-1)
    except (TypeError, ValueError):
        raise PromptError(f"{where} needs 'points' [[x, y], ...] and 'labels' [1|0, ...]") from None
    if len(points) == 0 or len(points) != len(labels) or not set(labels.tolist()) <= {0, 1}:
        raise PromptError(f"{where} needs as many labels (1 or 0) as points, and at least one point")
    return video, FramePrompt(frame, points, labels)


def parse_prompts(data: Any) -> PromptSpec:
    """Validate a prompt document (already loaded from JSON)."""
    if not isinstance(data, dict):
        raise PromptError("the prompt file must hold a JSON object")
    fmt = data.get("format", "scenediff")
    if fmt not in ("scenediff", "greenscreen"):
        raise PromptError(f"format must be 'scenediff' or 'greenscreen', got {fmt!r}")
    raw_objects = data.get("objects")
    if not isinstance(raw_objects, list) or not raw_objects:
        raise PromptError("'objects' must be a non-empty list")
    objects: list[ObjectSpec] = []
    seen: set[int] = set()
    for i, raw in enumerate(raw_objects):
        where = f"objects[{i}]"
        if not isinstance(raw, dict):
            raise PromptError(f"{where} must be an object")
        obj_id = raw.get("id", i + 1)
        if not isinstance(obj_id, int) or isinstance(obj_id, bool) or obj_id < 0 or obj_id in seen:
            raise PromptError(f"{where}.id must be a unique non-negative integer, got {obj_id!r}")
        seen.add(obj_id)
        prompts: dict[str, list[FramePrompt]] = {}
        for j, rp in enumerate(raw.get("prompts") or []):
            video, prompt = _prompt(rp, f"{where}.prompts[{j}]")
            prompts.setdefault(video, []).append(prompt)
        prompts = {v: _merge_same_frame(ps) for v, ps in prompts.items()}
        in_video = {}
        for v in VIDEO_KEYS:
            flag = raw.get(f"in_{v}")
            in_video[v] = bool(prompts.get(v)) if flag is None else bool(flag)
        if not any(in_video.values()):
            raise PromptError(
                f"object {obj_id} ({raw.get('name', '?')}) has no prompts: click at least one point on it"
            )
        deform = raw.get("deformability", "rigid")
        if deform not in ("rigid", "deformable"):
            raise PromptError(f"{where}.deformability must be 'rigid' or 'deformable', got {deform!r}")
        number = raw.get("number", 1)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise PromptError(f"{where}.number must be a non-negative integer (multiplicity index)")
        objects.append(
            ObjectSpec(
                id=obj_id,
                name=str(raw.get("name") or f"object{obj_id}"),
                number=number,
                in_video=in_video,
                deformability=deform,
                prompts=prompts,
            )
        )
    gs = None
    if fmt == "greenscreen":
        raw_gs = data.get("greenscreen") or {}
        frames = raw_gs.get("segment_frames") or []
        index = raw_gs.get("segment_index", 0)
        if frames and (not all(isinstance(n, int) and n > 0 for n in frames) or not 0 <= index < len(frames)):
            raise PromptError("greenscreen.segment_frames must list positive frame counts and include segment_index")
        background = tuple(raw_gs.get("background") or (0, 255, 0))
        if len(background) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in background):
            raise PromptError("greenscreen.background must be [R, G, B] in 0..255")
        gs = GreenScreenSpec(index, list(frames), int(raw_gs.get("start_frame", 0)), background)  # type: ignore[arg-type]
    videos = data.get("videos") or {}
    if not isinstance(videos, dict):
        raise PromptError("'videos' must map video1/video2 to paths")
    comments = data.get("comments") or {}
    return PromptSpec(
        format=fmt,
        objects=objects,
        scene_type=str(data.get("scene_type") or ""),
        comments=comments if isinstance(comments, dict) else {"text": str(comments)},
        videos={k: str(v) for k, v in videos.items()},
        greenscreen=gs,
    )


def load_prompts(path: str | Path) -> PromptSpec:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PromptError(f"prompt file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise PromptError(f"prompt file {path} is not valid JSON: {exc}") from None
    return parse_prompts(data)
