"""Bad-pixel detection: hot pixels from a master bias, cold pixels from a flat field.

Both compare each pixel with a robust local smooth of the image
(:func:`awe.image.flat.smooth_large_scale`: block medians), in two passes so
that large clusters of bad pixels do not drag the smooth with them, and both
also flag whole columns whose median deviates (hot columns in the bias,
low-response columns in the flat).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike

from awe.image.flat import smooth_large_scale
from awe.image.stats import robust_sigma

__all__ = ["HotPixelResult", "hot_pixels", "ColdPixelResult", "cold_pixels"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotPixelResult:
    """Hot pixels of a master bias.

    Attributes
    ----------
    mask : ndarray of bool
        ``True`` for hot pixels, including every pixel of a hot column.
    hot_columns : list of int
        0-based columns whose median is significantly high.
    n_hot : int
        Number of ``True`` pixels in ``mask``.
    sigma : float
        Robust pixel noise of the bias about its smooth level, ADU.
    threshold : float
        Excess above the local level (ADU) beyond which a pixel is hot.
    """

    mask: np.ndarray
    hot_columns: list[int]
    n_hot: int
    sigma: float
    threshold: float


@dataclass(frozen=True)
class ColdPixelResult:
    """Cold (and overly responsive) pixels of a flat field.

    Attributes
    ----------
    mask : ndarray of bool
        ``True`` for bad pixels, including every pixel of a bad column.
    bad_columns : list of int
        0-based columns whose median relative response is low.
    n_cold : int
        Number of ``True`` pixels in ``mask``.
    """

    mask: np.ndarray
    bad_columns: list[int]
    n_cold: int


def _image(data: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D image, got shape {arr.shape}")
    return arr


def _column_medians(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    work = np.where(bad, np.float32(np.nan), values)
    return bn.nanmedian(work, axis=0)


def hot_pixels(master_bias: ArrayLike, nsigma: float = 6.0, column_nsigma: float = 6.0, scale_px: int = 64,
               mask: ArrayLike | None = None) -> HotPixelResult:
    """Find hot pixels and hot columns in a master bias.

    A pixel is hot when it exceeds the local bias level (block-median smooth
    at ``scale_px``) by more than ``nsigma`` robust standard deviations of the
    bias about that level.  A column is hot when its median excess is more
    than ``column_nsigma`` robust standard deviations of the column medians
    above their median, and at least one pixel sigma.

    Parameters
    ----------
    master_bias : array_like
        Trimmed master bias, ADU.
    nsigma : float
        Pixel threshold in sigma.
    column_nsigma : float
        Column threshold in sigma of the column medians.
    scale_px : int
        Smoothing scale of the local level.
    mask : array_like of bool, optional
        Pixels to ignore (e.g. known defects), never reported.

    Returns
    -------
    HotPixelResult
    """
    bias = _image(master_bias, "the master bias")
    known = np.zeros(bias.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    invalid = known | ~np.isfinite(bias)
    hot = np.zeros(bias.shape, dtype=bool)
    for _ in range(2):  # the second pass smooths without the hot pixels of the first
        level = smooth_large_scale(bias, scale_px, invalid | hot)
        excess = bias - level
        sigma = robust_sigma(excess, invalid | hot)
        threshold = nsigma * sigma
        with np.errstate(invalid="ignore"):
            hot = (excess > threshold) & ~invalid
    columns = _column_medians(excess, invalid | hot)
    col_center = float(bn.nanmedian(columns))
    col_sigma = robust_sigma(columns)
    col_threshold = max(column_nsigma * col_sigma, sigma)
    with np.errstate(invalid="ignore"):
        hot_columns = np.flatnonzero(columns - col_center > col_threshold)
    hot[:, hot_columns] = True
    hot &= ~known
    n_hot = int(np.count_nonzero(hot))
    log.info("hot pixels: %d (threshold %.2f ADU = %.1f x %.3f), hot columns %s",
             n_hot, threshold, nsigma, sigma, hot_columns.tolist())
    return HotPixelResult(mask=hot, hot_columns=[int(c) for c in hot_columns], n_hot=n_hot,
                          sigma=float(sigma), threshold=float(threshold))


def cold_pixels(flat: ArrayLike, low: float = 0.8, high: float = 1.2, column_threshold: float = 0.95,
                scale_px: int = 64, mask: ArrayLike | None = None) -> ColdPixelResult:
    """Find cold pixels and bad columns in a flat field.

    The relative response is the flat divided by its block-median smooth at
    ``scale_px``.  Pixels whose relative response is below ``low`` or above
    ``high`` (or that are non-finite or non-positive) are bad; so is every
    pixel of a column whose median relative response is below
    ``column_threshold``.

    Parameters
    ----------
    flat : array_like
        Trimmed (master dome) flat field, any normalisation.
    low, high : float
        Bounds of acceptable relative response.
    column_threshold : float
        Columns with a median relative response below this are bad.
    scale_px : int
        Smoothing scale of the local response.
    mask : array_like of bool, optional
        Pixels to ignore (e.g. known defects), never reported.

    Returns
    -------
    ColdPixelResult
    """
    if not 0 < low < 1 < high:
        raise ValueError(f"need 0 < low < 1 < high, got low={low!r}, high={high!r}")
    if not 0 < column_threshold <= 1:
        raise ValueError(f"column_threshold must be in (0, 1], got {column_threshold!r}")
    image = _image(flat, "the flat")
    known = np.zeros(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    with np.errstate(invalid="ignore"):
        broken = ~np.isfinite(image) | (image <= 0)
    cold = broken & ~known
    for _ in range(2):  # the second pass smooths without the bad pixels of the first
        local = smooth_large_scale(image, scale_px, known | cold)
        with np.errstate(invalid="ignore", divide="ignore"):
            response = image / local
            cold = (broken | (response < low) | (response > high)) & ~known
    columns = _column_medians(response, known | broken)
    with np.errstate(invalid="ignore"):
        bad_columns = np.flatnonzero(columns < column_threshold)
    cold[:, bad_columns] = True
    cold &= ~known
    n_cold = int(np.count_nonzero(cold))
    log.info("cold pixels: %d (response outside [%.2f, %.2f]), bad columns %s", n_cold, low, high,
             bad_columns.tolist())
    return ColdPixelResult(mask=cold, bad_columns=[int(c) for c in bad_columns], n_cold=n_cold)
