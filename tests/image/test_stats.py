"""Tests of awe.image.stats against numpy and known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from awe.image.stats import ImStat, imstat, robust_sigma, sigma_clipped_stats, subwin_stats


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
    assert stat.mean == pytest.approx(10000.0, abs=0.01)
    assert stat.stdev == pytest.approx(1.0, rel=0.01)


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
    # 20 % one-sided contamination inflates the MAD by ~40 %, never by the outliers' size
    assert 4.0 < robust_sigma(data) < 6.0
    assert robust_sigma(data[20_000:]) == pytest.approx(4.0, rel=0.02)
    stack = rng.normal(0.0, 2.0, (9, 50, 60))
    per_pixel = robust_sigma(stack, axis=0)
    assert per_pixel.shape == (50, 60)
    assert np.median(per_pixel) == pytest.approx(2.0 * 0.9, rel=0.15)  # small-sample MAD is biased low


def test_sigma_clipped_stats_rejects_outliers():
    rng = np.random.default_rng(4)
    data = rng.normal(100.0, 2.0, 50_000)
    data[:500] += 1000.0
    stats = sigma_clipped_stats(data, sigma=3.0)
    assert stats.mean == pytest.approx(100.0, abs=0.05)
    assert stats.stdev == pytest.approx(2.0, rel=0.05)
    assert stats.n_rejected >= 500
    assert stats.n_used + stats.n_rejected == data.size
    with pytest.raises(ValueError, match="sigma"):
        sigma_clipped_stats(data, sigma=0)


def test_subwin_stats_measures_a_gradient():
    y, x = np.mgrid[0:400, 0:400]
    image = 1.0 + 0.001 * x  # 0.4 across
    sub = subwin_stats(image, grid=(2, 4))
    assert sub.medians.shape == (2, 4)
    assert sub.flatness == pytest.approx(0.3, abs=0.005)  # centres 50 px .. 350 px
    assert sub.max_stdev == pytest.approx(0.1 / math.sqrt(12), rel=0.05)
