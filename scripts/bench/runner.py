"""What every measurement shares: the model, the clocks and RSS probes, and the fresh process.

Each measurement runs in a **fresh subprocess** (``bench_video.py --child <json config>``), so
peak RSS (``ru_maxrss``) and timings are those of that measurement alone. The child builds SAM 2.1
from random weights (``checkpoint="random"``, seeded), warms it up, measures, and prints one
``BENCH_RESULT <json>`` line on stdout; its stderr goes to a log file in the workdir.
``cfg["backend"]``: the root of another checkout whose ``ml_backend`` the child imports instead
of this one's (``--base``: the code before a change, measured by the same harness).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.video import HEIGHT, WIDTH, MiB

ROOT = Path(__file__).resolve().parents[2]
#: The entry point the children run (``--child``).
SCRIPT = ROOT / "scripts" / "bench_video.py"
RESULT_TAG = "BENCH_RESULT "

#: Where each module lived before the package was grouped by side (``--base`` may be such a
#: checkout): ``ml_backend.video.pipeline`` was ``ml_backend.pipeline``, and so on.
OLD_MODULES = {"exporters.masks": "exports"}


def ours(name: str) -> Any:
    """``ml_backend.<name>`` of the checkout this child imports, in either layout: the package
    grouped by side (``video.pipeline``) or the flat one before it (``pipeline``)."""
    import importlib

    try:
        return importlib.import_module(f"ml_backend.{name}")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("ml_backend"):
            raise
        return importlib.import_module(f"ml_backend.{OLD_MODULES.get(name, name.rsplit('.', 1)[-1])}")


# -- child side: clocks and memory ------------------------------------------------------------
def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def sync(predictor: Any) -> None:
    import torch

    if str(predictor.device).startswith("cuda"):
        torch.cuda.synchronize()


def gpu_peak(predictor: Any) -> int | None:
    import torch

    if str(predictor.device).startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return None


def median_step(times: list[float]) -> float | None:
    """Median seconds between consecutive frames (robust to short bursts of other load)."""
    steps = sorted(b - a for a, b in itertools.pairwise(times))
    return steps[len(steps) // 2] if steps else None


def curve(samples: list[tuple], fractions=(0.1, 0.5, 1.0)) -> list[dict[str, Any]]:
    """RSS at given fractions of the frames processed (samples are ``(done, seconds, rss[, rle])``)."""
    if not samples:
        return []
    total = samples[-1][0]
    out = []
    for f in fractions:
        target = max(1, math.ceil(f * total))
        sample = next(s for s in samples if s[0] >= target)
        done, secs, rss = sample[:3]
        rle = sample[3] if len(sample) > 3 else None
        out.append({"fraction": f, "frames": done, "seconds": secs, "rss": rss, "rle": rle})
    return out


# -- child side: the model --------------------------------------------------------------------
def build(cfg: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    from ml_backend.models import build_video_predictor
    from ml_backend.settings import Settings

    settings = Settings(
        checkpoint="random",
        model_size=cfg["model_size"],
        image_size=cfg["image_size"],
        device=cfg["device"],
        compile=cfg.get("compile", False),
        random_seed=cfg.get("seed", 0),
        batch_objects=cfg.get("batch_objects", True),
    )
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg.get("seed", 0))
    predictor = build_video_predictor(settings)
    if cfg.get("warmup", True):
        warm_up(predictor, settings)
    return settings, predictor


class _FakeSource:
    """Just the size fields :func:`ml_backend.video.propagation.new_state` reads."""

    num_frames, height, width, fps = 3, HEIGHT, WIDTH, 30.0


def warm_up(predictor: Any, settings: Any) -> None:
    """Track one object over 3 blank in-memory frames, so one-time costs (kernel selection, lazy
    allocations) are paid before anything is timed; then the same state is thrown away."""
    import torch

    propagation = ours("video.propagation")

    state = propagation.new_state(predictor, _FakeSource(), prefetch=0)  # type: ignore[arg-type]
    propagation.close_state(state)
    state["images"] = torch.zeros(3, 3, predictor.image_size, predictor.image_size, device=predictor.device)
    with torch.inference_mode(), autocast_factory(settings, predictor)():
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[WIDTH / 2, HEIGHT / 2]], labels=[1])
        for _ in predictor.propagate_in_video(state):
            pass
    del state
    sync(predictor)


def autocast_factory(settings: Any, predictor: Any):
    from ml_backend.models import autocast

    return lambda: autocast(settings, predictor.device)


# -- the fresh process ------------------------------------------------------------------------
def run_child(cfg: dict[str, Any], children: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """In the child: run the measurement ``cfg["kind"]`` and print its result line."""
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    if cfg.get("backend"):  # measure another checkout's ml_backend (e.g. the commit before a change)
        sys.path.insert(0, str(cfg["backend"]))
        for name in [m for m in sys.modules if m == "ml_backend" or m.startswith("ml_backend.")]:
            del sys.modules[name]
    result = children[cfg["kind"]](cfg)
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def spawn(cfg: dict[str, Any], logdir: Path, name: str, log=print, timeout: float | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its stderr goes to ``logdir/name.log``.
    ``timeout``: seconds after which the child is killed (the result is then an error)."""
    logdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    log_path = logdir / f"{name}.log"
    started = time.perf_counter()
    with open(log_path, "w") as err:
        try:
            proc = subprocess.run(
                [sys.executable, str(SCRIPT), "--child", json.dumps(cfg)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                cwd=str(ROOT),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            log(f"  {name}: stopped at its time limit ({timeout:.0f} s)")
            return {"error": f"time limit {timeout:.0f} s", "log": str(log_path)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text()[-2000:]
        log(f"  {name}: FAILED (exit {proc.returncode}); stderr tail:\n{tail}")
        return {"error": f"exit {proc.returncode}", "log": str(log_path)}
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    (logdir / f"{name}.json").write_text(json.dumps(result, indent=1))
    if "seconds" in result:
        log(
            f"  {name}: {result['seconds']:.1f} s wall, {result.get('cpu_seconds', 0):.1f} s CPU, "
            f"median step {1000 * (result.get('median_step') or 0):.0f} ms, peak RSS {result['peak_rss'] / MiB:.0f} MiB "
            f"(child wall {time.perf_counter() - started:.0f} s, load avg {os.getloadavg()[0]:.1f})"
        )
    else:
        log(f"  {name}: {json.dumps(result)}")
    return result
