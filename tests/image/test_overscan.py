"""Tests of awe.image.overscan on synthetic raw frames with known bias structure."""

from __future__ import annotations

import numpy as np
import pytest

from awe.image.overscan import OverscanCorrector, OverscanMode, overscan_correct, overscan_levels

# a small raw layout: 20 prescan columns, 200 data columns, 32 overscan columns; 8 unlit rows at the bottom
NROWS, PRESCAN, NDATA, OVERSCAN = 308, 20, 200, 32
PRE = slice(0, PRESCAN)
OVER = slice(PRESCAN + NDATA, PRESCAN + NDATA + OVERSCAN)
DATA = (slice(8, NROWS), slice(PRESCAN, PRESCAN + NDATA))


def make_raw(seed=0, read_noise=1.0, jitter=3.0, drift=0.0, prescan_offset=0.0, signal=None):
    """Raw frame: bias 200 ADU + per-row jitter + slow drift + noise; returns (raw, true row level, signal)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(NROWS)
    level = 200.0 + rng.normal(0.0, jitter, NROWS) + drift * np.sin(rows / NROWS * np.pi)
    raw = level[:, None] + rng.normal(0.0, read_noise, (NROWS, PRESCAN + NDATA + OVERSCAN))
    raw[:, PRE] += prescan_offset
    if signal is None:
        signal = np.zeros((NROWS - 8, NDATA))
    raw[DATA] += signal
    return raw, level[8:], signal


def row_residual_rms(corrected, signal):
    return float(np.std((corrected - signal).mean(axis=1)))


def test_per_row_mode_removes_row_jitter_that_a_constant_leaves():
    raw, _, signal = make_raw(jitter=3.0, read_noise=1.0)
    per_row = overscan_correct(raw, OVER, DATA, mode=6, prescan_cols=PRE)
    constant = overscan_correct(raw, OVER, DATA, mode=1, prescan_cols=PRE)
    assert per_row.dtype == np.float32 and per_row.shape == (NROWS - 8, NDATA)
    # what is left per row: the median of 32 overscan values and the mean of the row's own 200 values
    expected = np.sqrt(np.pi / 2 / OVERSCAN + 1 / NDATA)
    assert row_residual_rms(per_row, signal) == pytest.approx(expected, rel=0.09)  # measured +4.5 %
    assert row_residual_rms(constant, signal) > 2.5  # the 3 ADU jitter stays: measured 3.1
    assert abs(float(np.mean(per_row - signal))) < 0.015  # measured 0.005 (1 sigma: 0.013)


def test_smoothed_mode_follows_a_drift_with_less_noise():
    raw, level, signal = make_raw(jitter=0.0, read_noise=3.0, drift=20.0, seed=1)
    six = overscan_levels(raw, OVER, DATA, mode=6)
    seven = overscan_levels(raw, OVER, DATA, mode=OverscanMode.PER_ROW_SMOOTHED, smooth=15)
    err6, err7 = np.std(six - level), np.std(seven - level)
    assert err7 < 0.5 * err6
    assert err7 < 0.3  # the drift (20 ADU over the frame) is followed: measured 0.22
    corrected = overscan_correct(raw, OVER, DATA, mode=7, smooth=15)
    assert abs(float(np.mean(corrected))) < 0.025  # measured 0.011


def test_constant_modes_use_the_right_region():
    raw, _, _ = make_raw(jitter=0.0, read_noise=1.0, prescan_offset=4.0, seed=2)
    # prescan sits at 204, overscan at 200
    # medians of 6000 and 9600 values (1 sigma: 0.016 and 0.013 ADU): measured within 0.007
    assert overscan_levels(raw, OVER, DATA, mode=1, prescan_cols=PRE)[0] == pytest.approx(204.0, abs=0.02)
    assert overscan_levels(raw, OVER, DATA, mode=2)[0] == pytest.approx(200.0, abs=0.02)
    assert overscan_levels(raw, OVER, DATA, mode=3, prescan_cols=PRE)[0] == pytest.approx(202.0, abs=0.02)
    levels = overscan_levels(raw, OVER, DATA, mode=2)
    assert np.all(levels == levels[0]) and levels.size == NROWS - 8


def test_mode_zero_only_trims_and_integer_input_is_accepted():
    raw, _, _ = make_raw(seed=3)
    raw16 = np.round(raw).astype(np.uint16)
    trimmed = overscan_correct(raw16, OVER, DATA, mode=0)
    assert trimmed.dtype == np.float32
    np.testing.assert_array_equal(trimmed, raw16[DATA].astype(np.float32))
    corrected = overscan_correct(raw16, OVER, DATA, mode=6)
    assert abs(float(np.median(corrected))) < 0.5  # integer data, integer (or half) levels: measured 0.0


def test_row_blocks_reproduce_the_full_frame():
    raw, _, signal = make_raw(seed=4, signal=np.random.default_rng(9).normal(1000, 30, (NROWS - 8, NDATA)))
    corrector = OverscanCorrector(OVER, DATA, mode=7, smooth=9)
    full = corrector(raw)
    levels = corrector.levels(raw)
    blocks = [corrector(raw, rows=slice(r, r + 64), levels=levels) for r in range(0, NROWS - 8, 64)]
    np.testing.assert_array_equal(np.vstack(blocks), full)
    out = np.empty((10, NDATA), dtype=np.float32)
    res = overscan_correct(raw, OVER, DATA, mode=7, smooth=9, rows=slice(100, 110), levels=levels, out=out)
    assert res is out
    np.testing.assert_array_equal(out, full[100:110])
    assert "mode=7" in repr(corrector)


def test_memmap_input(tmp_path):
    raw, _, _ = make_raw(seed=5)
    path = tmp_path / "raw.dat"
    mm = np.memmap(path, dtype=">f4", mode="w+", shape=raw.shape)
    mm[:] = raw
    mm.flush()
    ro = np.memmap(path, dtype=">f4", mode="r", shape=raw.shape)
    block = overscan_correct(ro, OVER, DATA, mode=6, rows=slice(0, 32))
    np.testing.assert_allclose(block, overscan_correct(raw.astype(np.float32), OVER, DATA, mode=6)[:32], atol=1e-4)


def test_errors_name_the_problem():
    raw, _, _ = make_raw(seed=6)
    with pytest.raises(ValueError, match="unknown OVERSCAN_CORRECTION mode 4"):
        overscan_correct(raw, OVER, DATA, mode=4)
    with pytest.raises(ValueError, match="prescan"):
        overscan_correct(raw, OVER, DATA, mode=1)
    with pytest.raises(ValueError, match="needs prescan_cols"):
        OverscanCorrector(OVER, DATA, mode=3)
    with pytest.raises(ValueError, match="empty"):
        overscan_levels(raw, slice(500, 510), DATA, mode=2)
    with pytest.raises(ValueError, match="2-D"):
        overscan_levels(raw[0], OVER, DATA)
    with pytest.raises(ValueError, match="levels has"):
        overscan_correct(raw, OVER, DATA, levels=np.zeros(5))
    with pytest.raises(ValueError, match="contiguous"):
        overscan_correct(raw, OVER, DATA, rows=slice(0, 10, 2))
