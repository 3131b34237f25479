"""Tests of awe.image.pixels: hot/cold pixel completeness and false-positive rates against known truth."""

from __future__ import annotations

import numpy as np
import pytest

from awe.image.flat import smooth_large_scale
from awe.image.pixels import cold_pixels, hot_pixels, running_median

NY, NX = 1024, 512
NOISE = 2.5 / np.sqrt(10)  # a master bias of 10 frames


def amplifier_structure(rng, width=40):
    """Column offsets next to the amplifier: a decaying 5 ADU ramp, ~1 ADU steps and single columns 2-5 ADU
    above their neighbours; static over each whole column."""
    k = np.arange(width)
    offsets = 5.0 * np.exp(-k / 10.0) + rng.normal(0.0, 1.0, width) * np.exp(-k / 20.0)
    offsets[[3, 11, 17, 26]] += [4.0, 3.0, 5.0, 2.5]
    return offsets


def master_bias(seed=0, nhot=400, structure=True):
    """Master bias: 200 ADU, a gentle gradient, a ramp near the read-out rows, amplifier columns, noise,
    hot pixels, a hot cluster, a hot column from row 300 up (77) and a faint one from row 600 down (150)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:NY, 0:NX]
    bias = 200.0 + 3.0 * y / NY - 2.0 * x / NX + 2.0 * np.exp(-y / 10.0) + rng.normal(0.0, NOISE, (NY, NX))
    if structure:
        bias[:, :40] += amplifier_structure(rng)[None, :]
    truth = np.zeros((NY, NX), dtype=bool)
    yy, xx = rng.integers(0, NY, nhot), rng.integers(0, NX, nhot)
    bias[yy, xx] += rng.uniform(100.0, 3000.0, nhot)
    truth[yy, xx] = True
    bias[300:, 77] += 30.0
    truth[300:, 77] = True
    bias[:600, 150] += 2.0  # 2.5 sigma per pixel: only the run as a whole is significant
    truth[:600, 150] = True
    bias[400:403, 300:303] += 500.0  # a small hot cluster
    truth[400:403, 300:303] = True
    return bias.astype(np.float32), truth


def test_running_median_is_centred_and_ignores_nan():
    image = np.arange(20, dtype=np.float32).reshape(2, 10)
    image[0, 5] = np.nan
    rows = running_median(image, 3, axis=1)
    assert rows[1].tolist() == [10.5] + [float(v) for v in range(11, 19)] + [18.5]
    assert rows[0, 5] == pytest.approx(5.0) and rows[0, 4] == pytest.approx(3.5)
    assert running_median(image, 3, axis=0).shape == image.shape
    with pytest.raises(ValueError, match="width"):
        running_median(image, 1, axis=0)


def test_hot_pixels_complete_with_no_false_positives_on_structured_bias():
    bias, truth = master_bias()
    result = hot_pixels(bias)
    found = result.mask
    assert result.hot_columns == [77, 150]
    runs = {x: (y0, y1) for x, y0, y1 in result.runs}
    assert runs[77] == (300, NY)
    assert runs[150][0] == 0 and abs(runs[150][1] - 600) <= 2  # the faint run's end: measured within 1 row
    completeness = np.count_nonzero(found & truth) / np.count_nonzero(truth)
    n_false = np.count_nonzero(found & ~truth)
    assert completeness >= 0.999  # measured 1.0 over seeds 0-4
    assert n_false <= 2  # measured 0-1 over seeds 0-4 (the faint run's end)
    assert np.count_nonzero(found[:, :40] & ~truth[:, :40]) == 0  # nothing false in the amplifier columns
    assert result.n_hot == np.count_nonzero(found)
    # the excess about a running median that includes the pixel itself: measured 0.921-0.926 x the noise
    assert result.sigma == pytest.approx(0.924 * NOISE, rel=0.01)


def test_amplifier_columns_are_bias_structure_not_hot_columns():
    """The columns next to the amplifier are a few ADU above their neighbours over their whole length: the
    master bias removes them; comparing with a 2-D smooth (the old way) flags them all."""
    bias, truth = master_bias(seed=3, nhot=0)
    bias[300:, 77] -= 30.0
    bias[:600, 150] -= 2.0
    bias[400:403, 300:303] -= 500.0
    result = hot_pixels(bias)
    assert result.n_hot == 0 and result.hot_columns == []
    excess = bias - smooth_large_scale(bias, 64)
    assert np.count_nonzero(excess[:, :40] > 6 * NOISE) > 2000  # what a 2-D smooth alone calls hot


def test_hot_pixels_respects_known_mask_and_finds_nothing_in_clean_bias():
    rng = np.random.default_rng(1)
    clean = (200.0 + rng.normal(0.0, 0.8, (NY, NX))).astype(np.float32)
    result = hot_pixels(clean)
    assert result.n_hot == 0 and result.hot_columns == []
    clean[10, 10] = 5000.0
    known = np.zeros(clean.shape, dtype=bool)
    known[10, 10] = True
    assert not hot_pixels(clean, mask=known).mask[10, 10]
    assert hot_pixels(clean).mask[10, 10]
    with pytest.raises(ValueError, match="mask has shape"):
        hot_pixels(clean, mask=known[:10])
    with pytest.raises(ValueError, match="positive"):
        hot_pixels(clean, nsigma=0)


def master_dome(seed=0, ncold=400):
    """Normalised dome flat: vignetting, 1.5 % pixel response, 0.3 % noise, cold pixels, a blemish, a column
    with 15 % less response (200), a dead run from row 700 up (333) and a weak run below row 300 (420)."""
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
    flat[:, 200] *= 0.85
    truth[:, 200] = True
    flat[700:, 333] *= 0.05  # a charge trap: nothing above it gets through
    truth[700:, 333] = True
    flat[:300, 420] *= 0.9
    truth[:300, 420] = True
    return flat.astype(np.float32), truth


def test_cold_pixels_complete_and_partial_columns_only_where_bad():
    flat, truth = master_dome()
    result = cold_pixels(flat)
    found = result.mask
    assert result.bad_columns == [200, 333, 420]
    assert result.whole_columns == [200]
    assert np.all(found[:, 200]) and np.all(found[700:, 333]) and np.all(found[:300, 420])
    assert np.count_nonzero(found[:700, 333] & ~truth[:700, 333]) == 0  # the good part of the trapped column
    assert np.count_nonzero(found[300:, 420] & ~truth[300:, 420]) <= 2  # the run's end (measured exact)
    completeness = np.count_nonzero(found & truth) / np.count_nonzero(truth)
    assert completeness >= 0.999  # measured 1.0 over seeds 0-4
    assert np.count_nonzero(found & ~truth) <= 2  # measured 0
    assert np.all(found[600:640, 100:140])  # the blemish does not drag the local smooth down with it
    assert result.n_cold == np.count_nonzero(found)


def test_a_column_bad_over_most_of_its_length_is_flagged_whole():
    flat, _ = master_dome(seed=2, ncold=0)
    flat[100:, 50] *= 0.05  # bad over 90 % of its length
    result = cold_pixels(flat)
    assert 50 in result.whole_columns and result.mask[:, 50].all()
    assert 50 not in cold_pixels(flat, whole_column_fraction=0.95).whole_columns
    with pytest.raises(ValueError, match="whole_column_fraction"):
        cold_pixels(flat, whole_column_fraction=0.0)


def test_cold_pixels_flags_dead_and_hot_flat_pixels():
    flat, _ = master_dome(seed=1, ncold=0)
    flat[5, 5] = 0.0
    flat[6, 6] = np.nan
    flat[7, 7] *= 1.5
    result = cold_pixels(flat)
    assert result.mask[5, 5] and result.mask[6, 6] and result.mask[7, 7]
    assert result.bad_columns == [200, 333, 420]
    assert not cold_pixels(flat, high=2.0).mask[7, 7]
    with pytest.raises(ValueError, match="low < 1 < high"):
        cold_pixels(flat, low=1.2)
