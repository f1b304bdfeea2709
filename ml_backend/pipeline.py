"""One propagation job: prompts + videos → masks → exports, with progress.

:func:`run_job` opens each video lazily, builds one SAM 2 state per video holding every object
present in it, propagates forward and backward (:mod:`.propagation`), and hands each frame's
masks to an export thread, so RLE encoding and PNG writing never block the model. Exports are
published atomically at the end (:mod:`.exports`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import frames, propagation
from .exceptions import PromptError
from .exports import (
    GreenScreenExport,
    MaskSpool,
    SceneDiffExport,
    Staging,
    greenscreen_offset,
    rle_compress,
    rle_encode,
    rle_encode_tensor,
)
from .prompts import PromptSpec

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class JobResult:
    """What a job produced. ``masks[video][obj_id][str(frame)]`` is a COCO RLE (non-empty only),
    read from the job's mask spool on disk; :meth:`close` deletes the spool.

    Until :meth:`publish`, the exports sit in ``staging`` (invisible); ``files`` lists what they
    will be (or, once published, what they are) under ``out_dir``."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    masks: dict[str, Any] = field(default_factory=dict)
    num_frames: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    spool: MaskSpool | None = None
    staging: Staging | None = None
    after_publish: list[Callable[[], Path | None]] = field(default_factory=list)
    published: bool = False

    def publish(self) -> list[Path]:
        """Make the staged exports visible (see :class:`~ml_backend.exports.Staging`)."""
        if self.staging is None or self.published:
            return self.files
        self.files = self.staging.publish()
        self.published = True
        for step in self.after_publish:
            made = step()
            if made is not None:
                self.files.append(made)
        return self.files

    def close(self) -> None:
        """Drop the mask spool and what is left of the staging folder (all of it, unpublished)."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.staging is not None:
            self.staging.abort()

    def __enter__(self) -> JobResult:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def video_names(spec: PromptSpec) -> list[str]:
    """The videos a job reads: ``video1`` for green-screen, else those with a present object."""
    if spec.format == "greenscreen":
        return ["video1"]
    return [v for v in ("video1", "video2") if any(o.in_video.get(v) for o in spec.objects)]


def check_job(spec: PromptSpec, videos: dict[str, str | Path]) -> dict[str, Any]:
    """Check that ``spec`` fits ``videos`` before any model work; returns ``{video: (frames, h, w)}``.

    Opens each video to probe its frame count and size (no decoding of the whole video). Raises
    :class:`PromptError` or :class:`~ml_backend.exceptions.VideoError` with one readable reason.
    """
    shapes = {}
    for name in video_names(spec):
        if name not in videos or not videos[name]:
            raise PromptError(f"objects are present in {name} but no {name} was given")
    for name in video_names(spec):
        with frames.open_frames(videos[name], cache_frames=2) as source:
            shape = (source.num_frames, source.height, source.width)
        num, height, width = shape
        objects = spec.objects_in(name)
        for obj_id, prompts in objects.items():
            if not prompts:
                label = next(o.label for o in spec.objects if o.id == obj_id)
                raise PromptError(f"object {obj_id} ({label}) is marked present in {name} but has no prompts there")
        propagation.check_prompts(objects, num, height, width, video=name)
        if spec.format == "greenscreen":
            segment_plan(spec, num)
        shapes[name] = shape
    return shapes


def segment_plan(spec: PromptSpec, num_frames: int) -> tuple[list[int], int, int, int]:
    """``(segment_frames, index, offset, count)`` of a green-screen job whose segment video has
    ``num_frames`` frames; raises :class:`PromptError` when the segment list disagrees."""
    gs = spec.greenscreen
    frames_list = gs.segment_frames if gs and gs.segment_frames else [num_frames]
    index = gs.segment_index if gs and gs.segment_frames else 0
    if frames_list[index] != num_frames:
        raise PromptError(f"segment {index} has {num_frames} frames but the segment list says {frames_list[index]}")
    offset, count = greenscreen_offset(frames_list, index, gs.start_frame if gs else 0)
    return frames_list, index, offset, count


class ExportThread:
    """Runs ``handler(*item)`` on a background thread for each ``put(*item)``, through a bounded
    queue (the model blocks only when the exporter falls ``maxsize`` frames behind)."""

    def __init__(self, handler: Callable[..., None], maxsize: int = 16) -> None:
        self._handler = handler
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._handler(*item)
                except BaseException as exc:  # re-raised in the job thread
                    self._error = exc

    def put(self, *item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def run_job(
    predictor: Any,
    spec: PromptSpec,
    videos: dict[str, str | Path],
    out_dir: str | Path,
    *,
    image_size: int,
    progress: Progress | None = None,
    review: bool = True,
    prefetch: int = 8,
    prefetch_workers: int = 0,
    offload_state_to_cpu: bool = False,
    autocast: Callable[[], Any] | None = None,
    bounded: bool = True,
    greenscreen_mp4: bool = False,
    greenscreen_fps: float = 30.0,
    device_rle: bool | None = None,
    publish: bool = True,
) -> JobResult:
    """Propagate ``spec`` through ``videos`` (``{"video1": path, ...}``) and export into ``out_dir``.

    Everything is checked (:func:`check_job`) before the model sees a frame. Exports are staged
    and, with ``publish`` (default), published at the end; with ``publish=False`` the caller
    decides (:meth:`JobResult.publish`), e.g. only while the job is still the task's latest.

    ``device_rle``: find each mask's runs on the model's device in the job thread, so only run
    lengths (not ``H×W`` masks) cross to the CPU and the export thread just compresses them;
    ``None`` means on CUDA only. On the CPU the export thread encodes whole masks instead, off
    the model's thread. Both give byte-identical RLE.
    """
    out_dir = Path(out_dir)
    names = video_names(spec)
    check_job(spec, videos)
    result = JobResult(out_dir)
    on_device = str(predictor.device).startswith("cuda") if device_rle is None else device_rle
    workers = frames.prefetch_workers(predictor.device, prefetch_workers)
    sources = {}
    try:
        staging = result.staging = Staging(out_dir)
        # the mask spool is private to the staging folder: a killed job's spool goes with it
        spool = result.spool = MaskSpool(staging.private("masks.spool"))
        scenediff = (
            SceneDiffExport(spec, staging.unit("scenediff", SceneDiffExport.FILES), image_size, spool)
            if spec.format == "scenediff"
            else None
        )
        for name in names:
            sources[name] = frames.open_frames(videos[name], cache_frames=max(32, 4 * prefetch, 8 * workers))
        for name in names:
            source = sources[name]
            objects = spec.objects_in(name)
            greenscreen = None
            if spec.format == "greenscreen":
                frames_list, _, offset, count = segment_plan(spec, source.num_frames)
                gs = spec.greenscreen
                greenscreen = GreenScreenExport(
                    staging.dir, offset=offset, count=count, background=gs.background if gs else (0, 255, 0)
                )
            if scenediff is not None:
                scenediff.start_video(name, source)
            spool.declare(name, list(objects))
            result.num_frames[name] = source.num_frames

            def handle(
                frame_idx: int,
                frame: Any,
                masks: dict[int, np.ndarray] | None,
                runs: dict[int, dict[str, Any]] | None,
                _name=name,
                _gs=greenscreen,
            ) -> None:
                if runs is not None:
                    for obj_id, rle in runs.items():
                        if len(rle["counts"]) > 1:  # one count: the whole frame is background
                            spool.add(_name, obj_id, frame_idx, rle_compress(rle))
                elif masks is not None:
                    for obj_id, m in masks.items():
                        if m.any():
                            spool.add(_name, obj_id, frame_idx, rle_encode(m))
                if _gs is not None and masks is not None:
                    _gs.add(frame_idx, frame, masks)

            started = time.perf_counter()
            state = propagation.new_state(
                predictor,
                source,
                prefetch=prefetch,
                workers=workers,
                offload_state_to_cpu=offload_state_to_cpu,
            )
            exporter = ExportThread(handle)
            try:
                propagation.add_prompts(predictor, state, objects)
                done = 0
                for frame_idx, obj_ids, tensor in propagation.propagate_tensors(
                    predictor, state, bounded=bounded, autocast=autocast
                ):
                    runs = dict(zip(obj_ids, rle_encode_tensor(tensor), strict=True)) if on_device else None
                    masks = None
                    if runs is None or greenscreen is not None:
                        array = tensor.cpu().numpy()
                        masks = {obj_id: array[i] for i, obj_id in enumerate(obj_ids)}
                    frame = source.read(frame_idx) if greenscreen is not None else None
                    exporter.put(frame_idx, frame, masks, runs)
                    done += 1
                    if progress is not None:
                        progress(name, done, source.num_frames)
            finally:
                exporter.close()
                propagation.close_state(state)
            if greenscreen is not None:
                greenscreen.finish()
                if greenscreen_mp4:
                    from .exports import assemble_greenscreen_mp4

                    start_frame = spec.greenscreen.start_frame if spec.greenscreen else 0
                    result.after_publish.append(
                        lambda fl=frames_list, sf=start_frame: assemble_greenscreen_mp4(
                            out_dir, fl, sf, greenscreen_fps
                        )
                    )
            result.seconds[name] = time.perf_counter() - started
        for name in names:
            result.masks[name] = spool.view(name)
        if scenediff is not None:
            scenediff.finish()
        if review:
            from .review import write_review

            started = time.perf_counter()
            for name in names:
                review_name = (
                    name
                    if spec.format == "scenediff"
                    else f"segment_{spec.greenscreen.segment_index if spec.greenscreen else 0:03d}"
                )
                write_review(sources[name], result.masks[name], staging.path("review"), review_name)
            result.seconds["review"] = time.perf_counter() - started
        result.files = staging.staged()
        if publish:
            result.publish()
    except BaseException:
        result.close()
        raise
    finally:
        for source in sources.values():
            source.close()
    return result
