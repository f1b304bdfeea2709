"""Propagation jobs through a real redis-server and an in-process RQ SimpleWorker."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ml_backend.video.synthetic import moving_shapes, scene_pair
from ml_backend.worker import process as process_module
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from .fakes import ColorVideoPredictor


def center(video, name, frame):
    return [float(c) for c in video.shapes[name].center(frame / (len(video.frames) - 1))]


@pytest.fixture
def job_settings(small_settings, redis_server, tmp_path):
    return small_settings.replace(
        redis_url=redis_server.url, queue_name="test-prop", data_dir=tmp_path, job_heartbeat_ttl=5
    )


@pytest.fixture
def queue(job_settings, redis_conn):
    return JobQueue(redis_conn, job_settings)


def run_worker(job_settings, redis_conn):
    worker = make_worker(job_settings, redis_conn, preload=False)
    worker.work(burst=True)


@pytest.fixture
def pair(tmp_path):
    v1, v2 = scene_pair((10, 8), (96, 128), (80, 112))  # different length and resolution
    return v1, v2, v1.write(tmp_path / "before.mkv"), v2.write(tmp_path / "after.mkv")


def pair_prompts(v1, v2):
    return {
        "format": "scenediff",
        "scene_type": "office",
        "comments": {"note": "synthetic"},
        "objects": [
            {"id": 1, "name": "mug", "number": 1, "in_video1": True, "in_video2": False,
             "prompts": [{"video": "video1", "frame": 4, "points": [center(v1, "mug", 4)], "labels": [1]}]},
            {"id": 2, "name": "box", "number": 1, "in_video1": False, "in_video2": True,
             "prompts": [{"video": "video2", "frame": 3, "points": [center(v2, "box", 3)], "labels": [1]}]},
            {"id": 3, "name": "ball", "number": 2, "deformability": "deformable",
             "prompts": [
                 {"video": "video1", "frame": 6, "points": [center(v1, "ball", 6), [5.0, 5.0]], "labels": [1, 0]},
                 {"video": "video2", "frame": 7, "points": [center(v2, "ball", 7)], "labels": [1]},
             ]},
        ],
    }  # fmt: skip


def test_scenediff_job_with_real_sam2(queue, job_settings, redis_conn, pair, tmp_path):
    v1, v2, p1, p2 = pair
    job = queue.enqueue_prompts(pair_prompts(v1, v2), {"video1": str(p1), "video2": str(p2)}, str(tmp_path / "out"))
    run_worker(job_settings, redis_conn)
    status = queue.status(job.id)
    assert status["status"] == "finished", status
    assert status["progress"]["video1"] == {"done": 10, "total": 10}
    assert status["progress"]["video2"] == {"done": 8, "total": 8}
    seg = pickle.loads((tmp_path / "out" / "segments.pkl").read_bytes())
    assert set(seg) == {"scene_type", "video1_objects", "video2_objects", "objects", "comments"}
    assert seg["scene_type"] == "office" and seg["comments"] == {"note": "synthetic"}
    assert isinstance(seg["objects"], list)
    assert sorted(seg["video1_objects"]) == [1, 3] and sorted(seg["video2_objects"]) == [2, 3]
    for obj in seg["objects"]:
        assert set(obj) >= {
            "label",
            "in_video1",
            "in_video2",
            "video1_frame_idx",
            "video2_frame_idx",
            "original_obj_idx",
            "deformability",
        }
    assert seg["objects"][2]["label"] == "ball_2" and seg["objects"][2]["deformability"] == "deformable"
    # the evaluator's access pattern
    for obj in seg["objects"]:
        for video, (h, w), n in (("video1", (96, 128), 10), ("video2", (80, 112), 8)):
            store = seg[f"{video}_objects"]
            if not obj[f"in_{video}"]:
                assert obj["original_obj_idx"] not in store
                continue
            for key, rle in store[obj["original_obj_idx"]].items():
                assert isinstance(key, str) and 0 <= int(key) < n
                assert isinstance(rle["counts"], str) and rle["size"] == [h, w]
                mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                assert mask.shape == (h, w) and mask.any()
    inf = pickle.loads((tmp_path / "out" / "inference_data.pkl").read_bytes())
    # obj_idx = the object's index in SAM 2's state for that video (objects present there, in order)
    assert inf["video1"]["obj_idx_to_id"] == {0: 1, 1: 3} and inf["video2"]["obj_idx_to_id"] == {0: 2, 1: 3}
    assert sorted(inf["video1"]["point_inputs_per_obj"]) == [0, 1]
    coords = inf["video1"]["point_inputs_per_obj"][1][6]["point_coords"]  # object 3 (ball)
    assert isinstance(coords, np.ndarray) and coords.shape == (1, 2, 2)
    assert np.allclose(coords[0, 0], np.array(center(v1, "ball", 6)) * [256 / 128, 256 / 96])
    assert inf["video1"]["point_inputs_per_obj"][1][6]["point_labels"].tolist() == [[1, 0]]
    # video-file inputs: no frame files to name; the video's path instead
    assert inf["video1"]["frames_dir"] is None and inf["video1"]["frame_names"] is None
    assert inf["video1"]["video_path"] == str(p1) and inf["video1"]["num_frames"] == 10
    assert inf["scene_type"] == "office" and len(inf["objects"]) == 3
    assert (tmp_path / "out" / "review" / "video1_overlay.webm").stat().st_size > 0
    assert (tmp_path / "out" / "review" / "video2_obj3_contact.png").is_file()


def test_exact_masks_with_deterministic_predictor(queue, job_settings, redis_conn, pair, tmp_path, monkeypatch):
    """Prompts on middle frames; exported masks must equal ground truth on every frame of both videos."""
    v1, v2, p1, p2 = pair
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    job = queue.enqueue_prompts(pair_prompts(v1, v2), {"video1": str(p1), "video2": str(p2)}, str(tmp_path / "out"))
    run_worker(job_settings, redis_conn)
    assert queue.status(job.id)["status"] == "finished"
    seg = pickle.loads((tmp_path / "out" / "segments.pkl").read_bytes())
    truth = {"video1": (v1, {1: "mug", 3: "ball"}), "video2": (v2, {2: "box", 3: "ball"})}
    for video, (synthetic, names) in truth.items():
        for obj_id, name in names.items():
            frames = seg[f"{video}_objects"][obj_id]
            assert sorted(map(int, frames)) == list(range(len(synthetic.frames)))  # backward coverage
            for key, rle in frames.items():
                got = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
                want = synthetic.masks[name][int(key)]
                assert (got == want).all(), (video, name, key)


def test_greenscreen_three_segments(queue, job_settings, redis_conn, tmp_path, monkeypatch):
    long = moving_shapes(num_frames=13, height=48, width=64)
    # three segments sharing boundary frames: [0..4], [4..8], [8..12]
    bounds = [(0, 5), (4, 9), (8, 13)]
    lengths = [b - a for a, b in bounds]
    out = tmp_path / "green"
    jobs = []
    for k, (a, b) in enumerate(bounds):
        folder = tmp_path / f"video_part_{k + 1:03d}"
        from ml_backend.video.synthetic import SyntheticVideo

        SyntheticVideo(long.frames[a:b], {}, {}).write(folder)
        prompts = {
            "format": "greenscreen",
            "objects": [
                {
                    "id": 1,
                    "name": "square",
                    "prompts": [{"video": "video1", "frame": 0, "points": [center(long, "square", a)], "labels": [1]}],
                }
            ],
            "greenscreen": {
                "segment_index": k,
                "segment_frames": lengths,
                "start_frame": 100,
                "background": [0, 255, 0],
            },
        }
        jobs.append(queue.enqueue_prompts(prompts, {"video1": str(folder)}, str(out)))
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    run_worker(job_settings, redis_conn)
    assert all(queue.status(j.id)["status"] == "finished" for j in jobs)
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert names == [f"frame_{100 + i:06d}_masked.png" for i in range(13)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    import shutil

    if shutil.which("ffmpeg"):  # assembled once the last missing segment was exported
        import cv2

        assert int(cv2.VideoCapture(str(out / "greenscreen.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 13
    from PIL import Image

    for i in range(13):
        img = np.array(Image.open(out / f"frame_{100 + i:06d}_masked.png"))
        mask = long.masks["square"][i]
        assert (img[mask] == long.frames[i][mask]).all()
        assert (img[~mask] == [0, 255, 0]).all()
    # re-running one segment rewrites exactly its own files
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    queue.enqueue_prompts({**jobs[1].args[0]}, jobs[1].args[1], str(out))
    run_worker(job_settings, redis_conn)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    changed = sorted(n for n in after if after[n] != before[n])
    assert changed == [f"frame_{100 + i:06d}_masked.png" for i in range(4, 8)]
    assert set(after) == set(before)


def test_greenscreen_with_real_sam2_keeps_only_background_or_original(queue, job_settings, redis_conn, tmp_path):
    video = moving_shapes(num_frames=4, height=48, width=64)
    path = video.write(tmp_path / "seg.mkv")
    prompts = {
        "format": "greenscreen",
        "objects": [{"id": 1, "prompts": [{"frame": 0, "points": [center(video, "disc", 0)], "labels": [1]}]}],
        "greenscreen": {"segment_index": 0, "segment_frames": [4], "background": [255, 0, 255]},
    }
    job = queue.enqueue_prompts(prompts, {"video1": str(path)}, str(tmp_path / "g"))
    run_worker(job_settings, redis_conn)
    assert queue.status(job.id)["status"] == "finished"
    from PIL import Image

    files = sorted((tmp_path / "g").glob("frame_*_masked.png"))
    assert [f.name for f in files] == [f"frame_{i:06d}_masked.png" for i in range(4)]
    for i, f in enumerate(files):
        img = np.array(Image.open(f))
        is_bg = (img == [255, 0, 255]).all(axis=2)
        assert ((img == video.frames[i]).all(axis=2) | is_bg).all()


def bad_cases(tmp_path: Path):
    good = moving_shapes(num_frames=4, height=48, width=64)
    good_path = good.write(tmp_path / "good.mkv")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    empty = tmp_path / "empty_folder"
    empty.mkdir()

    def one(frame=0, **obj):
        base = {"id": 1, "name": "thing", "prompts": [{"frame": frame, "points": [[10, 10]], "labels": [1]}]}
        base.update(obj)
        return {"format": "scenediff", "objects": [base]}

    return (
        {
            "missing video": (one(), {"video1": str(tmp_path / "nope.mp4")}, "does not exist"),
            "corrupt video": (one(), {"video1": str(corrupt)}, "cannot be opened"),
            "zero frames": (one(), {"video1": str(empty)}, "holds no images"),
            "prompt beyond last frame": (one(frame=4), {"video1": str(good_path)}, "has 4 frames"),
            "object without prompts": (
                one(in_video2=True),
                {"video1": str(good_path), "video2": str(good_path)},
                "has no prompts there",
            ),
            "no prompts at all": (
                {"format": "scenediff", "objects": [{"id": 1, "name": "x", "prompts": []}]},
                {"video1": str(good_path)},
                "has no prompts",
            ),
            "point outside frame": (
                one(prompts=[{"frame": 0, "points": [[500, 10]], "labels": [1]}]),
                {"video1": str(good_path)},
                "outside",
            ),
        },
        good,
        good_path,
    )


def test_bad_jobs_fail_with_reasons_and_worker_keeps_serving(queue, job_settings, redis_conn, tmp_path, monkeypatch):
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    cases, good, good_path = bad_cases(tmp_path)
    settings = job_settings.replace(job_retries=0)
    queue = JobQueue(redis_conn, settings)
    failing = {
        name: queue.enqueue_prompts(p, v, str(tmp_path / name.replace(" ", "_"))) for name, (p, v, _) in cases.items()
    }
    ok = queue.enqueue_prompts(
        {
            "format": "scenediff",
            "objects": [{"id": 1, "prompts": [{"frame": 1, "points": [center(good, "disc", 1)], "labels": [1]}]}],
        },
        {"video1": str(good_path)},
        str(tmp_path / "ok"),
    )
    run_worker(settings, redis_conn)
    for name, job in failing.items():
        status = queue.status(job.id)
        assert status["status"] == "failed", name
        assert cases[name][2] in status["error"], (name, status["error"])
        assert "Error" in status["error"].split(":")[0]
    assert queue.status(ok.id)["status"] == "finished"


def test_redis_restart_loses_no_result(queue, job_settings, redis_conn, redis_server, tmp_path, monkeypatch):
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    video = moving_shapes(num_frames=3, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    prompts = {
        "format": "scenediff",
        "objects": [{"id": 1, "prompts": [{"frame": 0, "points": [center(video, "disc", 0)], "labels": [1]}]}],
    }
    job = queue.enqueue_prompts(prompts, {"video1": str(path)}, str(tmp_path / "o"))
    run_worker(job_settings, redis_conn)
    before = queue.status(job.id)
    assert before["status"] == "finished"
    redis_server.restart()
    import redis

    fresh = JobQueue(redis.Redis.from_url(redis_server.url), job_settings)
    after = fresh.status(job.id)
    assert after["status"] == "finished" and after["result"] == before["result"]
    assert (tmp_path / "o" / "segments.pkl").is_file()


def test_same_annotation_once_and_newer_supersedes(queue):
    job1, created1 = queue.enqueue_task(1, 10, 100, "aaaa")
    job1b, created1b = queue.enqueue_task(1, 10, 100, "aaaa")
    assert created1 and not created1b and job1.id == job1b.id
    job2, created2 = queue.enqueue_task(1, 10, 100, "bbbb")  # the annotation was updated
    assert created2
    assert queue.status(job1.id)["status"] == "canceled"
    assert queue.status(job1.id)["superseded_by"] == job2.id
    other, _ = queue.enqueue_task(1, 11, 101, "aaaa")  # another task is independent
    assert queue.status(job2.id)["status"] == "queued" and queue.status(other.id)["status"] == "queued"


def test_webhook_routes_actions(queue, job_settings):
    ann = {"id": 5, "task": 7, "result": [{"x": 1}]}
    first = queue.on_webhook({"action": "ANNOTATION_CREATED", "annotation": ann, "project": {"id": 3}})
    again = queue.on_webhook({"action": "ANNOTATION_UPDATED", "annotation": ann, "project": {"id": 3}})
    assert first["status"] == "queued" and again == {"status": "exists", "job_id": first["job_id"]}
    assert queue.on_webhook({"action": "PROJECT_UPDATED", "project": {"id": 3}})["status"] == "ignored"
    batch = JobQueue(queue.connection, job_settings.replace(webhook_mode="batch"))
    assert (
        batch.on_webhook({"action": "ANNOTATION_CREATED", "annotation": ann, "project": {"id": 3}})["status"]
        == "ignored"
    )


def test_jobs_route_and_cli_status(queue, job_settings, redis_conn, tmp_path, monkeypatch):
    from ml_backend.server.app import create_app
    from ml_backend.server.interactive import InteractivePredictor

    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    video = moving_shapes(num_frames=5, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    prompts = {
        "format": "scenediff",
        "objects": [{"id": 1, "prompts": [{"frame": 2, "points": [center(video, "disc", 2)], "labels": [1]}]}],
    }
    job = queue.enqueue_prompts(prompts, {"video1": str(path)}, str(tmp_path / "o"))
    app = create_app(
        job_settings,
        predictor=InteractivePredictor(job_settings, fetcher=None, segmenter_factory=lambda: None),
        jobs=queue,
    )
    client = app.test_client()
    assert client.get(f"/jobs/{job.id}").get_json()["status"] == "queued"
    run_worker(job_settings, redis_conn)
    body = client.get(f"/jobs/{job.id}").get_json()
    assert body["status"] == "finished" and body["progress"] == {"video1": {"done": 5, "total": 5}}
    assert body["result"]["files"][0].endswith("segments.pkl")
    assert client.get("/jobs/nope").status_code == 404


def test_bad_input_is_not_retried(queue, job_settings, redis_conn, tmp_path, monkeypatch):
    calls = []

    def factory(settings):
        calls.append(1)
        return ColorVideoPredictor()

    monkeypatch.setattr(process_module, "get_predictor", factory)
    video = moving_shapes(num_frames=3, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    bad = {"format": "scenediff", "objects": [{"id": 1, "prompts": [{"frame": 9, "points": [[5, 5]], "labels": [1]}]}]}
    assert job_settings.job_retries == 2
    job = queue.enqueue_prompts(bad, {"video1": str(path)}, str(tmp_path / "o"))
    run_worker(job_settings, redis_conn)
    assert queue.status(job.id)["status"] == "failed"
    assert calls == []  # refused before the model was asked for
    assert len(queue.fetch(job.id).results()) == 1  # one attempt, no retries


def test_status_counts_every_video_with_fps_and_eta(queue, job_settings, redis_conn, pair, tmp_path, monkeypatch):
    """Mid-job, status counts the frames of both videos and shows frames per second and an ETA."""
    v1, v2, p1, p2 = pair
    seen = []

    class Watched(ColorVideoPredictor):
        def propagate_in_video(self, *args, **kwargs):
            for i, item in enumerate(super().propagate_in_video(*args, **kwargs)):
                if i == 2 and not seen:
                    time.sleep(0.6)  # so the next frame's progress is written (every 0.5 s at most)
                if i == 4 and not seen:
                    seen.append(queue.status(job.id))
                yield item

    monkeypatch.setattr(process_module, "get_predictor", lambda settings: Watched())
    job = queue.enqueue_prompts(pair_prompts(v1, v2), {"video1": str(p1), "video2": str(p2)}, str(tmp_path / "out"))
    run_worker(job_settings, redis_conn)
    (running,) = seen
    assert running["status"] == "started" and running["frames"]["total"] == 10 + 8
    assert 0 < running["frames"]["done"] < 18 and running["fps"] > 0 and running["eta_seconds"] > 0
    done = queue.status(job.id)
    assert done["frames"] == {"done": 18, "total": 18, "percent": 100.0} and done["eta_seconds"] == 0.0


def test_speed_arithmetic():
    from ml_backend.worker.queue import _speed

    progress = {"video1": {"done": 30, "total": 40}, "video2": {"done": 0, "total": 60}}
    out = _speed(progress, started=100.0, status="started", now=110.0)
    assert out == {"frames": {"done": 30, "total": 100, "percent": 30.0}, "fps": 3.0, "eta_seconds": 23.3}
    assert _speed({}, None, "queued")["eta_seconds"] is None
    # a job no worker holds (queued again after a stop, or its worker gone) promises no ETA
    assert _speed(progress, started=100.0, status="queued", now=110.0)["eta_seconds"] is None
    assert _speed(progress, started=100.0, status="waiting", now=110.0)["eta_seconds"] is None


def test_a_starting_worker_measures_and_shares_its_speed(job_settings, redis_conn, monkeypatch, caplog):
    import logging

    from ml_backend.video.speed import SPEED_KEY

    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    with caplog.at_level(logging.INFO, logger="ml_backend.video.speed"):
        make_worker(job_settings, redis_conn, preload=True)
    stored = {k.decode(): v.decode() for k, v in redis_conn.hgetall(SPEED_KEY).items()}
    assert float(stored["seconds_per_frame"]) > 0 and stored["image_size"] == str(job_settings.image_size)
    assert "s per propagated frame" in caplog.text
