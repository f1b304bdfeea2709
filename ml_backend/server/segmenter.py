"""Interactive image segmentation: embed an image once, decode many clicks against it.

Lifecycle, as in segment-anything's predictor::

    segmenter = ImageSegmenter(model, settings)
    emb = segmenter.embed(key, image)          # cached: a repeat key costs a dict lookup
    mask, score = segmenter.predict(emb, points_xy, labels)

``image`` is an ``H×W×3`` uint8 RGB array. ``points_xy`` is ``N×2`` float in **pixels** of that
image (x right, y down); ``labels`` is ``N`` ints, 1 = positive, 0 = negative. The mask is an
``H×W`` bool array. The SAM 2 image encoder runs only on a cache miss (``segmenter.encodes``
counts them); the prompt encoder and mask decoder run on every click.

Two locks, two predictor objects over one model: the image encoder runs under ``_encode_lock``,
the prompt encoder and mask decoder under ``_decode_lock``. A click on a cached embedding
therefore never waits for an encoder run (a prefetch, or another annotator's first click on a
new page); encoder runs queue behind each other, one at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_backend.models import autocast


@dataclass
class Embedding:
    """SAM 2 image features of one image.

    ``image_embed``: ``[1, 256, S/16, S/16]``; ``high_res_feats``: ``[1, 32, S/4, S/4]`` and
    ``[1, 64, S/8, S/8]`` (S = model image size); ``orig_hw``: the image's ``(height, width)``.
    """

    image_embed: Any
    high_res_feats: list[Any]
    orig_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        tensors = [self.image_embed, *self.high_res_feats]
        return int(sum(t.element_size() * t.nelement() for t in tensors))


class EmbeddingCache:
    """Thread-safe LRU of :class:`Embedding` bounded by item count and by bytes."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, Embedding] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Embedding | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: Hashable, item: Embedding, protected: set[Hashable] | None = None) -> bool:
        """Store ``item``, evicting least recently used entries to stay in bounds; True if stored.

        With ``protected`` (a prefetch), no key in it is evicted: when the bounds cannot be
        kept otherwise, ``item`` is not stored.
        """
        size = item.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            if size > self.max_bytes or self.max_items <= 0:
                return False
            if protected is not None and not self._room(size, protected):
                return False
            self._items[key] = item
            self.nbytes += size
            victims = (k for k in list(self._items) if k != key and (protected is None or k not in protected))
            while len(self._items) > self.max_items or self.nbytes > self.max_bytes:
                dropped = self._items.pop(next(victims))
                self.nbytes -= dropped.nbytes
            return True

    def has_room(self, size: int, protected: set[Hashable]) -> bool:
        """Whether an entry of ``size`` bytes fits without evicting a key in ``protected``."""
        with self._lock:
            return self._room(size, protected)

    def _room(self, size: int, protected: set[Hashable]) -> bool:
        kept = [self._items[k] for k in self._items if k in protected]
        return len(kept) + 1 <= self.max_items and sum(e.nbytes for e in kept) + size <= self.max_bytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "items": len(self._items),
                "bytes": self.nbytes,
                "max_items": self.max_items,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }


class ImageSegmenter:
    """SAM 2 image predictor with a per-image embedding cache. Safe to share between threads."""

    def __init__(self, model: Any, settings: Any, cache: EmbeddingCache | None = None) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.settings = settings
        self.cache = (
            cache
            if cache is not None
            else EmbeddingCache(settings.embedding_cache_items, settings.embedding_cache_bytes)
        )
        size = settings.image_size
        # SAM2ImagePredictor assumes 1024 px; its feature sizes must follow the model's size.
        feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        self._predictor = SAM2ImagePredictor(model)  # the image encoder (set_image)
        self._decoder = SAM2ImagePredictor(model)  # prompt encoder + mask decoder, same weights
        for predictor in (self._predictor, self._decoder):
            predictor._bb_feat_sizes = feat_sizes
        self.device = self._predictor.device
        self._encode_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._key_locks_guard = threading.Lock()
        self.encodes = 0
        self._last_nbytes = 0

    def embed(self, key: Hashable, image: np.ndarray | Any, *, protected: set[Hashable] | None = None) -> Any:
        """The cached embedding for ``key``, computing it from ``image`` on a miss.

        ``image`` may be a zero-argument callable returning the array, so that a hit never
        decodes the image. Concurrent misses on one key encode once: a click on a frame being
        prefetched waits for that encoding. With ``protected`` (a prefetch) nothing in it is
        evicted, and None is returned without encoding when there is no room.
        """
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        with self._lock_for(key):
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            if protected is not None and self._last_nbytes and not self.cache.has_room(self._last_nbytes, protected):
                return None
            array = image() if callable(image) else image
            embedding = self._encode(array)
            self._last_nbytes = embedding.nbytes
            stored = self.cache.put(key, embedding, protected)
            return embedding if stored or protected is None else None

    def _lock_for(self, key: Hashable) -> threading.Lock:
        with self._key_locks_guard:
            if len(self._key_locks) > 4 * max(self.cache.max_items, 1):
                self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
            return self._key_locks.setdefault(key, threading.Lock())

    def _encode(self, image: np.ndarray) -> Embedding:
        import torch

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
        with self._encode_lock, torch.inference_mode(), autocast(self.settings, self.device):
            self._predictor.set_image(image)
            features = self._predictor._features
            embedding = Embedding(
                image_embed=features["image_embed"],
                high_res_feats=list(features["high_res_feats"]),
                orig_hw=(int(image.shape[0]), int(image.shape[1])),
            )
            self._predictor.reset_predictor()
            self.encodes += 1
        return embedding

    def predict(self, embedding: Embedding, points_xy: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
        """The best mask for the points: ``(H×W bool, predicted IoU)``.

        One point asks SAM 2 for three candidate masks and keeps the best-scored one (a single
        click is ambiguous); several points ask for one mask.
        """
        import torch

        points_xy = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
        labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        multimask = len(labels) == 1
        with self._decode_lock, torch.inference_mode(), autocast(self.settings, self.device):
            p = self._decoder
            p._features = {"image_embed": embedding.image_embed, "high_res_feats": embedding.high_res_feats}
            p._orig_hw = [embedding.orig_hw]
            p._is_image_set = True
            p._is_batch = False
            try:
                masks, scores, _ = p.predict(point_coords=points_xy, point_labels=labels, multimask_output=multimask)
            finally:
                p.reset_predictor()
        best = int(np.argmax(scores))
        return np.asarray(masks[best]) > 0, float(scores[best])
