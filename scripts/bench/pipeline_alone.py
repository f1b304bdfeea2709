"""The pipeline alone: what ``run_job`` sustains around a model that costs nothing, in FPS.

``run_job`` around :class:`StandInPredictor` over the smallest video (decode, resize, normalise,
threshold, RLE, spool; no SAM 2), at the bench's image size and at 1024 px, with 1 and 2
prefetch workers and the number a GPU model gets (one per core but one, at most 8). The job
keeps up with a model while this FPS is above the model's. ``scripts/bench_workers.py`` builds
its sleeping model on :class:`StandInPredictor` too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.report import PUBLISHED_A100_FPS
from bench.runner import peak_rss_bytes, spawn
from bench.video import HEIGHT, WIDTH, prompt_spec


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
