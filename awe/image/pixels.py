"""Bad-pixel detection: hot pixels from a master bias, cold pixels from a flat field.

Hot pixels are defects relative to the *local bias structure*.  The local
level of a pixel is the running median of its row over a few columns (the
2-D pattern and any row structure) plus its column's own offset from that (the
column structure: next to the read-out amplifier columns sit a few ADU above
their neighbours, the same in every frame and over the whole column, so the
master bias removes them; they are not defects).  A pixel is hot when it
exceeds that level by many robust sigma; a column is hot from a defect to one
end of it, where the mean excess on one side of a row is significantly above
the other side's (a change-point test on each column), and only that run is
flagged.

Cold pixels compare each pixel of a flat with a robust local smooth of it
(:func:`awe.image.flat.smooth_large_scale`, block medians, two passes so that
clusters of bad pixels do not drag the smooth with them).  Bad columns are
runs along a column whose response, relative to the neighbouring columns, is
low; only the bad run(s) are flagged, the whole column only when it is bad over
most of its length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike

from awe.image.flat import smooth_large_scale
from awe.image.stats import robust_sigma

__all__ = ["HotPixelResult", "hot_pixels", "ColdPixelResult", "cold_pixels", "running_median"]

log = logging.getLogger(__name__)

#: Segments a column is cut into to find its clean level in the first pass (a hot run may cover all but one).
_SEGMENTS = 8
#: Shortest run (rows) the change-point test of hot columns considers on either side of a split.
_MIN_RUN = 8
#: Columns the change-point test handles at once (bounds its memory at full size).
_COLUMN_BLOCK = 256


@dataclass(frozen=True)
class HotPixelResult:
    """Hot pixels of a master bias.

    Attributes
    ----------
    mask : ndarray of bool
        ``True`` for hot pixels, including every pixel of a hot column's run.
    hot_columns : list of int
        0-based columns with a hot run (from a defect to one end of the column).
    n_hot : int
        Number of ``True`` pixels in ``mask``.
    sigma : float
        Robust pixel noise of the bias about its local level, ADU.
    threshold : float
        Excess above the local level (ADU) beyond which a pixel is hot.
    runs : list of (int, int, int)
        ``(column, first row, end row)`` (0-based, end exclusive) of each hot column's run.
    """

    mask: np.ndarray
    hot_columns: list[int]
    n_hot: int
    sigma: float
    threshold: float
    runs: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ColdPixelResult:
    """Cold (and overly responsive) pixels of a flat field.

    Attributes
    ----------
    mask : ndarray of bool
        ``True`` for bad pixels, including the bad runs of bad columns.
    bad_columns : list of int
        0-based columns with a run of low response (relative to their neighbours).
    n_cold : int
        Number of ``True`` pixels in ``mask``.
    whole_columns : list of int
        The bad columns flagged over their whole length (bad over most of it).
    """

    mask: np.ndarray
    bad_columns: list[int]
    n_cold: int
    whole_columns: list[int] = field(default_factory=list)


def _image(data: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D image, got shape {arr.shape}")
    return arr


def _known(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, dtype=bool)
    known = np.asarray(mask, dtype=bool)
    if known.shape != shape:
        raise ValueError(f"the mask has shape {known.shape}, the image {shape}")
    return known


def _window(width: int, what: str) -> int:
    if int(width) != width or width < 3:
        raise ValueError(f"{what} must be a whole number of pixels >= 3, got {width!r}")
    return int(width) | 1  # odd, so that the window is centred


def running_median(image: ArrayLike, width: int, axis: int) -> np.ndarray:
    """Centred running median over ``width`` pixels along ``axis``, ignoring NaN (windows shrink at the edges).

    Parameters
    ----------
    image : array_like
        2-D image; NaN marks pixels to ignore.
    width : int
        Window length (odd; an even one is made odd by adding one).
    axis : int
        0: along each column; 1: along each row.

    Returns
    -------
    ndarray
        float32, NaN where a window holds no usable pixel.
    """
    arr = np.asarray(image, dtype=np.float32)
    width = _window(width, "the running-median width")
    half = width // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(arr, pad, constant_values=np.nan)
    out = bn.move_median(padded, window=width, axis=axis, min_count=1)
    index = [slice(None), slice(None)]
    index[axis] = slice(2 * half, None)
    return np.ascontiguousarray(out[tuple(index)], dtype=np.float32)


def _lowest_segment_level(resid: np.ndarray) -> np.ndarray:
    """Per column, the lowest of the medians of ``_SEGMENTS`` stretches of rows: the column's clean level even
    when a hot run covers most of it."""
    edges = np.linspace(0, resid.shape[0], min(_SEGMENTS, resid.shape[0]) + 1).astype(int)
    medians = np.stack([bn.nanmedian(resid[a:b], axis=0) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    return bn.nanmin(medians, axis=0)


def _column_runs(excess: np.ndarray, invalid: np.ndarray, sigma: float, nsigma: float,
                 cap: float) -> list[tuple[int, int, int]]:
    """Hot runs: columns whose mean excess above some row exceeds that below it (or vice versa) by more than
    ``nsigma`` standard errors and by at least one pixel ``sigma``; values capped at ``+-cap``."""
    ny, nx = excess.shape
    runs: list[tuple[int, int, int]] = []
    if ny < 2 * _MIN_RUN or not sigma > 0:
        return runs
    for c0 in range(0, nx, _COLUMN_BLOCK):
        c1 = min(nx, c0 + _COLUMN_BLOCK)
        block = excess[:, c0:c1].astype(np.float64)
        valid = np.isfinite(block) & ~invalid[:, c0:c1]
        values = np.where(valid, np.clip(block, -cap, cap), 0.0)
        sums = np.cumsum(values, axis=0)
        counts = np.cumsum(valid, axis=0)
        n_lo, s_lo = counts[:-1], sums[:-1]
        n_hi, s_hi = counts[-1] - n_lo, sums[-1] - s_lo
        usable = (n_lo >= _MIN_RUN) & (n_hi >= _MIN_RUN)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = s_hi / n_hi - s_lo / n_lo
            t = np.where(usable, step / (sigma * np.sqrt(1.0 / n_lo + 1.0 / n_hi)), 0.0)
        best = np.argmax(np.abs(t), axis=0)
        cols = np.arange(c1 - c0)
        t_best, step_best = t[best, cols], step[best, cols]
        for j in np.flatnonzero((np.abs(t_best) > nsigma) & (np.abs(step_best) > sigma)):
            split = int(best[j]) + 1  # rows [0, split) below, [split, ny) above
            runs.append((c0 + int(j), split, ny) if step_best[j] > 0 else (c0 + int(j), 0, split))
    return runs


def hot_pixels(master_bias: ArrayLike, nsigma: float = 6.0, column_nsigma: float = 6.0, width: int = 15,
               mask: ArrayLike | None = None) -> HotPixelResult:
    """Find hot pixels and hot columns in a master bias, relative to its local bias structure.

    The local level of a pixel is the running median of its row over
    ``width`` columns plus its column's offset from that running median (the
    median of the column, hot pixels left out): column structure that is the
    same over a column's whole length, like the columns next to the amplifier
    a few ADU above their neighbours, is part of the bias, not a defect.  A
    pixel is hot when it exceeds its local level by more than ``nsigma``
    robust standard deviations of the excess.  A column is hot from a row to
    one end of it when the mean excess on that side exceeds the other side's
    by more than ``column_nsigma`` standard errors and by at least one pixel
    sigma (a change-point test; excess values capped at the pixel threshold so
    that single hot pixels do not count); that run is flagged.

    Parameters
    ----------
    master_bias : array_like
        Trimmed master bias, ADU.
    nsigma : float
        Pixel threshold in sigma.
    column_nsigma : float
        Significance of a hot column's run, in standard errors.
    width : int
        Columns of the running median along each row (odd, >= 3).
    mask : array_like of bool, optional
        Pixels to ignore (e.g. known defects), never reported.

    Returns
    -------
    HotPixelResult

    Notes
    -----
    A column raised over its *whole* length is indistinguishable from column
    structure of the bias and is not flagged: the master bias removes it.
    """
    if not nsigma > 0 or not column_nsigma > 0:
        raise ValueError(f"nsigma and column_nsigma must be positive, got {nsigma!r} and {column_nsigma!r}")
    width = _window(width, "width (columns of the running median along the rows)")
    bias = _image(master_bias, "the master bias")
    known = _known(mask, bias.shape)
    invalid = known | ~np.isfinite(bias)
    hot = np.zeros(bias.shape, dtype=bool)
    columns = np.zeros(bias.shape[1], dtype=np.float32)
    for first in (True, False):  # the second pass levels without the hot pixels and column offsets of the first
        work = np.where(invalid | hot, np.float32(np.nan), bias)
        # the running median of column-corrected values: a masked or hot pixel in the window then moves it by
        # a fraction of the noise, not by the difference between two structured columns
        row_level = running_median(work - columns[None, :], width, axis=1)
        resid = work - row_level
        columns = _lowest_segment_level(resid) if first else bn.nanmedian(resid, axis=0)
        columns = np.nan_to_num(columns, nan=0.0).astype(np.float32)
        with np.errstate(invalid="ignore"):
            excess = bias - row_level - columns[None, :]
        sigma = robust_sigma(excess, invalid | hot)
        if not np.isfinite(sigma):
            raise ValueError("the master bias has no usable pixel (all masked or non-finite)")
        threshold = nsigma * sigma
        with np.errstate(invalid="ignore"):
            hot = (excess > threshold) & ~invalid
    # the change-point test does not depend on the column's level, so it needs no second pass
    runs = _column_runs(excess, invalid, sigma, column_nsigma, threshold)
    for x, y0, y1 in runs:
        hot[y0:y1, x] = True
    hot &= ~invalid
    hot_columns = sorted({x for x, _, _ in runs})
    n_hot = int(np.count_nonzero(hot))
    log.info("hot pixels: %d (threshold %.2f ADU = %.1f x %.3f), hot columns %s", n_hot, threshold, nsigma, sigma,
             [f"{x}[{y0}:{y1}]" for x, y0, y1 in runs])
    return HotPixelResult(mask=hot, hot_columns=hot_columns, n_hot=n_hot, sigma=float(sigma),
                          threshold=float(threshold), runs=runs)


def cold_pixels(flat: ArrayLike, low: float = 0.8, high: float = 1.2, column_threshold: float = 0.95,
                scale_px: int = 64, mask: ArrayLike | None = None, width: int = 15, run_rows: int = 17,
                whole_column_fraction: float = 0.8) -> ColdPixelResult:
    """Find cold pixels and bad columns in a flat field.

    The relative response is the flat divided by its block-median smooth at
    ``scale_px``.  Pixels whose relative response is below ``low`` or above
    ``high`` (or that are non-finite or non-positive) are bad.  A column is bad
    where, relative to the running median of its row over ``width`` columns,
    its response's running median over ``run_rows`` rows is below
    ``column_threshold``: those runs are flagged, and the whole column when the
    bad pixels cover at least ``whole_column_fraction`` of it.

    Parameters
    ----------
    flat : array_like
        Trimmed (master dome) flat field, any normalisation.
    low, high : float
        Bounds of acceptable relative response.
    column_threshold : float
        Runs of a column with a median response below this (relative to the neighbouring columns) are bad.
    scale_px : int
        Smoothing scale of the local response.
    mask : array_like of bool, optional
        Pixels to ignore (e.g. known defects), never reported.
    width, run_rows : int
        Columns of the running median along the rows and rows of the one along the columns (odd, >= 3).
    whole_column_fraction : float
        A bad column is flagged whole when this fraction of it is bad.

    Returns
    -------
    ColdPixelResult
    """
    if not 0 < low < 1 < high:
        raise ValueError(f"need 0 < low < 1 < high, got low={low!r}, high={high!r}")
    if not 0 < column_threshold <= 1:
        raise ValueError(f"column_threshold must be in (0, 1], got {column_threshold!r}")
    if not 0 < whole_column_fraction <= 1:
        raise ValueError(f"whole_column_fraction must be in (0, 1], got {whole_column_fraction!r}")
    width = _window(width, "width (columns of the running median along the rows)")
    run_rows = _window(run_rows, "run_rows (rows of the running median along the columns)")
    image = _image(flat, "the flat")
    known = _known(mask, image.shape)
    with np.errstate(invalid="ignore"):
        broken = ~np.isfinite(image) | (image <= 0)
    cold = broken & ~known
    for _ in range(2):  # the second pass smooths without the bad pixels of the first
        local = smooth_large_scale(image, scale_px, known | cold)
        with np.errstate(invalid="ignore", divide="ignore"):
            response = image / local
            cold = (broken | (response < low) | (response > high)) & ~known
    # columns: response relative to the neighbouring columns, followed along each column
    usable = np.where(known | broken, np.float32(np.nan), response.astype(np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = usable / running_median(usable, width, axis=1)
    relative[broken & ~known] = 0.0
    along = running_median(relative, run_rows, axis=0)
    with np.errstate(invalid="ignore"):
        in_run = along < column_threshold
    bad_columns = np.flatnonzero(in_run.any(axis=0))
    cold |= in_run
    cold &= ~known
    ny = image.shape[0]
    whole = [int(c) for c in bad_columns if np.count_nonzero(cold[:, c] | known[:, c]) >= whole_column_fraction * ny]
    cold[:, whole] = True
    cold &= ~known
    n_cold = int(np.count_nonzero(cold))
    log.info("cold pixels: %d (response outside [%.2f, %.2f]), bad columns %s (whole: %s)", n_cold, low, high,
             bad_columns.tolist(), whole)
    return ColdPixelResult(mask=cold, bad_columns=[int(c) for c in bad_columns], n_cold=n_cold, whole_columns=whole)
