"""Pillow's bicubic resize as tensor operations (``ml_backend/video/resize.py``): the bytes of the
installed Pillow, for landscape, portrait, square, upscaled and tiny frames, and a clean fallback
to PIL where they cannot be reproduced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ml_backend.video import resize
from ml_backend.video.frames import SamFrames, normalise, open_frames
from ml_backend.video.synthetic import moving_shapes


def pil(frame: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((size, size)))


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [
        (1080, 1920, 1024),  # the product's case: 1080p at SAM 2's trained size
        (1080, 1920, 256),
        (1920, 1080, 512),  # portrait: Pillow runs the vertical pass first here
        (300, 200, 128),
        (260, 250, 256),  # one side shrinks, the other grows
        (48, 64, 128),  # both grow
        (1024, 1920, 1024),  # only the horizontal pass
        (1080, 1024, 1024),  # only the vertical pass
        (1, 1, 16),
        (3, 700, 32),
    ],
)
def test_exact_resize_gives_pillow_s_bytes(height, width, size):
    rng = np.random.default_rng(height * 31 + width + size)
    exact = resize.exact_resize(height, width, size, "cpu")
    assert exact is not None, "the installed Pillow's order was not found"
    for frame in (
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8),  # noise: every rounding shows
        np.zeros((height, width, 3), np.uint8),
        np.full((height, width, 3), 255, np.uint8),  # the sums' largest values (clipping)
    ):
        got = exact(torch.from_numpy(frame))
        assert got.dtype == torch.uint8 and got.shape == (size, size, 3)
        assert np.array_equal(got.numpy(), pil(frame, size))


def test_a_natural_video_frame_too():
    frame = moving_shapes(num_frames=1, height=1080, width=1920).frames[0]
    assert np.array_equal(
        resize.exact_resize(1080, 1920, 1024, "cpu")(torch.from_numpy(frame)).numpy(), pil(frame, 1024)
    )


def test_the_frame_size_is_checked():
    exact = resize.ExactResize(48, 64, 32)
    with pytest.raises(ValueError, match=r"\(48, 64, 3\)"):
        exact(torch.zeros(64, 48, 3, dtype=torch.uint8))


def test_a_pillow_it_cannot_reproduce_leaves_the_resize_to_pil(tmp_path, monkeypatch):
    """If a future Pillow changed its arithmetic, neither pass order gives its bytes: no device
    resize then, and the frames still come out exactly as PIL makes them."""
    real = Image.Image.resize

    def other_arithmetic(self, size, *args, **kwargs):
        return real(self, size, Image.Resampling.BILINEAR)

    monkeypatch.setattr(resize, "_ORDERS", {})
    monkeypatch.setattr(Image.Image, "resize", other_arithmetic)
    assert resize.pillow_order(40, 60, 32) is None
    assert resize.exact_resize(40, 60, 32, "cpu") is None

    v = moving_shapes(num_frames=4, height=40, width=60)
    frames = SamFrames(open_frames(v.write(tmp_path / "v.mkv")), 32, prefetch=2, device=torch.device("cpu"),
                       resize_on_device=True)  # fmt: skip
    assert frames._resize is None
    expected = np.asarray(Image.fromarray(v.frames[2]).resize((32, 32)))  # the patched PIL's bytes
    assert torch.equal(frames[2], normalise(expected))
    frames.close()


def test_the_order_is_found_once_per_size(monkeypatch):
    calls = []
    monkeypatch.setattr(resize, "_ORDERS", {})
    real = resize._probe
    monkeypatch.setattr(resize, "_probe", lambda *a: calls.append(a) or real(*a))
    for _ in range(3):
        resize.exact_resize(30, 40, 16, "cpu")
    resize.exact_resize(40, 30, 16, "cpu")
    assert calls == [(30, 40, 16), (40, 30, 16)]
