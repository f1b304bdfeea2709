"""``--feed``: what feeds the model, before and after a change, measured side by side in one run.

Every cell is a fresh process (:func:`bench.runner.spawn`); with ``--base ROOT`` each is run once
with another checkout's ``ml_backend`` (``today``: e.g. ``git worktree add ../base <commit>``) and
once with this one's (``ours``), one right after the other, so load from other processes hits
both alike. At ``--image-size`` (1024 by default here) on the synthetic 1080p video:

1. **stage costs**: CPU ms of each step of our side for one frame / one object's mask
   (:func:`bench.pipeline_alone.child_stages`);
2. **the pipeline alone** (:class:`bench.pipeline_alone.StandInPredictor`, realistic masks unless
   ``--feed-masks`` says otherwise), 1 and 3 objects, 1 and 2 prefetch workers: FPS, process CPU ms
   per frame, and per object-frame (the 3-object run's CPU minus the 1-object run's, over 2 objects);
   each cell run ``--feed-repeats`` times (sides alternating), the fastest run kept;
3. **job / model-only** with the real SAM 2 (random weights), 1 and 3 objects, realistic and noise
   masks (:mod:`bench.masks`): median per-frame time and wall time of ``run_job`` over the
   model-only run's (goal ≤ 1.1; model-only yields SAM 2's own masks, which it does not use), and
   our code's per-frame timeline (model step vs our work). One process per side builds the model
   once and runs them back to back (:func:`bench.gpu.child_fps`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.report import check, host_line
from bench.runner import spawn
from bench.video import HEIGHT, WIDTH, make_video

FPS_GOAL = 3.0
TIME_GOAL = 1.1


def _sides(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    return [("today", str(Path(args.base).resolve())), ("ours", None)] if args.base else [("ours", None)]


def _cell(
    cfg: dict[str, Any], logdir: Path, name: str, backend: str | None, best: dict | None = None, key: str = ""
) -> dict[str, Any]:
    """One fresh process; with ``best`` (an earlier result of the same cell), the better of the
    two by ``key`` (the lowest: load from other processes only ever adds time)."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
    result = spawn({**cfg, "backend": backend}, logdir, name)
    if best and "error" not in best and ("error" in result or best[key] <= result[key]):
        return best
    return result


def main_feed(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    logdir = workdir / "logs" / "feed"
    size = args.image_size
    sides = _sides(args)
    print(
        f"# bench_video --feed: {args.model_size} @ {size} px on {host_line(args)}; sides "
        + ", ".join(f"{n} = {r or 'this checkout'}" for n, r in sides),
        flush=True,
    )
    pipe_video = make_video(workdir, args.feed_pipeline_frames, 3, jpeg=False)["mp4"]
    model_video = make_video(workdir, args.feed_model_frames, 3, jpeg=False)["mp4"]
    stages, pipe, model = {}, {}, {}
    for side, backend in sides if not args.feed_skip_pipeline else []:
        stages[side] = _cell(
            {"kind": "stages", "image_size": size, "video": str(pipe_video)}, logdir, f"stages_{side}", backend
        )
    for _ in range(0 if args.feed_skip_pipeline else args.feed_repeats):
        for objects in (1, 3):
            for workers in args.feed_workers:
                for side, backend in sides:
                    pipe[(side, objects, workers)] = _cell(
                        {
                            "kind": "pipeline",
                            "threads": args.threads,
                            "image_size": size,
                            "workers": workers,
                            "objects": objects,
                            "masks": args.feed_masks,
                            "prompt_frame": args.feed_pipeline_frames // 2,
                            "video": str(pipe_video),
                            "out_dir": str(workdir / "out" / f"feed_pipe_{side}"),
                        },
                        logdir,
                        f"pipeline_{side}_{objects}obj_{workers}w",
                        backend,
                        pipe.get((side, objects, workers)),
                        "seconds",
                    )
    if not args.feed_skip_pipeline:
        print_stages(stages)
        print_pipeline(args, pipe, sides)
    if args.feed_skip_model:
        return
    base = {
        "threads": args.threads,
        "model_size": args.model_size,
        "image_size": size,
        "device": args.device,
        "compile": args.compile,
        "seed": 0,
        "prompt_frame": args.feed_model_frames // 2,
        "frames": args.feed_model_frames,
        "video": str(model_video),
    }
    for side, backend in sides:
        # one process per side: the model is built once, then for 1 and 3 objects model-only
        # (SAM 2's own masks), our job with realistic masks and with noise masks, back to back
        model[side] = _cell(
            {**base, "kind": "gpu_fps", "objects_list": [1, 3], "out_dir": str(workdir / "out" / f"feed_model_{side}")},
            logdir,
            f"model_and_job_{side}",
            backend,
        )
        print_model(args, model, sides)


def _ok(r: dict[str, Any] | None) -> bool:
    return bool(r) and "error" not in r


def print_stages(stages: dict[str, dict[str, Any]]) -> None:
    sides = list(stages)
    print()
    print(f"#### Our side of one {WIDTH}×{HEIGHT} frame, CPU ms (one thread's CPU clock, median)")
    print()
    print("| step | " + " | ".join(sides) + " |")
    print("|---|" + "---:|" * len(sides))
    rows = (
        ("decode (OpenCV, + RGB)", "decode_ms"),
        ("resize to S×S (PIL bicubic, as SAM 2)", "resize_ms"),
        ("normalise (bit-identical to SAM 2)", "normalise_ms"),
        ("threshold one object's logits", "threshold_ms"),
        ("one object's mask, realistic: RLE + quality signals + spool record", "mask_realistic_ms"),
        ("one object's mask, noise: the same", "mask_noise_ms"),
    )
    for label, key in rows:
        cells = [f"{stages[s][key]:.1f}" if _ok(stages[s]) and key in stages[s] else "—" for s in sides]
        print(f"| {label} | " + " | ".join(cells) + " |")
    s = next((stages[x] for x in sides if _ok(stages[x])), None)
    if s:
        print(
            f"| (COCO RLE per mask: realistic {s['rle_realistic_bytes'] / 1024:.1f} KiB, "
            f"noise {s['rle_noise_bytes'] / 1024:.0f} KiB) |" + " |" * len(sides)
        )
    print(flush=True)


def print_pipeline(args: argparse.Namespace, pipe: dict, sides: list[tuple[str, str | None]]) -> None:
    names = [s for s, _ in sides]
    print(
        f"#### The pipeline alone: run_job around a stand-in model that costs nothing, {args.image_size} px, "
        f"{WIDTH}×{HEIGHT}, {args.feed_masks} masks, {args.feed_pipeline_frames} frames, {os.cpu_count()} cores"
    )
    print()
    head = " | ".join(f"{s}: FPS | {s}: CPU ms/frame" for s in names)
    ratio = " | ours / today FPS" if len(names) > 1 else ""
    print(f"| objects | prefetch workers | {head}{ratio} |")
    print("|---:|---:|" + "---:|" * (2 * len(names) + (1 if len(names) > 1 else 0)))
    for objects in (1, 3):
        for workers in args.feed_workers:
            cells = []
            for s in names:
                r = pipe.get((s, objects, workers))
                cells += [f"{r['fps']:.1f}", f"{r['cpu_ms_per_frame']:.0f}"] if _ok(r) else ["failed", ""]
            extra = ""
            if len(names) > 1:
                a, b = pipe.get(("ours", objects, workers)), pipe.get(("today", objects, workers))
                if _ok(a) and _ok(b):
                    v = a["fps"] / b["fps"]
                    extra = f" | {v:.2f}{check(v, FPS_GOAL, at_least=True)}"
                else:
                    extra = " | —"
            print(f"| {objects} | {workers} | " + " | ".join(cells) + extra + " |")
    for s in names:
        per = []
        for workers in args.feed_workers:
            one, three = pipe.get((s, 1, workers)), pipe.get((s, 3, workers))
            if _ok(one) and _ok(three):
                per.append(f"{(three['cpu_ms_per_frame'] - one['cpu_ms_per_frame']) / 2:.1f}")
        print(f"| {s}: CPU ms per object-frame (3 objects − 1 object, / 2) | {' / '.join(per) or '—'} |")
    print(f"| goal | ours ≥ {FPS_GOAL}× today's FPS |")
    print(flush=True)


def print_model(args: argparse.Namespace, model: dict, sides: list[tuple[str, str | None]]) -> None:
    print()
    print(
        f"#### Job / model-only: SAM 2.1 {args.model_size} (random weights) at {args.image_size} px, "
        f"{WIDTH}×{HEIGHT}, {args.feed_model_frames} frames (prompt in the middle: forward + backward), "
        f"{host_line(args)}; per side one process: model-only, then the job, back to back"
    )
    print()
    print(
        "| masks | objects | side | model-only s/frame (median) | job / model-only: median per-frame | "
        "job / model-only: wall | timeline (ms, median): model step / ours on model thread / export thread CPU |"
    )
    print("|---|---:|---|---:|---:|---:|---|")
    for masks in ("realistic", "noise"):
        for objects in (1, 3):
            for s, _ in sides:
                r = model.get(s)
                if r is None:
                    continue
                if "error" in r:
                    print(f"| {masks} | {objects} | {s} | failed: {r['error']} | | | |")
                    continue
                runs = r["runs"][str(objects)]
                job, mod = runs[f"job_{masks}"], runs["model"]
                step = (
                    job["median_step"] / mod["median_step"]
                    if job.get("median_step") and mod.get("median_step")
                    else None
                )
                wall = job["seconds"] / mod["seconds"]
                tl = job.get("timeline")
                tl_cell = (
                    f"{tl['model_ms']:.0f} / {tl['ours_ms']:.1f} / {tl['export_cpu_ms']:.1f} "
                    f"(ours {100 * (tl['ours_share'] or 0):.1f} % of the model's thread)"
                    if tl
                    else "— (not recorded by this code)"
                )
                print(
                    f"| {masks} | {objects} | {s} | {mod['median_step'] or 0:.3f} | "
                    f"{'—' if step is None else f'{step:.3f}'}{check(step, TIME_GOAL)} | {wall:.3f}{check(wall, TIME_GOAL)} | {tl_cell} |"
                )
    print(f"| goal | | | | ≤ {TIME_GOAL} | ≤ {TIME_GOAL} | |")
    print(flush=True)
