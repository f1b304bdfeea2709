"""Our bounded-memory propagation against SAM 2's stock path, real model (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_backend.settings import Settings
from ml_backend.video import propagation as P
from ml_backend.video.frames import open_frames
from ml_backend.video.synthetic import moving_shapes


@pytest.fixture(scope="module")
def predictor():
    from ml_backend.models import build_video_predictor

    return build_video_predictor(Settings(checkpoint="random", image_size=128, device="cpu"))


def test_prune_keeps_the_memory_window_and_prompted_neighbourhoods():
    outputs = {f: {} for f in range(100)}
    state = {"output_dict_per_obj": {0: {"cond_frame_outputs": {50: {}}, "non_cond_frame_outputs": dict(outputs)}}}
    keep = {50 + d for d in range(-17, 18)}
    P.prune(state, 90, reverse=False, window=17, keep=keep)
    left = sorted(state["output_dict_per_obj"][0]["non_cond_frame_outputs"])
    assert left == sorted(set(range(73, 100)) | keep)
    state["output_dict_per_obj"][0]["non_cond_frame_outputs"] = dict(outputs)
    P.prune(state, 10, reverse=True, window=17, keep=keep)
    left = sorted(state["output_dict_per_obj"][0]["non_cond_frame_outputs"])
    assert left == sorted(set(range(0, 28)) | keep)
    assert state["output_dict_per_obj"][0]["cond_frame_outputs"] == {50: {}}


def test_memory_window_follows_the_model(predictor):
    assert P.memory_window(predictor) == max(predictor.num_maskmem, predictor.max_obj_ptrs_in_encoder) + 1


@pytest.mark.slow
def test_same_masks_as_stock_path_with_pruning(predictor, tmp_path):
    from PIL import Image

    n = 90
    video = moving_shapes(num_frames=n, height=48, width=64)
    for i, frame in enumerate(video.frames):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.jpg", quality=95)
    prompts = {
        1: [P.FramePrompt(44, np.array([video.shapes["square"].center(44 / (n - 1))], np.float32), np.array([1]))],
        2: [P.FramePrompt(46, np.array([video.shapes["disc"].center(46 / (n - 1))], np.float32), np.array([1]))],
    }
    # stock: init_state over the JPEG folder, forward from the first prompt, then backward
    state = predictor.init_state(str(tmp_path))
    for obj_id, ps in prompts.items():
        for p in ps:
            predictor.add_new_points_or_box(state, p.frame, obj_id, points=p.points, labels=p.labels)
    stock = {}
    with torch.inference_mode():
        for reverse in (False, True):
            for f, ids, masks in predictor.propagate_in_video(state, start_frame_idx=44, reverse=reverse):
                stock[f] = {int(o): (masks[i, 0] > 0).numpy() for i, o in enumerate(ids)}
    # ours: lazy frames, pruning on
    ours_state = P.new_state(predictor, open_frames(tmp_path))
    P.add_prompts(predictor, ours_state, prompts)
    ours = {}
    kept = 0
    for f, masks in P.propagate(predictor, ours_state):
        assert f not in ours
        ours[f] = masks
        kept = max(kept, max(len(o["non_cond_frame_outputs"]) for o in ours_state["output_dict_per_obj"].values()))
    P.close_state(ours_state)
    assert sorted(ours) == list(range(n))
    window = P.memory_window(predictor)
    assert kept <= 2 * (2 * window + 1) + window  # outputs were pruned while tracking
    assert kept < n - 20
    for f in range(n):
        for obj_id in (1, 2):
            a, b = stock[f][obj_id], ours[f][obj_id]
            union = (a | b).sum()
            assert union == 0 or (a & b).sum() / union == 1.0, (f, obj_id)
