"""Combination of regridded frames on a common grid, streamed in tiles (spec section 7: Coadd).

Pure array code: the inputs are :class:`CoaddInput` s that read rows of their sub-image on demand (a
memory-mapped file, an array), the output goes to a ``sink(r0, r1, data, weight, flags)`` called once per
tile of rows in order; never more than ``tile_pixels`` values per input plane of the stack are held.

* ``WEIGHTED``: the weighted mean ``sum(w v) / sum(w)``, weight ``sum(w)``;
* ``CLIPPED``: the same after rejecting, per pixel, the values farther than ``clip_sigma`` x (their own
  noise ``1/sqrt(w)`` plus ``clip_fraction`` of the median's signal above the sky) from the median of the
  values (cosmic rays and tracks the reduction left unmasked);
* ``MEDIAN``: the median of the values of weight > 0, weight ``2/pi sum(w)`` (the median's efficiency).

Flags are OR-ed over every input that covers a pixel (weight 0 or not), so a pixel saturated in an input
stays flagged in the coadd. :func:`aperture_noise` and :func:`limiting_magnitude` give the depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["COMBINE_TYPES", "CoaddInput", "CoaddStats", "bounding_box", "coadd", "aperture_noise",
           "limiting_magnitude"]

COMBINE_TYPES = ("WEIGHTED", "CLIPPED", "MEDIAN")

Reader = Callable[[int, int], "tuple[np.ndarray, np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class CoaddInput:
    """One regridded frame: its sub-image ``(x0, y0, nx, ny)`` on the grid and ``read(r0, r1)`` returning
    its rows ``r0:r1`` (sub-image coordinates) as ``(values, weight, flags)``."""

    x0: int
    y0: int
    nx: int
    ny: int
    read: Reader
    name: str = ""
    #: subtracted from the values (the input's sky level above the coadd's: frames of different sky levels
    #: would make the coadd's sky jump where the set of contributing frames changes)
    offset: float = 0.0

    @classmethod
    def from_arrays(cls, x0: int, y0: int, data: np.ndarray, weight: np.ndarray, flags: np.ndarray | None = None,
                    name: str = "", offset: float = 0.0) -> "CoaddInput":
        fl = np.zeros(np.shape(data), dtype=np.uint8) if flags is None else flags
        ny, nx = np.shape(data)
        return cls(int(x0), int(y0), int(nx), int(ny), lambda r0, r1: (data[r0:r1], weight[r0:r1], fl[r0:r1]), name,
                   float(offset))


@dataclass
class CoaddStats:
    """What the combination saw: the box on the grid, pixels covered and flagged, values rejected."""

    x0: int
    y0: int
    nx: int
    ny: int
    n_inputs: int
    n_covered: int = 0
    n_flagged: int = 0
    n_rejected: int = 0
    max_stack: int = 0
    tile_rows: int = 0


def bounding_box(inputs: list[CoaddInput]) -> tuple[int, int, int, int]:
    """``(x0, y0, nx, ny)``: the smallest box of the grid holding every input."""
    if not inputs:
        raise ValueError("coadd: no inputs")
    x0 = min(i.x0 for i in inputs)
    y0 = min(i.y0 for i in inputs)
    x1 = max(i.x0 + i.nx for i in inputs)
    y1 = max(i.y0 + i.ny for i in inputs)
    return x0, y0, x1 - x0, y1 - y0


def coadd(inputs: list[CoaddInput], sink: Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], None],
          method: str = "WEIGHTED", box: tuple[int, int, int, int] | None = None, clip_sigma: float = 4.0,
          clip_fraction: float = 0.1, tile_pixels: int = 4_000_000, sky: float = 0.0) -> CoaddStats:
    """Combine ``inputs`` over ``box`` (default: their bounding box), tile by tile of rows, into ``sink``.

    ``sky`` is the sky level of the values (after the inputs' offsets): ``CLIPPED``'s ``clip_fraction`` is of
    the median's signal above it.

    Returns the :class:`CoaddStats`.
    """
    method = str(method).upper()
    if method not in COMBINE_TYPES:
        raise ValueError(f"coadd: unknown combine method {method!r}: use one of {COMBINE_TYPES}")
    if not (clip_sigma > 0):
        raise ValueError(f"coadd: clip_sigma must be positive, not {clip_sigma!r}")
    bx0, by0, nx, ny = box if box is not None else bounding_box(inputs)
    stats = CoaddStats(bx0, by0, nx, ny, len(inputs))
    # rows per tile: the stack of the inputs overlapping a tile stays under tile_pixels values per plane; the
    # weighted mean holds no stack but its two float64 sums per pixel (the room of four float32 values)
    depth = _max_overlap(inputs, by0, ny) if method != "WEIGHTED" else 4
    rows = max(1, min(ny, int(tile_pixels) // max(1, nx * max(1, depth))))
    stats.tile_rows = rows
    for r0 in range(0, ny, rows):
        r1 = min(ny, r0 + rows)
        g0, g1 = by0 + r0, by0 + r1
        members = [i for i in inputs if i.y0 < g1 and i.y0 + i.ny > g0 and i.x0 < bx0 + nx and i.x0 + i.nx > bx0]
        shape = (r1 - r0, nx)
        flags = np.zeros(shape, dtype=np.uint8)
        if method == "WEIGHTED":
            num = np.zeros(shape, dtype=np.float64)
            den = np.zeros(shape, dtype=np.float64)
            for inp in members:
                sl, (v, w, f) = _piece(inp, g0, g1, bx0, nx)
                num[sl] += np.multiply(w, v, dtype=np.float64)  # in float64, as w.astype(float64) * v
                den[sl] += w
                flags[sl] |= f
                del v, w, f
            # the mean in place of the sums (no tile-sized temporaries): 0 where nothing has weight
            covered = den > 0
            np.divide(num, den, out=num, where=covered)
            np.copyto(num, 0.0, where=~covered)
            del covered
            data = num.astype(np.float32)
            del num
            weight = den.astype(np.float32)
            del den
        else:
            n = len(members)
            stats.max_stack = max(stats.max_stack, n)
            values = np.full((n,) + shape, np.nan, dtype=np.float32)
            weights = np.zeros((n,) + shape, dtype=np.float32)
            for k, inp in enumerate(members):
                sl, (v, w, f) = _piece(inp, g0, g1, bx0, nx)
                good = w > 0
                values[k][sl] = np.where(good, v, np.nan)
                weights[k][sl] = np.where(good, w, 0.0)
                flags[sl] |= f
            data, weight, rejected = _robust(values, weights, method, clip_sigma, clip_fraction, sky)
            stats.n_rejected += rejected
        stats.n_covered += int(np.count_nonzero(weight > 0))
        stats.n_flagged += int(np.count_nonzero(flags))
        sink(r0, r1, data, weight, flags)
    return stats


def _max_overlap(inputs: list[CoaddInput], by0: int, ny: int) -> int:
    """The most inputs covering any one row of the box."""
    count = np.zeros(ny + 1, dtype=int)
    for i in inputs:
        a = min(max(i.y0 - by0, 0), ny)
        b = min(max(i.y0 + i.ny - by0, 0), ny)
        count[a] += 1
        count[b] -= 1
    return int(np.max(np.cumsum(count))) if inputs else 0


def _piece(inp: CoaddInput, g0: int, g1: int, bx0: int, nx: int
           ) -> tuple[tuple[slice, slice], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The part of an input inside grid rows ``g0:g1`` and columns ``bx0:bx0+nx``: the tile's slices and arrays."""
    r0 = max(g0, inp.y0)
    r1 = min(g1, inp.y0 + inp.ny)
    c0 = max(bx0, inp.x0)
    c1 = min(bx0 + nx, inp.x0 + inp.nx)
    v, w, f = inp.read(r0 - inp.y0, r1 - inp.y0)
    cols = slice(c0 - inp.x0, c1 - inp.x0)
    v = np.asarray(v[:, cols], dtype=np.float32)
    if inp.offset:
        v = v - np.float32(inp.offset)
    w = np.asarray(w[:, cols], dtype=np.float32)
    f = np.asarray(f[:, cols], dtype=np.uint8)
    bad = ~np.isfinite(v) | ~np.isfinite(w) | (w < 0)
    if bad.any():
        v = np.where(bad, 0.0, v).astype(np.float32)
        w = np.where(bad, 0.0, w).astype(np.float32)
    return (slice(r0 - g0, r1 - g0), slice(c0 - bx0, c1 - bx0)), (v, w, f)


def _robust(values: np.ndarray, weights: np.ndarray, method: str, clip_sigma: float,
            clip_fraction: float, sky: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (no data): weight 0
        med = np.nanmedian(values, axis=0)
    covered = np.isfinite(med)
    if method == "MEDIAN":
        weight = (2.0 / math.pi) * weights.sum(axis=0, dtype=np.float64)
        return np.where(covered, med, 0.0).astype(np.float32), np.where(covered, weight, 0.0).astype(np.float32), 0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(weights > 0, 1.0 / np.sqrt(weights), np.inf)
        tol = clip_sigma * (sigma + clip_fraction * np.abs(med - sky)[None])
        keep = (weights > 0) & (np.abs(values - med[None]) <= tol)
        w = np.where(keep, weights, 0.0).astype(np.float64)
        den = w.sum(axis=0)
        num = np.where(keep, values, 0.0).astype(np.float64)
        num = (num * w).sum(axis=0)
        data = np.where(den > 0, num / den, 0.0)
    rejected = int(np.count_nonzero((weights > 0) & ~keep))
    return data.astype(np.float32), den.astype(np.float32), rejected


# ============================================================================ depth
def aperture_noise(data: np.ndarray, weight: np.ndarray, diameter_pix: float, n: int = 2000, seed: int = 0,
                   mask: np.ndarray | None = None) -> tuple[float, float]:
    """The measured and the weight-predicted noise of sums over circular apertures on the sky.

    Apertures of ``diameter_pix`` are dropped at random where every pixel has weight > 0 (and no pixel of
    ``mask``, e.g. the sources); the sky under each is the median of the frame's background mesh, so the
    measured noise is the robust (MAD) scatter of the sums. The prediction is the median over the apertures
    of ``sqrt(sum(1 / weight))``. Returns ``(measured, predicted)`` (NaN when no aperture fits).
    """
    from awe.image.background import measure_background
    from awe.image.stats import robust_sigma
    r = max(0.5, diameter_pix / 2.0)
    half = int(math.ceil(r))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    inside = (xx ** 2 + yy ** 2) <= r * r
    ny, nx = data.shape
    if ny <= 2 * half + 2 or nx <= 2 * half + 2:
        return float("nan"), float("nan")
    bad = ~(weight > 0) | ~np.isfinite(data)
    if mask is not None:
        bad |= mask
    bkg = measure_background(data, mask=bad, box=64, return_map=True)
    sky = bkg.map if bkg.map is not None else np.full(data.shape, bkg.level)
    rng = np.random.default_rng(seed)
    cy = rng.integers(half, ny - half, size=4 * n)
    cx = rng.integers(half, nx - half, size=4 * n)
    sums: list[float] = []
    predicted: list[float] = []
    for y, x in zip(cy, cx):
        window = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
        if bad[window][inside].any():
            continue
        sums.append(float(np.sum((data[window] - sky[window])[inside])))
        predicted.append(float(np.sqrt(np.sum(1.0 / weight[window][inside]))))
        if len(sums) >= n:
            break
    if len(sums) < 20:
        return float("nan"), float("nan")
    return float(robust_sigma(np.asarray(sums))), float(np.median(predicted))


def limiting_magnitude(noise: float, zeropoint: float, nsigma: float = 5.0) -> float:
    """``-2.5 log10(nsigma x noise) + zeropoint``: the magnitude of a source ``nsigma`` times the aperture noise."""
    if not (noise > 0 and math.isfinite(noise)):
        return float("nan")
    return -2.5 * math.log10(nsigma * noise) + zeropoint
