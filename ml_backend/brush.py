"""Masks as Label Studio ``brushlabels`` results, encoded with label-studio-sdk's brush RLE."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np


def mask_to_result(
    mask: np.ndarray,
    *,
    from_name: str,
    to_name: str,
    label: str,
    item_index: int | None = None,
    score: float | None = None,
    region_id: str | None = None,
) -> dict[str, Any]:
    """A ``brushlabels`` result for an ``H×W`` bool/0-1 mask (``item_index`` 0-based or None)."""
    from label_studio_sdk.converter.brush import mask2rle

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an H×W mask, got shape {mask.shape}")
    height, width = mask.shape
    rle = mask2rle((mask > 0).astype(np.uint8) * 255)
    result: dict[str, Any] = {
        "id": region_id or uuid.uuid4().hex[:10],
        "from_name": from_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": [int(v) for v in rle], "brushlabels": [label]},
    }
    if item_index is not None:
        result["item_index"] = int(item_index)
    if score is not None:
        result["score"] = float(score)
    return result


def result_to_mask(result: dict[str, Any]) -> np.ndarray:
    """Decode a ``brushlabels`` result back to an ``H×W`` bool mask."""
    from label_studio_sdk.converter.brush import decode_rle

    height, width = int(result["original_height"]), int(result["original_width"])
    flat = decode_rle(result["value"]["rle"])
    return np.reshape(flat, (height, width, 4))[:, :, 3] > 0
