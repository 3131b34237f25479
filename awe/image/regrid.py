"""Resampling of a frame onto a common tangent-plane grid (spec section 6: RegridTask).

Pure array code: no database, no files.

* :class:`TangentGrid`: a gnomonic (TAN) pixel grid on the sky -- tangent point, pixel scale, size --
  shared by every frame of a field, so regridded frames and their coadd share pixels;
* :func:`footprint`: the sub-image of the grid a frame covers (offset and size);
* :func:`pixel_map`: for every output pixel of a sub-image, the input pixel it comes from and the number
  of input pixels per output pixel (the Jacobian of the mapping). The exact sky mapping (the frame's
  TAN-SIP WCS, iterative inverse) is computed on a coarse grid of nodes every ``step`` output pixels and
  interpolated with bicubic splines (error << 0.01 pixel for the smooth optical distortion);
* :func:`resample`: the kernel interpolation (LANCZOS3 (default), LANCZOS2, BILINEAR, NEAREST; a compiled
  numba loop), flux-conserving (the interpolated surface brightness times the pixel-area ratio, so sums
  of pixel values are conserved), with weights: input pixels of weight 0 never contribute (the kernel
  sum is renormalised over the good taps), an output pixel whose nearest input pixel is bad gets weight 0,
  and flag bits (e.g. saturation) of the input pixels around an output pixel are OR-ed into its flags;
* :func:`regrid`: all of it, in blocks of output rows (memory bounded).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KERNELS", "TangentGrid", "footprint", "pixel_map", "resample", "regrid", "RegridResult"]

#: kernel name -> half-width a (taps -a+1 .. a); 1 bilinear, 0 nearest
KERNELS = {"LANCZOS3": 3, "LANCZOS2": 2, "BILINEAR": 1, "NEAREST": 0}


def _kernel_halfwidth(kernel: str) -> int:
    try:
        return KERNELS[kernel.upper()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown resampling kernel {kernel!r}: use one of {sorted(KERNELS)}") from None


# ============================================================================ the grid
@dataclass(frozen=True)
class TangentGrid:
    """A TAN pixel grid: tangent point ``ra0, dec0`` [deg] at 0-based pixel ``(crpix1, crpix2)``,
    ``scale`` [arcsec/pixel], ``nx`` x ``ny`` pixels, North up, East left."""

    ra0: float
    dec0: float
    scale: float
    nx: int
    ny: int

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"TangentGrid: the pixel scale must be positive, not {self.scale!r}")
        if self.nx < 1 or self.ny < 1:
            raise ValueError(f"TangentGrid: the size must be positive, not {self.nx} x {self.ny}")

    @property
    def crpix(self) -> tuple[float, float]:
        """0-based pixel of the tangent point (the grid's centre)."""
        return (self.nx - 1) / 2.0, (self.ny - 1) / 2.0

    def wcs(self, x0: int = 0, y0: int = 0) -> Any:
        """The ``astropy.wcs.WCS`` of the grid, or of its sub-image starting at ``(x0, y0)``."""
        from astropy.wcs import WCS
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra0, self.dec0]
        cx, cy = self.crpix
        w.wcs.crpix = [cx - x0 + 1.0, cy - y0 + 1.0]
        s = self.scale / 3600.0
        w.wcs.cd = [[-s, 0.0], [0.0, s]]
        w.wcs.radesys = "ICRS"
        w.wcs.equinox = 2000.0
        return w

    def to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky positions [deg] of 0-based grid pixels (exact gnomonic projection)."""
        cx, cy = self.crpix
        s = math.radians(self.scale / 3600.0)
        xi = -(np.asarray(x, dtype=float) - cx) * s
        eta = (np.asarray(y, dtype=float) - cy) * s
        a0, d0 = math.radians(self.ra0), math.radians(self.dec0)
        denom = math.cos(d0) - eta * math.sin(d0)
        ra = a0 + np.arctan2(xi, denom)
        dec = np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, denom))
        return np.degrees(ra) % 360.0, np.degrees(dec)

    def to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based grid pixels of sky positions [deg]."""
        a = np.radians(np.asarray(ra, dtype=float))
        d = np.radians(np.asarray(dec, dtype=float))
        a0, d0 = math.radians(self.ra0), math.radians(self.dec0)
        cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a - a0)
        xi = np.cos(d) * np.sin(a - a0) / cosc
        eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
        s = math.radians(self.scale / 3600.0)
        cx, cy = self.crpix
        return cx - xi / s, cy + eta / s


def footprint(wcs: Any, shape: tuple[int, int], grid: TangentGrid, margin: int = 2) -> tuple[int, int, int, int]:
    """``(x0, y0, nx, ny)``: the sub-image of ``grid`` that a frame of ``shape`` (ny, nx) with ``wcs``
    covers (its border sampled every 32 pixels), ``margin`` pixels added, clipped to the grid.

    Raises ``ValueError`` when the frame does not fall on the grid.
    """
    ny, nx = shape
    ex = np.concatenate([np.linspace(-0.5, nx - 0.5, max(2, nx // 32 + 2)), np.full(max(2, ny // 32 + 2), nx - 0.5),
                         np.linspace(nx - 0.5, -0.5, max(2, nx // 32 + 2)), np.full(max(2, ny // 32 + 2), -0.5)])
    ey = np.concatenate([np.full(max(2, nx // 32 + 2), -0.5), np.linspace(-0.5, ny - 0.5, max(2, ny // 32 + 2)),
                         np.full(max(2, nx // 32 + 2), ny - 0.5), np.linspace(ny - 0.5, -0.5, max(2, ny // 32 + 2))])
    ra, dec = wcs.all_pix2world(ex, ey, 0)
    gx, gy = grid.to_pixel(ra, dec)
    x0 = max(0, int(math.floor(np.min(gx))) - margin)
    y0 = max(0, int(math.floor(np.min(gy))) - margin)
    x1 = min(grid.nx, int(math.ceil(np.max(gx))) + margin + 1)
    y1 = min(grid.ny, int(math.ceil(np.max(gy))) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the frame (centre {float(np.mean(ra)):.4f}, {float(np.mean(dec)):+.4f}) does not fall on "
                         f"the grid (tangent point {grid.ra0:.4f}, {grid.dec0:+.4f}, {grid.nx} x {grid.ny} pixels of "
                         f"{grid.scale}\"): it belongs to another field")
    return x0, y0, x1 - x0, y1 - y0


# ============================================================================ the mapping
class _Mapping:
    """Bicubic splines of the input pixel coordinates over a sub-image of the grid (from coarse nodes)."""

    def __init__(self, wcs: Any, grid: TangentGrid, x0: int, y0: int, nx: int, ny: int, step: int) -> None:
        from scipy.interpolate import RectBivariateSpline
        step = max(2, int(step))
        xs = np.unique(np.concatenate([np.arange(-step, nx + step, step), [nx - 1 + step]])).astype(float)
        ys = np.unique(np.concatenate([np.arange(-step, ny + step, step), [ny - 1 + step]])).astype(float)
        gx, gy = np.meshgrid(xs + x0, ys + y0)
        ra, dec = grid.to_sky(gx.ravel(), gy.ravel())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                px, py = wcs.all_world2pix(ra, dec, 0, tolerance=1e-6, maxiter=50, quiet=True)
            except TypeError:  # a WCS without SIP takes no iteration arguments
                px, py = wcs.wcs_world2pix(ra, dec, 0)
        px = np.asarray(px, dtype=float).reshape(gx.shape)
        py = np.asarray(py, dtype=float).reshape(gx.shape)
        if not (np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
            raise ValueError("the frame's WCS cannot be inverted over its footprint on the grid")
        kx = min(3, len(xs) - 1)
        ky = min(3, len(ys) - 1)
        self.sx = RectBivariateSpline(ys, xs, px, kx=ky, ky=kx)
        self.sy = RectBivariateSpline(ys, xs, py, kx=ky, ky=kx)
        # the Jacobian d(input)/d(output) at the nodes (spline derivatives; the first argument is y), its
        # determinant interpolated linearly in between: it varies on the scale of the optical distortion
        det = np.abs(self.sx(ys, xs, dy=1) * self.sy(ys, xs, dx=1) - self.sx(ys, xs, dx=1) * self.sy(ys, xs, dy=1))
        self.sa = RectBivariateSpline(ys, xs, det, kx=1, ky=1)

    def rows(self, r0: int, r1: int, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input x, y and the input pixels per output pixel for output rows ``r0:r1`` (sub-image coordinates)."""
        ys = np.arange(r0, r1, dtype=float)
        xs = np.arange(nx, dtype=float)
        return self.sx(ys, xs), self.sy(ys, xs), self.sa(ys, xs)


def pixel_map(wcs: Any, grid: TangentGrid, x0: int, y0: int, nx: int, ny: int,
              step: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the sub-image ``(x0, y0, nx, ny)`` of ``grid``: the 0-based input pixel ``(x, y)`` of every
    output pixel and the number of input pixels per output pixel (``area``), each (ny, nx) float64."""
    mapping = _Mapping(wcs, grid, x0, y0, nx, ny, step)
    return mapping.rows(0, ny, nx)


# ============================================================================ the kernels
def _resample_python(data, good, clean, weight, flags, px, py, a, out, outw, outf):  # pragma: no cover - numba's twin
    raise RuntimeError("numba is required for awe.image.regrid (pip install numba)")


try:
    from numba import njit
except ImportError:  # pragma: no cover
    _resample_numba = _resample_python
else:
    @njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "arcp", "reassoc", "nsz"})
    def _resample_numba(data, good, clean, weight, flags, px, py, a, out, outw, outf):  # type: ignore[no-untyped-def]
        ny_in, nx_in = data.shape
        ny, nx = px.shape
        wx = np.empty(8)
        wy = np.empty(8)
        pi = np.pi
        # sin(pi (f - m) / a) = sin(pi f / a) cos(pi m / a) - cos(pi f / a) sin(pi m / a), m = k - a + 1
        cm = np.empty(8)
        sm = np.empty(8)
        for k in range(2 * a):
            cm[k] = np.cos(pi * (k - a + 1) / a) if a > 0 else 1.0
            sm[k] = np.sin(pi * (k - a + 1) / a) if a > 0 else 0.0
        for j in range(ny):
            for i in range(nx):
                x = px[j, i]
                y = py[j, i]
                out[j, i] = 0.0
                outw[j, i] = 0.0
                outf[j, i] = 0
                if not (x >= -0.5 and x < nx_in - 0.5 and y >= -0.5 and y < ny_in - 0.5):
                    continue
                # flags: OR over the (up to) 4 input pixels around the position; weight 0 if the nearest is bad
                ix0 = int(np.floor(x))
                iy0 = int(np.floor(y))
                fl = 0
                wsum = 0.0
                for dj in range(2):
                    yy = iy0 + dj
                    if yy < 0 or yy >= ny_in:
                        continue
                    fy = 1.0 - abs(y - yy)
                    for di in range(2):
                        xx = ix0 + di
                        if xx < 0 or xx >= nx_in:
                            continue
                        fx = 1.0 - abs(x - xx)
                        fl |= flags[yy, xx]
                        wsum += fx * fy * weight[yy, xx]
                outf[j, i] = fl
                nxi = int(np.floor(x + 0.5))
                nyi = int(np.floor(y + 0.5))
                if not good[nyi, nxi]:
                    continue
                if a == 0:
                    out[j, i] = data[nyi, nxi]
                    outw[j, i] = weight[nyi, nxi]
                    continue
                fx0 = x - ix0
                fy0 = y - iy0
                n = 2 * a
                if a == 1:
                    wx[0] = 1.0 - fx0
                    wx[1] = fx0
                    wy[0] = 1.0 - fy0
                    wy[1] = fy0
                else:
                    # sin(pi (f - k)) = (-1)^k sin(pi f): one sine per axis for the first factor
                    sx = np.sin(pi * fx0)
                    sy = np.sin(pi * fy0)
                    sxa = np.sin(pi * fx0 / a)
                    cxa = np.cos(pi * fx0 / a)
                    sya = np.sin(pi * fy0 / a)
                    cya = np.cos(pi * fy0 / a)
                    for k in range(n):
                        sign = 1.0 if (k - a + 1) % 2 == 0 else -1.0
                        dx = fx0 - (k - a + 1)
                        dy = fy0 - (k - a + 1)
                        if abs(dx) < 1e-9:
                            wx[k] = 1.0
                        elif abs(dx) >= a:
                            wx[k] = 0.0
                        else:
                            wx[k] = a * sign * sx * (sxa * cm[k] - cxa * sm[k]) / (pi * pi * dx * dx)
                        if abs(dy) < 1e-9:
                            wy[k] = 1.0
                        elif abs(dy) >= a:
                            wy[k] = 0.0
                        else:
                            wy[k] = a * sign * sy * (sya * cm[k] - cya * sm[k]) / (pi * pi * dy * dy)
                if clean[iy0, ix0]:
                    # every tap inside the frame and good: separable sums, no renormalisation bookkeeping
                    total = 0.0
                    sumx = 0.0
                    sumy = 0.0
                    for k in range(n):
                        sumx += wx[k]
                        sumy += wy[k]
                    for kj in range(n):
                        yy = iy0 + kj - a + 1
                        row = 0.0
                        for ki in range(n):
                            row += wx[ki] * data[yy, ix0 + ki - a + 1]
                        total += wy[kj] * row
                    out[j, i] = total / (sumx * sumy)
                    outw[j, i] = wsum
                    continue
                total = 0.0
                norm = 0.0
                normall = 0.0
                for kj in range(n):
                    yy = iy0 + kj - a + 1
                    for ki in range(n):
                        kw = wx[ki] * wy[kj]
                        normall += kw
                        xx = ix0 + ki - a + 1
                        if yy < 0 or yy >= ny_in or xx < 0 or xx >= nx_in:
                            continue
                        if good[yy, xx]:
                            total += kw * data[yy, xx]
                            norm += kw
                if norm > 0.5 * normall:
                    out[j, i] = total / norm
                    outw[j, i] = wsum
                # else: too few good taps around a bad region: weight 0


def resample(data: np.ndarray, weight: np.ndarray, px: np.ndarray, py: np.ndarray, area: np.ndarray,
             kernel: str = "LANCZOS3", flags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample ``data`` (ADU per input pixel) at the input positions ``px, py``.

    Returns ``(values, weight, flags)`` on the output pixels: ``values`` = the kernel-interpolated surface
    brightness times ``area`` (input pixels per output pixel: flux conserving); ``weight`` = the input weight
    interpolated bilinearly (0 where the nearest input pixel has weight 0, or where too few of the kernel's
    taps are good), not yet scaled (see :func:`regrid`); ``flags`` = the OR of the flag bits of the input
    pixels around each output pixel (uint8). Pixels of weight 0 (or non-finite data) never contribute.
    """
    a = _kernel_halfwidth(kernel)
    return _resample_prepared(_prepare(data, weight, flags, a), px, py, area, a)


def _prepare(data: np.ndarray, weight: np.ndarray, flags: np.ndarray | None, a: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The input as the kernel takes it: values and weights 0 on bad pixels, the good mask, the flags, and
    ``clean``: True at ``(iy, ix)`` when the kernel's whole window (rows and columns ``i - a + 1 .. i + a``) is
    inside the frame and good."""
    data = np.asarray(data, dtype=np.float32)
    weight = np.asarray(weight, dtype=np.float32)
    if data.shape != weight.shape:
        raise ValueError(f"the data {data.shape} and weight {weight.shape} of the frame differ in shape")
    good = (weight > 0) & np.isfinite(data) & np.isfinite(weight)
    wclean = np.where(good, weight, np.float32(0.0)).astype(np.float32)
    dclean = np.where(good, data, np.float32(0.0)).astype(np.float32)
    fl = np.zeros(data.shape, dtype=np.uint8) if flags is None else np.ascontiguousarray(flags, dtype=np.uint8)
    if fl.shape != data.shape:
        raise ValueError(f"the flags {fl.shape} and data {data.shape} of the frame differ in shape")
    return dclean, good, _clean_windows(good, a), wclean, fl


def _clean_windows(good: np.ndarray, a: int) -> np.ndarray:
    """True where the window of rows and columns ``i - a + 1 .. i + a`` lies inside and is all good."""
    ny, nx = good.shape
    clean = np.zeros((ny, nx), dtype=np.bool_)
    if a < 1:
        return clean
    n = 2 * a
    if ny < n or nx < n:
        return clean
    table = np.zeros((ny + 1, nx + 1), dtype=np.int32)
    table[1:, 1:] = np.cumsum(np.cumsum(good, axis=0, dtype=np.int32), axis=1, dtype=np.int32)
    # the window of (iy, ix) starts at iy - a + 1 and has n rows: summed-area table lookups
    counts = table[n:, n:] - table[:-n, n:] - table[n:, :-n] + table[:-n, :-n]
    clean[a - 1:a - 1 + counts.shape[0], a - 1:a - 1 + counts.shape[1]] = counts == n * n
    return clean


def _resample_prepared(prepared: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], px: np.ndarray,
                       py: np.ndarray, area: np.ndarray, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dclean, good, clean, wclean, fl = prepared
    px = np.ascontiguousarray(px, dtype=np.float64)
    py = np.ascontiguousarray(py, dtype=np.float64)
    out = np.empty(px.shape, dtype=np.float32)
    outw = np.empty(px.shape, dtype=np.float32)
    outf = np.empty(px.shape, dtype=np.uint8)
    _resample_numba(dclean, good, clean, wclean, fl, px, py, a, out, outw, outf)
    out *= np.asarray(area, dtype=np.float32)
    return out, outw, outf


# ============================================================================ everything
@dataclass
class RegridResult:
    """A regridded frame: ``data``, ``weight`` (inverse variance of the flux-scaled values for sums over
    apertures, see :func:`regrid`), ``flags`` (uint8) on the sub-image at ``(x0, y0)`` of the grid, and the
    median number of input pixels per output pixel (``area``)."""

    data: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    x0: int
    y0: int
    area: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]


def regrid(data: np.ndarray, weight: np.ndarray, wcs: Any, grid: TangentGrid, kernel: str = "LANCZOS3",
           flags: np.ndarray | None = None, flux_scale: float = 1.0, variance: float = 1.0, step: int = 16,
           block_rows: int = 256, box: tuple[int, int, int, int] | None = None) -> RegridResult:
    """Resample a frame with its weight (and flags) onto the sub-image of ``grid`` it covers.

    ``flux_scale`` multiplies the values (the photometric scaling to the field's zero point); ``variance``
    is the sky variance of an input pixel of weight 1 (ADU^2). The output weight is the inverse variance of
    one output pixel's share of an aperture sum: ``w_in / (variance * flux_scale**2 * area)`` (``area``:
    input pixels per output pixel), so that a sum of N output values over an aperture has variance
    ``N / weight`` for uncorrelated input noise. ``box`` (x0, y0, nx, ny) overrides the footprint.
    """
    if not (flux_scale > 0 and math.isfinite(flux_scale)):
        raise ValueError(f"regrid: flux_scale must be positive and finite, not {flux_scale!r}")
    if not (variance > 0 and math.isfinite(variance)):
        raise ValueError(f"regrid: variance must be positive and finite, not {variance!r}")
    a = _kernel_halfwidth(kernel)
    prepared = _prepare(data, weight, flags, a)
    x0, y0, nx, ny = box if box is not None else footprint(wcs, np.shape(data), grid)
    mapping = _Mapping(wcs, grid, x0, y0, nx, ny, step)
    out = np.zeros((ny, nx), dtype=np.float32)
    outw = np.zeros((ny, nx), dtype=np.float32)
    outf = np.zeros((ny, nx), dtype=np.uint8)
    areas = []
    for r0 in range(0, ny, block_rows):
        r1 = min(ny, r0 + block_rows)
        px, py, area = mapping.rows(r0, r1, nx)
        v, w, f = _resample_prepared(prepared, px, py, area, a)
        areas.append(float(np.median(area)))
        out[r0:r1] = v * np.float32(flux_scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            outw[r0:r1] = np.where(w > 0, w / (variance * flux_scale ** 2 * area), 0.0)
        outf[r0:r1] = f
    return RegridResult(out, outw, outf, x0, y0, float(np.median(areas)) if areas else 1.0)
