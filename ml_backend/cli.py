"""Worker-side commands of ``python -m ml_backend``: ``worker``, ``propagate``, ``status``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ml_backend import models
from ml_backend.exceptions import MLBackendError, PromptError
from ml_backend.exporters.registry import choose_exports
from ml_backend.models import resolve_device
from ml_backend.settings import Settings
from ml_backend.video.options import JobOptions
from ml_backend.video.pipeline import check_job, run_job
from ml_backend.video.prompts import load_prompts
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker


def _worker(args: argparse.Namespace) -> int:

    settings = Settings.from_env()
    worker = make_worker(settings, preload=not args.lazy)
    worker.work(burst=args.burst, with_scheduler=False, logging_level="INFO")
    return 0


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a folder this process can create and write, or :class:`PromptError`."""

    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise PromptError(f"--out {out} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PromptError(f"--out {out} lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PromptError(f"--out {out}: {existing} is not writable by this user")
    return path


def _propagate(args: argparse.Namespace) -> int:

    try:
        return _propagate_checked(args, Settings.from_env())
    except MLBackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a disk full, a file that vanished: one line, not a traceback
        print(f"error: {exc.strerror or exc} ({exc.filename or 'output'})", file=sys.stderr)
        return 1


def _propagate_checked(args: argparse.Namespace, settings) -> int:
    """Everything is checked before the model loads: prompts, videos (frame counts, sizes),
    the output folder; then propagate, with progress bars."""

    spec = load_prompts(args.prompts)
    if args.format:
        spec.format = args.format
    # One rule: a path written in a file is relative to that file, a path typed on the command line
    # to the current folder; both are made absolute here (a queued job runs elsewhere).
    base = Path(args.prompts).resolve().parent
    videos = {k: str((base / Path(v).expanduser()).resolve()) for k, v in spec.videos.items()}
    for key in ("video1", "video2"):
        if getattr(args, key):
            videos[key] = str(Path(getattr(args, key)).expanduser().resolve())
    out = check_out_dir(args.out)
    check_job(spec, videos)
    choose_exports(spec, [*settings.export_list, *(args.export or [])], review=not args.no_review)
    if args.queue:
        job = JobQueue.from_settings(settings).enqueue_prompts(
            json.loads(Path(args.prompts).read_text()), videos, str(out.resolve())
        )
        print(f"queued job {job.id}; follow it with: python -m ml_backend status {job.id} --follow")
        return 0
    predictor = models.build_video_predictor(settings)  # looked up here, so tests can stand in for it
    options = JobOptions.from_settings(
        settings,
        exports=args.export or (),
        review=not args.no_review,
        quality=not args.no_quality,
        device=resolve_device(settings.device),
    )
    bars: dict[str, tqdm] = {}

    def progress(video: str, done: int, total: int) -> None:
        bar = bars.get(video) or bars.setdefault(video, tqdm(total=total, desc=video, unit="frame"))
        bar.update(done - bar.n)

    try:
        result = run_job(
            predictor,
            spec,
            videos,
            out,
            options,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    result.close()
    for path in result.files:
        print(path)
    return 0


def _status(args: argparse.Namespace) -> int:

    queue = JobQueue.from_settings(Settings.from_env())
    if not args.job_id:
        for job_id in queue.jobs():
            info = queue.status(job_id) or {}
            frames = info.get("frames") or {}
            eta = info.get("eta_seconds")
            speed = f"{info['fps']:.2f} fps" if info.get("fps") else ""
            speed += f", ETA {eta:.0f} s" if eta else ""
            print(
                f"{job_id:50s} {info.get('status', '?'):10s} {frames.get('done', 0)}/{frames.get('total', 0)} "
                f"({frames.get('percent', 0):g} %) {speed} {info.get('error', '')}".rstrip()
            )
        return 0
    bars: dict[str, tqdm] = {}
    while True:
        info = queue.status(args.job_id)
        if info is None:
            print(f"error: no job {args.job_id}", file=sys.stderr)
            return 1
        for video, p in info["progress"].items():
            bar = bars.get(video) or bars.setdefault(video, tqdm(total=p["total"], desc=video, unit="frame"))
            bar.update(p["done"] - bar.n)
        if not args.follow or info["status"] in ("finished", "failed", "canceled", "stopped"):
            break
        time.sleep(1)
    for bar in bars.values():
        bar.close()
    print(json.dumps(info, indent=2, default=str))
    return 0 if info["status"] != "failed" else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="run an RQ worker for propagation jobs")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--lazy", action="store_true", help="load the model on the first job")
    worker.set_defaults(func=_worker)

    prop = sub.add_parser("propagate", help="propagate a prompt file through videos, without Label Studio")
    prop.add_argument("--video1", help="video file or folder of frames (segment for greenscreen)")
    prop.add_argument("--video2", help="second video of a SceneDiff pair")
    prop.add_argument("--prompts", required=True, help="prompt JSON file (format in the README)")
    prop.add_argument("--out", required=True, help="output folder")
    prop.add_argument("--format", choices=["scenediff", "greenscreen"], help="override the prompt file's format")
    prop.add_argument(
        "--export",
        action="append",
        metavar="FORMAT",
        help="also write this format (davis, ytvis, mots); repeat for several",
    )
    prop.add_argument("--no-review", action="store_true", help="skip overlay videos and contact sheets")
    prop.add_argument(
        "--no-quality", action="store_true", help="skip the per-frame quality signals and drift flags (quality.json)"
    )
    prop.add_argument("--queue", action="store_true", help="enqueue on Redis for a worker instead of running here")
    prop.set_defaults(func=_propagate)

    status = sub.add_parser("status", help="list jobs, or show one job's progress")
    status.add_argument("job_id", nargs="?")
    status.add_argument("--follow", action="store_true", help="progress bars until the job ends")
    status.set_defaults(func=_status)
