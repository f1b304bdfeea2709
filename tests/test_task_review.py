"""Review and correct inside Label Studio, through the worker: the task's state columns, flagged
frames appended as pages with masks in the prediction, the overlay video and preview served from
local-files storage, a correction on an appended page used as a prompt, no page appended twice,
and a failed job's reason on the task.

A real redis-server, RQ's SimpleWorker in-process, the real pipeline with the colour stand-in
predictor on a synthetic video whose drift events are known (``tests/test_quality.py``), and the
stand-in for Label Studio's API (PATCH of task data included)."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml_backend.labelstudio.taskdata import local_path
from ml_backend.worker import process as process_module
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from .fake_labelstudio import FakeLabelStudio
from .fakes import ColorVideoPredictor
from .test_quality import COLORS, H, W, geometry, render

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
PROJECT, TASK = 5, 11
URL = "/data/local-files/?d="


@pytest.fixture(autouse=True)
def quiet_werkzeug():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture
def ls(tmp_path):
    root = tmp_path / "files"
    pair = root / "pairs" / "p"
    render(pair / "video1")
    shutil.copytree(pair / "video1", pair / "video2")
    (pair / "frames1").mkdir()
    (pair / "frames2").mkdir()
    for k, frame in ((1, 0), (1, 20), (2, 0)):
        shutil.copyfile(pair / f"video{k}" / f"{frame:05d}.png", pair / f"frames{k}" / f"frame_{frame:06d}.png")
    server = FakeLabelStudio(root)
    server.add_project(PROJECT, CONFIG)
    data = {
        "pair": "p",
        "frames1": [f"{URL}pairs/p/frames1/frame_000000.png", f"{URL}pairs/p/frames1/frame_000020.png"],
        "frame_indices1": [0, 20],
        "video1": f"{URL}pairs/p/video1",
        "frames2": [f"{URL}pairs/p/frames2/frame_000000.png"],
        "frame_indices2": [0],
        "video2": f"{URL}pairs/p/video2",
        "preview": "",
        "review_video1": "",
        "review_video2": "",
        "review_flags": "",
    }
    server.add_task(TASK, PROJECT, data)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(small_settings, redis_server, tmp_path, ls):
    return small_settings.replace(
        redis_url=redis_server.url,
        queue_name="test-task-review",
        data_dir=tmp_path / "data",
        label_studio_url=ls.url,
        label_studio_api_key=ls.token,
        label_studio_retry_seconds=20,
        local_files_root=str(ls.root),
        job_heartbeat_ttl=5,
    )


@pytest.fixture
def queue(settings, redis_conn):
    return JobQueue(redis_conn, settings)


@pytest.fixture(autouse=True)
def predictor(monkeypatch):
    made = ColorVideoPredictor()
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: made)
    return made


def point(obj: int, frame: int, page: int, image: int = 1) -> dict:
    x, y, _ = geometry(obj, frame)
    return {
        "from_name": f"kp{image}",
        "to_name": f"image{image}",
        "type": "keypointlabels",
        "item_index": page,
        "original_width": W,
        "original_height": H,
        "is_positive": True,
        "value": {"x": x / W * 100, "y": y / H * 100, "width": 1, "keypointlabels": [f"Object {obj}"]},
    }


def submit(queue, ls, annotation_id: int, result: list) -> dict:
    annotation = ls.add_annotation(annotation_id, TASK, result)
    out = queue.on_webhook({"action": "ANNOTATION_UPDATED", "annotation": annotation, "project": {"id": PROJECT}})
    return out


def run(settings, redis_conn) -> None:
    process_module._settings = settings
    make_worker(settings, redis_conn, preload=False).work(burst=True)


def data(ls) -> dict:
    return ls.tasks[TASK]["data"]


FIRST = [point(obj, 0, 0) for obj in COLORS]  # every object clicked on frame 0 of video 1


def test_a_job_shows_its_state_appends_flagged_pages_and_serves_its_review(settings, redis_conn, queue, ls):
    answer = submit(queue, ls, 1, FIRST)
    assert answer["status"] == "queued"
    deadline = time.monotonic() + 10
    while not ls.task_updates and time.monotonic() < deadline:  # the backend marks it from a thread
        time.sleep(0.05)
    assert [body["data"]["job_state"] for _, body in ls.task_updates] == ["queued"]
    assert data(ls)["job_progress"] == 0
    run(settings, redis_conn)

    states = [body["data"].get("job_state") for _, body in ls.task_updates]
    assert states[1] == "running" and states[-1] == "done"
    assert "queued" not in states[1:]
    d = data(ls)
    assert d["job_state"] == "done" and d["job_progress"] == 100 and d["job_error"] == ""
    # events: object 2 jumps on 8 and shrinks on 20, object 1 vanishes on 10 and is back on 15
    assert d["flagged_ranges"] == 4
    assert d["lowest_score"] is None  # the stand-in keeps no object score
    # 20 is a page already; the others are appended after the existing pages, ranked
    assert d["frame_indices1"] == [0, 20, 8, 10, 15]
    assert d["frames1"][:2] == [f"{URL}pairs/p/frames1/frame_000000.png", f"{URL}pairs/p/frames1/frame_000020.png"]
    for url, frame in zip(d["frames1"][2:], (8, 10, 15), strict=True):
        path = local_path(settings, url)
        assert path.is_file() and path.name == f"frame_{frame:06d}.jpg"
        x, y, _ = geometry(2, frame)  # object 2 sits where it is on that frame (it jumped on 8)
        pixel = np.asarray(Image.open(path), np.int16)[int(y), int(x)]
        assert np.abs(pixel - COLORS[2]).max() < 40, (frame, pixel)
    assert d["frame_indices2"] == [0] and d["review_video2"] == ""  # nothing is in video 2
    assert "video1 · Object 1 · frame 10" in d["review_flags"] and "vanished" in d["review_flags"]

    video = local_path(settings, d["review_video1"])
    assert video.is_file() and video.suffix == ".webm" and video.stat().st_size > 0
    preview = Image.open(local_path(settings, d["preview"]))
    assert preview.height == 160 and preview.width > 4 * 160  # first, middle, last, worst flagged

    # the prediction carries masks on the appended pages; its score is the task's confidence
    prediction = ls.predictions[-1]
    pages = {(r["item_index"], r["value"]["brushlabels"][0]) for r in prediction["result"]}
    assert {(2, "Object 2"), (3, "Object 2"), (4, "Object 1")} <= pages
    assert (3, "Object 1") not in pages  # object 1 is gone on frame 10
    assert 0 < prediction["score"] < 1

    # the backend is asked to embed the task's pages, appended ones included (issue 29)
    from ml_backend.worker.pagerequests import REQUESTS_KEY

    (request,) = [json.loads(r) for r in redis_conn.lrange(REQUESTS_KEY, 0, -1)]
    assert request["task"] == TASK and sorted(request["refs"]) == sorted({*d["frames1"], *d["frames2"]})


def test_a_correction_on_an_appended_page_is_a_prompt_and_pages_are_not_added_twice(settings, redis_conn, queue, ls):
    submit(queue, ls, 1, FIRST)
    run(settings, redis_conn)
    before = dict(data(ls))
    assert before["frame_indices1"][2] == 8
    submit(queue, ls, 2, [*FIRST, point(2, 8, page=2)])  # the reviewer clicks object 2 on frame 8
    run(settings, redis_conn)
    after = data(ls)
    assert after["frame_indices1"] == before["frame_indices1"]
    assert after["frames1"] == before["frames1"]
    inference = pickle.load(
        open(settings.results_root / f"project_{PROJECT}" / f"task_{TASK}" / "inference_data.pkl", "rb")
    )
    video1 = inference["video1"]
    idx = {obj_id: i for i, obj_id in video1["obj_idx_to_id"].items()}[2]
    assert sorted(video1["point_inputs_per_obj"][idx]) == [0, 8]
    # the older job's copy stays for pages opened before (REVIEW_KEEP_VERSIONS bounds the pile:
    # tests/test_review_versions.py)
    assert len(list((ls.root / "pairs/p/review").glob("video1_overlay-*.webm"))) == 2


def test_queued_never_replaces_the_state_of_a_started_or_finished_job(settings, redis_conn, queue, ls):
    answer = submit(queue, ls, 1, FIRST)
    run(settings, redis_conn)
    assert data(ls)["job_state"] == "done"
    queue.mark_queued([(PROJECT, TASK, answer["job_id"])]).join()  # a late "queued" write
    assert data(ls)["job_state"] == "done"


def test_a_failed_job_shows_its_reason_on_the_task(settings, redis_conn, queue, ls):
    bad = point(1, 0, 0)
    bad["item_index"] = 9
    submit(queue, ls, 3, [bad])
    run(settings, redis_conn)
    d = data(ls)
    assert d["job_state"] == "failed"
    assert "page 9" in d["job_error"] and "Traceback" not in d["job_error"]
    assert ls.predictions == []


def test_without_local_files_the_state_is_still_shown(settings, redis_conn, ls, redis_server):
    settings = settings.replace(local_files_root="")
    # the worker downloads the videos through Label Studio instead of reading them
    ls.tasks[TASK]["data"]["video1"] = ls.tasks[TASK]["data"]["video2"] = "/data/local-files/?d=pairs/p/video1.mkv"
    frames = np.stack([np.asarray(Image.open(ls.root / "pairs/p/video1" / f"{i:05d}.png")) for i in range(30)])
    from ml_backend.video.synthetic import SyntheticVideo

    SyntheticVideo(frames, {}, {}).write(ls.root / "pairs/p/video1.mkv")
    queue = JobQueue(redis_conn, settings)
    submit(queue, ls, 4, FIRST)
    run(settings, redis_conn)
    d = data(ls)
    assert d["job_state"] == "done" and d["flagged_ranges"] == 4
    assert d["frame_indices1"] == [0, 20] and d["preview"] == ""
    assert ls.predictions and ls.predictions[-1]["result"]


def test_a_video_left_without_objects_loses_its_old_overlay(settings, redis_conn, queue, ls):
    submit(queue, ls, 1, [*FIRST, point(3, 0, 0, image=2)])  # object 3 in both videos
    run(settings, redis_conn)
    assert local_path(settings, data(ls)["review_video2"]).is_file()
    submit(queue, ls, 2, FIRST)  # now nothing is in video 2
    run(settings, redis_conn)
    assert data(ls)["review_video2"] == ""
    # the old overlay stays (a page opened before may show it) until REVIEW_KEEP_VERSIONS prunes it
    assert len(list((ls.root / "pairs/p/review").glob("video2_overlay-*.webm"))) == 1
    assert local_path(settings, data(ls)["review_video1"]).is_file()


def test_review_files_that_cannot_be_written_leave_the_state_columns(settings, redis_conn, queue, ls):
    (ls.root / "pairs/p/review").write_text("a file where the review folder goes: nothing can be written under it")
    submit(queue, ls, 1, FIRST)
    run(settings, redis_conn)
    d = data(ls)
    assert d["job_state"] == "done" and d["flagged_ranges"] == 4 and d["job_error"] == ""
    assert d["frame_indices1"] == [0, 20] and d["preview"] == "" and d["review_video1"] == ""
    assert {r["item_index"] for r in ls.predictions[-1]["result"]} <= {0, 1}  # the pages the task has
