#!/usr/bin/env python
"""Long videos in bounded memory: peak RSS and speed of video propagation, stock SAM 2 vs our job.

Everything is measured in one run and printed as one markdown table. SAM 2.1 is built from random
weights (``checkpoint="random"``, seeded): the timings and memory are those of the real model
code, the masks are meaningless. The input is a synthetic 1920×1080 video (textured background,
moving shapes drawn with OpenCV), written once as an ``mp4v`` MP4 and as a folder of JPEG frames
(SAM 2's stock ``init_state`` reads only a JPEG folder without ``decord``), cached in ``--workdir``.

For every N (frames) and every path, a **fresh subprocess** (this script with ``--child``) builds
the model and measures wall time and peak RSS (``ru_maxrss``) of:

- **stock**: ``predictor.init_state(jpeg_folder)`` + ``add_new_points_or_box`` per object +
  ``propagate_in_video`` forward and reverse, every mask collected as a numpy bool array in a dict
  (what SAM 2's example notebook does);
- **job**: ``ml_backend.pipeline.run_job`` on the MP4 with a SceneDiff prompt spec (objects
  prompted on the middle frame, so it propagates forward and backward), ``review=False``;
- **model-only**: the same prompts and ``propagate_in_video`` forward + reverse over frames
  decoded and resized into memory beforehand (not timed); masks are left as SAM 2 returns them.
  ``job / model-only`` is the overhead of decoding, exporting and pruning (goal ≤ 1.1).

Then a parity check: a 60-frame JPEG folder, prompts on frame 30, one predictor built with a fixed
seed; masks of the stock path and of ``run_job`` on the same folder are compared frame by frame
(IoU per frame and object, both empty = 1).

``--long``: a 10-minute 1080p video at 30 fps (18,000 frames, one moving shape on a static
background), run through ``run_job`` until ``--time-bound`` seconds have passed (the job is
aborted from its progress callback); RSS is sampled at every frame and reported at 10 %, 50 % and
100 % of the frames processed, and must stay under 8 GiB.

Usage::

    .venv/bin/python scripts/bench_video.py --quick                 # smoke run (N = 10, 20)
    .venv/bin/python scripts/bench_video.py                         # N = 50, 200, 1000 at 256 px (CPU)
    .venv/bin/python scripts/bench_video.py --long --time-bound 600 # 18,000-frame memory curve
    .venv/bin/python scripts/bench_video.py --device cuda --image-size 1024 --model-size large
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 1920, 1080
MiB = 1024 * 1024
#: Published SAM 2.1 speed, A100, bf16, torch.compile, one object (SAM 2 README).
PUBLISHED_A100_FPS = {"tiny": 91.2, "small": 84.8, "base_plus": 64.1, "large": 39.5}
RSS_GOAL = 1.2
TIME_GOAL = 1.1
IOU_GOAL = 0.99
LONG_RSS_LIMIT = 8 * 1024 * MiB
RESULT_TAG = "BENCH_RESULT "


# -- synthetic 1080p video --------------------------------------------------------------------
def shape_tracks(objects: int) -> list[dict[str, Any]]:
    """Moving shapes: kind, BGR colour, radius, start centre, velocity (px/frame); bounce at edges."""
    tracks = [
        {"name": "disc", "kind": "disc", "color": (40, 60, 220), "r": 110, "p0": (500.0, 420.0), "v": (2.3, 1.1)},
        {"name": "square", "kind": "rect", "color": (220, 70, 40), "r": 100, "p0": (1400.0, 700.0), "v": (-1.7, -0.9)},
        {"name": "box", "kind": "rect", "color": (60, 200, 60), "r": 90, "p0": (960.0, 240.0), "v": (1.2, 0.6)},
    ]
    return tracks[:objects]


def _bounce(p: float, v: float, i: int, lo: float, hi: float) -> float:
    span = hi - lo
    x = (p - lo + v * i) % (2 * span)
    return lo + (x if x <= span else 2 * span - x)


def track_center(track: dict[str, Any], i: int) -> tuple[float, float]:
    r = track["r"]
    return (
        _bounce(track["p0"][0], track["v"][0], i, r, WIDTH - r),
        _bounce(track["p0"][1], track["v"][1], i, r, HEIGHT - r),
    )


def background() -> Any:
    """A textured 1080p background: 8×8-pixel blocks of grey noise plus a few static patches."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    small = rng.integers(70, 130, size=(HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    bg = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(bg, (80, 760), (420, 1000), (30, 160, 200), -1)  # static clutter
    cv2.circle(bg, (1650, 220), 120, (150, 40, 150), -1)
    return bg


def render_frame(bg: Any, tracks: list[dict[str, Any]], i: int) -> Any:
    """Frame ``i`` (BGR, for OpenCV writers)."""
    import cv2

    frame = bg.copy()
    for t in tracks:
        cx, cy = track_center(t, i)
        r = t["r"]
        if t["kind"] == "disc":
            cv2.circle(frame, (round(cx), round(cy)), r, t["color"], -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(frame, (round(cx - r), round(cy - r)), (round(cx + r), round(cy + r)), t["color"], -1)
    return frame


def make_video(
    workdir: Path, frames: int, objects: int, *, mp4: bool = True, jpeg: bool = True, log=print
) -> dict[str, Path]:
    """Write (once; cached in ``workdir``) ``frames`` frames as an MP4 and/or a JPEG folder."""
    import cv2

    videos = workdir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    tag = f"{WIDTH}x{HEIGHT}_{objects}obj_{frames}f"
    out: dict[str, Path] = {}
    tracks = shape_tracks(objects)
    bg = None
    mp4_path = videos / f"{tag}.mp4"
    if mp4:
        out["mp4"] = mp4_path
        if not mp4_path.is_file():
            started = time.perf_counter()
            bg = background() if bg is None else bg
            tmp = mp4_path.with_suffix(".part.mp4")
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {tmp}")
            for i in range(frames):
                writer.write(render_frame(bg, tracks, i))
                if frames >= 2000 and i % 2000 == 0:
                    log(f"  writing {mp4_path.name}: frame {i}/{frames}")
            writer.release()
            tmp.rename(mp4_path)
            log(
                f"  wrote {mp4_path} ({frames} frames, {mp4_path.stat().st_size / MiB:.0f} MiB) in {time.perf_counter() - started:.0f} s"
            )
    if jpeg:
        folder = videos / f"{tag}_jpeg"
        out["jpeg"] = folder
        done = folder / ".complete"
        if not done.is_file():
            started = time.perf_counter()
            bg = background() if bg is None else bg
            # Frames do not depend on the video length: reuse a longer folder's files as links.
            longer = sorted(
                (p for p in videos.glob(f"{WIDTH}x{HEIGHT}_{objects}obj_*f_jpeg") if (p / ".complete").is_file()),
                key=lambda p: int(p.name.split("_")[2][:-1]),
            )
            longer = [p for p in longer if int(p.name.split("_")[2][:-1]) >= frames]
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            for i in range(frames):
                name = f"{i:05d}.jpg"
                if longer:
                    os.symlink((longer[0] / name).resolve(), folder / name)
                else:
                    cv2.imwrite(str(folder / name), render_frame(bg, tracks, i), [cv2.IMWRITE_JPEG_QUALITY, 95])
            done.touch()
            log(f"  wrote {folder} ({frames} JPEG frames) in {time.perf_counter() - started:.0f} s")
    return out


def prompt_points(objects: int, frame: int) -> list[tuple[float, float]]:
    return [track_center(t, frame) for t in shape_tracks(objects)]


def prompt_spec(objects: int, frame: int) -> dict[str, Any]:
    """A SceneDiff prompt document: one positive point at each shape's centre on ``frame``."""
    return {
        "format": "scenediff",
        "scene_type": "bench",
        "objects": [
            {
                "id": k + 1,
                "name": t["name"],
                "number": 1,
                "in_video1": True,
                "in_video2": False,
                "prompts": [
                    {
                        "video": "video1",
                        "frame": frame,
                        "points": [list(prompt_points(objects, frame)[k])],
                        "labels": [1],
                    }
                ],
            }
            for k, t in enumerate(shape_tracks(objects))
        ],
    }


# -- child-side measurements ------------------------------------------------------------------
def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build(cfg: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    from ml_backend.models import build_video_predictor
    from ml_backend.settings import Settings

    settings = Settings(
        checkpoint="random",
        model_size=cfg["model_size"],
        image_size=cfg["image_size"],
        device=cfg["device"],
        compile=cfg.get("compile", False),
        random_seed=cfg.get("seed", 0),
    )
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg.get("seed", 0))
    predictor = build_video_predictor(settings)
    if cfg.get("warmup", True):
        warm_up(predictor, settings)
    return settings, predictor


class _FakeSource:
    """Just the size fields :func:`ml_backend.propagation.new_state` reads."""

    num_frames, height, width, fps = 3, HEIGHT, WIDTH, 30.0


def warm_up(predictor: Any, settings: Any) -> None:
    """Track one object over 3 blank in-memory frames, so one-time costs (kernel selection, lazy
    allocations) are paid before anything is timed; then the same state is thrown away."""
    import torch

    from ml_backend import propagation

    state = propagation.new_state(predictor, _FakeSource(), prefetch=0)  # type: ignore[arg-type]
    propagation.close_state(state)
    state["images"] = torch.zeros(3, 3, predictor.image_size, predictor.image_size, device=predictor.device)
    with torch.inference_mode(), autocast_factory(settings, predictor)():
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[WIDTH / 2, HEIGHT / 2]], labels=[1])
        for _ in predictor.propagate_in_video(state):
            pass
    del state
    sync(predictor)


def autocast_factory(settings: Any, predictor: Any):
    from ml_backend.models import autocast

    return lambda: autocast(settings, predictor.device)


def sync(predictor: Any) -> None:
    import torch

    if str(predictor.device).startswith("cuda"):
        torch.cuda.synchronize()


def gpu_peak(predictor: Any) -> int | None:
    import torch

    if str(predictor.device).startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return None


def median_step(times: list[float]) -> float | None:
    """Median seconds between consecutive frames (robust to short bursts of other load)."""
    steps = sorted(b - a for a, b in itertools.pairwise(times))
    return steps[len(steps) // 2] if steps else None


def curve(samples: list[tuple], fractions=(0.1, 0.5, 1.0)) -> list[dict[str, Any]]:
    """RSS at given fractions of the frames processed (samples are ``(done, seconds, rss[, rle])``)."""
    if not samples:
        return []
    total = samples[-1][0]
    out = []
    for f in fractions:
        target = max(1, math.ceil(f * total))
        sample = next(s for s in samples if s[0] >= target)
        done, secs, rss = sample[:3]
        rle = sample[3] if len(sample) > 3 else None
        out.append({"fraction": f, "frames": done, "seconds": secs, "rss": rss, "rle": rle})
    return out


def child_stock(cfg: dict[str, Any]) -> dict[str, Any]:
    """What SAM 2 users do: init_state on a JPEG folder, points, propagate both ways, keep masks."""
    import torch

    settings, predictor = build(cfg)
    baseline = rss_bytes()
    ac = autocast_factory(settings, predictor)
    points = prompt_points(cfg["objects"], cfg["prompt_frame"])
    samples: list[tuple[int, float, int]] = []
    sync(predictor)
    started = time.perf_counter()
    cpu0 = time.process_time()
    with torch.inference_mode(), ac():
        state = predictor.init_state(str(cfg["jpeg"]))
        init_s = time.perf_counter() - started
        for k, (x, y) in enumerate(points):
            predictor.add_new_points_or_box(
                state, frame_idx=cfg["prompt_frame"], obj_id=k + 1, points=[[x, y]], labels=[1]
            )
        video_segments: dict[int, dict[int, Any]] = {}
        for reverse in (False, True):
            for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state, reverse=reverse):
                video_segments[frame_idx] = {
                    obj_id: (mask_logits[i] > 0.0).cpu().numpy() for i, obj_id in enumerate(obj_ids)
                }
                samples.append((len(samples) + 1, time.perf_counter() - started, rss_bytes()))
    sync(predictor)
    seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "init_seconds": init_s,
        "median_step": median_step([s[1] for s in samples]),
        "frames": len(video_segments),
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "gpu_peak": gpu_peak(predictor),
        "curve": curve(samples),
    }
    if cfg.get("return_masks"):
        result["masks"] = video_segments
    return result


def child_job(cfg: dict[str, Any], predictor: Any = None, settings: Any = None) -> dict[str, Any]:
    """Our job path: run_job on the video with a SceneDiff prompt spec."""
    from ml_backend import pipeline
    from ml_backend.pipeline import run_job
    from ml_backend.prompts import parse_prompts

    # Count the bytes of the COCO RLE strings the job produces for segments.pkl (measurement only:
    # the job's own encoder is called unchanged), to tell output growth from other growth.
    # Both encoders are wrapped: on CUDA the job finds runs on the GPU and only compresses them.
    rle_held = [0]

    def counting(encode: Any) -> Any:
        def wrapper(mask: Any) -> dict[str, Any]:
            rle = encode(mask)
            rle_held[0] += len(rle["counts"])
            return rle

        return wrapper

    pipeline.rle_encode = counting(pipeline.rle_encode)
    pipeline.rle_compress = counting(pipeline.rle_compress)
    if predictor is None:
        settings, predictor = build(cfg)
    baseline = rss_bytes()
    spec = parse_prompts(prompt_spec(cfg["objects"], cfg["prompt_frame"]))
    samples: list[tuple[int, float, int, int]] = []
    out_dir = Path(cfg["out_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)

    class TimeBound(Exception):
        pass

    class MemoryBound(Exception):
        pass

    time_bound = cfg.get("time_bound")
    rss_limit = cfg.get("rss_limit")
    started = time.perf_counter()
    cpu0 = time.process_time()

    def progress(_video: str, done: int, _total: int) -> None:
        now = time.perf_counter() - started
        rss = rss_bytes()
        samples.append((done, now, rss, rle_held[0]))
        if rss_limit and rss > rss_limit:
            raise MemoryBound(f"RSS {rss / MiB:.0f} MiB above the limit after {done} frames")
        if time_bound and now > time_bound:
            raise TimeBound

    stopped = None
    sync(predictor)
    try:
        result = run_job(
            predictor,
            spec,
            {"video1": cfg["video"]},
            out_dir,
            image_size=predictor.image_size,
            review=False,
            progress=progress,
            autocast=autocast_factory(settings, predictor),
        )
        frames = result.num_frames["video1"]
        masks = None
        if cfg.get("return_masks"):  # read back before the job's mask store is released
            masks = {obj_id: dict(per_frame) for obj_id, per_frame in result.masks["video1"].items()}
        close = getattr(result, "close", None)  # JobResult.close() deletes the job's mask spool
        if close is not None:
            close()
    except TimeBound:
        stopped = "time bound"
        frames, masks = (samples[-1][0] if samples else 0), None
    except MemoryBound as exc:
        stopped = str(exc)
        frames, masks = (samples[-1][0] if samples else 0), None
    sync(predictor)
    seconds = time.perf_counter() - started
    out = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "frames": frames,
        "processed": samples[-1][0] if samples else 0,
        "median_step": median_step([s[1] for s in samples]),
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "gpu_peak": gpu_peak(predictor),
        "curve": curve(samples),
        "rle_bytes": rle_held[0],
        "stopped": stopped,
    }
    if cfg.get("long"):
        out["samples"] = samples[:: max(1, len(samples) // 200)] + samples[-1:]
    if cfg.get("return_masks"):
        out["masks"] = masks
    return out


def child_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """Model-only: the same prompts and propagation over frames decoded and resized beforehand."""
    import torch

    from ml_backend import propagation
    from ml_backend.frames import open_frames, sam_input

    settings, predictor = build(cfg)
    baseline = rss_bytes()
    source = open_frames(cfg["video"])
    size = predictor.image_size
    pre = time.perf_counter()
    images = torch.stack([sam_input(source.read(i), size) for i in range(source.num_frames)])
    if str(predictor.device).startswith("cuda"):
        images = images.to(predictor.device)
    decode_s = time.perf_counter() - pre
    state = propagation.new_state(predictor, source, prefetch=0)
    propagation.close_state(state)
    state["images"] = images  # in memory: nothing is decoded while timing
    state["offload_video_to_cpu"] = not str(predictor.device).startswith("cuda")
    source.close()
    points = prompt_points(cfg["objects"], cfg["prompt_frame"])
    ac = autocast_factory(settings, predictor)
    frames = set()
    stamps: list[float] = []
    sync(predictor)
    started = time.perf_counter()
    cpu0 = time.process_time()
    with torch.inference_mode(), ac():
        for k, (x, y) in enumerate(points):
            predictor.add_new_points_or_box(
                state, frame_idx=cfg["prompt_frame"], obj_id=k + 1, points=[[x, y]], labels=[1]
            )
        for reverse in (False, True):
            for frame_idx, _obj_ids, _masks in predictor.propagate_in_video(state, reverse=reverse):
                frames.add(frame_idx)
                stamps.append(time.perf_counter())
    sync(predictor)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "decode_seconds": decode_s,
        "median_step": median_step(stamps),
        "frames": len(frames),
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "gpu_peak": gpu_peak(predictor),
    }


def child_parity(cfg: dict[str, Any]) -> dict[str, Any]:
    """Stock vs our job on the same JPEG folder, same seeded predictor: per-frame IoU."""
    import numpy as np

    from ml_backend.exports import rle_decode

    settings, predictor = build(cfg)
    # one predictor for both paths (it holds no per-video state)
    stock = _stock_with(predictor, settings, cfg)
    ours = child_job({**cfg, "video": cfg["jpeg"], "return_masks": True}, predictor, settings)
    ious, areas = [], []
    for frame_idx in range(cfg["frames"]):
        for obj_id, mask in stock["masks"][frame_idx].items():
            a = mask[0].astype(bool)
            rle = ours["masks"][obj_id].get(str(frame_idx))
            b = rle_decode(rle) if rle is not None else np.zeros_like(a)
            union = np.logical_or(a, b).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
            areas.append(float(a.mean()))
    nonempty = sum(a > 0 for a in areas)
    return {
        "min_iou": min(ious),
        "mean_iou": float(np.mean(ious)),
        "pairs": len(ious),
        "nonempty": int(nonempty),
        "mean_area": float(np.mean(areas)),
    }


def _stock_with(predictor: Any, settings: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    ac = autocast_factory(settings, predictor)
    points = prompt_points(cfg["objects"], cfg["prompt_frame"])
    with torch.inference_mode(), ac():
        state = predictor.init_state(str(cfg["jpeg"]))
        for k, (x, y) in enumerate(points):
            predictor.add_new_points_or_box(
                state, frame_idx=cfg["prompt_frame"], obj_id=k + 1, points=[[x, y]], labels=[1]
            )
        masks: dict[int, dict[int, Any]] = {}
        for reverse in (False, True):
            for frame_idx, obj_ids, logits in predictor.propagate_in_video(state, reverse=reverse):
                masks[frame_idx] = {obj_id: (logits[i] > 0.0).cpu().numpy() for i, obj_id in enumerate(obj_ids)}
    return {"masks": masks}


class StandInPredictor:
    """A model that costs nothing: what ``run_job`` can sustain around SAM 2 on this machine.

    Asks ``state["images"]`` for every frame as SAM 2 does (so frames are decoded, resized and
    normalised) and returns the same smooth elliptical mask logits (``N×1×H×W``, like a real
    SAM 2 mask, unlike random-weight masks) for each object; the job thresholds, encodes and
    spools them as usual.
    """

    num_maskmem = 7
    max_obj_ptrs_in_encoder = 16
    memory_temporal_stride_for_eval = 1

    def __init__(self, image_size: int) -> None:
        import torch

        self.device = torch.device("cpu")
        self.image_size = image_size
        self.requested: list[int] = []

    def _obj(self, state: dict[str, Any], obj_id: int) -> None:
        if obj_id not in state["obj_id_to_idx"]:
            idx = len(state["obj_ids"])
            state["obj_id_to_idx"][obj_id] = idx
            state["obj_idx_to_id"][idx] = obj_id
            state["obj_ids"].append(obj_id)
            state["output_dict_per_obj"][idx] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}

    def add_new_points_or_box(self, state: dict[str, Any], frame_idx: int, obj_id: int, **_: Any) -> None:
        self._obj(state, obj_id)
        state["output_dict_per_obj"][state["obj_id_to_idx"][obj_id]]["cond_frame_outputs"][frame_idx] = {}

    def propagate_in_video_preflight(self, state: dict[str, Any]) -> None:
        import torch

        h, w, n = state["video_height"], state["video_width"], len(state["obj_ids"])
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.logits = torch.stack([0.3 + 0.1 * k - (xx - 0.2 * k) ** 2 - yy**2 for k in range(n)])[:, None]

    def propagate_in_video(self, state: dict[str, Any], start_frame_idx: int = 0, reverse: bool = False, **_: Any):
        order = range(start_frame_idx, -1, -1) if reverse else range(start_frame_idx, state["num_frames"])
        for frame_idx in order:
            state["images"][frame_idx]  # noqa: B018 - SAM 2 reads the frame here
            yield frame_idx, list(state["obj_ids"]), self.logits.clone()


def child_pipeline(cfg: dict[str, Any]) -> dict[str, Any]:
    """``run_job`` around a stand-in model: frames per second the pipeline alone sustains."""
    import torch

    from ml_backend.pipeline import run_job
    from ml_backend.prompts import parse_prompts

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    predictor = StandInPredictor(cfg["image_size"])
    spec = parse_prompts(prompt_spec(cfg["objects"], cfg["prompt_frame"]))
    out_dir = Path(cfg["out_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.perf_counter()
    cpu0 = time.process_time()
    with run_job(
        predictor,
        spec,
        {"video1": cfg["video"]},
        out_dir,
        image_size=cfg["image_size"],
        review=False,
        prefetch_workers=cfg["workers"],
    ) as result:
        frames = result.num_frames["video1"]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "frames": frames,
        "fps": frames / seconds,
        "peak_rss": peak_rss_bytes(),
    }


CHILDREN = {
    "stock": child_stock,
    "job": child_job,
    "model": child_model,
    "parity": child_parity,
    "pipeline": child_pipeline,
}


def run_child(cfg: dict[str, Any]) -> None:
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    result = CHILDREN[cfg["kind"]](cfg)
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


# -- parent: orchestration --------------------------------------------------------------------
def spawn(cfg: dict[str, Any], logdir: Path, name: str, log=print) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its stderr goes to ``logdir/name.log``."""
    logdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    log_path = logdir / f"{name}.log"
    started = time.perf_counter()
    with open(log_path, "w") as err:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text()[-2000:]
        log(f"  {name}: FAILED (exit {proc.returncode}); stderr tail:\n{tail}")
        return {"error": f"exit {proc.returncode}", "log": str(log_path)}
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    (logdir / f"{name}.json").write_text(json.dumps(result, indent=1))
    if "seconds" in result:
        log(
            f"  {name}: {result['seconds']:.1f} s wall, {result.get('cpu_seconds', 0):.1f} s CPU, "
            f"median step {1000 * (result.get('median_step') or 0):.0f} ms, peak RSS {result['peak_rss'] / MiB:.0f} MiB "
            f"(child wall {time.perf_counter() - started:.0f} s, load avg {os.getloadavg()[0]:.1f})"
        )
    else:
        log(f"  {name}: {json.dumps(result)}")
    return result


def fmt_mib(b: float | None) -> str:
    return "—" if b is None else f"{b / MiB:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "—"
    return f"{a / b:.2f}"


def check(value: float | None, goal: float, *, at_least: bool = False) -> str:
    if value is None:
        return ""
    ok = value >= goal if at_least else value <= goal
    return " ✅" if ok else " ❌"


def host_line(args: argparse.Namespace) -> str:
    import torch

    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        dev = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        threads = args.threads or torch.get_num_threads()
        dev = f"cpu ({os.cpu_count()} cores, torch {threads} thread(s), {platform.processor() or platform.machine()})"
    return dev


def main_bench(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    logdir = workdir / "logs"
    sizes = args.frames
    base = {
        "threads": args.threads,
        "model_size": args.model_size,
        "image_size": args.image_size,
        "device": args.device,
        "compile": args.compile,
        "objects": args.objects,
        "seed": 0,
    }
    print(f"# bench_video: {args.model_size} @ {args.image_size} px on {host_line(args)}; N = {sizes}", flush=True)
    videos: dict[int, dict[str, Path]] = {}
    for n in sorted(set(sizes) | {args.parity_frames}, reverse=True):
        videos[n] = make_video(workdir, n, args.objects)
    res: dict[tuple[str, int], dict[str, Any]] = {}
    skipped: list[str] = []
    for n in sizes:
        prompt_frame = n // 2
        common = {**base, "prompt_frame": prompt_frame, "frames": n}
        for path in ("stock", "job", "model"):
            if path == "stock" and args.skip_stock_above and n > args.skip_stock_above:
                skipped.append(f"stock N={n} (--skip-stock-above {args.skip_stock_above})")
                continue
            cfg = {
                **common,
                "kind": path,
                "jpeg": str(videos[n]["jpeg"]),
                "video": str(videos[n]["mp4"]),
                "out_dir": str(workdir / "out" / f"{path}_{n}"),
            }
            print(f"[{time.strftime('%H:%M:%S')}] {path} N={n}", flush=True)
            res[(path, n)] = spawn(cfg, logdir, f"{path}_{n}")
            if "error" in res[(path, n)]:
                skipped.append(f"{path} N={n} failed: {res[(path, n)]['error']} (see {res[(path, n)]['log']})")
    pf = args.parity_frames
    print(f"[{time.strftime('%H:%M:%S')}] parity ({pf} frames, prompt on {pf // 2})", flush=True)
    parity = spawn(
        {
            **base,
            "kind": "parity",
            "frames": pf,
            "prompt_frame": pf // 2,
            "jpeg": str(videos[pf]["jpeg"]),
            "out_dir": str(workdir / "out" / "parity"),
        },
        logdir,
        "parity",
    )
    ceiling = pipeline_ceiling(args, videos[min(sizes)]["mp4"], logdir)
    print_table(args, sizes, res, parity, skipped)
    print_ceiling(args, ceiling)


def pipeline_ceiling(args: argparse.Namespace, video: Path, logdir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """``run_job`` with a stand-in model over the smallest video, at the bench's image size and at
    1024 px, with 1 and 2 prefetch workers and the number a GPU model gets (one per core but
    one, at most 8)."""
    from ml_backend.frames import prefetch_workers

    out: dict[tuple[int, int], dict[str, Any]] = {}
    n = min(args.frames)
    most = prefetch_workers("cuda")
    for size in sorted({args.image_size, 1024}):
        for workers in sorted({1, 2, most}):
            print(f"[{time.strftime('%H:%M:%S')}] pipeline alone, {size} px, {workers} worker(s)", flush=True)
            out[(size, workers)] = spawn(
                {
                    "kind": "pipeline",
                    "threads": args.threads,
                    "image_size": size,
                    "workers": workers,
                    "objects": args.objects,
                    "prompt_frame": n // 2,
                    "video": str(video),
                    "out_dir": str(Path(args.workdir) / "out" / f"pipeline_{size}_{workers}"),
                },
                logdir,
                f"pipeline_{size}_{workers}",
            )
    return out


def print_ceiling(args: argparse.Namespace, ceiling: dict[tuple[int, int], dict[str, Any]]) -> None:
    published = PUBLISHED_A100_FPS.get(args.model_size)
    print(
        f"#### The pipeline alone: run_job around a stand-in model that costs nothing (decode, resize, "
        f"normalise, threshold, RLE, spool), {WIDTH}×{HEIGHT}, {args.objects} object(s), {os.cpu_count()} cores"
    )
    print()
    print("| image size | prefetch workers | frames | FPS | CPU k× |")
    print("|---:|---:|---:|---:|---:|")
    for (size, workers), r in sorted(ceiling.items()):
        if "error" in r:
            print(f"| {size} | {workers} | failed: {r['error']} | | |")
            continue
        print(f"| {size} | {workers} | {r['frames']} | {r['fps']:.1f} | {r['cpu_seconds'] / r['seconds']:.1f} |")
    print()
    if published:
        print(
            f"The job keeps up with the model while the pipeline's FPS is above the model's "
            f"(published A100 {args.model_size} at 1024 px: {published} FPS)."
        )
    print(flush=True)


def get(res: dict, path: str, n: int, key: str) -> float | None:
    r = res.get((path, n))
    if not r or "error" in r:
        return None
    return r.get(key)


def print_table(args: argparse.Namespace, sizes: list[int], res: dict, parity: dict, skipped: list[str]) -> None:
    lo, hi = min(sizes), max(sizes)
    published = PUBLISHED_A100_FPS.get(args.model_size)
    cols = [f"N={n}" for n in sizes]
    print()
    print(
        f"### SAM 2.1 {args.model_size} (random weights), image size {args.image_size} px, {host_line(args)}; "
        f"synthetic {WIDTH}×{HEIGHT} video, {args.objects} object(s) prompted on frame N/2, forward + backward; "
        f"each cell a fresh process"
    )
    print()
    print("| measurement | " + " | ".join(cols) + f" | N={hi} vs N={lo} | goal |")
    print("|---|" + "---:|" * len(cols) + "---:|---|")

    def row(label: str, cells: list[str], ratio: str = "", goal: str = "") -> None:
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio} | {goal} |")

    def secs(path: str, n: int) -> str:
        s = get(res, path, n, "seconds")
        f = get(res, path, n, "frames")
        c = get(res, path, n, "cpu_seconds")
        share = f", CPU {c / s:.1f}×" if c and s else ""
        return "skipped" if s is None else f"{s:.1f} ({s / max(1, f):.3f}/frame{share})"

    for path, label in (("stock", "stock SAM 2"), ("job", "our run_job"), ("model", "model-only")):
        row(
            f"{label}: wall s (s/frame)",
            [secs(path, n) for n in sizes],
            fmt_ratio(get(res, path, hi, "seconds"), get(res, path, lo, "seconds")),
        )
    row("(CPU k× = process CPU s / wall s; 2.0× = both cores busy for us)", [""] * len(sizes))
    row(
        "stock: of which init_state (JPEG load) s",
        [
            ("—" if get(res, "stock", n, "init_seconds") is None else f"{get(res, 'stock', n, 'init_seconds'):.1f}")
            for n in sizes
        ],
    )
    rss_goal = {"stock": "grows with N (expected)", "job": f"≤ {RSS_GOAL}", "model": "frames preloaded"}
    for path, label in (("stock", "stock SAM 2"), ("job", "our run_job"), ("model", "model-only")):
        ratio_v = None
        a, b = get(res, path, hi, "peak_rss"), get(res, path, lo, "peak_rss")
        if a and b:
            ratio_v = a / b
        mark = check(ratio_v, RSS_GOAL) if path == "job" else ""
        row(
            f"{label}: peak RSS MiB",
            [fmt_mib(get(res, path, n, "peak_rss")) for n in sizes],
            ("—" if ratio_v is None else f"{ratio_v:.3f}") + mark,
            rss_goal[path],
        )
    row("(RSS after model build, before the video) MiB", [fmt_mib(get(res, "job", n, "baseline_rss")) for n in sizes])
    # RSS curve of our job at 10/50/100 % of frames
    cells = []
    for n in sizes:
        c = get(res, "job", n, "curve") or []
        cells.append(" / ".join(fmt_mib(p["rss"]) for p in c) if c else "—")
    row("our run_job: RSS at 10 / 50 / 100 % of frames MiB", cells)
    row(
        "our run_job: COCO RLE bytes produced for segments.pkl MiB",
        [fmt_mib(get(res, "job", n, "rle_bytes")) for n in sizes],
        "",
        "output size; spooled to disk, not RSS",
    )
    if args.device == "cuda" or any(get(res, "job", n, "gpu_peak") for n in sizes):
        for path, label in (("stock", "stock"), ("job", "our run_job"), ("model", "model-only")):
            row(f"{label}: peak GPU memory MiB", [fmt_mib(get(res, path, n, "gpu_peak")) for n in sizes])
    ratio_rows = (
        ("seconds", "our run_job / model-only wall time", True, f"≤ {TIME_GOAL}"),
        (
            "cpu_seconds",
            "our run_job / model-only CPU time (process user+sys; the job's includes decoding and resizing, "
            "which model-only did before its clock started)",
            False,
            "work moved to other cores, not a goal",
        ),
        ("median_step", "our run_job / model-only median per-frame time", True, f"≤ {TIME_GOAL}"),
    )
    for key, label, is_goal, goal in ratio_rows:
        ratios = []
        for n in sizes:
            j, m = get(res, "job", n, key), get(res, "model", n, key)
            ratios.append(None if not (j and m) else j / m)
        worst = max((r for r in ratios if r is not None), default=None)
        row(
            label,
            ["—" if r is None else f"{r:.2f}" for r in ratios],
            ("—" if worst is None else f"max {worst:.3f}") + (check(worst, TIME_GOAL) if is_goal else ""),
            goal,
        )
    row(
        "stock / our run_job time",
        [fmt_ratio(get(res, "stock", n, "seconds"), get(res, "job", n, "seconds")) for n in sizes],
    )
    fps = []
    for n in sizes:
        s, f = get(res, "model", n, "seconds"), get(res, "model", n, "frames")
        fps.append("—" if not s else f"{f / s:.2f}")
    row(
        "model-only FPS (this machine)",
        fps,
        "",
        f"published A100 bf16+compile: {published} FPS ({args.model_size}, 1024 px)" if published else "",
    )
    if "error" in parity:
        row(
            f"parity IoU stock vs ours ({args.parity_frames} fr, prompt {args.parity_frames // 2})",
            [f"FAILED: {parity['error']}"] + [""] * (len(sizes) - 1),
            "",
            f"≥ {IOU_GOAL}",
        )
    else:
        row(
            f"parity IoU stock vs ours ({args.parity_frames} frames × {args.objects} obj, prompt on {args.parity_frames // 2}): min / mean",
            [f"{parity['min_iou']:.4f} / {parity['mean_iou']:.4f}"] + [""] * (len(sizes) - 1),
            f"{parity['nonempty']}/{parity['pairs']} masks non-empty, mean area {parity['mean_area']:.3f}",
            f"≥ {IOU_GOAL}" + check(parity["min_iou"], IOU_GOAL, at_least=True),
        )
    if skipped:
        row("skipped / failed", ["; ".join(skipped)] + [""] * (len(sizes) - 1))
    print(flush=True)


def main_long(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    frames = args.long_frames
    print(
        f"# bench_video --long: {frames} frames of {WIDTH}×{HEIGHT} at 30 fps, time bound {args.time_bound} s, "
        f"{args.model_size} @ {args.image_size} px on {host_line(args)}",
        flush=True,
    )
    video = make_video(workdir, frames, 1, jpeg=False)["mp4"]
    prompt_frame = frames // 2 if args.long_prompt_frame is None else args.long_prompt_frame
    cfg = {
        "kind": "job",
        "threads": args.threads,
        "model_size": args.model_size,
        "image_size": args.image_size,
        "device": args.device,
        "compile": args.compile,
        "objects": 1,
        "seed": 0,
        "frames": frames,
        "prompt_frame": prompt_frame,
        "video": str(video),
        "out_dir": str(workdir / "out" / "long"),
        "time_bound": args.time_bound,
        "rss_limit": LONG_RSS_LIMIT,
        "long": True,
    }
    print(f"[{time.strftime('%H:%M:%S')}] run_job on {video.name}, prompt on frame {prompt_frame}", flush=True)
    r = spawn(cfg, workdir / "logs", "long")
    print()
    print(
        f"### Long video: {frames} frames ({frames / 30 / 60:.1f} min at 30 fps) {WIDTH}×{HEIGHT} mp4v, "
        f"SAM 2.1 {args.model_size} (random weights) @ {args.image_size} px, {host_line(args)}, "
        f"our run_job, 1 object prompted on frame {prompt_frame}, stopped after {args.time_bound} s"
    )
    print()
    print("| measurement | value | goal |")
    print("|---|---:|---|")
    if "error" in r:
        print(f"| run | FAILED: {r['error']} (log {r['log']}) | |")
        return
    done = r["processed"]
    print(
        f"| frames processed (of {frames}) | {done} ({done / max(r['seconds'], 1e-9):.2f} frames/s, {r['seconds']:.0f} s) | |"
    )
    print(f"| stopped by | {r['stopped'] or 'end of video'} | |")
    print(f"| RSS after model build MiB | {fmt_mib(r['baseline_rss'])} | |")
    for p in r["curve"]:
        print(
            f"| RSS at {p['fraction'] * 100:.0f} % of processed frames (frame #{p['frames']}, {p['seconds']:.0f} s) MiB "
            f"(COCO RLE bytes produced so far) | {fmt_mib(p['rss'])} ({fmt_mib(p.get('rle'))}) | flat |"
        )
    samples = r.get("samples") or []
    if len(samples) >= 4:
        half = samples[len(samples) // 2 :]
        spread = max(s[2] for s in half) - min(s[2] for s in half)
        print(f"| RSS spread over the second half of the run MiB | {spread / MiB:.0f} | ≈ 0 |")
        first = curve(samples, (0.1,))[0]["rss"]
        growth = (samples[-1][2] - first) / MiB
        per_1000 = growth / max(1, (samples[-1][0] - curve(samples, (0.1,))[0]["frames"])) * 1000
        print(f"| RSS growth from 10 % to 100 % MiB (per 1000 frames) | {growth:.0f} ({per_1000:.1f}) | ≈ 0 |")
        if len(samples[-1]) > 3:
            c10 = curve(samples, (0.1,))[0]
            rle_growth = (samples[-1][3] - (c10["rle"] or 0)) / MiB
            print(f"| COCO RLE bytes produced from 10 % to 100 % (output, for comparison) MiB | {rle_growth:.0f} | |")
    peak = r["peak_rss"]
    print(f"| peak RSS MiB | {fmt_mib(peak)} | ≤ 8,192{check(peak, LONG_RSS_LIMIT)} |")
    if r.get("gpu_peak"):
        print(f"| peak GPU memory MiB | {fmt_mib(r['gpu_peak'])} | |")
    if done and r["seconds"]:
        eta = frames / (done / r["seconds"])
        print(f"| projected time for all {frames} frames at this rate | {eta / 3600:.1f} h | |")
    print(flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Peak RSS and speed of SAM 2 video propagation: stock init_state path vs our run_job vs model-only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N = 10, 20; 128 px; parity on 20 frames; --long on 300 frames for 30 s",
    )
    p.add_argument(
        "--long",
        action="store_true",
        help="long-video mode: 18,000 1080p frames, run_job under --time-bound, RSS curve",
    )
    p.add_argument("--time-bound", type=float, default=600.0, help="seconds of propagation in --long mode")
    p.add_argument("--long-frames", type=int, default=18000, help="frames of the --long video (10 min at 30 fps)")
    p.add_argument(
        "--long-prompt-frame", type=int, default=None, help="prompted frame in --long mode (default: the middle one)"
    )
    p.add_argument(
        "--frames",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="comma-separated N (default 50,200,1000)",
    )
    p.add_argument("--objects", type=int, default=2, choices=(1, 2, 3), help="objects prompted")
    p.add_argument("--parity-frames", type=int, default=None, help="frames of the parity video (default 60)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="SAM 2 input size (default 256 on CPU, 1024 on CUDA; 128 with --quick)",
    )
    p.add_argument("--model-size", default="tiny", choices=sorted(PUBLISHED_A100_FPS), help="SAM 2.1 model size")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="torch device")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in each measurement (default on CPU: 1, which leaves a core to the decode "
        "and export threads and keeps timings stable on a shared machine; 0 = torch's default)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the predictor (vos_optimized; CUDA)")
    p.add_argument(
        "--skip-stock-above", type=int, default=0, help="skip the stock path for N above this (0: never skip)"
    )
    p.add_argument("--workdir", default="/tmp/bench_video", help="cache for videos, exports and per-child logs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    cuda = args.device == "cuda"
    if args.device == "auto":
        import torch

        cuda = torch.cuda.is_available()
    if args.threads is None:
        args.threads = 0 if cuda else 1
    if args.image_size is None:
        args.image_size = 128 if args.quick else (1024 if cuda else 256)
    if args.frames is None:
        args.frames = [10, 20] if args.quick else [50, 200, 1000]
    if args.parity_frames is None:
        args.parity_frames = 20 if args.quick else 60
    if args.quick and args.long:
        args.long_frames = min(args.long_frames, 300)
        args.time_bound = min(args.time_bound, 30.0)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return
    if args.long:
        main_long(args)
    else:
        main_bench(args)


if __name__ == "__main__":
    main()
