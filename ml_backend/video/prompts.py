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
                      "start_frame": 0, "background": [0, 255, 0],
                      "take": "take1", "fps": 25},        # optional: source name and frame rate
      "exports": ["davis", "ytvis", "mots"]       # optional: formats beside the job's own
    }

Paths: a relative path in ``"videos"`` is relative to the prompt file's folder; ``--video1`` /
``--video2`` on the command line are relative to the current folder (and win over the file).
Both are made absolute before a job runs or is queued.

Coordinates are **pixels of the original video frame** (x right, y down, origin top-left);
``frame`` is the **0-based** index in decode order. ``labels``: 1 positive, 0 negative. A prompt
may give ``"mask_rle"`` (COCO RLE ``{"size": [h, w], "counts": str}``) instead of points.
Object ids are positive integers, unique in the file; they become ``original_obj_idx`` in
``segments.pkl``; ``number`` (the multiplicity index) is a positive integer too. Numbers must be
finite (no NaN or infinity). ``in_video1``/``in_video2`` default to "has prompts in that video".
For green-screen, ``segment_frames`` lists the frame count of every segment in order;
the frame offset of a segment is derived from it (see :mod:`ml_backend.exporters.staging`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ml_backend.exceptions import PromptError
from ml_backend.exporters.registry import REGISTRY
from ml_backend.video.propagation import FramePrompt

VIDEO_KEYS = ("video1", "video2")

#: How an object moves, in prompt files and in annotations (``obj<k>_deformability``).
DEFORMABILITIES = ("rigid", "deformable")

#: A take's name: it is a folder name in the local-files root and under ``RESULTS_DIR``.
TAKE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    """A green-screen segment: its 0-based ``segment_index`` into ``segment_frames`` (frame count
    of every segment of the take, in order), the number of the take's first exported frame
    (``start_frame``), the background colour, the ``take`` (name of the source video, which keys
    the export folder; "" for tasks imported before takes existed) and the source's frame rate
    (``fps``, frames per second; 0 = unknown)."""

    segment_index: int = 0
    segment_frames: list[int] = field(default_factory=list)
    start_frame: int = 0
    background: tuple[int, int, int] = (0, 255, 0)
    take: str = ""
    fps: float = 0.0

    def first_frame(self) -> int:
        """The original frame number of the segment's frame 0."""
        return self.start_frame + sum(n - 1 for n in self.segment_frames[: self.segment_index])


@dataclass
class PromptSpec:
    format: str
    objects: list[ObjectSpec]
    scene_type: str = ""
    comments: dict[str, Any] = field(default_factory=dict)
    videos: dict[str, str] = field(default_factory=dict)
    greenscreen: GreenScreenSpec | None = None
    exports: list[str] = field(default_factory=list)

    def objects_in(self, video: str) -> dict[int, list[FramePrompt]]:
        """``{object id: prompts}`` for the objects present in ``video``."""
        return {o.id: o.prompts.get(video, []) for o in self.objects if o.in_video.get(video)}


def merge_same_frame(prompts: list[FramePrompt]) -> list[FramePrompt]:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mask(raw: Any, where: str) -> np.ndarray:
    """Decode a COCO RLE ``{"size": [h, w], "counts": str | [int, ...]}`` to an ``H×W`` bool mask."""

    if not isinstance(raw, dict):
        raise PromptError(f"{where}.mask_rle must be a COCO RLE object {{'size': [h, w], 'counts': ...}}")
    size, counts = raw.get("size"), raw.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(n) and 0 < n <= 100_000 for n in size)):
        raise PromptError(f"{where}.mask_rle.size must be [height, width] in pixels, got {size!r:.60}")
    h, w = size
    try:
        if isinstance(counts, str):
            rle = {"size": [h, w], "counts": counts.encode("ascii")}
        elif isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts) and sum(counts) == h * w:
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            raise ValueError("counts must be a compressed string or run lengths adding up to height × width")
        mask = mask_utils.decode(rle)
        # A malformed compressed string decodes to runs that do not add up to the frame.
        if (
            mask.shape != (h, w)
            or int(mask_utils.area(rle)) != int(mask.sum())
            or mask_utils.encode(np.asfortranarray(mask))["counts"] != rle["counts"]
        ):
            raise ValueError("the runs do not describe a height × width mask")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise PromptError(f"{where}.mask_rle is not a COCO RLE of a {w}×{h} mask: {exc}") from None
    return mask.astype(bool)


def _prompt(raw: Any, where: str) -> tuple[str, FramePrompt]:
    if not isinstance(raw, dict):
        raise PromptError(f"{where} must be an object")
    video = raw.get("video", "video1")
    if video not in VIDEO_KEYS:
        raise PromptError(f"{where}.video must be 'video1' or 'video2', got {video!r:.60}")
    frame = raw.get("frame")
    if not _is_int(frame) or frame < 0:
        raise PromptError(f"{where}.frame must be a 0-based frame index, got {frame!r:.60}")
    if raw.get("mask_rle") is not None:
        return video, FramePrompt(frame, mask=_mask(raw["mask_rle"], where))
    try:
        points = np.asarray(raw.get("points"), dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(raw.get("labels"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"{where} needs 'points' [[x, y], ...] and 'labels' [1|0, ...]") from None
    if not (np.isfinite(points).all() and np.isfinite(labels).all()):
        raise PromptError(f"{where}: points and labels must be finite numbers (no NaN or infinity)")
    if len(points) == 0 or len(points) != len(labels) or not set(labels.tolist()) <= {0, 1}:
        raise PromptError(f"{where} needs as many labels (1 or 0) as points, and at least one point")
    return video, FramePrompt(frame, points.astype(np.float32), labels.astype(np.int32))


def parse_greenscreen(raw: Any, where: str = "greenscreen.") -> GreenScreenSpec:
    """Validate a ``greenscreen`` block (``segment_index``, ``segment_frames``, ``start_frame``,
    ``background``) before any work; ``where`` prefixes the field names in error messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PromptError(f"'{where.rstrip('.')}' must be an object with segment_index, segment_frames, start_frame")
    frames = raw.get("segment_frames") or []
    if not isinstance(frames, list) or not all(_is_int(n) and n > 0 for n in frames):
        raise PromptError(f"{where}segment_frames must list positive frame counts, got {frames!r:.80}")
    if any(n < 2 for n in frames[:-1]):
        raise PromptError(f"{where}segment_frames: every segment but the last needs at least 2 frames")
    index = raw.get("segment_index", 0)
    if not _is_int(index) or (frames and not 0 <= index < len(frames)) or (not frames and index != 0):
        raise PromptError(
            f"{where}segment_index must be a 0-based index into segment_frames "
            f"(0–{max(0, len(frames) - 1)}), got {index!r:.40}"
        )
    start = raw.get("start_frame", 0)
    if not _is_int(start) or not 0 <= start < 10**9:
        raise PromptError(f"{where}start_frame must be a non-negative frame number, got {start!r:.40}")
    background = raw.get("background") or (0, 255, 0)
    if (
        not isinstance(background, (list, tuple))
        or len(background) != 3
        or not all(_is_int(c) and 0 <= c <= 255 for c in background)
    ):
        raise PromptError(f"{where}background must be [R, G, B] in 0..255")
    take = raw.get("take") or ""
    if take and (not isinstance(take, str) or not TAKE_NAME.fullmatch(take)):
        raise PromptError(f"{where}take must be a take name (letters, digits, '.', '_', '-'), got {take!r:.60}")
    fps = raw.get("fps") or 0.0
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 <= fps <= 1000):
        raise PromptError(f"{where}fps must be the source's frames per second (0–1000), got {fps!r:.40}")
    return GreenScreenSpec(index, list(frames), start, tuple(background), take, float(fps))  # type: ignore[arg-type]


def parse_prompts(data: Any) -> PromptSpec:
    """Validate a prompt document (already loaded from JSON)."""
    if not isinstance(data, dict):
        raise PromptError("the prompt file must hold a JSON object")
    fmt = data.get("format", "scenediff")
    if fmt not in ("scenediff", "greenscreen"):
        raise PromptError(f"format must be 'scenediff' or 'greenscreen', got {fmt!r:.40}")
    raw_objects = data.get("objects")
    if not isinstance(raw_objects, list) or not raw_objects:
        raise PromptError("'objects' must be a non-empty list")
    objects: list[ObjectSpec] = []
    seen: set[int] = set()
    for i, raw in enumerate(raw_objects):
        objects.append(_parse_object(raw, i, seen))
    gs = parse_greenscreen(data.get("greenscreen")) if fmt == "greenscreen" else None
    videos = data.get("videos") or {}
    if not isinstance(videos, dict) or not all(k in VIDEO_KEYS and isinstance(v, str) for k, v in videos.items()):
        raise PromptError("'videos' must map video1/video2 to paths")
    comments = data.get("comments") or {}
    exports = parse_exports(data.get("exports"), "'exports'")
    return PromptSpec(
        format=fmt,
        objects=objects,
        scene_type=str(data.get("scene_type") or ""),
        comments=comments if isinstance(comments, dict) else {"text": str(comments)},
        videos=dict(videos),
        greenscreen=gs,
        exports=exports,
    )


def _parse_object(raw: Any, i: int, seen: set[int]) -> ObjectSpec:
    """``objects[i]`` of a prompt file, checked (``seen``: the ids before it)."""
    where = f"objects[{i}]"
    if not isinstance(raw, dict):
        raise PromptError(f"{where} must be an object")
    obj_id = raw.get("id", i + 1)
    if not _is_int(obj_id) or obj_id < 1 or obj_id in seen:
        raise PromptError(f"{where}.id must be a unique positive integer, got {obj_id!r:.40}")
    seen.add(obj_id)
    raw_prompts = raw.get("prompts") or []
    if not isinstance(raw_prompts, list):
        raise PromptError(f"{where}.prompts must be a list")
    prompts: dict[str, list[FramePrompt]] = {}
    for j, rp in enumerate(raw_prompts):
        video, prompt = _prompt(rp, f"{where}.prompts[{j}]")
        prompts.setdefault(video, []).append(prompt)
    prompts = {v: merge_same_frame(ps) for v, ps in prompts.items()}
    in_video = {}
    for v in VIDEO_KEYS:
        flag = raw.get(f"in_{v}")
        if flag is not None and not isinstance(flag, bool):
            raise PromptError(f"{where}.in_{v} must be true or false, got {flag!r:.40}")
        in_video[v] = bool(prompts.get(v)) if flag is None else flag
        if flag is False and prompts.get(v):
            raise PromptError(
                f"object {obj_id} has prompts in {v} but in_{v} is false: remove those prompts or set in_{v} true"
            )
    if not any(in_video.values()):
        raise PromptError(
            f"object {obj_id} ({str(raw.get('name', '?'))[:60]}) has no prompts: click at least one point on it"
        )
    deform = raw.get("deformability", "rigid")
    if deform not in DEFORMABILITIES:
        raise PromptError(f"{where}.deformability must be 'rigid' or 'deformable', got {deform!r:.40}")
    number = raw.get("number", 1)
    if not _is_int(number) or number < 1:
        raise PromptError(f"{where}.number must be a positive integer (multiplicity index), got {number!r:.40}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise PromptError(f"{where}.name must be a string")
    return ObjectSpec(
        id=obj_id,
        name=name or f"object{obj_id}",
        number=number,
        in_video=in_video,
        deformability=deform,
        prompts=prompts,
    )


def parse_exports(value: Any, where: str) -> list[str]:
    """A list of export format names (a list, or a comma-separated string); checks each name."""

    if value in (None, "", []):
        return []
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise PromptError(f'{where} must be a list of export format names, e.g. ["davis", "mots"]')
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise PromptError(f"{where}: unknown export format {unknown[0]!r:.40}; choose from {', '.join(REGISTRY)}")
    return names


def load_prompts(path: str | Path) -> PromptSpec:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PromptError(f"prompt file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise PromptError(f"prompt file {path} is not valid JSON: {exc}") from None
    return parse_prompts(data)
