"""Tracking quality: per-frame signals, drift flags and ``quality.json``.

While a video propagates, :class:`QualityExport` records for every object on every frame:

- ``score``: SAM 2's object score, the sigmoid of the frame output's ``object_score_logits``
  (read by :func:`ml_backend.video.propagation.object_scores` before the output is pruned); ``None``
  for a predictor that keeps no such score;
- ``iou``: the predicted IoU where the predictor keeps one in the frame output (SAM 2 1.1.0
  computes it inside ``track_step`` but does not keep it, so it is ``None`` there);
- ``area`` (pixels) and ``centroid`` (x, y in pixels of the original frame): from the mask itself,
  so they work with any predictor.

**The flag rule** (:func:`flag_frames`), per object, looking at frame ``t`` and the frame before
it in **frame order** (not propagation order), with thresholds from :class:`QualityRule`:

==============  =============================================================  ===================
reason          condition on frame ``t``                                       severity (0–1]
==============  =============================================================  ===================
``vanished``    mask empty, non-empty on ``t-1``                               1
``reappeared``  mask non-empty, empty on ``t-1``, non-empty on some earlier    1
                frame (an object entering for the first time is not flagged)
``area``        both non-empty, ``max(a, a') / min(a, a') ≥ area_ratio``       ``1 - min/max``
``jump``        both non-empty, centroid moved ``≥ jump × sqrt(area on t-1)``  ``min(1, d / sqrt(a'))``
``low_score``   mask non-empty and ``score < min_score``                       ``1 - score``
==============  =============================================================  ===================

Consecutive flagged frames of one object merge into a **range** ``[start, end]``; its severity is
the highest of its frames, its ``score`` the lowest object score in it. Ranges are ranked by
severity (highest first), then video, then start frame. A reviewer is sent to the ``start`` frame
of each range (:func:`pages_to_add`).

The report (:func:`QualityReport.to_json`) is written as ``review/quality.json`` (one file for
every video of the job) or, for a green-screen segment, ``review/segment_XXX_quality.json``
(segments publish into one folder, one at a time). Frame indices are 0-based in decode order.

**Green-screen segments** count in the original video: a range's ``start``/``end``/``frame``
are original frame numbers (segment frame + the segment's ``first_frame``, recorded per video),
and the same range's numbers within the segment are ``segment_start``/``segment_end``/
``segment_frame`` (what :func:`pages_to_add` uses: pages are frames of the segment). The
per-frame arrays (``scores``, ``areas``...) are indexed by segment frame. ``fps`` is the
source's frame rate (:meth:`~ml_backend.exporters.interface.ExportJob.fps_of`), so ``start / fps`` is the
time in the original video.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml_backend.exporters.interface import Exporter, ExportJob
from ml_backend.exporters.masks import mask_box
from ml_backend.exporters.staging import atomic_write_bytes
from ml_backend.settings import QualityRule

#: 2: a green-screen segment's ranges count in the original video (``segment_*`` within the
#: segment), with ``first_frame``, ``take`` and the take's ``fps`` per video.
SCHEMA_VERSION = 2


@dataclass
class Track:
    """One object's signals over one video, indexed by frame (0-based). ``scores``/``ious`` hold
    NaN where unknown; ``areas`` are pixels; ``cx``/``cy`` pixels (NaN where the mask is empty)."""

    num_frames: int
    scores: np.ndarray = field(init=False)
    ious: np.ndarray = field(init=False)
    areas: np.ndarray = field(init=False)
    cx: np.ndarray = field(init=False)
    cy: np.ndarray = field(init=False)
    seen: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.num_frames
        self.scores, self.ious = np.full(n, np.nan), np.full(n, np.nan)
        self.areas = np.zeros(n, np.int64)
        self.cx, self.cy = np.full(n, np.nan), np.full(n, np.nan)
        self.seen = np.zeros(n, bool)

    def record(self, frame: int, mask: np.ndarray, score: float | None = None, iou: float | None = None) -> None:
        """Signals of ``frame`` from an ``H×W`` bool ``mask`` (and the model's numbers, if any).

        Counts only inside the mask's bounding box (:func:`~ml_backend.exporters.masks.mask_box`): the
        same integers as counting over the whole frame, for a fraction of the cost."""
        box = mask_box(mask)
        self.seen[frame] = True
        if box is None:
            self.areas[frame] = 0
        else:
            top, bottom, left, right = box
            crop = mask[top:bottom, left:right]
            rows = np.count_nonzero(crop, axis=1)
            area = int(rows.sum())
            cols = np.count_nonzero(crop, axis=0)
            self.areas[frame] = area
            self.cy[frame] = float(rows @ np.arange(top, bottom)) / area
            self.cx[frame] = float(cols @ np.arange(left, right)) / area
        if score is not None:
            self.scores[frame] = score
        if iou is not None:
            self.ious[frame] = iou


def flag_frames(track: Track, rule: QualityRule) -> dict[int, tuple[list[str], float]]:
    """``{frame: (reasons, severity)}`` for every flagged frame of ``track`` (see the module
    docstring for the rule)."""
    flags: dict[int, tuple[list[str], float]] = {}
    areas, scores = track.areas, track.scores
    visible_before = False
    for t in range(track.num_frames):
        reasons: list[str] = []
        severity = 0.0
        a = int(areas[t])
        if t > 0:
            prev = int(areas[t - 1])
            if prev and not a:
                reasons.append("vanished")
                severity = 1.0
            elif a and not prev and visible_before:
                reasons.append("reappeared")
                severity = 1.0
            elif a and prev:
                ratio = max(a, prev) / min(a, prev)
                if ratio >= rule.area_ratio:
                    reasons.append("area")
                    severity = max(severity, 1 - 1 / ratio)
                size = math.sqrt(prev)
                dist = math.hypot(track.cx[t] - track.cx[t - 1], track.cy[t] - track.cy[t - 1])
                if dist >= rule.jump * size:
                    reasons.append("jump")
                    severity = max(severity, min(1.0, dist / size))
            visible_before = visible_before or bool(prev)
        if a and not math.isnan(scores[t]) and scores[t] < rule.min_score:
            reasons.append("low_score")
            severity = max(severity, 1.0 - float(scores[t]))
        if reasons:
            flags[t] = (reasons, round(severity, 4))
    return flags


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def flag_ranges(track: Track, rule: QualityRule) -> list[dict[str, Any]]:
    """Consecutive flagged frames merged: ``[{start, end, frame, reasons, severity, score}]`` in
    frame order; ``frame`` (the page a reviewer gets) is ``start``."""
    ranges: list[dict[str, Any]] = []
    for t, (reasons, severity) in sorted(flag_frames(track, rule).items()):
        if ranges and ranges[-1]["end"] == t - 1:
            last = ranges[-1]
            last["end"] = t
            last["reasons"] += [r for r in reasons if r not in last["reasons"]]
            last["severity"] = max(last["severity"], severity)
        else:
            ranges.append({"start": t, "end": t, "frame": t, "reasons": list(reasons), "severity": severity})
    for r in ranges:
        window = track.scores[r["start"] : r["end"] + 1]
        r["score"] = _num(np.nanmin(window)) if not np.isnan(window).all() else None
    return ranges


@dataclass
class QualityReport:
    """Signals and flags of every object of every video of one job."""

    rule: QualityRule
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)  # video -> {label, num_frames, fps}
    tracks: dict[str, dict[int, Track]] = field(default_factory=dict)  # video -> obj_id -> Track

    def ranges(self) -> list[dict[str, Any]]:
        """Every flagged range of the job, ranked (severity, then video, then start)."""
        out = [
            {"video": video, "object": obj_id, **r}
            for video, tracks in self.tracks.items()
            for obj_id, track in tracks.items()
            for r in flag_ranges(track, self.rule)
        ]
        order = {v: i for i, v in enumerate(self.tracks)}
        return sorted(out, key=lambda r: (-r["severity"], order[r["video"]], r["start"], r["object"]))

    def summary(self, ranges: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """``flagged_ranges``; ``lowest_score`` (lowest object score on a frame where the object
        is shown, None without model scores); ``confidence``: the lowest per-object mean object
        score over its shown frames or, without model scores, the share of shown frames that
        are not flagged (1.0 when nothing is shown or flagged)."""
        ranges = self.ranges() if ranges is None else ranges
        lowest, means, shown, flagged = None, [], 0, 0
        for tracks in self.tracks.values():
            for track in tracks.values():
                visible = track.areas > 0
                scores = track.scores[visible & ~np.isnan(track.scores)]
                if len(scores):
                    lowest = min(lowest, float(scores.min())) if lowest is not None else float(scores.min())
                    means.append(float(scores.mean()))
                shown += int(visible.sum())
                flagged += sum(1 for t in flag_frames(track, self.rule) if visible[t])
        confidence = min(means) if means else (1.0 - flagged / shown if shown else 1.0)
        return {
            "flagged_ranges": len(ranges),
            "lowest_score": None if lowest is None else round(lowest, 4),
            "confidence": round(confidence, 4),
        }

    def _original(self, ranges: list[dict[str, Any]], video: str) -> list[dict[str, Any]]:
        """``ranges`` of ``video`` in original frame numbers where the video is a segment (its
        ``first_frame`` is known): ``start``/``end``/``frame`` shifted, ``segment_*`` kept."""
        first = self.videos.get(video, {}).get("first_frame")
        if first is None:
            return ranges
        return [
            {
                **r,
                "start": r["start"] + first,
                "end": r["end"] + first,
                "frame": r["frame"] + first,
                "segment_start": r["start"],
                "segment_end": r["end"],
                "segment_frame": r["frame"],
            }
            for r in ranges
        ]

    def to_json(self) -> dict[str, Any]:
        ranges = [r for ranked in self.ranges() for r in self._original([ranked], ranked["video"])]
        videos: dict[str, Any] = {}
        for video, tracks in self.tracks.items():
            objects = {}
            for obj_id, track in tracks.items():
                visible = track.areas > 0
                scores = track.scores[visible & ~np.isnan(track.scores)]
                objects[str(obj_id)] = {
                    "scores": [_num(s) for s in track.scores],
                    "ious": [_num(s) for s in track.ious],
                    "areas": track.areas.tolist(),
                    "centroids": [
                        None if math.isnan(x) else [round(x, 2), round(y, 2)]
                        for x, y in zip(track.cx, track.cy, strict=True)
                    ],  # fmt: skip
                    "shown_frames": int(visible.sum()),
                    "mean_score": round(float(scores.mean()), 4) if len(scores) else None,
                    "min_score": round(float(scores.min()), 4) if len(scores) else None,
                    "ranges": self._original(flag_ranges(track, self.rule), video),
                }
            videos[video] = {**self.videos.get(video, {}), "objects": objects}
        return {
            "version": SCHEMA_VERSION,
            "rule": asdict(self.rule),
            "videos": videos,
            "ranges": ranges,
            "summary": self.summary(ranges),
        }


def segment_frame(r: Mapping[str, Any]) -> int:
    """The frame of the job's video that range ``r`` sends a reviewer to: ``segment_frame`` for a
    green-screen segment (``frame`` is then the original video's number), else ``frame``."""
    return int(r.get("segment_frame", r["frame"]))


def pages_to_add(ranges: list[dict[str, Any]], existing: Mapping[str, list[int]], cap: int) -> dict[str, list[int]]:
    """The frames to append as annotation pages: the ``frame`` of each ranked range, per video,
    skipping frames that are already pages (``existing[video]``) and stopping at ``cap`` new
    pages per video. Returns ``{video: [frame, ...]}`` in rank order."""
    out: dict[str, list[int]] = {}
    for r in ranges:
        video, frame = r["video"], segment_frame(r)
        pages = out.setdefault(video, [])
        if frame in existing.get(video, ()) or frame in pages or len(pages) >= cap:
            continue
        pages.append(frame)
    return {video: pages for video, pages in out.items() if pages}


def quality_file(spec: Any) -> str:
    """Where the report of a job with prompt spec ``spec`` goes, relative to its output folder."""
    if spec.format == "greenscreen":
        return f"review/segment_{spec.greenscreen.segment_index if spec.greenscreen else 0:03d}_quality.json"
    return "review/quality.json"


class QualityExport(Exporter):
    """Records the signals on the export thread and writes the report (module docstring)."""

    name = "quality"
    per_frame = True

    def __init__(self, job: ExportJob, rule: QualityRule | None = None) -> None:
        super().__init__(job)
        self.report = QualityReport(rule or job.quality_rule or QualityRule())

    def start_video(self, video: str, source: Any) -> None:
        self.report.videos[video] = {
            "label": self.job.video_label(video),
            "num_frames": source.num_frames,
            "fps": round(self.job.fps_of(source), 4),
            "size": [source.height, source.width],
        }
        if self.job.spec.format == "greenscreen":
            gs = self.job.spec.greenscreen
            self.report.videos[video]["first_frame"] = self.job.first_frame()
            if gs is not None and gs.take:
                self.report.videos[video]["take"] = gs.take
        self.report.tracks[video] = {obj_id: Track(source.num_frames) for obj_id in self.job.spec.objects_in(video)}

    def add(
        self,
        video: str,
        frame_idx: int,
        masks: dict[int, np.ndarray],
        frame: np.ndarray | None,
        scores: Mapping[int, tuple[float | None, float | None]] | None = None,
    ) -> None:
        tracks = self.report.tracks[video]
        for obj_id, mask in masks.items():
            score, iou = (scores or {}).get(obj_id, (None, None))
            tracks[obj_id].record(frame_idx, mask, score, iou)

    def finish(self, masks: Mapping[str, Any]) -> None:
        body = json.dumps(self.report.to_json(), separators=(",", ":")).encode()
        atomic_write_bytes(self.job.staging.path(quality_file(self.job.spec)), body)
