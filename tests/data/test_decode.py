"""PyAV decoding is frame-exact, clamps, counts WebM/edit-list files right, and fails clearly on broken files."""

from __future__ import annotations

from fractions import Fraction

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
    probe_video,
    torchcodec_available,
    write_corrupt_video,
)

from ._videos import assert_frames_are, gray_frames, has_reordered_frames, write_gray_video

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


@pytest.mark.parametrize("backend", ["pyav", "torchcodec"])
def test_a_file_deleted_after_it_was_probed_is_missing_not_corrupt(gray_mp4, tmp_path, backend):
    """Datasets probe a file once and decode it later; torchcodec only says it cannot open a file deleted meanwhile.
    (The decoder says so, not the skip tracker: a frame cache's recorded kind must not be re-judged by the disk.)"""
    if backend == "torchcodec" and not torchcodec_available():
        pytest.skip("torchcodec is not installed or cannot load its FFmpeg libraries")
    path = tmp_path / "deleted.mp4"
    path.write_bytes(gray_mp4.read_bytes())
    index = probe_video(path)
    path.unlink()
    with pytest.raises(VideoDecodeError, match=str(path)) as info:
        decode_frames(path, [0, 3], backend, index=index)
    assert info.value.kind == "missing"


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


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_avi_with_b_frames_gives_the_frames_asked_for(tmp_path, codec):
    # AVI has no presentation times: FFmpeg numbers packets in decoding order, which B-frames make differ from
    # display order (H.264 in AVI). A decoded picture's timestamp then does not say which frame it is.
    path = write_gray_video(tmp_path / "b_frames.avi", NUM_FRAMES, codec=codec, gop=8, step=6)
    index = probe_video(path)
    assert index.num_frames == NUM_FRAMES and index.decode_order_pts and not index.exact_header
    with av.open(str(path)) as container:  # the truth: every frame in the order the decoder shows them
        shown = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])
    indices = [NUM_FRAMES - 1, 0, 17, 3, 33, 33, 9, 22, 23, 24]
    got = decode_frames(path, indices, backend="pyav")
    assert torch.equal(got, torch.from_numpy(shown[indices]).permute(0, 3, 1, 2))
    if codec == "libx264":  # near-lossless: the gray levels name the frames too
        assert_frames_are(got, indices, step=6)


def test_avi_without_b_frames_keeps_seeking(tmp_path):
    path = tmp_path / "no_b_frames.avi"
    encode_video(path, gray_frames(NUM_FRAMES, step=6), options={"qp": "2", "x264-params": "bframes=0:keyint=8"})
    assert not probe_video(path).decode_order_pts
    assert_frames_are(decode_frames(path, [39, 2, 20], backend="pyav"), [39, 2, 20], step=6)


def _matroska_with_timing(path, first_pts: int, last_duration: int, num_frames: int = 20) -> None:
    """A Matroska file (1 ms time base) of frames every 40 ms from ``first_pts`` ms, the last one shown for
    ``last_duration`` ms: what a stream-copy cut keeping its timestamps, or a held last frame, gives."""
    frames = gray_frames(num_frames, step=240 // num_frames).permute(0, 2, 3, 1).numpy()
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"qp": "2", "x264-params": "bframes=0"}
        stream.time_base = Fraction(1, 1000)
        packets = []
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = first_pts + 40 * i, Fraction(1, 1000)
            packets += stream.encode(frame)
        packets += stream.encode(None)
        last = max(packets, key=lambda packet: packet.pts)
        for packet in packets:  # durations in the packets' own time base
            packet.duration = round(Fraction(last_duration if packet is last else 40, 1000) / packet.time_base)
            container.mux(packet)


@pytest.mark.parametrize("first_pts, last_duration", [(1500, 40), (0, 2000), (800, 1000)],
                         ids=["start_offset", "held_last_frame", "both"])
def test_matroska_timing_that_is_not_truncation(tmp_path, first_pts, last_duration):
    path = tmp_path / "timing.mkv"
    _matroska_with_timing(path, first_pts, last_duration)
    assert count_frames(path, backend="pyav") == 20
    assert_frames_are(decode_frames(path, [19, 0, 7], backend="pyav"), [19, 0, 7], step=12)


def test_the_truncation_tolerance_is_a_share_of_the_videos_own_length(tmp_path):
    # Frames from 1.5 s to 3.9 s, cut to 90% of the bytes: 8 of 60 frames (0.32 s) lost, more than 10% of the 2.4 s
    # the video lasts (though less than 10% of the 3.9 s the container declares, counted from 0).
    path = tmp_path / "offset.mkv"
    _matroska_with_timing(path, 1500, 40, num_frames=60)
    path.write_bytes(path.read_bytes()[: int(0.9 * path.stat().st_size)])
    with pytest.raises(VideoDecodeError, match="truncated: frames end at 3.60 s, the container declares 3.92 s"):
        count_frames(path, backend="pyav")


def test_a_cut_short_matroska_file_is_still_truncated(tmp_path):
    path = tmp_path / "cut.mkv"
    _matroska_with_timing(path, 0, 40, num_frames=40)
    data = path.read_bytes()
    # Keep the header with its declared duration (the tags are written at the front by a seekable muxer) and cut
    # the clusters at 60%.
    path.write_bytes(data[: int(0.6 * len(data))])
    with pytest.raises(VideoDecodeError, match="truncated"):
        count_frames(path, backend="pyav")


def test_decoder_side_resizing_keeps_the_colour_levels(tmp_path):
    # Flat frames: any resize must keep each level. swscale's combined scale-and-convert path gave 126 for 128.
    levels = [0, 16, 30, 60, 128, 200, 235, 255]
    frames = torch.tensor(levels, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 64, 96).contiguous()
    path = tmp_path / "flat.mp4"
    encode_video(path, frames, options={"qp": "0"})  # lossless luma; flat chroma
    for short_side in (None, 48, 32, 17):
        decoded = decode_frames(path, range(len(levels)), backend="pyav", short_side=short_side)
        error = decoded.float().mean(dim=(1, 2, 3)) - torch.tensor(levels, dtype=torch.float32)
        assert error.abs().max() <= 1 and error.mean().abs() < 0.5, (short_side, error.tolist())


def test_a_cut_short_fragmented_mp4_is_truncated(tmp_path):
    # A fragmented MP4 declares no frame count: only its last, cut packet shows the truncation (before, the probe
    # counted it and decoding failed only when a clip asked for the last frames).
    path = tmp_path / "fragmented.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"x264-params": "keyint=10:bframes=2"}
        noise = np.random.default_rng(0).integers(0, 256, (NUM_FRAMES, 32, 48, 3), dtype=np.uint8)  # large packets
        for array in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    assert count_frames(path, backend="pyav") == NUM_FRAMES
    data = path.read_bytes()
    path.write_bytes(data[: int(0.95 * len(data))])  # inside the last fragment's data
    with pytest.raises(VideoDecodeError, match="truncated: the file ends inside its last video packet"):
        count_frames(path, backend="pyav")
    # Wherever the file is cut (its header included), the result is a frame count or a VideoDecodeError.
    for cut in [*range(8, 1200, 7), *range(1200, len(data), 97)]:
        path.write_bytes(data[:cut])
        try:
            assert 0 < count_frames(path, backend="pyav") <= NUM_FRAMES
        except VideoDecodeError:
            pass


def test_an_unusable_torchcodec_keeps_its_reason(monkeypatch):
    from adaptkit.data import decode

    pytest.importorskip("torchcodec", reason="needs torchcodec")
    monkeypatch.setattr(decode, "_tiny_mp4", lambda: b"not a video")
    decode._torchcodec_probe.cache_clear()
    try:
        decoder, reason = decode._torchcodec_probe()
        assert decoder is None and reason and ":" in reason  # "<ErrorType>: <first line>"
        assert not decode.torchcodec_available()
    finally:
        monkeypatch.undo()
        decode._torchcodec_probe.cache_clear()
