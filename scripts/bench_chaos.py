#!/usr/bin/env python
"""Chaos run: Label Studio task jobs on several workers while everything around them breaks.

``--jobs`` (48) green-screen task jobs, one per task (each task its own take, so each publishes
into its own folder), submitted as Label Studio's webhook would, run by ``--workers`` (4) worker
processes (this project's worker around ``bench_workers.py``'s sleeping stand-in model, so the
run measures the job machinery, not SAM 2), while:

- **Label Studio flaps**: the stand-in Label Studio (``tests/fake_labelstudio.py``, the HTTP API
  the jobs use) goes down for ``--down-for`` s every ``--flap-every`` s, and between outages
  answers 500 to every task-data write in bursts of ``--burst-for`` s every ``--burst-every`` s;
- **Redis restarts** (``--redis-restarts`` times, down 2 s each; append-only file kept);
- **a worker is kill -9ed** (``--kills`` times, one running a job), and a replacement started.

When every job has ended, the chaos stops and the run waits (at most ``--settle`` s) for every
task's Label Studio columns to follow RQ's truth. It prints a table: jobs finished, published
exactly once (``sam2:published:<job>`` = 1), predictions per task (duplicates, missing),
exports complete, tasks left stale (columns not ``done``), and the chaos applied. Exit status 1
if any check fails.

Usage::

    .venv/bin/python scripts/bench_chaos.py [--jobs 48] [--workers 4] [--frames 16] [--frame-cost 0.1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import bench_workers as bw  # noqa: E402

PROJECT = 1
CONFIG = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
W, H = bw.WIDTH, bw.HEIGHT


class Chaos:
    """The breakage, on a thread of its own, until :meth:`stop`."""

    def __init__(self, args: argparse.Namespace, ls: Any, redis: dict[str, Any], fleet: Any, jobs: Any) -> None:
        self.args, self.ls, self.redis, self.fleet, self.jobs = args, ls, redis, fleet, jobs
        self.done = threading.Event()
        self.counts = {"Label Studio outages": 0, "500 bursts on task writes": 0, "Redis restarts": 0, "kill -9": 0}
        self.events: list[str] = []
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def note(self, text: str) -> None:
        self.events.append(f"t={time.monotonic() - self.t0:5.1f} s: {text}")
        print(self.events[-1], flush=True)

    def _run(self) -> None:
        a = self.args
        plan: list[tuple[float, str]] = []
        plan += [(a.flap_every * (i + 1), "flap") for i in range(1000)]
        plan += [(a.burst_every * (i + 1) + a.burst_every / 2, "burst") for i in range(1000)]
        plan += [(a.kill_at + 10 * i, "kill") for i in range(a.kills)]
        plan += [(a.redis_at + 15 * i, "restart_redis") for i in range(a.redis_restarts)]
        plan.sort()
        for at, what in plan:
            if self.done.wait(max(0.0, at - (time.monotonic() - self.t0))):
                return
            try:
                getattr(self, what)()
            except Exception as exc:  # the chaos goes on
                self.note(f"{what} failed: {type(exc).__name__}: {exc}")

    def flap(self) -> None:
        self.ls.stop()
        self.counts["Label Studio outages"] += 1
        self.note(f"Label Studio down for {self.args.down_for:g} s")
        self.done.wait(self.args.down_for)
        self.ls.start()

    def burst(self) -> None:
        self.ls.fail_task_writes = 500
        self.counts["500 bursts on task writes"] += 1
        self.note(f"500 on every task write for {self.args.burst_for:g} s")
        self.done.wait(self.args.burst_for)
        self.ls.fail_task_writes = None

    def restart_redis(self) -> None:
        proc = self.redis["proc"]
        proc.terminate()
        proc.wait(timeout=20)
        self.counts["Redis restarts"] += 1
        self.note("Redis stopped (restarting in 2 s)")
        time.sleep(2)
        self.redis["proc"] = bw.start_redis(self.redis["dir"], self.redis["port"])
        bw.wait_for_redis(self.redis["url"])

    def kill(self) -> None:
        from rq.registry import StartedJobRegistry

        held = {}
        for job_id in StartedJobRegistry(queue=self.jobs.queue).get_job_ids(cleanup=False):
            job = self.jobs.fetch(job_id)
            if job is not None and job.worker_name in self.fleet.live():
                held[job.worker_name] = job_id
        live = self.fleet.live()
        if not live:
            return
        victim = random.Random(len(self.events)).choice(sorted(held) or live)
        self.fleet.kill(victim)
        self.counts["kill -9"] += 1
        self.note(f"kill -9 {victim} (job {held.get(victim, 'none')}); replacement {self.fleet.start()} started")

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=30)
        self.ls.fail_task_writes = None
        if self.ls._server is None:
            self.ls.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16, help="frames per job's video")
    parser.add_argument("--frame-cost", type=float, default=0.1, help="seconds of (sleeping) model work per frame")
    parser.add_argument("--flap-every", type=float, default=7.0)
    parser.add_argument("--down-for", type=float, default=2.0)
    parser.add_argument("--burst-every", type=float, default=5.0)
    parser.add_argument("--burst-for", type=float, default=2.0)
    parser.add_argument("--kill-at", type=float, default=8.0, help="seconds into the run of the first kill -9")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--redis-at", type=float, default=14.0, help="seconds into the run of the first Redis restart")
    parser.add_argument("--redis-restarts", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the jobs may take")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds the columns may take to settle after")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from ml_backend.labelstudio.annotations import fingerprint
    from ml_backend.settings import Settings
    from ml_backend.video.synthetic import moving_shapes
    from ml_backend.worker.queue import JobQueue
    from tests.fake_labelstudio import FakeLabelStudio

    tmp = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    port = bw.free_port()
    redis = {"dir": tmp / "redis", "port": port, "url": f"redis://127.0.0.1:{port}/0"}
    redis["dir"].mkdir()
    redis["proc"] = bw.start_redis(redis["dir"], port)
    bw.wait_for_redis(redis["url"])

    root = tmp / "ls_files"
    root.mkdir()
    clip = moving_shapes(num_frames=args.frames, height=H, width=W)
    clip.write(root / "seg.mkv")
    ls = FakeLabelStudio(root)
    ls.add_project(PROJECT, CONFIG)
    x, y = clip.shapes["disc"].center(0.0)
    region = {
        "from_name": "kp", "to_name": "image", "type": "keypointlabels", "item_index": 0,
        "original_width": W, "original_height": H, "is_positive": True,
        "value": {"x": x / W * 100, "y": y / H * 100, "width": 1, "keypointlabels": ["Subject 1"]},
    }  # fmt: skip
    tasks = list(range(1, args.jobs + 1))
    for task in tasks:
        ls.add_task(task, PROJECT, {
            "frames": ["/data/local-files/?d=f0.png", "/data/local-files/?d=f3.png"], "frame_indices": [0, 3],
            "video": "/data/local-files/?d=seg.mkv", "segment_index": 0, "segment_frames": [args.frames],
            "start_frame": 0, "take": f"take{task:03d}", "preview": "",
        })  # fmt: skip
        ls.add_annotation(1000 + task, task, [region])
    ls.start()

    data_dir = tmp / "data"
    env = bw.worker_env(redis["url"], data_dir, tmp / "spool")
    (tmp / "spool").mkdir()
    env.update(
        LABEL_STUDIO_URL=ls.url,
        LABEL_STUDIO_API_KEY=ls.token,
        LABEL_STUDIO_BEST_EFFORT_SECONDS="2",
        WORKER_ALIVE_TTL="4",
    )
    settings = Settings(
        redis_url=redis["url"], queue_name=bw.QUEUE, label_studio_url=ls.url, label_studio_api_key=ls.token,
        data_dir=data_dir, checkpoint="random", device="cpu", label_studio_best_effort_seconds=2.0,
    )  # fmt: skip
    jobs = JobQueue.from_settings(settings)
    (tmp / "logs").mkdir()
    fleet = bw.Fleet(env, tmp / "logs", args.frame_cost, itertools.count(1))
    status = 1
    try:
        for _ in range(args.workers):
            fleet.start()
        bw.wait_registered(jobs, args.workers, fleet)
        started = time.monotonic()
        ids: dict[int, str] = {}
        for task in tasks:
            annotation = ls.annotations[1000 + task]
            reply = jobs.on_webhook({"action": "ANNOTATION_UPDATED", "annotation": annotation, "project": PROJECT})
            ids[task] = reply["job_id"]
        assert all(ids[t].endswith(fingerprint(ls.annotations[1000 + t])) for t in tasks)
        chaos = Chaos(args, ls, redis, fleet, jobs)
        chaos.thread.start()
        found: dict[str, Any] = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                found = bw.fetch(jobs, list(ids.values()))
            except Exception:  # Redis restarting
                time.sleep(0.5)
                continue
            if all(bw.status_of(j) in bw.TERMINAL for j in found.values()):
                break
            time.sleep(0.5)
        jobs_took = time.monotonic() - started
        chaos.stop()
        print(f"all jobs ended after {jobs_took:.0f} s; chaos stopped; waiting for the columns to settle", flush=True)

        def stale() -> list[int]:
            return [t for t in tasks if ls.tasks[t]["data"].get("job_state") != "done"]

        settle_deadline = time.monotonic() + args.settle
        while stale() and time.monotonic() < settle_deadline:
            time.sleep(0.5)
        settled_after = time.monotonic() - started - jobs_took
        found = bw.fetch(jobs, list(ids.values()))
        statuses = [bw.status_of(found[ids[t]]) for t in tasks]
        published = [int(jobs.connection.get(f"sam2:published:{ids[t]}") or 0) for t in tasks]
        per_task = {t: 0 for t in tasks}
        for prediction in ls.predictions:
            task = prediction.get("task")
            per_task[task] = per_task.get(task, 0) + 1
        out = data_dir / "results" / f"project_{PROJECT}" / "greenscreen"
        complete = [len(list((out / f"take{t:03d}").glob("frame_*_masked.png"))) == args.frames for t in tasks]
        retries = [settings.job_retries - (found[ids[t]].retries_left or 0) for t in tasks]
        running = [t for t in tasks if ls.tasks[t]["data"].get("job_state") == "running"]
        rows = [
            ("jobs finished", f"{statuses.count('finished')} / {len(tasks)}", statuses.count("finished") == len(tasks)),
            ("published exactly once", f"{published.count(1)} / {len(tasks)}", published.count(1) == len(tasks)),
            ("tasks with one prediction", f"{sum(1 for v in per_task.values() if v == 1)} / {len(tasks)}",
             all(v == 1 for v in per_task.values())),
            ("duplicate predictions", str(sum(max(0, v - 1) for v in per_task.values())),
             all(v <= 1 for v in per_task.values())),
            ("exports complete", f"{sum(complete)} / {len(tasks)}", all(complete)),
            ("columns stale (not done)", f"{len(stale())} (running: {len(running)})", not stale()),
        ]  # fmt: skip
        print("\n| check | result | ok |\n|---|---|---|")
        for name, value, ok in rows:
            print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
        print("\n| chaos | count |\n|---|---|")
        for name, count in chaos.counts.items():
            print(f"| {name} | {count} |")
        print(f"| retries used (by kill -9 or Label Studio past its budget) | {sum(retries)} |")
        print(f"\njobs: {args.jobs} on {args.workers} workers, {args.frames} frames × {args.frame_cost:g} s each; "
              f"all ended in {jobs_took:.0f} s; columns settled {settled_after:.0f} s later")  # fmt: skip
        status = 0 if all(ok for _, _, ok in rows) else 1
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "checks": {name: value for name, value, _ in rows},
                        "chaos": chaos.counts,
                        "events": chaos.events,
                        "seconds": {"jobs": jobs_took, "settle": settled_after},
                        "ok": status == 0,
                    },
                    indent=2,
                )
            )
        if status:
            for name in fleet.procs:
                print(f"--- {name}\n{fleet.tail(name)}")
    finally:
        fleet.stop(grace=10)
        ls.stop()
        redis["proc"].terminate()
        redis["proc"].wait(timeout=20)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return status


if __name__ == "__main__":
    if "--worker" in sys.argv:
        bw.worker_main(float(sys.argv[sys.argv.index("--frame-cost") + 1]))
    else:
        sys.exit(main())
