"""The measurements of ``scripts/bench_gpu.py``, each run in a fresh child process.

- :func:`child_fps`: one model built once; for 1 and 3 objects, model-only (SAM 2's own masks)
  and our job with realistic and with noise masks (:mod:`bench.masks`): FPS and median
  per-frame time of each;
- :func:`child_memory`: our job (realistic masks, 1 object) on a short and a long video: peak GPU
  memory (``torch.cuda.max_memory_allocated``, reset between) or, on the CPU, peak RSS.
"""

from __future__ import annotations

import time
from typing import Any

from bench.job import child_job
from bench.model_only import child_model
from bench.runner import build, peak_rss_bytes


def child_fps(cfg: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    settings, predictor = build(cfg)  # with --compile, this includes compiling (warm-up runs it)
    out: dict[str, Any] = {"build_seconds": time.perf_counter() - started, "runs": {}}
    for objects in cfg["objects_list"]:
        common = {**cfg, "objects": objects, "prompt_frame": cfg["frames"] // 2}
        runs = {
            "model": child_model({**common, "masks": "noise"}, predictor, settings),
            "job_realistic": child_job({**common, "masks": "realistic"}, predictor, settings),
            "job_noise": child_job({**common, "masks": "noise"}, predictor, settings),
        }
        out["runs"][str(objects)] = {
            name: {k: r.get(k) for k in ("seconds", "frames", "median_step", "timeline", "gpu_peak")}
            for name, r in runs.items()
        }
    return out


def child_memory(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    settings, predictor = build(cfg)
    cuda = str(predictor.device).startswith("cuda")
    out = {}
    for n, video in zip(cfg["lengths"], cfg["videos"], strict=True):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        r = child_job(
            {**cfg, "objects": 1, "masks": "realistic", "prompt_frame": n // 2, "video": video},
            predictor,
            settings,
        )
        out[str(n)] = {
            "gpu_peak": r.get("gpu_peak"),
            "peak_rss": peak_rss_bytes(),
            "seconds": r["seconds"],
            "frames": r["frames"],
        }
    return out
