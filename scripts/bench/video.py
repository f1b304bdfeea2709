"""The input of every measurement: a synthetic 1920×1080 video and its prompts.

A textured background with moving shapes drawn with OpenCV, written once as an ``mp4v`` MP4 and
as a folder of JPEG frames (SAM 2's stock ``init_state`` reads only a JPEG folder without
``decord``), cached in the bench's workdir. Prompts are one positive point at each shape's centre.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 1920, 1080
MiB = 1024 * 1024


def shape_tracks(objects: int) -> list[dict[str, Any]]:
    """Moving shapes: kind, BGR colour, radius, start centre, velocity (px/frame); bounce at edges."""
    tracks = [
        {"name": "disc", "kind": "disc", "color": (40, 60, 220), "r": 110, "p0": (500.0, 420.0), "v": (2.3, 1.1)},
        {"name": "square", "kind": "rect", "color": (220, 70, 40), "r": 100, "p0": (1400.0, 700.0), "v": (-1.7, -0.9)},
        {"name": "box", "kind": "rect", "color": (60, 200, 60), "r": 90, "p0": (960.0, 240.0), "v": (1.2, 0.6)},
        # more objects (the objects table, up to 8): smaller shapes spread over the frame
        {"name": "cap", "kind": "disc", "color": (200, 200, 40), "r": 60, "p0": (260.0, 160.0), "v": (1.5, 0.8)},
        {"name": "tile", "kind": "rect", "color": (200, 40, 200), "r": 55, "p0": (1700.0, 900.0), "v": (-1.1, -1.3)},
        {"name": "puck", "kind": "disc", "color": (40, 200, 200), "r": 50, "p0": (700.0, 900.0), "v": (1.9, -0.7)},
        {"name": "brick", "kind": "rect", "color": (120, 60, 20), "r": 65, "p0": (1250.0, 450.0), "v": (-0.8, 1.4)},
        {"name": "dot", "kind": "disc", "color": (250, 250, 250), "r": 45, "p0": (1500.0, 150.0), "v": (-2.1, 0.9)},
    ]
    if not 1 <= objects <= len(tracks):
        raise ValueError(f"the synthetic video has 1 to {len(tracks)} objects, not {objects}")
    return tracks[:objects]


def _bounce(p: float, v: float, i: int, lo: float, hi: float) -> float:
    span = hi - lo
    x = (p - lo + v * i) % (2 * span)
    return lo + (x if x <= span else 2 * span - x)


def track_center(track: dict[str, Any], i: int) -> tuple[float, float]:
    r = track["r"]
    return (
        _bounce(track["p0"][0], track["v"][0], i, r, WIDTH - r),
        _bounce(track["p0"][1], track["v"][1], i, r, HEIGHT - r),
    )


def background() -> Any:
    """A textured 1080p background: 8×8-pixel blocks of grey noise plus a few static patches."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    small = rng.integers(70, 130, size=(HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    bg = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(bg, (80, 760), (420, 1000), (30, 160, 200), -1)  # static clutter
    cv2.circle(bg, (1650, 220), 120, (150, 40, 150), -1)
    return bg


def render_frame(bg: Any, tracks: list[dict[str, Any]], i: int) -> Any:
    """Frame ``i`` (BGR, for OpenCV writers)."""
    import cv2

    frame = bg.copy()
    for t in tracks:
        cx, cy = track_center(t, i)
        r = t["r"]
        if t["kind"] == "disc":
            cv2.circle(frame, (round(cx), round(cy)), r, t["color"], -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(frame, (round(cx - r), round(cy - r)), (round(cx + r), round(cy + r)), t["color"], -1)
    return frame


def make_video(
    workdir: Path, frames: int, objects: int, *, mp4: bool = True, jpeg: bool = True, log=print
) -> dict[str, Path]:
    """Write (once; cached in ``workdir``) ``frames`` frames as an MP4 and/or a JPEG folder."""
    import cv2

    videos = workdir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    tag = f"{WIDTH}x{HEIGHT}_{objects}obj_{frames}f"
    out: dict[str, Path] = {}
    tracks = shape_tracks(objects)
    bg = None
    mp4_path = videos / f"{tag}.mp4"
    if mp4:
        out["mp4"] = mp4_path
        if not mp4_path.is_file():
            started = time.perf_counter()
            bg = background() if bg is None else bg
            tmp = mp4_path.with_suffix(".part.mp4")
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {tmp}")
            for i in range(frames):
                writer.write(render_frame(bg, tracks, i))
                if frames >= 2000 and i % 2000 == 0:
                    log(f"  writing {mp4_path.name}: frame {i}/{frames}")
            writer.release()
            tmp.rename(mp4_path)
            log(
                f"  wrote {mp4_path} ({frames} frames, {mp4_path.stat().st_size / MiB:.0f} MiB) in {time.perf_counter() - started:.0f} s"
            )
    if jpeg:
        folder = videos / f"{tag}_jpeg"
        out["jpeg"] = folder
        done = folder / ".complete"
        if not done.is_file():
            started = time.perf_counter()
            bg = background() if bg is None else bg
            # Frames do not depend on the video length: reuse a longer folder's files as links.
            longer = sorted(
                (p for p in videos.glob(f"{WIDTH}x{HEIGHT}_{objects}obj_*f_jpeg") if (p / ".complete").is_file()),
                key=lambda p: int(p.name.split("_")[2][:-1]),
            )
            longer = [p for p in longer if int(p.name.split("_")[2][:-1]) >= frames]
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            for i in range(frames):
                name = f"{i:05d}.jpg"
                if longer:
                    os.symlink((longer[0] / name).resolve(), folder / name)
                else:
                    cv2.imwrite(str(folder / name), render_frame(bg, tracks, i), [cv2.IMWRITE_JPEG_QUALITY, 95])
            done.touch()
            log(f"  wrote {folder} ({frames} JPEG frames) in {time.perf_counter() - started:.0f} s")
    return out


def prompt_points(objects: int, frame: int) -> list[tuple[float, float]]:
    return [track_center(t, frame) for t in shape_tracks(objects)]


def prompt_spec(objects: int, frame: int) -> dict[str, Any]:
    """A SceneDiff prompt document: one positive point at each shape's centre on ``frame``."""
    return {
        "format": "scenediff",
        "scene_type": "bench",
        "objects": [
            {
                "id": k + 1,
                "name": t["name"],
                "number": 1,
                "in_video1": True,
                "in_video2": False,
                "prompts": [
                    {
                        "video": "video1",
                        "frame": frame,
                        "points": [list(prompt_points(objects, frame)[k])],
                        "labels": [1],
                    }
                ],
            }
            for k, t in enumerate(shape_tracks(objects))
        ],
    }
