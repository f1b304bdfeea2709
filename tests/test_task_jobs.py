"""Label Studio task jobs under faults: Label Studio down or failing, stale and reverted
annotations, requeued executions, and malformed annotations (the "job inputs" surface).

A real redis-server, RQ's SimpleWorker in-process, the real pipeline, a deterministic video
predictor, and a stand-in for Label Studio's API that can be stopped, made to fail, and restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from ml_backend.video.synthetic import moving_shapes
from ml_backend.worker import process as process_module
from ml_backend.worker import records
from ml_backend.worker.process import OWNER_KEY
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from .fake_labelstudio import FakeLabelStudio
from .fakes import ColorVideoPredictor

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
W, H, N = 64, 48, 6
PROJECT, TASK = 3, 7


@pytest.fixture(autouse=True)
def quiet_werkzeug():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture
def video():
    return moving_shapes(num_frames=N, height=H, width=W)


@pytest.fixture
def ls(tmp_path, video):
    root = tmp_path / "ls_files"
    root.mkdir()
    video.write(root / "seg.mkv")
    server = FakeLabelStudio(root)
    server.add_project(PROJECT, CONFIG)
    server.add_task(
        TASK,
        PROJECT,
        {
            "frames": ["/data/local-files/?d=f0.png", "/data/local-files/?d=f3.png"],
            "frame_indices": [0, 3],
            "video": "/data/local-files/?d=seg.mkv",
            "segment_index": 0,
            "segment_frames": [N],
            "start_frame": 0,
            "preview": "",
        },
    )
    yield server
    server.stop()


@pytest.fixture
def settings(small_settings, redis_server, tmp_path, ls):
    return small_settings.replace(
        redis_url=redis_server.url,
        queue_name="test-task-jobs",
        data_dir=tmp_path / "data",
        label_studio_url=ls.url,
        label_studio_api_key=ls.token,
        label_studio_retry_seconds=90,
        review_exports=False,
        greenscreen_mp4=False,
        job_heartbeat_ttl=5,
    )


@pytest.fixture
def queue(settings, redis_conn):
    return JobQueue(redis_conn, settings)


def point(video, shape: str, frame: int, page: int, positive: bool = True, label: str = "Subject 1") -> dict:
    x, y = video.shapes[shape].center(frame / (N - 1))
    return {
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "item_index": page,
        "original_width": W,
        "original_height": H,
        "is_positive": positive,
        "value": {"x": x / W * 100, "y": y / H * 100, "width": 1, "keypointlabels": [label]},
    }


def submit(queue, ls, annotation_id: int, result: list) -> dict:
    annotation = ls.add_annotation(annotation_id, TASK, result)
    return queue.on_webhook({"action": "ANNOTATION_UPDATED", "annotation": annotation, "project": {"id": PROJECT}})


def run(settings, redis_conn, predictor=None) -> None:
    process_module._settings = settings
    make_worker(settings, redis_conn, preload=False).work(burst=True)


@pytest.fixture
def predictor(monkeypatch):
    made = ColorVideoPredictor()
    monkeypatch.setattr(process_module, "get_predictor", lambda settings: made)
    return made


def published(settings) -> list[Path]:
    out = settings.results_root / f"project_{PROJECT}" / "greenscreen"
    return sorted(p for p in out.glob("frame_*_masked.png")) if out.is_dir() else []


def test_label_studio_down_for_30_s_when_the_job_starts(queue, settings, redis_conn, ls, video, predictor):
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    back = threading.Timer(30, ls.start)  # Label Studio comes back 30 s later
    back.start()
    started = time.monotonic()
    try:
        run(settings, redis_conn)
    finally:
        back.cancel()
    status = queue.status(reply["job_id"])
    assert status["status"] == "finished", status
    assert time.monotonic() - started >= 29
    assert len(ls.predictions) == 1 and len(published(settings)) == N


def test_label_studio_5xx_is_retried_then_the_job_finishes(queue, settings, redis_conn, ls, video, predictor):
    ls.start()
    ls.fail_with = 502
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    threading.Timer(3, lambda: setattr(ls, "fail_with", None)).start()
    run(settings, redis_conn)
    assert queue.status(reply["job_id"])["status"] == "finished"
    assert len(ls.predictions) == 1


def test_label_studio_down_for_good_fails_with_a_sentence(queue, settings, redis_conn, ls, video, predictor):
    settings = settings.replace(label_studio_retry_seconds=2, job_retries=0)
    queue = JobQueue(redis_conn, settings)
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    status = queue.status(reply["job_id"])
    assert status["status"] == "failed"
    assert "Unavailable" in status["error"] and "still unavailable after" in status["error"], status["error"]
    assert ls.token not in status["error"]


def test_a_missing_annotation_fails_at_once_without_retries(queue, settings, redis_conn, ls, predictor, caplog):
    ls.start()
    job, _ = queue.enqueue_task(PROJECT, TASK, 999, "gone")
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        run(settings, redis_conn)
    status = queue.status(job.id)
    assert status["status"] == "failed" and "has no annotation 999 (404)" in status["error"], status
    assert len(queue.fetch(job.id).results()) == 1  # no RQ retry
    assert "retrying in" not in caplog.text  # and no backoff: a 404 is answered at once


class Hooked(ColorVideoPredictor):
    """Calls ``hook()`` once, when the first propagation reaches its second frame."""

    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook

    def propagate_in_video(self, *args, **kwargs):
        for i, item in enumerate(super().propagate_in_video(*args, **kwargs)):
            if i == 1 and self.hook is not None:
                hook, self.hook = self.hook, None
                hook()
            yield item


def test_a_stale_job_never_publishes(queue, settings, redis_conn, ls, video, monkeypatch):
    """Job A (v1) is running when the annotation is updated to v2: A publishes nothing, B does."""
    ls.start()
    v1 = [point(video, "disc", 0, 0)]
    v2 = [point(video, "square", 0, 0)]
    replies = {}
    made = Hooked(lambda: replies.setdefault("b", submit(queue, ls, 1, v2)))
    monkeypatch.setattr(process_module, "get_predictor", lambda s: made)
    replies["a"] = submit(queue, ls, 1, v1)
    run(settings, redis_conn)
    a, b = queue.status(replies["a"]["job_id"]), queue.status(replies["b"]["job_id"])
    assert a["status"] == "finished" and a["result"]["status"] == "superseded", a
    assert b["status"] == "finished" and b["result"]["status"] == "done", b
    assert [p["model_version"].endswith(replies["b"]["job_id"]) for p in ls.predictions] == [True]
    assert redis_conn.get(f"sam2:published:{replies['a']['job_id']}") is None
    assert int(redis_conn.get(f"sam2:published:{replies['b']['job_id']}")) == 1
    assert len(published(settings)) == N


def test_a_stale_job_that_starts_late_does_no_work(queue, settings, redis_conn, ls, video, predictor):
    ls.start()
    a = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    # a newer version of the same annotation (each annotation has its own latest key)
    redis_conn.set(records.latest_key(PROJECT, TASK, 1), "some-newer-job")
    run(settings, redis_conn)
    assert queue.status(a["job_id"])["result"]["status"] == "superseded"
    assert ls.predictions == [] and published(settings) == []


def test_reverting_to_an_earlier_annotation_propagates_it_again(queue, settings, redis_conn, ls, video, predictor):
    ls.start()
    r1 = [point(video, "disc", 0, 0)]
    r2 = [point(video, "square", 0, 0)]
    first = submit(queue, ls, 1, r1)
    run(settings, redis_conn)
    frames_r1 = [p.read_bytes() for p in published(settings)]
    assert submit(queue, ls, 1, r2)["status"] == "queued"
    run(settings, redis_conn)
    assert [p.read_bytes() for p in published(settings)] != frames_r1
    again = submit(queue, ls, 1, r1)
    assert again["status"] == "queued" and again["job_id"] == first["job_id"]
    run(settings, redis_conn)
    assert [p.read_bytes() for p in published(settings)] == frames_r1
    assert ls.predictions[-1]["model_version"].endswith(first["job_id"]) and len(ls.predictions) == 3
    assert submit(queue, ls, 1, r1)["status"] == "exists"  # the same state twice in a row: one job


def test_an_execution_that_lost_its_job_publishes_nothing(queue, settings, redis_conn, ls, video, monkeypatch):
    """The watchdog requeued the job (its heartbeat expired) and another execution owns it now."""
    ls.start()
    reply = {}
    made = Hooked(lambda: redis_conn.set(OWNER_KEY.format(job_id=reply["a"]["job_id"]), "another-execution"))
    monkeypatch.setattr(process_module, "get_predictor", lambda s: made)
    reply["a"] = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    assert queue.status(reply["a"]["job_id"])["result"]["status"] == "superseded"
    assert ls.predictions == [] and published(settings) == []


# -- the job-input surface: malformed annotations and task data ---------------------------------
def _region(**change):
    def make(video):
        region = point(video, "disc", 0, 0)
        value = dict(region["value"])
        for key, new in change.items():
            if key.startswith("value_"):
                if new is _MISSING:
                    value.pop(key[6:], None)
                else:
                    value[key[6:]] = new
        region["value"] = value
        region.update({k: v for k, v in change.items() if not k.startswith("value_")})
        return [region]

    return make


_MISSING = object()

BAD_ANNOTATIONS = {
    "x is text": (_region(value_x="abc"), "'x' must be a number"),
    "x is missing": (_region(value_x=_MISSING), "'x' must be a number"),
    "x is NaN": (_region(value_x=float("nan")), "'x' must be a number"),
    "y is infinite": (_region(value_y=float("inf")), "'y' must be a number"),
    "x past the image": (_region(value_x=140.0), "outside the image"),
    "item_index is text": (_region(item_index="zero"), "'item_index' must be a page number"),
    "item_index past the pages": (_region(item_index=5), "which has 2 pages"),
    "label without a number": (_region(value_keypointlabels=["Subject"]), "does not end in an object number"),
    "labels not a list": (_region(value_keypointlabels="Subject 1"), "must name the object's label"),
    "value not an object": (_region(value="a point"), "'value' must be an object"),
    "region is a string": (lambda video: ["a region"], "must be an object"),
    "result is a string": (lambda video: "regions", "must be a list of regions"),
    "no from_name": (_region(from_name=None), "has no 'from_name'"),
    "original_width is text": (_region(original_width="wide"), "'original_width' must be a positive number"),
    "garbage brush rle": (
        lambda video: [
            {
                "from_name": "brush",
                "to_name": "image",
                "type": "brushlabels",
                "original_width": W,
                "original_height": H,
                "value": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["Subject 1"]},
            }
        ],
        "not a Label Studio brush mask",
    ),
    "obj1_number is text": (
        lambda video: [
            point(video, "disc", 0, 0),
            {"from_name": "obj1_number", "to_name": "image", "type": "number", "value": {"number": "abc"}},
        ],
        "obj1_number must be a positive whole number",
    ),
    "no clicks at all": (lambda video: [], "nothing to propagate"),
}

BAD_TASK_DATA = {
    "negative segment length": ({"segment_frames": [N, -3]}, "segment_frames must list positive frame counts"),
    "negative start_frame": ({"start_frame": -100}, "start_frame must be a non-negative frame number"),
    "start_frame is text": ({"start_frame": "abc"}, "start_frame must be a non-negative frame number"),
    "segment_index is text": ({"segment_index": "one"}, "segment_index must be a 0-based index"),
    "segment_index past the list": ({"segment_index": 4}, "segment_index must be a 0-based index"),
    "frame index past the video": ({"frame_indices": [0, 99]}, "beyond the last frame"),
    "segment list disagrees with the video": ({"segment_frames": [N + 4]}, "segment list says"),
}


@pytest.mark.parametrize("name", sorted(BAD_ANNOTATIONS))
def test_malformed_annotations_fail_once_with_a_reason(name, queue, settings, redis_conn, ls, video, predictor):
    make, expected = BAD_ANNOTATIONS[name]
    ls.start()
    _assert_fails_once(queue, settings, redis_conn, ls, make(video), expected)


@pytest.mark.parametrize("name", sorted(BAD_TASK_DATA))
def test_bad_task_data_fails_once_with_a_reason(name, queue, settings, redis_conn, ls, video, predictor):
    change, expected = BAD_TASK_DATA[name]
    ls.tasks[TASK]["data"].update(change)
    ls.start()
    _assert_fails_once(queue, settings, redis_conn, ls, [point(video, "disc", 0, 0)], expected)


def _assert_fails_once(queue, settings, redis_conn, ls, result, expected: str) -> None:
    reply = submit(queue, ls, 1, result)
    run(settings, redis_conn)
    status = queue.status(reply["job_id"])
    assert status["status"] == "failed", status
    assert expected in status["error"], status["error"]
    assert status["error"].startswith("ml_backend.exceptions.PromptError: "), status["error"]
    assert len(queue.fetch(reply["job_id"]).results()) == 1  # no retry
    assert ls.predictions == [] and published(settings) == []


def test_good_green_screen_output_survives_bad_task_data(queue, settings, redis_conn, ls, video, predictor):
    ls.start()
    submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    before = {p.name: p.read_bytes() for p in published(settings)}
    assert len(before) == N
    ls.tasks[TASK]["data"].update(segment_frames=[N, -3], start_frame=-100)
    reply = submit(queue, ls, 1, [point(video, "square", 0, 0)])
    run(settings, redis_conn)
    assert queue.status(reply["job_id"])["status"] == "failed"
    assert {p.name: p.read_bytes() for p in published(settings)} == before
    out = settings.results_root / f"project_{PROJECT}" / "greenscreen"
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


def test_the_projects_export_choice_in_label_studio(queue, settings, redis_conn, ls, video, predictor):
    """The ML backend connection's extra params (Settings → Model) choose more formats per project."""
    ls.ml_backends = [
        {"id": 1, "project": PROJECT, "url": "http://backend:9090", "title": "SAM 2", "extra_params": {"exports": ["davis", "mots"]}},
        {"id": 2, "project": PROJECT + 1, "url": "http://other", "title": "x", "extra_params": {"exports": "ytvis"}},
    ]  # fmt: skip
    ls.start()
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    assert queue.status(reply["job_id"])["status"] == "finished"
    out = settings.results_root / f"project_{PROJECT}" / "greenscreen"
    assert len(list((out / "davis" / "segment_000").glob("*.png"))) == N
    assert (out / "mots" / "segment_000.txt").is_file() and not (out / "ytvis.json").exists()


def test_an_unknown_format_in_the_projects_choice_fails_the_job_once(queue, settings, redis_conn, ls, video, predictor):
    ls.ml_backends = [
        {"id": 1, "project": PROJECT, "url": "http://b", "title": "t", "extra_params": {"exports": "gif"}}
    ]
    ls.start()
    _assert_fails_once(queue, settings, redis_conn, ls, [point(video, "disc", 0, 0)], "unknown export format 'gif'")
