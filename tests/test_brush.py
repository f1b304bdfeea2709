"""Our numpy brush RLE encoder against label-studio-sdk's reference encoder and decoder."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, mask2rle

from ml_backend.labelstudio.brush import encode_rle, mask_to_result, result_to_mask


def masks():
    rng = np.random.default_rng(0)
    yield np.zeros((1, 1), np.uint8)
    yield np.full((1, 1), 255, np.uint8)
    yield np.zeros((480, 640), np.uint8)  # one run far over 65,536 bytes
    yield np.full((300, 300), 255, np.uint8)
    for shape in [(1, 7), (3, 5), (37, 53), (120, 160), (480, 640)]:
        yield (rng.random(shape) > 0.5).astype(np.uint8) * 255  # many length-4 runs
        m = np.zeros(shape, np.uint8)
        m[shape[0] // 4 : shape[0] // 2 + 1, shape[1] // 3 : shape[1] - 1] = 255
        yield m
    yield rng.integers(0, 256, (20, 30), dtype=np.uint8)  # arbitrary byte values
    row = np.zeros((1, 70000), np.uint8)
    row[0, 16383:16390] = 255
    yield row


@pytest.mark.parametrize("index", range(len(list(masks()))))
def test_equal_to_sdk_encoder(index):
    mask = list(masks())[index]
    assert encode_rle(mask) == mask2rle(mask)


def test_roundtrip_through_sdk_decoder():
    m = np.zeros((37, 53), bool)
    m[5:20, 10:40] = True
    result = mask_to_result(m, from_name="b", to_name="i", label="x", item_index=2)
    assert (result_to_mask(result) == m).all()
    flat = decode_rle(result["value"]["rle"])
    assert flat.shape == (37 * 53 * 4,)
