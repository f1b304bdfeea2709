"""Masks in exports: COCO RLE in and out (on the CPU or the model's device), boxes, nearest-neighbour resizing."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of an ``H×W`` bool mask: ``{'size': [h, w], 'counts': str}``."""

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (end-exclusive) of an ``H×W`` bool mask's set pixels, or
    None when none is set. Reads the mask row by row (contiguous), so it costs a fraction of a
    millisecond at 1080p."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[top:bottom].any(axis=0))
    return top, bottom, int(cols[0]), int(cols[-1]) + 1


def coco_counts_string(counts: np.ndarray) -> str:
    """The compressed COCO RLE string of run lengths ``counts`` (pycocotools' ``rleToString``),
    computed with whole-array numpy operations, which release the GIL: encoding a noise mask's
    hundreds of thousands of runs never holds up the model's thread for long, as pycocotools (a
    C loop under the GIL) would.

    Each count (minus the count two places before it, from the fourth on) is written as 5-bit
    groups, least significant first, each as ``chr(48 + group)`` with ``0x20`` set while more
    groups follow; the last group's ``0x10`` bit carries the sign."""
    counts = np.asarray(counts, np.int64)
    x = counts.copy()
    if x.size > 3:
        x[3:] -= counts[1:-2]
    # characters per count: n where -16·32^(n-1) ≤ x < 16·32^(n-1)
    length = np.ones(x.size, np.int64)
    limit = 16
    while True:
        wider = (x >= limit) | (x < -limit)
        if not wider.any():
            break
        length += wider
        limit *= 32
    starts = np.cumsum(length) - length
    out = np.empty(int(length.sum()), np.uint8)
    # one 5-bit group per round, for the counts that still have one to write
    pos, rest, left = starts, x, length
    while pos.size:
        group = rest & 0x1F
        more = left > 1
        out[pos] = 48 + (group | np.where(more, 0x20, 0))
        pos, rest, left = pos[more] + 1, rest[more] >> 5, left[more] - 1
    return out.tobytes().decode("ascii")


def mask_rle(mask: np.ndarray, box: tuple[int, int, int, int] | None = None) -> dict[str, Any] | None:
    """:func:`rle_encode` of a non-empty ``H×W`` bool mask, byte for byte, or None when it is empty.

    Encodes only the mask's bounding box (``box``: :func:`mask_box`, computed when not given): the
    runs of set pixels are found column by column in the box (COCO RLE is column-major), placed
    at their offsets in the whole frame and written as COCO's string (:func:`coco_counts_string`).
    A real object's mask covers a small part of a 1080p frame, so this costs a fraction of
    encoding the whole frame (which needs a column-major copy of it); every step is a numpy
    operation that releases the GIL, so even a noise mask does not hold up the model's thread.
    """
    box = mask_box(mask) if box is None else box
    if box is None:
        return None
    height, width = mask.shape
    top, bottom, left, right = box
    rows = bottom - top
    # One column of the box per row of `cols`, after a zero (runs never cross columns), and a
    # final zero: the changes of value along it then alternate start, end, start, end...
    cols = np.zeros((right - left) * (rows + 1) + 1, bool)
    cols[:-1].reshape(right - left, rows + 1)[:, 1:] = mask[top:bottom, left:right].T
    change = np.flatnonzero(cols[1:] != cols[:-1]) + 1
    starts, last = change[0::2], change[1::2] - 1  # first and last set pixel of each run
    # offsets in the whole frame, column-major: column (left + j), row (top + i)
    starts = (left + starts // (rows + 1)) * height + top + starts % (rows + 1) - 1
    ends = (left + last // (rows + 1)) * height + top + last % (rows + 1)
    if rows == height and starts.size > 1:  # a run reaching the bottom continues at the next top
        joined = starts[1:] == ends[:-1]
        if joined.any():
            starts = starts[np.concatenate(([True], ~joined))]
            ends = ends[np.concatenate((~joined, [True]))]
    bounds = np.empty(2 * starts.size + 2, np.int64)
    bounds[0], bounds[1:-1:2], bounds[2:-1:2], bounds[-1] = 0, starts, ends, height * width
    counts = np.diff(bounds)
    if counts[-1] == 0:  # the last run reaches the end of the frame: no trailing background
        counts = counts[:-1]
    return {"size": [height, width], "counts": coco_counts_string(counts)}


def rle_encode_tensor(masks: Any) -> list[dict[str, Any]]:
    """Uncompressed COCO RLEs (``{'size': [h, w], 'counts': [int, ...]}``) of an ``N×H×W`` bool
    tensor, computed where the tensor lives: on a GPU the pixel scan runs there and only the run
    lengths come back to the CPU. :func:`rle_compress` turns each into what :func:`rle_encode`
    gives for the same mask. An all-empty mask has one count (``H·W``)."""
    from sam2.utils.amg import mask_to_rle_pytorch

    return mask_to_rle_pytorch(masks)


def rle_compress(uncompressed: dict[str, Any]) -> dict[str, Any]:
    """The compressed COCO RLE of an uncompressed one, byte-identical to :func:`rle_encode`."""
    from sam2.utils.amg import coco_encode_rle

    rle = coco_encode_rle(uncompressed)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:

    counts = rle["counts"]
    return mask_utils.decode(
        {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    ).astype(bool)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """``mask`` (``H×W``, bool or 0/1) as an ``height×width`` bool mask, nearest neighbour (no new
    values at edges); the same array when it has that size already."""
    mask = np.asarray(mask)
    if mask.shape == (height, width):
        return mask if mask.dtype == bool else mask > 0
    import cv2

    small = mask.view(np.uint8) if mask.dtype == bool else np.asarray(mask, np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST) > 0
