"""Masks as Label Studio ``brushlabels`` results in Label Studio's brush RLE.

label-studio-sdk's ``mask2rle`` is the reference encoder (and ``decode_rle`` the decoder). It
builds a bit string in a Python loop over runs, which costs tens of milliseconds for one
640×480 mask — a large share of an interactive click. :func:`encode_rle` produces the same
integers with numpy; tests compare it with ``mask2rle`` on many masks, byte for byte.

The format: a row-major ``H×W×4`` byte buffer (the mask value repeated in 4 channels), bit-packed
MSB first — 32-bit length, 5-bit ``wordsize − 1`` (7), four 4-bit ``rle_size − 1`` values (3, 4,
8, 16), then one record per run: flag 1 (series), 2-bit size index, ``length − 1`` in 3/4/8/16
bits, 8-bit value; runs over 65,536 repeat full 16-bit records. Zero bits pad to whole bytes
(a whole zero byte when already aligned, as the reference does).
"""

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
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an H×W mask, got shape {mask.shape}")
    height, width = mask.shape
    rle = encode_rle((mask > 0).astype(np.uint8) * 255)
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


_SIZES = ((8, 0, 3), (16, 1, 4), (256, 2, 8), (65536, 3, 16))  # max run, size index, length bits


def encode_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of an ``H×W`` uint8 mask; equal to ``label_studio_sdk`` ``mask2rle``."""
    flat = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    n = flat.size
    if n == 0:
        raise ValueError("empty mask")
    change = np.flatnonzero(flat[1:] != flat[:-1])
    ends = np.append(change, n - 1)
    lengths = np.diff(np.append(-1, ends)).astype(np.int64) * 4  # 4 channels per pixel
    values = flat[ends].astype(np.int64)
    # runs longer than 65,536 become full 65,536-long records plus a remainder
    full = np.maximum((lengths - 1) // 65536, 0)
    rec_len = np.repeat(lengths, full + 1)
    rec_val = np.repeat(values, full + 1)
    starts = np.cumsum(full + 1) - (full + 1)
    within = np.arange(rec_len.size) - np.repeat(starts, full + 1)
    is_last = within == np.repeat(full, full + 1)
    rec_len = np.where(is_last, rec_len - 65536 * np.repeat(full, full + 1), 65536)
    codes = np.zeros(rec_len.size, np.int64)
    widths = np.zeros(rec_len.size, np.int64)
    single = rec_len == 1
    codes[single] = rec_val[single]  # 0, 00, 000, value
    widths[single] = 14
    lower = 1
    for top, index, bits in _SIZES:
        sel = ~single & (rec_len > lower) & (rec_len <= top)
        width = 1 + 2 + bits + 8
        codes[sel] = (((1 << 2 | index) << bits | (rec_len[sel] - 1)) << 8) | rec_val[sel]
        widths[sel] = width
        lower = top
    header_bits = f"{n * 4:032b}{7:05b}" + "".join(f"{x - 1:04b}" for x in (3, 4, 8, 16))
    header = np.frombuffer(header_bits.encode(), np.uint8) - ord("0")
    shifts = np.arange(26, -1, -1)
    bit_matrix = (codes[:, None] >> shifts) & 1
    keep = shifts[None, :] < widths[:, None]
    body = bit_matrix[keep].astype(np.uint8)
    total = header.size + body.size
    pad = 8 - total % 8
    bits = np.concatenate([header, body, np.zeros(pad, np.uint8)])
    return np.packbits(bits).astype(int).tolist()


def result_to_mask(result: dict[str, Any]) -> np.ndarray:
    """Decode a ``brushlabels`` result back to an ``H×W`` bool mask."""
    from label_studio_sdk.converter.brush import decode_rle

    height, width = int(result["original_height"]), int(result["original_width"])
    flat = decode_rle(result["value"]["rle"])
    return np.reshape(flat, (height, width, 4))[:, :, 3] > 0
