"""How fast this machine is, measured at start so people know what to expect.

The worker times a few propagated frames of a small synthetic video through the real job path
(:func:`seconds_per_frame`); the backend times one image-encoder pass (:func:`seconds_per_encode`).
Both log the result; the worker also leaves it in Redis (:data:`SPEED_KEY`), where
``scripts/stack.py`` reads it to estimate how long the demo job will take. On a CPU at 1024 px a
frame takes seconds: the logs say so before anyone waits for it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.models import autocast, resolve_device
from ml_backend.video.options import JobOptions
from ml_backend.video.pipeline import run_job
from ml_backend.video.prompts import parse_prompts
from ml_backend.video.synthetic import moving_shapes

log = logging.getLogger(__name__)

#: Redis hash the workers write their measurement to (``seconds_per_frame``, ``device``,
#: ``image_size``, ``model``, ``measured_at``).
SPEED_KEY = "sam2:speed"


def seconds_per_frame(predictor: Any, settings: Any, frames: int = 5) -> float:
    """Median seconds per propagated frame of one object on a small synthetic video."""

    video = moving_shapes(num_frames=frames, height=96, width=128)
    x, y = video.shapes["disc"].center(0.0)
    spec = parse_prompts({"objects": [{"id": 1, "prompts": [{"frame": 0, "points": [[x, y]], "labels": [1]}]}]})
    stamps: list[float] = []
    device = resolve_device(settings.device)
    with tempfile.TemporaryDirectory(prefix="sam2-speed-") as tmp:
        path = video.write(Path(tmp) / "speed.mkv")
        with run_job(
            predictor,
            spec,
            {"video1": path},
            Path(tmp) / "out",
            JobOptions(settings.image_size, review=False, autocast=lambda: autocast(settings, device)),
            progress=lambda *_: stamps.append(time.perf_counter()),
        ):
            pass
    deltas = np.diff(stamps)
    return float(np.median(deltas)) if len(deltas) else float("nan")


def seconds_per_encode(segmenter: Any) -> float:
    """Seconds of one image-encoder pass on a 640×480 synthetic frame (cached under a key no
    task uses, so it does not count against anyone's frames)."""

    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    started = time.perf_counter()
    segmenter.embed(("sam2-speed-probe", time.time_ns()), image)
    return time.perf_counter() - started


def describe(settings: Any) -> str:
    return f"SAM 2.1 {settings.model_size} at {settings.image_size} px on {settings.device}"


def measure_worker(predictor: Any, settings: Any, connection: Any = None) -> float:
    """Time propagation, log it, and leave it in Redis for ``stack.py``; returns seconds/frame."""
    seconds = seconds_per_frame(predictor, settings)
    log.info("%s: about %.2f s per propagated frame per object on this machine", describe(settings), seconds)
    if connection is not None:
        try:
            connection.hset(
                SPEED_KEY,
                mapping={
                    "seconds_per_frame": f"{seconds:.4f}",
                    "image_size": settings.image_size,
                    "model": settings.model_size,
                    "device": settings.device,
                    "measured_at": f"{time.time():.0f}",
                },
            )
        except Exception:  # only a hint for people; never a reason to stop
            log.debug("could not store the speed measurement", exc_info=True)
    return seconds


def log_backend_speed(predictor: Any, settings: Any) -> None:
    """Build the model, time one encoder pass and log what a first and a repeat click cost."""
    seconds = seconds_per_encode(predictor.segmenter)
    log.info(
        "%s: a first click on a new frame takes about %.1f s (one encoder pass; frames of an opened "
        "task are embedded ahead of the clicks), a repeat click a fraction of that",
        describe(settings),
        seconds,
    )
