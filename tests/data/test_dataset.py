"""Datasets: item contract, frames follow the sampler, broken videos skipped and reported (also from workers),
multi-view items decoded once."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import adaptkit
import adaptkit.data.dataset as dataset_module
from adaptkit.data import (
    DECODE_ERROR_KINDS,
    SKIPPED_LABEL,
    AugmentConfig,
    DenseSampler,
    MultiViewDataset,
    SegmentSampler,
    VideoClipDataset,
    VideoDecodeError,
    VideoRecord,
    VideoTrainTransform,
    load_annotations,
    write_corrupt_video,
    write_synthetic_videos,
)

from ._videos import assert_frames_are, write_gray_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Synthetic tree (4 videos), a 40-frame gray video, a truncated and a missing file."""
    folder = tmp_path_factory.mktemp("videos")
    list_file = write_synthetic_videos(folder / "tree", 4, num_frames=12, size=32, num_classes=2)
    return {
        "tree": folder / "tree",
        "annotations": load_annotations("video_list", list_file, root=folder / "tree"),
        "gray": str(write_gray_video(folder / "gray.mp4", 40)),
        "truncated": str(write_corrupt_video(folder / "truncated.mp4", "truncated")),
        "missing": str(folder / "missing.mp4"),
    }


@pytest.fixture
def mixed_records(videos):
    good = videos["annotations"].records
    return [good[0], VideoRecord(videos["truncated"], 1, "truncated"), good[1],
            VideoRecord(videos["missing"], 0, "missing"), good[2]]


def test_item_contract(videos):
    ann = videos["annotations"]
    ds = VideoClipDataset(ann, DenseSampler(4, 2))
    assert len(ds) == 4
    for i in range(4):
        clip, label, index = ds[i]
        assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.uint8
        assert (label, index) == (ann.records[i].label, i)
    transform = VideoTrainTransform(AugmentConfig(crop_size=16, resize_size=24))
    transformed = VideoClipDataset(ann, DenseSampler(4, 2), transform)
    assert transformed[0][0].shape == (4, 3, 16, 16)


def test_root_is_joined_to_record_paths(videos):
    record = videos["annotations"].records[0]
    relative = VideoRecord(str(record.path).split("/tree/", 1)[1], record.label, record.video_id)
    clip, _, _ = VideoClipDataset([relative], DenseSampler(2), root=videos["tree"])[0]
    assert clip.shape == (2, 3, 32, 32)


def test_decoded_frames_are_the_sampled_ones(videos):
    record = VideoRecord(videos["gray"], 0, "gray")
    # test mode, n=40, 4x3: span 10, max_off 30, centred offset 15
    clip, _, _ = VideoClipDataset([record], DenseSampler(4, 3, test_mode=True))[0]
    assert_frames_are(clip, [15, 18, 21, 24])
    # seeded train mode draws from default_rng([seed, epoch, index])
    sampler = DenseSampler(4, 3)
    ds = VideoClipDataset([record], sampler, seed=7)
    assert_frames_are(ds[0][0], sampler(40, np.random.default_rng([7, 0, 0]))[0].tolist())


def test_frame_window_of_a_record(videos):
    sampler = SegmentSampler(5, test_mode=True)
    # window 10..19 (10 frames): seg 1.8, bounds [0, 2, 4, 5, 7, 9] -> middles [1, 3, 4, 6, 8] -> +10
    clip, _, _ = VideoClipDataset([VideoRecord(videos["gray"], 0, "g", 10, 20)], sampler)[0]
    assert_frames_are(clip, [11, 13, 14, 16, 18])
    # an end past the real length is clamped to it: window 30..39
    clip, _, _ = VideoClipDataset([VideoRecord(videos["gray"], 0, "g", 30, 1000)], sampler)[0]
    assert_frames_are(clip, [31, 33, 34, 36, 38])



def test_a_frame_window_starting_past_the_video_is_skipped_as_a_window_skip(videos, caplog):
    gray = videos["gray"]  # 40 frames: the window 45..60 holds none of them
    records = [VideoRecord(gray, 0, "past", 45, 60), VideoRecord(gray, 1, "inside", 0, 10)]
    sampler = SegmentSampler(4, test_mode=True)
    clips = VideoClipDataset(records, sampler)
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        clip, label, index = clips[0]
    assert (label, index) == (1, 1)  # replaced by the record whose window exists
    assert_frames_are(clip, [1, 3, 5, 8])
    reason = "frame window starts past the video's last frame"
    assert clips.skipped() == [(gray, reason)]
    assert clips.skipped_summary() == f"skipped 1 of 2 videos:\n  {gray} ({reason})"
    assert "window 45..60" in caplog.text and "40 frames" in caplog.text
    views = MultiViewDataset(records, sampler, crop_size=16)
    assert views[0][1] == SKIPPED_LABEL and views[1][1] == 1
    assert views.skipped() == [(gray, reason)]


def test_frame_windows_ending_past_the_video_are_cut_with_one_warning(videos, caplog):
    gray = videos["gray"]  # 40 frames
    records = [VideoRecord(gray, 0, f"w{start}", start, 1000) for start in (30, 20, 35)]
    sampler = SegmentSampler(5, test_mode=True)
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        clips = VideoClipDataset(records, sampler)
        for _ in range(2):  # two epochs
            for i in range(len(clips)):
                clips[i]
        views = MultiViewDataset(records, sampler, crop_size=16)
        for i in range(len(views)):
            views[i]
    assert_frames_are(clips[0][0], [31, 33, 34, 36, 38])  # cut to 30..39
    cut = [r.getMessage() for r in caplog.records if "cut to" in r.getMessage()]
    assert len(cut) == 2, cut  # one per dataset, not one per clip
    assert all(gray in message and "window 30..1000" in message for message in cut)
    assert clips.skipped() == [] and views.skipped() == []


def test_the_window_cut_warning_is_given_once_across_dataloader_workers(videos, capfd):
    records = [VideoRecord(videos["gray"], 0, f"w{start}", start, 1000) for start in range(20, 32)]
    handler = logging.StreamHandler(sys.stderr)  # forked workers write to the captured fd 2
    logger = logging.getLogger("adaptkit.data")
    logger.addHandler(handler)
    try:
        loader = DataLoader(VideoClipDataset(records, SegmentSampler(4, test_mode=True)), batch_size=2,
                            num_workers=2, multiprocessing_context="fork")
        assert sum(len(labels) for _, labels, _ in loader) == 12
    finally:
        logger.removeHandler(handler)
    # Once per dataset; two workers meeting their first cut window at the same instant may each say it (the shared
    # flag is not an atomic test-and-set), never once per clip.
    assert capfd.readouterr().err.count("cut to") in (1, 2)

def test_seeded_sampling_is_reproducible_and_changes_with_the_epoch(videos):
    records = [VideoRecord(videos["gray"], 0, f"g{i}") for i in range(6)]
    first, second = (VideoClipDataset(records, DenseSampler(4, 1), seed=3) for _ in range(2))
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(6))
    second.set_epoch(1)
    assert not all(torch.equal(first[i][0], second[i][0]) for i in range(6))


def test_broken_videos_are_logged_replaced_and_summarised(videos, mixed_records, caplog):
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        ds = VideoClipDataset(mixed_records, DenseSampler(4, 2), seed=0)
    assert "1 of 5 video files are missing" in caplog.text and videos["missing"] in caplog.text  # found up front
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        clip, label, index = ds[1]
    assert index in (0, 2, 4) and label == mixed_records[index].label and clip.shape == (4, 3, 32, 32)
    assert videos["truncated"] in caplog.text and "cannot open" in caplog.text
    assert ds[3][2] in (0, 2, 4)
    assert ds.skipped() == [(videos["truncated"], "corrupt or truncated"), (videos["missing"], "missing")]
    summary = ds.skipped_summary()
    assert "skipped 2 of 5 videos" in summary and videos["truncated"] in summary and videos["missing"] in summary
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        assert ds[1][2] == index  # a flagged video is not retried (no second log line); seeded: same replacement
    assert caplog.text == ""


def test_a_run_of_missing_videos_is_found_up_front(videos):
    """A class-sorted Kinetics CSV with one class absent on disk lists hundreds of missing files in a row; the old
    fallback tried only the next 10 records and stopped training with a RuntimeError."""
    records = [VideoRecord(f"{videos['missing']}{i}", 0, f"gone{i}") for i in range(12)]
    records.append(VideoRecord(videos["gray"], 0, "ok"))
    ds = VideoClipDataset(records, DenseSampler(8, 4), seed=0)
    assert [ds[i][2] for i in (0, 5, 12)] == [12, 12, 12]
    assert len(ds.skipped()) == 12 and {reason for _, reason in ds.skipped()} == {"missing"}


def test_a_run_of_undecodable_videos_is_replaced_from_across_the_list(videos):
    """Files that exist but fail to decode are found only when read: the replacement is drawn from the records not
    flagged anywhere in the list (seeded), not from the next few rows, which here are all broken."""
    good = videos["annotations"].records
    records = [VideoRecord(videos["truncated"], 1, f"bad{i}") for i in range(12)] + list(good) * 3
    first = VideoClipDataset(records, DenseSampler(4, 2), seed=0)
    served = [first[i][2] for i in range(12)]
    assert all(index >= 12 for index in served)
    assert len(set(served)) > 1  # spread over the list, not always the first readable one
    again = VideoClipDataset(records, DenseSampler(4, 2), seed=0)
    assert served == [again[i][2] for i in range(12)]


def test_skip_reasons_say_what_is_wrong_with_each_file(videos, tmp_path):
    """Each kind of unreadable file gets its own words, not "corrupt or truncated" for all: an empty download, a
    folder where a file was expected, a file without video, a file deleted after it was probed."""
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "folder.mp4").mkdir()
    audio_only = tmp_path / "audio.wav"
    with av.open(str(audio_only), "w") as container:  # sound without pictures
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    deleted = str(shutil.copy(videos["gray"], tmp_path / "deleted.mp4"))
    records = [VideoRecord(str(tmp_path / "empty.mp4"), 0, "e"), VideoRecord(str(tmp_path / "folder.mp4"), 0, "f"),
               VideoRecord(str(audio_only), 0, "a"), VideoRecord(deleted, 0, "d"),
               VideoRecord(videos["truncated"], 0, "t"), VideoRecord(videos["missing"], 0, "m"),
               VideoRecord(videos["gray"], 0, "g")]
    ds = VideoClipDataset(records, DenseSampler(2))
    ds.files.video_index(3)  # probed while it existed: decoding it later is what fails
    os.remove(deleted)
    assert [ds[i][2] for i in range(7)] == [6] * 7
    assert [reason for _, reason in ds.skipped()] == [
        "empty file (0 bytes)", "a folder, not a video file", "no video stream or frames", "missing",
        "corrupt or truncated", "missing"]
    assert {reason for _, reason in ds.skipped()} <= set(DECODE_ERROR_KINDS.values())


def test_decode_errors_survive_pickling_with_their_kind():
    """Errors cross from DataLoader and cache-building workers to the main process by pickle."""
    error = pickle.loads(pickle.dumps(VideoDecodeError("a.mp4", "file not found", kind="missing")))
    assert (error.path, error.reason, error.kind, str(error)) == ("a.mp4", "file not found", "missing",
                                                                   "a.mp4: file not found")
    with pytest.raises(ValueError, match="kind must be one of"):
        VideoDecodeError("a.mp4", "?", kind="broken")


def test_nothing_skipped_summary(videos):
    ds = VideoClipDataset(videos["annotations"], DenseSampler(2))
    ds[0]
    assert ds.skipped() == [] and ds.skipped_summary() == "no videos skipped"


def test_no_readable_video_raises(videos):
    records = [VideoRecord(videos["missing"], 0, "m"), VideoRecord(videos["truncated"], 0, "t")]
    with pytest.raises(adaptkit.NoReadableVideoError) as raised:
        VideoClipDataset(records, DenseSampler(2))[0]
    assert str(raised.value) == ("no readable video left: all 2 videos were skipped (1 missing, 1 corrupt or "
                                 f"truncated: {videos['missing']}, {videos['truncated']})")
    with pytest.raises(adaptkit.NoReadableVideoError) as raised:
        VideoClipDataset([records[1], *videos["annotations"].records], DenseSampler(2), max_attempts=1)[0]
    # One line however many videos were skipped (it listed every skipped path, one per line).
    assert str(raised.value) == ("1 videos in a row could not be decoded for index 0 (1 corrupt or truncated: "
                                 f"{videos['truncated']})")


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_skips_in_dataloader_workers_reach_the_main_process(videos, mixed_records, context):
    ds = VideoClipDataset(mixed_records, DenseSampler(4, 2))
    loader = DataLoader(ds, batch_size=2, num_workers=2 if context == "fork" else 1, multiprocessing_context=context)
    served = []
    for clips, labels, indices in loader:
        assert clips.shape[1:] == (4, 3, 32, 32) and clips.dtype == torch.uint8
        served += indices.tolist()
    assert len(served) == 5 and set(served) <= {0, 2, 4}  # broken records 1 and 3 were replaced by readable ones
    assert {path for path, _ in ds.skipped()} == {videos["truncated"], videos["missing"]}


def test_multi_view_decodes_once_and_orders_views_clip_major(videos, monkeypatch):
    calls = []
    real_decode = dataset_module.decode_frames

    def counting_decode(path, indices, backend=None, **options):
        calls.append(np.asarray(indices).copy())
        return real_decode(path, indices, backend, **options)

    monkeypatch.setattr(dataset_module, "decode_frames", counting_decode)
    # n=40, 4x2, 3 clips: span 7, max_off 33, offsets round([0, 16.5, 33]) = [0, 16, 33]
    ds = MultiViewDataset([VideoRecord(videos["gray"], 5, "gray")], DenseSampler(4, 2, 3, test_mode=True),
                          crop_size=24, num_crops=3)
    views, label, video_id = ds[0]
    assert len(calls) == 1 and calls[0].size == 12
    assert views.shape == (9, 4, 3, 24, 24) and views.dtype == torch.uint8 and ds.num_views == 9
    assert (label, video_id) == (5, "gray")
    for clip, offset in enumerate([0, 16, 33]):
        for crop in range(3):
            assert_frames_are(views[3 * clip + crop], [offset, offset + 2, offset + 4, offset + 6])


def test_multi_view_crops_match_the_test_transform(videos):
    record = videos["annotations"].records[0]
    ds = MultiViewDataset([record], DenseSampler(4, 2, 2, test_mode=True), crop_size=24, num_crops=3,
                          decoder_resize=False)
    views, _, _ = ds[0]
    indices = DenseSampler(4, 2, 2, test_mode=True)(12)
    for clip in range(2):
        expected = ds.transform(dataset_module.decode_frames(record.path, indices[clip]))  # (3, T, C, S, S)
        assert torch.equal(views[3 * clip : 3 * clip + 3], expected)


def test_multi_view_marks_unreadable_videos(videos, caplog):
    records = [VideoRecord(videos["truncated"], 1, "bad"), VideoRecord(videos["gray"], 0, "good")]
    ds = MultiViewDataset(records, SegmentSampler(4, test_mode=True), crop_size=16)
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        views, label, video_id = ds[0]
    assert label == SKIPPED_LABEL and video_id == "bad" and views.shape == (1, 4, 3, 16, 16) and not views.any()
    assert videos["truncated"] in caplog.text
    assert ds[1][1] == 0
    assert ds.skipped() == [(videos["truncated"], "corrupt or truncated")]



def test_multi_view_views_of_one_record_raise_instead_of_flagging(videos):
    records = [VideoRecord(videos["truncated"], 1, "bad"), VideoRecord(videos["gray"], 0, "good")]
    ds = MultiViewDataset(records, SegmentSampler(4, test_mode=True), crop_size=16)
    with pytest.raises(VideoDecodeError, match="truncated.mp4: cannot open"):
        ds.views(0)
    assert ds.skipped() == []  # the caller got the error: nothing logged or flagged
    assert torch.equal(ds.views(1), ds[1][0]) and ds.views(1).shape == (1, 4, 3, 16, 16)
    with pytest.raises(IndexError):
        ds.views(2)

def test_constructor_checks(videos):
    ann = videos["annotations"]
    with pytest.raises(ValueError, match="MultiViewDataset"):
        VideoClipDataset(ann, DenseSampler(4, 2, num_clips=2))
    with pytest.raises(ValueError, match="test-mode"):
        MultiViewDataset(ann, DenseSampler(4, 2))
    with pytest.raises(ValueError, match="no records"):
        VideoClipDataset([], DenseSampler(4))


def test_out_of_range_indices_raise_index_error(videos):
    clips = VideoClipDataset(videos["annotations"], DenseSampler(2))
    views = MultiViewDataset(videos["annotations"], DenseSampler(2, test_mode=True), crop_size=16)
    for ds in (clips, views):
        with pytest.raises(IndexError):
            ds[4]
        with pytest.raises(IndexError):
            ds[-1]
        assert len(list(ds)) == 4  # plain iteration stops
