"""``--objects-table``: time per frame by object count, SAM 2's one-by-one loop vs batched objects.

For every image size, object count (1, 3, 8 by default) and path (model-only, :mod:`bench.model_only`;
our job, :mod:`bench.job`), two fresh processes run back to back: one built with
``batch_objects=False`` (SAM 2's own ``propagate_in_video``, ``SAM2_BATCH_OBJECTS=0``) and one
with batching on (:mod:`ml_backend.video.batched`, the default), ``--table-repeats`` times. All objects are prompted on the middle
frame (one point each at a shape's centre), so the video is tracked forward and backward and all
objects share one memory layout. The table gives the median seconds per frame of each, their
ratio (batched / one-by-one; below 1 = batching is faster; each the lowest median over the repeats,
as load from other processes only ever adds time), and the growth from 1 object. The
job runs also return their masks: the minimum IoU between the two paths over every (object,
frame) is printed beside them (goal ≥ 0.99; random weights, so the masks themselves are noise), and the largest difference of
object scores (``quality.json``, rounded to 1e-4; goal ≤ 1e-3).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path
from typing import Any

from bench.report import host_line
from bench.runner import spawn
from bench.video import HEIGHT, WIDTH, make_video

IOU_GOAL = 0.99
SCORE_GOAL = 1e-3


def main_objects(args: argparse.Namespace) -> None:
    """Every (size, objects, path, batching) cell in a fresh process, then one table."""
    workdir = Path(args.workdir)
    logdir = workdir / "logs"
    frames_by_size = dict(zip(args.table_sizes, args.table_frames * len(args.table_sizes), strict=False))
    print(
        f"# bench_video --objects-table: {args.model_size} at {args.table_sizes} px, objects {args.table_objects}, "
        f"{args.table_frames} frames, on {host_line(args)}",
        flush=True,
    )
    res: dict[tuple[int, int, str, bool], list[dict[str, Any]]] = {}
    loads: list[float] = []
    for size in args.table_sizes:
        frames = frames_by_size[size]
        for k in args.table_objects:
            video = make_video(workdir, frames, k, jpeg=False)["mp4"]
            for path, rep in itertools.product(args.table_paths, range(args.table_repeats)):
                for batch in (False, True):  # back to back, so both see the same load
                    cfg = {
                        "kind": path,
                        "threads": args.threads,
                        "model_size": args.model_size,
                        "image_size": size,
                        "device": args.device,
                        "compile": args.compile,
                        "objects": k,
                        "seed": 0,
                        "frames": frames,
                        "prompt_frame": frames // 2,
                        "video": str(video),
                        "out_dir": str(workdir / "out" / f"objects_{size}_{k}_{path}_{int(batch)}"),
                        "batch_objects": batch,
                        "return_masks": path == "job" and rep == 0,
                    }
                    name = f"objects_{size}px_{k}obj_{path}_{'batched' if batch else 'onebyone'}_{rep}"
                    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
                    loads.append(os.getloadavg()[0])
                    res.setdefault((size, k, path, batch), []).append(spawn(cfg, logdir, name))
    print_objects_table(args, res, loads, frames_by_size)


def min_iou(a: dict[str, Any] | None, b: dict[str, Any] | None, frames: int) -> float | None:
    """Lowest IoU over (object, frame) between two jobs' masks (``{obj: {frame: rle}}``); both
    empty = 1."""
    if not a or not b:
        return None
    import numpy as np

    from ml_backend.exporters.masks import rle_decode

    worst = 1.0
    for obj_id in set(a) | set(b):
        for f in range(frames):
            ra, rb = a.get(obj_id, {}).get(str(f)), b.get(obj_id, {}).get(str(f))
            if ra is None and rb is None:
                continue
            ma = rle_decode(ra) if ra is not None else np.zeros_like(rle_decode(rb))
            mb = rle_decode(rb) if rb is not None else np.zeros_like(ma)
            union = np.logical_or(ma, mb).sum()
            worst = min(worst, 1.0 if union == 0 else float(np.logical_and(ma, mb).sum() / union))
    return worst


def max_score_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """Largest difference of object scores (``quality.json``, by object and frame) of two jobs."""
    if not a or not b:
        return None
    diffs = [
        abs(x - y)
        for obj_id in a
        for x, y in zip(a[obj_id], b.get(obj_id, []), strict=False)
        if x is not None and y is not None
    ]
    return max(diffs, default=None)


def cpu_cell(off: float | None, on: float | None) -> str:
    if off is None or on is None:
        return "—"
    return f"{off:.2f} → {on:.2f} ({on / off:.2f})"


def print_objects_table(args: argparse.Namespace, res: dict, loads: list[float], frames: dict[int, int]) -> None:
    def step(key: tuple) -> float | None:
        """The lowest median s/frame over the repeats (other load only ever adds time)."""
        steps = [r["median_step"] for r in res.get(key, []) if "error" not in r and r.get("median_step")]
        return min(steps, default=None)

    def cpu(key: tuple) -> float | None:
        """The lowest median CPU seconds per frame step over the repeats (process user + sys, all
        threads: the work done, whatever else runs on the machine)."""
        steps = [r["median_cpu_step"] for r in res.get(key, []) if "error" not in r and r.get("median_cpu_step")]
        return min(steps, default=None)

    def first(key: tuple) -> dict[str, Any]:
        return (res.get(key) or [{}])[0]

    print()
    print(
        f"### Time per frame by object count: SAM 2's one-by-one loop vs batched objects — SAM 2.1 {args.model_size} "
        f"(random weights), {host_line(args)}; synthetic {WIDTH}×{HEIGHT} mp4, "
        + ", ".join(f"{n} frames at {size} px" for size, n in frames.items())
        + "; every object prompted on the middle frame (forward + backward); median s/frame (lowest of "
        f"{args.table_repeats} run(s), each a fresh process, one-by-one and batched back to back); load average during the run {min(loads):.1f}–{max(loads):.1f}"
    )
    print()
    print(
        "| image px | objects | path | one-by-one s/frame | batched s/frame | batched / one-by-one | "
        "one-by-one: × 1 object | batched: × 1 object | CPU s/frame: one-by-one → batched (ratio) | "
        "masks min IoU (job) | object scores max diff (job) |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst_ratio = None
    for size in args.table_sizes:
        for path, label in (("model", "model-only"), ("job", "run_job")):
            if path not in args.table_paths:
                continue
            base = {b: step((size, args.table_objects[0], path, b)) for b in (False, True)}
            for k in args.table_objects:
                off, on = step((size, k, path, False)), step((size, k, path, True))
                ratio = None if not (off and on) else on / off
                if ratio is not None and k > 1:
                    worst_ratio = ratio if worst_ratio is None else max(worst_ratio, ratio)
                iou = diff = None
                if path == "job":
                    ra, rb = first((size, k, path, False)), first((size, k, path, True))
                    iou = min_iou(ra.get("masks"), rb.get("masks"), frames[size])
                    diff = max_score_diff(ra.get("scores"), rb.get("scores"))
                cells = [
                    str(size),
                    str(k),
                    label,
                    "—" if off is None else f"{off:.3f}",
                    "—" if on is None else f"{on:.3f}",
                    "—" if ratio is None else f"{ratio:.2f}",
                    "—" if not (off and base[False]) else f"{off / base[False]:.2f}",
                    "—" if not (on and base[True]) else f"{on / base[True]:.2f}",
                    cpu_cell(cpu((size, k, path, False)), cpu((size, k, path, True))),
                    ("—" if iou is None else f"{iou:.4f}" + (" ✅" if iou >= IOU_GOAL else " ❌"))
                    if path == "job"
                    else "",
                    ("—" if diff is None else f"{diff:.4f}" + (" ✅" if diff <= SCORE_GOAL else " ❌"))
                    if path == "job"
                    else "",
                ]
                print("| " + " | ".join(cells) + " |")
    failed = [f"{k}: {r['error']} ({r['log']})" for k, runs in res.items() for r in runs if "error" in r]
    print()
    if worst_ratio is not None:
        print(f"Worst batched / one-by-one ratio with more than one object: {worst_ratio:.2f} (goal ≤ 1).")
    print(
        "Wall times are medians of consecutive frame steps; on a loaded machine they carry the other processes' "
        "load, so the median CPU seconds per frame step (this process's user + sys, all its threads) are given "
        "beside them as the load-independent measure of the work."
    )
    if failed:
        print("Failed cells: " + "; ".join(failed))
    print(flush=True)
