"""Comparisons of calibration products with the simulator's truth (shared by tests and benchmarks)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from awe.image._testing import render_moffat
from awe.image.flat import smooth_large_scale
from awe.sim import Truth


def trim(truth: Truth, chip: str) -> tuple[slice, slice]:
    return truth.geometry(chip).trim


def true_master_bias(truth: Truth, chip: str) -> np.ndarray:
    """The noiseless overscan-corrected (method 6) and trimmed master bias, hot pixels included.

    The level method 6 subtracts from a row is the median of its noisy overscan pixels; when the noise is
    much larger than the pattern's column-to-column spread (2.4 vs 0.3 ADU) that median's expectation is the
    *mean* of the noiseless pattern over the overscan columns (the median of the noiseless values is off by
    up to 0.08 ADU).
    """
    geometry, section = truth.geometry(chip), trim(truth, chip)
    pattern = truth.bias_pattern(chip).astype(np.float64)
    overscan_level = np.mean(pattern[section[0], geometry.overscan_x], axis=1)
    return pattern[section] - overscan_level[:, None] + truth.hot_excess(chip)[section]


def chip_truth(truth: Truth, chip: str) -> dict:
    table = truth.chips()
    row = table[list(table["chip"]).index(chip)]
    return {name: row[name] for name in table.colnames}


def flat_errors(flat: np.ndarray, truth: Truth, chip: str, good: np.ndarray) -> tuple[float, float]:
    """rms of the pixel-scale and of the large-scale (64 full-size pixels) relative error of a flat."""
    true_flat = truth.flat(chip)[trim(truth, chip)]
    ratio = flat / true_flat
    ratio = ratio / np.median(ratio[good])
    large = smooth_large_scale(ratio, max(1, round(64 * truth.scale)), ~good)
    small = ratio / large
    return float(np.std(small[good])), float(np.std(large[good]))


def star_pixels(truth: Truth, name: str, chip: str, shape: tuple[int, int], rms: float) -> np.ndarray:
    """Pixels (trimmed grid) where an unsaturated true star adds more than 5 sky sigma (saturated stars and
    their trails left out)."""
    section = trim(truth, chip)
    exposure = truth.exposure(name)
    sources = truth.frame_sources(name, chip)
    stars = sources[np.asarray(sources["kind"]) == "star"]
    model = np.zeros(shape)
    fwhm = exposure["seeing_arcsec"] / truth.pixel_scale
    for s in stars:
        render_moffat(model, s["x"] - section[1].start, s["y"] - section[0].start, s["flux_flatfielded"], fwhm,
                      exposure["beta"])
    saturated = ndi.binary_dilation(truth.saturated(name, chip)[section], iterations=3)
    return (model > 5 * rms) & ~saturated
