"""The job pipeline's two ways of encoding masks give the same bytes.

On CUDA the job finds each mask's runs on the device and the export thread only compresses them
(``device_rle``); on the CPU the export thread encodes whole masks. The device path is the same
torch code on any device, so it is run here on CPU tensors and compared with the CPU path.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ml_backend.exporters.masks import (
    coco_counts_string,
    mask_box,
    mask_rle,
    rle_compress,
    rle_encode,
    rle_encode_tensor,
)
from ml_backend.settings import Settings
from ml_backend.video.pipeline import run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.video.synthetic import SyntheticVideo, moving_shapes

from .fakes import ColorVideoPredictor


def masks_of_every_kind(h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    empty = np.zeros((h, w), bool)
    first, last = empty.copy(), empty.copy()
    first[0, 0] = True
    last[-1, -1] = True
    blob = empty.copy()
    blob[h // 4 : 3 * h // 4, w // 3 : w - 1] = True
    checker = (np.indices((h, w)).sum(0) % 2).astype(bool)
    return [empty, ~empty, first, last, ~first, blob, checker, rng.random((h, w)) > 0.5]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (48, 64), (1080, 1920)])
def test_runs_found_on_a_tensor_compress_to_the_same_rle(shape):
    masks = masks_of_every_kind(*shape)
    runs = rle_encode_tensor(torch.from_numpy(np.stack(masks)))
    assert len(runs) == len(masks)
    for mask, uncompressed in zip(masks, runs, strict=True):
        assert rle_compress(uncompressed) == rle_encode(mask)
        assert (len(uncompressed["counts"]) == 1) == (not mask.any())  # one count: nothing set


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (7, 5), (48, 64), (1080, 1920)])
def test_mask_rle_from_the_bounding_box_is_pycocotools_byte_for_byte(shape):
    """The export thread's encoder (bounding box only) against pycocotools on the whole mask:
    every kind of mask, and random blobs with full columns that make runs cross columns."""
    h, w = shape
    rng = np.random.default_rng(1)
    masks = masks_of_every_kind(h, w)
    for _ in range(40):
        m = np.zeros(shape, bool)
        r0, r1 = sorted(rng.integers(0, h + 1, 2))
        c0, c1 = sorted(rng.integers(0, w + 1, 2))
        m[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0)) > rng.random()
        m[:, rng.integers(0, w)] = rng.random() > 0.5
        masks.append(m)
    for mask in masks:
        assert mask_rle(mask) == (rle_encode(mask) if mask.any() else None)
        box = mask_box(mask)
        if box is not None:
            top, bottom, left, right = box
            assert mask[top:bottom, left:right].sum() == mask.sum()


def test_coco_counts_string_is_pycocotools_for_counts_of_every_size():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(2)
    for size in (1, 2, 3, 4, 7, 50, 2000):
        counts = rng.choice([1, 15, 16, 17, 31, 32, 511, 512, 513, 2**20, 2**25 + 3], size=size)
        counts = np.where(rng.random(size) < 0.5, counts, rng.integers(1, 40, size))
        counts[0] = rng.integers(0, 3)  # a mask may start with its first pixel set
        n = int(counts.sum())
        expected = mask_utils.frPyObjects({"size": [n, 1], "counts": counts.tolist()}, n, 1)["counts"]
        assert coco_counts_string(counts) == expected.decode("ascii"), size


def pixels(video: SyntheticVideo, name: str, frame: int) -> list[float]:
    return [float(c) for c in video.shapes[name].center(frame / (len(video.frames) - 1))]


def same(a, b) -> bool:
    """Deep equality for what the exporters pickle (dicts, lists, numpy arrays, scalars)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


def run_both(predictor, spec, videos, tmp_path):
    outs = {}
    for device_rle in (False, True):
        out = tmp_path / f"device_rle_{device_rle}"
        with run_job(predictor, spec, videos, out, image_size=predictor.image_size, device_rle=device_rle) as result:
            masks = {v: {o: dict(f) for o, f in per.items()} for v, per in result.masks.items()}
        outs[device_rle] = (out, masks)
    return outs


def test_scenediff_job_with_real_sam2_is_identical_with_device_rle(tmp_path):
    from ml_backend.models import build_video_predictor

    predictor = build_video_predictor(Settings(checkpoint="random", image_size=128, device="cpu"))
    video = moving_shapes(num_frames=6, height=48, width=64)
    path = video.write(tmp_path / "v.mkv")
    spec = parse_prompts(
        {
            "format": "scenediff",
            "objects": [
                {"id": 1, "name": "square", "in_video1": True, "in_video2": False,
                 "prompts": [{"video": "video1", "frame": 3, "points": [pixels(video, "square", 3)], "labels": [1]}]},
                {"id": 2, "name": "disc", "in_video1": True, "in_video2": False,
                 "prompts": [{"video": "video1", "frame": 2, "points": [pixels(video, "disc", 2)], "labels": [1]}]},
            ],
        }
    )  # fmt: skip
    outs = run_both(predictor, spec, {"video1": str(path)}, tmp_path)
    (cpu_out, cpu_masks), (dev_out, dev_masks) = outs[False], outs[True]
    assert sum(len(f) for f in cpu_masks["video1"].values()) > 0  # something was segmented
    assert dev_masks == cpu_masks
    for name in ("segments.pkl", "inference_data.pkl"):
        assert same(pickle.loads((dev_out / name).read_bytes()), pickle.loads((cpu_out / name).read_bytes())), name


def test_greenscreen_job_is_identical_with_device_rle(tmp_path):
    video = moving_shapes(num_frames=5, height=48, width=64)
    folder = video.write(tmp_path / "video_part_001")
    spec = parse_prompts(
        {
            "format": "greenscreen",
            "objects": [
                {"id": 1, "name": "square",
                 "prompts": [{"video": "video1", "frame": 0, "points": [pixels(video, "square", 0)], "labels": [1]}]},
            ],
            "greenscreen": {"segment_index": 0, "segment_frames": [5], "start_frame": 0},
        }
    )  # fmt: skip
    outs = run_both(ColorVideoPredictor(), spec, {"video1": str(folder)}, tmp_path)
    (cpu_out, cpu_masks), (dev_out, dev_masks) = outs[False], outs[True]
    assert dev_masks == cpu_masks and len(cpu_masks["video1"][1]) == 5
    pngs = sorted(p.name for p in cpu_out.glob("*.png"))
    assert pngs == [f"frame_{i:06d}_masked.png" for i in range(5)]
    for name in pngs:
        assert (dev_out / name).read_bytes() == (cpu_out / name).read_bytes()
