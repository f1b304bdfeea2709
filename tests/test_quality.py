"""Drift flags: synthetic videos with known events through the real pipeline and the colour
stand-in predictor (flags exactly at the events, none on smooth tracks), the rule on its own, and
the object score read from real SAM 2 (random weights) on every frame in both directions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from ml_backend.video.pipeline import run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.video.quality import QualityRule, Track, flag_frames, flag_ranges, pages_to_add

from .fakes import ColorVideoPredictor

N, H, W = 30, 96, 128
SIZE = 16  # object side in pixels
COLORS = {1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200), 4: (255, 225, 25)}


def geometry(obj: int, t: int) -> tuple[float, float, int] | None:
    """Centre (x, y) and side of object ``obj`` on frame ``t``, or None where it is not drawn.

    1 vanishes on frames 10–14 and comes back on 15; 2 jumps by 1.5 sizes on frame 8 and shrinks
    to half its side on frame 20; 3 and 4 move smoothly (1 px a frame) all along."""
    if obj == 1:
        return None if 10 <= t <= 14 else (20 + t, 20, SIZE)
    if obj == 2:
        x = 20 + t + (24 if t >= 8 else 0)
        return (x, 50, SIZE if t < 20 else SIZE // 2)
    if obj == 3:
        return (100 - t, 80, SIZE)
    return (30 + 0.5 * t, 75 - 0.5 * t, SIZE + 2)


EVENTS = {1: {10: "vanished", 15: "reappeared"}, 2: {8: "jump", 20: "area"}, 3: {}, 4: {}}


def render(folder) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(70, 130, size=(H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    folder.mkdir(parents=True)
    for t in range(N):
        frame = base.copy()
        for obj, color in COLORS.items():
            g = geometry(obj, t)
            if g is not None:
                x, y, side = g
                frame[(np.abs(xx - x) <= side / 2) & (np.abs(yy - y) <= side / 2)] = color
        Image.fromarray(frame).save(folder / f"{t:05d}.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    render(tmp / "frames")
    prompt_frame = 17  # forward and backward, after object 1 came back
    objects = [
        {"id": obj, "name": f"o{obj}", "prompts": [
            {"video": "video1", "frame": prompt_frame, "points": [list(geometry(obj, prompt_frame)[:2])],
             "labels": [1]}]}
        for obj in COLORS
    ]  # fmt: skip
    spec = parse_prompts({"format": "scenediff", "objects": objects})
    out = tmp / "out"
    with run_job(ColorVideoPredictor(), spec, {"video1": tmp / "frames"}, out, image_size=64, review=False):
        pass
    return json.loads((out / "review" / "quality.json").read_text())


def test_flags_are_exactly_at_the_events(report):
    found = {int(k): o["ranges"] for k, o in report["videos"]["video1"]["objects"].items()}
    for obj, events in EVENTS.items():
        assert {r["frame"]: r["reasons"] for r in found[obj]} == {f: [why] for f, why in events.items()}, obj
        assert all(r["start"] == r["end"] == r["frame"] for r in found[obj])


def test_precision_and_recall_are_one(report):
    truth = {(obj, f) for obj, events in EVENTS.items() for f in events}
    flagged = {(r["object"], r["frame"]) for r in report["ranges"]}
    assert flagged == truth  # precision = recall = 1.0
    assert report["summary"]["flagged_ranges"] == len(truth)


def test_smooth_tracks_get_no_flags(report):
    for obj in (3, 4):
        o = report["videos"]["video1"]["objects"][str(obj)]
        assert o["ranges"] == []
        assert o["shown_frames"] == N


def test_report_holds_every_frame_and_its_signals(report):
    video = report["videos"]["video1"]
    assert video["num_frames"] == N and video["size"] == [H, W] and video["label"] == "video1"
    one = video["objects"]["1"]
    assert len(one["areas"]) == len(one["scores"]) == len(one["centroids"]) == N
    assert one["areas"][12] == 0 and one["centroids"][12] is None
    assert one["areas"][0] == (SIZE + 1) ** 2
    assert one["centroids"][3] == [23.0, 20.0]
    assert one["scores"] == [None] * N  # the stand-in keeps no object score
    assert report["summary"]["lowest_score"] is None
    assert report["rule"] == {"min_score": 0.7, "area_ratio": 1.5, "jump": 0.5, "max_pages": 8}


def test_ranges_are_ranked_by_severity(report):
    severities = [r["severity"] for r in report["ranges"]]
    assert severities == sorted(severities, reverse=True)
    # ties (severity 1) by frame; the shrink from 17² to 9² pixels (severity 1 - 81/289) last
    assert [(r["frame"], r["severity"]) for r in report["ranges"]] == [(8, 1.0), (10, 1.0), (15, 1.0), (20, 0.7197)]


def track_of(areas, scores=None, centers=None):
    track = Track(len(areas))
    track.areas[:] = areas
    if scores is not None:
        track.scores[:] = [math.nan if s is None else s for s in scores]
    for t, c in enumerate(centers or [(10.0, 10.0)] * len(areas)):
        if areas[t]:
            track.cx[t], track.cy[t] = c
    return track


def test_rule_merges_consecutive_frames_and_keeps_the_lowest_score():
    rule = QualityRule(min_score=0.7)
    track = track_of([100] * 10, scores=[0.9, 0.9, 0.6, 0.5, 0.65, 0.9, 0.9, 0.9, 0.3, 0.9])
    ranges = flag_ranges(track, rule)
    assert [(r["start"], r["end"], r["reasons"], r["score"]) for r in ranges] == [
        (2, 4, ["low_score"], 0.5),
        (8, 8, ["low_score"], 0.3),
    ]
    assert ranges[0]["severity"] == 0.5 and ranges[1]["severity"] == 0.7


def test_an_object_entering_late_is_not_flagged_but_one_coming_back_is():
    rule = QualityRule()
    assert flag_frames(track_of([0, 0, 0, 50, 50, 50]), rule) == {}
    assert flag_frames(track_of([50, 50, 0, 0, 50, 50]), rule) == {2: (["vanished"], 1.0), 4: (["reappeared"], 1.0)}
    # a hidden mask with a low score is the vanish itself, not a second flag
    assert flag_frames(track_of([50, 0, 0], scores=[0.9, 0.2, 0.2]), rule) == {1: (["vanished"], 1.0)}


def test_thresholds_are_settings():
    from ml_backend.exceptions import ConfigurationError
    from ml_backend.settings import Settings

    settings = Settings.from_env({"QUALITY_AREA_RATIO": "3", "QUALITY_JUMP": "2", "QUALITY_MIN_SCORE": "0.2"})
    rule = settings.quality_rule
    assert (rule.area_ratio, rule.jump, rule.min_score) == (3.0, 2.0, 0.2)
    assert 2 in flag_frames(track_of([400, 400, 100, 100]), rule)  # ratio 4 ≥ 3
    assert flag_frames(track_of([400, 400, 200, 200]), rule) == {}  # ratio 2 < 3
    with pytest.raises(ConfigurationError, match="QUALITY_AREA_RATIO"):
        Settings(quality_area_ratio=1.0)


def test_pages_to_add_skips_existing_pages_and_stops_at_the_cap():
    ranges = [
        {"video": "video1", "frame": 12},
        {"video": "video1", "frame": 30},
        {"video": "video2", "frame": 3},
        {"video": "video1", "frame": 12},  # another object, same frame: one page
        {"video": "video1", "frame": 40},
        {"video": "video1", "frame": 50},
    ]
    assert pages_to_add(ranges, {"video1": [0, 30]}, cap=2) == {"video1": [12, 40], "video2": [3]}
    assert pages_to_add(ranges, {}, cap=0) == {}


def test_quality_can_be_switched_off(tmp_path):
    render(tmp_path / "frames")
    spec = parse_prompts({"format": "scenediff", "objects": [
        {"id": 3, "prompts": [{"video": "video1", "frame": 0, "points": [[100, 80]], "labels": [1]}]}]})  # fmt: skip
    with run_job(
        ColorVideoPredictor(), spec, {"video1": tmp_path / "frames"}, tmp_path / "out", image_size=64,
        review=False, quality=False,
    ):  # fmt: skip
        pass
    assert not (tmp_path / "out" / "review" / "quality.json").exists()


def test_object_scores_are_read_from_real_sam2_on_every_frame_in_both_directions(tmp_path):
    """The scores in quality.json equal sigmoid(object_score_logits) of SAM 2's stock path, which
    keeps every frame's output, on every frame before and after the prompted one."""
    import torch

    from ml_backend.models import build_video_predictor
    from ml_backend.settings import Settings
    from ml_backend.video.synthetic import moving_shapes

    predictor = build_video_predictor(Settings(checkpoint="random", image_size=128, device="cpu"))
    n, prompt = 14, 6
    video = moving_shapes(num_frames=n, height=48, width=64)
    folder = tmp_path / "jpg"
    folder.mkdir()
    for i, frame in enumerate(video.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    point = [float(c) for c in video.shapes["square"].center(prompt / (n - 1))]

    state = predictor.init_state(str(folder))
    predictor.add_new_points_or_box(state, prompt, 1, points=np.array([point], np.float32), labels=np.array([1]))
    with torch.inference_mode():
        for reverse in (False, True):
            for _ in predictor.propagate_in_video(state, start_frame_idx=prompt, reverse=reverse):
                pass
    outputs = state["output_dict_per_obj"][0]
    stock = {
        f: float(torch.sigmoid(out["object_score_logits"]).reshape(-1)[0])
        for kind in ("non_cond_frame_outputs", "cond_frame_outputs")
        for f, out in outputs[kind].items()
    }
    assert sorted(stock) == list(range(n))

    spec = parse_prompts({"format": "scenediff", "objects": [
        {"id": 1, "prompts": [{"video": "video1", "frame": prompt, "points": [point], "labels": [1]}]}]})  # fmt: skip
    with run_job(predictor, spec, {"video1": folder}, tmp_path / "out", image_size=128, review=False):
        pass
    report = json.loads((tmp_path / "out" / "review" / "quality.json").read_text())
    scores = report["videos"]["video1"]["objects"]["1"]["scores"]
    assert len(scores) == n and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert scores == pytest.approx([stock[f] for f in range(n)], abs=1e-3)
