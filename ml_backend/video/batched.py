"""SAM 2's video predictor with the objects of a frame run as one batch where SAM 2 allows it.

SAM 2.1's ``SAM2VideoPredictor.propagate_in_video`` tracks objects one after another: on every
frame it runs memory attention, the mask decoder and the memory encoder once per object (batch
size 1), each object reading its own memory (``output_dict_per_obj[obj_idx]``). Every one of
those modules treats the batch dimension independently, so objects whose memory has the same
*layout* on a frame can run as one batch and get the same masks: same conditioning (prompted)
frames, and the same set of stored non-conditioning frames around the current one. Then
``_prepare_memory_conditioned_features`` picks the same memory frames, object pointers and
temporal encodings for each of them, and only the stored tensors differ per object.

:class:`BatchedVideoPredictor` groups the objects of each frame by that layout
(:func:`memory_layout`), runs each group of two or more through SAM 2's own
``_run_single_frame_inference`` with a **stacked output dict** (the group's per-object tensors
concatenated along the batch dimension, dim 0), and splits the result back into each object's
``output_dict_per_obj`` (views of the batched tensors, ``[i:i+1]``, exactly the shapes SAM 2
stores). Objects alone in their group run exactly as in SAM 2 (batch size 1). The public API is
SAM 2's: ``add_new_points_or_box``, ``add_new_mask``, ``propagate_in_video_preflight``,
``propagate_in_video``; its per-frame outputs (``pred_masks``, ``obj_ptr``,
``object_score_logits``, ``maskmem_features``) stay per object, so pruning and quality signals
read them as before.

On a CPU a tracking step does not run every stage on the whole group: one thread is not
launch-bound, and a batch whose working set outgrows the caches costs more than its objects one
by one. Memory attention then runs object by object, and the memory encoder and mask decoder in
chunks sized by the input pixels (:data:`CPU_BATCH_PIXELS`, :func:`chunk_size`; e.g. at 1024 px
the encoder per object, the decoder two objects at a time), each chunk through SAM 2's own method.
On a GPU every stage runs the whole group.

Typical groups: objects prompted on the same frame(s) share one layout on every frame (one
batch); an object prompted on another frame runs in its own group. Batched matmuls may round
differently in the last bits from batch-size-1 ones; masks agree to IoU ≥ 0.99 (tests and
``scripts/bench_video.py --objects-table``).

Importing this module imports torch and sam2: :mod:`ml_backend.models` imports it lazily.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor, SAM2VideoPredictorVOS
from tqdm import tqdm


def lookup_window(model: Any) -> int:
    """How many frames back (in the direction of travel) ``_prepare_memory_conditioned_features``
    may look up a non-conditioning output: memory frames (``num_maskmem`` with the eval stride)
    and object pointers (``max_obj_ptrs_in_encoder - 1``)."""
    stride = max(1, int(getattr(model, "memory_temporal_stride_for_eval", 1)))
    return max(model.num_maskmem * stride + 1, model.max_obj_ptrs_in_encoder)


def memory_layout(obj_output: dict[str, dict[int, Any]], frame_idx: int, reverse: bool, window: int) -> tuple:
    """What ``_prepare_memory_conditioned_features`` selects from for one object on ``frame_idx``.

    ``obj_output`` is one object's ``{"cond_frame_outputs": {frame: out}, "non_cond_frame_outputs":
    {frame: out}}``. The result is ``(conditioning frames, stored non-conditioning frames among
    the ``window`` frames before ``frame_idx`` in the direction of travel)``. Objects with equal
    layouts read memory of the same frames at the same temporal positions, so they may run as
    one batch. (A superset of what SAM 2 reads: it can only split groups, never merge wrong ones.)
    """
    cond = tuple(sorted(obj_output["cond_frame_outputs"]))
    non_cond = obj_output["non_cond_frame_outputs"]
    step = 1 if reverse else -1
    near = tuple(t for t in range(frame_idx + step, frame_idx + step * (window + 1), step) if t in non_cond)
    return cond, near


def group_objects(
    output_dict_per_obj: dict[int, dict[str, dict[int, Any]]],
    obj_inds: Sequence[int],
    frame_idx: int,
    reverse: bool,
    window: int,
) -> list[list[int]]:
    """``obj_inds`` split into groups of equal :func:`memory_layout`, each in index order, groups
    in order of their first object."""
    groups: dict[tuple, list[int]] = {}
    for obj_idx in obj_inds:
        key = memory_layout(output_dict_per_obj[obj_idx], frame_idx, reverse, window)
        groups.setdefault(key, []).append(obj_idx)
    return list(groups.values())


def stack_outputs(outs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One frame's outputs of several objects (batch size 1 each) as one output of batch size
    ``len(outs)``: the tensors SAM 2 reads from memory concatenated along dim 0."""
    first = outs[0]
    batch = len(outs)
    pos = first["maskmem_pos_enc"]  # the same for every object (a constant SAM 2 caches)
    return {
        "maskmem_features": torch.cat([o["maskmem_features"] for o in outs], dim=0),
        "maskmem_pos_enc": None if pos is None else [x.expand(batch, *x.shape[1:]) for x in pos],
        "obj_ptr": torch.cat([o["obj_ptr"] for o in outs], dim=0),
    }


def slice_output(out: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
    """Objects ``lo:hi`` of an output of several objects (tensors and lists of tensors sliced
    along dim 0; views, no copies)."""
    part = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            part[key] = value[lo:hi]
        elif isinstance(value, list):
            part[key] = [x[lo:hi] for x in value]
        else:
            part[key] = value
    return part


def split_output(out: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    """A compact output of batch size ``batch`` (``_run_single_frame_inference``) as ``batch``
    outputs of batch size 1, as SAM 2 stores them per object (views, no copies)."""
    return [slice_output(out, i, i + 1) for i in range(batch)]


#: On a CPU, how many pixels of the model's input size (``image_size²`` per object) one call of
#: a stage may batch (at least one object per call). Measured on the 2-core development machine,
#: one torch thread, per stage, a batch against the same objects one by one (CPU time): memory
#: attention batched is never faster (1.03–1.05× at 256 px, 1.04–1.13× at 512, 1.05–1.17× at
#: 1024), so it runs object by object; the memory encoder wins while the batch's masks stay
#: small (8 × 256²: 0.77×; 2 × 512²: 0.97×; 4 × 512²: 1.16×; 3 × 1024²: 1.24×); the mask decoder
#: up to a few million pixels (8 × 256²: 0.59×; 8 × 512²: 0.68×; 3 × 1024²: 0.88×; 8 × 1024²:
#: 1.09×). Past those sizes a batch's working set outgrows the caches and a batch costs more
#: than its objects one by one. On a GPU every stage runs the whole group (launch-bound).
CPU_BATCH_PIXELS = {
    "memory_attention": 0,
    "memory_encoder": 8 * 256 * 256,
    "mask_decoder": 2 * 1024 * 1024,
}


def chunk_size(stage: str, device: torch.device, image_size: int, batch: int) -> int:
    """How many objects of a batch of ``batch`` one call of ``stage`` runs on ``device``."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CPU_BATCH_PIXELS[stage] // (image_size * image_size)))


def batching_pays(device: torch.device, image_size: int) -> bool:
    """Whether tracking objects as one batch costs less than SAM 2's loop on ``device`` at
    ``image_size``: always on a GPU; on a CPU only while the memory encoder batches two objects or
    more (up to 512 px with :data:`CPU_BATCH_PIXELS`). Past that only the mask decoder would
    batch, and its gain does not repay the batched path's bookkeeping: at 1024 px, 3 and 8
    objects measured 0.86–1.10× the loop's CPU time per frame (``bench_video.py
    --objects-table``), so there the predictor runs SAM 2's own loop and is never slower."""
    return device.type != "cpu" or chunk_size("memory_encoder", device, image_size, 2) > 1


def chunks(batch: int, size: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` of consecutive chunks of at most ``size`` objects."""
    return [(lo, min(lo + size, batch)) for lo in range(0, batch, size)]


def processing_order(
    per_obj: dict[int, Any],
    num_frames: int,
    start_frame_idx: int | None,
    max_frame_num_to_track: int | None,
    reverse: bool,
) -> range | list[int]:
    """The frames ``propagate_in_video`` visits, in order: start, end and direction exactly as
    SAM 2 sets them (the first prompted frame by default, the whole video)."""
    if start_frame_idx is None:
        start_frame_idx = min(t for out in per_obj.values() for t in out["cond_frame_outputs"])
    if max_frame_num_to_track is None:
        max_frame_num_to_track = num_frames
    if reverse:
        end_frame_idx = max(start_frame_idx - max_frame_num_to_track, 0)
        return range(start_frame_idx, end_frame_idx - 1, -1) if start_frame_idx > 0 else []
    end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
    return range(start_frame_idx, end_frame_idx + 1)


class BatchedObjects:
    """Mixin over a ``SAM2VideoPredictor`` class: ``propagate_in_video`` runs objects with the
    same memory layout as one batch. Everything else is SAM 2's.

    On a CPU the three per-object stages of a tracked frame (memory attention, mask decoder,
    memory encoder) run the batch in chunks of :func:`chunk_size` objects, each chunk through
    SAM 2's own method: batching only where it costs less than one by one on that device and
    size. Every stage treats objects independently, so chunks change no result."""

    def _chunk(self, stage: str, batch: int, device: torch.device) -> int:
        return chunk_size(stage, device, self.image_size, batch)

    def _prepare_memory_conditioned_features(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        output_dict,
        num_frames,
        track_in_reverse=False,
    ):
        """SAM 2's memory attention, in chunks of objects (:func:`chunk_size`)."""
        batch = current_vision_feats[-1].size(1)
        size = self._chunk("memory_attention", batch, current_vision_feats[-1].device)
        if size >= batch or is_init_cond_frame:
            return super()._prepare_memory_conditioned_features(
                frame_idx,
                is_init_cond_frame,
                current_vision_feats,
                current_vision_pos_embeds,
                feat_sizes,
                output_dict,
                num_frames,
                track_in_reverse,
            )
        parts = []
        for lo, hi in chunks(batch, size):
            part_dict = {
                key: {t: slice_output(out, lo, hi) for t, out in outs.items()} for key, outs in output_dict.items()
            }
            parts.append(
                super()._prepare_memory_conditioned_features(
                    frame_idx,
                    is_init_cond_frame,
                    [x[:, lo:hi] for x in current_vision_feats],
                    [x[:, lo:hi] for x in current_vision_pos_embeds],
                    feat_sizes,
                    part_dict,
                    num_frames,
                    track_in_reverse,
                )
            )
        return torch.cat(parts, dim=0)

    def _forward_sam_heads(
        self,
        backbone_features,
        point_inputs=None,
        mask_inputs=None,
        high_res_features=None,
        multimask_output=False,
    ):
        """SAM 2's prompt encoder and mask decoder; while tracking (no prompts), in chunks of
        objects (:func:`chunk_size`)."""
        batch = backbone_features.size(0)
        size = self._chunk("mask_decoder", batch, backbone_features.device)
        if size >= batch or point_inputs is not None or mask_inputs is not None:
            return super()._forward_sam_heads(
                backbone_features, point_inputs, mask_inputs, high_res_features, multimask_output
            )
        parts = [
            super(BatchedObjects, self)._forward_sam_heads(
                backbone_features[lo:hi],
                None,
                None,
                None if high_res_features is None else [x[lo:hi] for x in high_res_features],
                multimask_output,
            )
            for lo, hi in chunks(batch, size)
        ]
        return tuple(torch.cat(outs, dim=0) for outs in zip(*parts, strict=True))

    def _encode_new_memory(
        self,
        current_vision_feats,
        feat_sizes,
        pred_masks_high_res,
        object_score_logits,
        is_mask_from_pts,
    ):
        """SAM 2's memory encoder, in chunks of objects (:func:`chunk_size`; the whole batch when
        ``non_overlap_masks_for_mem_enc`` compares the objects of the batch)."""
        batch = pred_masks_high_res.size(0)
        size = self._chunk("memory_encoder", batch, pred_masks_high_res.device)
        if size >= batch or self.non_overlap_masks_for_mem_enc:
            return super()._encode_new_memory(
                current_vision_feats, feat_sizes, pred_masks_high_res, object_score_logits, is_mask_from_pts
            )
        feats, pos_encs = [], []
        for lo, hi in chunks(batch, size):
            features, pos_enc = super()._encode_new_memory(
                [x[:, lo:hi] for x in current_vision_feats],
                feat_sizes,
                pred_masks_high_res[lo:hi],
                object_score_logits[lo:hi],
                is_mask_from_pts,
            )
            feats.append(features)
            pos_encs.append(pos_enc)
        return torch.cat(feats, dim=0), [torch.cat(levels, dim=0) for levels in zip(*pos_encs, strict=True)]

    def _stacked_output_dict(
        self, output_dict_per_obj: dict[int, Any], group: Sequence[int], frame_idx: int, reverse: bool, window: int
    ) -> dict[str, dict[int, Any]]:
        """The group's memory as one output dict of batch size ``len(group)``: every conditioning
        frame, and the stored non-conditioning frames SAM 2 may read on ``frame_idx``."""
        first = output_dict_per_obj[group[0]]
        cond, near = memory_layout(first, frame_idx, reverse, window)
        return {
            "cond_frame_outputs": {
                t: stack_outputs([output_dict_per_obj[o]["cond_frame_outputs"][t] for o in group]) for t in cond
            },
            "non_cond_frame_outputs": {
                t: stack_outputs([output_dict_per_obj[o]["non_cond_frame_outputs"][t] for o in group]) for t in near
            },
        }

    def _track_group(
        self, inference_state: dict[str, Any], group: Sequence[int], frame_idx: int, reverse: bool, window: int
    ) -> list[tuple[dict[str, Any], torch.Tensor]]:
        """Track the objects ``group`` (same memory layout) on ``frame_idx``; ``(compact output,
        low-res mask logits 1×1×h×w)`` per object, as SAM 2's batch-size-1 call returns them."""
        per_obj = inference_state["output_dict_per_obj"]
        if len(group) == 1:
            output_dict = per_obj[group[0]]
        else:
            output_dict = self._stacked_output_dict(per_obj, group, frame_idx, reverse, window)
        current_out, pred_masks = self._run_single_frame_inference(
            inference_state=inference_state,
            output_dict=output_dict,
            frame_idx=frame_idx,
            batch_size=len(group),
            is_init_cond_frame=False,
            point_inputs=None,
            mask_inputs=None,
            reverse=reverse,
            run_mem_encoder=True,
        )
        if len(group) == 1:
            return [(current_out, pred_masks)]
        outs = split_output(current_out, len(group))
        return [(out, pred_masks[i : i + 1]) for i, out in enumerate(outs)]

    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state: dict[str, Any],
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """SAM 2's ``propagate_in_video`` (same arguments, same ``(frame_idx, obj_ids,
        masks N×1×H×W)`` per frame), with objects of equal memory layout tracked as one batch;
        SAM 2's own loop where batching does not pay (:func:`batching_pays`)."""
        if not batching_pays(inference_state["device"], self.image_size):
            yield from super().propagate_in_video(inference_state, start_frame_idx, max_frame_num_to_track, reverse)
            return
        self.propagate_in_video_preflight(inference_state)

        obj_ids = inference_state["obj_ids"]
        num_frames = inference_state["num_frames"]
        batch_size = self._get_obj_num(inference_state)
        per_obj = inference_state["output_dict_per_obj"]
        window = lookup_window(self)

        order = processing_order(per_obj, num_frames, start_frame_idx, max_frame_num_to_track, reverse)
        device = inference_state["device"]
        for frame_idx in tqdm(order, desc="propagate in video"):
            pred_masks_per_obj: list[torch.Tensor | None] = [None] * batch_size
            to_track = []
            for obj_idx in range(batch_size):
                obj_output_dict = per_obj[obj_idx]
                if frame_idx in obj_output_dict["cond_frame_outputs"]:
                    # a prompted frame: its consolidated output is used as is (as in SAM 2)
                    current_out = obj_output_dict["cond_frame_outputs"][frame_idx]
                    pred_masks_per_obj[obj_idx] = current_out["pred_masks"].to(device, non_blocking=True)
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(inference_state, frame_idx, obj_idx)
                else:
                    to_track.append(obj_idx)
            if self.non_overlap_masks_for_mem_enc:
                # that option compares the objects of a batch in the memory encoder: SAM 2's loop
                # (batch size 1) never does, so neither may we (SAM 2.1's configs leave it off)
                groups = [[obj_idx] for obj_idx in to_track]
            else:
                groups = group_objects(per_obj, to_track, frame_idx, reverse, window)
            for group in groups:
                results = self._track_group(inference_state, group, frame_idx, reverse, window)
                for obj_idx, (current_out, pred_masks) in zip(group, results, strict=True):
                    per_obj[obj_idx]["non_cond_frame_outputs"][frame_idx] = current_out
                    pred_masks_per_obj[obj_idx] = pred_masks
            for obj_idx in range(batch_size):
                inference_state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}

            all_pred_masks = torch.cat(pred_masks_per_obj, dim=0) if batch_size > 1 else pred_masks_per_obj[0]
            _, video_res_masks = self._get_orig_video_res_output(inference_state, all_pred_masks)
            yield frame_idx, obj_ids, video_res_masks


class BatchedVideoPredictor(BatchedObjects, SAM2VideoPredictor):
    """``SAM2VideoPredictor`` with batched objects (:class:`BatchedObjects`)."""


class BatchedVideoPredictorVOS(BatchedObjects, SAM2VideoPredictorVOS):
    """``SAM2VideoPredictorVOS`` (``torch.compile``, ``SAM2_COMPILE``) with batched objects."""
