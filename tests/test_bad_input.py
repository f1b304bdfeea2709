"""Bad input gets a 4xx with a readable message, and the server keeps answering."""

from __future__ import annotations

import pytest

from ml_backend.app import create_app
from ml_backend.fetch import FileFetcher
from ml_backend.interactive import InteractivePredictor
from ml_backend.segmenter import ImageSegmenter

from .helpers import keypoint, predict_payload


@pytest.fixture(scope="module")
def client(image_model, small_settings, local_root, file_server, tmp_path_factory):
    fetcher = FileFetcher(
        file_server.url,
        tmp_path_factory.mktemp("dl"),
        headers=lambda: {"Authorization": f"Token {file_server.token}"},
        max_bytes=20 * 1024**2,
    )
    settings = small_settings.replace(max_image_pixels=4_000_000)
    predictor = InteractivePredictor(
        settings, fetcher=fetcher, segmenter_factory=lambda: ImageSegmenter(image_model, settings)
    )
    return create_app(settings, predictor=predictor).test_client()


def upload(name: str) -> str:
    return f"/data/upload/pair/{name}"


def good(client):
    frames = [upload("f0.png"), upload("f1.png")]
    response = client.post("/predict", json=predict_payload([keypoint(40, 30)], frames=frames))
    assert response.status_code == 200, response.get_json()


def frames_with(first: str) -> list[str]:
    return [first, upload("f1.png")]


CASES = {
    "context without result": (lambda: _with_context({}), 400, "no 'result'"),
    "context not an object": (lambda: _with_context("click"), 400, "context must be an object"),
    "empty result": (lambda: predict_payload([]), 400, "empty"),
    "unknown keypoint tag": (
        lambda: predict_payload([keypoint(40, 30, from_name="nope")]),
        422,
        "not a KeyPointLabels",
    ),
    "unknown image tag": (lambda: predict_payload([keypoint(40, 30, to_name="nope")]), 422, "points to"),
    "unknown label": (lambda: predict_payload([keypoint(40, 30, label="Ghost")]), 422, "not a label"),
    "point outside image": (lambda: predict_payload([keypoint(140, 30)]), 422, "outside the image"),
    "negative coordinate": (lambda: predict_payload([keypoint(10, -3)]), 422, "outside the image"),
    "item_index out of range": (lambda: predict_payload([keypoint(40, 30, item_index=9)]), 422, "out of range"),
    "image 404": (lambda: predict_payload([keypoint(40, 30)], frames=frames_with(upload("missing.png"))), 424, "404"),
    "other port on the same host": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with("http://127.0.0.1:9/data/upload/x.png")),
        403,
        "another host",
    ),
    "not an image": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with(upload("not_image.png"))),
        415,
        "not a readable image",
    ),
    "url on another host": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with("https://evil.example.com/a.png")),
        403,
        "another host",
    ),
    "dot-dot path": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with("/data/upload/../../etc/passwd")),
        403,
        "'..'",
    ),
    "dot-dot local-files": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with("/data/local-files/?d=../secret.png")),
        403,
        "'..'",
    ),
    "encoded dot-dot": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with("/data/upload/%2e%2e/x.png")),
        403,
        "'..'",
    ),
    "file scheme": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with("file:///etc/passwd")),
        403,
        "only files",
    ),
    "huge image": (
        lambda: predict_payload([keypoint(40, 30)], frames=frames_with(upload("huge.png"))),
        413,
        "MAX_IMAGE_PIXELS",
    ),
    "tasks missing": (lambda: {"params": {"context": {"result": [keypoint(1, 1)]}}}, 400, "tasks"),
    "not a keypoint": (
        lambda: predict_payload([dict(keypoint(40, 30), type="rectanglelabels")]),
        400,
        "keypointlabels",
    ),
    "no label_config": (
        lambda: dict(predict_payload([keypoint(40, 30)]), label_config=None, project="unknown"),
        400,
        "label_config",
    ),
}


def _with_context(context):
    payload = predict_payload([keypoint(40, 30)])
    payload["params"]["context"] = context
    return payload


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_predict_input(client, case):
    build, status, words = CASES[case]
    payload = build()
    if "frames1" in payload.get("tasks", [{}])[0].get("data", {}):
        data = payload["tasks"][0]["data"]
        data["frames1"] = [
            f if not f.startswith("/data/local-files/?d=pair/") else upload(f.split("pair/")[1])
            for f in data["frames1"]
        ]
        data["still"] = data["frames1"][0]
    response = client.post("/predict", json=payload)
    assert response.status_code == status, response.get_json()
    assert words in response.get_json()["error"]
    good(client)  # the server keeps serving


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2", "ünïcode garbage".encode("latin-1")],
)
def test_malformed_json(client, body):
    for route in ("/predict", "/setup", "/webhook"):
        response = client.post(route, data=body, content_type="application/json")
        assert response.status_code == 400
        assert "not valid JSON" in response.get_json()["error"]
    good(client)


def test_webhook_without_action(client):
    assert client.post("/webhook", json={"hello": 1}).status_code == 400


def test_unknown_route_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404 and "error" in response.get_json()


def test_label_studio_unreachable_is_424_and_server_stays_up(image_model, small_settings, tmp_path, client):
    dead = FileFetcher("http://127.0.0.1:9", tmp_path, timeout=2)
    predictor = InteractivePredictor(
        small_settings, fetcher=dead, segmenter_factory=lambda: ImageSegmenter(image_model, small_settings)
    )
    app = create_app(small_settings, predictor=predictor).test_client()
    response = app.post("/predict", json=predict_payload([keypoint(40, 30)], frames=["/data/upload/pair/f0.png"]))
    assert response.status_code == 424 and "cannot reach Label Studio" in response.get_json()["error"]
    assert app.get("/health").status_code == 200
