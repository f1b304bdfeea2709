"""``--long``: memory over a 10-minute 1080p video, our ``run_job`` only.

A video of ``--long-frames`` frames at 30 fps (18,000 by default: one moving shape on a static
background, or ``--long-objects`` shapes) goes through ``run_job`` (:mod:`bench.job`) in a fresh process until
``--time-bound`` seconds have passed (the job is aborted from its progress callback). RSS is
sampled at every frame and reported at 10 %, 50 % and 100 % of the frames processed, with its
spread and growth over the run; peak RSS must stay under 8 GiB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.report import check, fmt_mib, host_line
from bench.runner import curve, spawn
from bench.video import HEIGHT, WIDTH, MiB, make_video

LONG_RSS_LIMIT = 8 * 1024 * MiB


def main_long(args: argparse.Namespace) -> None:
    """The ``--long`` run in a fresh process, and its table."""
    workdir = Path(args.workdir)
    frames = args.long_frames
    print(
        f"# bench_video --long: {frames} frames of {WIDTH}×{HEIGHT} at 30 fps, time bound {args.time_bound} s, "
        f"{args.model_size} @ {args.image_size} px on {host_line(args)}",
        flush=True,
    )
    objects = getattr(args, "long_objects", 1)
    video = make_video(workdir, frames, objects, jpeg=False)["mp4"]
    prompt_frame = frames // 2 if args.long_prompt_frame is None else args.long_prompt_frame
    cfg = {
        "kind": "job",
        "threads": args.threads,
        "model_size": args.model_size,
        "image_size": args.image_size,
        "device": args.device,
        "compile": args.compile,
        "objects": objects,
        "batch_objects": getattr(args, "batch_objects", True),
        "seed": 0,
        "frames": frames,
        "prompt_frame": prompt_frame,
        "video": str(video),
        "out_dir": str(workdir / "out" / "long"),
        "time_bound": args.time_bound,
        "rss_limit": LONG_RSS_LIMIT,
        "long": True,
    }
    print(f"[{time.strftime('%H:%M:%S')}] run_job on {video.name}, prompt on frame {prompt_frame}", flush=True)
    r = spawn(cfg, workdir / "logs", "long")
    print()
    print(
        f"### Long video: {frames} frames ({frames / 30 / 60:.1f} min at 30 fps) {WIDTH}×{HEIGHT} mp4v, "
        f"SAM 2.1 {args.model_size} (random weights) @ {args.image_size} px, {host_line(args)}, "
        f"our run_job, {objects} object(s) prompted on frame {prompt_frame} "
        f"({'batched' if cfg['batch_objects'] else 'one by one'}), stopped after {args.time_bound} s"
    )
    print()
    print("| measurement | value | goal |")
    print("|---|---:|---|")
    if "error" in r:
        print(f"| run | FAILED: {r['error']} (log {r['log']}) | |")
        return
    done = r["processed"]
    print(
        f"| frames processed (of {frames}) | {done} ({done / max(r['seconds'], 1e-9):.2f} frames/s, {r['seconds']:.0f} s) | |"
    )
    print(f"| stopped by | {r['stopped'] or 'end of video'} | |")
    print(f"| RSS after model build MiB | {fmt_mib(r['baseline_rss'])} | |")
    for p in r["curve"]:
        print(
            f"| RSS at {p['fraction'] * 100:.0f} % of processed frames (frame #{p['frames']}, {p['seconds']:.0f} s) MiB "
            f"(COCO RLE bytes produced so far) | {fmt_mib(p['rss'])} ({fmt_mib(p.get('rle'))}) | flat |"
        )
    samples = r.get("samples") or []
    if len(samples) >= 4:
        half = samples[len(samples) // 2 :]
        spread = max(s[2] for s in half) - min(s[2] for s in half)
        print(f"| RSS spread over the second half of the run MiB | {spread / MiB:.0f} | ≈ 0 |")
        first = curve(samples, (0.1,))[0]["rss"]
        growth = (samples[-1][2] - first) / MiB
        per_1000 = growth / max(1, (samples[-1][0] - curve(samples, (0.1,))[0]["frames"])) * 1000
        print(f"| RSS growth from 10 % to 100 % MiB (per 1000 frames) | {growth:.0f} ({per_1000:.1f}) | ≈ 0 |")
        if len(samples[-1]) > 3:
            c10 = curve(samples, (0.1,))[0]
            rle_growth = (samples[-1][3] - (c10["rle"] or 0)) / MiB
            print(f"| COCO RLE bytes produced from 10 % to 100 % (output, for comparison) MiB | {rle_growth:.0f} | |")
    peak = r["peak_rss"]
    print(f"| peak RSS MiB | {fmt_mib(peak)} | ≤ 8,192{check(peak, LONG_RSS_LIMIT)} |")
    if r.get("gpu_peak"):
        print(f"| peak GPU memory MiB | {fmt_mib(r['gpu_peak'])} | |")
    if done and r["seconds"]:
        eta = frames / (done / r["seconds"])
        print(f"| projected time for all {frames} frames at this rate | {eta / 3600:.1f} h | |")
    print(flush=True)
