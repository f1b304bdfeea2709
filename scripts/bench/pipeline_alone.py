"""The pipeline alone: what ``run_job`` sustains around a model that costs nothing, in FPS.

``run_job`` around :class:`StandInPredictor` over the smallest video (decode, resize, normalise,
threshold, RLE, spool; no SAM 2), at the bench's image size and at 1024 px, with 1 and 2
prefetch workers and the number a GPU model gets (one per core but one, at most 8). The job
keeps up with a model while this FPS is above the model's. ``scripts/bench_workers.py`` builds
its sleeping model on :class:`StandInPredictor` too.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.report import PUBLISHED_A100_FPS
from bench.runner import ours, peak_rss_bytes, spawn
from bench.video import HEIGHT, WIDTH, prompt_spec


class StandInPredictor:
    """A model that costs nothing: what ``run_job`` can sustain around SAM 2 on this machine.

    Asks ``state["images"]`` for every frame as SAM 2 does (so frames are decoded, resized and
    normalised) and yields ``N×1×H×W`` mask logits for its objects: with ``masks="realistic"``
    (the default) the synthetic video's own moving shapes (:class:`bench.masks.ShapeLogits`,
    as the realistic mode of the model measurements), with ``masks="noise"`` blobby noise like
    SAM 2's random-weight masks (the worst case). The job thresholds, encodes and spools them
    as usual.
    """

    num_maskmem = 7
    max_obj_ptrs_in_encoder = 16
    memory_temporal_stride_for_eval = 1

    def __init__(self, image_size: int, masks: str = "realistic") -> None:
        import torch

        self.device = torch.device("cpu")
        self.image_size = image_size
        self.masks = masks
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
        from bench.masks import NoiseLogits, ShapeLogits

        h, w, n = state["video_height"], state["video_width"], len(state["obj_ids"])
        kind = NoiseLogits if self.masks == "noise" else ShapeLogits
        self.logits = kind(n, self.device, height=h, width=w)

    def propagate_in_video(self, state: dict[str, Any], start_frame_idx: int = 0, reverse: bool = False, **_: Any):
        order = range(start_frame_idx, -1, -1) if reverse else range(start_frame_idx, state["num_frames"])
        for frame_idx in order:
            state["images"][frame_idx]  # noqa: B018 - SAM 2 reads the frame here
            yield frame_idx, list(state["obj_ids"]), self.logits(frame_idx)


def child_pipeline(cfg: dict[str, Any]) -> dict[str, Any]:
    """``run_job`` around a stand-in model: frames per second the pipeline alone sustains, and
    process CPU milliseconds per frame (every thread: decode, resize, normalise, threshold, RLE,
    quality signals, spool)."""
    import torch

    run_job = ours("video.pipeline").run_job
    parse_prompts = ours("video.prompts").parse_prompts

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    predictor = StandInPredictor(cfg["image_size"], masks=cfg.get("masks", "realistic"))
    spec = parse_prompts(prompt_spec(cfg["objects"], cfg["prompt_frame"]))
    out_dir = Path(cfg["out_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)
    extra: dict[str, Any] = {}
    timeline: list[dict[str, Any]] = []
    if "timeline" in inspect.signature(run_job).parameters:  # absent in older code measured with --base
        extra["timeline"] = timeline
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
        **extra,
    ) as result:
        frames = result.num_frames["video1"]
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cpu_ms_per_frame": 1000 * cpu / frames,
        "frames": frames,
        "fps": frames / seconds,
        "peak_rss": peak_rss_bytes(),
        "timeline": summarise_timeline(timeline),
    }


def summarise_timeline(timeline: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians (ms) of the per-frame timeline ``run_job(timeline=...)`` records: ``model`` (the
    model's thread waiting for the model's next frame), ``ours`` (the model's thread on our side
    after it), ``export`` / ``export_cpu`` (the export thread, wall / CPU); ``ours_share``: our
    side's share of the model's thread's time over the whole run."""
    if not timeline:
        return None

    def med(key: str) -> float | None:
        values = sorted(t[key] for t in timeline if t.get(key) is not None)
        return 1000 * values[len(values) // 2] if values else None

    model = sum(t.get("model_s") or 0 for t in timeline)
    ours = sum(t.get("ours_s") or 0 for t in timeline)
    return {
        "frames": len(timeline),
        "model_ms": med("model_s"),
        "ours_ms": med("ours_s"),
        "export_ms": med("export_s"),
        "export_cpu_ms": med("export_cpu_s"),
        "ours_share": ours / (model + ours) if model + ours else None,
    }


def child_stages(cfg: dict[str, Any]) -> dict[str, Any]:
    """CPU milliseconds (this thread's CPU clock, median of ``cfg["repeats"]``) of each step our
    side takes for one 1080p frame and one object's mask, with the code under measurement:
    decode (+ RGB), resize, normalise, and the mask's post-processing (RLE + quality signals +
    spool record), realistic and noise."""
    import pickle

    import numpy as np
    import torch

    from bench.masks import NoiseLogits, ShapeLogits

    exports = ours("exporters.masks")
    frames = ours("video.frames")
    Track = ours("video.quality").Track

    torch.set_num_threads(1)
    repeats = cfg.get("repeats", 9)
    source = frames.open_frames(cfg["video"], cache_frames=2)
    size = cfg["image_size"]

    def cost(step: Any) -> float:
        times = []
        for i in range(repeats):
            start = time.thread_time()
            step(i)
            times.append(time.thread_time() - start)
        return 1000 * sorted(times)[len(times) // 2]

    out: dict[str, Any] = {}
    out["decode_ms"] = cost(lambda i: source.read(min(i + 1, source.num_frames - 1)))
    frame = source.read(0)
    out["resize_ms"] = cost(lambda i: frames.resize_for_sam(frame, size))
    resized = frames.resize_for_sam(frame, size)
    out["normalise_ms"] = cost(lambda i: frames.normalise(resized))
    source.close()
    encode = getattr(exports, "mask_rle", None)

    def post(mask: Any, track: Any, i: int) -> None:
        if encode is not None:
            rle = encode(mask)
        else:
            rle = exports.rle_encode(mask) if mask.any() else None
        if rle is not None:
            pickle.dumps(rle, protocol=4)
        track.record(i, mask)

    for mode, kind in (("realistic", ShapeLogits), ("noise", NoiseLogits)):
        logits = kind(1)
        masks = [(logits(i)[0, 0] > 0).numpy().copy() for i in range(4)]
        track = Track(repeats)
        out[f"mask_{mode}_ms"] = cost(lambda i, m=masks, t=track: post(m[i % 4], t, i))
        out["threshold_ms"] = cost(lambda i, lg=logits: lg(i % 4)[:, 0] > 0)
        out[f"rle_{mode}_bytes"] = int(np.mean([len((exports.rle_encode(m))["counts"]) for m in masks]))
    return out


def pipeline_ceiling(args: argparse.Namespace, video: Path, logdir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """``run_job`` with a stand-in model over the smallest video, at the bench's image size and at
    1024 px, with 1 and 2 prefetch workers and the number a GPU model gets (one per core but
    one, at most 8)."""
    from ml_backend.video.frames import prefetch_workers

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
