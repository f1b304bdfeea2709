"""Start-up speed hints: the backend times an encoder pass, the local stack picks a small image
size for a smoke run on a CPU (the worker's own measurement is tested in test_worker)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ml_backend.server.app import create_app
from ml_backend.server.interactive import InteractivePredictor

from .fakes import DiscSegmenter

ROOT = Path(__file__).resolve().parents[1]


def test_the_backend_says_what_a_click_costs_once_warm(small_settings, caplog):
    predictor = InteractivePredictor(
        small_settings, fetcher=None, segmenter_factory=lambda: DiscSegmenter(encode_seconds=0.05)
    )
    with caplog.at_level(logging.INFO, logger="ml_backend.video.speed"):
        create_app(small_settings, predictor=predictor, warmup=True)
        deadline = time.monotonic() + 10
        while "first click on a new frame takes about" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "first click on a new frame takes about" in caplog.text and predictor.ready


def test_a_smoke_run_on_a_cpu_uses_a_small_image_size(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import stack
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    smoke = stack.Stack._smoke_run_on_cpu
    assert smoke({"SAM2_CHECKPOINT": "random", "SAM2_DEVICE": "cpu"})
    assert not smoke({"SAM2_CHECKPOINT": "random", "SAM2_DEVICE": "cpu", "SAM2_IMAGE_SIZE": "1024"})  # chosen
    assert not smoke({"SAM2_CHECKPOINT": "checkpoints/sam2.1_hiera_tiny.pt", "SAM2_DEVICE": "cpu"})  # real weights
    assert not smoke({"SAM2_CHECKPOINT": "random", "SAM2_DEVICE": "cuda"})
    config = stack.StackConfig(state_dir=tmp_path, checkpoint="random", device="cpu")
    assert stack.Stack(config, say=lambda _: None).backend_env()["SAM2_IMAGE_SIZE"] == str(stack.SMOKE_IMAGE_SIZE)
