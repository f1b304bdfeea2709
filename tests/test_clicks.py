"""Click semantics through the real HTTP app with a deterministic segmenter at the model seam:
points are combined per object and image, negative points remove area, sessions keep points
across auto-accepted suggestions, and concurrent annotators never see each other's points."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor

from .fakes import DiscSegmenter
from .helpers import keypoint, predict_payload
from .test_predict import decode


@pytest.fixture
def client(small_settings, local_root, tmp_path):
    fetcher = FileFetcher("http://ls.invalid:8080", tmp_path, local_root=local_root)
    segmenter = DiscSegmenter()
    predictor = InteractivePredictor(small_settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    return create_app(small_settings, predictor=predictor).test_client()


def mask_for(client, clicks, **kwargs) -> np.ndarray:
    response = client.post("/predict", json=predict_payload(clicks, **kwargs))
    assert response.status_code == 200, response.get_json()
    return decode(response.get_json()["results"][0]["result"][0])


def test_positive_points_add_and_negative_points_remove_area(client):
    a, b = keypoint(25, 25), keypoint(75, 75)
    one = mask_for(client, [a])
    two = mask_for(client, [a, b])
    assert two.sum() > one.sum() and (two & one).sum() == one.sum()
    neg = keypoint(30, 30, positive=False)
    three = mask_for(client, [a, b, neg])
    assert three.sum() < two.sum()
    assert not three[int(0.30 * 120), int(0.30 * 160)]
    assert (three & ~two).sum() == 0  # a negative point only removes


def test_lone_clicks_after_accept_accumulate(client):
    first = mask_for(client, [keypoint(25, 25)], task_id=5)
    # auto-accept removed the first keypoint; the second arrives alone (a new id)
    second = mask_for(client, [keypoint(75, 75)], task_id=5)
    assert second.sum() > first.sum() and (second & first).sum() == first.sum()
    third = mask_for(client, [keypoint(25, 25, positive=False)], task_id=5)
    assert third.sum() < second.sum()


def test_annotators_tasks_and_objects_do_not_mix(client):
    mask_for(client, [keypoint(25, 25)], task_id=9, login="alice")
    bob = mask_for(client, [keypoint(75, 75)], task_id=9, login="bob")
    alone = mask_for(client, [keypoint(75, 75)], task_id=10, login="carol")
    assert (bob == alone).all()  # alice's point did not leak into bob's object
    other_object = mask_for(client, [keypoint(75, 75, label="Object 2")], task_id=9, login="alice")
    assert (other_object == alone).all()


def test_drafts_tell_annotators_apart(client):
    def with_draft(clicks, user):
        payload = predict_payload(clicks, task_id=21)
        payload["tasks"][0]["drafts"] = [{"id": 1, "user": user, "result": []}]
        response = client.post("/predict", json=payload)
        return decode(response.get_json()["results"][0]["result"][0])

    with_draft([keypoint(25, 25)], user=1)
    second_user = with_draft([keypoint(75, 75)], user=2)
    alone = mask_for(client, [keypoint(75, 75)], task_id=22)
    assert (second_user == alone).all()
