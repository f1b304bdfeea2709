"""Model-only: SAM 2 propagation alone, the floor our job's time is compared with.

The same prompts and ``propagate_in_video`` forward + reverse over frames decoded and resized
into memory beforehand (not timed); masks are left as SAM 2 returns them (or, with
``cfg["masks"] == "realistic"``, as :mod:`bench.masks` replaces them, as in the job run). ``job / model-only``
is then the overhead of decoding, exporting and pruning.
"""

from __future__ import annotations

import time
from typing import Any

from bench.masks import with_masks
from bench.runner import autocast_factory, build, gpu_peak, median_step, ours, peak_rss_bytes, rss_bytes, sync
from bench.video import prompt_points


def child_model(cfg: dict[str, Any], predictor: Any = None, settings: Any = None) -> dict[str, Any]:
    """Model-only: the same prompts and propagation over frames decoded and resized beforehand
    (with ``predictor``/``settings`` given, that model instead of a fresh one)."""
    import torch

    propagation = ours("video.propagation")
    open_frames, sam_input = ours("video.frames").open_frames, ours("video.frames").sam_input

    if predictor is None:
        settings, predictor = build(cfg)
    predictor = with_masks(predictor, cfg.get("masks", "noise"), cfg["objects"])
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
    cpu_stamps: list[float] = []  # process CPU seconds (user + sys, all threads) at the same moments
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
                cpu_stamps.append(time.process_time())
    sync(predictor)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "decode_seconds": decode_s,
        "median_step": median_step(stamps),
        "median_cpu_step": median_step(cpu_stamps),
        "frames": len(frames),
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "gpu_peak": gpu_peak(predictor),
    }
