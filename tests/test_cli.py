"""``python -m ml_backend propagate`` without Label Studio, real SAM 2 (random weights, 256 px)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from ml_backend.video.synthetic import moving_shapes

ROOT = Path(__file__).resolve().parents[1]


def test_cli_propagate_scenediff(tmp_path):
    video = moving_shapes(num_frames=4, height=48, width=64)
    video.write(tmp_path / "v.mkv")
    x, y = video.shapes["disc"].center(1 / 3)
    prompts = {"format": "scenediff", "scene_type": "test", "videos": {"video1": "v.mkv"},
               "objects": [{"id": 7, "name": "disc", "prompts": [{"frame": 1, "points": [[x, y]], "labels": [1]}]}]}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    env = {**os.environ, "SAM2_CHECKPOINT": "random", "SAM2_IMAGE_SIZE": "256", "SAM2_DEVICE": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "ml_backend", "propagate", "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "out"), "--no-review"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    seg = pickle.loads((tmp_path / "out" / "segments.pkl").read_bytes())
    assert list(seg["video1_objects"]) == [7] and seg["objects"][0]["label"] == "disc_1"
    assert "video1" in proc.stderr  # tqdm progress bar


def test_cli_reports_bad_prompts(tmp_path):
    (tmp_path / "p.json").write_text("{not json")
    env = {**os.environ, "SAM2_CHECKPOINT": "random", "SAM2_IMAGE_SIZE": "256"}
    proc = subprocess.run(
        [sys.executable, "-m", "ml_backend", "propagate", "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr
