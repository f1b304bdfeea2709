"""Batched objects (``SAM2_BATCH_OBJECTS``) give the masks of SAM 2's one-by-one loop.

Real SAM 2 code, random weights, 256 px, CPU. Both predictors are built from the same seed (same
weights); one is SAM 2's own ``SAM2VideoPredictor`` (``batch_objects=False``), the other
:class:`ml_backend.video.batched.BatchedVideoPredictor`. A SceneDiff pair exercises every way objects
can differ: prompted on different frames, on two frames, with a negative point, with a mask,
present in one video only, and first prompted late (tracking starts after frame 0, so the
backward pass runs). Every mask must match: IoU ≥ 0.99 per (video, object, frame), object scores
within 1e-3 — through ``run_job`` and through ``python -m ml_backend propagate``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ml_backend.exporters.masks import rle_decode, rle_encode
from ml_backend.settings import Settings
from ml_backend.video import batched
from ml_backend.video.pipeline import run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.video.synthetic import SyntheticVideo, scene_pair

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
IOU_GOAL = 0.99
SCORE_TOLERANCE = 1e-3


# -- grouping (no model) ----------------------------------------------------------------------
def outputs(cond: list[int], non_cond: list[int]) -> dict[str, dict[int, Any]]:
    return {"cond_frame_outputs": dict.fromkeys(cond, {}), "non_cond_frame_outputs": dict.fromkeys(non_cond, {})}


def test_objects_are_grouped_by_the_memory_they_read():
    per_obj = {
        0: outputs([5], [6, 7, 8, 9]),
        1: outputs([5], [6, 7, 8, 9]),
        2: outputs([5, 12], [6, 7, 8, 9]),  # another conditioning frame: attends to more memory
        3: outputs([5], [7, 8, 9]),  # a frame missing in its window (e.g. prompted later there)
        4: outputs([5], [0, 1, 6, 7, 8, 9]),  # frames outside the window do not matter
        5: outputs([5], [6, 7, 8, 9, 11, 12]),  # nor frames ahead in the direction of travel
    }
    assert batched.group_objects(per_obj, [0, 1, 2, 3, 4, 5], 10, False, window=8) == [[0, 1, 4, 5], [2], [3]]
    # travelling backward, the frames after the current one count instead
    assert batched.group_objects(per_obj, [0, 1, 5], 10, True, window=8) == [[0, 1], [5]]
    assert batched.memory_layout(per_obj[5], 10, True, window=8) == ((5,), (11, 12))


def test_the_window_covers_what_sam2_may_read():
    class Model:
        num_maskmem, max_obj_ptrs_in_encoder, memory_temporal_stride_for_eval = 7, 16, 1

    assert batched.lookup_window(Model()) == 16
    Model.memory_temporal_stride_for_eval = 4
    assert batched.lookup_window(Model()) == 29  # 7 memories, every 4th frame


def test_setting():
    assert Settings().batch_objects is True
    assert Settings.from_env({"SAM2_BATCH_OBJECTS": "0"}).batch_objects is False
    assert Settings.from_env({"SAM2_BATCH_OBJECTS": "1"}).batch_objects is True


def test_a_cpu_batches_a_stage_only_while_that_pays():
    """On a CPU memory attention runs object by object, the memory encoder and mask decoder in
    chunks sized by the input pixels (measured: larger batches cost more than one by one); on a
    GPU every stage runs the whole group."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    stages = ("memory_attention", "memory_encoder", "mask_decoder")
    assert [batched.chunk_size(s, cpu, 256, 8) for s in stages] == [1, 8, 8]
    assert [batched.chunk_size(s, cpu, 512, 8) for s in stages] == [1, 2, 8]
    assert [batched.chunk_size(s, cpu, 1024, 8) for s in stages] == [1, 1, 2]
    assert [batched.chunk_size(s, cpu, 256, 3) for s in stages] == [1, 3, 3]
    assert [batched.chunk_size(s, cuda, 1024, 8) for s in stages] == [8, 8, 8]
    assert batched.chunks(5, 2) == [(0, 2), (2, 4), (4, 5)]


def test_a_cpu_runs_sam2s_loop_where_only_the_decoder_would_batch():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert batched.batching_pays(cpu, 256) and batched.batching_pays(cpu, 512)
    assert not batched.batching_pays(cpu, 513) and not batched.batching_pays(cpu, 1024)
    assert batched.batching_pays(cuda, 1024)


# -- real SAM 2 ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictors():
    """``{batched: predictor}`` with identical (seeded random) weights."""
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from ml_backend.models import build_video_predictor

    out = {b: build_video_predictor(Settings(checkpoint="random", image_size=SIZE, device="cpu", batch_objects=b))
           for b in (False, True)}  # fmt: skip
    assert type(out[False]) is SAM2VideoPredictor
    assert isinstance(out[True], batched.BatchedVideoPredictor)
    for a, b in zip(out[False].state_dict().values(), out[True].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    return out


def pair() -> tuple[SyntheticVideo, SyntheticVideo]:
    return scene_pair(num_frames=(5, 4), size1=(48, 64))


def center(video: SyntheticVideo, name: str, frame: int) -> list[float]:
    return [float(c) for c in video.shapes[name].center(frame / (len(video.frames) - 1))]


def document(v1: SyntheticVideo, v2: SyntheticVideo) -> dict[str, Any]:
    """Video 1 (5 frames): ``ball`` (with a negative point), ``mug`` (a mask) and a second
    ``mug`` (a point) prompted on frame 0 run as one batch; ``lamp`` is prompted on frames 0 and 3
    and runs alone. Video 2 (4 frames): tracking starts at frame 1 (``lamp``, ``ball``: a batch),
    goes forward, then backward to 0; ``box``, present only here, is first prompted on frame 3."""

    def points(video: str, frame: int, pts: list[list[float]], labels: list[int]) -> dict[str, Any]:
        return {"video": video, "frame": frame, "points": pts, "labels": labels}

    return {
        "format": "scenediff",
        "scene_type": "test",
        "objects": [
            {"id": 1, "name": "lamp", "prompts": [
                points("video1", 0, [center(v1, "lamp", 0)], [1]),
                points("video1", 3, [center(v1, "lamp", 3)], [1]),
                points("video2", 1, [center(v2, "lamp", 1)], [1])]},
            {"id": 2, "name": "ball", "prompts": [
                points("video1", 0, [center(v1, "ball", 0), center(v1, "lamp", 0)], [1, 0]),
                points("video2", 1, [center(v2, "ball", 1), center(v2, "box", 1)], [1, 0])]},
            {"id": 3, "name": "mug", "in_video2": False, "prompts": [
                {"video": "video1", "frame": 0, "mask_rle": rle_encode(v1.masks["mug"][0])}]},
            {"id": 4, "name": "box", "in_video1": False, "prompts": [points("video2", 3, [center(v2, "box", 3)], [1])]},
            {"id": 5, "name": "mug", "number": 2, "in_video2": False, "prompts": [
                points("video1", 0, [center(v1, "mug", 0)], [1])]},
        ],
    }  # fmt: skip


def compare(masks: dict[bool, dict], scores: dict[bool, dict], num_frames: dict[str, int]) -> dict[str, float]:
    """Assert every (video, object, frame) mask and score agree; return the figures.

    ``masks[batched][video][obj_id][str(frame)]``: COCO RLE of the non-empty masks;
    ``scores[batched][video][str(obj_id)]``: object score per frame (``quality.json``)."""
    worst, nonempty, pairs, worst_score = 1.0, 0, 0, 0.0
    assert masks[True].keys() == masks[False].keys() == num_frames.keys()
    for video, n in num_frames.items():
        ours, theirs = masks[True][video], masks[False][video]
        assert ours.keys() == theirs.keys()
        for obj_id in theirs:
            for f in range(n):
                a, b = theirs[obj_id].get(str(f)), ours[obj_id].get(str(f))
                pairs += 1
                if a is None and b is None:
                    continue
                nonempty += 1
                ma = rle_decode(a) if a is not None else np.zeros_like(rle_decode(b))
                mb = rle_decode(b) if b is not None else np.zeros_like(ma)
                iou = float((ma & mb).sum() / max(1, (ma | mb).sum()))
                assert iou >= IOU_GOAL, (video, obj_id, f, iou)
                worst = min(worst, iou)
        assert scores[True][video].keys() == scores[False][video].keys()
        for obj_id, theirs_scores in scores[False][video].items():
            ours_scores = scores[True][video][obj_id]
            assert len(ours_scores) == len(theirs_scores) == n
            for f, (x, y) in enumerate(zip(theirs_scores, ours_scores, strict=True)):
                assert (x is None) == (y is None), (video, obj_id, f)
                if x is not None:
                    assert abs(x - y) <= SCORE_TOLERANCE, (video, obj_id, f, x, y)
                    worst_score = max(worst_score, abs(x - y))
    assert nonempty >= pairs // 4, "too few masks to compare: the test would prove nothing"
    return {"min_iou": worst, "max_score_diff": worst_score, "nonempty": nonempty, "pairs": pairs}


def quality_scores(out: Path) -> dict[str, dict[str, list]]:
    report = json.loads((out / "review" / "quality.json").read_text())
    return {v: {o: t["scores"] for o, t in d["objects"].items()} for v, d in report["videos"].items()}


def spy_batch_sizes(predictor: Any) -> list[int]:
    """Record the batch size of every tracking step SAM 2's ``_run_single_frame_inference`` runs."""
    sizes: list[int] = []
    inner = predictor._run_single_frame_inference

    def spy(*args: Any, **kwargs: Any) -> Any:
        sizes.append(kwargs["batch_size"])
        return inner(*args, **kwargs)

    predictor._run_single_frame_inference = spy
    return sizes


def run_spied(predictor: Any, scene: tuple[dict[str, str], Any], out: Path) -> dict[str, Any]:
    """``run_job`` on the scene pair: masks, scores and frame counts, with the batch sizes of its
    tracking steps (:func:`spy_batch_sizes`) and of its stages (:func:`spy_stage_batches`)."""
    videos, spec = scene
    steps = spy_batch_sizes(predictor)
    calls, handles = spy_stage_batches(predictor)
    try:
        with run_job(predictor, spec, videos, out, image_size=SIZE, review=False) as result:
            masks = {v: {o: dict(f) for o, f in per.items()} for v, per in result.masks.items()}
            num_frames = dict(result.num_frames)
        scores = quality_scores(out)
    finally:
        del predictor._run_single_frame_inference
        for handle in handles:
            handle.remove()
    return {"masks": masks, "scores": scores, "num_frames": num_frames, "steps": steps, "calls": calls}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[dict[str, str], Any]:
    """The pair's videos on disk and its parsed prompt spec."""
    tmp = tmp_path_factory.mktemp("scene")
    v1, v2 = pair()
    videos = {"video1": str(v1.write(tmp / "v1.mkv")), "video2": str(v2.write(tmp / "v2.mkv"))}
    return videos, parse_prompts(document(v1, v2))


@pytest.fixture(scope="module")
def one_by_one(predictors, scene, tmp_path_factory) -> dict[str, Any]:
    """SAM 2's own loop on the scene, run once for the tests that compare with it."""
    run = run_spied(predictors[False], scene, tmp_path_factory.mktemp("onebyone"))
    assert set(run["steps"]) == {1}  # SAM 2's loop: one object at a time ...
    assert all(set(sizes) == {1} for sizes in run["calls"].values())  # ... in every stage
    return run


def test_run_job_masks_and_scores_match_the_one_by_one_path(predictors, scene, one_by_one, tmp_path):
    ours = run_spied(predictors[True], scene, tmp_path / "batched")
    runs = {False: one_by_one, True: ours}
    assert ours["num_frames"] == one_by_one["num_frames"] == {"video1": 5, "video2": 4}
    figures = compare({b: r["masks"] for b, r in runs.items()}, {b: r["scores"] for b, r in runs.items()},
                      ours["num_frames"])  # fmt: skip
    steps = ours["steps"]
    assert max(steps) == 3  # ball, mug and mug #2 in video 1
    assert 2 in steps and 1 in steps  # lamp + ball in video 2; lamp / box alone
    assert len(steps) < len(one_by_one["steps"])
    print(figures)


def test_cli_masks_and_scores_match_the_one_by_one_path(tmp_path):
    v1, v2 = pair()
    v1.write(tmp_path / "v1.mkv")
    v2.write(tmp_path / "v2.mkv")
    doc = {**document(v1, v2), "videos": {"video1": "v1.mkv", "video2": "v2.mkv"}}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    masks, scores = {}, {}
    for b in (False, True):
        out = tmp_path / f"out_{b}"
        env = {**os.environ, "SAM2_CHECKPOINT": "random", "SAM2_IMAGE_SIZE": str(SIZE), "SAM2_DEVICE": "cpu",
               "SAM2_BATCH_OBJECTS": "1" if b else "0", "TQDM_DISABLE": "1"}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "ml_backend", "propagate", "--prompts", str(tmp_path / "p.json"),
             "--out", str(out), "--no-review"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        seg = pickle.loads((out / "segments.pkl").read_bytes())
        masks[b] = {v: seg[f"{v}_objects"] for v in ("video1", "video2")}
        scores[b] = quality_scores(out)
    figures = compare(masks, scores, {"video1": 5, "video2": 4})
    print(figures)


def test_compiled_predictor_is_batched_too():
    """``SAM2_COMPILE`` builds SAM 2's VOS-optimised class; batching wraps it the same way
    (nothing is compiled until the model first runs, so this builds only)."""
    from sam2.sam2_video_predictor import SAM2VideoPredictorVOS

    from ml_backend.models import build_video_predictor

    settings = Settings(checkpoint="random", image_size=SIZE, device="cpu", compile=True)
    predictor = build_video_predictor(settings)
    assert isinstance(predictor, batched.BatchedVideoPredictorVOS)
    assert isinstance(predictor, SAM2VideoPredictorVOS)
    assert type(build_video_predictor(settings.replace(batch_objects=False))) is SAM2VideoPredictorVOS


def spy_stage_batches(predictor: Any) -> tuple[dict[str, list[int]], list[Any]]:
    """Record the batch size of every call of memory attention, mask decoder and memory encoder
    (forward pre-hooks on SAM 2's modules); the hooks' handles, to remove them."""
    calls: dict[str, list[int]] = {"memory_attention": [], "mask_decoder": [], "memory_encoder": []}

    def hook(name: str, batch_of):
        def record(_module: Any, args: tuple, kwargs: dict) -> None:
            calls[name].append(batch_of(args, kwargs))

        return record

    handles = [
        predictor.memory_attention.register_forward_pre_hook(
            hook("memory_attention", lambda a, k: k["memory"].shape[1]), with_kwargs=True
        ),
        predictor.sam_mask_decoder.register_forward_pre_hook(
            hook("mask_decoder", lambda a, k: k["image_embeddings"].shape[0]), with_kwargs=True
        ),
        predictor.memory_encoder.register_forward_pre_hook(
            hook("memory_encoder", lambda a, k: a[0].shape[0]), with_kwargs=True
        ),
    ]
    return calls, handles


def test_stages_run_in_chunks_and_give_the_same_masks(predictors, scene, one_by_one, tmp_path, monkeypatch):
    """With every stage's CPU budget at two objects (as at 1024 px the mask decoder runs), the
    three-object batch of video 1 runs each stage as 2 + 1 objects, and the masks and scores
    still match SAM 2's one-by-one loop."""
    for stage in batched.CPU_BATCH_PIXELS:
        monkeypatch.setitem(batched.CPU_BATCH_PIXELS, stage, 2 * SIZE * SIZE)
    ours = run_spied(predictors[True], scene, tmp_path / "chunked")
    runs = {False: one_by_one, True: ours}
    figures = compare({b: r["masks"] for b, r in runs.items()}, {b: r["scores"] for b, r in runs.items()},
                      ours["num_frames"])  # fmt: skip
    assert max(ours["steps"]) == 3  # the group of three still runs as one tracking step ...
    for stage, sizes in ours["calls"].items():
        assert max(sizes) == 2, (stage, sizes)  # ... its stages in chunks of two objects
    print(figures)


def test_where_batching_does_not_pay_the_loop_is_sam2s_own(predictors, scene, one_by_one, tmp_path, monkeypatch):
    """With the memory encoder's CPU budget below two objects (as at 1024 px), the batched
    predictor runs SAM 2's own loop: one object per tracking step and per stage, the same masks."""
    monkeypatch.setitem(batched.CPU_BATCH_PIXELS, "memory_encoder", SIZE * SIZE)
    ours = run_spied(predictors[True], scene, tmp_path / "loop")
    assert set(ours["steps"]) == {1} and len(ours["steps"]) == len(one_by_one["steps"])
    assert all(set(sizes) == {1} for sizes in ours["calls"].values())
    assert ours["masks"] == one_by_one["masks"] and ours["scores"] == one_by_one["scores"]
