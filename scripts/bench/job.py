"""Our job path: ``ml_backend.video.pipeline.run_job`` on the MP4, measured like the stock path.

``run_job`` with a SceneDiff prompt spec (objects prompted on the middle frame, so it propagates
forward and backward), ``review=False``, with the quality signals (``quality.json``) as a job has
them unless ``cfg["quality"]`` is False (``--quality`` compares both). Its progress callback samples time, RSS and the bytes of
COCO RLE produced so far at every frame, and stops the job at an optional time bound or RSS limit
(the ``--long`` run). The parity check calls it in-process with the stock path's predictor.
``cfg["masks"]``: ``noise`` (SAM 2's own, the default) or ``realistic`` (:mod:`bench.masks`). With
code that records it, the per-frame timeline (model step vs our work) is summarised in the result.
"""

from __future__ import annotations

import inspect
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.masks import with_masks
from bench.pipeline_alone import summarise_timeline
from bench.runner import autocast_factory, build, curve, gpu_peak, median_step, ours, peak_rss_bytes, rss_bytes, sync
from bench.video import MiB, prompt_spec

#: With ``--all-exports``: the formats written beside the job's own SceneDiff pair and ``review``.
ALL_EXPORTS = ("davis", "ytvis", "mots")


def child_job(cfg: dict[str, Any], predictor: Any = None, settings: Any = None) -> dict[str, Any]:
    """Our job path: run_job on the video with a SceneDiff prompt spec."""
    pipeline = ours("video.pipeline")
    run_job = pipeline.run_job
    parse_prompts = ours("video.prompts").parse_prompts

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

    def counting_optional(encode: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
            rle = encode(*args, **kwargs)
            if rle is not None:
                rle_held[0] += len(rle["counts"])
            return rle

        return wrapper

    for encoder in ("rle_encode", "rle_compress", "mask_rle"):  # whichever the measured code has
        if hasattr(pipeline, encoder):
            setattr(pipeline, encoder, counting_optional(getattr(pipeline, encoder)))
    if predictor is None:
        settings, predictor = build(cfg)
    predictor = with_masks(predictor, cfg.get("masks", "noise"), cfg["objects"])
    baseline = rss_bytes()
    spec = parse_prompts(prompt_spec(cfg["objects"], cfg["prompt_frame"]))
    samples: list[tuple[int, float, int, int]] = []
    cpu_stamps: list[float] = []  # process CPU seconds (user + sys, all threads) at each frame
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
        cpu_stamps.append(time.process_time())
        if rss_limit and rss > rss_limit:
            raise MemoryBound(f"RSS {rss / MiB:.0f} MiB above the limit after {done} frames")
        if time_bound and now > time_bound:
            raise TimeBound

    stopped = None
    scores = None
    timeline: list[dict[str, Any]] = []
    extra = {"timeline": timeline} if "timeline" in inspect.signature(run_job).parameters else {}
    sync(predictor)
    try:
        result = run_job(
            predictor,
            spec,
            {"video1": cfg["video"]},
            out_dir,
            image_size=predictor.image_size,
            review=bool(cfg.get("all_exports")),
            quality=bool(cfg.get("quality", True)),
            exports=ALL_EXPORTS if cfg.get("all_exports") else (),
            progress=progress,
            autocast=autocast_factory(settings, predictor),
            **extra,
        )
        frames = result.num_frames["video1"]
        masks = None
        if cfg.get("return_masks"):  # read back before the job's mask store is released
            masks = {obj_id: dict(per_frame) for obj_id, per_frame in result.masks["video1"].items()}
            quality_json = out_dir / "review" / "quality.json"
            if quality_json.is_file():  # per-object scores by frame, to compare two runs
                scores = {
                    obj_id: track["scores"]
                    for obj_id, track in json.loads(quality_json.read_text())["videos"]["video1"]["objects"].items()
                }
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
        "median_cpu_step": median_step(cpu_stamps),
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "gpu_peak": gpu_peak(predictor),
        "curve": curve(samples),
        "rle_bytes": rle_held[0],
        "stopped": stopped,
        "timeline": summarise_timeline(timeline),
    }
    if cfg.get("long"):
        out["samples"] = samples[:: max(1, len(samples) // 200)] + samples[-1:]
    if cfg.get("return_masks"):
        out["masks"] = masks
        out["scores"] = scores
    return out
