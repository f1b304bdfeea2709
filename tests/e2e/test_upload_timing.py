"""How long a 1-minute 1080p video takes from upload to annotatable tasks, in real Label Studio
1.23.2 with our backend and worker (``make test-slow`` style: ``-m slow``; about 10 minutes on a
2-core CPU). The upload is the Import dialog's own request (``POST /api/projects/<id>/import``
with the file); the time runs from its answer to the last segment task in the green-screen
project, and is printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.slow

SECONDS, FPS, W, H = 60, 30, 1920, 1080


def write_1080p(path: Path) -> Path:
    """A 1-minute 1080p mp4 of moving shapes on a textured background, written frame by frame."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(SECONDS * FPS):
        frame = background.copy()
        t = i / (SECONDS * FPS)
        cv2.circle(frame, (int(200 + 1500 * t), 540), 120, (40, 40, 220), -1)
        cv2.rectangle(frame, (900, int(100 + 700 * t)), (1200, int(300 + 700 * t)), (220, 120, 40), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.timeout(3000)
def test_a_minute_of_1080p_from_upload_to_annotatable(stack: Any, tmp_path: Path) -> None:
    import httpx

    target, uploads = stack.demo["greenscreen"]["project"], stack.demo["greenscreen"]["uploads"]
    video = write_1080p(tmp_path / f"minute_1080p_{int(time.time())}.mp4")
    before = {int(t.id) for t in stack.client().tasks.list(project=target, fields="task_only")}
    with video.open("rb") as f:
        answer = httpx.post(f"{stack.ls_url}/api/projects/{uploads}/import", headers={"Authorization": f"Token {stack.token}"},
                            files={"file": (video.name, f, "video/mp4")}, timeout=600)  # fmt: skip
    assert answer.status_code == 201, answer.text
    uploaded = time.monotonic()
    segments = round(SECONDS / float(stack.backend_env().get("UPLOAD_SEGMENT_SECONDS", "10")))

    def made() -> list[Any] | None:
        stack.check()
        tasks = [t for t in stack.client().tasks.list(project=target, fields="task_only") if int(t.id) not in before]
        return tasks if len(tasks) >= segments else None

    tasks = wait_for(made, 2700, 5, f"{segments} segment tasks of the 1-minute 1080p upload")
    seconds = time.monotonic() - uploaded
    size = video.stat().st_size / 1e6
    print(f"[uploads] 1-minute 1080p30 mp4 ({size:.0f} MB): upload answered → {len(tasks)} segment tasks "
          f"annotatable in {seconds:.0f} s ({seconds / 60:.1f} min) on this machine", flush=True)  # fmt: skip
    assert all(t.data.get("frames") for t in tasks)
