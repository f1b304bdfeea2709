"""The first-frame preview of a submitted segment: the mask of the clicks and brush masks on page 0,
blended over the frame, written under local-files storage and set as the task's ``preview``;
through the real ``/webhook`` route in both WEBHOOK_MODEs, never over a job's strip, and once
with real SAM 2.

The disc stand-in segmenter (``tests/fakes.py``) makes the mask exactly known; the stand-in for
Label Studio's API (``tests/fake_labelstudio.py``) takes the task-data PATCH."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ml_backend.exporters.overlays import color
from ml_backend.labelstudio.annotations import fingerprint
from ml_backend.labelstudio.brush import mask_to_result
from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.labelstudio.taskdata import local_path
from ml_backend.server.app import create_app
from ml_backend.server.firstframe import is_first_frame_preview, write_first_frame_preview
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.worker.queue import JobQueue

from .fake_labelstudio import FakeLabelStudio
from .fakes import DiscSegmenter

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
PROJECT, TASK = 7, 21
URL = "/data/local-files/?d="
W, H = 400, 320  # the tile is 160 px high: half size
GREY = (90, 90, 90)
RADIUS = 30
SEGMENT = "segments/take1/video_part_004"
REVIEW = "segments/take1/review"  # beside the segment folders: <task folder>/review


@pytest.fixture(autouse=True)
def quiet_werkzeug():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


TASK_DATA = {
    "frames": [f"{URL}{SEGMENT}/frame_{i:06d}.png" for i in (0, 10, 20)],
    "frame_indices": [0, 10, 20],
    "video": f"{URL}{SEGMENT}",
    "segment_index": 3,
    "segment_frames": [21, 21, 21, 21],
    "start_frame": 0,
    "preview": "",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One stand-in Label Studio for the module (stopping one takes half a second)."""
    root = tmp_path_factory.mktemp("first_frame") / "files"
    folder = root / SEGMENT
    folder.mkdir(parents=True)
    for i in range(21):  # page 0 flat grey; later frames another grey, so a wrong page shows
        value = GREY if i == 0 else (160, 160, 160)
        Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(folder / f"frame_{i:06d}.png")
    server = FakeLabelStudio(root)
    server.add_project(PROJECT, CONFIG)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ls(server):
    """The stand-in with a fresh task and no review files."""
    shutil.rmtree(server.root / REVIEW, ignore_errors=True)
    server.add_task(TASK, PROJECT, dict(TASK_DATA))
    server.task_updates.clear()
    return server


@pytest.fixture
def settings(small_settings, tmp_path, ls):
    return small_settings.replace(
        data_dir=tmp_path / "data",
        label_studio_url=ls.url,
        label_studio_api_key=ls.token,
        label_studio_retry_seconds=5,
        local_files_root=str(ls.root),
    )


@pytest.fixture
def fetcher(ls, tmp_path):
    return FileFetcher(ls.url, tmp_path / "dl", local_root=ls.root)


def point(x: float, y: float, *, page: int = 0, positive: bool = True, label: str = "Subject 1") -> dict:
    """A keypoint at pixel (x, y) of the page, in percent as Label Studio sends it."""
    region = {
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "original_width": W,
        "original_height": H,
        "is_positive": positive,
        "value": {"x": x / W * 100, "y": y / H * 100, "width": 0.6, "keypointlabels": [label]},
    }
    if page:
        region["item_index"] = page
    return region


def brush(mask: np.ndarray, *, page: int = 0, label: str = "Subject 2") -> dict:
    return mask_to_result(mask, from_name="brush", to_name="image", label=label, item_index=page)


def disc(x: float, y: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - x) ** 2 + (yy - y) ** 2 <= RADIUS**2


def small(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``mask`` scaled to the tile the way the tile scales masks."""
    return cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def tinted(image: np.ndarray, obj_id: int) -> np.ndarray:
    """Where ``image`` (the preview) is the grey frame blended with object ``obj_id``'s colour."""
    expected = (np.array(GREY, np.float32) * 0.5 + np.array(color(obj_id), np.float32) * 0.5).astype(np.uint8)
    return (image == expected).all(axis=2)


def caption_free(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[:25, :110] = False  # the "first frame" caption
    return out


def annotation(result: list, annotation_id: int = 1) -> dict:
    return {"id": annotation_id, "task": TASK, "result": result}


def task(ls) -> dict:
    return {"id": TASK, "data": dict(ls.tasks[TASK]["data"])}


def data(ls) -> dict:
    return ls.tasks[TASK]["data"]


def shown(settings, ls) -> np.ndarray:
    return np.asarray(Image.open(local_path(settings, data(ls)["preview"])).convert("RGB"))


def test_a_click_on_the_first_frame_is_the_task_preview(settings, ls, fetcher):
    ann = annotation([point(120, 200)])
    url = write_first_frame_preview(settings, None, CONFIG, task(ls), ann, fetcher, DiscSegmenter(radius=RADIUS))
    assert url == data(ls)["preview"] and is_first_frame_preview(url)
    path = local_path(settings, url)
    assert path == ls.root / REVIEW / f"segment_003_first-{fingerprint(ann)}.png" and path.is_file()
    image = shown(settings, ls)
    assert image.shape == (160, 200, 3)
    expected = small(disc(120, 200), image)
    assert 600 < expected.sum() < 800  # π·15² at half size
    assert (caption_free(tinted(image, 1)) == expected).all()  # exactly the disc, in object 1's colour
    untouched = (image == GREY).all(axis=2)
    assert (caption_free(untouched) == caption_free(~expected)).all()
    assert [body["data"]["preview"] for _, body in ls.task_updates] == [url]


def test_negative_points_remove_area_brushes_count_and_later_pages_do_not(settings, ls, fetcher):
    rect = np.zeros((H, W), bool)
    rect[40:120, 250:350] = True
    later = np.zeros((H, W), bool)
    later[200:300, 20:100] = True
    ann = annotation(
        [
            point(120, 200),
            point(150, 200, positive=False),  # Alt+click: background
            brush(rect),  # an accepted mask of Subject 2 on page 0
            point(330, 260, page=1),  # page 1: not the first frame
            point(60, 60, page=2, label="Subject 3"),
            brush(later, page=1),
            {"from_name": "comments", "to_name": "image", "type": "textarea", "value": {"text": ["hi"]}},
        ]
    )
    segmenter = DiscSegmenter(radius=RADIUS)
    write_first_frame_preview(settings, None, CONFIG, task(ls), ann, fetcher, segmenter)
    image = shown(settings, ls)
    one = small(disc(120, 200) & ~disc(150, 200), image)
    assert 0 < one.sum() < small(disc(120, 200), image).sum()
    assert (caption_free(tinted(image, 1)) == one).all()
    assert (caption_free(tinted(image, 2)) == small(rect, image)).all()
    assert not tinted(image, 3).any()
    untouched = caption_free((image == GREY).all(axis=2))
    assert (untouched == caption_free(~(one | small(rect, image)))).all()  # page 1's click and brush: nothing
    assert segmenter.encoded == [segmenter.encoded[0]] and SEGMENT + "/frame_000000.png" in segmenter.encoded[0][0]


def test_nothing_on_the_first_frame_or_no_local_files_means_no_preview(settings, ls, fetcher):
    segmenter = DiscSegmenter(radius=RADIUS)
    later_only = annotation([point(120, 200, page=1)])
    assert write_first_frame_preview(settings, None, CONFIG, task(ls), later_only, fetcher, segmenter) is None
    negative_only = annotation([point(120, 200, positive=False)])
    assert write_first_frame_preview(settings, None, CONFIG, task(ls), negative_only, fetcher, segmenter) is not None
    ls.task_updates.clear()
    data(ls)["preview"] = ""
    elsewhere = settings.replace(local_files_root="")
    ann = annotation([point(120, 200)])
    assert write_first_frame_preview(elsewhere, None, CONFIG, task(ls), ann, fetcher, segmenter) is None
    assert ls.task_updates == [] and data(ls)["preview"] == ""
    broken = {"id": TASK, "data": {"frames": "not a list"}}
    assert write_first_frame_preview(settings, None, CONFIG, broken, ann, fetcher, segmenter) is None  # logged


def test_a_job_strip_is_never_replaced_but_an_older_first_frame_preview_is(settings, ls, fetcher):
    segmenter = DiscSegmenter(radius=RADIUS)
    first = annotation([point(120, 200)], 1)
    second = annotation([point(120, 200), point(300, 100)], 2)
    old = write_first_frame_preview(settings, None, CONFIG, task(ls), first, fetcher, segmenter)
    new = write_first_frame_preview(settings, None, CONFIG, task(ls), second, fetcher, segmenter)
    assert new != old and data(ls)["preview"] == new
    assert [p.name for p in (ls.root / REVIEW).glob("segment_003_first-*.png")] == [local_path(settings, new).name]

    strip = f"{URL}{REVIEW}/segment_003_preview-0123456789.png"
    data(ls)["preview"] = strip  # a job finished meanwhile
    third = annotation([point(200, 150)], 3)
    assert write_first_frame_preview(settings, None, CONFIG, task(ls), third, fetcher, segmenter) is None
    assert data(ls)["preview"] == strip
    assert not (ls.root / REVIEW / f"segment_003_first-{fingerprint(third)}.png").exists()


def app_for(settings, ls, fetcher, segmenter, redis_conn, mode: str):
    settings = settings.replace(webhook_mode=mode, queue_name=f"test-first-frame-{mode}")
    predictor = InteractivePredictor(settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    app = create_app(settings, predictor=predictor, jobs=JobQueue(redis_conn, settings))
    return app, app.test_client()


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["batch", "auto"])
def test_the_webhook_answers_at_once_and_the_preview_follows(settings, ls, fetcher, redis_conn, mode):
    gate = threading.Event()

    class GatedSegmenter(DiscSegmenter):
        """Encodes only once the test opens the gate: an answer before that did not wait for it."""

        def embed(self, key, image, *, protected=None):
            assert gate.wait(30), "the gate was never opened"
            return super().embed(key, image, protected=protected)

    segmenter = GatedSegmenter(radius=RADIUS)
    app, client = app_for(settings, ls, fetcher, segmenter, redis_conn, mode)
    project = {"id": PROJECT} if mode == "auto" else {"id": PROJECT, "label_config": CONFIG}
    response = client.post(
        "/webhook",
        json={"action": "ANNOTATION_CREATED", "annotation": annotation([point(120, 200)]), "project": project},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == ("ignored" if mode == "batch" else "queued")
    assert segmenter.encodes == 0 and not gate.is_set()  # answered while the render waits to encode
    gate.set()
    assert app.extensions["sam2_first_frames"].wait(10)
    image = shown(settings, ls)
    assert (caption_free(tinted(image, 1)) == small(disc(120, 200), image)).all()
    if mode == "auto":  # the job's "queued" and the preview, both kept (one lock per task)
        wait_for(lambda: data(ls).get("job_state") == "queued")
        assert is_first_frame_preview(data(ls)["preview"])

    # a click on the same page reuses the embedding the preview made
    payload = {
        "tasks": [{"id": TASK, "data": data(ls), "annotations": [], "predictions": []}],
        "project": f"{PROJECT}.1700000000",
        "label_config": CONFIG,
        "params": {"context": {"result": [point(120, 200)]}},
    }
    assert client.post("/predict", json=payload).status_code == 200
    assert segmenter.encodes == 1


def test_webhooks_that_render_nothing(settings, ls, fetcher, redis_conn):
    segmenter = DiscSegmenter(radius=RADIUS)
    app, client = app_for(settings, ls, fetcher, segmenter, redis_conn, "batch")
    previews = app.extensions["sam2_first_frames"]
    ann = annotation([point(120, 200)])
    skipped = dict(ann, was_cancelled=True)
    for body in (
        {"action": "ANNOTATION_CREATED", "annotation": skipped, "project": PROJECT},
        {"action": "ANNOTATIONS_DELETED", "annotation": ann, "project": PROJECT},
        {"action": "TASKS_CREATED", "project": {"id": PROJECT}},
    ):
        assert client.post("/webhook", json=body).status_code == 200
    # a two-video project (a SceneDiff pair) gets no first-frame preview from the webhook
    pair = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
    body = {"action": "ANNOTATION_UPDATED", "annotation": ann, "project": {"id": PROJECT, "label_config": pair}}
    assert client.post("/webhook", json=body).status_code == 200
    assert previews.wait(10)
    assert ls.task_updates == [] and segmenter.encodes == 0
    # without a token the backend cannot write task data: nothing is queued
    app, client = app_for(settings.replace(label_studio_api_key=""), ls, fetcher, segmenter, redis_conn, "batch")
    body = {"action": "ANNOTATION_CREATED", "annotation": ann, "project": PROJECT}
    assert client.post("/webhook", json=body).status_code == 200
    assert app.extensions["sam2_first_frames"].wait(10) and ls.task_updates == []


def test_the_real_image_segmenter_writes_the_preview(settings, ls, fetcher, image_model):
    from ml_backend.server.segmenter import ImageSegmenter

    segmenter = ImageSegmenter(image_model, settings)
    url = write_first_frame_preview(settings, None, CONFIG, task(ls), annotation([point(120, 200)]), fetcher, segmenter)
    assert url is not None and data(ls)["preview"] == url
    assert Image.open(local_path(settings, url)).size == (200, 160)
    assert segmenter.encodes == 1
