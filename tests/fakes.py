"""Deterministic stand-ins at the model seams. Each seam is also tested with real SAM 2."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


class DiscSegmenter:
    """Image segmenter stand-in: the mask is the union of discs around positive points minus
    discs around negative points. Implements ``embed`` / ``predict`` like ``ImageSegmenter``."""

    def __init__(self, radius: float = 15.0) -> None:
        self.radius = radius
        self.encodes = 0
        self._cache: dict = {}

    def embed(self, key, image):
        if key not in self._cache:
            array = image() if callable(image) else image
            self.encodes += 1
            self._cache[key] = SimpleNamespace(orig_hw=array.shape[:2])
        return self._cache[key]

    def predict(self, embedding, points_xy, labels):
        h, w = embedding.orig_hw
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        for (x, y), label in zip(np.asarray(points_xy), np.asarray(labels)):
            if label == 1:
                mask |= (xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2
        for (x, y), label in zip(np.asarray(points_xy), np.asarray(labels)):
            if label == 0:
                mask &= ~((xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2)
        return mask, 1.0
