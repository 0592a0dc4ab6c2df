"""Videos from the real world, each generated here: cover-art-only files, phone videos with a display rotation,
truncated WebM/MKV files whose container still declares the full duration."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from adaptkit.data import (
    TRUNCATION_TOLERANCE,
    VideoClipDataset,
    VideoDecodeError,
    VideoRecord,
    count_frames,
    decode_frames,
    encode_video,
    encoder_available,
    probe_video,
)
from adaptkit.data import decode as decode_module
from adaptkit.data import SegmentSampler

from ._videos import assert_frames_are, write_gray_video

BACKENDS = ["pyav", "torchcodec"]


def backend_or_skip(backend: str) -> None:
    if backend == "torchcodec":
        pytest.importorskip("torchcodec", reason="torchcodec is not installed (optional extra)")
        if not decode_module.torchcodec_available():
            pytest.skip("torchcodec is installed but cannot load its FFmpeg libraries")


def write_cover_art_audio(path, audio_codec: str, samples_per_frame: int) -> None:
    """An audio file whose only video stream is a cover picture (FFmpeg's attached_pic disposition)."""
    with av.open(str(path), "w") as container:
        audio = container.add_stream(audio_codec, rate=16000)
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 128, np.uint8), format="rgb24")
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            container.mux(packet)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, samples_per_frame), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * samples_per_frame
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix, codec, samples", [("mp4", "aac", 1024), ("mp3", "libmp3lame", 1152)])
def test_cover_art_is_not_a_video_stream(tmp_path, backend, suffix, codec, samples):
    backend_or_skip(backend)
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / f"song.{suffix}"
    write_cover_art_audio(path, codec, samples)
    with av.open(str(path)) as container:  # the file does carry a (cover-art) video stream
        assert len(container.streams.video) == 1
    for call in (lambda: count_frames(path, backend), lambda: decode_frames(path, [0], backend)):
        with pytest.raises(VideoDecodeError, match="no video stream"):
            call()


def test_cover_art_file_is_skipped_by_the_dataset(tmp_path):
    write_cover_art_audio(tmp_path / "song.mp4", "aac", 1024)
    write_gray_video(tmp_path / "real.mp4", 12)
    records = [VideoRecord(str(tmp_path / "song.mp4"), 0, "song"), VideoRecord(str(tmp_path / "real.mp4"), 1, "real")]
    dataset = VideoClipDataset(records, SegmentSampler(4), seed=0)
    _, label, index = dataset[0]
    assert (label, index) == (1, 1)
    assert dataset.skipped() == [(str(tmp_path / "song.mp4"), "no video stream or frames")]


def corner_video(path, rotation: int) -> torch.Tensor:
    """A 32x48 (H x W) stored video with a white top-left corner, written with a display rotation."""
    frames = torch.zeros(6, 3, 32, 48, dtype=torch.uint8)
    frames[:, :, :8, :8] = 255
    encode_video(path, frames, options={"qp": "0"}, display_rotation=rotation)
    return frames


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_display_rotation_is_applied(tmp_path, backend, rotation):
    backend_or_skip(backend)
    path = tmp_path / "phone.mp4"
    stored = corner_video(path, rotation)
    assert probe_video(path).rotation == rotation % 360
    frames = decode_frames(path, [0, 5], backend)
    # FFmpeg's display rotation is counter-clockwise, as torch.rot90 over (H, W): -90 turns a landscape frame portrait.
    expected = torch.rot90(stored[[0, 5]], rotation // 90, dims=(-2, -1))
    assert frames.shape == expected.shape
    assert (frames.int() - expected.int()).abs().max() <= 24  # near-lossless chroma, exact geometry
    if rotation == -90:  # clockwise: the white corner is now top-right of a portrait frame
        assert frames.shape[-2:] == (48, 32) and frames[0, :, :8, -8:].float().mean() > 200


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_side_resize_of_a_rotated_video_sizes_the_displayed_frame(tmp_path, backend):
    backend_or_skip(backend)
    path = write_gray_video(tmp_path / "phone.mp4", 10, height=64, width=96, rotation=-90)
    frames = decode_frames(path, [7, 1], backend, short_side=32)
    assert frames.shape == (2, 3, 48, 32)  # portrait, short side 32
    assert_frames_are(frames, [7, 1])


def truncate(path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix, codec, num_frames", [("webm", "libvpx-vp9", 64), ("mkv", "libx264", 48)])
def test_truncated_matroska_is_detected_against_the_declared_duration(tmp_path, backend, suffix, codec, num_frames):
    backend_or_skip(backend)
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / f"video.{suffix}"
    noise = np.random.default_rng(0).integers(0, 256, size=(num_frames, 3, 32, 48), dtype=np.uint8)
    encode_video(path, noise, codec=codec)  # noise: packets big enough that a third of the file holds frames
    assert count_frames(path, backend) == num_frames  # intact: no false alarm
    truncate(path, 1 / 3)
    with av.open(str(path)) as container:  # some frames survive, as in a download cut short
        assert 0 < sum(packet.size > 0 for packet in container.demux(video=0)) < num_frames * 0.5
    with av.open(str(path)) as container:  # the header still declares the full duration
        assert container.duration == pytest.approx(num_frames / 25 * 1e6, rel=0.05)
    with pytest.raises(VideoDecodeError, match="truncated: frames end at"):
        count_frames(path, backend)
    with pytest.raises(VideoDecodeError, match="truncated"):
        decode_frames(path, [0], backend)


def test_truncation_tolerance_allows_a_slightly_longer_declared_duration(tmp_path):
    # A WebM whose container declares a little more than its frames (audio a bit longer, rounding) is intact.
    path = tmp_path / "longer.mkv"
    num_frames = 50
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        seconds = num_frames / 25 * (1 + TRUNCATION_TOLERANCE / 2)  # audio 5% longer than the video
        for i in range(int(seconds * 16000 / 1024)):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 16000, i * 1024
            for packet in audio.encode(sound):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    assert count_frames(path, "pyav") == num_frames
