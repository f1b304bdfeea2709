"""`make run` says a missing SAM 2 checkpoint before it installs anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def env(**changes: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("SAM2_")}
    out.update(changes)
    return out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_without_a_checkpoint_stops_before_installing(tmp_path):
    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["make", "-s", "run", f"VENV={venv}", f"PY={sys.executable}"],
        cwd=ROOT,
        env=env(SAM2_CHECKPOINT=str(tmp_path / "missing.pt")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "checkpoint not found" in proc.stderr and "SAM2_CHECKPOINT=random" in proc.stderr
    assert "download_checkpoints.py" in proc.stderr
    assert not venv.exists(), "make run began installing before it checked the checkpoint"
    assert "apt-get" not in proc.stdout + proc.stderr


def test_the_check_passes_for_random_weights_and_an_existing_file(tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "check_checkpoint.py")]
    random = subprocess.run(script, env=env(SAM2_CHECKPOINT="random"), capture_output=True, text=True, timeout=60)
    assert random.returncode == 0 and "random weights" in random.stdout
    (tmp_path / "sam2.1_hiera_small.pt").write_bytes(b"x")
    found = subprocess.run(
        script, env=env(SAM2_CHECKPOINT_DIR=str(tmp_path), SAM2_MODEL_SIZE="small"), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert found.returncode == 0 and "sam2.1_hiera_small.pt" in found.stdout
