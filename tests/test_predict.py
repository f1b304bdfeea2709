"""/predict end to end in process: Label Studio-shaped payloads → real SAM 2 (random weights,
256 px) → brush RLE that label-studio-sdk decodes."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.server.segmenter import ImageSegmenter

from .helpers import keypoint, predict_payload


def decode(result: dict) -> np.ndarray:
    h, w = result["original_height"], result["original_width"]
    return decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0


@pytest.fixture
def segmenter(image_model, small_settings):
    return ImageSegmenter(image_model, small_settings)


def make_client(settings, local_root, segmenter, tmp_path):
    fetcher = FileFetcher("http://ls.invalid:8080", tmp_path / "dl", local_root=local_root)
    predictor = InteractivePredictor(settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    return create_app(settings, predictor=predictor).test_client()


@pytest.fixture
def client(small_settings, local_root, segmenter, tmp_path):
    return make_client(small_settings, local_root, segmenter, tmp_path)


def click(client, clicks, **kwargs):
    response = client.post("/predict", json=predict_payload(clicks, **kwargs))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert len(body["results"]) == 1
    (result,) = body["results"][0]["result"]
    return body, result


def test_click_returns_brush_of_image_size_at_item_index(client):
    body, result = click(client, [keypoint(40, 30, item_index=2)])
    assert result["type"] == "brushlabels"
    assert result["from_name"] == "brush1" and result["to_name"] == "image1"
    assert result["item_index"] == 2
    assert result["value"]["brushlabels"] == ["Object 1"]
    mask = decode(result)
    assert mask.shape == (120, 160)
    assert 0 < mask.sum() < mask.size
    assert body["results"][0]["model_version"].endswith("random-weights")


def test_single_image_tag_has_no_item_index(client):
    _, result = click(client, [keypoint(40, 30, item_index=None, from_name="kp_single", to_name="single")])
    assert result["from_name"] == "brush_single"
    assert "item_index" not in result
    assert decode(result).shape == (120, 160)


def test_second_click_changes_mask_and_negative_click_reaches_sam(client):
    first = keypoint(30, 30)
    _, one = click(client, [first])
    second = keypoint(75, 66)
    _, two = click(client, [first, second])
    assert (decode(one) != decode(two)).any()
    neg = keypoint(50, 50, positive=False)
    _, three = click(client, [first, second, neg])
    pos = dict(neg, is_positive=True, id="same-place-positive")
    _, three_pos = click(client, [first, second, pos])
    # The label of the third point reaches SAM 2: negative and positive give different masks.
    assert (decode(three) != decode(three_pos)).any()


def test_repeat_click_reuses_embedding(small_settings, local_root, segmenter, tmp_path):
    # Counts the encoder runs of clicks alone. With prefetching on, the first click also queues
    # the task's other pages for a background thread, and whether that thread embeds one of them
    # between two clicks depends on the machine's load (prefetching has its own tests with gates:
    # tests/test_prefetch.py, tests/test_clicks_fast.py).
    client = make_client(replace(small_settings, prefetch_embeddings=False), local_root, segmenter, tmp_path)
    click(client, [keypoint(40, 30, item_index=1)])
    assert segmenter.encodes == 1
    for x in (10, 50, 90):
        click(client, [keypoint(x, 30, item_index=1)])
    assert segmenter.encodes == 1
    click(client, [keypoint(40, 30, item_index=3)])
    assert segmenter.encodes == 2
    assert segmenter.cache.stats()["hits"] >= 3


def test_points_of_other_pages_are_ignored(client):
    # The frontend sends every smart keypoint of the label; only the newest click's page counts.
    _, alone = click(client, [keypoint(40, 30, item_index=0)], task_id=7)
    _, mixed = click(client, [keypoint(80, 80, item_index=1), keypoint(40, 30, item_index=0)], task_id=8)
    assert mixed["item_index"] == 0
    assert (decode(alone) == decode(mixed)).all()


def test_batch_predict_answers_empty_results(client):
    payload = predict_payload(None)
    payload["tasks"] = payload["tasks"] * 3
    started = time.perf_counter()
    response = client.post("/predict", json=payload)
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 200
    assert response.get_json() == {"results": [[], [], []]}  # no prediction for any task: nothing stored


def test_health_setup_versions(client):
    assert client.get("/health").get_json()["status"] == "UP"
    setup = client.post("/setup", json={"project": "1.1", "schema": "<View/>", "hostname": "x", "access_token": "t"})
    assert setup.status_code == 200 and "model_version" in setup.get_json()
    assert client.get("/versions").get_json()["versions"]


def test_health_answers_while_inference_runs(client, segmenter):
    # Hold the model lock as a long inference would; health and setup must not wait for it.
    with segmenter._encode_lock, segmenter._decode_lock:
        worker = threading.Thread(target=lambda: client.post("/predict", json=predict_payload([keypoint(5, 5)])))
        worker.start()
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert client.post("/setup", json={"project": "2.2", "schema": "<View/>"}).status_code == 200
        assert time.perf_counter() - started < 1.0
    worker.join(timeout=30)


def test_config_from_setup_is_used_when_predict_has_none(client):
    from .helpers import CONFIG

    client.post("/setup", json={"project": "1.1700000000", "schema": CONFIG})
    payload = predict_payload([keypoint(40, 30)])
    del payload["label_config"]
    assert client.post("/predict", json=payload).status_code == 200
