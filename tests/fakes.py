"""Deterministic stand-ins at the model seams. Each seam is also tested with real SAM 2."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np


class DiscSegmenter:
    """Image segmenter stand-in: the mask is the union of discs around positive points minus
    discs around negative points. Implements ``embed`` / ``predict`` like ``ImageSegmenter``:
    one model lock, each key encoded once (a second caller waits for the first), and an optional
    ``encode_seconds`` of work per encode so timing rules can be tested."""

    def __init__(self, radius: float = 15.0, encode_seconds: float = 0.0) -> None:
        self.radius = radius
        self.encode_seconds = encode_seconds
        self.encodes = 0
        self.encoded: list = []  # keys in encode order
        self.on_encode = None  # called with the key inside each encode (holding the model lock)
        self._cache: dict = {}
        self._model_lock = threading.Lock()
        self._key_locks: dict = {}
        self._guard = threading.Lock()

    def embed(self, key, image, *, protected=None):
        import time

        if key in self._cache:
            return self._cache[key]
        with self._guard:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                array = image() if callable(image) else image
                with self._model_lock:
                    time.sleep(self.encode_seconds)
                    if self.on_encode is not None:
                        self.on_encode(key)  # a gate of the test's: the encode lasts until it returns
                    self.encodes += 1
                    self.encoded.append(key)
                self._cache[key] = SimpleNamespace(orig_hw=array.shape[:2])
        return self._cache[key]

    def predict(self, embedding, points_xy, labels):
        with self._model_lock:  # a click waits for an encode in progress, as with the real model
            pass
        h, w = embedding.orig_hw
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        for (x, y), label in zip(np.asarray(points_xy), np.asarray(labels), strict=False):
            if label == 1:
                mask |= (xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2
        for (x, y), label in zip(np.asarray(points_xy), np.asarray(labels), strict=False):
            if label == 0:
                mask &= ~((xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2)
        return mask, 1.0


class ColorVideoPredictor:
    """Video predictor stand-in for exactness tests on synthetic videos with flat-coloured shapes.

    On a prompted frame the object's colour is read under its first positive point; on every
    frame the mask is the set of pixels of exactly that colour in the **original** frame. Runs the
    same calls as ``SAM2VideoPredictor`` (``add_new_points_or_box``, ``add_new_mask``,
    ``propagate_in_video_preflight``, ``propagate_in_video``) and keeps ``output_dict_per_obj``
    shaped like SAM 2's, so frame indexing, coordinate scaling and backward coverage are exercised
    by the real pipeline code.
    """

    num_maskmem = 7
    max_obj_ptrs_in_encoder = 16
    memory_temporal_stride_for_eval = 1

    def __init__(self, image_size: int = 64) -> None:
        import torch

        self.device = torch.device("cpu")
        self.image_size = image_size
        self.colors: dict = {}

    def _obj(self, state, obj_id):
        if obj_id not in state["obj_id_to_idx"]:
            idx = len(state["obj_ids"])
            state["obj_id_to_idx"][obj_id] = idx
            state["obj_idx_to_id"][idx] = obj_id
            state["obj_ids"].append(obj_id)
            state["output_dict_per_obj"][idx] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        return state["obj_id_to_idx"][obj_id]

    def add_new_points_or_box(self, state, frame_idx, obj_id, points, labels, **_):
        idx = self._obj(state, obj_id)
        frame = state["images"].source.read(frame_idx)
        x, y = next(p for p, label in zip(points, labels, strict=False) if label == 1)
        self.colors[(id(state), obj_id)] = tuple(frame[int(y), int(x)])
        state["output_dict_per_obj"][idx]["cond_frame_outputs"][frame_idx] = {}

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        idx = self._obj(state, obj_id)
        frame = state["images"].source.read(frame_idx)
        values, counts = np.unique(frame[mask].reshape(-1, 3), axis=0, return_counts=True)
        self.colors[(id(state), obj_id)] = tuple(values[np.argmax(counts)])
        state["output_dict_per_obj"][idx]["cond_frame_outputs"][frame_idx] = {}

    def propagate_in_video_preflight(self, state):
        if not state["obj_ids"]:
            raise RuntimeError("no prompts")

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        import torch

        n = state["num_frames"]
        order = range(start_frame_idx, -1, -1) if reverse else range(start_frame_idx, n)
        for frame_idx in order:
            frame = state["images"].source.read(frame_idx)
            masks = []
            for obj_id in state["obj_ids"]:
                color = np.array(self.colors[(id(state), obj_id)], np.uint8)
                masks.append((frame == color).all(axis=2))
                idx = state["obj_id_to_idx"][obj_id]
                state["output_dict_per_obj"][idx]["non_cond_frame_outputs"][frame_idx] = {}
            logits = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32) * 2 - 1)
            yield frame_idx, list(state["obj_ids"]), logits
