"""Parity: do the stock path and ``run_job`` give the same masks?

On one JPEG folder with one predictor built with a fixed seed, the stock path's masks and those
of ``run_job`` on the same folder are compared frame by frame: IoU per frame and object (both
empty = 1), with the share of non-empty masks and their mean area.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.job import child_job
from bench.runner import autocast_factory, build, spawn
from bench.video import prompt_points


def child_parity(cfg: dict[str, Any]) -> dict[str, Any]:
    """Stock vs our job on the same JPEG folder, same seeded predictor: per-frame IoU."""
    import numpy as np

    from ml_backend.exporters.masks import rle_decode

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


def run_parity(args: argparse.Namespace, base: dict[str, Any], jpeg: Path, workdir: Path) -> dict[str, Any]:
    """Parent side: the parity check on ``args.parity_frames`` frames in a fresh process."""
    pf = args.parity_frames
    print(f"[{time.strftime('%H:%M:%S')}] parity ({pf} frames, prompt on {pf // 2})", flush=True)
    return spawn(
        {
            **base,
            "kind": "parity",
            "frames": pf,
            "prompt_frame": pf // 2,
            "jpeg": str(jpeg),
            "out_dir": str(workdir / "out" / "parity"),
        },
        workdir / "logs",
        "parity",
    )
