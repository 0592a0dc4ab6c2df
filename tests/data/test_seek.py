"""Seeking decoders stay frame-exact: keyframe GOPs with B-frames, edit lists, WebM/MKV, variable frame rate, both
backends; decoder-side resizing sizes frames as torchvision's Resize does; the probe's index is right."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.transforms.v2 import functional as F

from adaptkit.data import decode_frames, encode_video, encoder_available, probe_video, resized_shape
from adaptkit.data import decode as decode_module
from adaptkit.data.probe import open_video_stream

from ._videos import assert_frames_are, gray_frames, has_reordered_frames, write_gray_video

NUM_FRAMES = 40
GOP = 8


def torchcodec_or_skip() -> None:
    pytest.importorskip("torchcodec", reason="torchcodec is not installed (optional extra)")
    if not decode_module.torchcodec_available():
        pytest.skip("torchcodec is installed but cannot load its FFmpeg libraries")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Barcode files with a keyframe every GOP frames: B-frame MP4, edit-list MP4, MKV, VP9 WebM, VFR MP4."""
    folder = tmp_path_factory.mktemp("seek")
    files = {
        "mp4": write_gray_video(folder / "gop.mp4", NUM_FRAMES, gop=GOP),
        "edit_list": write_gray_video(folder / "edit.mp4", NUM_FRAMES, gop=GOP, first_pts=-5),
        "mkv": write_gray_video(folder / "gop.mkv", NUM_FRAMES, gop=GOP),
    }
    if encoder_available("libvpx-vp9"):
        files["webm"] = write_gray_video(folder / "gop.webm", NUM_FRAMES, codec="libvpx-vp9", gop=GOP)
    # Variable frame rate: gaps of 1, 2 or 3 frame periods between frames.
    pts = np.cumsum(np.random.default_rng(0).integers(1, 4, size=NUM_FRAMES)) - 1
    path = folder / "vfr.mp4"
    encode_video(path, gray_frames(NUM_FRAMES), options={"qp": "2", "x264-params": f"keyint={GOP}:bframes=2"},
                 pts=pts.tolist())
    files["vfr"] = path
    return files


# Shown frames of each file: the edit list hides the first 5.
FIRST = {"edit_list": 5}


def test_files_have_keyframes_and_b_frames(videos):
    assert has_reordered_frames(videos["mp4"])
    index = probe_video(videos["mp4"])
    assert index.key_interval == GOP and index.num_frames == NUM_FRAMES and index.pts is None
    assert index.closed_gops  # x264's keyframes are IDR frames: nothing after one is shown before it
    assert probe_video(videos["vfr"]).pts is not None  # the variable frame rate keeps the full pts list
    assert probe_video(videos["edit_list"]).num_frames == NUM_FRAMES - 5


@pytest.mark.parametrize("name", ["mp4", "edit_list", "mkv", "webm", "vfr"])
def test_seeking_pyav_is_frame_exact_and_equals_decoding_from_the_start(videos, name):
    if name not in videos:
        pytest.skip("this PyAV build has no libvpx-vp9 encoder")
    shown = probe_video(videos[name]).num_frames
    indices = [shown - 1, 0, 17, 3, 33, 33, 9, shown - 2]
    seeking = decode_frames(videos[name], indices, backend="pyav")
    assert_frames_are(seeking, [i + FIRST.get(name, 0) for i in indices])
    assert torch.equal(seeking, decode_frames(videos[name], indices, backend="pyav", seek=False))


def test_seeking_really_skips_decoding(videos, monkeypatch):
    # Count decoded pictures: frames 33 and 34 need only the GOP starting at 32, and the non-reference B-frames
    # in it that are not asked for are skipped too.
    decoded = []
    real_decoded = decode_module._decoded

    def counting(*args):
        for frame in real_decoded(*args):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode_module, "_decoded", counting)
    assert_frames_are(decode_frames(videos["mp4"], [33, 34], backend="pyav"), [33, 34])
    assert 2 <= len(decoded) < GOP
    decoded.clear()
    assert_frames_are(decode_frames(videos["mp4"], [2, 34], backend="pyav"), [2, 34])
    assert len(decoded) < 2 * GOP


def test_gop_tails_after_the_last_wanted_frame_are_not_decoded(videos, monkeypatch):
    # Frames 2 and 9 are closer than a GOP, so there is no seek between them; the pictures after the P-frame that
    # frame 2 needs (display 4-7, references included) are dropped, as the next keyframe shows nothing needs them.
    index = probe_video(videos["mp4"])
    decoded = []
    real_decoded = decode_module._decoded

    def counting(*args):
        for frame in real_decoded(*args):
            decoded.append(index.frame_at(frame.pts))
            yield frame

    monkeypatch.setattr(decode_module, "_decoded", counting)
    assert_frames_are(decode_frames(videos["mp4"], [2, 9], backend="pyav"), [2, 9])
    assert {2, 9} <= set(decoded) and not set(decoded) & {4, 5, 6, 7}


def moving_texture(num_frames: int, height: int = 32, width: int = 48) -> torch.Tensor:
    """uint8 (T, 3, H, W): random texture shifted 2 px per frame, so that motion compensation uses references and a
    wrong or missing reference changes the decoded pixels."""
    texture = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, height, width + 2 * num_frames),
                                                                 dtype=np.uint8))
    return torch.stack([texture[:, :, 2 * i : 2 * i + width] for i in range(num_frames)])


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """Moving-texture files with B-frame pyramids: closed GOPs (x264's default), open GOPs (leading pictures), and the
    closed one remuxed into MPEG-TS; and an FLV1 file, whose header lacks the frame size."""
    folder = tmp_path_factory.mktemp("textured")
    files = {}
    for name, extra in {"closed": "", "open": ":open-gop=1"}.items():
        files[name] = folder / f"{name}.mp4"
        params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=3:b-pyramid=normal:b-adapt=0{extra}"
        encode_video(files[name], moving_texture(NUM_FRAMES), options={"qp": "20", "x264-params": params})
    files["flv"] = folder / "texture.flv"  # FLV1 (Sorenson H.263): the header gives no frame size
    encode_video(files["flv"], moving_texture(NUM_FRAMES), codec="flv", options={"g": str(GOP)})
    files["ts"] = folder / "closed.ts"  # MPEG-TS: no header, stream parameters come from parsing packets
    with av.open(str(files["closed"])) as source, av.open(str(files["ts"]), "w", format="mpegts") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = stream
                target.mux(packet)
    return files


def test_open_gops_are_recognised(textured):
    assert probe_video(textured["closed"]).closed_gops
    assert not probe_video(textured["open"]).closed_gops  # every packet is decoded there


def test_reorder_depth_counts_the_pictures_a_decoder_holds_back(textured, videos):
    # Decoding order I0 P4 B2 b1 b3: b1 comes after P4 and B2, which are shown after it.
    assert probe_video(textured["closed"]).reorder_depth == 2
    assert probe_video(videos["mp4"]).reorder_depth == 1  # I0 P3 B1 B2, no pyramid
    if "webm" in videos:
        assert probe_video(videos["webm"]).reorder_depth == 0  # VP9 shows frames in decoding order


def _no_fallback(path, *args):
    raise AssertionError(f"{path}: the seeking decoder missed a frame and fell back to decoding from the start")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, NUM_FRAMES - 1), min_size=1, max_size=10), st.sampled_from(["closed", "open"]))
def test_skipping_packets_leaves_textured_frames_bit_identical(textured, monkeypatch, indices, name):
    # Same decoder, same pixels, unless a picture some wanted frame refers to was left out; and the seeking path
    # delivers every frame itself (a missed frame would be decoded again from the start, hiding the miss).
    expected = decode_frames(textured[name], indices, backend="pyav", seek=False)
    with monkeypatch.context() as patch:
        patch.setattr(decode_module, "_pyav_sequential", _no_fallback)
        assert torch.equal(decode_frames(textured[name], indices, backend="pyav"), expected)


def plain_pyav_frames(path) -> torch.Tensor:
    """Every shown frame as plain PyAV gives it: the usual open (with FFmpeg's trial decoding), decoding from the
    start; uint8 (T, 3, H, W)."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", ["closed", "open", "ts", "flv", "mp4", "edit_list", "mkv", "webm", "vfr"])
def test_opening_without_trial_decoding_gives_plain_pyav_pixels(textured, videos, name):
    path = {**videos, **textured}.get(name)
    if path is None:
        pytest.skip("this PyAV build has no libvpx-vp9 encoder")
    expected = plain_pyav_frames(path)
    indices = [len(expected) - 1, 0, 17, 3, 33, 9, 10]
    assert torch.equal(decode_frames(path, indices, backend="pyav"), expected[indices])
    with av.open(str(path)) as container:  # what FFmpeg's trial decoding guesses; the probe counts it exactly
        assert probe_video(path).reorder_depth <= container.streams.video[0].codec_context.reorder_depth


def test_a_header_without_the_frame_size_is_opened_again_with_trial_decoding(textured):
    path = str(textured["flv"])
    with av.open(path, options={"codec_whitelist": "none"}) as container:  # what opening without trial decoding sees
        assert container.streams.video[0].width == 0
    container, stream = open_video_stream(path)
    with container:
        assert (stream.height, stream.width) == (32, 48)
    index = probe_video(path)
    assert (index.height, index.width, index.num_frames) == (32, 48, NUM_FRAMES)


@pytest.mark.parametrize("name", ["closed", "open"])
def test_ffmpeg_threads_give_the_same_frames(textured, name):
    # Frame threading delays pictures inside the decoder: the drain after the last wanted packet must get them out.
    indices = [1, 2, 9, 13, 30, 39]
    one = decode_frames(textured[name], indices, backend="pyav", threads=1)
    assert torch.equal(decode_frames(textured[name], indices, backend="pyav", threads=3), one)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, NUM_FRAMES - 1), min_size=1, max_size=10), st.sampled_from(["mp4", "mkv", "vfr"]))
def test_any_index_list_is_frame_exact_when_seeking(videos, indices, name):
    assert_frames_are(decode_frames(videos[name], indices, backend="pyav"), indices)


@pytest.mark.parametrize("name", ["mp4", "edit_list", "mkv", "webm", "vfr"])
def test_torchcodec_is_frame_exact_on_seekable_files(videos, name):
    torchcodec_or_skip()
    if name not in videos:
        pytest.skip("this PyAV build has no libvpx-vp9 encoder")
    indices = [30, 0, 17, 3, 33, 9]
    frames = decode_frames(videos[name], indices, backend="torchcodec")
    assert_frames_are(frames, [i + FIRST.get(name, 0) for i in indices])
    assert torch.equal(frames, decode_frames(videos[name], indices, backend="pyav"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, NUM_FRAMES - 1), min_size=1, max_size=8), st.sampled_from(["closed", "open"]))
def test_torchcodec_equals_pyav_on_open_gops(textured, indices, name):
    """Open GOPs' leading pictures are shown before the keyframe that follows them in decoding order: torchcodec's
    approximate seek landed on that keyframe and returned the next frame instead, with no error."""
    torchcodec_or_skip()
    assert torch.equal(decode_frames(textured[name], indices, backend="torchcodec"),
                       decode_frames(textured[name], indices, backend="pyav"))


def test_approximate_seek_mode_only_where_the_header_is_exact(videos):
    assert probe_video(videos["mp4"]).exact_header
    assert not probe_video(videos["edit_list"]).exact_header  # torchcodec's approximate mode fails on edit lists
    assert not probe_video(videos["vfr"]).exact_header


@pytest.mark.parametrize("height, width, short_side, expected", [
    (256, 340, 128, (128, 170)), (720, 1280, 256, (256, 455)), (1280, 720, 224, (398, 224)),
    (256, 340, 256, (256, 340)), (100, 120, 224, (100, 120)), (256, 340, None, (256, 340)),
])
def test_resized_shape_follows_torchvision(height, width, short_side, expected):
    assert resized_shape(height, width, short_side) == expected
    if short_side is not None and min(height, width) > short_side:
        torchvision = F.resize(torch.zeros(1, 3, height, width, dtype=torch.uint8), [short_side], antialias=True)
        assert tuple(torchvision.shape[-2:]) == expected


@pytest.mark.parametrize("backend", ["pyav", "torchcodec"])
def test_decoder_side_resize_shrinks_and_stays_frame_exact(tmp_path, backend):
    if backend == "torchcodec":
        torchcodec_or_skip()
    path = write_gray_video(tmp_path / "big.mp4", 24, gop=GOP, height=64, width=96)
    frames = decode_frames(path, [20, 2], backend=backend, short_side=32)
    assert frames.shape == (2, 3, 32, 48)
    assert_frames_are(frames, [20, 2])
    assert decode_frames(path, [0], backend=backend, short_side=128).shape == (1, 3, 64, 96)  # never enlarges
