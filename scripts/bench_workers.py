#!/usr/bin/env python
"""Many workers, one Redis: throughput of propagation jobs with 1, 2, 4, 8 RQ workers, and
exactly-once completion while workers are killed with SIGKILL.

What runs is the real job path (``JobQueue.enqueue_prompts`` → RQ → ``ml_backend.worker.runner.Worker``
→ ``propagate_prompts`` → ``run_job``: video decoding, mask encoding, the mask spool, the atomic
SceneDiff export), around a stand-in model: ``StandInPredictor`` from ``bench_video.py`` with a
fixed per-frame cost, ``time.sleep(--frame-cost)`` inside ``propagate_in_video``. The cost is
waiting, not CPU, as a GPU-bound worker waits on its own GPU, so N workers on a 2-core machine
stand for N GPU machines sharing one Redis. The SAM 2 model is never built.

The script starts its own ``redis-server`` (loopback, free port, append-only file, temp dir),
writes two small synthetic videos (64×48, ``--frames`` and ``--chaos-frames`` long) and starts
workers as fresh processes (this script with ``--worker``), each in its own session so a
``kill -9`` hits the whole process group.

- **Scaling**: for each N in ``--workers``: start N workers and wait until all are registered,
  enqueue ``--jobs`` jobs (one SceneDiff prompt document, one object prompted on the middle
  frame, each job with its own output folder), time from the first enqueue to the last job's
  ``ended_at``. Throughput = jobs / s; ``× vs 1`` = throughput / throughput at N = 1; efficiency
  = (× vs 1) / N, goal ≥ 0.9.
- **Chaos**: ``--chaos-workers`` workers (4) on ``--jobs`` longer jobs; every ``--kill-every``
  seconds the process group of one random live worker (one running a job, if any is) gets
  SIGKILL, and a replacement is started (``--replace-after`` seconds later; 0 by default). The
  bench only kills and starts workers: requeueing abandoned jobs is the workers' business
  (nothing here runs RQ registry maintenance; note that a starting RQ worker runs it once, so
  a ``--replace-after`` longer than ``JOB_HEARTBEAT_TTL`` shows the recovery without that help).
  It waits until every job is finished or failed,
  at most ``--chaos-timeout`` seconds, then checks exactly-once: every job ``finished``; every
  output folder holds exactly ``segments.pkl`` + ``inference_data.pkl`` (loadable, object 1,
  a mask on every frame, identical across jobs) and nothing else visible; every job published
  once — the Redis counter ``sam2:published:<job id>`` = 1 where workers keep it, otherwise
  exactly one successful execution in the job's RQ results. Kills, retries, the seconds from each
  kill until its job was requeued, restarted and finished, and leftovers (hidden entries of the
  output folders, mask spools of killed workers) are reported.

Exit status 1 if a job failed, is missing, published twice or has a bad export.

The defaults (48 jobs of 40 frames, chaos jobs of 160 frames, 50 ms per frame) take about 6
minutes; each scaling run stops after ``--scale-timeout`` s and the chaos run after
``--chaos-timeout`` s, whatever happens.

Usage::

    .venv/bin/python scripts/bench_workers.py [--jobs 48] [--workers 1,2,4,8] [--frame-cost 0.05]
                                              [--chaos-only | --no-chaos] [--json PATH] [--keep]
    .venv/bin/python scripts/bench_workers.py --jobs 8 --workers 1,2 --frames 20 \\
        --chaos-frames 40 --kill-every 5 --chaos-timeout 60     # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

WIDTH, HEIGHT = 64, 48
IMAGE_SIZE = 64  # the smallest SAM2_IMAGE_SIZE: frames cost as little CPU as possible
OBJ_ID = 1
QUEUE = "bench-workers"
HEARTBEAT_TTL = 6
PUBLISHED_KEY = "sam2:published:{job_id}"
GOAL_EFFICIENCY = 0.9
TERMINAL = {"finished", "failed", "canceled", "stopped"}


# -- worker process ---------------------------------------------------------------------------
def worker_main(frame_cost: float) -> None:
    """``--worker``: an RQ worker of this project whose model is the sleeping stand-in."""
    import torch
    from bench_video import StandInPredictor

    import ml_backend.models
    import ml_backend.video.pipeline  # noqa: F401
    import ml_backend.worker.jobs  # noqa: F401 - imported before the first job, as a preloaded worker would
    from ml_backend.settings import Settings
    from ml_backend.worker.runner import make_worker

    class SleepingPredictor(StandInPredictor):
        """``StandInPredictor`` that waits ``frame_cost`` seconds per frame, as on a busy GPU."""

        def propagate_in_video(self, state: dict[str, Any], *args: Any, **kwargs: Any):
            for item in super().propagate_in_video(state, *args, **kwargs):
                time.sleep(frame_cost)
                yield item

    settings = Settings.from_env()
    torch.set_num_threads(max(1, settings.torch_threads))
    predictor = SleepingPredictor(settings.image_size)
    # get_predictor builds through models.build_video_predictor whatever its cache key is
    ml_backend.models.build_video_predictor = lambda _settings: predictor
    worker = make_worker(settings, preload=False, name=os.environ["BENCH_WORKER_NAME"])
    worker.work(logging_level="WARNING")


# -- redis and worker processes ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path, port: int) -> subprocess.Popen:
    """A ``redis-server`` on loopback ``port``, append-only file in ``directory``."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("error: redis-server is not installed (apt-get install redis-server)")
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def wait_for_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    sys.exit("error: redis-server did not start")


@dataclass
class Fleet:
    """Worker processes, each in its own session; ``kill``/``stop`` act on whole process groups."""

    env: dict[str, str]
    logdir: Path
    frame_cost: float
    numbers: Iterator[int]  # shared by every fleet of a run, so worker names stay unique
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> str:
        name = f"bench-w{next(self.numbers):03d}"
        with open(self.logdir / f"{name}.log", "w") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", "--frame-cost", str(self.frame_cost)],
                cwd=ROOT,
                env={**self.env, "BENCH_WORKER_NAME": name},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return name

    def live(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (RQ's warm shutdown), then SIGKILL whatever is left after ``grace`` seconds."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.procs.clear()

    def tail(self, name: str, chars: int = 1500) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def worker_env(redis_url: str, data_dir: Path, spool_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "RQ_QUEUE": QUEUE,
        "SAM2_CHECKPOINT": "random",
        "SAM2_IMAGE_SIZE": str(IMAGE_SIZE),
        "SAM2_DEVICE": "cpu",
        "REVIEW_EXPORTS": "0",
        "GREENSCREEN_MP4": "0",
        "JOB_HEARTBEAT_TTL": str(HEARTBEAT_TTL),
        "DATA_DIR": str(data_dir),
        "TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(spool_dir),  # mask spools: a killed worker's are left here, counted at the end
        "TQDM_DISABLE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def wait_registered(jobs: Any, count: int, fleet: Fleet, timeout: float = 180.0) -> None:
    """Until ``count`` workers are registered on the queue (imports done, listening)."""
    from rq import Worker

    deadline = time.monotonic() + timeout
    while Worker.count(connection=jobs.connection, queue=jobs.queue) < count:
        dead = [name for name, proc in fleet.procs.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"worker {dead[0]} exited at start:\n{fleet.tail(dead[0])}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {Worker.count(connection=jobs.connection, queue=jobs.queue)} of {count} workers started"
            )
        time.sleep(0.2)


# -- jobs -------------------------------------------------------------------------------------
def make_video(directory: Path, frames: int) -> Path:
    from ml_backend.video.synthetic import moving_shapes

    return moving_shapes(num_frames=frames, height=HEIGHT, width=WIDTH).write(directory / f"shapes_{frames}.mkv")


def prompt_document(frames: int) -> dict[str, Any]:
    """One object, prompted on the middle frame: the job propagates forward and backward."""
    return {
        "format": "scenediff",
        "objects": [{"id": OBJ_ID, "prompts": [{"frame": frames // 2, "points": [[20.0, 20.0]], "labels": [1]}]}],
    }


def enqueue(jobs: Any, count: int, video: Path, frames: int, out_root: Path) -> dict[str, dict[str, Any]]:
    """``{job_id: {"out": folder, "enqueued": wall time}}`` for ``count`` new jobs."""
    prompts = prompt_document(frames)
    out = {}
    for i in range(count):
        folder = out_root / f"job_{i:03d}"
        job = jobs.enqueue_prompts(prompts, {"video1": str(video)}, str(folder))
        out[job.id] = {"out": folder, "enqueued": time.time()}
    return out


def fetch(jobs: Any, ids: list[str]) -> dict[str, Any]:
    """The RQ jobs ``ids`` in one round trip (``None`` for a missing one), with the queue's serializer."""
    from rq.job import Job

    found = Job.fetch_many(ids, connection=jobs.connection, serializer=jobs.queue.serializer)
    return dict(zip(ids, found, strict=True))


def status_of(job: Any) -> str:
    if job is None:
        return "missing"
    status = job.get_status(refresh=False)
    return str(getattr(status, "value", status))


def epoch(dt: Any) -> float | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def wait_done(jobs: Any, ids: list[str], timeout: float, tick: Any = None, interval: float = 0.25) -> dict[str, Any]:
    """Poll until every job is in a terminal state or ``timeout`` passes; ``tick(found)`` each poll."""
    deadline = time.monotonic() + timeout
    while True:
        found = fetch(jobs, ids)
        if tick is not None:
            tick(found)
        if all(status_of(j) in TERMINAL for j in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(interval)


# -- export checks ----------------------------------------------------------------------------
def check_export(folder: Path, frames: int) -> dict[str, Any]:
    """Whether ``folder`` holds one complete SceneDiff export of the stand-in's masks."""
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    hidden = [e for e in entries if e.startswith(".")]
    extra = [e for e in entries if not e.startswith(".") and e not in ("segments.pkl", "inference_data.pkl")]
    out: dict[str, Any] = {"hidden": hidden, "extra": extra, "masks": None, "problem": None}
    try:
        with open(folder / "segments.pkl", "rb") as f:
            segments = pickle.load(f)
        with open(folder / "inference_data.pkl", "rb") as f:
            inference = pickle.load(f)
    except Exception as exc:  # missing or unreadable
        out["problem"] = f"{type(exc).__name__}: {exc}"
        return out
    masks = segments.get("video1_objects", {})
    want = {str(i) for i in range(frames)}
    if set(masks) != {OBJ_ID}:
        out["problem"] = f"objects {sorted(masks)} in segments.pkl, expected [{OBJ_ID}]"
    elif set(masks[OBJ_ID]) != want:
        out["problem"] = f"masks on {len(masks[OBJ_ID])} of {frames} frames"
    elif any(rle["size"] != [HEIGHT, WIDTH] for rle in masks[OBJ_ID].values()):
        out["problem"] = "a mask has the wrong size"
    elif [o["original_obj_idx"] for o in inference.get("objects", [])] != [OBJ_ID]:
        out["problem"] = "inference_data.pkl lists other objects"
    elif inference.get("video1", {}).get("num_frames") != frames:
        out["problem"] = "inference_data.pkl lists another number of frames"
    elif extra:
        out["problem"] = f"unexpected files {extra}"
    out["masks"] = {k: dict(v) for k, v in masks.items()}
    return out


def check_exports(planned: dict[str, dict[str, Any]], frames: int) -> dict[str, Any]:
    """Every job's export checked; masks must also be identical across jobs (same video, same model)."""
    results = {job_id: check_export(info["out"], frames) for job_id, info in planned.items()}
    reference = next((r["masks"] for r in results.values() if r["masks"] is not None), None)
    for r in results.values():
        if r["problem"] is None and r["masks"] != reference:
            r["problem"] = "masks differ from the other jobs'"
        r.pop("masks")
    return results


def hidden_patterns(exports: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Hidden names left in the output folders, random parts as ``*``: ``{pattern: folders}``."""
    import re

    counts: dict[str, int] = {}
    for r in exports.values():
        for pattern in {re.sub(r"[0-9a-f]{4,}|[0-9]+", "*", name) for name in r["hidden"]}:
            counts[pattern] = counts.get(pattern, 0) + 1
    return dict(sorted(counts.items()))


def publications(jobs: Any, found: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """``(source, {job_id: times published})``: the workers' Redis counter where it exists,
    otherwise the number of successful executions RQ recorded for the job."""
    from rq.results import Result

    counters = {job_id: jobs.connection.get(PUBLISHED_KEY.format(job_id=job_id)) for job_id in found}
    if any(v is not None for v in counters.values()):
        return "redis counter sam2:published:<id>", {k: int(v or 0) for k, v in counters.items()}
    counts = {}
    for job_id, job in found.items():
        results = job.results() if job is not None else []
        counts[job_id] = sum(1 for r in results if r.type == Result.Type.SUCCESSFUL)
    return "successful executions in the job's RQ results (no sam2:published counter found)", counts


# -- phase 1: scaling -------------------------------------------------------------------------
def run_scaling(ctx: Context, n_workers: int) -> dict[str, Any]:
    fleet = ctx.fleet()
    ctx.jobs.connection.flushdb()
    try:
        for _ in range(n_workers):
            fleet.start()
        wait_registered(ctx.jobs, n_workers, fleet)
        out_root = ctx.tmp / f"out_scale_{n_workers}"
        t0 = time.time()
        planned = enqueue(ctx.jobs, ctx.args.jobs, ctx.video, ctx.args.frames, out_root)
        found = wait_done(ctx.jobs, list(planned), ctx.args.scale_timeout)
    finally:
        fleet.stop()
    statuses = [status_of(j) for j in found.values()]
    ended = [epoch(j.ended_at) for j in found.values() if j is not None and status_of(j) == "finished"]
    seconds = (max(ended) - t0) if len(ended) == len(planned) else None
    exports = check_exports(planned, ctx.args.frames)
    bad = [job_id for job_id, r in exports.items() if r["problem"]]
    row = {
        "workers": n_workers,
        "jobs": len(planned),
        "finished": statuses.count("finished"),
        "seconds": seconds,
        "jobs_per_s": len(planned) / seconds if seconds else None,
        "bad_exports": len(bad),
    }
    if bad:
        row["first_bad"] = exports[bad[0]]["problem"]
    ctx.log(
        f"  {n_workers} worker(s): {row['finished']}/{row['jobs']} finished"
        + (f" in {seconds:.1f} s ({row['jobs_per_s']:.2f} jobs/s)" if seconds else " — INCOMPLETE")
        + (f", {len(bad)} bad export(s): {row['first_bad']}" if bad else "")
    )
    return row


def scaling_table(rows: list[dict[str, Any]]) -> str:
    base = next((r["jobs_per_s"] for r in rows if r["workers"] == 1 and r["jobs_per_s"]), None)
    lines = [
        "| workers | jobs | seconds | jobs/s | × vs 1 | efficiency |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["jobs_per_s"] / base if base and r["jobs_per_s"] else None
        r["ratio"] = ratio
        r["efficiency"] = ratio / r["workers"] if ratio else None
        mark = "" if r["efficiency"] is None else (" ✅" if r["efficiency"] >= GOAL_EFFICIENCY else " ❌")
        lines.append(
            f"| {r['workers']} | {r['finished']}/{r['jobs']} | {_f(r['seconds'], 1)} | {_f(r['jobs_per_s'], 2)} "
            f"| {_f(ratio, 2)} | {_f(r['efficiency'], 2)}{mark} |"
        )
    return "\n".join(lines)


def _f(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# -- phase 2: chaos ---------------------------------------------------------------------------
@dataclass
class Kill:
    at: float  # wall time of the SIGKILL
    worker: str
    job_id: str | None  # the job it was running, if any
    requeued_after: float | None = None  # seconds until RQ put it back on the queue
    restarted_after: float | None = None  # until its next execution started
    finished_after: float | None = None


class Killer:
    """Every ``every`` seconds: SIGKILL the process group of one random live worker (one that is
    running a job, if any is), and start a replacement ``--replace-after`` seconds later."""

    def __init__(self, ctx: Context, fleet: Fleet, rng: random.Random) -> None:
        self.ctx, self.fleet, self.rng = ctx, fleet, rng
        self.every = ctx.args.kill_every
        self.next_at = time.monotonic() + self.every
        self.kills: list[Kill] = []
        self.due: list[float] = []  # monotonic times at which to start a replacement
        self.replacements = 0

    def current_job(self, name: str) -> str | None:
        from rq import Worker

        worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=self.ctx.jobs.connection)
        return worker.get_current_job_id() if worker is not None else None

    def __call__(self, found: dict[str, Any]) -> None:
        for kill in self.kills:
            self.follow(kill, found.get(kill.job_id))
        self.start_due_replacements()
        if time.monotonic() < self.next_at or all(status_of(j) in TERMINAL for j in found.values()):
            return
        self.next_at += self.every
        self.kill_one()
        self.start_due_replacements()

    def start_due_replacements(self) -> None:
        while self.due and self.due[0] <= time.monotonic():
            self.due.pop(0)
            name = self.fleet.start()
            self.replacements += 1
            self.ctx.log(f"  t={time.time() - self.ctx.chaos_t0:5.1f} s: replacement {name} started")

    def kill_one(self) -> None:
        live = self.fleet.live()
        if not live:
            return
        busy = {name: job for name in live if (job := self.current_job(name))}
        victim = self.rng.choice(sorted(busy) or live)  # a worker in the middle of a job, if any
        job_id = busy.get(victim)
        self.fleet.kill(victim)
        self.kills.append(Kill(time.time(), victim, job_id))
        self.due.append(time.monotonic() + self.ctx.args.replace_after)
        self.ctx.log(f"  t={time.time() - self.ctx.chaos_t0:5.1f} s: kill -9 {victim} (job {job_id or 'none'})")

    @staticmethod
    def follow(kill: Kill, job: Any) -> None:
        if job is None:
            return
        status = status_of(job)
        elsewhere = job.worker_name != kill.worker
        enqueued = epoch(job.enqueued_at)
        if kill.requeued_after is None and enqueued is not None and enqueued > kill.at:
            kill.requeued_after = enqueued - kill.at  # RQ stamps enqueued_at again when it requeues
        if kill.restarted_after is None and (status == "started" and elsewhere or status == "finished"):
            kill.restarted_after = epoch(job.started_at) - kill.at  # the next execution's own start time
        if kill.finished_after is None and status == "finished":
            kill.finished_after = epoch(job.ended_at) - kill.at


def run_chaos(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    fleet = ctx.fleet()
    ctx.jobs.connection.flushdb()
    video = make_video(ctx.tmp, args.chaos_frames)
    try:
        for _ in range(args.chaos_workers):
            fleet.start()
        wait_registered(ctx.jobs, args.chaos_workers, fleet)
        killer = Killer(ctx, fleet, random.Random(args.seed))
        ctx.chaos_t0 = time.time()
        planned = enqueue(ctx.jobs, args.jobs, video, args.chaos_frames, ctx.tmp / "out_chaos")
        found = wait_done(ctx.jobs, list(planned), args.chaos_timeout, tick=killer, interval=0.5)
        elapsed = time.time() - ctx.chaos_t0
        stalled = {k: status_of(j) for k, j in found.items() if status_of(j) not in TERMINAL}
    finally:
        fleet.stop()
    return chaos_report(ctx, planned, found, killer, elapsed, stalled, args.chaos_frames)


def chaos_report(
    ctx: Context, planned: dict, found: dict, killer: Killer, elapsed: float, stalled: dict, frames: int
) -> dict[str, Any]:
    statuses = {job_id: status_of(job) for job_id, job in found.items()}
    source, published = publications(ctx.jobs, found)
    exports = check_exports(planned, frames)
    retries_max = ctx.settings.job_retries
    retried = {
        job_id: retries_max - (job.retries_left or 0)
        for job_id, job in found.items()
        if job is not None and job.retries_left is not None and job.retries_left < retries_max
    }
    latencies = [
        epoch(job.ended_at) - planned[job_id]["enqueued"]
        for job_id, job in found.items()
        if statuses[job_id] == "finished" and job.ended_at
    ]
    spools = sorted(p.name for p in ctx.spool_dir.glob("sam2-masks-*"))
    hidden = hidden_patterns(exports)
    report = {
        "workers": ctx.args.chaos_workers,
        "jobs": len(planned),
        "frames_per_job": frames,
        "seconds": elapsed,
        "kills": len(killer.kills),
        "kills_mid_job": sum(1 for k in killer.kills if k.job_id),
        "replacements": killer.replacements,
        "finished": sum(1 for s in statuses.values() if s == "finished"),
        "failed": sorted(k for k, s in statuses.items() if s == "failed"),
        "missing": sorted(k for k, s in statuses.items() if s == "missing"),
        "not_done_at_timeout": stalled,
        "published_source": source,
        "duplicates": sorted(k for k, n in published.items() if n > 1),
        "unpublished": sorted(k for k, n in published.items() if n < 1),
        "bad_exports": {k: r["problem"] for k, r in exports.items() if r["problem"]},
        "retried_jobs": retried,
        "max_latency_s": max(latencies) if latencies else None,
        "kill_log": [
            {
                "t": round(k.at - ctx.chaos_t0, 1),
                "worker": k.worker,
                "job": k.job_id,
                "requeued_after_s": k.requeued_after,
                "restarted_after_s": k.restarted_after,
                "finished_after_s": k.finished_after,
            }
            for k in killer.kills
        ],
        "hidden_entries": hidden,
        "leftover_spools": len(spools),
        "failed_errors": {k: ctx.jobs.status(k).get("error") for k, s in statuses.items() if s == "failed"},
    }
    report["ok"] = not (
        report["failed"] or report["missing"] or stalled or report["duplicates"] or report["unpublished"]
        or report["bad_exports"]
    )  # fmt: skip
    return report


def chaos_tables(r: dict[str, Any]) -> str:
    def spread(key: str) -> str:
        return _range([k[key] for k in r["kill_log"] if k["job"] and k[key] is not None])

    lines = [
        "| workers | jobs | kills (mid-job) | replacements | finished | failed | not done | duplicates | missing "
        "| bad exports | jobs retried | max job latency | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['workers']} | {r['jobs']} | {r['kills']} ({r['kills_mid_job']}) | {r['replacements']} | {r['finished']} "
        f"| {len(r['failed'])} | {len(r['not_done_at_timeout'])} | {len(r['duplicates'])} | {len(r['missing'])} "
        f"| {len(r['bad_exports'])} | {len(r['retried_jobs'])} | {_f(r['max_latency_s'], 1)} s | {r['seconds']:.0f} |",
        "",
        "| kill at | worker | its job | requeued after | restarted after | finished after |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for k in r["kill_log"]:
        lines.append(
            f"| {k['t']:.1f} s | {k['worker']} | {k['job'] or '(idle)'} | {_f(k['requeued_after_s'], 1)} s "
            f"| {_f(k['restarted_after_s'], 1)} s | {_f(k['finished_after_s'], 1)} s |"
        )
    lines += [
        "",
        f"Exactly-once from: {r['published_source']}. Jobs of killed workers: requeued after "
        f"{spread('requeued_after_s')}, restarted after {spread('restarted_after_s')}, "
        f"finished after {spread('finished_after_s')} (seconds after the kill).",
        "Hidden entries in the output folders (name pattern: folders): "
        f"{', '.join(f'{k}: {v}' for k, v in r['hidden_entries'].items()) or 'none'}; "
        f"mask spools left by killed workers: {r['leftover_spools']}.",
    ]
    if r["not_done_at_timeout"]:
        lines.append(
            f"NOT DONE after {r['seconds']:.0f} s: {r['not_done_at_timeout']} (a job whose worker was killed "
            "stays 'started' until a worker requeues it: RQ's own maintenance does so only every 10 minutes)."
        )
    for job_id, error in r["failed_errors"].items():
        lines.append(f"failed {job_id}: {error}")
    for job_id, problem in r["bad_exports"].items():
        lines.append(f"bad export {job_id}: {problem}")
    lines.append(f"Chaos verdict: {'PASS' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)


def _range(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{min(values):.1f}–{max(values):.1f} s" if len(values) > 1 else f"{values[0]:.1f} s"


# -- orchestration ----------------------------------------------------------------------------
class Context:
    """The temp dir, Redis, queue and videos shared by both phases; ``close`` removes them all."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_workers-"))
        self.spool_dir = self.tmp / "spool"
        self.logdir = self.tmp / "logs"
        for d in (self.spool_dir, self.logdir, self.tmp / "redis"):
            d.mkdir()
        self.fleets: list[Fleet] = []
        self.numbers = itertools.count(1)
        self.redis_proc = None
        self.chaos_t0 = 0.0

    def open(self) -> None:
        from redis import Redis

        from ml_backend.settings import Settings
        from ml_backend.worker.queue import JobQueue

        port = free_port()
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.redis_proc = start_redis(self.tmp / "redis", port)  # kept at once: close() stops it
        wait_for_redis(self.redis_url)
        self.env = worker_env(self.redis_url, self.tmp / "data", self.spool_dir)
        self.settings = Settings.from_env(self.env)
        self.jobs = JobQueue(Redis.from_url(self.redis_url), self.settings)
        self.video = make_video(self.tmp, self.args.frames)

    def fleet(self) -> Fleet:
        fleet = Fleet(self.env, self.logdir, self.args.frame_cost, self.numbers)
        self.fleets.append(fleet)
        return fleet

    def log(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        for fleet in self.fleets:
            fleet.stop(grace=1.0)
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    ctx = Context(args)
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "worker"}}
    try:
        ctx.open()
        print(
            f"# bench_workers: {args.jobs} jobs, {args.frames}-frame {WIDTH}×{HEIGHT} video, "
            f"{args.frame_cost * 1000:.0f} ms per frame (sleep), {os.cpu_count()} CPU cores, "
            f"JOB_HEARTBEAT_TTL={HEARTBEAT_TTL}, JOB_RETRIES={ctx.settings.job_retries}",
            flush=True,
        )
        if not args.chaos_only:
            rows = [run_scaling(ctx, n) for n in args.workers]
            print("\n" + scaling_table(rows) + "\n", flush=True)
            results["scaling"] = rows
        if not args.no_chaos:
            print(f"chaos: {args.chaos_workers} workers, {args.jobs} jobs of {args.chaos_frames} frames, "
                  f"kill -9 every {args.kill_every:.0f} s", flush=True)  # fmt: skip
            report = run_chaos(ctx)
            print("\n" + chaos_tables(report) + "\n", flush=True)
            results["chaos"] = report
    finally:
        ctx.close()
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    failed = any(r["finished"] < r["jobs"] or r["bad_exports"] for r in results.get("scaling", []))
    return 1 if failed or not results.get("chaos", {"ok": True})["ok"] else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=48, help="jobs per run")
    p.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8], help="worker counts"
    )
    p.add_argument("--frame-cost", type=float, default=0.05, help="seconds the stand-in model waits per frame")
    p.add_argument("--frames", type=int, default=40, help="frames per video in the scaling runs")
    p.add_argument("--scale-timeout", type=float, default=240.0, help="seconds one scaling run may take")
    p.add_argument("--chaos-only", action="store_true", help="skip the scaling runs")
    p.add_argument("--no-chaos", action="store_true", help="skip the chaos run")
    p.add_argument("--chaos-workers", type=int, default=4, help="workers in the chaos run")
    p.add_argument("--chaos-frames", type=int, default=160, help="frames per video in the chaos run")
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between kills")
    p.add_argument(
        "--replace-after",
        type=float,
        default=0.0,
        help="seconds between a kill and the replacement's start (a starting RQ worker also requeues "
        "abandoned jobs: a delay longer than JOB_HEARTBEAT_TTL shows the recovery without it)",
    )
    p.add_argument("--chaos-timeout", type=float, default=240.0, help="seconds the chaos run may take")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing whom to kill")
    p.add_argument("--json", help="write the numbers to this file")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, exports, AOF)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.frame_cost)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM cleans up like Ctrl-C
    try:
        sys.exit(run(args))
    except KeyboardInterrupt:
        print("interrupted: workers, redis-server and the temp dir are gone", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
