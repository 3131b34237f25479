"""Tests of awe.image.stats against numpy and known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from awe.image.stats import (MAD_TO_SIGMA, ImStat, difference_stdev, imstat, robust_sigma, sigma_clipped_stats,
                             subwin_stats)


def test_imstat_matches_numpy_and_ignores_nan_and_mask():
    rng = np.random.default_rng(1)
    data = rng.normal(180.0, 28.0, (300, 200)).astype(np.float32)
    data[5, 5] = np.nan
    data[6, 6] = np.inf
    mask = np.zeros(data.shape, dtype=bool)
    mask[:10] = True
    data[0, 0] = 1e6  # masked, must not count
    stat = imstat(data, mask)
    good = data[10:]
    assert isinstance(stat, ImStat)
    assert stat.mean == pytest.approx(float(np.mean(good, dtype=np.float64)), rel=1e-9)
    assert stat.median == pytest.approx(float(np.median(good)))
    assert stat.stdev == pytest.approx(float(np.std(good, dtype=np.float64)), rel=1e-9)
    assert (stat.min, stat.max) == (float(good.min()), float(good.max()))
    assert stat.as_dict()["median"] == stat.median


def test_imstat_mean_is_accurate_on_a_large_float32_frame():
    # float32 accumulation (bottleneck's nanmean) is off by percents here
    rng = np.random.default_rng(2)
    data = (rng.normal(0.0, 1.0, 2_000_000) + 10000.0).astype(np.float32)
    stat = imstat(data)
    assert stat.mean == pytest.approx(10000.0, abs=0.0015)  # measured 7e-4: the sample's own mean
    assert stat.stdev == pytest.approx(1.0, rel=5e-4)  # measured -1.7e-4


def test_imstat_of_integer_and_empty_data():
    ints = np.arange(12, dtype=np.uint16).reshape(3, 4)
    stat = imstat(ints)
    assert (stat.mean, stat.median, stat.min, stat.max) == (5.5, 5.5, 0.0, 11.0)
    assert imstat(ints.astype(">i2")) == stat  # big-endian, as FITS memory maps deliver
    empty = imstat(np.full((4, 4), np.nan))
    assert all(math.isnan(v) for v in empty.as_dict().values())
    with pytest.raises(ValueError, match="mask shape"):
        imstat(ints, np.zeros((2, 2), dtype=bool))


def test_robust_sigma_ignores_outliers():
    rng = np.random.default_rng(3)
    data = rng.normal(50.0, 4.0, 100_000)
    data[:20_000] = rng.uniform(1e3, 1e5, 20_000)  # 20 % outliers
    # 20 % one-sided contamination inflates the MAD by 38 % (median at the 62.5 % point, half of the rest
    # within +-0.933 sigma of it), never by the outliers' size
    assert robust_sigma(data) == pytest.approx(4.0 * MAD_TO_SIGMA * 0.93269, rel=0.004)  # measured -0.16 %
    assert robust_sigma(data[20_000:]) == pytest.approx(4.0, rel=0.002)  # measured -0.08 %
    stack = rng.normal(0.0, 2.0, (9, 50, 60))
    per_pixel = robust_sigma(stack, axis=0)
    assert per_pixel.shape == (50, 60)
    assert np.median(per_pixel) == pytest.approx(2.0 * 0.9, rel=0.06)  # small-sample MAD is biased low: -2.9 %


def test_sigma_clipped_stats_rejects_outliers():
    rng = np.random.default_rng(4)
    data = rng.normal(100.0, 2.0, 50_000)
    data[:500] += 1000.0
    stats = sigma_clipped_stats(data, sigma=3.0)
    assert stats.mean == pytest.approx(100.0, abs=0.008)  # measured 0.004
    assert stats.stdev == pytest.approx(2.0 * 0.98658, rel=0.002)  # a Gaussian cut at 3 sigma: measured -0.1 %
    assert stats.n_rejected >= 500
    assert stats.n_used + stats.n_rejected == data.size
    with pytest.raises(ValueError, match="sigma"):
        sigma_clipped_stats(data, sigma=0)


def test_subwin_stats_measures_a_gradient():
    y, x = np.mgrid[0:400, 0:400]
    image = 1.0 + 0.001 * x  # 0.4 across
    sub = subwin_stats(image, grid=(2, 4))
    assert sub.medians.shape == (2, 4)
    assert sub.flatness == pytest.approx(0.3, abs=1e-9)  # centres 50 px .. 350 px
    assert sub.max_stdev == pytest.approx(0.1 / math.sqrt(12), rel=2e-4)  # a discrete ramp: -5e-5


def test_difference_stdev_sees_changes_and_does_not_collapse():
    """Two master biases: shared hot pixels do not count, a change on 2 % of the chip does (a clipped stdev
    ignores it), and two masters that share nearly all their frames read their small true difference."""
    rng = np.random.default_rng(5)
    shape = (400, 300)
    pattern = 180.0 + rng.normal(0.0, 0.5, (1, shape[1]))
    hot = rng.random(shape) < 5e-4

    def frame():  # hot pixels are noisier: the shot noise of their dark current
        return pattern + rng.normal(0.0, 2.5, shape) + hot * (300.0 + rng.normal(0.0, 40.0, shape))

    frames = [frame() for _ in range(10)]
    old = np.mean(frames, axis=0)
    new = np.mean(frames[1:] + [frame()], axis=0)
    shared = 2.5 * np.sqrt(2 / 100)  # 9 of 10 frames shared: the difference is (x10' - x10) / 10
    assert difference_stdev(new, old) == pytest.approx(shared, rel=0.005)  # measured +0.2 %
    assert np.std(new - old) > 1.03 * shared  # the hot pixels left in: measured 1.056 x
    assert sigma_clipped_stats(new - old, sigma=3.0).stdev < 0.99 * shared  # clipped: narrower
    same = difference_stdev(old, old.copy())
    assert same == 0.0  # identical masters differ by nothing
    changed = new.copy()
    changed[:8] += 6.0  # 2 % of the pixels: a structure that was not there before
    assert difference_stdev(changed, old) > 2.0 * shared  # measured 2.6 x
    assert sigma_clipped_stats(changed - old, sigma=3.0).stdev < 1.01 * shared  # what clipping hides
    with pytest.raises(ValueError, match="differ in shape"):
        difference_stdev(new, old[:10])
