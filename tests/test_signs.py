"""A keypoint keeps the sign the annotator gave it (click +, Alt+click −) across Updates,
reloads and clients, although Label Studio 1.23.2 saves and sends earlier keypoints of a
reopened annotation without ``is_positive``: the rule of :mod:`ml_backend.labelstudio.signs`, the
interactive preview after a reopen, and the job after one and two Updates (real Redis, RQ's
SimpleWorker in process, the colour stand-in predictor, the Label Studio API stand-in)."""

from __future__ import annotations

import logging
import pickle

import pytest

from ml_backend.labelstudio.signs import KEY, MemorySigns, RedisSigns, apply_signs, project_id, sign_webhook
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor

from . import test_task_review as review
from .fakes import DiscSegmenter
from .helpers import keypoint, predict_payload
from .test_task_review import PROJECT, TASK, point, run

# the review tests' fixtures: a Label Studio stand-in with a synthetic pair, settings, queue, predictor
ls, settings, queue, predictor, quiet_werkzeug = (
    review.ls,
    review.settings,
    review.queue,
    review.predictor,
    review.quiet_werkzeug,
)


def unflagged(region: dict) -> dict:
    """``region`` as Label Studio saves and sends it once its annotation was reopened."""
    return {k: v for k, v in region.items() if k != "is_positive"}


# -- the rule -----------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemorySigns()
    return RedisSigns(request.getfixturevalue("redis_conn"))


def test_a_missing_flag_takes_the_sign_recorded_for_the_region_id(store):
    a, b, n = keypoint(10, 10), keypoint(20, 20), keypoint(50, 60, positive=False)
    _, report = apply_signs(store, 1, 7, [a, b, n])
    assert (report.given, report.recorded, report.unknown) == (3, 0, [])
    moved = unflagged(n) | {"value": {**n["value"], "x": 55.0}}  # the same region, dragged
    out, report = apply_signs(store, "1.1700000000", 7, [unflagged(a), unflagged(b), moved])
    assert [r["is_positive"] for r in out] == [True, True, False]
    assert (report.given, report.recorded, report.unknown) == (0, 3, [])
    assert "is_positive" not in moved  # the input is not changed


def test_a_copied_region_with_a_new_id_takes_the_sign_recorded_at_its_position(store):
    n = keypoint(50, 60, positive=False)
    apply_signs(store, 1, 7, [n])
    copy = unflagged(n) | {"id": "copied-elsewhere"}
    (out,), report = apply_signs(store, 1, 7, [copy])
    assert out["is_positive"] is False and report.recorded == 1
    other_page = copy | {"item_index": 3}  # same place on another page: not the same point
    (out,), report = apply_signs(store, 1, 7, [other_page])
    assert "is_positive" not in out and report.unknown == ["copied-elsewhere"]


def test_a_given_flag_wins_and_is_recorded(store):
    """SDK users who send is_positive keep full control, also against an earlier record."""
    n = keypoint(50, 60, positive=False)
    apply_signs(store, 1, 7, [n])
    (out,), _ = apply_signs(store, 1, 7, [n | {"is_positive": True}])
    assert out["is_positive"] is True
    (out,), _ = apply_signs(store, 1, 7, [unflagged(n)])
    assert out["is_positive"] is True


def test_records_are_per_task_and_project(store):
    n = keypoint(50, 60, positive=False)
    apply_signs(store, 1, 7, [n])
    for project, task in ((1, 8), (2, 7)):
        (out,), report = apply_signs(store, project, task, [unflagged(n)])
        assert "is_positive" not in out and len(report.unknown) == 1


def test_an_unknown_sign_is_logged_not_guessed_silently(store, caplog):
    caplog.set_level(logging.WARNING, logger="ml_backend.labelstudio.signs")
    (out,), report = apply_signs(store, 1, 7, [unflagged(keypoint(5, 5)) | {"id": "never-seen"}], where="annotation 3")
    assert "is_positive" not in out and report.as_dict()["unknown"] == 1
    assert report.as_dict()["unknown_regions"] == ["never-seen"]
    assert "annotation 3 of task 7: 1 keypoint(s) without is_positive" in caplog.text and "never-seen" in caplog.text


def test_other_regions_and_junk_pass_unchanged(store):
    junk = [None, 3, {"type": "keypointlabels"}, {"type": "keypointlabels", "value": {"x": 10**400, "y": "a"}},
            {"type": "choices", "value": {"choices": ["rigid"]}}]  # fmt: skip
    out, report = apply_signs(store, 1, 7, junk)
    assert out == junk and report.given == 0
    assert apply_signs(store, 1, 7, "not a list")[0] == "not a list"


def test_the_redis_layout(redis_conn):
    n = keypoint(50, 60, positive=False, item_index=2)
    apply_signs(RedisSigns(redis_conn), "4.1700000000", 9, [n])
    fields = {k.decode(): v.decode() for k, v in redis_conn.hgetall(KEY.format(project=4, task=9)).items()}
    assert fields == {f"id:{n['id']}": "0", "pos:image1:2:Object 1:50.000:60.000": "0"}
    assert project_id({"id": 4}) == project_id("4.1700000000") == project_id(4) == "4"


def test_redis_down_leaves_the_signs_unknown_and_fails_nothing(caplog):
    class Down:
        def hgetall(self, key):
            import redis

            raise redis.ConnectionError("down")

    (out,), report = apply_signs(RedisSigns(Down()), 1, 7, [unflagged(keypoint(5, 5))])
    assert "is_positive" not in out and len(report.unknown) == 1
    assert "could not be read or recorded (ConnectionError)" in caplog.text


# -- the interactive preview after a reopen ---------------------------------------------------------
class Recording(DiscSegmenter):
    """The disc stand-in, remembering the point labels of every prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[list[int]] = []

    def predict(self, embedding, points_xy, labels):
        self.labels.append([int(v) for v in labels])
        return super().predict(embedding, points_xy, labels)


@pytest.fixture
def preview(small_settings, local_root, redis_server, redis_conn, tmp_path):
    from ml_backend.labelstudio.fetch import FileFetcher
    from ml_backend.worker.queue import JobQueue

    config = small_settings.replace(redis_url=redis_server.url, queue_name="test-signs", data_dir=tmp_path)
    segmenter = Recording()

    def client():  # a fresh backend process each time (no session memory), the same Redis
        fetcher = FileFetcher("http://ls.invalid:8080", tmp_path / "dl", local_root=local_root)
        backend = InteractivePredictor(config, fetcher=fetcher, segmenter_factory=lambda: segmenter)
        return create_app(config, predictor=backend, jobs=JobQueue(redis_conn, config)).test_client()

    return client, segmenter


def test_a_click_after_reopening_treats_the_old_negative_as_negative(preview):
    client, segmenter = preview
    a, b, n = keypoint(20, 20), keypoint(30, 30), keypoint(60, 60, positive=False)
    first = client()
    for context in ([a], [a, b], [a, b, n]):
        assert first.post("/predict", json=predict_payload(context)).status_code == 200
    assert segmenter.labels[-1] == [1, 1, 0]
    # reopened in another backend process: the old points come without is_positive
    new = keypoint(70, 20)
    reopened = [unflagged(a), unflagged(b), unflagged(n), new]
    response = client().post("/predict", json=predict_payload(reopened))
    assert response.status_code == 200, response.get_json()
    assert segmenter.labels[-1] == [1, 1, 0, 1]


def test_a_webhook_records_signs_for_the_next_preview(preview):
    """An annotation made elsewhere (SDK, another backend) and submitted: its webhook records."""
    client, segmenter = preview
    n = keypoint(60, 60, positive=False)
    webhook = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 4, "task": 1, "result": [n]}}
    backend = client()
    assert backend.post("/webhook", json=webhook).status_code == 200
    assert backend.post("/predict", json=predict_payload([unflagged(n), keypoint(20, 20)])).status_code == 200
    assert segmenter.labels[-1] == [0, 1]


def test_sign_webhook_fills_the_annotation_it_passes_on():
    store = MemorySigns()
    n = keypoint(60, 60, positive=False)
    apply_signs(store, 3, 5, [n])
    payload = {
        "action": "ANNOTATION_UPDATED",
        "project": 3,
        "annotation": {"id": 1, "task": {"id": 5}, "result": [unflagged(n)]},
    }
    assert sign_webhook(store, payload)["annotation"]["result"][0]["is_positive"] is False
    assert payload["annotation"]["result"][0].get("is_positive") is None
    assert sign_webhook(store, {"action": "ANNOTATION_UPDATED", "annotation": {"id": 1}}) == {
        "action": "ANNOTATION_UPDATED", "annotation": {"id": 1}}  # fmt: skip


# -- the protocol: calls without clicks ------------------------------------------------------------
def test_calls_without_clicks_are_answered_without_an_error(preview):
    client, segmenter = preview
    backend = client()
    # task open, after Submit/Update, "Retrieve predictions": one empty list of predictions per
    # task, which Label Studio 1.23.2 takes as nothing to store (no "incorrect response" line)
    opened = backend.post("/predict", json=predict_payload(None))
    assert opened.status_code == 200 and opened.get_json() == {"results": [[]]}
    # the last smart keypoint deleted, or another smart region edited: an empty suggestion
    number = {"id": "n1", "from_name": "obj1_number", "to_name": "image1", "type": "number", "value": {"number": 2}}
    rectangle = dict(keypoint(40, 30), type="rectanglelabels")  # a smart tool of another kind
    for context in ([], [number], [rectangle]):
        response = backend.post("/predict", json=predict_payload(context))
        assert response.status_code == 200, response.get_json()
        (answer,) = response.get_json()["results"]
        assert answer["result"] == [] and answer["model_version"]
    # other regions beside keypoints are left out
    response = backend.post("/predict", json=predict_payload([number, keypoint(20, 20)]))
    assert response.status_code == 200 and segmenter.labels[-1] == [1]
    # malformed calls from other clients are still a 400 with the reason
    for context, reason in (({"result": "x"}, "must be a list"), ({"result": [7]}, "must be an object"),
                            ({"result": [{"id": 1}]}, "no 'type'"), ({}, "no 'result'")):  # fmt: skip
        payload = predict_payload([])
        payload["params"]["context"] = context
        response = backend.post("/predict", json=payload)
        assert response.status_code == 400 and reason in response.get_json()["error"], response.get_json()


# -- the job after Updates -------------------------------------------------------------------------
def regions(specs: list[tuple[str, int, int, int, bool]]) -> list[dict]:
    """Keypoints ``(id, object, frame, page, positive)`` on video 1 (colour stand-in geometry)."""
    return [point(obj, frame, page) | {"id": rid, "is_positive": positive} for rid, obj, frame, page, positive in specs]


def labels_on(config, frame: int, obj: int = 1) -> list[int]:
    path = config.results_root / f"project_{PROJECT}" / f"task_{TASK}" / "inference_data.pkl"
    video1 = pickle.loads(path.read_bytes())["video1"]
    idx = {obj_id: i for i, obj_id in video1["obj_idx_to_id"].items()}[obj]
    return [int(v) for v in video1["point_inputs_per_obj"][idx][frame]["point_labels"].reshape(-1)]


def test_updates_keep_the_alt_click_negative_in_the_job(settings, redis_conn, queue, ls):
    from ml_backend.worker.queue import JobQueue

    app = create_app(
        settings,
        predictor=InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None),
        jobs=JobQueue(redis_conn, settings),
    ).test_client()

    def submit(annotation: list[dict]) -> dict:
        body = ls.add_annotation(1, TASK, annotation)
        response = app.post(
            "/webhook", json={"action": "ANNOTATION_UPDATED", "annotation": body, "project": {"id": PROJECT}}
        )
        assert response.status_code == 200, response.get_json()
        run(settings, redis_conn)
        return queue.status(response.get_json()["job_id"])

    # two clicks and an Alt+click (off the object) on frame 0; objects 2-4 clicked once
    x0 = point(1, 0, 0)["value"]["x"]
    first = regions([("a", 1, 0, 0, True), ("b", 1, 0, 0, True), ("n", 1, 0, 0, False)])
    first[1]["value"] = {**first[1]["value"], "x": x0 + 0.5}
    first[2]["value"] = {**first[2]["value"], "x": 2.0, "y": 2.0}
    others = [point(obj, 0, 0) | {"id": f"o{obj}"} for obj in (2, 3, 4)]
    status = submit([*first, *others])
    assert status["status"] == "finished", status
    assert labels_on(settings, 0) == [1, 1, 0]
    assert status["result"]["signs"] == {"given": 6, "recorded": 0, "unknown": 0, "unknown_regions": []}

    # Update after reopening: earlier points lose is_positive; a correction click on page 1 (frame 20)
    correction = regions([("c", 1, 20, 1, True)])
    status = submit([*map(unflagged, first), *map(unflagged, others), *correction])
    assert status["status"] == "finished", status
    assert labels_on(settings, 0) == [1, 1, 0] and labels_on(settings, 20) == [1]
    assert status["result"]["signs"]["recorded"] == 6 and status["result"]["signs"]["unknown"] == 0

    # Update once more: now the correction lost its flag too
    status = submit([*map(unflagged, first), *map(unflagged, others), *map(unflagged, correction)])
    assert status["status"] == "finished", status
    assert labels_on(settings, 0) == [1, 1, 0] and labels_on(settings, 20) == [1]
    assert status["result"]["signs"]["recorded"] == 7


def test_a_job_marks_keypoints_whose_sign_nobody_recorded(settings, redis_conn, queue, ls, caplog):
    """An annotation the backend never saw with its flags (saved before the backend ran): the
    points count as positive, and the job's summary and the worker's log say so."""
    from ml_backend.worker.queue import JobQueue

    caplog.set_level(logging.WARNING, logger="ml_backend.labelstudio.signs")
    ls.add_annotation(2, TASK, [unflagged(point(obj, 0, 0)) | {"id": f"u{obj}"} for obj in (1, 2, 3, 4)])
    job, _ = JobQueue(redis_conn, settings).enqueue_task(PROJECT, TASK, 2, "fp-unknown")
    run(settings, redis_conn)
    status = queue.status(job.id)
    assert status["status"] == "finished", status
    assert status["result"]["signs"] == {
        "given": 0,
        "recorded": 0,
        "unknown": 4,
        "unknown_regions": ["u1", "u2", "u3", "u4"],
    }
    assert "annotation 2 of task 11: 4 keypoint(s) without is_positive" in caplog.text
