#!/usr/bin/env python
"""Interactive click latency, concurrency and memory of the ML backend, measured over real HTTP.

Everything runs in one process on this machine's CPU (or the configured device), with SAM 2.1
built from random weights (``checkpoint="random"``): the latencies are those of the real model
code, the masks are meaningless. The backend is the real app: ``create_app`` with an
``InteractivePredictor`` whose ``FileFetcher`` reads synthetic PNG frames from a temporary
local-files root, served on 127.0.0.1 by the production server (gunicorn's ``gthread`` worker, as
``python -m ml_backend serve`` runs it; ``--server werkzeug`` for werkzeug's thread-per-request
server) and called with httpx, so every figure includes HTTP, JSON, session merging and brush-RLE
encoding. When ``/predict`` answers with a ``Server-Timing`` header, its parts are printed per
phase, with the server-side overhead: HTTP p50 minus the model's parts (embed, decoder).

Phases (all in one run, one table at the end):

1. single client, cache large enough for every frame:
   - *first click*: one click on a frame never seen (file read + decode + image embedding);
   - *repeat click*: a new point on an already-embedded frame (prompt encoder + mask decoder);
   - *baseline*: what the official SAM 2 examples do per click, in process and without HTTP:
     ``SAM2ImagePredictor.set_image(image)`` then ``predict`` (no embedding cache);
2. N concurrent clients (threads; own task, annotator, frame and points), against a second app
   with a deliberately small embedding cache so that embeddings are evicted and recomputed. Each
   client's masks are compared with those of the same click sequence run alone beforehand
   (cross-talk check); the cache's items/bytes and the process RSS are sampled throughout.

``--masks realistic``: the mask decoder still runs on every click (and is timed as usual), but
the mask it answers is replaced by an object-sized disc around the click's positive points, so
the brush RLE and JSON cost what a real object's do (random weights give noise masks: every
pixel row is dozens of runs). ``noise`` (the default) keeps SAM 2's own masks, the worst case.

Usage::

    .venv/bin/python scripts/bench_interactive.py            # 1024 px, the real input size
    .venv/bin/python scripts/bench_interactive.py --quick    # smoke run, 256 px, few clicks
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FRAME_W, FRAME_H = 640, 480
REPEAT_GOAL_MS = 150.0
RATIO_GOAL = 20.0

CONFIG = """<View>
  <Image name="image1" valueList="$frames1"/>
  <KeyPointLabels name="kp1" toName="image1" smart="true">
    <Label value="Object 1"/><Label value="Object 2"/>
  </KeyPointLabels>
  <BrushLabels name="brush1" toName="image1">
    <Label value="Object 1"/><Label value="Object 2"/>
  </BrushLabels>
</View>"""


# -- Label Studio-shaped payloads (as tests/helpers.py, re-created to stay standalone) -------------
_ids = itertools.count()


def keypoint(x: float, y: float, *, positive: bool = True, item_index: int = 0, label: str = "Object 1") -> dict:
    """A smart keypoint region as Label Studio sends it in ``params.context.result`` (x/y in %)."""
    return {
        "id": f"bench{next(_ids)}",
        "from_name": "kp1",
        "to_name": "image1",
        "type": "keypointlabels",
        "original_width": FRAME_W,
        "original_height": FRAME_H,
        "image_rotation": 0,
        "origin": "manual",
        "is_positive": positive,
        "item_index": item_index,
        "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": [label]},
    }


def predict_payload(clicks: list[dict], *, task_id: int, frames: list[str], login: str) -> dict:
    """An interactive ``/predict`` body: one task, the clicks so far (newest last)."""
    return {
        "tasks": [{"id": task_id, "data": {"frames1": frames}, "annotations": [], "predictions": []}],
        "project": "1.1700000000",
        "label_config": CONFIG,
        "params": {"login": login, "password": None, "context": {"result": clicks}},
    }


def make_frame(seed: int) -> np.ndarray:
    """A 640×480 RGB frame: textured background and a few coloured shapes placed by ``seed``."""
    rng = np.random.default_rng(seed)
    frame = (rng.random((FRAME_H, FRAME_W, 3)) * 60 + 60).astype(np.uint8)
    yy, xx = np.mgrid[:FRAME_H, :FRAME_W]
    for _ in range(4):
        color = rng.integers(0, 256, 3, dtype=np.uint8)
        cx, cy = int(rng.integers(60, FRAME_W - 60)), int(rng.integers(60, FRAME_H - 60))
        r = int(rng.integers(25, 90))
        if rng.random() < 0.5:
            frame[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r] = color
        else:
            frame[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = color
    return frame


def click_points(seed: int, n: int) -> list[tuple[float, float, bool]]:
    """``n`` clicks (x %, y %, positive) for one object; the first is positive, every third negative."""
    rng = np.random.default_rng(10_000 + seed)
    return [(float(rng.uniform(5, 95)), float(rng.uniform(5, 95)), i == 0 or i % 3 != 2) for i in range(n)]


# -- measuring -------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover
        return 0


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def decode_mask(result: dict) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    h, w = int(result["original_height"]), int(result["original_width"])
    return decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0


#: The HTTP server the phases use (``--server``, ``--server-threads``).
SERVER = {"kind": "gunicorn", "threads": 8}


class Server:
    """The real Flask app served on 127.0.0.1 from a background thread of this process.

    ``gunicorn`` (the default): gunicorn's own ``gthread`` worker, configured as
    ``python -m ml_backend serve`` configures it (one worker, ``--server-threads`` request threads
    in a fixed pool, keep-alive), run in process (:class:`_InProcessWorker`: no fork, no signal
    handlers) so the phases can read the predictor's counters. ``werkzeug``: werkzeug's threaded
    development server (a fresh thread per request), the previous default."""

    def __init__(self, app: Any) -> None:
        self.kind = SERVER["kind"]
        if self.kind == "werkzeug":
            from werkzeug.serving import make_server

            self._server = make_server("127.0.0.1", 0, app, threaded=True)
            self.url = f"http://127.0.0.1:{self._server.server_port}"
            self._thread = threading.Thread(target=self._server.serve_forever, name="bench-http", daemon=True)
        else:
            from gunicorn.config import Config
            from gunicorn.glogging import Logger
            from gunicorn.sock import create_sockets

            cfg = Config()
            for key, value in (
                ("bind", "127.0.0.1:0"),
                ("workers", 1),
                ("worker_class", "gthread"),
                ("threads", SERVER["threads"]),
                ("timeout", 300),
            ):
                cfg.set(key, value)
            log = Logger(cfg)
            self._sockets = create_sockets(cfg, log)
            self._worker = _in_process_worker()(1, os.getpid(), self._sockets, None, 300, cfg, log)
            self._worker.bench_app = app
            self.url = f"http://127.0.0.1:{self._sockets[0].sock.getsockname()[1]}"
            self._thread = threading.Thread(target=self._worker.init_process, name="bench-gunicorn", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self.kind == "werkzeug":
            self._server.shutdown()
            self._server.server_close()
            return
        self._worker.alive = False
        self._worker.method_queue.defer(lambda: None)  # wakes the worker's poller (as SIGTERM does)
        self._thread.join(30)
        for sock in self._sockets:
            sock.close()


def _in_process_worker() -> type:
    """gunicorn's ``gthread`` worker class, run in a thread of this process."""
    from gunicorn.workers.gthread import ThreadWorker

    class _InProcessWorker(ThreadWorker):
        def init_signals(self) -> None:  # signal handlers belong to the main thread
            pass

        def load_wsgi(self) -> None:
            self.wsgi = self.bench_app

        def is_parent_alive(self) -> bool:
            return True

    return _InProcessWorker


def server_timing(header: str | None) -> dict[str, float]:
    """``{part: ms}`` of a ``Server-Timing`` header (``name;dur=ms[;desc=...], ...``); empty
    when the server sends none."""
    parts: dict[str, float] = {}
    for item in (header or "").split(","):
        fields = [f.strip() for f in item.split(";")]
        for f in fields[1:]:
            if f.startswith("dur="):
                try:
                    parts[fields[0]] = parts.get(fields[0], 0.0) + float(f[4:])
                except ValueError:
                    pass
    return parts


class Client:
    """One annotator: own task, frame, login and click list; each click resends all its points."""

    def __init__(self, url: str, *, task_id: int, frame_ref: str, login: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=600.0)
        self.task_id, self.frames, self.login = task_id, [frame_ref], login
        self.clicks: list[dict] = []
        self.timing: dict[str, float] = {}  # the last answer's Server-Timing parts

    def click(self, x: float, y: float, positive: bool = True) -> tuple[float, dict]:
        """Add a point, POST /predict; ``(seconds, brush result)``."""
        self.clicks.append(keypoint(x, y, positive=positive))
        body = predict_payload(list(self.clicks), task_id=self.task_id, frames=self.frames, login=self.login)
        start = time.perf_counter()
        response = self.http.post("/predict", json=body)
        data = response.json()
        elapsed = time.perf_counter() - start
        self.timing = server_timing(response.headers.get("server-timing"))
        if response.status_code != 200:
            raise RuntimeError(f"/predict answered {response.status_code}: {data}")
        (result,) = data["results"][0]["result"]
        return elapsed, result

    def close(self) -> None:
        self.http.close()


class RealisticMasks:
    """An :class:`~ml_backend.server.segmenter.ImageSegmenter` whose answers are object-sized
    discs: the real ``predict`` runs first (so the decoder's time is the model's), then its mask
    is replaced by a disc of a sixth of the frame's shorter side around the positive points."""

    def __init__(self, segmenter: Any) -> None:
        self._segmenter = segmenter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._segmenter, name)

    def predict(self, embedding: Any, points_xy: Any, labels: Any) -> tuple[Any, float]:
        import cv2

        mask, score = self._segmenter.predict(embedding, points_xy, labels)
        points = np.asarray(points_xy, np.float32).reshape(-1, 2)
        positive = points[np.asarray(labels).reshape(-1) == 1]
        cx, cy = (positive if len(positive) else points).mean(axis=0)
        disc = np.zeros(mask.shape, np.uint8)
        cv2.circle(disc, (round(float(cx)), round(float(cy))), max(2, min(mask.shape) // 6), 1, -1)
        return disc.astype(bool), score


def build_backend(settings: Any, model: Any, root: Path, cache_dir: Path) -> tuple[Server, Any]:
    """``(server, predictor)`` for ``settings``, sharing the already-built ``model``."""
    from ml_backend.labelstudio.fetch import FileFetcher
    from ml_backend.server.app import create_app
    from ml_backend.server.interactive import InteractivePredictor
    from ml_backend.server.segmenter import ImageSegmenter

    fetcher = FileFetcher(
        settings.label_studio_url,
        cache_dir,
        local_root=root,
        max_bytes=settings.max_download_bytes,
        cache_bytes=settings.download_cache_bytes,
    )
    segmenter = ImageSegmenter(model, settings)
    if SERVER.get("masks") == "realistic":
        segmenter = RealisticMasks(segmenter)
    predictor = InteractivePredictor(settings, fetcher=fetcher, segmenter_factory=lambda: segmenter)
    return Server(create_app(settings, predictor=predictor)), predictor


def _embed_key(path: Path) -> tuple:
    """The key :class:`~ml_backend.server.interactive.InteractivePredictor` caches a file's embedding under."""
    path = path.resolve()
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def in_thread(fn: Any) -> Any:
    """``fn()`` run in a fresh thread, as the threaded server runs each request.

    On a busy CPU, torch's OpenMP pool of the main thread can be many times slower than in the
    request threads; in-process figures are taken like the HTTP ones so that they compare.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-in-process")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _points_array(pts: list[tuple[float, float, bool]]) -> tuple[np.ndarray, np.ndarray]:
    coords = np.array([[x / 100 * FRAME_W, y / 100 * FRAME_H] for x, y, _ in pts], dtype=np.float32)
    labels = np.array([1 if pos else 0 for _, _, pos in pts], dtype=np.int32)
    return coords, labels


def _breakdown(args: argparse.Namespace, seg: Any, root: Path, points: dict) -> tuple[list[float], list[float]]:
    """The repeat clicks again, in process: ``segmenter.predict`` times and brush-RLE times."""
    from ml_backend.labelstudio import brush

    decode_only: list[float] = []
    rle_only: list[float] = []
    used = dict.fromkeys(range(args.frames), 1)
    for r in range(args.repeat):
        i = r % args.frames
        used[i] += 1
        embedding = seg.cache.get(_embed_key(root / "bench" / f"single{i}.png"))
        if embedding is None:
            continue
        coords, labels = _points_array(points[i][: used[i]])
        start = time.perf_counter()
        mask, _ = seg.predict(embedding, coords, labels)
        decode_only.append(time.perf_counter() - start)
        start = time.perf_counter()
        brush.mask_to_result(mask, from_name="brush1", to_name="image1", label="Object 1", item_index=0)
        rle_only.append(time.perf_counter() - start)
    return decode_only, rle_only


def _baseline(args: argparse.Namespace, settings: Any, model: Any, points: dict) -> list[float]:
    """The official examples' pattern: ``set_image`` + ``predict`` per click, no embedding cache."""
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    official = SAM2ImagePredictor(model)
    size = settings.image_size
    official._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    with torch.inference_mode():  # the first call on a fresh predictor stays out of the figures
        official.set_image(make_frame(0))
        official.predict(point_coords=np.array([[320.0, 240.0]]), point_labels=np.array([1]))
    official.reset_predictor()
    baseline: list[float] = []
    for b in range(args.baseline):
        # The same clicks as the repeat clicks: the r-th one on frame r % K, with all its points so far.
        r = b % args.repeat
        i = r % args.frames
        image = make_frame(100 + i)
        coords, labels = _points_array(points[i][: 2 + r // args.frames])
        start = time.perf_counter()
        with torch.inference_mode():
            official.set_image(image)
            official.predict(point_coords=coords, point_labels=labels, multimask_output=len(labels) == 1)
        baseline.append(time.perf_counter() - start)
        official.reset_predictor()
    return baseline


# -- phases ----------------------------------------------------------------------------------------
def single_client(args: argparse.Namespace, settings: Any, model: Any, root: Path, work: Path) -> dict:
    server, predictor = build_backend(settings, model, root, work / "dl1")
    seg = predictor.segmenter
    try:
        warm = Client(server.url, task_id=999, frame_ref="/data/local-files/?d=bench/warmup.png", login="warmup")
        warm.click(50, 50)  # first-call overheads (allocator, lazy imports) stay out of the figures
        warm.click(30, 60, False)
        warm.close()

        clients = [
            Client(server.url, task_id=100 + i, frame_ref=f"/data/local-files/?d=bench/single{i}.png", login="annot")
            for i in range(args.frames)
        ]
        points = {i: click_points(100 + i, args.repeat + 1) for i in range(args.frames)}
        first: list[float] = []
        first_timing: list[dict[str, float]] = []
        encodes_before = seg.encodes
        for i, client in enumerate(clients):
            x, y, pos = points[i][0]
            first.append(client.click(x, y, pos)[0])
            first_timing.append(client.timing)
        first_encodes = seg.encodes - encodes_before

        repeat: list[float] = []
        repeat_timing: list[dict[str, float]] = []
        used = dict.fromkeys(range(args.frames), 1)
        encodes_before = seg.encodes
        for r in range(args.repeat):
            i = r % args.frames
            x, y, pos = points[i][used[i]]
            used[i] += 1
            repeat.append(clients[i].click(x, y, pos)[0])
            repeat_timing.append(clients[i].timing)
        repeat_encodes = seg.encodes - encodes_before
        for client in clients:
            client.close()

        # Where a repeat click's time goes, in process: SAM 2 prompt encoder + mask decoder, then RLE.
        decode_only, rle_only = in_thread(lambda: _breakdown(args, seg, root, points))
    finally:
        server.close()
    baseline = in_thread(lambda: _baseline(args, settings, model, points))
    return {
        "first": first,
        "first_timing": first_timing,
        "first_encodes": first_encodes,
        "repeat": repeat,
        "repeat_timing": repeat_timing,
        "repeat_encodes": repeat_encodes,
        "baseline": baseline,
        "decode_only": decode_only,
        "rle_only": rle_only,
    }


def concurrency(args: argparse.Namespace, settings: Any, model: Any, root: Path, work: Path) -> dict:
    small = dataclasses.replace(
        settings, embedding_cache_items=args.cache_items, embedding_cache_bytes=args.cache_bytes
    )
    server, predictor = build_backend(small, model, root, work / "dl2")
    seg = predictor.segmenter
    phase_encodes = seg.encodes
    cache = seg.cache
    plans = {c: click_points(c, args.clicks_per_client) for c in range(args.clients)}

    def run_client(c: int, phase: str, out: dict, barrier: threading.Barrier | None, track: dict) -> None:
        client = Client(
            server.url,
            task_id=200 + c,
            frame_ref=f"/data/local-files/?d=bench/client{c}.png",
            login=f"annotator{c}-{phase}",
        )
        if barrier is not None:
            barrier.wait()
        try:
            for x, y, pos in plans[c]:
                with track["lock"]:
                    track["now"] += 1
                    track["max"] = max(track["max"], track["now"])
                try:
                    elapsed, result = client.click(x, y, pos)
                finally:
                    with track["lock"]:
                        track["now"] -= 1
                out.setdefault(c, []).append((elapsed, result))
        except Exception as exc:  # reported as a mismatch, never hidden
            out.setdefault("errors", []).append(f"client {c}: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    samples = {"items": 0, "bytes": 0, "rss": 0}
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            s = cache.stats()
            samples["items"] = max(samples["items"], s["items"])
            samples["bytes"] = max(samples["bytes"], s["bytes"])
            samples["rss"] = max(samples["rss"], rss_bytes())
            stop.wait(0.005)

    watcher = threading.Thread(target=sampler, name="bench-sampler", daemon=True)
    watcher.start()
    try:
        # Reference: each client's click sequence alone, one client after the other.
        alone: dict = {}
        track = {"lock": threading.Lock(), "now": 0, "max": 0}
        for c in range(args.clients):
            run_client(c, "alone", alone, None, track)
        encodes_before = seg.encodes
        # The same sequences, all clients at once.
        together: dict = {}
        track = {"lock": threading.Lock(), "now": 0, "max": 0}
        barrier = threading.Barrier(args.clients)
        threads = [
            threading.Thread(target=run_client, args=(c, "together", together, barrier, track), name=f"client{c}")
            for c in range(args.clients)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        concurrent_encodes = seg.encodes - encodes_before
        total_encodes = seg.encodes - phase_encodes
    finally:
        stop.set()
        watcher.join()
        server.close()

    mismatches = list(alone.get("errors", [])) + list(together.get("errors", []))
    compared = 0
    for c in range(args.clients):
        ref, got = alone.get(c, []), together.get(c, [])
        if len(ref) != len(got):
            mismatches.append(f"client {c}: {len(got)} answers together vs {len(ref)} alone")
        for k, ((_, r_ref), (_, r_got)) in enumerate(zip(ref, got, strict=False)):
            a, b = decode_mask(r_ref), decode_mask(r_got)
            compared += 1
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = int((a != b).sum()) if a.shape == b.shape else -1
                mismatches.append(f"client {c} click {k + 1}: {diff} pixels differ")
    finals = {decode_mask(alone[c][-1][1]).tobytes() for c in range(args.clients) if alone.get(c)}
    nonempty = sum(
        1 for c in range(args.clients) if alone.get(c) and 0 < decode_mask(alone[c][-1][1]).sum() < FRAME_W * FRAME_H
    )
    latencies = [e for c in range(args.clients) for e, _ in together.get(c, [])]
    return {
        "latencies": latencies,
        "wall": wall,
        "max_in_flight": track["max"],
        "mismatches": mismatches,
        "compared": compared,
        "distinct_finals": len(finals),
        "nonempty_finals": nonempty,
        "encodes": concurrent_encodes,
        "evictions": total_encodes - cache.stats()["items"],
        "stats": cache.stats(),
        "peak_items": samples["items"],
        "peak_bytes": samples["bytes"],
        "peak_rss_sampled": samples["rss"],
    }


# -- main ------------------------------------------------------------------------------------------
#: Tasks of the prefetch phase: 0 opened alone, 1–2 clicked while embedding, 3 another
#: annotator's, 4–5 opened by two annotators at once.
TASKS = 6


def prefetch_phase(args: argparse.Namespace, settings: Any, model: Any, root: Path, work: Path) -> dict:
    """Clicks after Label Studio opened the task: ``/predict`` without clicks first (the task is
    opened), then, after a think time long enough for the prefetcher, one click on each page.
    Also: a click while the prefetcher is embedding another frame of the same task, and a click
    in one annotator's (embedded) task while another annotator's task is being prefetched."""
    import httpx

    server, predictor = build_backend(settings, model, root, work / "dl3")
    seg = predictor.segmenter
    refs = {t: [f"/data/local-files/?d=bench/task{t}_{k}.png" for k in range(args.pages)] for t in range(TASKS)}
    http = httpx.Client(base_url=server.url, timeout=600.0)
    timings: list[dict[str, float]] = []

    def open_task(t: int) -> None:
        body = predict_payload([], task_id=500 + t, frames=refs[t], login=f"a{t}")
        body["params"]["context"] = None
        assert http.post("/predict", json=body).status_code == 200

    def click(t: int, page: int, x: float = 40.0, y: float = 40.0) -> float:
        body = predict_payload([keypoint(x, y, item_index=page)], task_id=500 + t, frames=refs[t], login=f"a{t}")
        started = time.perf_counter()
        response = http.post("/predict", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"/predict answered {response.status_code}: {response.text[:200]}")
        timings.append(server_timing(response.headers.get("server-timing")))
        return time.perf_counter() - started

    try:
        Client(server.url, task_id=999, frame_ref="/data/local-files/?d=bench/warmup.png", login="w").click(50, 50)
        before = seg.encodes
        think = time.perf_counter()
        open_task(0)
        predictor.prefetcher.wait_idle(600)
        think = time.perf_counter() - think
        after_open = [click(0, page) for page in range(args.pages)]
        after_open_timing = list(timings)
        encodes_open = seg.encodes - before
        during: list[float] = []
        for t in (1, 2):  # a click on the last page while the first is being embedded
            open_task(t)
            time.sleep(0.2)
            during.append(click(t, args.pages - 1))
            predictor.prefetcher.wait_idle(600)
        open_task(3)  # another annotator's task is being prefetched …
        time.sleep(0.2)
        other = click(0, 0, 60.0, 50.0)  # … while this one clicks a page of an embedded task
        predictor.prefetcher.wait_idle(600)
        pair: list[float] = []  # two annotators open two tasks at the same moment, think, click each page
        barrier = threading.Barrier(2)

        def annotator(t: int) -> None:
            barrier.wait()
            open_task(t)
            predictor.prefetcher.wait_idle(600)
            pair.extend(click(t, page) for page in range(args.pages))

        threads = [threading.Thread(target=annotator, args=(t,)) for t in (4, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        encodes_total = seg.encodes - before
        stats = seg.cache.stats()
    finally:
        http.close()
        server.close()
    return {
        "after_open": after_open,
        "after_open_timing": after_open_timing,
        "think": think,
        "during": during,
        "other": other,
        "pair": pair,
        "encodes_open": encodes_open,
        "encodes_total": encodes_total,
        "frames_total": TASKS * args.pages,
        "stats": stats,
    }


#: Server-Timing parts that are the model's own work (the rest is the server's overhead).
MODEL_PARTS = ("embed", "decoder")
OVERHEAD_GOAL_MS = 10.0


def server_line(args: argparse.Namespace) -> str:
    if args.server == "werkzeug":
        return "werkzeug threaded HTTP (a thread per request)"
    return f"gunicorn {args.server_threads}-thread gthread worker (as `serve`)"


def print_server_timing(phases: list[tuple[str, list[float], list[dict[str, float]]]]) -> None:
    """Where a click's time goes on the server (its ``Server-Timing`` header), p50 per part, and
    the server-side overhead: HTTP p50 minus the p50 of the model's parts (:data:`MODEL_PARTS`)."""
    print()
    if not any(t for _, _, timings in phases for t in timings):
        print("Server-Timing: this server sends no Server-Timing header on /predict; no breakdown.")
        return
    names: list[str] = []
    for _, _, timings in phases:
        for t in timings:
            names += [n for n in t if n not in names and n != "total"]
    print(
        "| Server-Timing p50 ms | HTTP | "
        + " | ".join(names)
        + " | total (server) | overhead: HTTP − model parts | goal |"
    )
    print("|---|---:|" + "---:|" * len(names) + "---:|---:|---|")
    for label, latencies, timings in phases:
        if not latencies:
            continue
        http = pct(latencies, 50) * 1000.0
        cells = []
        for n in names:
            values = [t.get(n, 0.0) for t in timings if t]
            cells.append(f"{pct(values, 50):.1f}" if values else "—")
        totals = [t["total"] for t in timings if t and "total" in t]
        model = sum(pct([t.get(n, 0.0) for t in timings if t], 50) for n in MODEL_PARTS) if any(timings) else 0.0
        overhead = http - model
        mark = "yes" if overhead <= OVERHEAD_GOAL_MS else "NO"
        print(
            f"| {label} | {http:.1f} | " + " | ".join(cells) + f" | {pct(totals, 50) if totals else 0:.1f} | "
            f"{overhead:.1f} | <= {OVERHEAD_GOAL_MS:.0f} ms: {mark} |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Interactive /predict latency (first/repeat click vs re-encode baseline), "
        "concurrent clients with a cross-talk check, and memory bounds. SAM 2.1 with random weights.",
    )
    p.add_argument("--image-size", type=int, help="model input side in px, multiple of 32 (default 1024)")
    p.add_argument("--model-size", choices=("tiny", "small", "base_plus", "large"), default="tiny")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--frames", type=int, help="K: frames clicked for the first time (default 8)")
    p.add_argument("--repeat", type=int, help="R: repeat clicks on embedded frames (default 30)")
    p.add_argument("--baseline", type=int, help="re-encode-every-click baseline clicks (default 8)")
    p.add_argument("--clients", type=int, help="concurrent clients (default 8)")
    p.add_argument("--clicks-per-client", type=int, help="M: clicks per concurrent client (default 10)")
    p.add_argument("--cache-items", type=int, help="embedding cache items in the concurrency phase (default 4)")
    p.add_argument("--cache-bytes", type=int, help="embedding cache bytes in the concurrency phase (default 2 GiB)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--pages", type=int, default=4, help="pages of a task in the prefetch phase (default 4)")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 px and a handful of clicks")
    p.add_argument(
        "--server",
        choices=("gunicorn", "werkzeug"),
        default="gunicorn",
        help="HTTP server: gunicorn gthread as `python -m ml_backend serve` runs it (default), or werkzeug's "
        "threaded development server",
    )
    p.add_argument("--server-threads", type=int, default=8, help="gunicorn request threads (serve's --threads)")
    p.add_argument(
        "--masks",
        choices=("noise", "realistic"),
        default="noise",
        help="noise: SAM 2's own masks (random weights: the worst case for RLE and JSON); realistic: the decoder "
        "runs, its answer is replaced by an object-sized disc around the clicks",
    )
    args = p.parse_args(argv)
    full = {
        "image_size": 1024,
        "frames": 8,
        "repeat": 30,
        "baseline": 8,
        "clients": 8,
        "clicks_per_client": 10,
        "cache_items": 4,
        "cache_bytes": 2 * 1024**3,
    }
    quick = dict(full, image_size=256, frames=3, repeat=6, baseline=3, clients=4, clicks_per_client=3, cache_items=2)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.image_size % 32:
        p.error("--image-size must be a multiple of 32")
    for key in ("frames", "repeat", "baseline", "clients", "clicks_per_client"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    import torch
    from PIL import Image

    from ml_backend.models import build_image_model, model_version
    from ml_backend.settings import Settings

    if args.threads:
        torch.set_num_threads(args.threads)
    SERVER.update(kind=args.server, threads=args.server_threads, masks=args.masks)
    rss_start = rss_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-interactive-") as tmp:
        work = Path(tmp)
        root = work / "local-files"
        (root / "bench").mkdir(parents=True)
        Image.fromarray(make_frame(0)).save(root / "bench" / "warmup.png")
        for i in range(args.frames):
            Image.fromarray(make_frame(100 + i)).save(root / "bench" / f"single{i}.png")
        for c in range(args.clients):
            Image.fromarray(make_frame(c)).save(root / "bench" / f"client{c}.png")
        settings = Settings(
            checkpoint="random",
            model_size=args.model_size,
            image_size=args.image_size,
            device=args.device,
            data_dir=work / "data",
            local_files_root=str(root),
        )
        print(f"building SAM 2.1 {args.model_size} at {args.image_size} px (random weights) …", file=sys.stderr)
        t0 = time.perf_counter()
        model = build_image_model(settings)
        build_s = time.perf_counter() - t0
        rss_model = rss_bytes()
        print("phase 1: single client …", file=sys.stderr)
        one = single_client(args, settings, model, root, work)
        print("phase 2: concurrent clients …", file=sys.stderr)
        many = concurrency(args, settings, model, root, work)
        print("phase 3: tasks opened before their clicks (prefetch) …", file=sys.stderr)
        for t in range(TASKS):
            for k in range(args.pages):
                Image.fromarray(make_frame(1000 + 10 * t + k)).save(root / "bench" / f"task{t}_{k}.png")
        early = prefetch_phase(args, settings, model, root, work)

    ms = 1000.0
    first_p50, first_p95 = pct(one["first"], 50) * ms, pct(one["first"], 95) * ms
    rep_p50, rep_p95 = pct(one["repeat"], 50) * ms, pct(one["repeat"], 95) * ms
    base_p50, base_p95 = pct(one["baseline"], 50) * ms, pct(one["baseline"], 95) * ms
    ratio = base_p50 / rep_p50 if rep_p50 > 0 else float("inf")
    con_p50, con_p95 = pct(many["latencies"], 50) * ms, pct(many["latencies"], 95) * ms
    stats = many["stats"]
    items_ok = many["peak_items"] <= stats["max_items"] and stats["items"] <= stats["max_items"]
    bytes_ok = many["peak_bytes"] <= stats["max_bytes"] and stats["bytes"] <= stats["max_bytes"]
    crosstalk = "none" if not many["mismatches"] else f"{len(many['mismatches'])} MISMATCHES"
    n_con = len(many["latencies"])

    def yes(ok: bool) -> str:
        return "yes" if ok else "NO"

    device = str(model.device)
    cpu = platform.processor() or platform.machine()
    print()
    print(
        f"SAM 2.1 {args.model_size}, {args.image_size} px, random weights ({model_version(settings)}), {args.masks} masks, "
        f"device {device} ({cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads); frames {FRAME_W}x{FRAME_H} PNG via local-files root; "
        f"{server_line(args)} + httpx; model build {build_s:.1f} s"
    )
    print()
    rows = [
        ("first click (new frame: read+decode+embed+decode mask)", f"n={len(one['first'])}", first_p50, first_p95, ""),
        ("repeat click (embedded frame, new point)", f"n={len(one['repeat'])}", rep_p50, rep_p95, ""),
        ("  part: segmenter.predict (prompt encoder + mask decoder), in process", f"n={len(one['decode_only'])}", pct(one["decode_only"], 50) * ms, pct(one["decode_only"], 95) * ms, ""),
        ("  part: brush RLE encode of the 640x480 mask, in process", f"n={len(one['rle_only'])}", pct(one["rle_only"], 50) * ms, pct(one["rle_only"], 95) * ms, ""),
        ("baseline: set_image + predict per click (in process, no HTTP)", f"n={len(one['baseline'])}", base_p50, base_p95, ""),
        (f"{args.clients} concurrent clients x {args.clicks_per_client} clicks (cache {stats['max_items']} items)", f"n={n_con}", con_p50, con_p95, ""),
    ]  # fmt: skip
    rows += [
        (f"first click on a page of an opened task (prefetched; think time {early['think']:.1f} s)", f"n={len(early['after_open'])}", pct(early["after_open"], 50) * ms, pct(early["after_open"], 95) * ms, ""),
        ("click on a new page while the prefetcher embeds another", f"n={len(early['during'])}", pct(early["during"], 50) * ms, pct(early["during"], 95) * ms, ""),
        ("click in an embedded task while another task is prefetched", "n=1", early["other"] * ms, early["other"] * ms, ""),
        ("two annotators open two tasks at once, then click each page", f"n={len(early['pair'])}", pct(early["pair"], 50) * ms, pct(early["pair"], 95) * ms, ""),
    ]  # fmt: skip
    print("| measurement | samples | p50 ms | p95 ms |")
    print("|---|---|---:|---:|")
    for name, n, p50, p95, _ in rows:
        print(f"| {name} | {n} | {p50:,.1f} | {p95:,.1f} |")
    print()
    print("| check | value | goal | met |")
    print("|---|---|---|---|")
    print(f"| speed-up baseline p50 / repeat p50 | {ratio:,.1f}x | >= {RATIO_GOAL:.0f}x | {yes(ratio >= RATIO_GOAL)} |")
    print(f"| repeat click p50 | {rep_p50:,.1f} ms | < {REPEAT_GOAL_MS:.0f} ms | {yes(rep_p50 < REPEAT_GOAL_MS)} |")
    print(
        f"| image encodes: first clicks / repeat clicks | {one['first_encodes']} / {one['repeat_encodes']} "
        f"| {len(one['first'])} / 0 | {yes(one['first_encodes'] == len(one['first']) and one['repeat_encodes'] == 0)} |"
    )
    print(
        f"| cross-talk ({many['compared']} masks compared with the same clicks run alone; "
        f"{many['distinct_finals']}/{args.clients} distinct final masks, {many['nonempty_finals']} non-empty) "
        f"| {crosstalk} | none | {yes(not many['mismatches'])} |"
    )
    print(f"| concurrency: most requests in flight at once | {many['max_in_flight']} | {args.clients} | {yes(many['max_in_flight'] == args.clients)} |")  # fmt: skip
    print(
        f"| concurrency: image encodes while concurrent / evictions in phase 2 / wall time | {many['encodes']} / "
        f"{many['evictions']} / {many['wall']:.1f} s | evictions > 0 | {yes(many['evictions'] > 0)} |"
    )
    print(
        f"| embedding cache items: peak sampled / end / max_items | {many['peak_items']} / {stats['items']} / "
        f"{stats['max_items']} | <= max_items | {yes(items_ok)} |"
    )
    print(
        f"| embedding cache bytes: peak sampled / end / max_bytes | {mib(many['peak_bytes'])} / {mib(stats['bytes'])} / "
        f"{mib(stats['max_bytes'])} | <= max_bytes | {yes(bytes_ok)} |"
    )
    print(f"| embedding cache hits / misses (concurrency phase) | {stats['hits']} / {stats['misses']} | | |")
    opened_p50 = pct(early["after_open"], 50) * ms
    print(
        f"| prefetched first click p50 / repeat click p50 | {opened_p50 / rep_p50:.2f}x | <= 1.5x "
        f"| {yes(opened_p50 <= 1.5 * rep_p50)} |"
    )
    print(
        f"| click during prefetch p95 / one encoder pass (first click p50) | "
        f"{pct(early['during'], 95) * ms / first_p50:.2f}x | <= 1 encoder pass + own work | "
        f"{yes(pct(early['during'], 95) * ms <= 2 * first_p50 + rep_p95)} |"
    )
    print(
        f"| click while another task is prefetched / (encoder pass + repeat click) | "
        f"{early['other'] * ms / (first_p50 + rep_p50):.2f}x | <= 1 | {yes(early['other'] * ms <= first_p50 + rep_p50)} |"
    )
    print(
        f"| prefetch phase: image encodes / frames of the {TASKS} tasks (no double encode) | {early['encodes_total']} / "
        f"{early['frames_total']} | equal | {yes(early['encodes_total'] == early['frames_total'])} |"
    )
    print(
        f"| RSS: start / after model build / peak in concurrency (sampled) / process peak (getrusage) "
        f"| {mib(rss_start)} / {mib(rss_model)} / {mib(many['peak_rss_sampled'])} / {mib(peak_rss_bytes())} | | |"
    )
    print(
        f"| memory within configured cache bounds | {yes(items_ok and bytes_ok)} | yes | {yes(items_ok and bytes_ok)} |"
    )
    print_server_timing(
        [("first click", one["first"], one["first_timing"]), ("repeat click", one["repeat"], one["repeat_timing"]),
         ("prefetched first click", early["after_open"], early["after_open_timing"])]
    )  # fmt: skip
    print()
    print(f"cross-talk: {'none' if not many['mismatches'] else ''}", flush=True)
    for line in many["mismatches"][:20]:
        print(f"  {line}")
    if len(many["mismatches"]) > 20:
        print(f"  … and {len(many['mismatches']) - 20} more")
    return 0 if not many["mismatches"] and items_ok and bytes_ok else 1


if __name__ == "__main__":
    sys.exit(main())
