"""GPU decoding (NVDEC through torchcodec) as a dataset option: a clear one-line refusal where it cannot run, and
the GPU-side path (decode to a device, augment there) exercised on CPU tensors, where it is device-agnostic."""

from __future__ import annotations

import pytest
import torch

from adaptkit.data import (
    AugmentConfig,
    DenseSampler,
    GPUDecodingUnavailable,
    MultiViewDataset,
    VideoClipDataset,
    VideoRecord,
    VideoTrainTransform,
    check_gpu_decoding,
    decode_frames,
    torchcodec_available,
)

from ._videos import assert_frames_are, write_gray_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_gray_video(tmp_path_factory.mktemp("gpu") / "gray.mp4", 24, gop=8, height=48, width=64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_decoding_without_cuda_is_refused_in_one_line(video):
    for call in (
        lambda: check_gpu_decoding("cuda"),
        lambda: decode_frames(video, [0], backend="torchcodec", device="cuda"),
        lambda: VideoClipDataset([VideoRecord(str(video), 0, "v")], DenseSampler(4), decode_device="cuda"),
        lambda: MultiViewDataset([VideoRecord(str(video), 0, "v")], DenseSampler(4, test_mode=True), crop_size=32,
                                 decode_device="cuda:0"),
    ):
        with pytest.raises(GPUDecodingUnavailable, match="needs a CUDA device") as info:
            call()
        assert "\n" not in str(info.value) and isinstance(info.value, RuntimeError)


def test_pyav_cannot_decode_on_a_gpu(video):
    with pytest.raises(ValueError, match="backend='torchcodec'"):
        decode_frames(video, [0], backend="pyav", device="cuda")
    with pytest.raises(ValueError, match="torchcodec backend"):
        VideoClipDataset([VideoRecord(str(video), 0, "v")], DenseSampler(4), backend="pyav", decode_device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decoding_is_frame_exact_where_it_runs(video):
    if not torchcodec_available():
        pytest.skip("torchcodec with FFmpeg libraries is not installed")
    frames = decode_frames(video, [20, 3, 3], backend="torchcodec", device="cuda")
    assert frames.device.type == "cuda"
    assert_frames_are(frames.cpu(), [20, 3, 3])


def test_the_augmentation_runs_where_the_frames_are_and_draws_the_same_crop(video):
    # The GPU path hands the transform device tensors; its random parameters come from the CPU generator, so the
    # same (seed, epoch, index) gives the same crop on any device. Here: the same clip in two memory layouts.
    transform = VideoTrainTransform(AugmentConfig(crop_size=24, resize_size=32))
    dataset = VideoClipDataset([VideoRecord(str(video), 0, "v")], DenseSampler(4, 2), transform, seed=1)
    clip = dataset.files.decode(0, dataset.sampler(24, dataset._rng(0)))
    channels_last = dataset._transform(clip, 0)
    contiguous = dataset._transform(clip.contiguous(), 0)
    torch.testing.assert_close(channels_last, contiguous, rtol=0, atol=0)
    assert torch.equal(dataset[0][0], dataset[0][0])  # a pure function of (seed, epoch, index)
    dataset.set_epoch(1)
    assert dataset[0][0].shape == (4, 3, 24, 24)
