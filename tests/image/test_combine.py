"""Tests of awe.image.combine: clipping against injected outliers, streaming, masks, scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from awe.image.combine import Combiner, combine, pooled_norm
from awe.image.overscan import OverscanCorrector

SHAPE = (96, 160)
NOISE = 3.0


def bias_stack(n=10, seed=0, ncosmic=150):
    """``n`` frames of 100 ADU + fixed pattern + noise, with cosmic rays; returns (frames, truth, hits)."""
    rng = np.random.default_rng(seed)
    truth = (100.0 + rng.normal(0.0, 5.0, SHAPE)).astype(np.float32)
    frames, hits = [], np.zeros((n,) + SHAPE, dtype=bool)
    for k in range(n):
        frame = truth + rng.normal(0.0, NOISE, SHAPE).astype(np.float32)
        yy, xx = rng.integers(0, SHAPE[0], ncosmic), rng.integers(0, SHAPE[1], ncosmic)
        frame[yy, xx] += rng.uniform(30.0, 5000.0, ncosmic).astype(np.float32)
        hits[k, yy, xx] = True
        frames.append(frame)
    return frames, truth, hits


def test_clipped_mean_rejects_cosmics_that_spoil_the_mean():
    frames, truth, hits = bias_stack()
    ideal = NOISE / np.sqrt(len(frames))
    clipped = combine(frames, method="clipped_mean", sigma=3.0)
    plain = combine(frames, method="mean")
    err = clipped.data - truth
    assert clipped.data.dtype == np.float32
    assert np.std(err) < 1.06 * ideal  # measured 1.029
    assert np.abs(err).max() < 6 * ideal  # measured 4.4
    assert np.abs(plain.data - truth).max() > 100  # what the clipping saves us from
    # the cosmic (>= 10 sigma) of every pixel hit once is rejected; few good values go with it
    single = hits.sum(axis=0) == 1
    assert np.all(clipped.nused[single] <= 9)
    assert np.mean(clipped.nused[single] == 9) > 0.93  # measured 0.964
    assert np.mean(clipped.nused[hits.sum(axis=0) == 0] == 10) > 0.95  # 3 sigma clips ~0.3 % of good values
    assert clipped.nused.dtype == np.uint8
    assert clipped.n_rejected >= hits.sum() - 50  # a few faint cosmics hide in the noise


@pytest.mark.parametrize("method", ["median", "clipped_median"])
def test_median_methods(method):
    frames, truth, _ = bias_stack(n=9, seed=1)
    res = combine(frames, method=method)
    # the median's noise is ~1.25x the mean's
    assert np.std(res.data - truth) < 1.4 * NOISE / 3.0
    assert np.abs(res.data - truth).max() < 8 * NOISE / 3.0


def test_mad_estimator_also_rejects_cosmics_std_cannot_with_ten_frames():
    frames, truth, _ = bias_stack(seed=2)
    mad = combine(frames, sigma_estimator="mad")
    # a per-pixel MAD from ten values is noisy: more good values are clipped than with 'pooled'
    assert np.abs(mad.data - truth).max() < 10 * NOISE / np.sqrt(10)
    assert mad.n_rejected > combine(frames).n_rejected
    # one outlier among ten is at most 3.16 standard deviations (about the median) from the median
    std = combine(frames, sigma_estimator="std", maxiters=1)
    assert np.abs(std.data - truth).max() > 50


def test_three_frames_with_moving_stars_are_combined_cleanly():
    rng = np.random.default_rng(3)
    truth = np.ones(SHAPE, dtype=np.float32)
    frames = []
    stars = np.zeros(SHAPE, dtype=bool)
    for k in range(3):
        frame = truth + rng.normal(0.0, 0.005, SHAPE).astype(np.float32)
        # 3x3-pixel stars of 50 % of the sky on a grid that moves by 4 pixels between exposures
        for y in range(4 + 4 * k, SHAPE[0] - 2, 16):
            for x in range(4 + 4 * k, SHAPE[1] - 2, 16):
                frame[y - 1:y + 2, x - 1:x + 2] += rng.uniform(0.05, 0.5)
                stars[y - 1:y + 2, x - 1:x + 2] = True
        frames.append(frame)
    res = combine(frames, method="clipped_mean")
    assert np.abs(res.data - 1.0).max() < 0.03
    assert np.std(res.data[stars] - 1.0) < 1.08 * 0.005 / np.sqrt(2)  # two frames left on stars: 1.04
    assert np.std(res.data[~stars] - 1.0) < 1.035 * 0.005 / np.sqrt(3)  # measured 1.016
    assert np.abs(combine(frames, method="mean").data - 1.0).max() > 0.1


def test_streaming_from_memmaps_and_readers_matches_in_memory(tmp_path):
    frames, _, _ = bias_stack(n=7, seed=4)
    reference = combine(frames, block_rows=SHAPE[0], return_stdev=True)
    maps = []
    for k, frame in enumerate(frames):
        mm = np.memmap(tmp_path / f"f{k}.dat", dtype=">f4", mode="w+", shape=SHAPE)
        mm[:] = frame
        mm.flush()
        maps.append(np.memmap(tmp_path / f"f{k}.dat", dtype=">f4", mode="r", shape=SHAPE))
    out = np.memmap(tmp_path / "out.dat", dtype=np.float32, mode="w+", shape=SHAPE)
    streamed = combine(maps, block_rows=13, out=out, return_stdev=True)
    assert streamed.data is out
    np.testing.assert_array_equal(streamed.data, reference.data)
    np.testing.assert_array_equal(streamed.nused, reference.nused)
    np.testing.assert_array_equal(streamed.stdev, reference.stdev)
    requested = []

    def reader(frame):
        def read(rows):
            requested.append(rows.stop - rows.start)
            return frame[rows]
        return read

    readers = [reader(f) for f in frames]
    np.testing.assert_array_equal(combine(readers, block_rows=5, shape=SHAPE).data, reference.data)
    assert max(requested) == 5 and sum(requested) == len(frames) * SHAPE[0]  # each row read once


def test_stdev_map_measures_the_noise():
    frames, _, _ = bias_stack(n=12, seed=5, ncosmic=0)
    res = combine(frames, method="mean", return_stdev=True)
    c4 = np.sqrt(2 / 11) * math.gamma(6) / math.gamma(5.5)  # E[s] = c4 sigma for 12 values (ddof=1): 0.9776
    assert np.mean(res.stdev) == pytest.approx(c4 * NOISE, rel=0.004)  # measured -0.04 % (1 sigma 0.17 %)
    clipped = combine(frames, return_stdev=True)
    # a Gaussian cut at 3 sigma is 0.9866 as wide: measured -0.24 %
    assert np.mean(clipped.stdev) == pytest.approx(0.98658 * c4 * NOISE, rel=0.005)


def test_masks_scales_and_offsets():
    rng = np.random.default_rng(6)
    truth = rng.uniform(0.9, 1.1, SHAPE).astype(np.float32)
    gains = np.array([1000.0, 1500.0, 2000.0, 2500.0, 3000.0])
    frames = [truth * g + 50.0 + rng.normal(0, 1.0, SHAPE).astype(np.float32) for g in gains]
    masks = [None] * len(frames)
    frames[0][10:20, 10:20] = 1e7  # a saturated blob, masked
    masks[0] = np.zeros(SHAPE, dtype=bool)
    masks[0][10:20, 10:20] = True
    res = combine(frames, method="mean", scales=1.0 / gains, offsets=-50.0 / gains, masks=masks)
    assert np.abs(res.data - truth).max() < 0.0025  # measured 0.0012
    assert np.all(res.nused[10:20, 10:20] == 4) and np.all(res.nused[30:] == 5)
    everything = [np.ones(SHAPE, dtype=bool)] * len(frames)
    empty = combine(frames, masks=everything)
    assert np.all(np.isnan(empty.data)) and np.all(empty.nused == 0)


def test_master_bias_from_overscan_corrected_raw_frames():
    """Master bias residual ~0.01 ADU and noise within 3-4 % of read_noise / sqrt(N) (with the overscan's)."""
    rng = np.random.default_rng(7)
    ny, nx, pre, over, read_noise, n = 200, 120, 16, 32, 2.5, 10
    pattern = rng.normal(0.0, 1.5, (ny, nx))  # fixed 2-D bias structure, the truth of the master bias
    raws = []
    for _ in range(n):
        row_level = 180.0 + rng.normal(0.0, 2.0, ny)
        raw = row_level[:, None] + rng.normal(0.0, read_noise, (ny, pre + nx + over))
        raw[:, pre:pre + nx] += pattern
        yy, xx = rng.integers(0, ny, 30), rng.integers(pre, pre + nx, 30)
        raw[yy, xx] += 800.0
        raws.append(np.round(raw).astype(np.uint16))
    corrector = OverscanCorrector(slice(pre + nx, pre + nx + over), (slice(0, ny), slice(pre, pre + nx)), mode=6)
    readers = [lambda rows, r=r, lv=corrector.levels(r): corrector(r, rows=rows, levels=lv) for r in raws]
    master = combine(readers, shape=(ny, nx), block_rows=64).data
    residual = master - pattern
    assert abs(float(np.mean(residual))) < 0.015  # measured 0.006 (0.011 with seed 17)
    # noise of the master: the pixel noise plus the per-row overscan error, both averaged over N frames
    expected = read_noise / np.sqrt(n) * np.sqrt(1 + 1.57 / over)
    assert float(np.std(residual - residual.mean(axis=1, keepdims=True))) == pytest.approx(
        read_noise / np.sqrt(n), rel=0.06)  # measured +3.0 %
    assert float(np.std(residual)) == pytest.approx(expected, rel=0.07)  # measured +3.5 %


def test_pooled_normalisation():
    # median of |x1 - x2| for two unit normals: sqrt(2) * 0.6745
    assert pooled_norm(2) == pytest.approx(np.sqrt(2) * 0.67449, rel=0.01)
    assert np.isnan(pooled_norm(1))
    # Monte Carlo below 65 values, Blom's approximation above: continuous
    assert pooled_norm(65) == pytest.approx(pooled_norm(64), rel=0.025)  # measured 1.1 %
    assert 1.8 < pooled_norm(200) < 2.0  # -> 2 sigma (16th to 84th percentile) for many values


def test_bad_input_is_refused_clearly():
    frames, _, _ = bias_stack(n=3, seed=8)
    with pytest.raises(ValueError, match="unknown combine method"):
        combine(frames, method="average")
    with pytest.raises(ValueError, match="sigma_estimator"):
        Combiner(sigma_estimator="iqr")
    with pytest.raises(ValueError, match="empty"):
        combine([])
    with pytest.raises(ValueError, match="same shape"):
        combine([frames[0], frames[1][:50]])
    with pytest.raises(ValueError, match="shape="):
        combine([lambda rows: frames[0][rows]])
    with pytest.raises(ValueError, match="scales has 2 values for 3 frames"):
        combine(frames, scales=[1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        combine(frames, sigma=0)
    with pytest.raises(ValueError, match="returned a block of shape"):
        combine([lambda rows: frames[0]] * 2, shape=SHAPE, block_rows=10)


def test_deep_stacks_keep_memory_bounded_and_counts_wide():
    rng = np.random.default_rng(9)
    frames = [rng.normal(10.0, 1.0, (8, 16)).astype(np.float32) for _ in range(300)]
    frames[0][3, 3] = 1e4
    combiner = Combiner(max_memory=300 * 16 * 10 * 2.5)  # two rows per block
    assert combiner.rows_per_block(300, 16) == 2
    res = combiner(frames)
    assert res.nused.dtype == np.int16
    assert res.nused[3, 3] < 300
    assert np.abs(res.data - 10.0).max() < 0.3
