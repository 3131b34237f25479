"""Image statistics: ``imstat`` (every frame's summary), robust sigma, clipped statistics.

All functions ignore non-finite pixels (NaN, inf) and pixels flagged in an
optional boolean ``mask`` (``True`` = bad, the numpy.ma convention).  Medians,
minima and maxima use bottleneck; means and standard deviations accumulate in
float64 (bottleneck sums float32 data in float32, which drifts by percents on a
2k x 4k frame).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ImStat", "imstat", "ClippedStats", "sigma_clipped_stats", "robust_sigma", "MAD_TO_SIGMA",
           "SubwinStats", "subwin_stats", "good_values", "difference_stdev"]

log = logging.getLogger(__name__)

#: Factor turning a median absolute deviation into a Gaussian standard deviation.
MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True)
class ImStat:
    """Summary statistics of an image (the ``imstat`` attribute of every frame).

    Attributes
    ----------
    mean, median, stdev, min, max : float
        Over the finite, unmasked pixels; all NaN when there are none.
    """

    mean: float
    median: float
    stdev: float
    min: float
    max: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain ``{name: value}`` dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class ClippedStats:
    """Result of :func:`sigma_clipped_stats`.

    Attributes
    ----------
    mean, median, stdev : float
        Statistics of the values that survived the clipping.
    n_used, n_rejected : int
        Number of values kept and clipped (masked and non-finite values are in neither).
    """

    mean: float
    median: float
    stdev: float
    n_used: int
    n_rejected: int


@dataclass(frozen=True)
class SubwinStats:
    """Statistics of a grid of sub-windows (the QC figures of calibration frames).

    Attributes
    ----------
    medians, stdevs : ndarray
        Median and standard deviation per sub-window, shape ``(ny, nx)`` of the grid.
    flatness : float
        ``max(medians) - min(medians)``: how far the image is from flat.
    max_stdev : float
        The largest sub-window standard deviation.
    """

    medians: np.ndarray
    stdevs: np.ndarray
    flatness: float
    max_stdev: float


def good_values(data: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """The finite, unmasked values of ``data`` as a 1-D array.

    Parameters
    ----------
    data : array_like
        Image (any shape).
    mask : array_like of bool, optional
        Same shape as ``data``; ``True`` marks pixels to ignore.

    Returns
    -------
    ndarray
        1-D array (a copy) of the good values, in ``data``'s dtype.
    """
    arr = np.asarray(data)
    if mask is None:
        if arr.dtype.kind in "iub":
            return arr.ravel()
        keep = np.isfinite(arr)
    else:
        bad = np.asarray(mask, dtype=bool)
        if bad.shape != arr.shape:
            raise ValueError(f"mask shape {bad.shape} differs from data shape {arr.shape}; "
                             "pass a boolean mask of the image's shape")
        keep = ~bad if arr.dtype.kind in "iub" else np.isfinite(arr) & ~bad
    return arr[keep]


def imstat(data: ArrayLike, mask: ArrayLike | None = None) -> ImStat:
    """Mean, median, standard deviation, minimum and maximum of an image.

    Parameters
    ----------
    data : array_like
        Image; non-finite pixels are ignored.
    mask : array_like of bool, optional
        ``True`` marks pixels to ignore.

    Returns
    -------
    ImStat
        All fields NaN if no pixel is usable.  ``stdev`` is the population
        standard deviation (``ddof=0``).
    """
    arr = np.asarray(data)
    if mask is None and arr.dtype.kind == "f" and arr.flags.c_contiguous and bool(np.isfinite(arr).all()):
        values = arr.reshape(-1)  # every pixel counts: the pixels themselves, in the same order (no copy)
    else:
        values = good_values(arr, mask)
    if values.size == 0:
        nan = math.nan
        return ImStat(nan, nan, nan, nan, nan)
    mean = float(np.mean(values, dtype=np.float64))
    stdev = float(np.std(values, dtype=np.float64))
    return ImStat(mean=mean, median=float(bn.median(values)), stdev=stdev,
                  min=float(bn.nanmin(values)), max=float(bn.nanmax(values)))


def robust_sigma(data: ArrayLike, mask: ArrayLike | None = None, axis: int | None = None) -> float | np.ndarray:
    """Gaussian-equivalent standard deviation from the median absolute deviation.

    ``1.4826 * median(|x - median(x)|)``: unaffected by up to half the values
    being outliers.

    Parameters
    ----------
    data : array_like
        Values; non-finite ones are ignored.
    mask : array_like of bool, optional
        ``True`` marks values to ignore.
    axis : int, optional
        Reduce along this axis only (default: all values, returning a float).

    Returns
    -------
    float or ndarray
        NaN where no value is usable.
    """
    arr = np.asarray(data)
    if axis is None:
        values = good_values(arr, mask).astype(np.float64, copy=False)
        if values.size == 0:
            return math.nan
        return float(MAD_TO_SIGMA * bn.median(np.abs(values - bn.median(values))))
    work = np.array(arr, dtype=np.float64)
    if mask is not None:
        work[np.asarray(mask, dtype=bool)] = np.nan
    work[~np.isfinite(work)] = np.nan
    center = np.expand_dims(bn.nanmedian(work, axis=axis), axis)
    return MAD_TO_SIGMA * bn.nanmedian(np.abs(work - center), axis=axis)


def sigma_clipped_stats(data: ArrayLike, mask: ArrayLike | None = None, sigma: float = 3.0,
                        maxiters: int | None = 5) -> ClippedStats:
    """Statistics after iterative kappa-sigma clipping around the median.

    A thin wrapper over :func:`astropy.stats.sigma_clip` (median centre,
    standard deviation as the width) that also counts what was used.

    Parameters
    ----------
    data : array_like
        Values; non-finite ones are ignored.
    mask : array_like of bool, optional
        ``True`` marks values to ignore.
    sigma : float
        Clipping threshold in standard deviations (both sides).
    maxiters : int or None
        Maximum number of iterations (``None``: until nothing changes).

    Returns
    -------
    ClippedStats
    """
    from astropy.stats import sigma_clip

    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    values = good_values(data, mask).astype(np.float64, copy=False)
    if values.size == 0:
        return ClippedStats(math.nan, math.nan, math.nan, 0, 0)
    kept = sigma_clip(values, sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="std",
                      masked=False, copy=False)
    n_used = int(kept.size)
    return ClippedStats(mean=float(np.mean(kept)), median=float(bn.median(kept)), stdev=float(np.std(kept)),
                        n_used=n_used, n_rejected=int(values.size - n_used))


def subwin_stats(data: ArrayLike, grid: tuple[int, int] = (4, 4), mask: ArrayLike | None = None) -> SubwinStats:
    """Median and standard deviation in a grid of sub-windows.

    Parameters
    ----------
    data : array_like
        2-D image.
    grid : (int, int)
        Number of sub-windows along y and x; the image is cut as evenly as
        possible (edges from :func:`numpy.linspace`).
    mask : array_like of bool, optional
        ``True`` marks pixels to ignore.

    Returns
    -------
    SubwinStats
    """
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"subwin_stats needs a 2-D image, got shape {arr.shape}")
    ny, nx = int(grid[0]), int(grid[1])
    if ny < 1 or nx < 1 or ny > arr.shape[0] or nx > arr.shape[1]:
        raise ValueError(f"grid {grid} does not fit an image of shape {arr.shape}")
    bad = None if mask is None else np.asarray(mask, dtype=bool)
    yedges = np.linspace(0, arr.shape[0], ny + 1).astype(int)
    xedges = np.linspace(0, arr.shape[1], nx + 1).astype(int)
    medians = np.full((ny, nx), np.nan)
    stdevs = np.full((ny, nx), np.nan)
    for j in range(ny):
        for i in range(nx):
            window = (slice(yedges[j], yedges[j + 1]), slice(xedges[i], xedges[i + 1]))
            values = good_values(arr[window], None if bad is None else bad[window])
            if values.size:
                stdevs[j, i] = np.std(values, dtype=np.float64)
                medians[j, i] = _median_in_place(values) if values.dtype == np.float32 else bn.median(values)
    finite = np.isfinite(medians)
    flatness = float(medians[finite].max() - medians[finite].min()) if finite.any() else math.nan
    max_stdev = float(stdevs[finite].max()) if finite.any() else math.nan
    return SubwinStats(medians=medians, stdevs=stdevs, flatness=flatness, max_stdev=max_stdev)


def _median_in_place(values: np.ndarray) -> float:
    """``bn.median(values)`` of a float32 1-D copy that may be reordered: a partition of it in place (the mean of
    the middle pair taken in float32, as bottleneck does), saving bottleneck's own copy."""
    n = values.size
    k = n // 2
    values.partition(k)
    high = values[k]
    if n % 2:
        return float(high)
    return float(np.float32(0.5) * (values[:k].max() + high))


_THRESHOLD_SAMPLE = 2_000_000


def difference_stdev(first: ArrayLike, second: ArrayLike, mask: ArrayLike | None = None,
                     outlier_sigma: float = 5.0) -> float:
    """Standard deviation of ``first - second`` over every pixel but the defects the two images share.

    A pixel is left out when it lies more than ``outlier_sigma`` (3-sigma
    clipped) standard deviations from the clipped median in *both* images
    (hot pixels, hot columns: the same in both); everything else counts,
    unclipped.  So any change between the images shows, a change confined to a
    minority of the pixels included (a clipped or MAD-based width would ignore
    it), and the figure does not collapse when the images share most of their
    inputs: it is then the small, honest difference.

    Parameters
    ----------
    first, second : array_like
        Two images of the same shape (e.g. a new and the previous master bias).
    mask : array_like of bool, optional
        ``True`` marks pixels to leave out as well.
    outlier_sigma : float
        Threshold of the defects, in clipped standard deviations of each image.

    Returns
    -------
    float
        NaN when fewer than two pixels are usable.
    """
    a = np.asarray(first, dtype=np.float32)
    b = np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {a.shape} and {b.shape}")
    if not outlier_sigma > 0:
        raise ValueError(f"outlier_sigma must be positive, got {outlier_sigma!r}")
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    shared = np.ones(a.shape, dtype=bool)
    # the defects' thresholds from at most ~2 million pixels (a regular subsample): enough for a 5-sigma level
    step = max(1, int(math.ceil(math.sqrt(a.size / _THRESHOLD_SAMPLE))))
    for image in (a, b):
        stats = sigma_clipped_stats(image[::step, ::step], bad[::step, ::step])
        with np.errstate(invalid="ignore"):
            shared &= np.abs(image - np.float32(stats.median)) > outlier_sigma * stats.stdev
    keep = ~(bad | shared)
    if np.count_nonzero(keep) < 2:
        return math.nan
    return float(np.std(a[keep].astype(np.float64) - b[keep].astype(np.float64)))
