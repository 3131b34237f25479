"""Streaming combination of image stacks (master bias, flats): mean, median, sigma-clipped.

The frames are read in blocks of rows, so the memory used is bounded by the
block size whatever the number of frames: a frame may be a numpy array, a
``np.memmap`` (an ``astropy.io.fits`` HDU opened with ``memmap=True``: only the
rows of the current block are read) or a callable ``f(rows: slice) -> block``.

Clipping (methods ``clipped_mean`` and ``clipped_median``) is iterative
kappa-sigma clipping around the median, vectorised over the stack: each
block is sorted once along the frame axis, after which the values kept for a
pixel are always a contiguous run ``[lo, hi)`` of its sorted values, so each
iteration is a few comparisons and gathers, never a Python loop over pixels.
The width sigma comes from one of three estimators:

``'pooled'`` (default)
    Per pixel, the spread between the ~16th and ~84th percentile order
    statistics of its values, normalised so that its median equals sigma for
    Gaussian data of that many values; then the median of these over tiles of
    ``pool_size`` pixels along the row.  Robust (outliers in a few frames or a
    few pixels do not matter) and precise even for 3 frames, for stacks whose
    noise varies slowly over the image (calibration frames).
``'mad'``
    The median absolute deviation of each pixel's kept values (x 1.4826),
    recomputed every iteration.
``'std'``
    The standard deviation about the median of each pixel's kept values
    (what ``astropy.stats.sigma_clip`` does), recomputed every iteration.

Once a value is clipped it stays clipped (as in astropy).
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import bottleneck as bn
import numpy as np
from scipy.special import ndtri

from awe.image.stats import MAD_TO_SIGMA

__all__ = ["CombineResult", "Combiner", "combine", "METHODS", "SIGMA_ESTIMATORS", "pooled_norm", "threads"]

log = logging.getLogger(__name__)

METHODS = ("mean", "median", "clipped_mean", "clipped_median")
SIGMA_ESTIMATORS = ("pooled", "mad", "std")

#: Lower order-statistic quantile of the 'pooled' sigma estimator (one Gaussian sigma below the median).
_QUANTILE = 0.15865525393145707
#: Largest stack depth whose normalisation is computed by Monte Carlo (above: Blom's approximation).
_MC_MAX_DEPTH = 64
_MC_SAMPLES = 20000
#: Deepest stack sorted by a sorting network of element-wise minima and maxima (deeper: ``np.sort``). Along
#: the frame axis ``np.sort`` sorts each pixel's few values separately (~50 ms a million pixels whatever the
#: depth); the network's compare-exchanges run over whole frame rows: 1 ms for 3 frames, 18 ms for 10, 37 ms for 16.
_NETWORK_MAX_DEPTH = 16

def threads() -> int:
    """Threads a combination uses: ``AWE_THREADS`` from the environment, else 2 (at most the cores there are).

    Set ``AWE_THREADS=1`` when several tasks share a machine's cores (the DPU's workers, parallel sessions).
    """
    value = os.environ.get("AWE_THREADS", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"AWE_THREADS={value!r} is not a number of threads: set it to 1, 2, ...") from None
    return max(1, min(2, os.cpu_count() or 1))


Frame = Any  # ndarray, np.memmap, array-like with shape/__getitem__, or callable(rows) -> block


@dataclass(frozen=True)
class CombineResult:
    """The combined image and what went into it.

    Attributes
    ----------
    data : ndarray
        float32 combined image; NaN where no frame had a usable value.
    nused : ndarray
        Number of frames used per pixel (uint8 for up to 255 frames, else int16/int32).
    stdev : ndarray or None
        float32 sample standard deviation (``ddof=1``) of the used values per
        pixel (NaN where fewer than two), if requested.
    n_rejected : int
        Total number of values clipped (masked and non-finite inputs not counted).
    """

    data: np.ndarray
    nused: np.ndarray
    stdev: np.ndarray | None
    n_rejected: int


# ---------------------------------------------------------------- frame access
def _frame_array(frame: Frame) -> Frame:
    """Unwrap objects carrying a ``.data`` array (HDU, CCDData) to that (possibly memory-mapped) array."""
    if isinstance(frame, np.ndarray):
        return frame
    data = getattr(frame, "data", None)
    return data if isinstance(data, np.ndarray) else frame


def _is_reader(frame: Frame) -> bool:
    return callable(frame) and not hasattr(frame, "shape")


def _read_block(frame: Frame, r0: int, r1: int, dest: np.ndarray, what: str) -> None:
    """Copy rows ``r0:r1`` of ``frame`` into ``dest`` (casting to ``dest``'s dtype)."""
    if _is_reader(frame):
        block = frame(slice(r0, r1))
        if np.shape(block) != dest.shape:
            raise ValueError(f"{what} returned a block of shape {np.shape(block)} for rows {r0}:{r1}; "
                             f"expected {dest.shape}")
        dest[...] = block
    else:
        dest[...] = frame[r0:r1]


def _common_shape(frames: Sequence[Frame], shape: tuple[int, int] | None) -> tuple[int, int]:
    shapes = {tuple(np.shape(f)) for f in frames if not _is_reader(f)}
    if shape is not None:
        shapes.add(tuple(int(s) for s in shape))
    if not shapes:
        raise ValueError("all frames are callables: pass shape=(ny, nx) to say how big they are")
    if len(shapes) > 1:
        raise ValueError(f"the frames do not all have the same shape: {sorted(shapes)}")
    (result,) = shapes
    if len(result) != 2 or min(result) < 1:
        raise ValueError(f"frames must be non-empty 2-D images, got shape {result}")
    return result


def _per_frame(values: Sequence[float] | None, n: int, name: str, default: float) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=np.float64)
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} values for {n} frames; give one per frame")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite numbers, got {arr.tolist()}")
    return arr


def _count_dtype(n: int) -> np.dtype:
    if n <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if n <= np.iinfo(np.int16).max:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


# -------------------------------------------------------- the pooled estimator
def _order_indices(m: np.ndarray | int) -> tuple[Any, Any]:
    """Indices ``(i, j)`` of the order statistics used by the pooled estimator for ``m`` values."""
    i = np.floor(_QUANTILE * (np.asarray(m) - 1) + 0.5).astype(np.intp)
    return i, np.asarray(m) - 1 - i


@lru_cache(maxsize=None)
def pooled_norm(m: int) -> float:
    """Median of ``x_(j) - x_(i)`` for ``m`` standard-normal values (see :func:`_order_indices`).

    Dividing a pixel's order-statistic spread by this makes its median equal
    sigma for Gaussian data.  Computed by a seeded Monte Carlo for up to 64
    values (reproducible to ~0.3 %), from Blom's expected order statistics
    above.  NaN for fewer than two values.
    """
    if m < 2:
        return math.nan
    i, j = (int(v) for v in _order_indices(m))
    if m > _MC_MAX_DEPTH:
        return float(ndtri((j + 1 - 0.375) / (m + 0.25)) - ndtri((i + 1 - 0.375) / (m + 0.25)))
    rng = np.random.default_rng(12345 + m)
    sample = np.sort(rng.standard_normal((_MC_SAMPLES, m)), axis=1)
    return float(np.median(sample[:, j] - sample[:, i]))


@lru_cache(maxsize=None)
def _sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs ``(a, b)``, ``a < b``, of Batcher's odd-even merge sort of ``n`` items.

    Built for the next power of two and the pairs reaching past ``n`` dropped (as if padded with +inf).
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def _sort_frames(stack: np.ndarray, nvalid: np.ndarray) -> None:
    """Sort a ``(depth, npix)`` stack in place along the frame axis, NaN last: what ``stack.sort(axis=0)``
    gives, by a sorting network for shallow stacks (``nvalid``: the finite-or-inf values of each pixel)."""
    depth = stack.shape[0]
    if depth > _NETWORK_MAX_DEPTH:
        stack.sort(axis=0)
        return
    missing = bool(depth and nvalid.min() < depth)
    if missing:  # NaN sorts last: as +inf through the network, then NaN again after each pixel's values
        np.copyto(stack, np.float32(np.inf), where=np.isnan(stack))
    tmp = np.empty_like(stack[0])
    for a, b in _sorting_network(depth):
        np.minimum(stack[a], stack[b], out=tmp)
        np.maximum(stack[a], stack[b], out=stack[b])
        stack[a] = tmp
    if missing:
        stack[np.arange(depth)[:, None] >= nvalid[None]] = np.nan


def _rows_at(stack: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``stack[index[p], p]`` for each pixel ``p`` of a ``(depth, npix)`` stack (row slice if uniform)."""
    k = _uniform(index)
    if k is not None:
        return stack[k]
    return np.take_along_axis(stack, index[None].astype(np.intp), axis=0)[0]


def _uniform(arr: np.ndarray) -> int | None:
    """The single value of an integer array if all its elements are equal, else None."""
    if arr.size and arr.min() == arr.max():
        return int(arr.flat[0])
    return None


def _range_median(stack: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Median of each pixel's sorted values ``stack[lo:hi]`` (NaN where the range is empty)."""
    ulo, uhi = _uniform(lo), _uniform(hi)
    if ulo is not None and uhi is not None and uhi > ulo:
        m = uhi - ulo
        return 0.5 * (stack[ulo + (m - 1) // 2] + stack[ulo + m // 2])
    m = hi - lo
    top = stack.shape[0] - 1
    a = _rows_at(stack, np.clip(lo + (m - 1) // 2, 0, top))
    b = _rows_at(stack, np.clip(lo + m // 2, 0, top))
    med = 0.5 * (a + b)
    med[m <= 0] = np.nan
    return med


def _range_mask(depth: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Boolean ``(depth, npix)``: which sorted values lie in each pixel's kept range ``[lo, hi)``."""
    idx = np.arange(depth)[:, None]
    return (idx >= lo[None]) & (idx < hi[None])


def _range_mean_std(stack: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    want_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and sample standard deviation of each pixel's kept values ``stack[lo:hi]``."""
    used = _range_mask(stack.shape[0], lo, hi)
    n = (hi - lo).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum(stack, axis=0, where=used, dtype=np.float64) / n
        if not want_std:
            return mean, None
        dev = stack - mean[None]
        std = np.sqrt(np.sum(dev * dev, axis=0, where=used, dtype=np.float64) / (n - 1))
    std[n < 2] = np.nan
    return mean, std


def _pooled_sigma(stack: np.ndarray, nvalid: np.ndarray, shape: tuple[int, int], pool: int) -> np.ndarray:
    """The 'pooled' sigma of each pixel of a sorted ``(depth, ny*nx)`` stack (see the module docstring)."""
    m = _uniform(nvalid)
    if m is not None and m >= 2:
        i, j = (int(v) for v in _order_indices(m))
        est = (stack[j] - stack[i]) / np.float32(pooled_norm(m))
    else:
        norms = np.full(stack.shape[0] + 1, np.nan, dtype=np.float32)
        for count in np.unique(nvalid):
            norms[count] = pooled_norm(int(count))
        i, j = _order_indices(np.maximum(nvalid, 1))
        top = stack.shape[0] - 1
        spread = _rows_at(stack, np.clip(j, 0, top)) - _rows_at(stack, np.clip(i, 0, top))
        with np.errstate(invalid="ignore"):
            est = spread / norms[nvalid]
    est = est.reshape(shape)
    rows, cols = shape
    ntiles = -(-cols // pool)
    padded = np.full((rows, ntiles * pool), np.nan, dtype=np.float32)
    padded[:, :cols] = est
    tiles = bn.nanmedian(padded.reshape(rows, ntiles, pool), axis=-1)
    return np.repeat(tiles, pool, axis=1)[:, :cols].ravel()


# ------------------------------------------------------------------- the core
class Combiner:
    """A configured stack combiner (the callable form of :func:`combine`).

    Parameters
    ----------
    method : {'mean', 'median', 'clipped_mean', 'clipped_median'}
        Statistic of the (kept) values of each pixel.
    sigma : float or (float, float)
        Clipping thresholds in sigma, below and above the median (one number: both).
    maxiters : int
        Maximum clipping iterations (stops earlier when nothing changes).
    sigma_estimator : {'pooled', 'mad', 'std'}
        How sigma is estimated (see the module docstring).
    pool_size : int
        Tile length (pixels along a row) of the 'pooled' estimator.
    block_rows : int, optional
        Rows per block; default: as many as fit in ``max_memory``.
    max_memory : float
        Bytes of working memory per block when ``block_rows`` is not given.
    return_stdev : bool
        Also return the per-pixel standard deviation of the used values.
    """

    def __init__(self, method: str = "clipped_mean", sigma: float | tuple[float, float] = 3.0, maxiters: int = 5,
                 sigma_estimator: str = "pooled", pool_size: int = 128, block_rows: int | None = None,
                 max_memory: float = 128e6, return_stdev: bool = False) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown combine method {method!r}; use one of {METHODS}")
        if sigma_estimator not in SIGMA_ESTIMATORS:
            raise ValueError(f"unknown sigma_estimator {sigma_estimator!r}; use one of {SIGMA_ESTIMATORS}")
        low, high = (sigma, sigma) if np.isscalar(sigma) else tuple(sigma)  # type: ignore[misc]
        if not (low > 0 and high > 0):
            raise ValueError(f"clipping thresholds must be positive, got sigma={sigma!r}")
        if int(maxiters) < 1:
            raise ValueError(f"maxiters must be at least 1, got {maxiters!r}")
        if int(pool_size) < 1:
            raise ValueError(f"pool_size must be a positive number of pixels, got {pool_size!r}")
        if block_rows is not None and int(block_rows) < 1:
            raise ValueError(f"block_rows must be a positive number of rows, got {block_rows!r}")
        if not max_memory > 0:
            raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
        self.method = method
        self.sigma_lower, self.sigma_upper = float(low), float(high)
        self.maxiters = int(maxiters)
        self.sigma_estimator = sigma_estimator
        self.pool_size = int(pool_size)
        self.block_rows = None if block_rows is None else int(block_rows)
        self.max_memory = float(max_memory)
        self.return_stdev = bool(return_stdev)

    def __repr__(self) -> str:
        return (f"Combiner(method={self.method!r}, sigma=({self.sigma_lower}, {self.sigma_upper}), "
                f"maxiters={self.maxiters}, sigma_estimator={self.sigma_estimator!r}, "
                f"pool_size={self.pool_size}, block_rows={self.block_rows})")

    @property
    def clips(self) -> bool:
        """Whether the method rejects outliers."""
        return self.method.startswith("clipped")

    def rows_per_block(self, nframes: int, ncols: int) -> int:
        """Rows per block for a stack of ``nframes`` frames of ``ncols`` columns."""
        if self.block_rows is not None:
            return self.block_rows
        per_row = nframes * ncols * 10 + ncols * 24  # stack, sort, masks; outputs and per-pixel work arrays
        return max(1, int(self.max_memory // per_row))

    # ---------------------------------------------------------------- in memory
    def combine_stack(self, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        """Combine an in-memory float stack of shape ``(nframes, ny, nx)``; NaN marks missing values.

        The stack is modified (sorted in place along the frame axis by the
        clipping methods).

        Returns
        -------
        data : ndarray
            float32 ``(ny, nx)``.
        nused : ndarray
            Values used per pixel.
        stdev : ndarray or None
            float32 sample standard deviation of the used values (if ``return_stdev``).
        n_rejected : int
            Values clipped.
        """
        if stack.ndim != 3 or stack.dtype.kind != "f":
            raise ValueError(f"combine_stack needs a float (nframes, ny, nx) stack, got {stack.dtype} {stack.shape}")
        depth, shape = stack.shape[0], stack.shape[1:]
        flat = stack.reshape(depth, -1)  # a view for the row blocks of the streaming buffer
        index_dtype = np.int16 if depth < np.iinfo(np.int16).max else np.int32
        nvalid = (depth - np.count_nonzero(np.isnan(flat), axis=0)).astype(index_dtype)
        if not self.clips:
            data = bn.nanmean(flat, axis=0) if self.method == "mean" else bn.nanmedian(flat, axis=0)
            stdev = self._full_stdev(flat, nvalid) if self.return_stdev else None
            return self._shaped(data, nvalid, stdev, shape) + (0,)
        _sort_frames(flat, nvalid)  # NaN last: a pixel's kept values are always a run [lo, hi) of its sorted values
        lo = np.zeros_like(nvalid)
        hi = nvalid.copy()
        center = _range_median(flat, lo, hi)
        pooled = self.sigma_estimator == "pooled"
        sig = _pooled_sigma(flat, nvalid, shape, self.pool_size) if pooled else None
        active = None  # pixels whose range may still change (None: all)
        for _ in range(self.maxiters):
            sub = flat if active is None else flat[:, active]
            pick = (lambda arr: arr) if active is None else (lambda arr: arr[active])
            c, a_lo, a_hi = pick(center), pick(lo), pick(hi)
            s = pick(sig) if pooled else self._pixel_sigma(sub, a_lo, a_hi, c)
            with np.errstate(invalid="ignore"):
                new_lo = np.count_nonzero(sub < (c - self.sigma_lower * s)[None], axis=0).astype(index_dtype)
                new_hi = np.count_nonzero(sub <= (c + self.sigma_upper * s)[None], axis=0).astype(index_dtype)
            np.maximum(new_lo, a_lo, out=new_lo)
            np.minimum(new_hi, a_hi, out=new_hi)
            # never clip everything (possible for sigma = 0 and an even count)
            changed = np.flatnonzero((new_hi > new_lo) & ((new_lo != a_lo) | (new_hi != a_hi)))
            if changed.size == 0:
                break
            active = changed if active is None else active[changed]
            lo[active], hi[active] = new_lo[changed], new_hi[changed]
            center[active] = _range_median(flat[:, active], lo[active], hi[active])
        nused = hi - lo
        n_rejected = int(nvalid.sum(dtype=np.int64) - nused.sum(dtype=np.int64))
        clipped = np.flatnonzero(nused != nvalid)
        if self.method == "clipped_median":
            data = center
        else:
            data = bn.nanmean(flat, axis=0)
        stdev = self._full_stdev(flat, nvalid) if self.return_stdev else None
        if clipped.size:
            mean, std = _range_mean_std(flat[:, clipped], lo[clipped], hi[clipped], self.return_stdev)
            if self.method == "clipped_mean":
                data[clipped] = mean
            if stdev is not None:
                stdev[clipped] = std
        return self._shaped(data, nused, stdev, shape) + (n_rejected,)

    @staticmethod
    def _shaped(data: np.ndarray, nused: np.ndarray, stdev: np.ndarray | None,
                shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return (data.astype(np.float32, copy=False).reshape(shape), nused.reshape(shape),
                None if stdev is None else stdev.astype(np.float32, copy=False).reshape(shape))

    @staticmethod
    def _full_stdev(flat: np.ndarray, nvalid: np.ndarray) -> np.ndarray:
        """Sample standard deviation of all valid values per pixel (NaN where fewer than two)."""
        std = bn.nanstd(flat, axis=0, ddof=1).astype(np.float32, copy=False)
        std[nvalid < 2] = np.nan
        return std

    def _pixel_sigma(self, stack: np.ndarray, lo: np.ndarray, hi: np.ndarray, center: np.ndarray) -> np.ndarray:
        """Per-pixel 'mad' or 'std' of the kept values ``stack[lo:hi]`` about ``center``."""
        used = _range_mask(stack.shape[0], lo, hi)
        dev = np.abs(stack - center[None])
        if self.sigma_estimator == "mad":
            dev[~used] = np.nan
            return MAD_TO_SIGMA * bn.nanmedian(dev, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.sum(dev * dev, axis=0, where=used) / (hi - lo))

    # ---------------------------------------------------------------- streaming
    def __call__(self, frames: Sequence[Frame], scales: Sequence[float] | None = None,
                 offsets: Sequence[float] | None = None, masks: Sequence[Frame | None] | None = None,
                 out: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> CombineResult:
        """Combine ``frames`` block by block (see :func:`combine` for the parameters)."""
        frames = [_frame_array(f) for f in frames]
        nframes = len(frames)
        if nframes == 0:
            raise ValueError("nothing to combine: the list of frames is empty")
        ny, nx = _common_shape(frames, shape)
        scale = _per_frame(scales, nframes, "scales", 1.0)
        offset = _per_frame(offsets, nframes, "offsets", 0.0)
        if masks is not None:
            masks = [None if m is None else _frame_array(m) for m in masks]
            if len(masks) != nframes:
                raise ValueError(f"masks has {len(masks)} entries for {nframes} frames; give one per frame (or None)")
            bad_shapes = [np.shape(m) for m in masks if m is not None and not _is_reader(m) and np.shape(m) != (ny, nx)]
            if bad_shapes:
                raise ValueError(f"mask shapes {bad_shapes} differ from the frame shape {(ny, nx)}")
        if out is None:
            out = np.empty((ny, nx), dtype=np.float32)
        elif out.shape != (ny, nx):
            raise ValueError(f"out has shape {out.shape}, the frames {(ny, nx)}")
        nused = np.empty((ny, nx), dtype=_count_dtype(nframes))
        stdev = np.empty((ny, nx), dtype=np.float32) if self.return_stdev else None
        workers = min(threads(), max(1, -(-ny // max(1, self.rows_per_block(nframes, nx)))))
        # the memory budget is shared by the blocks in flight; rows asked for are kept
        rows = min(ny, self.block_rows or max(1, self.rows_per_block(nframes, nx) // workers))
        buffers = [np.empty((nframes, rows, nx), dtype=np.float32) for _ in range(workers)]
        maskbuf = np.empty((rows, nx), dtype=bool) if masks is not None else None
        n_rejected = 0
        log.debug("combining %d frames of %dx%d with %r in blocks of %d rows, %d thread(s)", nframes, ny, nx, self,
                  rows, workers)

        def finish(r0: int, r1: int, stack: np.ndarray) -> int:
            data, used, sd, rejected = self.combine_stack(stack)
            out[r0:r1] = data
            nused[r0:r1] = used
            if stdev is not None:
                stdev[r0:r1] = sd
            return rejected

        # blocks are read here, one after the other, and combined by the pool (numpy releases the GIL)
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        pending: list[Future] = []
        try:
            n_rejected = self._blocks(frames, masks, scale, offset, ny, rows, buffers, maskbuf, pool, pending, finish)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        log.info("combined %d frames (%s): %d values clipped", nframes, self.method, n_rejected)
        return CombineResult(data=out, nused=nused, stdev=stdev, n_rejected=n_rejected)

    @staticmethod
    def _blocks(frames: list, masks: list | None, scale: np.ndarray, offset: np.ndarray, ny: int, rows: int,
                buffers: list[np.ndarray], maskbuf: np.ndarray | None, pool: ThreadPoolExecutor | None,
                pending: list[Future], finish: Any) -> int:
        """Read the blocks of rows one after the other; combine each here or in the pool; the values clipped."""
        workers = len(buffers)
        n_rejected = 0
        for b, r0 in enumerate(range(0, ny, rows)):
            r1 = min(ny, r0 + rows)
            if pool is not None and len(pending) >= workers:
                n_rejected += pending.pop(0).result()  # frees the oldest buffer
            stack = buffers[b % workers][:, : r1 - r0]
            for k, frame in enumerate(frames):
                layer = stack[k]
                _read_block(frame, r0, r1, layer, f"frame {k}")
                if scale[k] != 1.0:
                    layer *= np.float32(scale[k])
                if offset[k] != 0.0:
                    layer += np.float32(offset[k])
                if masks is not None and masks[k] is not None:
                    bad = maskbuf[: r1 - r0]
                    _read_block(masks[k], r0, r1, bad, f"mask {k}")
                    layer[bad] = np.nan
            if pool is None:
                n_rejected += finish(r0, r1, stack)
            else:
                pending.append(pool.submit(finish, r0, r1, stack))
        return n_rejected + sum(f.result() for f in pending)


def combine(frames: Sequence[Frame], method: str = "clipped_mean", sigma: float | tuple[float, float] = 3.0,
            maxiters: int = 5, scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None,
            masks: Sequence[Frame | None] | None = None, block_rows: int | None = None,
            out: np.ndarray | None = None, sigma_estimator: str = "pooled", return_stdev: bool = False,
            shape: tuple[int, int] | None = None, **kwargs: Any) -> CombineResult:
    """Combine a stack of 2-D frames pixel by pixel, streaming in blocks of rows.

    Parameters
    ----------
    frames : sequence
        2-D frames of equal shape: ndarrays, ``np.memmap`` (only the current
        block's rows are read), objects with a ``.data`` array (HDU, CCDData) or
        callables ``f(rows: slice) -> ndarray`` returning those rows.
    method : {'mean', 'median', 'clipped_mean', 'clipped_median'}
        Statistic of each pixel's values (after clipping for the ``clipped_*`` ones).
    sigma : float or (float, float)
        Clipping thresholds (below, above) in sigma around the median.
    maxiters : int
        Maximum clipping iterations.
    scales, offsets : sequence of float, optional
        Per frame: the values used are ``frame * scales[k] + offsets[k]``.
    masks : sequence, optional
        Per frame: ``None`` or a boolean image (array, memmap or callable),
        ``True`` = bad pixel, excluded from that frame.
    block_rows : int, optional
        Rows per block (default: from a 128 MB working-memory budget).
    out : ndarray, optional
        float32 array (e.g. a memmap) to write the combined image into.
    sigma_estimator : {'pooled', 'mad', 'std'}
        How the clipping width is estimated (module docstring).
    return_stdev : bool
        Also return the per-pixel standard deviation of the used values.
    shape : (int, int), optional
        Frame shape; required when every frame is a callable.
    **kwargs
        Further :class:`Combiner` options (``pool_size``, ``max_memory``).

    Returns
    -------
    CombineResult

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> frames = [rng.normal(100, 2, (64, 64)).astype(np.float32) for _ in range(9)]
    >>> frames[0][10, 10] = 5000.0                      # a cosmic ray
    >>> res = combine(frames)
    >>> bool(abs(res.data[10, 10] - 100) < 3), int(res.nused[10, 10])
    (True, 8)
    """
    combiner = Combiner(method=method, sigma=sigma, maxiters=maxiters, sigma_estimator=sigma_estimator,
                        block_rows=block_rows, return_stdev=return_stdev, **kwargs)
    return combiner(frames, scales=scales, offsets=offsets, masks=masks, out=out, shape=shape)
