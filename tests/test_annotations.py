"""A Label Studio annotation on the SceneDiff config → prompts → exact masks → prediction back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_backend.exceptions import PromptError
from ml_backend.labelstudio.annotations import build_task_job
from ml_backend.labelstudio.brush import mask_to_result, result_to_mask
from ml_backend.video.pipeline import run_job

from .fakes import ColorVideoPredictor

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (ROOT / "label_config" / "scenediff_pair.xml").read_text()


def kp(to_name, page, x_px, y_px, size, label, positive=True):
    h, w = size
    return {
        "from_name": "kp1" if to_name == "image1" else "kp2",
        "to_name": to_name,
        "type": "keypointlabels",
        "item_index": page,
        "original_width": w,
        "original_height": h,
        "is_positive": positive,
        "value": {"x": x_px / w * 100, "y": y_px / h * 100, "width": 0.5, "keypointlabels": [label]},
    }


def text(name, value):
    return {"from_name": name, "to_name": "image1", "type": "textarea", "value": {"text": [value]}}


def choices(name, values):
    return {"from_name": name, "to_name": "image1", "type": "choices", "value": {"choices": values}}


@pytest.fixture
def pair_task(tmp_path):
    from ml_backend.video.synthetic import scene_pair

    v1, v2 = scene_pair((10, 8), (96, 128), (80, 112))
    v1.write(tmp_path / "before.mkv")
    v2.write(tmp_path / "after.mkv")
    # annotation frames every 3rd frame, shown at half size (so percent coordinates must be scaled)
    idx1, idx2 = [0, 3, 6, 9], [0, 3, 6]
    task = {
        "id": 1,
        "data": {
            "frames1": [f"/data/local-files/?d=f1_{i}.png" for i in idx1],
            "frames2": [f"/data/local-files/?d=f2_{i}.png" for i in idx2],
            "video1": "/data/local-files/?d=before.mkv",
            "video2": "/data/local-files/?d=after.mkv",
            "frame_indices1": idx1,
            "frame_indices2": idx2,
        },
    }
    return v1, v2, task, tmp_path


def centre_half(video, name, frame):
    x, y = video.shapes[name].center(frame / (len(video.frames) - 1))
    return x / 2, y / 2  # on the half-size annotation frame


def test_annotation_to_exact_masks_and_prediction(pair_task, tmp_path):
    v1, v2, task, root = pair_task
    s1, s2 = (48, 64), (40, 56)
    # mug: keypoint on page 2 of video 1 (frame 6); box: keypoint on page 1 of video 2 (frame 3)
    # ball: a brush mask on page 1 of video 1 (frame 3), keypoint on page 2 of video 2 (frame 6)
    ball_mask = np.kron(v1.masks["ball"][3], np.ones((1, 1), bool))[::2, ::2]
    brush = mask_to_result(ball_mask, from_name="brush1", to_name="image1", label="Object 3", item_index=1)
    result = [
        kp("image1", 2, *centre_half(v1, "mug", 6), s1, "Object 1"),
        kp("image1", 2, 2.0, 2.0, s1, "Object 1", positive=False),
        kp("image2", 1, *centre_half(v2, "box", 3), s2, "Object 2"),
        brush,
        kp("image2", 2, *centre_half(v2, "ball", 6), s2, "Object 3"),
        text("scene_type", "desk"),
        text("obj1_name", "mug"),
        text("obj3_name", "ball"),
        {"from_name": "obj3_number", "to_name": "image1", "type": "number", "value": {"number": 2}},
        choices("obj3_deformability", ["deformable"]),
        choices("obj1_presence", ["in_video1"]),
        text("comments", "moved the ball"),
    ]
    job = build_task_job(CONFIG, task, {"id": 9, "result": result}, lambda ref: root / ref.split("d=")[1])
    spec = job.spec
    assert spec.format == "scenediff" and spec.scene_type == "desk" and spec.comments == {"text": "moved the ball"}
    objects = {o.id: o for o in spec.objects}
    assert objects[1].in_video == {"video1": True, "video2": False}
    assert objects[2].in_video == {"video1": False, "video2": True}
    assert objects[3].label == "ball_2" and objects[3].deformability == "deformable"
    p = objects[1].prompts["video1"][0]
    assert p.frame == 6 and p.labels.tolist() == [1, 0]
    assert np.allclose(p.points[0], v1.shapes["mug"].center(6 / 9), atol=0.01)  # percent → video pixels
    assert objects[3].prompts["video1"][0].mask is not None and objects[3].prompts["video1"][0].frame == 3

    out = run_job(ColorVideoPredictor(), spec, job.videos, tmp_path / "out", image_size=64, review=False)
    from ml_backend.exporters.masks import rle_decode

    truth = {
        ("video1", 1): (v1, "mug"),
        ("video1", 3): (v1, "ball"),
        ("video2", 2): (v2, "box"),
        ("video2", 3): (v2, "ball"),
    }
    for (video, obj_id), (synthetic, name) in truth.items():
        frames = out.masks[video][obj_id]
        assert sorted(map(int, frames)) == list(range(len(synthetic.frames)))
        for key, rle in frames.items():
            assert (rle_decode(rle) == synthetic.masks[name][int(key)]).all(), (video, name, key)

    regions = job.prediction(out, "v-test")
    pages = {(r["to_name"], r["item_index"], r["value"]["brushlabels"][0]) for r in regions}
    assert ("image1", 3, "Object 1") in pages and ("image2", 0, "Object 2") in pages
    ball = next(
        r
        for r in regions
        if r["to_name"] == "image1" and r["item_index"] == 2 and r["value"]["brushlabels"] == ["Object 3"]
    )
    assert (ball["original_height"], ball["original_width"]) == s1  # drawn at the annotation frame size
    assert (result_to_mask(ball) == v1.masks["ball"][6][::2, ::2]).mean() > 0.97


def test_object_marked_present_without_prompts_is_refused(pair_task):
    v1, v2, task, root = pair_task
    result = [kp("image1", 0, 10, 10, (48, 64), "Object 1"), choices("obj1_presence", ["in_video1", "in_video2"])]
    with pytest.raises(PromptError, match="present in video2 but has no points"):
        build_task_job(CONFIG, task, {"result": result}, lambda ref: root / ref.split("d=")[1])


def test_frame_index_beyond_video_is_refused(pair_task):
    v1, v2, task, root = pair_task
    task["data"]["frame_indices1"] = [0, 3, 6, 99]
    with pytest.raises(PromptError, match="beyond the last frame"):
        build_task_job(
            CONFIG,
            task,
            {"result": [kp("image1", 0, 10, 10, (48, 64), "Object 1")]},
            lambda ref: root / ref.split("d=")[1],
        )


def test_empty_annotation_is_refused(pair_task):
    v1, v2, task, root = pair_task
    with pytest.raises(PromptError, match="nothing to propagate"):
        build_task_job(CONFIG, task, {"result": [text("scene_type", "x")]}, lambda ref: root / ref.split("d=")[1])


def test_points_in_a_video_the_object_is_not_marked_present_in_are_refused(pair_task):
    v1, v2, task, root = pair_task
    result = [
        kp("image1", 0, 10, 10, (48, 64), "Object 1"),
        kp("image2", 0, 10, 10, (40, 56), "Object 1"),
        choices("obj1_presence", ["in_video1"]),
    ]
    with pytest.raises(PromptError, match="has points or a mask in video2 but is not marked present there"):
        build_task_job(CONFIG, task, {"result": result}, lambda ref: root / ref.split("d=")[1])
