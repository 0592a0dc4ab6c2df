"""PyAV decoding is frame-exact, clamps, counts WebM/edit-list files right, and fails clearly on broken files."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptkit.data import (
    VideoDecodeError,
    count_frames,
    decode_frames,
    default_backend,
    encode_video,
    encoder_available,
    torchcodec_available,
    write_corrupt_video,
)

from ._videos import assert_frames_are, has_reordered_frames, write_gray_video

NUM_FRAMES = 40


@pytest.fixture(scope="module")
def gray_mp4(tmp_path_factory):
    return write_gray_video(tmp_path_factory.mktemp("decode") / "gray.mp4", NUM_FRAMES)


def test_test_video_has_b_frames(gray_mp4):
    assert has_reordered_frames(gray_mp4)  # so the exactness tests below cover frame reordering


def test_unsorted_repeated_indices_come_back_in_request_order(gray_mp4):
    indices = [39, 3, 3, 0, 17, 17, 38, 1]
    frames = decode_frames(gray_mp4, indices, backend="pyav")
    assert frames.shape == (len(indices), 3, 32, 48)
    assert frames.is_contiguous(memory_format=torch.channels_last)  # no transposing copy after the decoder
    assert_frames_are(frames, indices)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, NUM_FRAMES - 1), min_size=1, max_size=12))
def test_any_index_list_is_frame_exact(gray_mp4, indices):
    assert_frames_are(decode_frames(gray_mp4, np.array(indices), backend="pyav"), indices)


def test_indices_may_be_a_tensor_of_any_shape(gray_mp4):
    indices = torch.tensor([[4, 5], [6, 7]])
    assert_frames_are(decode_frames(gray_mp4, indices, backend="pyav"), [4, 5, 6, 7])


def test_indices_past_the_end_clamp_to_the_last_frame(gray_mp4):
    assert_frames_are(decode_frames(gray_mp4, [100, 2, NUM_FRAMES], backend="pyav"), [39, 2, 39])


def test_rgb_channel_order(tmp_path):
    frames = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    frames[:, 0] = 230  # pure red
    path = tmp_path / "red.mp4"
    encode_video(path, frames, options={"crf": "0"})
    mean = decode_frames(path, [0, 3], backend="pyav").float().mean(dim=(0, 2, 3))
    assert mean[0] > 200 and mean[1] < 40 and mean[2] < 40


@pytest.mark.parametrize(
    "name, codec",
    [("mp4_h264", "libx264"), ("mp4_mpeg4", "mpeg4"), ("mkv_h264", "libx264"), ("webm_vp9", "libvpx-vp9")],
)
def test_frame_count_and_exactness_per_container(tmp_path, name, codec):
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    # Step 11 between gray levels: room for mpeg4's larger quantisation error (about +-5).
    path = write_gray_video(tmp_path / f"video.{name.split('_')[0]}", 23, codec=codec, step=11)
    assert count_frames(path, backend="pyav") == 23
    assert has_reordered_frames(path) == (codec in ("libx264", "mpeg4"))
    assert_frames_are(decode_frames(path, [22, 0, 11, 21], backend="pyav"), [22, 0, 11, 21], step=11)


def test_webm_header_has_no_frame_count_so_counting_demuxes(tmp_path):
    codec = "libvpx-vp9" if encoder_available("libvpx-vp9") else "libvpx"
    if not encoder_available(codec):
        pytest.skip("this PyAV build has neither the libvpx-vp9 nor the libvpx (vp8) encoder")
    path = write_gray_video(tmp_path / "video.webm", 17, codec=codec)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # nothing to trust in the header
    assert count_frames(path, backend="pyav") == 17


def test_edit_list_hidden_frames_are_neither_counted_nor_returned(tmp_path):
    # first_pts=-5: the MP4 muxer writes an edit list hiding the first 5 frames, as "cut without re-encoding" does.
    path = write_gray_video(tmp_path / "edit_list.mp4", NUM_FRAMES, first_pts=-5)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == NUM_FRAMES  # the header over-counts
    assert count_frames(path, backend="pyav") == NUM_FRAMES - 5
    assert_frames_are(decode_frames(path, [0, 34, 10], backend="pyav"), [5, 39, 15])


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_broken_files_raise_video_decode_error_naming_the_path(tmp_path, kind):
    path = write_corrupt_video(tmp_path / f"{kind}.mp4", kind)
    for call in (lambda: count_frames(path, backend="pyav"), lambda: decode_frames(path, [0], backend="pyav")):
        with pytest.raises(VideoDecodeError, match=str(path)) as info:
            call()
        assert isinstance(info.value, RuntimeError) and info.value.path == str(path)


def test_missing_file_raises_video_decode_error(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError, match="file not found") as info:
        decode_frames(path, [0])
    assert str(path) in str(info.value)
    with pytest.raises(VideoDecodeError, match=str(path)):
        count_frames(path)


def test_truncated_file_with_index_up_front_is_detected(tmp_path):
    # "faststart" puts the sample table first, so the file still opens; the table promises more than the data holds.
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        noise = np.random.default_rng(0).integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
        for i, image in enumerate(noise):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoDecodeError, match="truncated"):
        count_frames(path, backend="pyav")
    with pytest.raises(VideoDecodeError, match="truncated"):
        decode_frames(path, [29], backend="pyav")


@pytest.mark.parametrize("indices", [[], [-1, 2], [0.5]])
def test_bad_indices_raise_value_error(gray_mp4, indices):
    with pytest.raises(ValueError, match="indices"):
        decode_frames(gray_mp4, indices, backend="pyav")


def test_unknown_backend_lists_the_valid_ones(gray_mp4):
    with pytest.raises(ValueError, match="pyav"):
        decode_frames(gray_mp4, [0], backend="decord")


def test_default_backend_is_pyav_whether_or_not_torchcodec_loads():
    # PyAV, seeking and skipping non-reference frames, measured faster on CPU (benchmarks/data_loading.py).
    assert default_backend() == "pyav"


def test_torchcodec_matches_pyav(gray_mp4, tmp_path):
    pytest.importorskip("torchcodec", reason="torchcodec is not installed (optional extra)")
    if not torchcodec_available():
        pytest.skip("torchcodec is installed but cannot load its FFmpeg libraries")
    indices = [39, 3, 3, 0, 17, 100]
    assert torch.equal(decode_frames(gray_mp4, indices, "torchcodec"), decode_frames(gray_mp4, indices, "pyav"))
    assert count_frames(gray_mp4, "torchcodec") == NUM_FRAMES
    edit_list = write_gray_video(tmp_path / "edit_list.mp4", NUM_FRAMES, first_pts=-5)
    assert count_frames(edit_list, "torchcodec") == NUM_FRAMES - 5
    assert_frames_are(decode_frames(edit_list, [0, 34], "torchcodec"), [5, 39])
    with pytest.raises(VideoDecodeError):
        decode_frames(write_corrupt_video(tmp_path / "bad.mp4", "garbage"), [0], "torchcodec")
