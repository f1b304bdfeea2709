"""The lazy frame source: exact frames in any access order, SAM 2's own preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_backend.exceptions import VideoError
from ml_backend.video.frames import SamFrames, open_frames, sam_input
from ml_backend.video.synthetic import moving_shapes


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    v = moving_shapes(num_frames=60, height=48, width=64)
    root = tmp_path_factory.mktemp("frames")
    return v, v.write(root / "v.mkv")


def test_random_access_is_exact_and_reverse_is_cheap(video):
    v, path = video
    source = open_frames(path, cache_frames=16)
    order = [*range(20, 60), *range(19, -1, -1), 5, 55, 30]
    for i in order:
        assert (source.read(i) == v.frames[i]).all(), i
    assert source.decoded <= 60 + 16 + 3 * 16  # a backward pass decodes about once per frame
    with pytest.raises(VideoError, match="out of range"):
        source.read(60)


def test_sam_input_equals_sam2_loader(tmp_path):
    from PIL import Image
    from sam2.utils.misc import load_video_frames_from_jpg_images

    frames = moving_shapes(num_frames=3, height=90, width=160).frames
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.jpg")
    stock, h, w = load_video_frames_from_jpg_images(str(tmp_path), image_size=64, offload_video_to_cpu=True)
    ours = SamFrames(open_frames(tmp_path), 64, prefetch=2)
    assert (h, w) == (90, 160) and len(ours) == 3
    for i in (2, 0, 1):
        assert torch.equal(ours[i], stock[i])
    ours.close()


@pytest.mark.parametrize("workers", [1, 3])
def test_prefetch_workers_and_device_normalising_give_the_loader_s_tensors(tmp_path, workers):
    """Several workers resizing at once, and frames normalised "on the device" (the CUDA path's
    code, run on CPU tensors), resized there too (``RESIZE_ON_GPU``), in both directions: the same
    bits as SAM 2's own loader."""
    from PIL import Image
    from sam2.utils.misc import load_video_frames_from_jpg_images

    for i, f in enumerate(moving_shapes(num_frames=24, height=90, width=160).frames):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.jpg")
    stock, _, _ = load_video_frames_from_jpg_images(str(tmp_path), image_size=64, offload_video_to_cpu=True)
    for device, on_device in ((None, False), (torch.device("cpu"), False), (torch.device("cpu"), True)):
        ours = SamFrames(
            open_frames(tmp_path, cache_frames=8), 64, prefetch=2, workers=workers, device=device,
            resize_on_device=on_device,
        )  # fmt: skip
        assert ours.prefetch == max(2, 2 * workers)
        assert (ours._resize is not None) == on_device  # the device resizes, the workers only decode
        for i in [*range(10, 24), *range(9, -1, -1)]:
            got = ours[i]
            assert got.dtype == torch.float32 and torch.equal(got, stock[i]), (device, on_device, i)
        ours.close()


def test_prefetch_workers_default_by_device():
    from ml_backend.video.frames import prefetch_workers

    assert prefetch_workers("cpu") == 1
    assert 1 <= prefetch_workers("cuda:0") <= 8
    assert prefetch_workers("cuda", 3) == prefetch_workers("cpu", 3) == 3


def test_folder_order_is_numeric(tmp_path):
    from PIL import Image

    for n in (10, 9, 100, 1):
        Image.fromarray(np.full((4, 4, 3), n, np.uint8)).save(tmp_path / f"frame_{n}.png")
    source = open_frames(tmp_path)
    assert [int(source.read(i)[0, 0, 0]) for i in range(4)] == [1, 9, 10, 100]


def test_bad_sources(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        open_frames(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 50)
    with pytest.raises(VideoError, match="cannot be opened|no frames|no decodable"):
        open_frames(tmp_path / "bad.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="holds no images"):
        open_frames(tmp_path / "empty")
    assert sam_input(np.zeros((8, 8, 3), np.uint8), 32).shape == (3, 32, 32)
