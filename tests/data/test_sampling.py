"""Samplers against hand-computed MMAction2 cases, plus properties over random arguments."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptkit.data import DenseSampler, SegmentSampler


def offsets_seen(sampler, num_frames: int, draws: int = 400) -> list[set[int]]:
    """Per clip, every first index seen over many random draws."""
    rng = np.random.default_rng(0)
    seen: list[set[int]] = [set() for _ in range(sampler.num_clips)]
    for _ in range(draws):
        for clip, first in enumerate(sampler(num_frames, rng)[:, 0].tolist()):
            seen[clip].add(first)
    return seen


# ---- dense, test mode -------------------------------------------------------------------------------------------


def test_dense_test_three_clips_first_at_zero_last_at_end():
    # n=300, 8x16: span = 7*16+1 = 113, max_off = 187, offsets = round([0, 93.5, 187]) = [0, 94, 187]
    indices = DenseSampler(8, 16, num_clips=3, test_mode=True)(300)
    assert indices[:, 0].tolist() == [0, 94, 187]
    assert indices[2, -1] == 299
    np.testing.assert_array_equal(indices[1], 94 + 16 * np.arange(8))


def test_dense_test_single_clip_is_centred():
    # n=300, 8x16: max_off = 187 -> 187 // 2 = 93
    np.testing.assert_array_equal(DenseSampler(8, 16, test_mode=True)(300), [93 + 16 * np.arange(8)])
    # n=20, 4x2: span = 7, max_off = 13 -> 6
    np.testing.assert_array_equal(DenseSampler(4, 2, test_mode=True)(20), [[6, 8, 10, 12]])


def test_dense_test_two_clips():
    # n=50, 4x3: span = 10, max_off = 40 -> offsets [0, 40]
    np.testing.assert_array_equal(DenseSampler(4, 3, 2, test_mode=True)(50), [[0, 3, 6, 9], [40, 43, 46, 49]])


@pytest.mark.parametrize("num_frames, num_clips, starts", [
    # MMAction2 0.x, by hand: avg = (n - 8 * 16 + 1) / k, start_i = int(avg * (i + 0.5)).
    (300, 3, [28, 86, 144]),  # avg = 173 / 3 = 57.67: int(28.83), int(86.5), int(144.17)
    (300, 1, [86]),  # avg = 173: int(86.5)
    (200, 2, [18, 54]),  # avg = 73 / 2 = 36.5: int(18.25), int(54.75)
    (128, 3, [0, 0, 0]),  # avg = 1 / 3: int(0.17), int(0.5), int(0.83)
    (127, 3, [0, 0, 0]),  # shorter than 8 * 16 frames: every clip at 0
    (120, 3, [0, 0, 0]),
])
def test_dense_test_mmaction2_0x_convention_of_the_aim_authors(num_frames, num_clips, starts):
    sampler = DenseSampler(8, 16, num_clips, test_mode=True, test_convention="mmaction2-0.x")
    expected = (np.array(starts)[:, None] + 16 * np.arange(8)) % num_frames
    np.testing.assert_array_equal(sampler(num_frames), expected)


@pytest.mark.parametrize("num_frames, num_clips, starts", [
    # MMAction2 1.x, by hand: span = 7 * 16 + 1 = 113, max_off = n - 113, start_i = round(i * max_off / (k - 1)).
    (300, 3, [0, 94, 187]),  # max_off 187: 0, round(93.5) = 94 (half to even), 187
    (300, 1, [93]),  # max_off // 2
    (120, 3, [0, 4, 7]),  # max_off 7: 0, round(3.5) = 4, 7
])
def test_dense_test_mmaction2_1x_convention(num_frames, num_clips, starts):
    for sampler in (DenseSampler(8, 16, num_clips, test_mode=True),
                    DenseSampler(8, 16, num_clips, test_mode=True, test_convention="mmaction2-1.x")):
        np.testing.assert_array_equal(sampler(num_frames)[:, 0], starts)


def test_unknown_test_convention_is_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match="mmaction2-0.x"):
        DenseSampler(8, 16, test_mode=True, test_convention="pyslowfast")


def test_dense_short_video_loops():
    # n=10, 8x4: the clip spans 29/32 frames > 10, offset 0, indices wrap modulo 10
    expected = [[0, 4, 8, 2, 6, 0, 4, 8]]
    np.testing.assert_array_equal(DenseSampler(8, 4, test_mode=True)(10), expected)
    np.testing.assert_array_equal(DenseSampler(8, 4)(10, np.random.default_rng(0)), expected)


# ---- dense, train mode ------------------------------------------------------------------------------------------


def test_dense_train_single_clip_offsets_cover_the_valid_range():
    # n=20, 4x2: span = 8, avg = (20 - 8 + 1) // 1 = 13 -> offset in {0..12}
    assert offsets_seen(DenseSampler(4, 2), 20) == [set(range(13))]


def test_dense_train_several_clips_jitter_within_their_interval():
    # n=30, 4x2, 3 clips: avg = (30 - 8 + 1) // 3 = 7 -> offsets [0, 7, 14] + {0..6}
    assert offsets_seen(DenseSampler(4, 2, 3), 30) == [set(range(0, 7)), set(range(7, 14)), set(range(14, 21))]


def test_dense_train_fallback_random_sorted_offsets():
    # n=18, 8x2, 4 clips: avg = (18 - 16 + 1) // 4 = 0 but n > span -> sorted random offsets in {0, 1, 2}
    sampler = DenseSampler(8, 2, 4)
    rng = np.random.default_rng(1)
    firsts = set()
    for _ in range(200):
        offsets = sampler(18, rng)[:, 0]
        assert (np.diff(offsets) >= 0).all()
        firsts.update(offsets.tolist())
    assert firsts == {0, 1, 2}


def test_dense_train_clip_as_long_as_the_video_starts_at_zero():
    # n = span = 16: avg = 1 -> offset 0 + randint(1) = 0
    np.testing.assert_array_equal(DenseSampler(8, 2)(16, np.random.default_rng(0)), [2 * np.arange(8)])


# ---- segment ----------------------------------------------------------------------------------------------------


def test_segment_test_takes_segment_middles():
    # n=9, 4 segments: seg = 2, bounds [0, 2, 4, 6, 8] -> middles [1, 3, 5, 7]
    np.testing.assert_array_equal(SegmentSampler(4, test_mode=True)(9), [[1, 3, 5, 7]])
    # n=10: seg = 2.25, bounds round([0, 2.25, 4.5, 6.75, 9]) = [0, 2, 4, 7, 9] (4.5 rounds to even) -> [1, 3, 5, 8]
    np.testing.assert_array_equal(SegmentSampler(4, test_mode=True)(10), [[1, 3, 5, 8]])


def test_segment_short_video_repeats_frames():
    # n=3, 8 segments: seg = 0.25, bounds [0, 0, 0, 1, 1, 1, 2, 2, 2] -> middles [0, 0, 0, 1, 1, 1, 2, 2]
    np.testing.assert_array_equal(SegmentSampler(8, test_mode=True)(3), [[0, 0, 0, 1, 1, 1, 2, 2]])
    np.testing.assert_array_equal(SegmentSampler(8)(1, np.random.default_rng(0)), [[0] * 8])


def test_segment_train_draws_anywhere_in_each_segment_ends_included():
    # n=10, 4 segments: bounds [0, 2, 4, 7, 9]
    sampler = SegmentSampler(4)
    rng = np.random.default_rng(0)
    seen: list[set[int]] = [set() for _ in range(4)]
    for _ in range(400):
        for i, frame in enumerate(sampler(10, rng)[0].tolist()):
            seen[i].add(frame)
    assert seen == [{0, 1, 2}, {2, 3, 4}, {4, 5, 6, 7}, {7, 8, 9}]


def test_segment_test_clips_spread_inside_the_segments_train_clips_independent():
    # n=13, 4 segments: seg = 3, bounds [0, 3, 6, 9, 12]; clip k of 2 at (k + 1) / 3 of each segment
    np.testing.assert_array_equal(SegmentSampler(4, 2, test_mode=True)(13), [[1, 4, 7, 10], [2, 5, 8, 11]])
    # 3 clips of 4 segments of 2 frames: points at 1/4, 2/4, 3/4 of a length-2 segment -> offsets 0, 1, 1
    np.testing.assert_array_equal(SegmentSampler(4, 3, test_mode=True)(9), [[0, 2, 4, 6], [1, 3, 5, 7], [1, 3, 5, 7]])
    clips = SegmentSampler(8, 2)(200, np.random.default_rng(0))
    assert not np.array_equal(clips[0], clips[1])


@settings(max_examples=200, deadline=None)
@given(clip_len=st.integers(1, 32), num_clips=st.integers(1, 10), n=st.integers(1, 2000))
def test_segment_test_clips_stay_in_their_segments_in_order_and_differ_where_they_can(clip_len, num_clips, n):
    clips = SegmentSampler(clip_len, num_clips, test_mode=True)(n)
    single = SegmentSampler(clip_len, test_mode=True)(n)[0]
    bounds = np.round((n - 1) / clip_len * np.arange(clip_len + 1)).astype(np.int64)
    assert clips.shape == (num_clips, clip_len)
    assert ((clips >= bounds[:-1]) & (clips <= bounds[1:])).all()
    assert (np.diff(clips, axis=0) >= 0).all()  # later clips later inside each segment
    if num_clips % 2:  # an odd count has the middle clip at the one-clip position
        np.testing.assert_array_equal(clips[num_clips // 2], single)
    longest = int((bounds[1:] - bounds[:-1]).max())
    if longest + 1 >= num_clips + 1:  # room for num_clips distinct points in the longest segment
        assert len({tuple(c) for c in clips.tolist()}) == num_clips


# ---- argument checks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: DenseSampler(0),
        lambda: DenseSampler(8, 0),
        lambda: DenseSampler(8, 4, 0),
        lambda: DenseSampler(-1),
        lambda: DenseSampler(2.5),
        lambda: DenseSampler(True),
        lambda: SegmentSampler(0),
        lambda: SegmentSampler(8, 0),
    ],
)
def test_bad_arguments_raise_value_error(make):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        make()


@pytest.mark.parametrize("sampler", [DenseSampler(4), SegmentSampler(4)])
def test_empty_video_raises_value_error(sampler):
    with pytest.raises(ValueError, match="num_frames"):
        sampler(0)


# ---- properties -------------------------------------------------------------------------------------------------

sizes = dict(
    clip_len=st.integers(1, 16),
    num_clips=st.integers(1, 5),
    num_frames=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=200, deadline=None)
@given(interval=st.integers(1, 8), test_mode=st.booleans(), **sizes)
def test_dense_properties(clip_len, interval, num_clips, num_frames, seed, test_mode):
    sampler = DenseSampler(clip_len, interval, num_clips, test_mode)
    indices = sampler(num_frames, np.random.default_rng(seed))
    assert indices.shape == (num_clips, clip_len) and indices.dtype == np.int64
    assert ((indices >= 0) & (indices < num_frames)).all()
    span = (clip_len - 1) * interval + 1 if test_mode else clip_len * interval
    if num_frames >= span:  # no looping: each clip is an arithmetic run
        assert (np.diff(indices, axis=1) == interval).all()
        assert (np.diff(indices[:, 0]) >= 0).all()  # clips in time order
    if test_mode:
        np.testing.assert_array_equal(indices, sampler(num_frames, np.random.default_rng(seed + 1)))


@settings(max_examples=200, deadline=None)
@given(test_mode=st.booleans(), **sizes)
def test_segment_properties(clip_len, num_clips, num_frames, seed, test_mode):
    sampler = SegmentSampler(clip_len, num_clips, test_mode)
    indices = sampler(num_frames, np.random.default_rng(seed))
    assert indices.shape == (num_clips, clip_len) and indices.dtype == np.int64
    assert ((indices >= 0) & (indices < num_frames)).all()
    assert (np.diff(indices, axis=1) >= 0).all()  # sorted within a clip
    bounds = np.round((num_frames - 1) / clip_len * np.arange(clip_len + 1))
    assert ((indices >= bounds[:-1]) & (indices <= bounds[1:])).all()  # each frame inside its own segment
    if test_mode:
        np.testing.assert_array_equal(indices, sampler(num_frames, np.random.default_rng(seed + 1)))
