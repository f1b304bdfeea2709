"""Jobs queued before an upgrade, under the job functions' old dotted names (``ml_backend.jobs.*``),
still run: the worker's allowlist keeps the old names as aliases. A real redis-server and the
product's RQ ``SimpleWorker``."""

from __future__ import annotations

import importlib
import pickle

import pytest
from rq import Queue

from ml_backend.video.synthetic import scene_pair
from ml_backend.worker import process as process_module
from ml_backend.worker.names import OLD_NAMES, PROMPTS_JOB, TASK_JOB, UPLOAD_JOB
from ml_backend.worker.process import SERIALIZER
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import ALLOWED_FUNCTIONS, Worker, make_worker

from .fakes import ColorVideoPredictor


@pytest.fixture
def job_settings(small_settings, redis_server, tmp_path):
    return small_settings.replace(redis_url=redis_server.url, queue_name="test-old-names", data_dir=tmp_path)


def test_old_names_are_allowed_and_point_at_todays_functions():
    assert OLD_NAMES == {
        "ml_backend.jobs.propagate_task": TASK_JOB,
        "ml_backend.jobs.propagate_prompts": PROMPTS_JOB,
    }
    assert set(OLD_NAMES) | {TASK_JOB, PROMPTS_JOB, UPLOAD_JOB} == set(ALLOWED_FUNCTIONS)
    for name in (TASK_JOB, PROMPTS_JOB, UPLOAD_JOB):
        module, _, function = name.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function))
    assert issubclass(Worker, __import__("rq").SimpleWorker)


def test_a_job_queued_under_its_old_name_runs(job_settings, redis_conn, tmp_path, monkeypatch):
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    v1, v2 = scene_pair((6, 5), (64, 80), (64, 80))
    p1, p2 = v1.write(tmp_path / "before.mkv"), v2.write(tmp_path / "after.mkv")
    x, y = (float(c) for c in v1.shapes["mug"].center(0.0))
    prompts = {
        "format": "scenediff",
        "objects": [{"id": 1, "prompts": [{"video": "video1", "frame": 0, "points": [[x, y]], "labels": [1]}]}],
    }
    out = tmp_path / "out"
    queue = Queue(job_settings.queue_name, connection=redis_conn, serializer=SERIALIZER)
    # what an earlier release left in Redis: the job function under its old dotted name
    job = queue.enqueue("ml_backend.jobs.propagate_prompts", prompts, {"video1": str(p1), "video2": str(p2)}, str(out))
    assert job.func_name == "ml_backend.jobs.propagate_prompts"

    make_worker(job_settings, redis_conn, preload=False).work(burst=True)

    status = JobQueue(redis_conn, job_settings).status(job.id)
    assert status["status"] == "finished", status
    segments = pickle.loads((out / "segments.pkl").read_bytes())
    assert segments["video1_objects"][1]


def test_a_foreign_name_is_still_refused(job_settings, redis_conn):
    queue = Queue(job_settings.queue_name, connection=redis_conn, serializer=SERIALIZER)
    job = queue.enqueue("os.system", "true")
    make_worker(job_settings, redis_conn, preload=False).work(burst=True)
    job.refresh()
    assert job.get_status() == "failed"
    assert "refused" in (job.latest_result().exc_string or "")
