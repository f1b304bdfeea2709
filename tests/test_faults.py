"""Faults around a job: Redis restarting, a full disk, a queue holding foreign jobs, a stack
stopped with work queued. A real redis-server throughout; real worker processes where the fault
is a process's death or a server's restart."""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_backend.exceptions import Unavailable
from ml_backend.labelstudio.backoff import is_transient, with_backoff
from ml_backend.video.synthetic import moving_shapes
from ml_backend.worker import process as process_module
from ml_backend.worker.progress import ProgressMeta
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from .fakes import ColorVideoPredictor

ROOT = Path(__file__).resolve().parents[1]


def prompts_for(video, frame: int = 2) -> dict:
    x, y = video.shapes["disc"].center(frame / (len(video.frames) - 1))
    return {
        "format": "scenediff",
        "objects": [{"id": 1, "prompts": [{"frame": frame, "points": [[x, y]], "labels": [1]}]}],
    }


def worker_env(settings, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SAM2_CHECKPOINT": "random",
        "SAM2_IMAGE_SIZE": str(settings.image_size),
        "SAM2_DEVICE": "cpu",
        "REDIS_URL": settings.redis_url,
        "RQ_QUEUE": settings.queue_name,
        "JOB_HEARTBEAT_TTL": str(settings.job_heartbeat_ttl),
        "REVIEW_EXPORTS": "0",
        "DATA_DIR": str(tmp_path),
        "TORCH_THREADS": "1",
    }


def start_worker(env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "worker", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def done_frames(queue: JobQueue, job_id: str) -> int:
    return ((queue.status(job_id) or {}).get("progress", {}).get("video1") or {}).get("done", 0)


def test_redis_restart_mid_job_the_worker_stays_up_and_the_job_finishes(
    small_settings, redis_server, redis_conn, tmp_path
):
    settings = small_settings.replace(redis_url=redis_server.url, queue_name="test-redis-restart", job_heartbeat_ttl=10)
    video = moving_shapes(num_frames=40, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    queue = JobQueue(redis_conn, settings)
    job = queue.enqueue_prompts(prompts_for(video, 20), {"video1": str(path)}, str(tmp_path / "out"))
    worker = start_worker(worker_env(settings, tmp_path))
    try:
        wait_for(lambda: done_frames(queue, job.id) >= 3, 240, "the job to start propagating")
        redis_server.stop()  # AOF on: the queue survives the restart
        time.sleep(2)
        redis_server.start()
        assert worker.poll() is None, worker.stderr.read()[-3000:]
        wait_for(lambda: (queue.status(job.id) or {}).get("status") == "finished", 300, "the job to finish")
        assert worker.poll() is None  # still serving
    finally:
        stop(worker)
    assert (tmp_path / "out" / "segments.pkl").is_file()


def test_stack_stopped_with_jobs_queued_then_started_finishes_every_job(
    small_settings, redis_server, redis_conn, tmp_path, monkeypatch
):
    settings = small_settings.replace(redis_url=redis_server.url, queue_name="test-stack-restart", review_exports=False)
    video = moving_shapes(num_frames=4, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    queue = JobQueue(redis_conn, settings)
    jobs = [queue.enqueue_prompts(prompts_for(video), {"video1": str(path)}, str(tmp_path / f"o{i}")) for i in range(3)]
    redis_server.stop()  # the whole stack goes down with three jobs queued
    redis_server.start()
    import redis

    conn = redis.Redis.from_url(redis_server.url)
    monkeypatch.setattr(process_module, "get_predictor", lambda s: ColorVideoPredictor())
    make_worker(settings, conn, preload=False).work(burst=True)
    fresh = JobQueue(conn, settings)
    assert [fresh.status(j.id)["status"] for j in jobs] == ["finished"] * 3
    assert all((tmp_path / f"o{i}" / "segments.pkl").is_file() for i in range(3))


def test_the_worker_runs_only_our_job_functions(small_settings, redis_server, redis_conn, tmp_path, monkeypatch):
    from rq import Queue
    from rq.serializers import JSONSerializer

    settings = small_settings.replace(redis_url=redis_server.url, queue_name="test-foreign", job_retries=0)
    marker = tmp_path / "pwned"
    json_queue = Queue(settings.queue_name, connection=redis_conn, serializer=JSONSerializer)
    foreign = json_queue.enqueue("os.system", f"touch {marker}")
    pickled = Queue(settings.queue_name, connection=redis_conn).enqueue(os.system, f"touch {marker}")
    video = moving_shapes(num_frames=4, height=48, width=64)
    ours = JobQueue(redis_conn, settings).enqueue_prompts(
        prompts_for(video), {"video1": str(video.write(tmp_path / "v.mkv"))}, str(tmp_path / "o")
    )
    monkeypatch.setattr(process_module, "get_predictor", lambda s: ColorVideoPredictor())
    make_worker(settings, redis_conn, preload=False).work(burst=True)
    queue = JobQueue(redis_conn, settings)
    assert not marker.exists()
    for job in (foreign, pickled):
        status = queue.status(job.id)
        assert status["status"] == "failed" and "JobRefused" in status["error"], status
    assert "'os.system' is not a propagation job function" in queue.status(foreign.id)["error"]
    assert queue.status(ours.id)["status"] == "finished"


def test_progress_writes_are_best_effort():
    import redis

    class Job:
        id = "j"
        meta: dict = {}
        saves = 0

        def save_meta(self):
            Job.saves += 1
            raise redis.exceptions.ConnectionError("Redis is restarting")

    progress = ProgressMeta(Job(), interval=0, retry_after=60)
    for done in range(1, 11):
        progress("video1", done, 10)  # never raises
    progress.stage("publishing")
    assert Job.meta["progress"]["video1"] == {"done": 10, "total": 10}
    assert Job.saves == 3  # the first failure pauses writes; the last frame and a stage still try


def test_backoff_retries_transient_errors_only():
    import httpx

    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise httpx.ConnectError("connection refused")
        return "ok"

    assert with_backoff(flaky, seconds=60, what="Label Studio", sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError):
        with_backoff(lambda: (_ for _ in ()).throw(ValueError("bad input")), seconds=60, what="x", sleep=sleeps.append)
    now = [0.0]

    def down():
        raise httpx.ConnectError("connection refused")

    with pytest.raises(Unavailable, match="Label Studio was still unavailable after"):
        with_backoff(
            down, seconds=5, what="Label Studio", sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0]
        )

    class ApiError(Exception):
        def __init__(self, status_code):
            self.status_code = status_code

    assert is_transient(ApiError(502)) and is_transient(ApiError(429)) and not is_transient(ApiError(404))
    assert is_transient(ApiError(500)) and is_transient(ApiError(503)) and is_transient(ApiError(408))
    # permanent answers: no retry changes them, so they are not waited for as if Label Studio were down
    assert not is_transient(ApiError(501)) and not is_transient(ApiError(400)) and not is_transient(ApiError(403))
    calls = []

    def not_implemented():
        calls.append(1)
        raise ApiError(501)

    with pytest.raises(ApiError):
        with_backoff(not_implemented, seconds=300, what="Label Studio", sleep=lambda s: None)
    assert calls == [1]  # asked once


def test_a_webhook_while_redis_is_down_is_a_503(small_settings):
    from ml_backend.connection import redis_connection
    from ml_backend.server.app import create_app
    from ml_backend.server.interactive import InteractivePredictor

    queue = JobQueue(redis_connection("redis://127.0.0.1:1/0", retry_seconds=0.3), small_settings)
    app = create_app(
        small_settings,
        predictor=InteractivePredictor(small_settings, fetcher=None, segmenter_factory=lambda: None),
        jobs=queue,
    )
    response = app.test_client().post(
        "/webhook",
        json={"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 2, "result": []}, "project": 3},
    )
    assert response.status_code == 503 and "Redis" in response.get_json()["error"]


# -- a full disk ------------------------------------------------------------------------------
def _pair(out: Path) -> tuple[bytes, bytes]:
    return (out / "segments.pkl").read_bytes(), (out / "inference_data.pkl").read_bytes()


def _run(out: Path, video_path: Path, prompts: dict, limit: int | None = None) -> subprocess.CompletedProcess:
    import json

    prompt_file = out.parent / f"prompts-{time.monotonic_ns()}.json"
    prompt_file.write_text(json.dumps(prompts))

    def cap_file_size() -> None:  # a file system that takes `limit` bytes more, then refuses
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {
        **os.environ,
        "SAM2_CHECKPOINT": "random",
        "SAM2_IMAGE_SIZE": "256",
        "SAM2_DEVICE": "cpu",
        "TORCH_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "ml_backend", "propagate", "--video1", str(video_path), "--prompts", str(prompt_file)]
    return subprocess.run(
        [*cmd, "--out", str(out), "--no-review"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap_file_size if limit else None,
    )


def test_a_full_disk_leaves_the_previous_pair_intact(tmp_path):
    video = moving_shapes(num_frames=8, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    out = tmp_path / "out"
    first = _run(out, path, prompts_for(video, 2))
    assert first.returncode == 0, first.stderr[-2000:]
    before = _pair(out)
    listing = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert listing == ["inference_data.pkl", "review", "segments.pkl"]  # review/ holds quality.json
    quality = (out / "review" / "quality.json").read_bytes()
    second = prompts_for(video, 5)
    second["objects"].append({"id": 2, "prompts": [{"frame": 1, "points": [[10.0, 10.0]], "labels": [1]}]})
    for limit in (200, 2_000, 20_000):  # the disk fills at different points of the job
        failed = _run(out, path, second, limit=limit)
        assert failed.returncode != 0
        lines = failed.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in failed.stderr, failed.stderr[-2000:]
        assert _pair(out) == before
        visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        assert visible == listing, visible
        assert (out / "review" / "quality.json").read_bytes() == quality
        assert sorted(p.name for p in (out / "review").iterdir()) == ["quality.json"]
    third = _run(out, path, second)  # space again: the new pair replaces the old one, as one
    assert third.returncode == 0, third.stderr[-2000:]
    segments = pickle.loads((out / "segments.pkl").read_bytes())
    inference = pickle.loads((out / "inference_data.pkl").read_bytes())
    assert sorted(segments["video1_objects"]) == [1, 2]
    assert inference["video1"]["obj_idx_to_id"] == {0: 1, 1: 2}  # both from the new job
    assert (
        os.path.realpath(out / "segments.pkl").rsplit("/", 1)[0]
        == os.path.realpath(out / "inference_data.pkl").rsplit("/", 1)[0]
    )
    assert len(list(out.glob(".scenediff-*"))) == 1 and not list(out.glob(".staging-*"))


def test_published_files_share_one_mode(tmp_path):
    from ml_backend.video.pipeline import run_job
    from ml_backend.video.prompts import parse_prompts

    video = moving_shapes(num_frames=4, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    out = tmp_path / "out"
    with run_job(ColorVideoPredictor(), parse_prompts(prompts_for(video)), {"video1": path}, out, image_size=64):
        pass
    files = [out / "segments.pkl", out / "inference_data.pkl", *sorted((out / "review").iterdir())]
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in files}
    assert len(set(modes.values())) == 1, modes
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {oct(0o666 & ~umask)}


def test_a_complete_greenscreen_mp4_is_never_replaced_by_a_shorter_one(tmp_path):
    import shutil

    import cv2
    import numpy as np

    from ml_backend.exporters.greenscreen import assemble_greenscreen_mp4, video_frame_count

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (the mp4 is only assembled with it)")
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"frame_{i:06d}_masked.png"), np.full((16, 16, 3), i * 20, np.uint8))
    full = assemble_greenscreen_mp4(tmp_path, [7, 6])  # 6 + 6 frames: the whole video
    assert full is not None and video_frame_count(full) == 12
    before = full.read_bytes()
    assert assemble_greenscreen_mp4(tmp_path, [9]) is None  # a shorter segment list
    assert full.read_bytes() == before
    assert not list(tmp_path.glob(".greenscreen.*"))
