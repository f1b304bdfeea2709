#!/usr/bin/env python
"""Long videos in bounded memory: peak RSS and speed of video propagation, stock SAM 2 vs our job.

Everything is measured in one run and printed as one markdown table. SAM 2.1 is built from random
weights (``checkpoint="random"``, seeded): the timings and memory are those of the real model
code, the masks are meaningless. The input is a synthetic 1920×1080 video (textured background,
moving shapes drawn with OpenCV), written once as an ``mp4v`` MP4 and as a folder of JPEG frames
(SAM 2's stock ``init_state`` reads only a JPEG folder without ``decord``), cached in ``--workdir``.

For every N (frames) and every path, a **fresh subprocess** (this script with ``--child``) builds
the model and measures wall time and peak RSS (``ru_maxrss``) of:

- **stock**: ``predictor.init_state(jpeg_folder)`` + ``add_new_points_or_box`` per object +
  ``propagate_in_video`` forward and reverse, every mask collected as a numpy bool array in a dict
  (what SAM 2's example notebook does);
- **job**: ``ml_backend.video.pipeline.run_job`` on the MP4 with a SceneDiff prompt spec (objects
  prompted on the middle frame, so it propagates forward and backward), ``review=False``;
- **model-only**: the same prompts and ``propagate_in_video`` forward + reverse over frames
  decoded and resized into memory beforehand (not timed); masks are left as SAM 2 returns them.
  ``job / model-only`` is the overhead of decoding, exporting and pruning (goal ≤ 1.1).

Then a parity check: a 60-frame JPEG folder, prompts on frame 30, one predictor built with a fixed
seed; masks of the stock path and of ``run_job`` on the same folder are compared frame by frame
(IoU per frame and object, both empty = 1).

``--objects-table``: median time per frame for 1, 3 and 8 objects at 1024 and 256 px, model-only
and ``run_job``, with SAM 2's one-by-one loop (``SAM2_BATCH_OBJECTS=0``) and with batched objects,
side by side with their ratios and the masks' agreement (:mod:`bench.objects`).

``--long``: a 10-minute 1080p video at 30 fps (18,000 frames, one moving shape on a static
background), run through ``run_job`` until ``--time-bound`` seconds have passed (the job is
aborted from its progress callback); RSS is sampled at every frame and reported at 10 %, 50 % and
100 % of the frames processed, and must stay under 8 GiB.

Usage::

    .venv/bin/python scripts/bench_video.py --quick                 # smoke run (N = 10, 20)
    .venv/bin/python scripts/bench_video.py                         # N = 50, 200, 1000 at 256 px (CPU)
    .venv/bin/python scripts/bench_video.py --long --time-bound 600 # 18,000-frame memory curve
    .venv/bin/python scripts/bench_video.py --device cuda --image-size 1024 --model-size large
    .venv/bin/python scripts/bench_video.py --objects-table        # 1/3/8 objects: one-by-one vs batched
    .venv/bin/python scripts/bench_video.py --feed --base ../base  # what feeds the model, before vs after

Each measurement is a module of ``scripts/bench/`` (see its ``__init__``); this script is the
command line and the ``--child`` entry point the measurements' fresh processes run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.compare import main_bench
from bench.feed import main_feed
from bench.gpu import child_fps, child_memory
from bench.job import child_job
from bench.long_video import main_long
from bench.model_only import child_model
from bench.objects import main_objects
from bench.parity import child_parity
from bench.pipeline_alone import StandInPredictor, child_pipeline, child_stages
from bench.report import PUBLISHED_A100_FPS
from bench.runner import run_child
from bench.stock import child_stock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["StandInPredictor", "main", "parse_args"]

#: What a ``--child`` process runs, by ``cfg["kind"]``.
CHILDREN = {
    "stock": child_stock,
    "job": child_job,
    "model": child_model,
    "parity": child_parity,
    "pipeline": child_pipeline,
    "stages": child_stages,
    "gpu_fps": child_fps,
    "gpu_memory": child_memory,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Peak RSS and speed of SAM 2 video propagation: stock init_state path vs our run_job vs model-only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N = 10, 20; 128 px; parity on 20 frames; --long on 300 frames for 30 s",
    )
    p.add_argument(
        "--long",
        action="store_true",
        help="long-video mode: 18,000 1080p frames, run_job under --time-bound, RSS curve",
    )
    p.add_argument("--time-bound", type=float, default=600.0, help="seconds of propagation in --long mode")
    p.add_argument("--long-frames", type=int, default=18000, help="frames of the --long video (10 min at 30 fps)")
    p.add_argument("--long-objects", type=int, default=1, choices=range(1, 9), help="objects tracked in --long mode")
    p.add_argument(
        "--one-by-one",
        dest="batch_objects",
        action="store_false",
        help="--long mode: SAM 2's one-by-one loop (SAM2_BATCH_OBJECTS=0) instead of batched objects",
    )
    p.add_argument(
        "--long-prompt-frame", type=int, default=None, help="prompted frame in --long mode (default: the middle one)"
    )
    p.add_argument(
        "--frames",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="comma-separated N (default 50,200,1000)",
    )
    p.add_argument("--objects", type=int, default=2, choices=range(1, 9), help="objects prompted")
    p.add_argument(
        "--objects-table",
        action="store_true",
        help="time per frame for --table-objects objects at --table-sizes, SAM 2's one-by-one loop vs batched "
        "objects (SAM2_BATCH_OBJECTS), model-only and run_job, side by side",
    )
    p.add_argument(
        "--table-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1024, 256],
        help="image sizes of --objects-table",
    )
    p.add_argument(
        "--table-objects",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 3, 8],
        help="object counts of --objects-table (1 to 8; the first is the base of the growth columns)",
    )
    p.add_argument(
        "--table-frames",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[12],
        help="frames of the --objects-table video, one number or one per --table-sizes entry",
    )
    p.add_argument(
        "--table-paths",
        type=lambda s: s.split(","),
        default=["model", "job"],
        help="paths of --objects-table: model (model-only), job (run_job), or both",
    )
    p.add_argument(
        "--table-repeats", type=int, default=2, help="runs of each --objects-table cell (the lowest median counts)"
    )
    p.add_argument(
        "--feed",
        action="store_true",
        help="what feeds the model: stage costs, the pipeline alone, job / model-only with realistic and noise "
        "masks (default 1024 px); with --base, the same for another checkout side by side",
    )
    p.add_argument("--base", default=None, help="--feed: root of a checkout of the code to compare with (today's)")
    p.add_argument("--feed-pipeline-frames", type=int, default=60, help="--feed: frames of the pipeline-alone video")
    p.add_argument("--feed-model-frames", type=int, default=8, help="--feed: frames of the job / model-only video")
    p.add_argument(
        "--feed-workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2],
        help="--feed: prefetch workers of the pipeline-alone runs",
    )
    p.add_argument(
        "--feed-masks", default="realistic", choices=("realistic", "noise"), help="--feed: pipeline-alone masks"
    )
    p.add_argument(
        "--feed-repeats", type=int, default=2, help="--feed: runs of each pipeline-alone cell (fastest kept)"
    )
    p.add_argument("--feed-skip-pipeline", action="store_true", help="--feed: job / model-only only")
    p.add_argument("--feed-skip-model", action="store_true", help="--feed: the pipeline alone only (no SAM 2)")
    p.add_argument("--parity-frames", type=int, default=None, help="frames of the parity video (default 60)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="SAM 2 input size (default 256 on CPU, 1024 on CUDA; 128 with --quick)",
    )
    p.add_argument("--model-size", default="tiny", choices=sorted(PUBLISHED_A100_FPS), help="SAM 2.1 model size")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="torch device")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in each measurement (default on CPU: 1, which leaves a core to the decode "
        "and export threads and keeps timings stable on a shared machine; 0 = torch's default)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the predictor (vos_optimized; CUDA)")
    p.add_argument(
        "--skip-stock-above", type=int, default=0, help="skip the stock path for N above this (0: never skip)"
    )
    p.add_argument(
        "--all-exports",
        action="store_true",
        help="also run our job with every export on (scenediff, review, davis, ytvis, mots) and compare it",
    )
    p.add_argument(
        "--quality",
        action="store_true",
        help="also run our job without quality signals (review/quality.json) and compare: the plain job has them",
    )
    p.add_argument("--workdir", default="/tmp/bench_video", help="cache for videos, exports and per-child logs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    cuda = args.device == "cuda"
    if args.device == "auto":
        import torch

        cuda = torch.cuda.is_available()
    if args.threads is None:
        args.threads = 0 if cuda else 1
    if args.image_size is None:
        args.image_size = 128 if args.quick else (1024 if cuda or args.feed else 256)
    if args.frames is None:
        args.frames = [10, 20] if args.quick else [50, 200, 1000]
    if args.parity_frames is None:
        args.parity_frames = 20 if args.quick else 60
    if args.quick and args.long:
        args.long_frames = min(args.long_frames, 300)
        args.time_bound = min(args.time_bound, 30.0)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(json.loads(args.child), CHILDREN)
        return
    if args.long:
        main_long(args)
    elif args.objects_table:
        main_objects(args)
    elif args.feed:
        main_feed(args)
    else:
        main_bench(args)


if __name__ == "__main__":
    main()
