"""Flat fields: combining, normalising, large-scale smoothing, the master flat, QC, gain and read noise.

The master flat takes the small scales (pixel-to-pixel response) from the
dome flat and the large scales (illumination, vignetting) from the twilight
flat, whose illumination resembles the night sky's::

    master = dome / smooth(dome) * smooth(twilight)      (normalised to median 1)

:func:`smooth_large_scale` is the robust low-pass both use: the median of
blocks of ``scale_px`` x ``scale_px`` pixels (so stars, cosmics and bad pixels
do not matter) interpolated back to every pixel with a natural cubic spline,
extrapolated linearly over the edge strips.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.interpolate import CubicSpline

from awe._threads import blas_threads
from awe.image.combine import Combiner, _frame_array, _is_reader, _read_block
from awe.image.stats import MAD_TO_SIGMA, ImStat, good_values, sigma_clipped_stats, subwin_stats

__all__ = ["normalise_flat", "FlatCombineResult", "combine_flats", "flat_level", "smooth_large_scale",
           "master_flat",
           "FlatQC", "flat_qc", "normalise_flat_qc", "gain_from_pairs", "BiasPair", "read_noise_from_pairs",
           "central_section"]

log = logging.getLogger(__name__)

#: Clipping threshold (sigma) of the difference-image statistics of gain and read noise.
_PAIR_CLIP_SIGMA = 5.0


def _as_float_image(image: ArrayLike, mask: ArrayLike | None, what: str) -> np.ndarray:
    """A float32 copy of a 2-D image with masked and non-finite pixels set to NaN."""
    arr = np.array(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D image, got shape {arr.shape}")
    if mask is not None:
        bad = np.asarray(mask, dtype=bool)
        if bad.shape != arr.shape:
            raise ValueError(f"the mask of {what} has shape {bad.shape}, the image {arr.shape}")
        arr[bad] = np.nan
    arr[~np.isfinite(arr)] = np.nan
    return arr


def _median_level(image: ArrayLike, mask: ArrayLike | None, what: str) -> float:
    values = good_values(image, mask)
    if values.size == 0:
        raise ValueError(f"{what} has no finite unmasked pixel to take a median of")
    level = float(bn.median(values))
    if not level > 0:
        raise ValueError(f"{what} has median {level}; a flat field must be positive (is it bias-subtracted twice?)")
    return level


def _middle_pair(values: np.ndarray) -> tuple[np.float32, np.float32]:
    """The two middle values of 1-D float32 ``values`` (the same one twice for an odd count), from a partition of a
    copy (``values`` keep their order, so sums over them stay the same to the last bit)."""
    n = values.size
    if n == 0:
        return np.float32(np.nan), np.float32(np.nan)
    work = values.copy()
    k = n // 2
    work.partition(k)
    high = work[k]
    return (work[:k].max() if n % 2 == 0 else high), high


def _values_median(values: np.ndarray, low: Any = None, high: Any = None) -> float:
    """:func:`_median_level` of good values already picked out (1-D, finite): ``bn.median(values)``, or from their
    middle pair ``low``, ``high`` (:func:`_middle_pair`) as bottleneck takes it (the mean in float32)."""
    if values.size == 0:
        raise ValueError("the flat has no finite unmasked pixel to take a median of")
    if low is None:
        level = float(bn.median(values))
    elif values.size % 2:
        level = float(high)
    else:
        level = float(np.float32(0.5) * (np.float32(low) + np.float32(high)))
    if not level > 0:
        raise ValueError(f"the flat has median {level}; a flat field must be positive (is it bias-subtracted twice?)")
    return level


def normalise_flat(flat: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Divide a (trimmed) flat field by its median.

    Parameters
    ----------
    flat : array_like
        2-D flat field (already trimmed to the data area).
    mask : array_like of bool, optional
        ``True`` marks pixels left out of the median.

    Returns
    -------
    ndarray
        float32 flat with median 1 over the good pixels.
    """
    arr = np.asarray(flat, dtype=np.float32)
    level = _median_level(arr, mask, "the flat")
    return arr / np.float32(level)


# ----------------------------------------------------------------- smoothing
def _interpolation_matrix(centres: np.ndarray, n: int) -> np.ndarray:
    """``(n, len(centres))`` weights interpolating grid values at pixels ``0..n-1``.

    Natural cubic spline between the centres, linear extrapolation (value and
    slope of the spline at the end knot) beyond them; constant for one centre.
    """
    nb = centres.size
    x = np.arange(n, dtype=np.float64)
    if nb == 1:
        return np.ones((n, 1))
    if nb == 2:
        t = ((x - centres[0]) / (centres[1] - centres[0]))[:, None]
        return np.hstack([1 - t, t])
    spline = CubicSpline(centres, np.eye(nb), bc_type="natural", axis=0)
    slope = spline.derivative()
    weights = spline(np.clip(x, centres[0], centres[-1]))
    left, right = x < centres[0], x > centres[-1]
    weights[left] += (x[left] - centres[0])[:, None] * slope(centres[0])[None, :]
    weights[right] += (x[right] - centres[-1])[:, None] * slope(centres[-1])[None, :]
    return weights


def _block_medians(blocks: np.ndarray) -> np.ndarray:
    """``bn.median(blocks, axis=-1)`` of finite float32 values, reordering ``blocks`` (a partition in place; the
    mean of the middle pair in float32, as bottleneck takes it)."""
    n = blocks.shape[-1]
    k = n // 2
    blocks.partition(k, axis=-1)
    high = blocks[..., k]
    if n % 2:
        return high.copy()
    return np.float32(0.5) * (blocks[..., :k].max(axis=-1) + high)


def _block_grid(n: int, scale: int) -> tuple[int, int, int]:
    """Block size, number of blocks and offset covering ``n`` pixels symmetrically."""
    size = min(scale, n)
    count = n // size
    return size, count, (n - count * size) // 2


def smooth_large_scale(image: ArrayLike, scale_px: int, mask: ArrayLike | None = None,
                       min_fraction: float = 0.25, filter_size: int = 1) -> np.ndarray:
    """Robust large-scale smoothing: block medians interpolated back to every pixel.

    Parameters
    ----------
    image : array_like
        2-D image (flat field, bias...).
    scale_px : int
        Block size in pixels: structure smaller than this is removed.
    mask : array_like of bool, optional
        ``True`` marks pixels to ignore (non-finite pixels are always ignored).
    min_fraction : float
        Blocks with fewer usable pixels than this fraction take the value of
        the nearest usable block.
    filter_size : int
        Size of a median filter run over the grid of block medians (1: none);
        3 removes blocks spoilt by large objects, at the cost of resolution.

    Returns
    -------
    ndarray
        float32 smooth image of the input's shape.

    Notes
    -----
    The blocks tile the image symmetrically; the edge strips left over (less
    than one block) and the half blocks beyond the outer block centres are
    extrapolated linearly from the spline.  Cost: one pass of block medians
    plus two small matrix products (~0.2 s for 2k x 4k).
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"the image to smooth must be a 2-D image, got shape {arr.shape}")
    scale = int(scale_px)
    if scale < 1:
        raise ValueError(f"scale_px must be a positive number of pixels, got {scale_px!r}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    ny, nx = arr.shape
    by, nby, oy = _block_grid(ny, scale)
    bx, nbx, ox = _block_grid(nx, scale)

    def tiled(a: np.ndarray, dtype: Any) -> np.ndarray:
        """The blocks' pixels, one block after the other: ``(nby, nbx, by * bx)`` (one copy)."""
        cut = a[oy:oy + nby * by, ox:ox + nbx * bx].reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3)
        out = np.empty((nby, nbx, by, bx), dtype=dtype)
        out[...] = cut
        return out.reshape(nby, nbx, by * bx)

    blocks = tiled(arr, np.float32)
    unusable = ~np.isfinite(blocks)  # masked and non-finite pixels do not count
    if mask is not None:
        bad_pixels = np.asarray(mask, dtype=bool)
        if bad_pixels.shape != arr.shape:
            raise ValueError(f"the mask of the image to smooth has shape {bad_pixels.shape}, the image {arr.shape}")
        unusable |= tiled(bad_pixels, bool)
    if unusable.any():
        blocks[unusable] = np.nan
        grid = bn.nanmedian(blocks, axis=-1).astype(np.float64)
    else:  # every pixel counts: bottleneck's medians from a partition of the blocks in place (1.5 times faster)
        grid = _block_medians(blocks).astype(np.float64)
    ngood = by * bx - np.count_nonzero(unusable, axis=-1)
    del blocks, unusable
    grid[ngood < min_fraction * by * bx] = np.nan
    bad = ~np.isfinite(grid)
    if bad.all():
        raise ValueError("no block has enough usable pixels to smooth; check the mask or lower min_fraction")
    if bad.any():
        nearest = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        grid = grid[tuple(nearest)]
    if filter_size > 1:
        grid = ndimage.median_filter(grid, size=int(filter_size), mode="nearest")
    wy = _interpolation_matrix(oy + (np.arange(nby) + 0.5) * by - 0.5, ny)
    wx = _interpolation_matrix(ox + (np.arange(nbx) + 0.5) * bx - 0.5, nx)
    with blas_threads(1):  # one thread: OpenBLAS's idle threads would spin for more CPU than the product takes
        return (wy @ grid @ wx.T).astype(np.float32)


# ---------------------------------------------------------------- combining
@dataclass(frozen=True)
class FlatCombineResult:
    """A combined, normalised flat field.

    Attributes
    ----------
    data : ndarray
        float32 flat, median 1.
    nused : ndarray
        Frames used per pixel.
    levels : ndarray
        Median level of each (bias-subtracted) input frame, ADU.
    norm : float
        Median of the combination of the level-scaled frames (before the final normalisation).
    n_rejected : int
        Values clipped (stars, cosmic rays).
    """

    data: np.ndarray
    nused: np.ndarray
    levels: np.ndarray
    norm: float
    n_rejected: int


def _subsample(frame: Any, shape: tuple[int, int], step: int, block_rows: int = 256) -> np.ndarray:
    """Every ``step``-th row and column of a frame (array or row-reader), as float32."""
    if not _is_reader(frame):
        return np.asarray(frame[::step, ::step], dtype=np.float32)
    ny, nx = shape
    parts = []
    block_rows -= block_rows % step
    for r0 in range(0, ny, block_rows):
        r1 = min(ny, r0 + block_rows)
        block = np.empty((r1 - r0, nx), dtype=np.float32)
        _read_block(frame, r0, r1, block, "a flat frame")
        parts.append(block[::step, ::step])
    return np.concatenate(parts)


def flat_level(frame: ArrayLike, masterbias: ArrayLike | None = None, step: int = 4,
               what: str = "flat frame") -> float:
    """The level :func:`combine_flats` scales a frame by: the median of every ``step``-th row and column of
    ``frame - masterbias`` (ValueError unless positive)."""
    arr = np.asarray(frame)
    sample = np.asarray(arr[::step, ::step], dtype=np.float32)
    if masterbias is not None:
        sample = sample - np.asarray(masterbias, dtype=np.float32)[::step, ::step]
    return _median_level(sample, None, what)


def _debiased(frame: Any, bias: np.ndarray | None) -> Any:
    """A row reader giving ``frame - bias`` (or the frame itself without a bias)."""
    if bias is None:
        return frame

    def read(rows: slice) -> np.ndarray:
        block = frame(rows) if _is_reader(frame) else frame[rows]
        return np.asarray(block, dtype=np.float32) - bias[rows]

    return read


def combine_flats(frames: Sequence[Any], masterbias: ArrayLike | None = None, *, statistic: str = "mean",
                  reject_stars: bool = True, sigma: float | tuple[float, float] = 3.0, maxiters: int = 5,
                  masks: Sequence[Any] | None = None, level_step: int = 4, block_rows: int | None = None,
                  shape: tuple[int, int] | None = None, levels: Sequence[float] | None = None,
                  **combiner_options: Any) -> FlatCombineResult:
    """Combine flat-field exposures into one normalised flat.

    Each frame is de-biased, divided by its own median (so exposures of
    different brightness, like twilight flats, agree), combined pixel by
    pixel and the result normalised to median 1.

    Parameters
    ----------
    frames : sequence
        Trimmed (overscan-corrected) flat exposures: arrays, memmaps or row
        readers ``f(rows) -> block`` (see :func:`awe.image.combine.combine`).
    masterbias : array_like, optional
        Master bias (trimmed) subtracted from every frame.
    statistic : {'mean', 'median'}
        Statistic of the kept values of each pixel.
    reject_stars : bool
        Clip values deviating by more than ``sigma`` from the median of the
        level-scaled stack: rejects stars of twilight flats (they move
        between exposures) and cosmic rays.  ``False``: plain mean/median.
    sigma, maxiters
        Clipping threshold(s) and iterations.
    masks : sequence, optional
        Per-frame boolean bad-pixel masks (``True`` = bad).
    level_step : int
        Frame levels are medians of every ``level_step``-th row and column.
    levels : sequence of float, optional
        The frames' levels measured already (:func:`flat_level` of each frame, e.g. while it was in memory):
        then the frames are not read for them.
    block_rows, shape
        Passed to the combiner (``shape`` is needed when all frames are readers).
    **combiner_options
        Further :class:`~awe.image.combine.Combiner` options (``sigma_estimator``...).

    Returns
    -------
    FlatCombineResult
    """
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    frames = [_frame_array(f) for f in frames]
    if not frames:
        raise ValueError("no flat frames to combine")
    shapes = {tuple(np.shape(f)) for f in frames if not _is_reader(f)} | ({tuple(shape)} if shape else set())
    if len(shapes) != 1:
        raise ValueError(f"flat frames need one common shape (pass shape= for readers), got {sorted(shapes)}")
    (frame_shape,) = shapes
    bias = None
    if masterbias is not None:
        bias = np.asarray(masterbias, dtype=np.float32)
        if bias.shape != frame_shape:
            raise ValueError(f"master bias shape {bias.shape} differs from the flat frames' {frame_shape}")
    sources = [_debiased(f, bias) for f in frames]
    if levels is not None:
        if len(levels) != len(frames):
            raise ValueError(f"levels has {len(levels)} values for {len(frames)} frames; give one per frame")
        levels = np.asarray(levels, dtype=np.float64)
    else:
        levels = np.array([_median_level(_subsample(s, frame_shape, level_step), None, f"flat frame {k}")
                           for k, s in enumerate(sources)])
    log.info("flat levels (ADU): %s", np.array2string(levels, precision=1))
    method = ("clipped_" if reject_stars else "") + statistic
    combiner = Combiner(method=method, sigma=sigma, maxiters=maxiters, block_rows=block_rows, **combiner_options)
    result = combiner(sources, scales=1.0 / levels, masks=masks, shape=frame_shape)
    norm = _median_level(result.data, None, "the combined flat")
    data = result.data
    data /= np.float32(norm)
    return FlatCombineResult(data=data, nused=result.nused, levels=levels, norm=norm,
                             n_rejected=result.n_rejected)


def master_flat(dome: ArrayLike, twilight: ArrayLike, scale_px: int = 64, mask: ArrayLike | None = None,
                normalise: bool = True, **smooth_options: Any) -> np.ndarray:
    """Master flat: the dome flat's small scales times the twilight flat's large scales.

    Parameters
    ----------
    dome, twilight : array_like
        Combined (normalised or not) dome and twilight flats of one chip and filter.
    scale_px : int
        Smoothing scale separating "small" from "large" scales.
    mask : array_like of bool, optional
        Bad pixels, ignored by the smoothing and the normalisation.
    normalise : bool
        Divide by the median (False: leave that to :func:`normalise_flat_qc`, which also measures the flat).
    **smooth_options
        Passed to :func:`smooth_large_scale`.

    Returns
    -------
    ndarray
        float32 master flat, median 1 (when ``normalise``).
    """
    dome_arr = np.asarray(dome, dtype=np.float32)
    twilight_arr = np.asarray(twilight, dtype=np.float32)
    if dome_arr.shape != twilight_arr.shape:
        raise ValueError(f"dome flat {dome_arr.shape} and twilight flat {twilight_arr.shape} differ in shape")
    dome_large = smooth_large_scale(dome_arr, scale_px, mask, **smooth_options)
    twilight_large = smooth_large_scale(twilight_arr, scale_px, mask, **smooth_options)
    with np.errstate(divide="ignore", invalid="ignore"):
        combined = dome_arr / dome_large
        combined *= twilight_large
    return normalise_flat(combined, mask) if normalise else combined


# ----------------------------------------------------------------------- QC
@dataclass(frozen=True)
class FlatQC:
    """Quality figures of a flat field.

    Attributes
    ----------
    level : float
        Median of the good pixels (ADU for a raw flat, ~1 for a normalised one).
    stdev : float
        Standard deviation of the good pixels divided by ``level``.
    flatness : float
        ``(max - min)`` of the sub-window medians divided by ``level``.
    max_subwin_stdev : float
        Largest sub-window standard deviation divided by ``level``.
    large_scale_rms : float
        rms of the large-scale structure (``smooth_large_scale`` at
        ``scale_px``) divided by ``level``.
    n_bad : int
        Non-finite or non-positive pixels (masked ones not counted).
    imstat : ImStat or None
        :func:`awe.image.stats.imstat` of the flat when its pixels are the good ones (no mask, none bad): the
        same values, so measured on the same copy; None otherwise.
    """

    level: float
    stdev: float
    flatness: float
    max_subwin_stdev: float
    large_scale_rms: float
    n_bad: int
    imstat: ImStat | None = None


def flat_qc(flat: ArrayLike, mask: ArrayLike | None = None, grid: tuple[int, int] = (4, 4),
            scale_px: int = 64) -> FlatQC:
    """Flux level and flatness figures of a (raw or combined) flat field.

    Parameters
    ----------
    flat : array_like
        2-D flat field.
    mask : array_like of bool, optional
        ``True`` marks pixels to leave out.
    grid : (int, int)
        Sub-window grid (y, x) of the flatness figures.
    scale_px : int
        Smoothing scale of ``large_scale_rms``.

    Returns
    -------
    FlatQC
    """
    return _flat_qc(np.asarray(flat, dtype=np.float32), mask, grid, scale_px)[1]


def normalise_flat_qc(flat: ArrayLike, mask: ArrayLike | None = None, grid: tuple[int, int] = (4, 4),
                      scale_px: int = 64) -> tuple[np.ndarray, FlatQC]:
    """``normalise_flat(flat, mask)`` and the :func:`flat_qc` of the result, in one pass over the good pixels.

    The same values as the two calls (the median of the normalised good pixels is taken of the same
    divided values), with one copy and one median less when the pixels left out of the normalisation are those
    :func:`flat_qc` leaves out (none non-positive or infinite beyond the mask); otherwise the two calls.
    """
    arr = np.asarray(flat, dtype=np.float32)
    return _flat_qc(arr, mask, grid, scale_px, normalise=True)


def _flat_qc(arr: np.ndarray, mask: ArrayLike | None, grid: tuple[int, int], scale_px: int,
             normalise: bool = False) -> tuple[np.ndarray, FlatQC]:
    """The (normalised, when ``normalise``) flat and its :class:`FlatQC`."""
    with np.errstate(invalid="ignore"):
        invalid = ~(arr > 0)  # non-finite (NaN compares false; inf is caught below) or not positive
    invalid |= np.isinf(arr)
    bad = None
    if mask is None:
        n_bad = int(np.count_nonzero(invalid))
        excluded = invalid
    else:
        bad = np.asarray(mask, dtype=bool)
        if bad.shape != arr.shape:
            raise ValueError(f"mask shape {bad.shape} differs from data shape {arr.shape}; "
                             "pass a boolean mask of the image's shape")
        excluded = bad | invalid
        n_bad = int(np.count_nonzero(excluded)) - int(np.count_nonzero(bad))
    if normalise and n_bad:  # the normalisation's good pixels are not the QC's: one after the other
        arr = normalise_flat(arr, mask)
        return _flat_qc(arr, mask, grid, scale_px)
    every = not excluded.any()
    arr = np.ascontiguousarray(arr)
    values = arr.reshape(-1) if every else arr[~excluded]  # the good pixels, once for the level and the spread
    low, high = _middle_pair(values)
    level = _values_median(values, low, high)
    if normalise:  # normalise_flat's median and division, of the same values
        scale = np.float32(level)
        arr = arr / scale
        if every:
            values = arr.reshape(-1)
        else:
            values /= scale  # the same divisions as arr's
        with np.errstate(invalid="ignore"):
            if np.count_nonzero(~(values > 0) | np.isinf(values)):  # under- or overflow
                return _flat_qc(arr, mask, grid, scale_px)
        # dividing by a positive number keeps the order: the middle pair of the divided values, divided
        level = _values_median(values, low / scale, high / scale)
    spread = float(np.std(values, dtype=np.float64))
    stats = None
    if mask is None and n_bad == 0:  # imstat's values are these (every pixel, in the same order)
        stats = ImStat(mean=float(np.mean(values, dtype=np.float64)), median=level, stdev=spread,
                       min=float(bn.nanmin(values)), max=float(bn.nanmax(values)))
    del values
    sub = subwin_stats(arr, grid, excluded)
    large = smooth_large_scale(arr, scale_px, excluded)
    return arr, FlatQC(level=level, stdev=spread / level, flatness=sub.flatness / level,
                       max_subwin_stdev=sub.max_stdev / level,
                       large_scale_rms=float(np.std(large, dtype=np.float64)) / level, n_bad=n_bad, imstat=stats)


# ------------------------------------------------------ gain and read noise
def _section(image: ArrayLike, section: tuple[slice, slice] | None, what: str, dtype: Any = np.float64) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D image, got shape {arr.shape}")
    return np.asarray(arr if section is None else arr[section], dtype=dtype)


def central_section(shape: tuple[int, int], size: Sequence[float] | None, binning: float = 1.0
                    ) -> tuple[slice, slice] | None:
    """The central ``size = (nx, ny)`` detector pixels of a frame of ``shape = (ny, nx)`` binned ``binning`` times.

    ``size`` is in full-size (detector) pixels, so a chip shrunk 8 times gets an eighth of it along each axis;
    it is clipped to the frame. ``None`` or a zero width or height: ``None`` (the whole frame).
    """
    if size is None:
        return None
    if len(size) != 2:
        raise ValueError(f"a section size is (nx, ny), got {tuple(size)!r}")
    if not (size[0] > 0 and size[1] > 0):
        return None
    if not binning > 0:
        raise ValueError(f"binning must be positive, got {binning!r}")
    ny, nx = int(shape[0]), int(shape[1])
    wx = min(nx, max(1, int(round(size[0] / binning))))
    wy = min(ny, max(1, int(round(size[1] / binning))))
    if (wy, wx) == (ny, nx):
        return None
    y0, x0 = (ny - wy) // 2, (nx - wx) // 2
    return slice(y0, y0 + wy), slice(x0, x0 + wx)


def _clipped_var(diff: np.ndarray) -> float:
    stats = sigma_clipped_stats(diff, sigma=_PAIR_CLIP_SIGMA, maxiters=10)
    if stats.n_used < 2:
        raise ValueError("too few usable pixels to measure a variance; enlarge the section")
    return stats.stdev ** 2


def read_noise_from_pairs(bias1: ArrayLike, bias2: ArrayLike, gain: float | None = None,
                          section: tuple[slice, slice] | None = None) -> float:
    """Read noise from the difference of two bias frames.

    ``sigma(B1 - B2) / sqrt(2)`` (5-sigma clipped, so cosmic rays and hot
    pixels do not count); fixed patterns cancel in the difference.

    Parameters
    ----------
    bias1, bias2 : array_like
        Two bias frames (raw or overscan-corrected, same layout).
    gain : float, optional
        Gain in e-/ADU; if given the result is in electrons, else ADU.
    section : (slice, slice), optional
        Region to use (default: the whole frames).

    Returns
    -------
    float
    """
    b1, b2 = _section(bias1, section, "bias1"), _section(bias2, section, "bias2")
    if b1.shape != b2.shape:
        raise ValueError(f"the two biases differ in shape: {b1.shape} and {b2.shape}")
    noise = math.sqrt(_clipped_var(b1 - b2) / 2.0)
    if gain is not None:
        if not gain > 0:
            raise ValueError(f"gain must be positive (e-/ADU), got {gain!r}")
        noise *= gain
    return noise


def _sample_median(image: np.ndarray) -> float:
    values = good_values(image[::4, ::4])
    return float(bn.median(values)) if values.size else math.nan


def _signal_ratio(s1: np.ndarray, s2: np.ndarray, block: int, degree: int) -> np.ndarray:
    """The ratio of two flats' signals as a smooth surface: a polynomial of ``degree`` in x and y fitted (with
    5-sigma clipping of blocks) to the medians of ``s1 / s2`` in blocks of ``block`` x ``block`` pixels.

    The pixel response cancels in the ratio; what is left is how the illumination changed between the two
    exposures (a twilight sky's level and gradient), which is smooth across a chip.
    """
    ny, nx = s1.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.divide(s1, s2, dtype=np.float32)
    q[~np.isfinite(q)] = np.nan
    by, nby, oy = _block_grid(ny, block)
    bx, nbx, ox = _block_grid(nx, block)
    blocks = q[oy:oy + nby * by, ox:ox + nbx * bx].reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3)
    medians = bn.nanmedian(blocks.reshape(nby, nbx, by * bx), axis=-1).astype(np.float64).ravel()
    yc = (oy + (np.arange(nby) + 0.5) * by) / ny - 0.5
    xc = (ox + (np.arange(nbx) + 0.5) * bx) / nx - 0.5
    yy, xx = (g.ravel() for g in np.meshgrid(yc, xc, indexing="ij"))
    keep = np.isfinite(medians)
    powers = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    while len(powers) > 1 and keep.sum() < 3 * len(powers):  # too few blocks for the surface: a lower degree
        degree -= 1
        powers = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    if not keep.any():
        raise ValueError("the two flats have no block with a finite signal ratio; are they exposed?")
    design = np.stack([xx ** i * yy ** j for i, j in powers], axis=-1)
    coef = np.zeros(len(powers))
    with blas_threads(1):  # small products: OpenBLAS's spinning threads would cost more than they do
        for _ in range(5):
            coef = np.linalg.lstsq(design[keep], medians[keep], rcond=None)[0]
            residual = medians - design @ coef
            spread = MAD_TO_SIGMA * float(np.median(np.abs(residual[keep])))
            new = np.isfinite(medians) & (np.abs(residual) <= 5.0 * spread if spread > 0 else np.isfinite(medians))
            if np.array_equal(new, keep) or new.sum() < len(powers):
                break
            keep = new
    x = (np.arange(nx) + 0.5) / nx - 0.5
    y = (np.arange(ny) + 0.5) / ny - 0.5
    ratio = np.zeros((ny, nx), dtype=np.float32)
    for (i, j), c in zip(powers, coef):
        ratio += (c * np.outer(y ** j, x ** i)).astype(np.float32)
    return ratio


def _clipped_sorted(values: np.ndarray, sigma: float = _PAIR_CLIP_SIGMA,
                    maxiters: int = 10) -> tuple[float, float, int]:
    """Median, standard deviation and count of ``values`` after kappa-sigma clipping around the median: what
    :func:`awe.image.stats.sigma_clipped_stats` (astropy's ``sigma_clip``: median centre, standard deviation
    width, both sides, the clipped values removed at each iteration) gives, from one sort.

    The values kept are always those within a range of values, so in sorted order a run ``[lo, hi)``: each
    iteration is two binary searches and the standard deviation of that run (astropy takes a median and
    filters a copy of all the values each time: 3 times slower for the 2 million pixels of a gain section).
    """
    data = np.sort(values[np.isfinite(values)])
    lo, hi = 0, data.size
    for _ in range(maxiters):
        if hi - lo < 1:
            break
        run = data[lo:hi]
        m = hi - lo
        centre = 0.5 * (float(run[(m - 1) // 2]) + float(run[m // 2]))
        std = float(np.std(run, dtype=np.float64))
        new_lo = lo + int(np.searchsorted(run, centre - sigma * std, side="left"))
        new_hi = lo + int(np.searchsorted(run, centre + sigma * std, side="right"))
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
    run = data[lo:hi]
    if run.size == 0:
        return math.nan, math.nan, 0
    m = run.size
    return 0.5 * (float(run[(m - 1) // 2]) + float(run[m // 2])), float(np.std(run, dtype=np.float64)), int(m)


#: fewest values :func:`_clipped_stats` takes through a partition rather than a sort
_BAND_MIN_VALUES = 100_000


def _clipped_stats(values: np.ndarray, sigma: float = _PAIR_CLIP_SIGMA,
                   maxiters: int = 10) -> tuple[float, float, int]:
    """:func:`_clipped_sorted`'s figures without sorting all the values (4 times faster for 2 million).

    One partition gives the values ranked within 1.5 % of the middle (sorted: every median the clipping
    can come to) and a robust sigma (half the 16-84 % range); the values more than 0.4 ``sigma`` robust sigmas
    from the median (2 for 5-sigma clipping) are sorted with running sums of them, and the sums of the others
    taken once: each iteration is then two binary searches in the outer values. When the clipping would come
    closer to the median than that, or the median would leave the middle values, :func:`_clipped_sorted` is
    used instead: the same figures (to rounding), always.
    """
    data = values[np.isfinite(values)]
    n = data.size
    if n < _BAND_MIN_VALUES:
        return _clipped_sorted(data, sigma, maxiters)
    k = n // 2
    w = max(2048, n // 64)
    band_lo, band_hi = k - w, min(n - 1, k + w)
    r16, r84 = int(0.1587 * n), int(0.8413 * n)  # one Gaussian sigma either side: how wide the core may be
    part = np.partition(data, [r16, band_lo, band_hi, r84])
    band = np.sort(part[band_lo:band_hi + 1])
    robust = 0.5 * (float(part[r84]) - float(part[r16]))
    del part

    def ranked(r: int) -> float | None:
        return float(band[r - band_lo]) if band_lo <= r <= band_hi else None

    centre = 0.5 * (float(band[(n - 1) // 2 - band_lo]) + float(band[n // 2 - band_lo]))
    std = float(np.std(data, dtype=np.float64))
    origin = centre  # the sums are of the values minus the first median (precise: small numbers)
    # the core, summed once: within 0.4 sigma (robust) of the median, where a sigma-clipping is hardly to come
    half = 0.4 * sigma * min(robust, std)
    inner_lo, inner_hi = centre - half, centre + half
    low = np.sort(data[data < inner_lo]).astype(np.float64) - origin
    high = np.sort(data[data > inner_hi]).astype(np.float64) - origin
    core = data[(data >= inner_lo) & (data <= inner_hi)].astype(np.float64) - origin
    n_core, s1_core, s2_core = core.size, float(np.sum(core)), float(np.sum(core * core))
    del core
    low_s1 = np.concatenate(([0.0], np.cumsum(low)))  # sums of low[:i]
    low_s2 = np.concatenate(([0.0], np.cumsum(low * low)))
    high_s1 = np.concatenate(([0.0], np.cumsum(high)))  # sums of high[:j]
    high_s2 = np.concatenate(([0.0], np.cumsum(high * high)))
    n_low = low.size
    first, last = 0, high.size  # kept: low[first:], the core, high[:last]
    for _ in range(maxiters):
        lower, upper = centre - sigma * std, centre + sigma * std
        if lower > inner_lo or upper < inner_hi:
            return _clipped_sorted(data, sigma, maxiters)
        new_first = max(first, int(np.searchsorted(low, lower - origin, side="left")))
        new_last = min(last, int(np.searchsorted(high, upper - origin, side="right")))
        if (new_first, new_last) == (first, last):
            break
        first, last = new_first, new_last
        m = (n_low - first) + n_core + last
        if m < 1:
            return _clipped_sorted(data, sigma, maxiters)
        s1 = s1_core + (low_s1[-1] - low_s1[first]) + high_s1[last]
        s2 = s2_core + (low_s2[-1] - low_s2[first]) + high_s2[last]
        mean = s1 / m  # of the kept values minus origin
        std = math.sqrt(max(s2 / m - mean * mean, 0.0))
        a, b = ranked(first + (m - 1) // 2), ranked(first + m // 2)
        if a is None or b is None:
            return _clipped_sorted(data, sigma, maxiters)
        centre = 0.5 * (a + b)
    m = (n_low - first) + n_core + last
    return centre, std, int(m)


def _pair_var(diff: np.ndarray, sort: bool = False) -> float:
    """The clipped variance of a difference image (:func:`_clipped_stats`; ``sort``: :func:`_clipped_sorted`,
    faster for the few distinct values of a difference of biases)."""
    _, std, n = (_clipped_sorted if sort else _clipped_stats)(diff.ravel())
    if n < 2:
        raise ValueError("too few usable pixels to measure a variance; enlarge the section")
    return std ** 2


@dataclass(frozen=True)
class BiasPair:
    """What the gain needs of two bias frames (in the section of the flats): their mean level and the clipped
    variance of their difference; measured once for all the flat pairs of a flat field."""

    level: float
    var: float
    shape: tuple[int, int]

    @classmethod
    def of(cls, bias1: ArrayLike, bias2: ArrayLike, section: tuple[slice, slice] | None = None) -> "BiasPair":
        b1, b2 = _section(bias1, section, "bias1"), _section(bias2, section, "bias2")
        if b1.shape != b2.shape:
            raise ValueError(f"the two biases differ in shape: {b1.shape} and {b2.shape}")
        # levels from every 4th row and column: an error in the bias level cancels in the difference and is
        # 1e-5 of the signal
        level = 0.5 * (_sample_median(b1) + _sample_median(b2))
        return cls(level=level, var=_pair_var(b1 - b2, sort=True), shape=(int(b1.shape[0]), int(b1.shape[1])))


def gain_from_pairs(flat1: ArrayLike, flat2: ArrayLike, bias1: ArrayLike | None, bias2: ArrayLike | None,
                    section: tuple[slice, slice] | None = None, degree: int = 2, block: int = 16,
                    biases: BiasPair | None = None) -> float:
    """Gain (e-/ADU) from two flats and two biases: Janesick's photon-transfer method.

    ``gain = <S1 (1 + r)> / (var(S1 - r S2) - <(1 + r^2) / 2> var(B1 - B2))`` with
    ``S = F - bias level`` the signals of the two flats, ``r(x, y)`` the ratio
    of the two signals and ``var`` the (5-sigma clipped) variance of the
    difference images, in which the pixel-response pattern cancels.  ``r`` is a
    smooth surface (a polynomial of ``degree`` fitted to block medians of
    ``S1 / S2``), not one number: the illumination of twilight flats changes
    between exposures in level *and* gradient, and a single scale factor
    would leave that change in the difference (a 0.5 % change of the gradient
    across a chip makes the gain 4 % low).  Pixels within 2 pixels of a
    5-sigma outlier of the difference (stars that moved between the
    exposures, cosmic rays) are left out, so that the faint wings of stars do
    not add variance either.

    Parameters
    ----------
    flat1, flat2 : array_like
        Two flat exposures, not bias-subtracted, of similar level.
    bias1, bias2 : array_like
        Two bias frames of the same layout.
    section : (slice, slice), optional
        A region free of defects (default: whole frames).
    degree : int
        Degree of the polynomial surface of the signal ratio (0: one scale factor).
    block : int
        Block size (pixels) of the medians the surface is fitted to.
    biases : BiasPair, optional
        ``BiasPair.of(bias1, bias2, section)`` measured beforehand (then ``bias1``, ``bias2`` may be None):
        the same for every pair of flats of a flat field.

    Returns
    -------
    float
        Gain in electrons per ADU.
    """
    f1, f2 = _section(flat1, section, "flat1", np.float32), _section(flat2, section, "flat2", np.float32)
    if biases is None:
        if bias1 is None or bias2 is None:
            raise ValueError("gain_from_pairs needs two bias frames (bias1, bias2) or biases=BiasPair.of(...)")
        biases = BiasPair.of(bias1, bias2, section)
    if not f1.shape == f2.shape == biases.shape:
        raise ValueError(f"flats and biases differ in shape: {f1.shape}, {f2.shape}, {biases.shape}")
    if int(degree) != degree or degree < 0 or int(block) != block or block < 2:
        raise ValueError(f"degree must be an integer >= 0 and block one >= 2, got {degree!r} and {block!r}")
    # the flats' levels only check that they are exposed
    s1, s2 = (np.subtract(f, biases.level, dtype=np.float64, out=np.empty(f.shape, np.float32), casting="unsafe")
              for f in (f1, f2))  # the subtraction in float64, no float64 copy of the frames
    del f1, f2
    level1, level2 = _sample_median(s1), _sample_median(s2)
    if not (level1 > 0 and level2 > 0):
        raise ValueError(f"flat signals above bias are {level1:.1f} and {level2:.1f} ADU; need two exposed flats")
    ratio = _signal_ratio(s1, s2, int(block), int(degree))
    diff = s1 - ratio * s2
    centre, spread, _ = _clipped_stats(diff.ravel())
    with np.errstate(invalid="ignore"):
        outliers = ~np.isfinite(diff) | (np.abs(diff - np.float32(centre)) > _PAIR_CLIP_SIGMA * spread)
    bad = ndimage.binary_dilation(outliers, iterations=2)
    good = ~bad
    var_flat = _pair_var(diff[good])
    var_bias = biases.var
    kept_ratio = ratio[good].astype(np.float64)
    signal = float(np.mean(s1[good] * (1.0 + kept_ratio)))
    bias_weight = float(np.mean(0.5 * (1.0 + kept_ratio ** 2)))
    photon_var = var_flat - bias_weight * var_bias
    if not photon_var > 0:
        raise ValueError("the flat-pair variance does not exceed the bias-pair variance; "
                         "the flats are too faint or not independent exposures")
    gain = signal / photon_var
    log.debug("gain from pairs: S1=%.1f S2=%.1f var_flat=%.2f var_bias=%.2f, %d pixels left out -> %.4f e-/ADU",
              level1, level2, var_flat, var_bias, int(bad.sum()), gain)
    return float(gain)
