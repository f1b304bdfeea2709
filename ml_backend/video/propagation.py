"""Propagating prompts through one video with SAM 2, in memory that does not grow with length.

The video predictor holds no per-video state; a state dict is built here and passed in, as in
``SAM2VideoPredictor`` itself. Differences from the stock ``init_state`` path:

- ``state["images"]`` is a :class:`~ml_backend.video.frames.SamFrames`: frames are decoded and resized
  when SAM 2 asks for them (with prefetch), never all at once;
- after each tracked frame, per-frame outputs that SAM 2 can no longer read are dropped: SAM 2
  reads the last ``num_maskmem - 1`` memory frames and the last ``max_obj_ptrs_in_encoder - 1``
  object pointers in the direction of travel, plus all conditioning (prompted) frames. Outputs
  within that window of a prompted frame are kept too, because the backward pass starts there.

Coordinates: point prompts are pixels of the original frame (x right, y down); frame indices are
0-based. :func:`propagate` yields every frame exactly once: forward from the first prompted frame
to the end, then backward from it to frame 0 (the first prompted frame is
yielded once, with the backward pass's result).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_backend.exceptions import PromptError
from ml_backend.video.frames import FrameSource, SamFrames, prefetch_workers


@dataclass
class FramePrompt:
    """Prompts for one object on one frame.

    ``points``: ``N×2`` float pixels ``(x, y)`` of the original frame; ``labels``: ``N`` ints
    (1 positive, 0 negative); ``mask``: optional ``H×W`` bool mask (used instead of points when
    given, e.g. an accepted brush region).
    """

    frame: int
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    mask: np.ndarray | None = None


def new_state(
    predictor: Any,
    source: FrameSource,
    *,
    prefetch: int = 8,
    workers: int = 0,
    offload_state_to_cpu: bool = False,
    resize_on_gpu: bool = True,
) -> dict[str, Any]:
    """An inference state like ``predictor.init_state`` builds, over a lazy frame source.

    ``prefetch`` frames are prepared ahead by ``workers`` threads (0: :func:`prefetch_workers`);
    on a GPU, frames are normalised on the GPU, and resized there too with ``resize_on_gpu``.
    """
    import torch

    device = predictor.device
    images = SamFrames(
        source,
        predictor.image_size,
        prefetch=prefetch,
        workers=prefetch_workers(device, workers),
        device=device if str(device).startswith("cuda") else None,
        resize_on_device=resize_on_gpu,
    )
    state: dict[str, Any] = {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": True,  # frames are prepared on the CPU and moved per use
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": source.height,
        "video_width": source.width,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": {},
        "obj_idx_to_id": {},
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }

    state["obj_id_to_idx"] = OrderedDict()
    state["obj_idx_to_id"] = OrderedDict()
    return state


def close_state(state: dict[str, Any]) -> None:
    images = state.get("images")
    if isinstance(images, SamFrames):
        images.close()


def check_prompts(
    objects: dict[int, list[FramePrompt]], num_frames: int, height: int, width: int, *, video: str = "the video"
) -> None:
    """Raise :class:`PromptError` unless every prompt fits a video of ``num_frames`` frames of
    ``width`` × ``height`` pixels: frames in range, finite points inside the frame with one 0/1
    label each, masks of the frame's size. Cheap: run it before any model work."""
    for obj_id, prompts in objects.items():
        if not prompts:
            raise PromptError(f"object {obj_id} has no prompts in {video}: add at least one point")
        for prompt in prompts:
            if not 0 <= prompt.frame < num_frames:
                raise PromptError(
                    f"object {obj_id}: prompt on frame {prompt.frame} of {video}, which has {num_frames} frames "
                    f"(0–{num_frames - 1})"
                )
            if prompt.mask is not None:
                if prompt.mask.shape != (height, width):
                    raise PromptError(
                        f"object {obj_id}: the mask on frame {prompt.frame} is {prompt.mask.shape[1]}×"
                        f"{prompt.mask.shape[0]}, but {video} is {width}×{height}"
                    )
                continue
            pts = np.asarray(prompt.points, np.float64).reshape(-1, 2)
            lbl = np.asarray(prompt.labels).reshape(-1)
            if len(pts) == 0 or len(pts) != len(lbl) or not set(lbl.tolist()) <= {0, 1}:
                raise PromptError(f"object {obj_id}: frame {prompt.frame} needs points with one label (1 or 0) each")
            if not np.isfinite(pts).all():
                raise PromptError(f"object {obj_id}: a point on frame {prompt.frame} is not a finite number")
            if (
                (pts[:, 0] < 0).any()
                or (pts[:, 0] > width).any()
                or (pts[:, 1] < 0).any()
                or (pts[:, 1] > height).any()
            ):
                raise PromptError(
                    f"object {obj_id}: a point on frame {prompt.frame} lies outside the {width}×{height} frame"
                )


def add_prompts(predictor: Any, state: dict[str, Any], objects: dict[int, list[FramePrompt]]) -> None:
    """Add every object's prompts to ``state``; ``objects`` maps object id → its frame prompts."""
    check_prompts(objects, state["num_frames"], state["video_height"], state["video_width"])
    for obj_id, prompts in objects.items():
        for prompt in prompts:
            if prompt.mask is not None:
                predictor.add_new_mask(state, prompt.frame, obj_id, prompt.mask.astype(bool))
                continue
            pts = np.asarray(prompt.points, np.float32).reshape(-1, 2)
            lbl = np.asarray(prompt.labels, np.int32).reshape(-1)
            predictor.add_new_points_or_box(state, prompt.frame, obj_id, points=pts, labels=lbl)


def memory_window(predictor: Any) -> int:
    """How many past frames (in the direction of travel) SAM 2 may still read."""
    stride = max(1, int(getattr(predictor, "memory_temporal_stride_for_eval", 1)))
    return max(predictor.num_maskmem * stride, predictor.max_obj_ptrs_in_encoder) + 1


def prune(state: dict[str, Any], frame_idx: int, reverse: bool, window: int, keep: set[int]) -> int:
    """Drop non-conditioning outputs SAM 2 can no longer read; return how many were dropped."""
    dropped = 0
    for obj_out in state["output_dict_per_obj"].values():
        outputs = obj_out["non_cond_frame_outputs"]
        stale = [
            idx
            for idx in outputs
            if idx not in keep and (idx > frame_idx + window if reverse else idx < frame_idx - window)
        ]
        for idx in stale:
            del outputs[idx]
        dropped += len(stale)
    return dropped


def object_scores(state: dict[str, Any], frame_idx: int) -> dict[int, tuple[float | None, float | None]]:
    """``{obj_id: (object score, predicted IoU)}`` of ``frame_idx`` from the state's per-frame outputs.

    The object score is the sigmoid of the output's ``object_score_logits`` (SAM 2: the object is
    shown when above 0.5); the IoU is read from ``ious`` or ``iou`` where a predictor keeps one
    (SAM 2 1.1.0 does not). Either is None when the output lacks it. Call it while the frame's
    output still exists: right after the frame is yielded (pruning keeps the current frame).
    """
    return object_scores_later(state, frame_idx)()


def object_scores_later(
    state: dict[str, Any], frame_idx: int
) -> Callable[[], dict[int, tuple[float | None, float | None]]]:
    """:func:`object_scores` in two steps, for the model's thread: this call only queues the
    work on the model's device (sigmoid there, one asynchronous copy of every object's numbers
    into page-locked memory on CUDA: no synchronisation); the returned function, called on
    another thread, waits for that copy and builds the dict. Same values as :func:`object_scores`."""
    import torch

    owners: list[int] = []
    values: list[Any] = []  # per object: a 1-element logit tensor or None
    ious: list[Any] = []  # per object: a 1-element IoU tensor or None
    for idx, obj_id in state["obj_idx_to_id"].items():
        per_obj = state["output_dict_per_obj"].get(idx, {})
        frame_out = per_obj.get("cond_frame_outputs", {}).get(frame_idx)
        if frame_out is None:
            frame_out = per_obj.get("non_cond_frame_outputs", {}).get(frame_idx)
        frame_out = frame_out or {}
        owners.append(int(obj_id))
        iou = frame_out.get("ious", frame_out.get("iou"))
        ious.append(None if iou is None else torch.as_tensor(iou).float().max().reshape(1))
        logit = frame_out.get("object_score_logits")
        values.append(None if logit is None else torch.as_tensor(logit).float().reshape(-1)[:1])
    logits = [v for v in values if v is not None]
    iou_list = [v for v in ious if v is not None]
    # one tensor, one transfer for every object of the frame: scores first, then IoUs
    parts = ([torch.sigmoid(torch.cat(logits))] if logits else []) + ([torch.cat(iou_list)] if iou_list else [])
    packed, ready = None, None
    if parts:
        packed = torch.cat([p.to(parts[0].device) for p in parts])
        if packed.device.type == "cuda":
            packed = packed.to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()

    def finish() -> dict[int, tuple[float | None, float | None]]:
        if ready is not None:
            ready.synchronize()
        numbers = iter(packed.tolist() if packed is not None else [])
        scores = [None if v is None else float(next(numbers)) for v in values]
        got_ious = [None if v is None else float(next(numbers)) for v in ious]
        return {o: (s, i) for o, s, i in zip(owners, scores, got_ious, strict=True)}

    return finish


def prompted_frames(state: dict[str, Any]) -> list[int]:
    return sorted({t for out in state["output_dict_per_obj"].values() for t in out["cond_frame_outputs"]})


def propagate(
    predictor: Any,
    state: dict[str, Any],
    *,
    bounded: bool = True,
    autocast: Callable[[], Any] | None = None,
) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Yield ``(frame_idx, {obj_id: H×W bool mask})`` for every frame of the video, once each.

    With ``bounded`` (the default) outputs outside SAM 2's memory window are pruned as tracking
    goes; ``bounded=False`` keeps everything, as the stock predictor does.
    """
    for frame_idx, obj_ids, masks in propagate_tensors(predictor, state, bounded=bounded, autocast=autocast):
        masks = masks.cpu().numpy()
        yield frame_idx, {obj_id: masks[i] for i, obj_id in enumerate(obj_ids)}


def propagate_tensors(
    predictor: Any,
    state: dict[str, Any],
    *,
    bounded: bool = True,
    autocast: Callable[[], Any] | None = None,
) -> Iterator[tuple[int, list[int], Any]]:
    """Like :func:`propagate`, but yield ``(frame_idx, obj_ids, masks)`` with ``masks`` a
    ``len(obj_ids)×H×W`` bool tensor **on the predictor's device** (``H×W`` is the video size), so
    a GPU caller can encode masks before anything crosses to the CPU.
    """

    import torch

    # Consolidate prompts first so the prompted frames (and the protected window) are known.
    predictor.propagate_in_video_preflight(state)
    cond = prompted_frames(state)
    if not cond:
        raise PromptError("no object has a prompt in this video")
    start = cond[0]
    window = memory_window(predictor)
    keep = {t + d for t in cond for d in range(-window, window + 1)}
    ctx = autocast or contextlib.nullcontext

    def run(reverse: bool) -> Iterator[tuple[int, list[int], Any]]:
        with torch.inference_mode(), ctx():
            for frame_idx, obj_ids, masks in predictor.propagate_in_video(
                state, start_frame_idx=start, reverse=reverse
            ):
                out = masks[:, 0] > 0
                if bounded:
                    prune(state, frame_idx, reverse, window, keep)
                yield int(frame_idx), [int(o) for o in obj_ids], out

    # The first prompted frame is visited by both passes. Objects not prompted there are tracked
    # again by the backward pass, whose result wins (as when collecting the stock generator's
    # output into a dict); so that frame is held back until the backward pass reaches it.
    for item in run(reverse=False):
        if item[0] != start or start == 0:
            yield item
    if start > 0:
        yield from run(reverse=True)
