#!/usr/bin/env python3
"""Precision and recall of the drift flags on synthetic tracks with known events.

Each case is one object on a 1920×1080 frame grid (masks drawn at 1/4 scale, 480×270), moving
smoothly with a random speed, size and slow size change, with a little positional jitter, and
with events injected at random frames:

- ``vanish``: the object is missing for 2–8 frames; the flag is expected at the first missing
  frame (``vanished``) and at the first frame it is back (``reappeared``);
- ``jump``: it moves by 0.7–2.5 object sizes between two frames, towards the middle of the
  frame (expected: ``jump`` there);
- ``resize``: its side changes by a factor 1.4–2.5 (area 2–6×) between two frames (``area``).

Smooth cases have no event: every flag there is a false positive. The masks go through
:class:`ml_backend.video.quality.Track` and :func:`ml_backend.video.quality.flag_ranges` with the default
rule (or ``--area-ratio`` / ``--jump``), exactly as a job records them. A flagged range counts as
a true positive when it starts on an expected frame; recall counts expected frames whose range
starts there. The last table says how many annotation pages a reviewer opens to reach every
flagged range (:func:`ml_backend.video.quality.pages_to_add`: one page per range, ranges on one frame
share it) and how many ranges the ``REVIEW_MAX_PAGES`` cap leaves without a page.

    .venv/bin/python scripts/bench_flags.py [--cases 200] [--frames 120] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_backend.video.quality import QualityRule, Track, flag_ranges, pages_to_add  # noqa: E402

H, W = 270, 480  # masks at 1/4 of 1080p


def draw(cx: float, cy: float, side: float, disc: bool) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    if disc:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= (side / 2) ** 2
    return (np.abs(xx - cx) <= side / 2) & (np.abs(yy - cy) <= side / 2)


def make_case(rng: np.random.Generator, frames: int, kind: str) -> tuple[list[np.ndarray], dict[int, str]]:
    """Masks of one object over ``frames`` frames and the expected flags ``{frame: reason}``."""
    side = rng.uniform(14, 60)
    cx, cy = rng.uniform(60, W - 60), rng.uniform(50, H - 50)
    ex, ey = rng.uniform(60, W - 60), rng.uniform(50, H - 50)  # where it ends: it stays inside
    vx, vy = (ex - cx) / frames, (ey - cy) / frames
    growth = rng.uniform(-0.004, 0.004)  # slow size change per frame
    disc = bool(rng.integers(2))
    event = int(rng.integers(frames // 4, 3 * frames // 4))
    gone = range(event, event + int(rng.integers(2, 9))) if kind == "vanish" else range(0)
    expected: dict[int, str] = {}
    if kind == "vanish":
        expected = {gone.start: "vanished", gone.stop: "reappeared"}
    elif kind == "jump":
        expected = {event: "jump"}
    elif kind == "resize":
        expected = {event: "area"}
    masks = []
    offset, scale = np.zeros(2), 1.0
    for t in range(frames):
        if t == event and kind == "jump":  # towards the frame's centre, so it is not clipped away
            here = np.array([cx + vx * t, cy + vy * t]) + offset
            angle = np.arctan2(H / 2 - here[1], W / 2 - here[0]) + rng.uniform(-np.pi / 3, np.pi / 3)
            offset = offset + rng.uniform(0.7, 2.5) * side * np.array([np.cos(angle), np.sin(angle)])
        if t == event and kind == "resize":
            factor = rng.uniform(1.4, 2.5)
            scale = factor if rng.integers(2) else 1 / factor
        x = cx + vx * t + offset[0] + rng.normal(0, 0.3)
        y = cy + vy * t + offset[1] + rng.normal(0, 0.3)
        s = max(4.0, side * scale * (1 + growth) ** t)
        x, y = float(np.clip(x, s, W - s)), float(np.clip(y, s, H - s))  # stays inside the frame
        masks.append(np.zeros((H, W), bool) if t in gone else draw(x, y, s, disc))
    return masks, expected


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=200, help="cases per kind (vanish, jump, resize, smooth)")
    p.add_argument("--frames", type=int, default=120, help="frames per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--area-ratio", type=float, default=QualityRule().area_ratio)
    p.add_argument("--jump", type=float, default=QualityRule().jump)
    p.add_argument("--max-pages", type=int, default=QualityRule().max_pages)
    args = p.parse_args(argv)
    rule = QualityRule(area_ratio=args.area_ratio, jump=args.jump, max_pages=args.max_pages)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    rows = []
    pages_needed, ranges_total, unreached = 0, 0, 0
    for kind in ("vanish", "jump", "resize", "smooth"):
        tp = fp = fn = 0
        for _ in range(args.cases):
            masks, expected = make_case(rng, args.frames, kind)
            track = Track(args.frames)
            for t, mask in enumerate(masks):
                track.record(t, mask)
            ranges = flag_ranges(track, rule)
            starts = {r["start"] for r in ranges}
            tp += sum(1 for r in ranges if r["start"] in expected)
            fp += sum(1 for r in ranges if r["start"] not in expected)
            fn += sum(1 for f in expected if f not in starts)
            ranked = [{"video": "video1", **r} for r in sorted(ranges, key=lambda r: -r["severity"])]
            pages = pages_to_add(ranked, {"video1": []}, rule.max_pages).get("video1", [])
            reached = {r["frame"] for r in ranked} & set(pages)
            pages_needed += len(pages)
            ranges_total += len(ranked)
            unreached += sum(1 for r in ranked if r["frame"] not in reached)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        rows.append((kind, args.cases, tp + fn, tp, fp, fn, precision, recall))
    print(
        f"# bench_flags: {args.cases} cases per kind × {args.frames} frames, rule area_ratio={rule.area_ratio}, "
        f"jump={rule.jump}; {time.perf_counter() - started:.1f} s\n"
    )
    print("| case | cases | expected flags | true positives | false positives | missed | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = [0, 0, 0, 0]
    for kind, cases, expected, tp, fp, fn, precision, recall in rows:
        total = [total[0] + expected, total[1] + tp, total[2] + fp, total[3] + fn]
        print(f"| {kind} | {cases} | {expected} | {tp} | {fp} | {fn} | {precision:.3f} | {recall:.3f} |")
    e, tp, fp, fn = total
    print(f"| **all** | {4 * args.cases} | {e} | {tp} | {fp} | {fn} | "
          f"**{tp / (tp + fp) if tp + fp else 1:.3f}** | **{tp / (tp + fn) if tp + fn else 1:.3f}** |")  # fmt: skip
    print(
        "\n| flagged ranges | pages appended | pages per range | ranges without a page (cap "
        f"{rule.max_pages} per video) |\n|---:|---:|---:|---:|"
    )
    per = pages_needed / ranges_total if ranges_total else 0.0
    print(f"| {ranges_total} | {pages_needed} | {per:.2f} | {unreached} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
