"""One propagation job: prompts + videos → masks → every export format, with progress.

:func:`run_job` checks the job (:func:`check_job`), then for each video opens it lazily, builds one
SAM 2 state holding every object present in it, propagates forward and backward
(:mod:`.propagation`), and hands each frame's masks to an export thread that spools them as RLE
and feeds the per-frame exporters, so encoding and file writing never block the model. When all
videos are done, each exporter (:mod:`~ml_backend.exporters.interface`) finishes from the spool;
the staged files are then published atomically (:class:`~ml_backend.exporters.staging.Staging`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ml_backend.exceptions import PromptError
from ml_backend.exporters.greenscreen import segment_plan
from ml_backend.exporters.interface import ExportJob
from ml_backend.exporters.masks import mask_rle, rle_compress, rle_encode_tensor
from ml_backend.exporters.registry import choose_exports, exporter_class
from ml_backend.exporters.staging import MaskSpool, Staging
from ml_backend.video import frames, propagation
from ml_backend.video.options import JobOptions
from ml_backend.video.prompts import PromptSpec

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
    after_publish: list[Callable[[], list[Path]]] = field(default_factory=list)
    published: bool = False

    def publish(self) -> list[Path]:
        """Make the staged exports visible (see :class:`~ml_backend.exporters.staging.Staging`)."""
        if self.staging is None or self.published:
            return self.files
        self.files = self.staging.publish()
        self.published = True
        for step in self.after_publish:
            self.files.extend(step())
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
    options: JobOptions | None = None,
    *,
    progress: Progress | None = None,
    publish: bool = True,
    timeline: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> JobResult:
    """Propagate ``spec`` through ``videos`` (``{"video1": path, ...}``) and export into ``out_dir``.

    ``options`` (:class:`~ml_backend.video.options.JobOptions`) says how; ``fields``, its fields one
    by one instead (tests) or over it. Writes the job's own format, ``review`` and ``quality`` (when
    on), and the formats in ``spec.exports`` and ``options.exports``. Everything is checked before the
    model sees a frame. With ``publish`` (default) the exports are published at the end; with
    ``publish=False`` the caller decides (:meth:`JobResult.publish`), e.g. only while the job is
    still the task's latest. ``timeline`` (per-frame timings, benchmarks): :func:`propagate_video`.
    """
    options = JobOptions(**fields) if options is None else replace(options, **fields)
    check_job(spec, videos)
    job_exports = choose_exports(spec, options.exports, review=options.review, quality=options.quality)
    result = JobResult(Path(out_dir))
    exporters: list[Any] = []
    try:
        result.staging = Staging(result.out_dir)
        result.spool = MaskSpool(result.staging.private("masks.spool"))  # removed with the staging
        job = ExportJob(
            spec,
            result.staging,
            options.image_size,
            options.greenscreen_mp4,
            options.greenscreen_fps,
            options.quality_rule,
        )
        exporters = [exporter_class(name)(job) for name in job_exports]
        for name in video_names(spec):
            started = time.perf_counter()
            result.num_frames[name] = propagate_video(
                predictor, name, videos[name], spec.objects_in(name), result.spool, exporters,
                progress=progress, prefetch=options.prefetch, prefetch_workers=options.prefetch_workers,
                resize_on_gpu=options.resize_on_gpu, offload_state_to_cpu=options.offload_state_to_cpu,
                autocast=options.autocast, bounded=options.bounded, device_rle=options.device_rle, timeline=timeline,
            )  # fmt: skip
            result.seconds[name] = time.perf_counter() - started
        result.masks = {name: result.spool.view(name) for name in video_names(spec)}
        with ThreadPoolExecutor(max(1, len(exporters)), thread_name_prefix="export-finish") as pool:
            result.seconds.update(pool.map(lambda e: _timed(e.name, e.finish, result.masks), exporters))
        result.after_publish = [exporter.published for exporter in exporters]
        result.files = result.staging.staged()
        if publish:
            result.publish()
    except BaseException:
        for exporter in exporters:
            exporter.abort()
        result.close()
        raise
    return result


def _timed(name: str, call: Callable[..., Any], *args: Any) -> tuple[str, float]:
    started = time.perf_counter()
    call(*args)
    return name, time.perf_counter() - started


def propagate_video(
    predictor: Any,
    name: str,
    path: str | Path,
    objects: dict[int, list[Any]],
    spool: MaskSpool,
    exporters: list[Any],
    *,
    progress: Progress | None = None,
    prefetch: int = 8,
    prefetch_workers: int = 0,
    resize_on_gpu: bool = True,
    offload_state_to_cpu: bool = False,
    autocast: Callable[[], Any] | None = None,
    bounded: bool = True,
    device_rle: bool | None = None,
    timeline: list[dict[str, Any]] | None = None,
) -> int:
    """Track ``objects`` (``{obj_id: prompts}``) through video ``name`` at ``path``; spool every
    non-empty mask and feed the exporters. Returns the number of frames.

    The model's thread does only the model's work: for each frame it thresholds the masks (on
    the model's device), queues their copy to the CPU (on CUDA: asynchronous, into page-locked
    memory, with an event; no synchronisation) and the object scores likewise
    (:func:`~ml_backend.video.propagation.object_scores_later`), and hands the frame to the export
    thread. The export thread waits for the copies, encodes each mask's COCO RLE from its
    bounding box (:func:`~ml_backend.exporters.masks.mask_rle`), spools it and feeds the exporters.

    ``device_rle=True`` (off by default, ``None`` means off): find each mask's runs on the
    model's device in the model's thread instead (SAM 2's ``mask_to_rle_pytorch``, which
    synchronises and builds Python lists there); kept to compare. Both give byte-identical RLE.

    ``timeline``: when a list, one dict per frame is appended: ``model_s`` (seconds the model's
    thread waited for SAM 2's next frame: the model's step, frame preparation it waited for
    included), ``ours_s`` (seconds the model's thread then spent on our side before asking for
    the next frame), ``export_s`` / ``export_cpu_s`` (wall and CPU seconds of the export thread
    on that frame).
    """
    import torch

    on_device = bool(device_rle)
    workers = frames.prefetch_workers(predictor.device, prefetch_workers)
    streaming = [e for e in exporters if e.per_frame]
    want_frames = any(e.needs_frames for e in streaming)
    with frames.open_frames(path, cache_frames=max(32, 4 * prefetch, 8 * workers)) as source:
        spool.declare(name, list(objects))
        for exporter in exporters:
            exporter.start_video(name, source)
        steps: list[dict[str, Any]] = []  # the model's thread's side of the timeline
        exported: dict[int, tuple[float, float]] = {}  # the export thread's side

        def handle(
            frame_idx: int, frame: Any, obj_ids: list[int], masks: Any, ready: Any, runs: Any, scores: Any
        ) -> None:
            started, cpu = time.perf_counter(), time.thread_time()
            if ready is not None:
                ready.synchronize()  # the copy queued by the model's thread has landed
            by_obj = None
            if masks is not None:
                array = masks.numpy()
                by_obj = {obj_id: array[i] for i, obj_id in enumerate(obj_ids)}
            if runs is not None:
                for obj_id, rle in zip(obj_ids, runs, strict=True):
                    if len(rle["counts"]) > 1:  # one count: the whole frame is background
                        spool.add(name, obj_id, frame_idx, rle_compress(rle))
            else:
                for obj_id, mask in by_obj.items():
                    rle = mask_rle(mask)
                    if rle is not None:
                        spool.add(name, obj_id, frame_idx, rle)
            if streaming:
                got_scores = scores()
                for exporter in streaming:
                    exporter.add(name, frame_idx, by_obj, frame, got_scores)
            if timeline is not None:
                exported[frame_idx] = (time.perf_counter() - started, time.thread_time() - cpu)

        state = propagation.new_state(
            predictor,
            source,
            prefetch=prefetch,
            workers=workers,
            offload_state_to_cpu=offload_state_to_cpu,
            resize_on_gpu=resize_on_gpu,
        )
        exporter_thread = ExportThread(handle)
        frames_iter = None
        try:
            propagation.add_prompts(predictor, state, objects)
            frames_iter = propagation.propagate_tensors(predictor, state, bounded=bounded, autocast=autocast)
            done = 0
            while True:
                asked = time.perf_counter()
                item = next(frames_iter, None)
                if item is None:
                    break
                got = time.perf_counter()
                frame_idx, obj_ids, tensor = item
                done += 1
                runs = rle_encode_tensor(tensor) if on_device else None
                masks, ready = None, None
                if runs is None or streaming:
                    if tensor.device.type == "cuda":
                        masks = tensor.to("cpu", non_blocking=True)  # page-locked, asynchronous
                        ready = torch.cuda.Event()
                        ready.record()
                    else:
                        masks = tensor
                frame = source.read(frame_idx) if want_frames else None
                scores = propagation.object_scores_later(state, frame_idx) if streaming else None
                exporter_thread.put(frame_idx, frame, obj_ids, masks, ready, runs, scores)
                if progress is not None:
                    progress(name, done, source.num_frames)
                if timeline is not None:
                    steps.append({"frame": frame_idx, "model_s": got - asked, "ours_s": time.perf_counter() - got})
        finally:
            if frames_iter is not None:  # SAM 2's generator (and its progress bar) ends here, not later
                frames_iter.close()
            exporter_thread.close()
            propagation.close_state(state)
        if timeline is not None:
            for step in steps:
                wall, cpu = exported.get(step["frame"], (None, None))
                timeline.append({**step, "export_s": wall, "export_cpu_s": cpu})
        return source.num_frames
