"""Tests of awe.image.pixels: hot/cold pixel completeness and false-positive rates against known truth."""

from __future__ import annotations

import numpy as np
import pytest

from awe.image.pixels import cold_pixels, hot_pixels

NY, NX = 1024, 512


def master_bias(seed=0, nhot=400):
    """Master bias of 10 frames: 200 ADU, a gentle gradient, 2.5/sqrt(10) ADU noise, hot pixels, hot column 77."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:NY, 0:NX]
    bias = 200.0 + 3.0 * y / NY - 2.0 * x / NX + rng.normal(0.0, 2.5 / np.sqrt(10), (NY, NX))
    truth = np.zeros((NY, NX), dtype=bool)
    yy, xx = rng.integers(0, NY, nhot), rng.integers(0, NX, nhot)
    bias[yy, xx] += rng.uniform(100.0, 3000.0, nhot)
    truth[yy, xx] = True
    bias[:, 77] += 6.0
    bias[400:403, 300:303] += 500.0  # a small hot cluster
    truth[400:403, 300:303] = True
    return bias.astype(np.float32), truth


def test_hot_pixels_complete_with_few_false_positives():
    bias, truth = master_bias()
    result = hot_pixels(bias)
    found = result.mask
    assert result.hot_columns == [77]
    assert np.all(found[:, 77])
    pixels = truth.copy()
    pixels[:, 77] = False
    not_column = np.ones(found.shape, dtype=bool)
    not_column[:, 77] = False
    completeness = np.count_nonzero(found & pixels) / np.count_nonzero(pixels)
    false_rate = np.count_nonzero(found & ~truth & not_column) / found.size
    assert completeness >= 0.95
    assert false_rate < 1e-3
    assert result.n_hot == np.count_nonzero(found)
    assert result.sigma == pytest.approx(2.5 / np.sqrt(10), rel=0.05)


def test_hot_pixels_respects_known_mask_and_finds_nothing_in_clean_bias():
    rng = np.random.default_rng(1)
    clean = (200.0 + rng.normal(0.0, 0.8, (NY, NX))).astype(np.float32)
    result = hot_pixels(clean)
    assert result.n_hot < 5 and result.hot_columns == []
    clean[10, 10] = 5000.0
    known = np.zeros(clean.shape, dtype=bool)
    known[10, 10] = True
    assert not hot_pixels(clean, mask=known).mask[10, 10]
    assert hot_pixels(clean).mask[10, 10]


def master_dome(seed=0, ncold=400):
    """Normalised dome flat: vignetting, 1.5 % pixel response, 0.3 % noise, cold pixels, a blemish, bad column 200."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:NY, 0:NX] / np.array([NY, NX])[:, None, None]
    flat = (1.0 - 0.3 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)) * rng.normal(1.0, 0.015, (NY, NX))
    flat *= rng.normal(1.0, 0.003, (NY, NX))
    truth = np.zeros((NY, NX), dtype=bool)
    yy, xx = rng.integers(0, NY, ncold), rng.integers(0, NX, ncold)
    flat[yy, xx] *= rng.uniform(0.0, 0.5, ncold)
    truth[yy, xx] = True
    flat[600:640, 100:140] *= 0.3  # a 40x40 blemish
    truth[600:640, 100:140] = True
    flat[:, 200] *= 0.85  # a column with 15 % less response
    return flat.astype(np.float32), truth


def test_cold_pixels_complete_with_few_false_positives():
    flat, truth = master_dome()
    result = cold_pixels(flat)
    assert result.bad_columns == [200]
    found = result.mask
    assert np.all(found[:, 200])
    not_column = np.ones(found.shape, dtype=bool)
    not_column[:, 200] = False
    completeness = np.count_nonzero(found & truth & not_column) / np.count_nonzero(truth & not_column)
    false_rate = np.count_nonzero(found & ~truth & not_column) / found.size
    assert completeness >= 0.95
    assert false_rate < 1e-3
    assert np.all(found[600:640, 100:140])  # the blemish does not drag the local smooth down with it
    assert result.n_cold == np.count_nonzero(found)


def test_cold_pixels_flags_dead_and_hot_flat_pixels():
    flat, _ = master_dome(seed=1, ncold=0)
    flat[5, 5] = 0.0
    flat[6, 6] = np.nan
    flat[7, 7] *= 1.5
    result = cold_pixels(flat)
    assert result.mask[5, 5] and result.mask[6, 6] and result.mask[7, 7]
    assert result.bad_columns == [200]
    assert not cold_pixels(flat, high=2.0).mask[7, 7]
    with pytest.raises(ValueError, match="low < 1 < high"):
        cold_pixels(flat, low=1.2)
