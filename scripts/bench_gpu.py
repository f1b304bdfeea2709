#!/usr/bin/env python
"""Every GPU measurement of this project in one run of at most about 6 minutes, one table.

Installs nothing; builds SAM 2.1 from random weights; uses the synthetic 1080p video of
``scripts/bench/video.py``. Stages, each in fresh processes with its own time limit, each
printing its rows of the markdown table as soon as it ends (a cut run still reports):

1. **fps** (tiny, then large, at ``--image-size``, 1024 px by default): model-only vs our job FPS
   with 1 and 3 objects, the job with realistic masks (the video's own shapes) and with noise
   masks (SAM 2's random-weight output, the worst case); job / model-only median per-frame time;
2. **memory**: peak GPU memory of our job at 200 and 1,000 frames (peak RSS on the CPU);
3. **parity**: IoU of our job's masks vs SAM 2's stock path (CUDA: bf16 autocast), same weights;
4. **interactive**: ``scripts/bench_interactive.py`` over the production server (gunicorn
   ``gthread``): first, repeat and prefetched clicks p50/p95 with the ``Server-Timing``
   breakdown, and 8 concurrent clients' p95;
5. with ``--compile``: the tiny model compiled (``torch.compile``, vos-optimised), its compile
   time (model build + warm-up) and FPS.

``--device cpu --quick`` runs every stage on the CPU at 128 px with a few frames (the fast test
suite runs it); the table then has the same rows, with CPU figures.

Usage::

    .venv/bin/python scripts/bench_gpu.py                      # on a CUDA machine, ≤ 6 min
    .venv/bin/python scripts/bench_gpu.py --compile            # + the compiled variant
    .venv/bin/python scripts/bench_gpu.py --device cpu --quick # smoke run on the CPU
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.runner import spawn  # noqa: E402
from bench.video import MiB, make_video  # noqa: E402

#: Seconds each stage may take (GPU run; --quick on the CPU uses QUICK_LIMITS).
LIMITS = {"fps_tiny": 75, "fps_large": 90, "memory": 80, "parity": 40, "interactive": 60, "compile": 150}
QUICK_LIMITS = {"fps_tiny": 60, "fps_large": 60, "memory": 60, "parity": 60, "interactive": 90, "compile": 90}
HEADER = "| stage | measurement | value |\n|---|---|---|"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Every GPU measurement in one run (≤ 6 min), one markdown table.")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="smoke run: 128 px, a few frames, tiny only")
    p.add_argument("--compile", action="store_true", help="add the torch.compile variant (tiny) and its compile time")
    p.add_argument("--image-size", type=int, default=None, help="SAM 2 input size (default 1024; 128 with --quick)")
    p.add_argument("--frames", type=int, default=None, help="frames of the FPS video (default 120; 4 with --quick)")
    p.add_argument(
        "--lengths",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="video lengths of the memory stage (default 200,1000; 6,10 with --quick)",
    )
    p.add_argument(
        "--models", default=None, help="model sizes of the FPS stage (default tiny,large; tiny with --quick)"
    )
    p.add_argument("--workdir", default="/tmp/bench_gpu", help="videos, logs and exports")
    args = p.parse_args(argv)
    args.image_size = args.image_size or (128 if args.quick else 1024)
    args.frames = args.frames or (4 if args.quick else 120)
    args.lengths = args.lengths or ([6, 10] if args.quick else [200, 1000])
    args.models = (args.models or ("tiny" if args.quick else "tiny,large")).split(",")
    args.limits = QUICK_LIMITS if args.quick else LIMITS
    return args


def row(stage: str, what: str, value: str) -> None:
    print(f"| {stage} | {what} | {value} |", flush=True)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{1000 * seconds:.1f} ms"


def fps_rows(stage: str, result: dict[str, Any]) -> None:
    if "error" in result:
        row(stage, "failed", f"{result['error']} (log: {result.get('log')})")
        return
    row(stage, "model build + warm-up", f"{result['build_seconds']:.1f} s")
    for objects, runs in result["runs"].items():
        model = runs["model"]
        model_fps = model["frames"] / model["seconds"]
        row(stage, f"{objects} obj: model-only FPS (median frame)", f"{model_fps:.1f} ({_ms(model['median_step'])})")
        for masks in ("realistic", "noise"):
            job = runs[f"job_{masks}"]
            ratio = job["median_step"] / model["median_step"] if job["median_step"] and model["median_step"] else None
            tl = job.get("timeline") or {}
            row(
                stage,
                f"{objects} obj: job FPS, {masks} masks (job / model-only median frame; wall)",
                f"{job['frames'] / job['seconds']:.1f} ({'—' if ratio is None else f'{ratio:.2f}'}; "
                f"{job['seconds'] / model['seconds']:.2f}); model thread: model {tl.get('model_ms') or 0:.1f} ms, "
                f"ours {tl.get('ours_ms') or 0:.1f} ms; export thread CPU {tl.get('export_cpu_ms') or 0:.1f} ms",
            )


def interactive(args: argparse.Namespace, limit: float) -> None:
    stage = "interactive"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "bench_interactive.py"), "--device", args.device,
        "--model-size", "tiny", "--image-size", str(args.image_size), "--server", "gunicorn",
    ]  # fmt: skip
    cmd += (
        ["--quick", "--frames", "1", "--repeat", "2", "--baseline", "1", "--clients", "2", "--clicks-per-client", "1",
         "--pages", "2"]
        if args.quick
        else ["--frames", "6", "--repeat", "30", "--baseline", "4", "--clients", "8", "--clicks-per-client", "4"]
    )  # fmt: skip
    log = Path(args.workdir) / "logs" / "interactive.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "w") as err:
            out = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=limit, cwd=str(ROOT)
            ).stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        row(stage, "stopped", f"time limit {limit:.0f} s (rows below are what it printed)")
    wanted = (
        ("first click (new frame", "first click"),
        ("repeat click (embedded frame", "repeat click"),
        ("first click on a page of an opened task", "prefetched first click"),
        ("baseline: set_image", "baseline (re-encode every click, in process)"),
    )
    found = False
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for prefix, label in wanted:
            if cells and cells[0].startswith(prefix) and len(cells) >= 4:
                row(stage, f"{label}: p50 / p95", f"{cells[2]} / {cells[3]} ms")
                found = True
        if cells and "concurrent clients x" in cells[0] and len(cells) >= 4:
            row(stage, f"{cells[0].split(' (')[0]}: p50 / p95", f"{cells[2]} / {cells[3]} ms")
        if cells and cells[0] in ("first click", "repeat click", "prefetched first click") and len(cells) > 4:
            row(stage, f"Server-Timing, {cells[0]} (p50 ms: HTTP, parts…, total, overhead)", " / ".join(cells[1:-1]))
        if line.startswith("Server-Timing:"):
            row(stage, "Server-Timing", line.split(":", 1)[1].strip())
    if not found:
        row(stage, "failed", f"no result (log: {log})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    started = time.perf_counter()
    device = "cpu"
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("error: no CUDA device; use --device cpu", file=sys.stderr)
            return 2
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    workdir = Path(args.workdir)
    logdir = workdir / "logs"
    print(
        f"# bench_gpu: {device}, torch {torch.__version__}, {os.cpu_count()} cores, {args.image_size} px, "
        f"SAM 2.1 random weights, synthetic 1920×1080; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    videos = {
        n: make_video(workdir, n, 3, jpeg=False, log=lambda *_: None)["mp4"] for n in {args.frames, *args.lengths}
    }
    parity_frames = 6 if args.quick else 30
    parity_video = make_video(workdir, parity_frames, 3, mp4=False, log=lambda *_: None)["jpeg"]
    print(f"(videos ready in {time.perf_counter() - started:.0f} s)")
    print()
    print(HEADER, flush=True)
    base = {
        "device": args.device,
        "image_size": args.image_size,
        "seed": 0,
        "threads": 0 if args.device == "cuda" else 1,
    }
    for model in args.models:
        name = f"fps_{model}"
        cfg = {**base, "kind": "gpu_fps", "model_size": model, "frames": args.frames, "objects_list": [1, 3],
               "video": str(videos[args.frames]), "out_dir": str(workdir / "out" / name)}  # fmt: skip
        fps_rows(
            f"{model} @ {args.image_size}",
            spawn(cfg, logdir, name, log=lambda *_: None, timeout=args.limits.get(name, args.limits["fps_large"])),
        )
    mem = spawn(
        {**base, "kind": "gpu_memory", "model_size": "tiny", "lengths": args.lengths,
         "videos": [str(videos[n]) for n in args.lengths], "out_dir": str(workdir / "out" / "memory")},
        logdir, "memory", log=lambda *_: None, timeout=args.limits["memory"],
    )  # fmt: skip
    if "error" in mem:
        row("memory", "failed", f"{mem['error']} (log: {mem.get('log')})")
    for n, r in (mem if "error" not in mem else {}).items():
        if r.get("gpu_peak") is not None:
            row("memory", f"tiny, job, {n} frames: peak GPU memory", f"{r['gpu_peak'] / MiB:,.0f} MiB")
        else:
            row("memory", f"tiny, job, {n} frames: peak RSS (CPU run)", f"{r['peak_rss'] / MiB:,.0f} MiB")
    parity = spawn(
        {**base, "kind": "parity", "model_size": "tiny", "objects": 2, "frames": parity_frames,
         "prompt_frame": parity_frames // 2, "jpeg": str(parity_video), "out_dir": str(workdir / "out" / "parity")},
        logdir, "parity", log=lambda *_: None, timeout=args.limits["parity"],
    )  # fmt: skip
    dtype = "bf16 autocast" if args.device == "cuda" else "float32"
    if "error" in parity:
        row("parity", "failed", f"{parity['error']} (log: {parity.get('log')})")
    else:
        row("parity", f"IoU ours vs stock, {dtype}, {parity_frames} frames × 2 objects: min / mean",
            f"{parity['min_iou']:.4f} / {parity['mean_iou']:.4f}")  # fmt: skip
    interactive(args, args.limits["interactive"])
    if args.compile:
        cfg = {**base, "kind": "gpu_fps", "model_size": "tiny", "frames": args.frames, "objects_list": [1],
               "compile": True, "video": str(videos[args.frames]), "out_dir": str(workdir / "out" / "compile")}  # fmt: skip
        fps_rows("tiny compiled", spawn(cfg, logdir, "compile", log=lambda *_: None, timeout=args.limits["compile"]))
    row("total", "wall time of this run", f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
