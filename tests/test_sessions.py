from ml_backend.server.context import Click, parse_clicks
from ml_backend.server.sessions import SessionStore

from .helpers import keypoint


def c(id_: str, positive: bool = True) -> Click:
    return Click(id_, "kp", "img", "Object 1", 10.0, 10.0, positive, 0)


def test_full_context_replaces_session():
    store = SessionStore(ttl=60)
    assert [p.id for p in store.merge("k", [c("a")])] == ["a"]
    assert [p.id for p in store.merge("k", [c("a"), c("b")])] == ["a", "b"]
    # the user deleted 'a' (auto-accept off): the frontend's list is the truth
    assert [p.id for p in store.merge("k", [c("b"), c("d")])] == ["b", "d"]


def test_lone_new_click_extends_session_after_accept():
    store = SessionStore(ttl=60)
    store.merge("k", [c("a"), c("b")])
    # auto-accept deleted a and b in the frontend; the next click arrives alone
    assert [p.id for p in store.merge("k", [c("n", positive=False)])] == ["a", "b", "n"]


def test_keys_never_mix_and_sessions_expire():
    now = [0.0]
    store = SessionStore(ttl=10, clock=lambda: now[0])
    store.merge(("task1", "alice"), [c("a")])
    store.merge(("task1", "bob"), [c("b")])
    assert [p.id for p in store.get(("task1", "alice"))] == ["a"]
    assert [p.id for p in store.get(("task1", "bob"))] == ["b"]
    now[0] = 11
    assert store.get(("task1", "alice")) == []
    assert [p.id for p in store.merge(("task1", "alice"), [c("z")])] == ["z"]


def test_parse_clicks_groups_by_label_and_page():
    clicks = [
        keypoint(10, 10, item_index=0),
        keypoint(20, 20, item_index=1),
        keypoint(30, 30, item_index=0, label="Object 2"),
        keypoint(40, 40, item_index=0, positive=False),
    ]
    newest, group = parse_clicks({"result": clicks})
    assert newest.positive is False and newest.item_index == 0
    assert [(g.x, g.positive) for g in group] == [(10, True), (40, False)]
    assert newest.pixel(200, 100) == (80.0, 40.0)


def test_points_per_session_are_capped():
    import pytest

    from ml_backend.server.sessions import MAX_SESSION_POINTS, TooManyPoints

    store = SessionStore(ttl=60)
    full = [c(f"p{i}") for i in range(MAX_SESSION_POINTS)]
    assert len(store.merge("k", full)) == MAX_SESSION_POINTS
    with pytest.raises(TooManyPoints, match="too many points"):
        store.merge("k", [c("one more")])  # a lone click would extend the session past the cap
    with pytest.raises(TooManyPoints):
        store.merge("k", [*full, c("x")])
    assert [p.id for p in store.get("k")] == [p.id for p in full]  # left as it was
    for i in range(10_001):  # the 10,001-point session of the report: never grows past the cap
        try:
            store.merge("k2", [c(f"q{i}")])
        except TooManyPoints:
            pass
    assert len(store.get("k2")) == MAX_SESSION_POINTS
