"""``scripts/bench_gpu.py --device cpu --quick``: every stage runs on the CPU and the table has
every row a GPU run prints (the real SAM 2 code with random weights at 128 px, a real gunicorn
``gthread`` server for the clicks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_gpu_quick_on_the_cpu_prints_the_whole_table(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_gpu.py"),
            "--device",
            "cpu",
            "--quick",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=str(ROOT),
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| stage | measurement | value |" in out
    assert "failed" not in out and "stopped" not in out, out
    for objects in (1, 3):
        assert f"| {objects} obj: model-only FPS" in out
        for masks in ("realistic", "noise"):
            assert f"| {objects} obj: job FPS, {masks} masks" in out
    for row in (
        "| memory | tiny, job, 6 frames:",
        "| memory | tiny, job, 10 frames:",
        "| parity | IoU ours vs stock",
        "| interactive | first click: p50 / p95 |",
        "| interactive | repeat click: p50 / p95 |",
        "| interactive | prefetched first click: p50 / p95 |",
        "| interactive | 2 concurrent clients x 1 clicks: p50 / p95 |",
        "| interactive | Server-Timing",
        "| total | wall time of this run |",
    ):
        assert row in out, (row, out)
    parity = next(line for line in out.splitlines() if line.startswith("| parity |"))
    assert parity.split("|")[3].strip().startswith("1.0000 /"), parity  # same masks as SAM 2's stock path
