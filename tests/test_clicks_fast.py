"""Clicks stay fast on every page (issue 29): a click on a cached embedding never waits for an
encoder run, a task's pages are queued on its first click and when the worker asks (a Redis
list), every clicked object of a page comes back with each click, and ``/predict`` says where
its time went (``Server-Timing``). Real SAM 2 (random weights, 256 px) and a real Redis where
the seam matters; gates are events, never timing margins."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.server.prefetch import Prefetcher, RequestListener
from ml_backend.server.segmenter import ImageSegmenter
from ml_backend.worker.pagerequests import MAX_REQUESTS, REQUESTS_KEY, push_request

from .fakes import DiscSegmenter
from .helpers import CONFIG, keypoint, predict_payload
from .test_predict import decode

FRAMES = [f"/data/local-files/?d=pair/f{i}.png" for i in range(4)]
WAIT = 120  # seconds an event may take on a loaded machine before the test gives up (a hang)


def make(settings, local_root, tmp_path, segmenter, *, jobs=None):
    fetcher = FileFetcher("http://ls.invalid:8080", tmp_path / "dl", local_root=local_root)
    predictor = InteractivePredictor(settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    app = create_app(settings, predictor=predictor, jobs=jobs, prefetch_requests=jobs is not None)
    return predictor, app.test_client()


def until(predicate, what: str) -> None:
    """Wait for ``predicate()`` (a hang guard of ``WAIT`` seconds, not a timing assertion)."""
    stop = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        if predicate():
            return
        stop.wait(0.05)
    pytest.fail(f"never happened: {what}")


class EncoderGate:
    """Holds SAM 2's image encoder inside its forward pass until :meth:`release` (a forward
    pre-hook on ``model.image_encoder``); ``inside`` is set once an encoder run is held. With
    ``thread``, only runs on the thread of that name are held."""

    def __init__(self, model, thread: str | None = None) -> None:
        self.inside = threading.Event()
        self.thread = thread
        self._release = threading.Event()
        self._handle = model.image_encoder.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.thread is not None and threading.current_thread().name != self.thread:
            return
        self.inside.set()
        assert self._release.wait(WAIT), "the test never released the encoder"

    def release(self) -> None:
        self._release.set()

    def remove(self) -> None:
        self._release.set()
        self._handle.remove()


def frame(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((60, 80, 3)) * 255).astype(np.uint8)


def in_thread(target, *args) -> tuple[threading.Thread, threading.Event, list]:
    done, out = threading.Event(), []

    def run() -> None:
        try:
            out.append(target(*args))
        except BaseException as exc:  # reported by the test
            out.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, out


def test_the_decoder_runs_while_the_encoder_is_busy(image_model, small_settings):
    """Real SAM 2: an encoder run held inside its forward pass does not stop a decode on a
    cached embedding (the segmenter decodes under its own lock)."""
    segmenter = ImageSegmenter(image_model, small_settings)
    cached = segmenter.embed("a", frame(1))
    gate = EncoderGate(image_model)
    try:
        encoder, encoded, _ = in_thread(segmenter.embed, "b", frame(2))
        assert gate.inside.wait(WAIT)
        _, decoded, out = in_thread(segmenter.predict, cached, np.array([[40.0, 30.0]]), np.array([1]))
        assert decoded.wait(WAIT), "the decode waited for the encoder run"
        mask, score = out[0]
        assert mask.shape == (60, 80) and not encoded.is_set()  # the encoder is still held
    finally:
        gate.remove()
    assert encoded.wait(WAIT) and segmenter.encodes == 2


def test_a_repeat_click_is_not_stuck_behind_a_prefetch(image_model, small_settings, local_root, tmp_path):
    """Real SAM 2 over HTTP: the first click in a task queues its other pages; while the
    prefetcher's encoder run is held, a repeat click on the clicked page is answered from the
    cache (Server-Timing says so)."""
    segmenter = ImageSegmenter(image_model, small_settings)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    frames = FRAMES[:2]
    gate = EncoderGate(image_model, thread="embedding-prefetch")
    try:
        first = client.post(
            "/predict", json=predict_payload([keypoint(40, 30, item_index=0)], frames=frames, task_id=3)
        )
        assert first.status_code == 200 and 'desc="encoder"' in first.headers["Server-Timing"]
        assert gate.inside.wait(WAIT), "the first click did not queue the task's other page"
        payload = predict_payload(
            [keypoint(40, 30, item_index=0), keypoint(60, 50, item_index=0)], frames=frames, task_id=3
        )
        _, answered, out = in_thread(lambda: client.post("/predict", json=payload))
        assert answered.wait(WAIT), "the repeat click waited for the prefetch"
        response = out[0]
        assert response.status_code == 200 and "embed;dur=" in response.headers["Server-Timing"]
        assert 'desc="cache hit"' in response.headers["Server-Timing"] and segmenter.encodes == 1
    finally:
        gate.remove()
    assert predictor.prefetcher.wait_idle(WAIT) and segmenter.encodes == 2  # page 1 embedded once


def test_two_first_clicks_on_new_pages_queue_at_most_one_encoder_run(image_model, small_settings):
    """Two annotators' first clicks on two new pages: the second encoder run starts as soon as
    the first ends (one encoder run at a time), and a decode goes on meanwhile."""
    segmenter = ImageSegmenter(image_model, small_settings)
    cached = segmenter.embed("c", frame(3))
    gate = EncoderGate(image_model)
    try:
        _, first_done, _ = in_thread(segmenter.embed, "a", frame(1))
        assert gate.inside.wait(WAIT)
        gate.inside.clear()
        _, second_done, _ = in_thread(segmenter.embed, "b", frame(2))
        _, decoded, _ = in_thread(segmenter.predict, cached, np.array([[10.0, 10.0]]), np.array([1]))
        assert decoded.wait(WAIT)
        assert not first_done.is_set() and not second_done.is_set()
    finally:
        gate.remove()
    assert first_done.wait(WAIT) and second_done.wait(WAIT) and segmenter.encodes == 3


def test_the_worker_pushes_pages_and_the_backend_embeds_them(redis_conn, small_settings, local_root, tmp_path):
    """Real Redis: a request pushed as the worker does reaches the backend's listener, whose
    prefetcher embeds the pages; the list stays bounded; junk is skipped."""

    class Jobs:  # the app reads only the connection from its job queue here
        connection = redis_conn

        def on_webhook(self, payload):  # pragma: no cover - not called
            raise AssertionError

    segmenter = DiscSegmenter()
    predictor, client = make(small_settings, local_root, tmp_path, segmenter, jobs=Jobs())
    listener = client.application.extensions["sam2_prefetch_requests"]
    try:
        redis_conn.lpush(REQUESTS_KEY, "not json")
        push_request(redis_conn, 1, 7, FRAMES[2:])
        until(lambda: listener.handled >= 2, "the listener read both requests")
        assert predictor.prefetcher.wait_idle(WAIT)
        assert sorted(k[0].rsplit("/", 1)[1] for k in segmenter.encoded) == ["f2.png", "f3.png"]
    finally:
        listener.close()
    for i in range(MAX_REQUESTS + 5):
        push_request(redis_conn, 1, i, FRAMES[:1])
    assert redis_conn.llen(REQUESTS_KEY) == MAX_REQUESTS
    assert json.loads(redis_conn.lindex(REQUESTS_KEY, 0)) == {
        "project": 1,
        "task": MAX_REQUESTS + 4,
        "refs": FRAMES[:1],
    }


def test_jobs_pages_wait_behind_opened_tasks_and_never_evict_them():
    """The prefetcher's queue: an opened task's pages go before every job's pages, newest job
    first; a job's page that finds no room is dropped with the rest of that job."""
    order: list[str] = []
    queued = threading.Event()

    def embed(ref, protected):
        order.append(ref)
        return None if ref == "j1-a" else ref  # no room for j1-a

    prefetcher = Prefetcher(embed, lambda: not queued.is_set(), idle_wait=0.01)  # "a click" until queued
    prefetcher.queue_task("job1", ["j1-a", "j1-b"])
    prefetcher.queue_task("job2", ["j2-a"])
    prefetcher.open_task("open", ["o-a", "o-b"])
    queued.set()
    assert prefetcher.wait_idle(WAIT)
    assert order == ["o-a", "o-b", "j2-a", "j1-a"]  # j1-b dropped: j1-a found no room
    assert prefetcher.first_click("other") is True and prefetcher.first_click("other") is False
    assert prefetcher.first_click("open") is False
    prefetcher.close()


def test_redis_outage_does_not_end_the_listener(redis_server, redis_conn):
    """The listener survives Redis going away and reads again once it is back."""
    seen = threading.Event()
    listener = RequestListener(redis_conn, lambda request: seen.set(), block=0.2, retry=0.2).start()
    try:
        redis_server.stop()
        try:
            until(lambda: listener.failures > 0, "the listener saw Redis go away")
        finally:
            redis_server.start()
        push_request(redis_conn, 1, 1, FRAMES[:1])
        assert seen.wait(WAIT)
    finally:
        listener.close()


@pytest.fixture
def disc_client(small_settings, local_root, tmp_path):
    return make(small_settings, local_root, tmp_path, DiscSegmenter())[1]


#: The test config with five objects per image.
CONFIG5 = CONFIG.replace(
    '<Label value="Object 1"/><Label value="Object 2"/>', "".join(f'<Label value="Object {i}"/>' for i in range(1, 6))
)


def answer(client, clicks, **kwargs):
    response = client.post("/predict", json=predict_payload(clicks, config=CONFIG5, **kwargs))
    assert response.status_code == 200, response.get_json()
    return response


def labels(response) -> list[str]:
    return [r["value"]["brushlabels"][0] for r in response.get_json()["results"][0]["result"]]


def test_each_click_brings_the_other_objects_of_its_page(disc_client):
    one = answer(disc_client, [keypoint(25, 25, label="Object 1")], task_id=40, login="ann")
    assert labels(one) == ["Object 1"]
    answer(disc_client, [keypoint(75, 75, label="Object 2")], task_id=40, login="ann")
    answer(disc_client, [keypoint(50, 50, label="Object 4", item_index=1)], task_id=40, login="ann")  # page 2
    answer(disc_client, [keypoint(50, 50, label="Object 5")], task_id=40, login="bob")  # someone else
    third = answer(disc_client, [keypoint(50, 80, label="Object 3")], task_id=40, login="ann")
    assert labels(third) == ["Object 3", "Object 1", "Object 2"]
    regions = third.get_json()["results"][0]["result"]
    assert {(r["to_name"], r["item_index"], r["from_name"]) for r in regions} == {("image1", 0, "brush1")}
    masks = [decode(r) for r in regions]
    assert masks[1][int(0.25 * 120), int(0.25 * 160)] and masks[2][int(0.75 * 120), int(0.75 * 160)]
    assert masks[0][int(0.8 * 120), int(0.5 * 160)] and not masks[0][int(0.25 * 120), int(0.25 * 160)]
    again = answer(disc_client, [keypoint(25, 25, label="Object 1"), keypoint(30, 30, label="Object 1")],
                   task_id=40, login="ann")  # fmt: skip
    assert labels(again) == ["Object 1", "Object 2", "Object 3"]  # the clicked object first, then by last click


def test_clicks_before_and_after_the_first_draft_are_one_annotators_page(disc_client):
    """Label Studio's first clicks carry no draft (no user); later ones carry the user's draft."""
    answer(disc_client, [keypoint(25, 25, label="Object 1")], task_id=44)
    payload = predict_payload([keypoint(75, 75, label="Object 2")], config=CONFIG5, task_id=44)
    payload["tasks"][0]["drafts"] = [{"id": 1, "user": 7, "result": []}]
    assert labels(disc_client.post("/predict", json=payload)) == ["Object 2", "Object 1"]
    payload = predict_payload([keypoint(50, 50, label="Object 3")], config=CONFIG5, task_id=44)
    payload["tasks"][0]["drafts"] = [{"id": 1, "user": 8, "result": []}]  # another annotator
    assert labels(disc_client.post("/predict", json=payload)) == ["Object 3", "Object 1"]  # not user 7's


def test_accepted_objects_are_not_suggested_again(disc_client):
    answer(disc_client, [keypoint(25, 25, label="Object 1")], task_id=41)
    payload = predict_payload([keypoint(75, 75, label="Object 2")], task_id=41)
    accepted = {"type": "brushlabels", "to_name": "image1", "item_index": 0, "value": {"brushlabels": ["Object 1"]}}
    payload["tasks"][0]["drafts"] = [{"id": 1, "result": [accepted]}]
    response = disc_client.post("/predict", json=payload)
    assert labels(response) == ["Object 2"]


def test_page_objects_can_be_switched_off(small_settings, local_root, tmp_path):
    client = make(small_settings.replace(suggest_page_objects=False), local_root, tmp_path, DiscSegmenter())[1]
    answer(client, [keypoint(25, 25, label="Object 1")], task_id=42)
    assert labels(answer(client, [keypoint(75, 75, label="Object 2")], task_id=42)) == ["Object 2"]


def test_server_timing_names_the_parts_of_a_click(disc_client):
    first = answer(disc_client, [keypoint(25, 25)], task_id=43)
    parts = dict(item.split(";", 1) for item in first.headers["Server-Timing"].split(", "))
    assert set(parts) == {"parse", "fetch", "decode", "embed", "decoder", "rle", "json", "total"}
    assert all(v.startswith("dur=") for v in parts.values())
    assert 'desc="encoder"' in parts["embed"]
    repeat = answer(disc_client, [keypoint(25, 25), keypoint(30, 30)], task_id=43)
    assert 'desc="cache hit"' in repeat.headers["Server-Timing"]
    opened = disc_client.post("/predict", json=predict_payload(None))
    assert [p.split(";")[0] for p in opened.headers["Server-Timing"].split(", ")] == ["parse", "json", "total"]
