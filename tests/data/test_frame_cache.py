"""The pre-decoded frame cache: exact frames, chunking, unreadable videos, and both datasets reading it."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from adaptkit.data import (
    AugmentConfig,
    DenseSampler,
    FrameCache,
    MultiViewDataset,
    SegmentSampler,
    VideoClipDataset,
    VideoDecodeError,
    VideoRecord,
    VideoTrainTransform,
    build_frame_cache,
    decode_frames,
    write_corrupt_video,
)

from ._videos import assert_frames_are, write_gray_video


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache_videos")
    good = [write_gray_video(folder / f"v{i}.mp4", 20 + 4 * i, gop=8, height=48, width=64) for i in range(3)]
    broken = write_corrupt_video(folder / "broken.mp4", "garbage")
    paths = [*good, broken]
    return [VideoRecord(str(p), i % 2, p.stem) for i, p in enumerate(paths)]


def test_cache_holds_every_frame_exactly_resized_and_lists_unreadable_videos(records, tmp_path):
    cache = build_frame_cache(records, tmp_path / "cache", short_side=32, chunk_bytes=40_000, window=7)
    assert len(cache) == 3 and [path for path, *_ in cache.skipped] == [records[3].path]
    assert len(list((tmp_path / "cache").glob("chunk_*.u8"))) > 1  # small chunks: the videos spread over several
    for record in records[:3]:
        count = cache.num_frames(record.path)
        frames = cache.frames(record.path, np.arange(count))
        assert frames.shape == (count, 3, 32, 42)  # 48x64 with the short side at 32, as torchvision sizes it
        assert_frames_are(frames, list(range(count)))
        indices = [count - 1, 3, 3, 0, 100]
        torch.testing.assert_close(cache.frames(record.path, indices),
                                   decode_frames(record.path, indices, short_side=32), rtol=0, atol=0)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["short_side"] == 32 and index["version"] == 2
    for record in records[:3]:  # each video's file size and mtime, for the staleness check
        assert index["videos"][record.path][5:] == [os.stat(record.path).st_size, os.stat(record.path).st_mtime_ns]
    assert index["skipped"][0][0] == records[3].path and index["skipped"][0][2] == "corrupt"


def test_cache_built_by_worker_processes_is_byte_identical(records, tmp_path):
    """Decoding in 2 DataLoader workers changes nothing on disk: same index, same chunk bytes, same skips."""
    serial = build_frame_cache(records, tmp_path / "serial", short_side=32, chunk_bytes=40_000)
    parallel = build_frame_cache(records, tmp_path / "parallel", short_side=32, chunk_bytes=40_000, workers=2)
    assert json.loads((tmp_path / "serial" / "index.json").read_text()) == json.loads(
        (tmp_path / "parallel" / "index.json").read_text())
    chunks = sorted(p.name for p in (tmp_path / "serial").glob("chunk_*.u8"))
    assert chunks and chunks == sorted(p.name for p in (tmp_path / "parallel").glob("chunk_*.u8"))
    assert all((tmp_path / "serial" / c).read_bytes() == (tmp_path / "parallel" / c).read_bytes() for c in chunks)
    broken = os.stat(records[3].path)
    assert serial.skipped == parallel.skipped == [[records[3].path, serial.skipped[0][1], "corrupt", broken.st_size,
                                                   broken.st_mtime_ns]]
    with pytest.raises(ValueError, match="workers"):
        build_frame_cache(records, tmp_path / "bad", workers=-1)


def test_clip_dataset_reads_the_cache_as_it_would_decode(records, tmp_path):
    transform = VideoTrainTransform(AugmentConfig(crop_size=24, resize_size=32))
    cache = build_frame_cache(records, tmp_path / "cache", short_side=transform.short_side)
    decoding = VideoClipDataset(records, DenseSampler(4, 2), transform, seed=3)
    cached = VideoClipDataset(records, DenseSampler(4, 2), transform, seed=3, frame_cache=tmp_path / "cache")
    for i in range(3):
        clip, label, index = cached[i]
        torch.testing.assert_close(clip, decoding[i][0], rtol=0, atol=0)
        assert (label, index) == (records[i].label, i)
    # the broken video, absent from the cache, is skipped like a broken file: replaced by the same seeded draw
    assert cached[3][2] == decoding[3][2] in (0, 1, 2)
    assert cached.skipped() == [(records[3].path, "corrupt or truncated")]
    # Workers get their own memory maps (the cache pickles without them).
    loader = DataLoader(VideoClipDataset(records[:3], SegmentSampler(4), transform, seed=0, frame_cache=cache),
                        batch_size=3, num_workers=1)
    assert next(iter(loader))[0].shape == (3, 4, 3, 24, 24)


def test_multi_view_evaluation_reads_the_same_cache(records, tmp_path):
    cache = build_frame_cache(records, tmp_path / "cache", short_side=32)
    sampler = DenseSampler(4, 2, num_clips=2, test_mode=True)
    decoding = MultiViewDataset(records, sampler, crop_size=24, num_crops=3, resize_size=32)
    cached = MultiViewDataset(records, sampler, crop_size=24, num_crops=3, resize_size=32, frame_cache=cache)
    for i in range(3):
        torch.testing.assert_close(cached[i][0], decoding[i][0], rtol=0, atol=0)
    assert cached[3][1] == -1  # SKIPPED_LABEL


def test_a_folder_without_index_is_not_a_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="build one with `adaptkit cache --config <config> --out <folder>`"):
        FrameCache(tmp_path)


@pytest.fixture()
def own_videos(records, tmp_path):
    """Copies of the three readable videos in this test's folder, free to change, plus an empty file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    copies = [VideoRecord(str(shutil.copy(r.path, folder / f"v{i}.mp4")), r.label, r.video_id)
              for i, r in enumerate(records[:3])]
    empty = folder / "empty.mp4"
    empty.touch()
    return [*copies, VideoRecord(str(empty), 0, "empty")]


def test_a_video_changed_after_caching_is_skipped_as_stale_and_says_why(own_videos, tmp_path):
    cache = build_frame_cache(own_videos, tmp_path / "cache", short_side=32)
    assert [kind for _, _, kind, *_ in cache.skipped] == ["empty"]
    resized, touched, deleted = (r.path for r in own_videos[:3])
    write_gray_video(resized, 12, gop=4, height=48, width=64)  # re-encoded: another size on disk
    stat = os.stat(touched)
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, newer mtime
    os.remove(deleted)
    reopened = FrameCache(tmp_path / "cache")
    assert reopened.changed(resized).startswith("now ") and "bytes" in reopened.changed(resized)
    assert reopened.changed(touched) == "modified after it was cached"
    assert reopened.changed(deleted) is None  # gone: the cache stands in for the video
    with pytest.raises(VideoDecodeError, match="changed since the frame cache") as caught:
        reopened.num_frames(touched)
    assert caught.value.kind == "stale"
    assert reopened.frames(deleted, [0]).shape == (1, 3, 32, 42)

    sampler = DenseSampler(2, 1)
    dataset = VideoClipDataset(own_videos, sampler, seed=0, frame_cache=tmp_path / "cache")
    assert [dataset[i][2] for i in range(4)] == [2, 2, 2, 2]  # only the deleted-but-cached video is served
    assert dataset.skipped() == [(resized, "changed since the frame cache was built"),
                                 (touched, "changed since the frame cache was built"),
                                 (own_videos[3].path, "empty file (0 bytes)")]


def test_skip_reasons_name_a_video_missing_from_the_cache(own_videos, tmp_path):
    build_frame_cache(own_videos[:2], tmp_path / "cache", short_side=32)
    dataset = MultiViewDataset(own_videos, DenseSampler(2, 1, test_mode=True), crop_size=24, resize_size=32,
                               frame_cache=tmp_path / "cache")
    assert [dataset[i][1] for i in range(4)] == [own_videos[0].label, own_videos[1].label, -1, -1]
    assert dataset.skipped() == [(own_videos[2].path, "not in the frame cache"),
                                 (own_videos[3].path, "not in the frame cache")]


def test_a_version_1_cache_is_still_read_without_the_staleness_check(own_videos, tmp_path):
    build_frame_cache(own_videos, tmp_path / "cache", short_side=32)
    index_path = tmp_path / "cache" / "index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({  # what adaptkit wrote before file stamps were recorded
        **index, "version": 1, "videos": {path: entry[:5] for path, entry in index["videos"].items()},
        "skipped": [entry[:2] for entry in index["skipped"]]}))
    stat = os.stat(own_videos[0].path)
    os.utime(own_videos[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    old = FrameCache(tmp_path / "cache")
    assert old.version == 1 and old.changed(own_videos[0].path) is None
    torch.testing.assert_close(old.frames(own_videos[0].path, [0, 1]),
                               decode_frames(own_videos[0].path, [0, 1], short_side=32), rtol=0, atol=0)
    with pytest.raises(VideoDecodeError, match="unreadable when the frame cache") as caught:
        old.num_frames(own_videos[3].path)
    assert caught.value.kind == "corrupt"  # version 1 did not record the kind
    index_path.write_text(json.dumps({**index, "version": 7}))
    with pytest.raises(ValueError, match="version 7, expected one of"):
        FrameCache(tmp_path / "cache")


def test_an_update_decodes_only_new_changed_and_previously_unreadable_videos(own_videos, records, tmp_path):
    folder = tmp_path / "cache"
    build_frame_cache(own_videos, folder, short_side=32)
    before = json.loads((folder / "index.json").read_text())["videos"]
    changed, kept, _ = (r.path for r in own_videos[:3])
    write_gray_video(changed, 10, gop=4, height=48, width=64)  # re-encoded
    shutil.copy(records[2].path, own_videos[3].path)  # the empty download, now complete
    added = shutil.copy(records[0].path, tmp_path / "videos" / "added.mp4")
    (folder / "chunk_00099.u8").write_bytes(b"left by an update cut short")
    updated = build_frame_cache([*own_videos, added], folder, short_side=32, update=True)

    after = json.loads((folder / "index.json").read_text())["videos"]
    assert after[kept] == before[kept] and after[own_videos[2].path] == before[own_videos[2].path]  # frames kept
    assert {after[path][0] for path in (changed, own_videos[3].path, str(added))} == {1}  # one new chunk
    assert updated.skipped == [] and len(updated) == 5 and not (folder / "chunk_00099.u8").exists()
    for path in (changed, own_videos[3].path, str(added), kept):
        count = updated.num_frames(path)
        torch.testing.assert_close(updated.frames(path, np.arange(count)),
                                   decode_frames(path, np.arange(count), short_side=32), rtol=0, atol=0)
    assert updated.num_frames(changed) == 10
    assert updated.unreferenced_bytes == before[changed][2] * 32 * 42 * 3 > 0  # the replaced frames

    chunks = sorted(p.name for p in folder.glob("chunk_*.u8"))
    again = build_frame_cache([*own_videos, added], folder, short_side=32, update=True)  # nothing to do
    assert sorted(p.name for p in folder.glob("chunk_*.u8")) == chunks and again.videos == updated.videos
    with pytest.raises(ValueError, match="short side 32, not 24"):
        build_frame_cache(own_videos, folder, short_side=24, update=True)
    rebuilt = build_frame_cache([*own_videos, added], folder, short_side=32)  # without update: reclaimed
    assert rebuilt.unreferenced_bytes == 0 and len(list(folder.glob("chunk_*.u8"))) == 1


def test_an_update_refuses_a_version_1_cache_and_builds_where_there_is_none(own_videos, tmp_path):
    assert len(build_frame_cache(own_videos[:2], tmp_path / "new", short_side=32, update=True)) == 2
    index_path = tmp_path / "new" / "index.json"
    index_path.write_text(json.dumps({**json.loads(index_path.read_text()), "version": 1}))
    with pytest.raises(ValueError, match="version-1 frame cache records no file sizes"):
        build_frame_cache(own_videos[:2], tmp_path / "new", short_side=32, update=True)


def test_a_video_fixed_after_it_was_cached_as_unreadable_reads_as_changed(own_videos, records, tmp_path):
    """An empty download completed after the cache was built is not reported as still empty: update the cache."""
    build_frame_cache(own_videos, tmp_path / "cache", short_side=32)
    empty = own_videos[3].path
    shutil.copy(records[0].path, empty)
    with pytest.raises(VideoDecodeError, match="changed since the frame cache .* when it was unreadable "
                                               r"\(empty file \(0 bytes\)\); update it") as caught:
        FrameCache(tmp_path / "cache").num_frames(empty)
    assert caught.value.kind == "stale"


def test_a_damaged_cache_is_named_rather_than_failing_deep_inside(own_videos, tmp_path):
    cache = build_frame_cache(own_videos[:2], tmp_path / "cache", short_side=32)
    chunk = tmp_path / "cache" / "chunk_00000.u8"
    chunk.write_bytes(chunk.read_bytes()[:1000])  # cut short: the first video's frames are incomplete
    with pytest.raises(VideoDecodeError, match=r"cut short \(chunk_00000.u8 is damaged\)") as caught:
        FrameCache(tmp_path / "cache").frames(own_videos[0].path, [0])
    assert caught.value.kind == "corrupt" and len(cache) == 2
    (tmp_path / "cache" / "index.json").write_text("{videos: ")
    with pytest.raises(ValueError, match="index.json is not a readable frame cache index"):
        FrameCache(tmp_path / "cache")


def test_one_build_at_a_time_per_folder(own_videos, tmp_path):
    """Two builds in one folder would delete each other's chunks and index the wrong frames: the second is refused."""
    from adaptkit.io import exclusive_lock

    folder = tmp_path / "cache"
    build_frame_cache(own_videos[:2], folder, short_side=32)
    before = (folder / "index.json").read_text()
    with exclusive_lock(folder / ".lock", "held by the test, as by a build in another process"):
        for update in (False, True):
            with pytest.raises(BlockingIOError, match=f"the frame cache {folder} is being built by another process"):
                build_frame_cache(own_videos, folder, short_side=32, update=update)
    assert (folder / "index.json").read_text() == before
    assert len(build_frame_cache(own_videos[:3], folder, short_side=32, update=True)) == 3  # free again


def test_a_video_cached_under_another_extension_is_found_by_the_path_it_was_recorded_under(records, tmp_path):
    """The build caches the file it decoded (e.g. ``x.webm``, found by the file check for a listed ``x.mp4`` or an
    ``x`` without extension); lookups by the listed path find it, as a dataset reading the annotations needs."""
    folder = tmp_path / "videos"
    folder.mkdir()
    webm = str(shutil.copy(records[0].path, folder / "x.webm"))  # an mp4 inside; FFmpeg reads it by content
    broken = str(shutil.copy(records[3].path, folder / "broken.mkv"))
    cache = build_frame_cache([webm, broken], tmp_path / "cache", short_side=32)
    for listed in (str(folder / "x.mp4"), str(folder / "x")):
        assert listed in cache and cache.recorded_path(listed) == webm
        assert cache.num_frames(listed) == cache.num_frames(webm) == 20
        torch.testing.assert_close(cache.frames(listed, [0, 5]), cache.frames(webm, [0, 5]), rtol=0, atol=0)
    assert cache.recorded_path(str(folder / "y.mp4")) is None and str(folder / "y.mp4") not in cache
    assert cache.unreadable_reason(str(folder / "broken.mp4")) == cache.unreadable_reason(broken) is not None
    stat = os.stat(webm)
    os.utime(webm, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert FrameCache(tmp_path / "cache").changed(str(folder / "x.mp4")) == "modified after it was cached"

    os.utime(webm, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    listed = [VideoRecord(str(folder / "x.mp4"), 0, "x"), VideoRecord(str(folder / "x"), 1, "x")]
    sampler = DenseSampler(2, 1, test_mode=True)
    cached = MultiViewDataset(listed, sampler, crop_size=24, resize_size=32, frame_cache=tmp_path / "cache")
    decoded = MultiViewDataset([VideoRecord(webm, 0, "x")], sampler, crop_size=24, resize_size=32)
    for i in range(2):
        torch.testing.assert_close(cached[i][0], decoded[0][0], rtol=0, atol=0)
    assert cached.skipped() == []


def test_a_video_missing_when_the_cache_was_built_is_skipped_as_missing(records, tmp_path, caplog):
    """A listed file that did not exist is recorded as missing and reported so when drawn, not as unreadable; a video
    the cache recorded as corrupt stays corrupt after its file is deleted (the cache stands in for the files)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    good, broken = (str(shutil.copy(records[i].path, folder / f"{name}.mp4")) for i, name in ((0, "a"), (3, "broken")))
    gone = str(folder / "gone.mp4")
    with caplog.at_level(logging.INFO, logger="adaptkit.data"):
        cache = build_frame_cache([good, broken, gone], tmp_path / "cache", short_side=32)
    assert f"not caching 1 missing video file(s), recorded as missing (e.g. {gone})" in caplog.text
    assert "not caching unreadable video " + gone not in caplog.text
    assert [kind for _, _, kind, *_ in cache.skipped] == ["corrupt", "missing"]
    assert cache.missing_when_built(gone) and not cache.missing_when_built(broken)
    assert not cache.missing_when_built(good) and not cache.missing_when_built(folder / "never_listed.mp4")
    with pytest.raises(VideoDecodeError, match="missing when the frame cache .* was built") as caught:
        cache.num_frames(gone)
    assert caught.value.kind == "missing"
    os.remove(broken)
    listed = [VideoRecord(path, 0, os.path.basename(path)) for path in (good, broken, gone)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        dataset = VideoClipDataset(listed, DenseSampler(2, 1), seed=0, frame_cache=cache)
        assert [dataset[i][2] for i in range(3)] == [0, 0, 0]
    assert dataset.skipped() == [(broken, "corrupt or truncated"), (gone, "missing")]
    assert f"skipping missing video {gone}" in caplog.text and f"skipping unreadable video {broken}" in caplog.text
    with open(gone, "wb"):  # appeared since: read as changed, no longer as missing
        pass
    assert not FrameCache(tmp_path / "cache").missing_when_built(gone)
