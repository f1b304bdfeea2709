"""Embedding a task's frames when Label Studio opens it: order, clicks first, one encode per
frame, newest task first, the off switch, cache bounds; and one case with real SAM 2.

Where order matters, encodes are held with gates the test opens (:class:`Gates`), never by
sleeping: a loaded machine changes how long things take, not what these tests see."""

from __future__ import annotations

import threading
import time

from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.server.segmenter import EmbeddingCache, ImageSegmenter
from ml_backend.worker.pagerequests import page_order

from .fakes import DiscSegmenter
from .helpers import keypoint, predict_payload

FRAMES = [f"/data/local-files/?d=pair/f{i}.png" for i in range(4)]


def make(small_settings, local_root, tmp_path, segmenter, **changes):
    settings = small_settings.replace(**changes)
    fetcher = FileFetcher("http://ls.invalid:8080", tmp_path / "dl", local_root=local_root)
    predictor = InteractivePredictor(settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    return predictor, create_app(settings, predictor=predictor).test_client()


def pages(segmenter) -> list[str]:
    """The frames the segmenter encoded, in order, as ``f0``, ``f1``, …"""
    return [key[0].rsplit("/", 1)[1].removesuffix(".png") for key in segmenter.encoded]


def open_task(client, frames=FRAMES, task_id=1):
    response = client.post("/predict", json=predict_payload(None, frames=frames, task_id=task_id))
    assert response.status_code == 200 and response.get_json() == {"results": [[]]}


def click(client, page, frames=FRAMES, task_id=1):
    response = client.post(
        "/predict", json=predict_payload([keypoint(40, 30, item_index=page)], frames=frames, task_id=task_id)
    )
    assert response.status_code == 200, response.get_json()


class Gates:
    """Holds the encode of each page in ``hold`` until :meth:`release`; :meth:`wait_started`
    returns once that encode is running (inside the model lock)."""

    def __init__(self, segmenter, hold=("f0",)) -> None:
        self.started = {name: threading.Event() for name in hold}
        self.open = {name: threading.Event() for name in hold}
        segmenter.on_encode = self._encode

    def _encode(self, key) -> None:
        name = key[0].rsplit("/", 1)[1].removesuffix(".png")
        if name in self.open:
            self.started[name].set()
            assert self.open[name].wait(60), f"{name} was never released"

    def wait_started(self, name: str) -> None:
        assert self.started[name].wait(60), f"{name} never started encoding"

    def release(self, name: str) -> None:
        self.open[name].set()


def click_in_background(predictor, client, page) -> threading.Thread:
    """A click on ``page`` from another thread; returns once the backend is answering it."""
    thread = threading.Thread(target=click, args=(client, page))
    thread.start()
    for _ in range(6000):  # until the click is counted (an event of the backend's, polled)
        if predictor._clicks > 0:
            return thread
        time.sleep(0.01)
    raise AssertionError("the click never reached the backend")


def test_page_order_puts_every_first_page_first():
    assert page_order([["a0", "a1", "a2"], ["b0", "b1"], ["a0"]]) == ["a0", "b0", "a1", "b1", "a2"]
    assert page_order([["x", 3, None]]) == ["x"]


def test_an_opened_task_is_embedded_page_by_page_and_clicks_encode_nothing(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter(encode_seconds=0.02)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client)
    assert predictor.prefetcher.wait_idle(10)
    assert pages(segmenter) == ["f0", "f1", "f2", "f3"]  # the single image ("still" = f0) adds nothing
    for page in range(4):
        click(client, page)
    assert segmenter.encodes == 4  # no click encoded again


def test_a_click_preempts_prefetching_and_waits_at_most_one_encode(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter()
    gates = Gates(segmenter)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client)
    gates.wait_started("f0")  # the prefetcher is inside its first encode
    clicking = click_in_background(predictor, client, 3)
    gates.release("f0")
    clicking.join(60)
    # the encode in progress, then the click's own; not the rest of the task
    assert pages(segmenter)[:2] == ["f0", "f3"]
    assert predictor.prefetcher.wait_idle(10)
    assert sorted(pages(segmenter)) == ["f0", "f1", "f2", "f3"]  # each once


def test_a_click_on_the_frame_being_embedded_waits_for_that_embedding(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter()
    gates = Gates(segmenter)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client)
    gates.wait_started("f0")
    clicking = click_in_background(predictor, client, 0)
    gates.release("f0")
    clicking.join(60)
    assert pages(segmenter).count("f0") == 1  # it waited for that embedding: no second encode
    assert predictor.prefetcher.wait_idle(10)


def test_a_newly_opened_task_goes_first(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter()
    gates = Gates(segmenter)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client, FRAMES, task_id=1)
    gates.wait_started("f0")  # task 1's first frame is running when task 2 opens
    open_task(client, [FRAMES[3], FRAMES[2]], task_id=2)
    gates.release("f0")
    assert predictor.prefetcher.wait_idle(10)
    assert pages(segmenter) == ["f0", "f3", "f2", "f1"]


def test_prefetching_can_be_switched_off(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter()
    predictor, client = make(small_settings, local_root, tmp_path, segmenter, prefetch_embeddings=False)
    open_task(client)
    time.sleep(0.3)
    assert predictor.prefetcher is None and segmenter.encodes == 0


def test_prefetch_never_evicts_a_recent_tasks_frame(image_model, small_settings):
    """Real SAM 2 segmenter, a cache of 2: prefetching a third frame would evict a protected one."""
    import numpy as np

    segmenter = ImageSegmenter(image_model, small_settings, cache=EmbeddingCache(max_items=2, max_bytes=1 << 40))
    frames = {k: (np.random.default_rng(ord(k)).random((60, 80, 3)) * 255).astype(np.uint8) for k in "abc"}
    segmenter.embed("a", frames["a"])
    segmenter.embed("b", frames["b"])
    assert segmenter.embed("c", frames["c"], protected={"a", "b"}) is None
    assert segmenter.encodes == 2 and len(segmenter.cache) == 2  # not even encoded
    assert segmenter.embed("c", frames["c"], protected={"a"}) is not None  # "b" may go
    assert segmenter.cache.get("a") is not None and segmenter.cache.get("b") is None
    segmenter.embed("d", frames["a"])  # a click evicts the least recently used, as always
    assert len(segmenter.cache) == 2


def test_with_real_sam2_the_first_click_after_opening_encodes_nothing(
    image_model, small_settings, local_root, tmp_path
):
    segmenter = ImageSegmenter(image_model, small_settings)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client, FRAMES[:2])
    assert predictor.prefetcher.wait_idle(60)
    assert segmenter.encodes == 2
    click(client, 1, FRAMES[:2])
    assert segmenter.encodes == 2 and segmenter.cache.stats()["hits"] >= 1


def test_clicks_from_several_threads_while_prefetching_keep_one_encode_per_frame(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter(encode_seconds=0.05)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client)
    threads = [threading.Thread(target=click, args=(client, page)) for page in (0, 1, 2, 3, 3, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert predictor.prefetcher.wait_idle(10)
    assert sorted(pages(segmenter)) == ["f0", "f1", "f2", "f3"]


def test_tasks_beyond_prefetch_tasks_are_dropped(small_settings, local_root, tmp_path):
    segmenter = DiscSegmenter()
    gates = Gates(segmenter)
    predictor, client = make(small_settings, local_root, tmp_path, segmenter, prefetch_tasks=1)
    open_task(client, FRAMES[:3], task_id=1)
    gates.wait_started("f0")
    open_task(client, [FRAMES[3]], task_id=2)  # only the newest task is kept
    gates.release("f0")
    assert predictor.prefetcher.wait_idle(10)
    assert "f3" in pages(segmenter) and "f2" not in pages(segmenter)  # task 1's rest was dropped


def test_prefetch_stays_in_the_cache_bounds(image_model, small_settings, local_root, tmp_path):
    """Real SAM 2, a cache of 2 items, a task of 4 pages: prefetching stops at the bound."""
    segmenter = ImageSegmenter(image_model, small_settings, cache=EmbeddingCache(max_items=2, max_bytes=1 << 40))
    predictor, client = make(small_settings, local_root, tmp_path, segmenter)
    open_task(client)
    assert predictor.prefetcher.wait_idle(60)
    assert len(segmenter.cache) == 2 and segmenter.encodes == 2  # the third page found no room: not encoded
