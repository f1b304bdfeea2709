"""A bounded, repeatable fuzz run against ``/predict`` and ``/webhook``.

Hypothesis builds near-valid Label Studio payloads (the right shape with fields of random types
and values: nested junk, NaN/inf/huge numbers, unicode, odd ``item_index`` values, nasty file
URLs) and raw bytes. Every answer must be below 500, and every 4xx a JSON ``{"error": sentence}``.
``derandomize=True`` makes the run the same every time; the segmenter is the deterministic
:class:`~tests.fakes.DiscSegmenter`, so a few hundred requests take seconds.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_backend.labelstudio.fetch import FileFetcher
from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.worker.queue import JobQueue

from .fakes import DiscSegmenter
from .helpers import CONFIG, keypoint

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Status codes seen per route (`pytest -s` prints them after the fuzzers' own check).
SEEN: dict[str, Counter] = {"/predict": Counter(), "/webhook": Counter()}

# -- leaves and junk --------------------------------------------------------------------------
HUGE = st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63), 10**30])
NUMBERS = st.one_of(
    st.integers(-10, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    HUGE,
)
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "0", "1", "-1", "1e999", "NaN", "ü", "\x00", "1.5"]))
LEAF = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JUNK = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
DEEP = st.integers(50, 150).map(lambda n: json.loads("[" * n + "]" * n))


def maybe(valid, junk=JUNK, percent: int = 10):
    """``junk`` (of any type by default) about ``percent`` % of the time, otherwise ``valid``.

    (``st.one_of`` picks its branches far from evenly, so the odds are drawn explicitly.)
    """
    return st.integers(0, 99).flatmap(lambda roll: junk if roll >= 100 - percent else valid)


# -- /predict ---------------------------------------------------------------------------------
GOOD_REFS = ["/data/local-files/?d=pair/f0.png", "/data/upload/pair/f1.png", "/data/local-files/?d=pair/f2.png"]
NASTY_REFS = [
    "/data/local-files/./?d=../../outside/x.png",
    "/data/local-files/%2e/?d=..%2fx.png",
    "/data//local-files/?d=../x.png",
    "/data\\local-files\\?d=..\\x.png",
    "/data/local-files/?d=pair",
    "/data/local-files/?d=pair/",
    "/data/local-files/?d=%252e%252e/x",
    "/data/upload/pair/f0%00.png",
    "/data/upload/pair/not_image.png",
    "/data/upload/pair/huge.png",
    "/data/upload/missing.png",
    "file:///etc/passwd",
    "https://evil.example.com/a.png",
    "//evil.example.com/a.png",
    "/data/upload/" + "a" * 70_000,
]
REF = maybe(
    st.sampled_from(GOOD_REFS),
    st.one_of(
        st.sampled_from(NASTY_REFS),
        st.text(alphabet="/.%2e5cdfp?=&\\\x00ü", max_size=40).map(lambda s: "/data/" + s),
        JUNK,
    ),
    percent=40,
)


@st.composite
def clicks(draw):
    region = keypoint(
        draw(maybe(st.floats(0, 100), NUMBERS | TEXT)),
        draw(maybe(st.floats(0, 100), NUMBERS | TEXT)),
        positive=draw(st.booleans()),
        item_index=None,
        label=draw(st.sampled_from(["Object 1", "Object 2", "Ghost"])),
    )
    region["item_index"] = draw(maybe(st.integers(0, 4), st.one_of(st.integers(-3, 9), HUGE, TEXT, JUNK)))
    fields = ["id", "from_name", "to_name", "type", "is_positive", "value"]
    for field in draw(maybe(st.just(()), st.sets(st.sampled_from(fields), min_size=1), percent=15)):
        region[field] = draw(JUNK)
    if isinstance(region["value"], dict) and draw(st.integers(0, 99)) >= 90:
        region["value"]["keypointlabels"] = draw(JUNK)
    if draw(st.integers(0, 99)) >= 95:
        region.pop(draw(st.sampled_from(sorted(region))))
    return region


@st.composite
def predict_payloads(draw):
    frames = draw(maybe(st.lists(REF, min_size=1, max_size=4)))
    task = {
        "id": draw(maybe(st.integers(1, 5), JUNK)),
        "data": draw(maybe(st.just({"frames1": frames, "still": draw(REF)}))),
        "drafts": draw(maybe(st.lists(st.fixed_dictionaries({"user": maybe(st.integers(1, 3))}), max_size=2))),
    }
    result = draw(maybe(st.lists(clicks(), min_size=1, max_size=4), st.just([]), percent=5))
    if draw(st.integers(0, 99)) >= 97:
        result = result[:1] * 101
    context = draw(maybe(st.just({"result": result}), st.one_of(JUNK, DEEP)))
    payload = {
        "tasks": draw(maybe(st.just([task]), st.lists(JUNK, max_size=2))),
        "project": draw(maybe(st.sampled_from(["1.1700000000", "2"]), JUNK)),
        "label_config": draw(maybe(st.just(CONFIG), st.sampled_from([None, "", "<View><Nope", "<View/>"]) | JUNK)),
        "params": draw(maybe(st.just({"login": draw(maybe(st.just(None))), "context": context}))),
    }
    return draw(maybe(st.just(payload)))


# -- /webhook ---------------------------------------------------------------------------------
ID = maybe(
    st.one_of(st.integers(1, 10**6), st.just("12")),
    st.one_of(st.integers(-3, 0), HUGE, TEXT, JUNK),
    percent=25,
)
ID_OR_OBJECT = st.one_of(ID, st.fixed_dictionaries({"id": ID}))


@st.composite
def webhook_payloads(draw):
    annotation = {"id": draw(ID), "result": draw(JUNK), "task": draw(ID_OR_OBJECT)}
    if draw(st.booleans()):
        annotation["project"] = draw(ID)
    if draw(st.integers(0, 99)) >= 85:
        annotation["was_cancelled"] = draw(JUNK)
    payload = {
        "action": draw(
            maybe(st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "START_TRAINING", "PROJECT_UPDATED"]))
        ),
        "annotation": draw(maybe(st.just(annotation))),
        "project": draw(maybe(ID_OR_OBJECT, st.none())),
    }
    if draw(st.booleans()):
        payload["task"] = draw(maybe(ID_OR_OBJECT))
    return draw(maybe(st.just(payload)))


# -- the apps ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predict_client(small_settings, local_root, file_server, tmp_path_factory):
    fetcher = FileFetcher(
        file_server.url,
        tmp_path_factory.mktemp("fuzz-dl"),
        headers=lambda: {"Authorization": f"Token {file_server.token}"},
        local_root=local_root,
    )
    segmenter = DiscSegmenter()
    predictor = InteractivePredictor(small_settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    return create_app(small_settings, predictor=predictor).test_client()


class OfflineJobQueue(JobQueue):
    """The real queue on the test Redis, without Label Studio: "Start training" lists no tasks
    (listing a project's tasks through the SDK is tested in tests/test_worker.py)."""

    def enqueue_project(self, project_id: int) -> list[str]:
        assert isinstance(project_id, int) and project_id > 0
        return []


@pytest.fixture
def webhook_client(small_settings, redis_server, redis_conn, tmp_path):
    settings = small_settings.replace(redis_url=redis_server.url, queue_name="test-fuzz", data_dir=tmp_path)
    predictor = InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None)
    return create_app(settings, predictor=predictor, jobs=OfflineJobQueue(redis_conn, settings)).test_client()


def check(client, route: str, data: bytes) -> None:
    response = client.post(route, data=data, content_type="application/json")
    SEEN[route][response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:300], data[:300])
    body = response.get_json(silent=True)
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    else:
        assert isinstance(body, dict), response.get_data(as_text=True)[:300]


def dumps(payload) -> bytes:
    return json.dumps(payload, allow_nan=True).encode()


@FUZZ
@given(payload=predict_payloads())
def test_predict_never_fails_on_bad_input(predict_client, payload):
    check(predict_client, "/predict", dumps(payload))


@FUZZ
@given(payload=webhook_payloads())
def test_webhook_never_fails_on_bad_input(webhook_client, payload):
    check(webhook_client, "/webhook", dumps(payload))


@settings(FUZZ, max_examples=100)
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode)))
def test_raw_bytes_never_fail(predict_client, webhook_client, data):
    check(predict_client, "/predict", data)
    check(webhook_client, "/webhook", data)


def test_the_fuzzers_reach_both_answers(predict_client, webhook_client):
    """The payload strategies reach both sides of each route: payloads that are answered (2xx)
    and payloads that are refused with a reason (4xx), never a 5xx. Self-contained (its own
    examples), so it fails when the strategies stop reaching either side."""
    seen: dict[str, Counter] = {"/predict": Counter(), "/webhook": Counter()}

    def post(client, route: str, payload) -> None:
        response = client.post(route, data=dumps(payload), content_type="application/json")
        seen[route][response.status_code // 100] += 1
        SEEN[route][response.status_code] += 1

    @settings(FUZZ, max_examples=80)
    @given(payload=predict_payloads())
    def predict(payload):
        post(predict_client, "/predict", payload)

    @settings(FUZZ, max_examples=80)
    @given(payload=webhook_payloads())
    def webhook(payload):
        post(webhook_client, "/webhook", payload)

    predict()
    webhook()
    for route, classes in seen.items():
        print(f"{route}: {dict(sorted(SEEN[route].items()))}")  # with `pytest -s`
        assert classes[2] > 0 and classes[4] > 0 and classes[5] == 0, (route, dict(classes))
