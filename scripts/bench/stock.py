"""Stock SAM 2: what its users do, measured for wall time, CPU time and peak RSS.

``predictor.init_state(jpeg_folder)`` + ``add_new_points_or_box`` per object +
``propagate_in_video`` forward and reverse, every mask collected as a numpy bool array in a dict
(what SAM 2's example notebook does). RSS is sampled after every frame.
"""

from __future__ import annotations

import time
from typing import Any

from bench.runner import autocast_factory, build, curve, gpu_peak, median_step, peak_rss_bytes, rss_bytes, sync
from bench.video import prompt_points


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
