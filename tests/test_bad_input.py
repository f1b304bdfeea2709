"""Bad input gets a 4xx with a readable message, and the server keeps answering."""

from __future__ import annotations

import pytest

from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.server.segmenter import ImageSegmenter

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
    "result entry not an object": (lambda: predict_payload([7]), 400, "must be an object"),
    "result entry without a type": (lambda: predict_payload([{"id": "a", "value": {}}]), 400, "no 'type'"),
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
    "a keypoint without x": (
        lambda: predict_payload([dict(keypoint(40, 30), value={"y": 3, "keypointlabels": ["Object 1"]})]),
        400,
        "numeric x and y",
    ),
    "no label_config": (
        lambda: dict(predict_payload([keypoint(40, 30)]), label_config=None, project="unknown"),
        400,
        "label_config",
    ),
}


OUTSIDE = "/data/local-files/./?d=../../outside/x.png"


def with_frame(ref: str):
    return lambda: predict_payload([keypoint(40, 30)], frames=frames_with(ref))


def with_task(**changes):
    def build():
        payload = predict_payload([keypoint(40, 30)])
        payload["tasks"][0].update(changes)
        return payload

    return build


def with_value(**changes):
    def build():
        click = keypoint(40, 30)
        click["value"].update(changes)
        return predict_payload([click])

    return build


CASES.update(
    {
        "dot segment hides local-files": (with_frame(OUTSIDE), 403, "'..'"),
        "encoded dot segment hides local-files": (with_frame("/data/local-files/%2e/?d=..%2fx.png"), 403, "'..'"),
        "double slash hides local-files": (with_frame("/data//local-files/?d=../outside/x.png"), 403, "'..'"),
        "backslash hides local-files": (with_frame("/data\\local-files\\?d=..\\x.png"), 403, "'..'"),
        "dot-dot in d on another path": (with_frame("/data/upload/pair/f0.png?d=../x"), 403, "'..'"),
        "double-encoded dot-dot in d": (with_frame("/data/local-files/?d=%252e%252e/x.png"), 403, "'..'"),
        "encoded NUL in path": (with_frame("/data/upload/pair/f0%00.png"), 403, "NUL"),
        "raw NUL in path": (with_frame("/data/upload/pair/f0\x00.png"), 403, "NUL"),
        "NUL in d": (with_frame("/data/local-files/?d=pair/f0.png%00.jpg"), 403, "NUL"),
        "d names a folder": (with_frame("/data/local-files/?d=pair/"), 422, "folder"),
        "URL over 64 KB": (with_frame("/data/upload/" + "a" * 70_000 + ".png"), 413, "characters"),
        "label_config as a list": (
            lambda: dict(predict_payload([keypoint(40, 30)]), label_config=["<View/>"]),
            400,
            "label_config must be",
        ),
        "label_config as an object": (
            lambda: dict(predict_payload([keypoint(40, 30)]), label_config={"xml": "<View/>"}),
            400,
            "label_config must be",
        ),
        "invalid label_config": (
            lambda: dict(predict_payload([keypoint(40, 30)]), label_config="<View><Nope"),
            422,
            "not a valid Label Studio config",
        ),
        "task id as a list": (with_task(id=[1]), 400, "task 'id'"),
        "task id as an object": (with_task(id={"id": 1}), 400, "task 'id'"),
        "drafts not a list": (with_task(drafts=5), 400, "drafts"),
        "huge coordinate": (with_value(x=10**400), 400, "numeric x and y"),
        "infinite coordinate": (with_value(x=float("inf")), 422, "outside the image"),
        "NaN coordinate": (with_value(y=float("nan")), 422, "outside the image"),
        "boolean coordinate": (with_value(x=True), 400, "numeric x and y"),
        "item_index as a string": (
            lambda: predict_payload([dict(keypoint(40, 30), item_index="1")]),
            400,
            "item_index must be an integer",
        ),
        "too many points": (
            lambda: predict_payload([keypoint(40, 30) for _ in range(101)]),
            422,
            "too many points",
        ),
    }
)


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


# -- every HTTP route: bad requests found by review and fuzzing ------------------------------------


def test_checked_url_is_the_url_sent(client, file_server):
    """Nothing with a '..' ever reaches Label Studio (which gets the API token)."""
    for ref in (OUTSIDE, "/data//local-files/?d=../outside/x.png", "/data/local-files/%2e/?d=..%2fx.png"):
        payload = predict_payload([keypoint(40, 30)], frames=frames_with(ref))
        assert client.post("/predict", json=payload).status_code == 403
    assert not [r for r in file_server.requests if ".." in r or "%2e" in r.lower()]


def test_local_folder_is_refused_for_a_click(small_settings, local_root, tmp_path):
    fetcher = FileFetcher("http://ls.invalid:8080", tmp_path, local_root=local_root)
    predictor = InteractivePredictor(small_settings, fetcher=fetcher, segmenter_factory=lambda: None)
    app = create_app(small_settings, predictor=predictor).test_client()
    for ref in ("/data/local-files/?d=pair", "/data/local-files/?d=pair/."):
        response = app.post("/predict", json=predict_payload([keypoint(40, 30)], frames=frames_with(ref)))
        assert response.status_code == 422, response.get_json()
        assert "folder" in response.get_json()["error"]


WEBHOOK = {"action": "ANNOTATION_CREATED", "annotation": {"id": 5, "task": 7, "result": []}, "project": {"id": 3}}


def webhook(*, annotation=None, **top):
    body = dict(WEBHOOK, annotation=dict(WEBHOOK["annotation"], **(annotation or {})))
    body.update(top)
    return {"json": body}


DEEP = b"[" * 2000 + b"]" * 2000

# name: (client fixture, method, path, request kwargs, status, words in the error)
HTTP_CASES = {
    "deep JSON to /predict": ("client", "POST", "/predict", {"data": DEEP}, 400, "nested"),
    "deep JSON to /setup": ("client", "POST", "/setup", {"data": DEEP}, 400, "nested"),
    "deep JSON to /webhook": ("jobs_client", "POST", "/webhook", {"data": DEEP}, 400, "nested"),
    "deep object to /predict": (
        "client",
        "POST",
        "/predict",
        {"data": b'{"a":' * 2000 + b"1" + b"}" * 2000},
        400,
        "nested",
    ),
    "setup schema as a list": ("client", "POST", "/setup", {"json": {"project": 1, "schema": ["x"]}}, 400, "schema"),
    "setup schema as an object": ("client", "POST", "/setup", {"json": {"project": 1, "schema": {}}}, 400, "schema"),
    "setup invalid schema": (
        "client",
        "POST",
        "/setup",
        {"json": {"project": 1, "schema": "<View><Image name='i'"}},
        422,
        "not a valid Label Studio config",
    ),
    "setup project as a list": (
        "client",
        "POST",
        "/setup",
        {"json": {"project": [1], "schema": "<View/>"}},
        400,
        "project",
    ),
    "job id with a star": ("jobs_client", "GET", "/jobs/*", {}, 400, "job id"),
    "job id not ASCII": ("jobs_client", "GET", "/jobs/éé", {}, 400, "job id"),
    "job id too long": ("jobs_client", "GET", "/jobs/" + "a" * 300, {}, 400, "job id"),
    "NUL in a job id": ("jobs_client", "GET", "/jobs/a%00b", {}, 400, "NUL"),
    "NUL in an export path": ("client", "GET", "/exports/1/a%00b.pkl", {}, 400, "NUL"),
    "annotation id not a number": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": "abc"}), 400, "id"),
    "annotation id a list": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": [5]}), 400, "id"),
    "annotation id null": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": None}), 400, "id"),
    "annotation id a boolean": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": True}), 400, "id"),
    "annotation id a fraction": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": 5.5}), 400, "id"),
    "annotation id negative": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": -5}), 400, "id"),
    "annotation id huge": ("jobs_client", "POST", "/webhook", webhook(annotation={"id": 10**30}), 400, "id"),
    "annotation not an object": (
        "jobs_client",
        "POST",
        "/webhook",
        webhook(annotation=None) | {"json": dict(WEBHOOK, annotation=[1])},
        400,
        "annotation",
    ),
    "task id not a number": ("jobs_client", "POST", "/webhook", webhook(annotation={"task": "abc"}), 400, "task"),
    "task id a list": ("jobs_client", "POST", "/webhook", webhook(annotation={"task": [7]}), 400, "task"),
    "task object with bad id": (
        "jobs_client",
        "POST",
        "/webhook",
        webhook(annotation={"task": {"id": "x"}}),
        400,
        "task",
    ),
    "top-level task a list": (
        "jobs_client",
        "POST",
        "/webhook",
        {"json": dict(WEBHOOK, annotation={"id": 5, "result": []}, task=[7])},
        400,
        "task",
    ),
    "project id not a number": ("jobs_client", "POST", "/webhook", webhook(project="abc"), 400, "project"),
    "project id a list": ("jobs_client", "POST", "/webhook", webhook(project=[3]), 400, "project"),
    "project object with bad id": ("jobs_client", "POST", "/webhook", webhook(project={"id": "x"}), 400, "project"),
    "annotation project bad": (
        "jobs_client",
        "POST",
        "/webhook",
        {"json": dict(WEBHOOK, annotation={"id": 5, "task": 7, "project": "abc"}, project=None)},
        400,
        "project",
    ),
    "START_TRAINING project abc": (
        "jobs_client",
        "POST",
        "/webhook",
        {"json": {"action": "START_TRAINING", "project": "abc"}},
        400,
        "project",
    ),
    "START_TRAINING project a list": (
        "jobs_client",
        "POST",
        "/webhook",
        {"json": {"action": "START_TRAINING", "project": [1]}},
        400,
        "project",
    ),
    "webhook without ids but no queue": ("client", "POST", "/webhook", webhook(project="abc"), 400, "project"),
    "basic auth not ASCII": (
        "auth_client",
        "POST",
        "/predict",
        {"headers": {"Authorization": "Basic " + __import__("base64").b64encode("üser:päss".encode()).decode()}},
        401,
        "basic auth",
    ),
    "basic auth latin-1": (
        "auth_client",
        "GET",
        "/versions",
        {
            "headers": {
                "Authorization": "Basic " + __import__("base64").b64encode("user:p\xe4ss".encode("latin-1")).decode()
            }
        },
        401,
        "basic auth",
    ),
    "basic auth garbage": (
        "auth_client",
        "GET",
        "/versions",
        {"headers": {"Authorization": "Basic !!!"}},
        401,
        "basic auth",
    ),
}


@pytest.fixture
def jobs_client(small_settings, redis_server, redis_conn, tmp_path):
    from ml_backend.worker.queue import JobQueue

    settings = small_settings.replace(redis_url=redis_server.url, queue_name="test-http", data_dir=tmp_path)
    predictor = InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None)
    return create_app(settings, predictor=predictor, jobs=JobQueue(redis_conn, settings)).test_client()


@pytest.fixture(scope="module")
def auth_client(small_settings):
    settings = small_settings.replace(basic_auth_user="user", basic_auth_pass="päss")
    predictor = InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None)
    return create_app(settings, predictor=predictor).test_client()


@pytest.mark.parametrize("case", sorted(HTTP_CASES))
def test_bad_http_request(request, case):
    fixture, method, path, kwargs, status, words = HTTP_CASES[case]
    http = request.getfixturevalue(fixture)
    kwargs = dict(kwargs)
    if "data" in kwargs:
        kwargs.setdefault("content_type", "application/json")
    response = http.open(path, method=method, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert isinstance(body, dict) and words in body["error"], body
    assert http.get("/health").status_code == 200


def test_valid_webhook_still_queues(jobs_client):
    response = jobs_client.post("/webhook", json=dict(WEBHOOK, project=3, annotation={"id": "5", "task": {"id": 7}}))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["job_id"].startswith("p3-t7-a5-")


def test_basic_auth_still_accepts_the_right_password(auth_client):
    import base64

    good_auth = "Basic " + base64.b64encode("user:päss".encode()).decode()
    assert auth_client.get("/versions", headers={"Authorization": good_auth}).status_code == 200
    assert auth_client.get("/versions").status_code == 401


def test_body_over_the_limit_is_refused_unread(client):
    import io

    from ml_backend.settings import Settings

    class Stream(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Stream.read_bytes += len(data)
            return data

    assert Settings().max_request_bytes == 16 * 1024**2
    response = client.post(
        "/predict",
        input_stream=Stream(b"{" * 1024),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(150 * 1024**2)},
    )
    assert response.status_code == 413 and "16 MiB" in response.get_json()["error"]
    assert Stream.read_bytes == 0
    good(client)


def test_unexpected_error_hides_its_text(small_settings, caplog):
    class Broken:
        ready = False
        model_version = "x"

        def predict(self, payload):
            raise RuntimeError("token=s3cr3t-api-key")

    client = create_app(small_settings, predictor=Broken()).test_client()
    with caplog.at_level("ERROR"):
        response = client.post("/predict", json={})
    assert response.status_code == 500
    body = response.get_json()
    assert "s3cr3t" not in response.get_data(as_text=True) and "RuntimeError" not in body["error"]
    error_id = body["error_id"]
    assert error_id in body["error"] and error_id in caplog.text and "s3cr3t" in caplog.text


def test_json_depth_counts_containers_only():
    from ml_backend.server.routes import MAX_JSON_DEPTH, json_depth

    assert [json_depth(d) for d in (3, "x", None, [], {}, [[[]]], [1, 2, [3, [4]]])] == [0, 0, 0, 1, 1, 3, 3]
    assert json_depth({"a": [1, {"b": [[2]]}], "c": "[[[["}) == 5
    rle = {"value": {"rle": list(range(100_000)), "brushlabels": ["Object 1"]}}  # flat lists of numbers
    assert json_depth({"tasks": [{"predictions": [{"result": [rle] * 8}]}]}) == 9
    deep: list = []
    cur = deep
    for _ in range(3 * MAX_JSON_DEPTH):
        cur.append([])
        cur = cur[0]
    assert json_depth(deep) == MAX_JSON_DEPTH + 1  # stops once past the limit
