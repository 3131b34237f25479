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
* :func:`regrid`: all of it in one compiled pass over the output rows (optionally on several threads,
  ``threads``): per row the splines of the mapping are evaluated from their B-spline coefficients (FITPACK's
  tensor-product evaluation, no arrays of positions), then the kernel and the flux and weight scaling. The
  Lanczos taps are computed from one sine and one cosine per axis (a series, exact to 4e-16), the kernel
  loops compiled for each half-width as a constant; the values are those of :func:`resample` at
  :func:`pixel_map`'s positions to float rounding. The output is made in bands of rows, each from only the
  input rows its kernel reaches (bounded by the span of the y spline's coefficients the band uses), converted
  and cleaned in buffers of that size: the input is never copied whole and need only be sliceable by rows
  (an array, an astropy ``ImageHDU.section``);
* :func:`regrid_stream`: the same bands handed to a ``sink`` as they are made (e.g. an
  :class:`awe.image.fitsbands.ImageBandWriter`), so that neither the input nor the output is held whole.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["KERNELS", "TangentGrid", "footprint", "pixel_map", "resample", "regrid", "regrid_stream", "RegridResult",
           "RegridBox"]

#: kernel name -> half-width a (taps -a+1 .. a); 1 bilinear, 0 nearest
KERNELS = {"LANCZOS3": 3, "LANCZOS2": 2, "BILINEAR": 1, "NEAREST": 0}
#: output pixels per band of :func:`regrid` (the input rows of one band are cleaned at a time)
_BAND_PIXELS = 1 << 20
#: input pixels read at a time into a band's buffers
_READ_PIXELS = 1 << 16


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

    def tables(self, nx: int, ny: int) -> tuple[np.ndarray, ...]:
        """The three splines (x, y, area) as the compiled loop evaluates them on the ``ny`` x ``nx`` output pixels:
        per spline its coefficients (rows x columns), and the first index and the values of the B-splines that
        are non-zero at each output row and at each output column (the tensor-product evaluation FITPACK does)."""
        rows = np.arange(ny, dtype=float)
        cols = np.arange(nx, dtype=float)
        out: list[np.ndarray] = []
        for spline in (self.sx, self.sy, self.sa):
            tu, tv, c = spline.tck
            ku, kv = spline.degrees
            out.append(np.ascontiguousarray(np.asarray(c, dtype=float).reshape(len(tu) - ku - 1, len(tv) - kv - 1)))
            out.extend(_bspline_basis(tu, ku, rows))
            out.extend(_bspline_basis(tv, kv, cols))
        return tuple(out)


def _bspline_basis(t: np.ndarray, k: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ``x``: the index of the first of the ``k + 1`` B-splines of degree ``k`` on knots ``t`` that are
    non-zero there and their values (FITPACK's fpbspl; ``x`` clamped to the knots' span, as fpbisp does)."""
    t = np.asarray(t, dtype=float)
    nb = len(t) - k - 1
    x = np.clip(np.asarray(x, dtype=float), t[k], t[nb])
    interval = np.clip(np.searchsorted(t, x, side="right") - 1, k, nb - 1)
    h = np.zeros((len(x), k + 1))
    h[:, 0] = 1.0
    for j in range(1, k + 1):
        hh = h[:, :j].copy()
        h[:, 0] = 0.0
        for n in range(1, j + 1):
            right = t[interval + n]
            left = t[interval + n - j]
            f = hh[:, n - 1] / (right - left)
            h[:, n - 1] += f * (right - x)
            h[:, n] = f * (x - left)
    return np.ascontiguousarray(interval - k, dtype=np.int64), np.ascontiguousarray(h)


def pixel_map(wcs: Any, grid: TangentGrid, x0: int, y0: int, nx: int, ny: int,
              step: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the sub-image ``(x0, y0, nx, ny)`` of ``grid``: the 0-based input pixel ``(x, y)`` of every
    output pixel and the number of input pixels per output pixel (``area``), each (ny, nx) float64."""
    mapping = _Mapping(wcs, grid, x0, y0, nx, ny, step)
    return mapping.rows(0, ny, nx)


# ============================================================================ the kernels
def _no_numba(*args: Any) -> Any:  # pragma: no cover - without numba
    raise RuntimeError("numba is required for awe.image.regrid (pip install numba)")


_FAST = {"contract", "arcp", "reassoc", "nsz"}  # no nnan/ninf: the loops test for non-finite values
#: the Taylor coefficients of sin(t) / t and cos(t) in t^2, highest power first (Horner's scheme)
_SIN_SERIES = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(9, -1, -1))
_COS_SERIES = tuple((-1) ** k / math.factorial(2 * k) for k in range(10, -1, -1))

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover
    _prepare_numba = _resample_numba = _regrid_serial = _regrid_parallel = _no_numba
else:
    @njit(cache=True, nogil=True)
    def _prepare_numba(data, weight, a, dclean, wclean, good, clean):
        """Values and weights 0 on bad pixels (weight <= 0, non-finite), the good mask, and ``clean``: True at
        ``(iy, ix)`` when rows and columns ``i - a + 1 .. i + a`` are inside the frame and all good (running
        counts of good pixels along the rows, then of such rows down the columns). ``dclean`` and ``wclean`` may
        be ``data`` and ``weight`` themselves (cleaned in place)."""
        ny, nx = data.shape
        n = 2 * a
        run_down = np.zeros(nx, dtype=np.int64)
        for j in range(ny):
            run = 0
            for i in range(nx):
                d = data[j, i]
                w = weight[j, i]
                g = w > 0 and np.isfinite(d) and np.isfinite(w)
                good[j, i] = g
                dclean[j, i] = d if g else np.float32(0.0)
                wclean[j, i] = w if g else np.float32(0.0)
                clean[j, i] = False
            if a < 1:
                continue
            for i in range(nx):
                run = run + 1 if good[j, i] else 0
                # the window of columns i - 2a + 1 .. i (centred on ix = i - a) is all good
                row_ok = run >= n
                ix = i - a
                if ix >= 0:
                    run_down[ix] = run_down[ix] + 1 if row_ok else 0
                    if run_down[ix] >= n:  # rows j - 2a + 1 .. j: the window of iy = j - a
                        clean[j - a, ix] = True
            # the last a columns have no full window: they are never clean
            for ix in range(max(0, nx - a), nx):
                run_down[ix] = 0

    @njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
    def _sincos(t):
        """sin and cos of 0 <= t <= pi / 2 (Taylor series to t^19 and t^20: error < 4e-16), cheaper than libm's."""
        u = t * t
        s = _SIN_SERIES[0]
        for coefficient in _SIN_SERIES[1:]:
            s = s * u + coefficient
        c = _COS_SERIES[0]
        for coefficient in _COS_SERIES[1:]:
            c = c * u + coefficient
        return t * s, c

    @njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
    def _lanczos_taps(f, a, n, cm, sm, w):
        """The ``n`` Lanczos taps of fraction ``f`` along one axis, up to a common positive factor (the
        normalisation removes it), into ``w``: at d = f - m, m = k - a + 1, L(d) = a sin(pi d) sin(pi d / a) /
        (pi d)^2 with sin(pi (f - m)) = (-1)^m sin(pi f) (common to all taps) and
        sin(pi (f - m) / a) = sin(pi f / a) cos(pi m / a) - cos(pi f / a) sin(pi m / a)."""
        if f < 1e-9:
            for k in range(n):
                w[k] = 0.0
            w[a - 1] = 1.0
        else:
            s, c = _sincos(np.pi * f / a)
            for k in range(n):
                d = f - (k - a + 1)
                v = (s * cm[k] - c * sm[k]) / (d * d)
                w[k] = -v if (k - a + 1) % 2 != 0 else v

    @njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST, inline="always")
    def _kernel_row_impl(data, good, clean, weight, flags, row0, ny_in, xs, ys, a, cm, sm, vrow, wrow, frow):
        """One output row at input positions ``xs, ys``: the value per input pixel, the bilinear weight and the
        flags (inlined with a constant ``a`` by :func:`_kernel_row`: the tap loops unrolled). The arrays hold
        rows ``row0 ..`` of a frame of ``ny_in`` rows: every row the taps of ``ys`` reach (:func:`_regrid_bands`)."""
        nx_in = data.shape[1]
        n = 2 * a
        wx = np.empty(8)
        wy = np.empty(8)
        for i in range(xs.shape[0]):
            x = xs[i]
            y = ys[i]
            vrow[i] = 0.0
            wrow[i] = 0.0
            frow[i] = 0
            if not (x >= -0.5 and x < nx_in - 0.5 and y >= -0.5 and y < ny_in - 0.5):
                continue
            # flags: OR over the (up to) 4 input pixels around the position; weight 0 if the nearest is bad
            ix0 = int(np.floor(x))
            iy0 = int(np.floor(y))
            ry = iy0 - row0  # the row of iy0 in the arrays
            fl = 0
            wsum = 0.0
            if iy0 >= 0 and ix0 >= 0 and clean[ry, ix0]:  # the 4 pixels are inside (and good): no bounds tests
                fya = 1.0 - abs(y - iy0)
                fyb = 1.0 - abs(y - (iy0 + 1))
                fxa = 1.0 - abs(x - ix0)
                fxb = 1.0 - abs(x - (ix0 + 1))
                fl = flags[ry, ix0] | flags[ry, ix0 + 1] | flags[ry + 1, ix0] | flags[ry + 1, ix0 + 1]
                wsum = fxa * fya * weight[ry, ix0]
                wsum += fxb * fya * weight[ry, ix0 + 1]
                wsum += fxa * fyb * weight[ry + 1, ix0]
                wsum += fxb * fyb * weight[ry + 1, ix0 + 1]
            else:
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
                        fl |= flags[yy - row0, xx]
                        wsum += fx * fy * weight[yy - row0, xx]
            frow[i] = fl
            nxi = int(np.floor(x + 0.5))
            nyi = int(np.floor(y + 0.5)) - row0
            if not good[nyi, nxi]:
                continue
            if a == 0:
                vrow[i] = data[nyi, nxi]
                wrow[i] = weight[nyi, nxi]
                continue
            fx0 = x - ix0
            fy0 = y - iy0
            if a == 1:
                wx[0] = 1.0 - fx0
                wx[1] = fx0
                wy[0] = 1.0 - fy0
                wy[1] = fy0
            else:
                _lanczos_taps(fx0, a, n, cm, sm, wx)
                _lanczos_taps(fy0, a, n, cm, sm, wy)
            sumx = 0.0
            sumy = 0.0
            for k in range(n):
                sumx += wx[k]
                sumy += wy[k]
            if clean[ry, ix0]:
                # every tap inside the frame and good: separable sums, no renormalisation bookkeeping
                total = 0.0
                for kj in range(n):
                    yy = ry + kj - a + 1
                    row = 0.0
                    for ki in range(n):
                        row += wx[ki] * data[yy, ix0 + ki - a + 1]
                    total += wy[kj] * row
                vrow[i] = total / (sumx * sumy)
                wrow[i] = wsum
                continue
            total = 0.0
            norm = 0.0
            for kj in range(n):
                yy = iy0 + kj - a + 1
                if yy < 0 or yy >= ny_in:
                    continue
                for ki in range(n):
                    xx = ix0 + ki - a + 1
                    if xx < 0 or xx >= nx_in:
                        continue
                    if good[yy - row0, xx]:
                        kw = wx[ki] * wy[kj]
                        total += kw * data[yy - row0, xx]
                        norm += kw
            if norm > 0.5 * (sumx * sumy):
                vrow[i] = total / norm
                wrow[i] = wsum
            # else: too few good taps around a bad region: weight 0

    @njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST)
    def _kernel_row(data, good, clean, weight, flags, row0, ny_in, xs, ys, a, cm, sm, vrow, wrow, frow):
        """:func:`_kernel_row_impl` compiled for each kernel half-width as a constant."""
        if a == 3:
            _kernel_row_impl(data, good, clean, weight, flags, row0, ny_in, xs, ys, 3, cm, sm, vrow, wrow, frow)
        elif a == 2:
            _kernel_row_impl(data, good, clean, weight, flags, row0, ny_in, xs, ys, 2, cm, sm, vrow, wrow, frow)
        elif a == 1:
            _kernel_row_impl(data, good, clean, weight, flags, row0, ny_in, xs, ys, 1, cm, sm, vrow, wrow, frow)
        elif a == 0:
            _kernel_row_impl(data, good, clean, weight, flags, row0, ny_in, xs, ys, 0, cm, sm, vrow, wrow, frow)
        else:
            _kernel_row_impl(data, good, clean, weight, flags, row0, ny_in, xs, ys, a, cm, sm, vrow, wrow, frow)

    @njit(cache=True, nogil=True)
    def _cosines(a):
        """cos(pi m / a) and sin(pi m / a) of the taps m = k - a + 1."""
        cm = np.ones(8)
        sm = np.zeros(8)
        for k in range(2 * a):
            if a > 0:
                cm[k] = np.cos(np.pi * (k - a + 1) / a)
                sm[k] = np.sin(np.pi * (k - a + 1) / a)
        return cm, sm

    @njit(cache=True, nogil=True)
    def _resample_numba(data, good, clean, weight, flags, px, py, a, out, outw, outf):
        """The kernel at given input positions (:func:`resample`)."""
        cm, sm = _cosines(a)
        for j in range(px.shape[0]):
            _kernel_row(data, good, clean, weight, flags, 0, data.shape[0], px[j], py[j], a, cm, sm, out[j], outw[j],
                        outf[j])

    @njit(cache=True, nogil=True)
    def _spline_row(coef, rfirst, rvalues, cfirst, cvalues, j, dest):
        """A tensor-product spline (:meth:`_Mapping.tables`) on output row ``j``: its coefficients contracted
        with the row's B-splines, then with each column's."""
        row = np.zeros(coef.shape[1])
        for m in range(rvalues.shape[1]):
            b = rvalues[j, m]
            for k in range(coef.shape[1]):
                row[k] += b * coef[rfirst[j] + m, k]
        for i in range(dest.shape[0]):
            v = 0.0
            for m in range(cvalues.shape[1]):
                v += cvalues[i, m] * row[cfirst[i] + m]
            dest[i] = v

    @njit(cache=True, nogil=True, error_model="numpy")
    def _regrid_row(j, jj, data, good, clean, weight, flags, row0, ny_in, a, cm, sm, tables, fscale, vfs,
                    out, outw, outf):
        """Output row ``j`` into row ``jj`` of the band ``out``: the mapping (the three splines), the kernel, the
        flux and weight scaling."""
        nx = out.shape[1]
        xs = np.empty(nx)
        ys = np.empty(nx)
        area = np.empty(nx)
        _spline_row(tables[0], tables[1], tables[2], tables[3], tables[4], j, xs)
        _spline_row(tables[5], tables[6], tables[7], tables[8], tables[9], j, ys)
        _spline_row(tables[10], tables[11], tables[12], tables[13], tables[14], j, area)
        vrow = out[jj]
        wrow = outw[jj]
        _kernel_row(data, good, clean, weight, flags, row0, ny_in, xs, ys, a, cm, sm, vrow, wrow, outf[jj])
        for i in range(nx):
            # in float32 as the values are stored: per input pixel, times the area, times the flux scale
            vrow[i] = np.float32(vrow[i] * np.float32(area[i])) * fscale
            w = wrow[i]
            wrow[i] = w / (vfs * area[i]) if w > 0 else 0.0

    @njit(cache=True, nogil=True)
    def _regrid_serial(data, good, clean, weight, flags, row0, ny_in, a, tables, fscale, vfs, j0, out, outw, outf):
        """Output rows ``j0 ..`` into the band ``out, outw, outf`` from the input rows ``row0 ..`` in the arrays."""
        cm, sm = _cosines(a)
        for jj in range(out.shape[0]):
            _regrid_row(j0 + jj, jj, data, good, clean, weight, flags, row0, ny_in, a, cm, sm, tables, fscale, vfs,
                        out, outw, outf)

    @njit(cache=True, nogil=True, parallel=True)
    def _regrid_parallel(data, good, clean, weight, flags, row0, ny_in, a, tables, fscale, vfs, j0, out, outw, outf):
        cm, sm = _cosines(a)
        for jj in prange(out.shape[0]):
            _regrid_row(j0 + jj, jj, data, good, clean, weight, flags, row0, ny_in, a, cm, sm, tables, fscale, vfs,
                        out, outw, outf)

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
    dclean, good, clean, wclean, fl = _prepare(data, weight, flags, a)
    px = np.ascontiguousarray(px, dtype=np.float64)
    py = np.ascontiguousarray(py, dtype=np.float64)
    out = np.empty(px.shape, dtype=np.float32)
    outw = np.empty(px.shape, dtype=np.float32)
    outf = np.empty(px.shape, dtype=np.uint8)
    _resample_numba(dclean, good, clean, wclean, fl, px, py, a, out, outw, outf)
    out *= np.asarray(area, dtype=np.float32)
    return out, outw, outf


def _prepare(data: np.ndarray, weight: np.ndarray, flags: np.ndarray | None, a: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The input as the kernel takes it: values and weights 0 on bad pixels, the good mask, the flags, and
    ``clean``: True at ``(iy, ix)`` when the kernel's whole window (rows and columns ``i - a + 1 .. i + a``) is
    inside the frame and good."""
    given_data, given_weight = data, weight
    data = np.ascontiguousarray(data, dtype=np.float32)
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if data.ndim != 2 or data.shape != weight.shape:
        raise ValueError(f"the data {data.shape} and weight {weight.shape} of the frame differ in shape")
    fl = np.zeros(data.shape, dtype=np.uint8) if flags is None else np.ascontiguousarray(flags, dtype=np.uint8)
    if fl.shape != data.shape:
        raise ValueError(f"the flags {fl.shape} and data {data.shape} of the frame differ in shape")
    # a conversion made here (e.g. of a big-endian FITS array) is cleaned in place: no second copy
    dclean = data if not np.may_share_memory(data, given_data) else np.empty(data.shape, dtype=np.float32)
    wclean = weight if not np.may_share_memory(weight, given_weight) else np.empty(data.shape, dtype=np.float32)
    good = np.empty(data.shape, dtype=np.bool_)
    clean = np.empty(data.shape, dtype=np.bool_)
    _prepare_numba(data, weight, a, dclean, wclean, good, clean)
    return dclean, good, clean, wclean, fl


class _Window:
    """The input rows of one band as the kernel takes them (:func:`_prepare`), in buffers kept from band to band
    (grown when a band needs more rows): the values and weights converted to float32 and cleaned in place."""

    def __init__(self, nx: int, a: int, flagged: bool) -> None:
        self.nx, self.a, self.flagged, self.rows = nx, a, flagged, 0
        self.buffers: tuple[np.ndarray, ...] = ()

    def prepare(self, data: Any, weight: Any, flags: Any, r0: int, r1: int) -> tuple[np.ndarray, ...]:
        n = r1 - r0
        if n > self.rows:
            self.buffers = ()  # the old ones go first
            shape = (n, self.nx)
            self.buffers = (np.empty(shape, np.float32), np.empty(shape, np.bool_), np.empty(shape, np.bool_),
                            np.empty(shape, np.float32),
                            np.empty(shape, np.uint8) if self.flagged else np.zeros(shape, np.uint8))
            self.rows = n
        dclean, good, clean, wclean, fl = (b[:n] for b in self.buffers)
        # the casts of np.asarray(..., dtype): float64 rounded to float32, big-endian swapped; read in pieces of
        # rows (a file's .section reads each piece into a temporary array)
        step = max(1, _READ_PIXELS // max(1, self.nx))
        for k in range(0, n, step):
            rows = slice(r0 + k, min(r1, r0 + k + step))
            np.copyto(dclean[k:k + step], data[rows], casting="unsafe")
            np.copyto(wclean[k:k + step], weight[rows], casting="unsafe")
            if self.flagged:
                np.copyto(fl[k:k + step], flags[rows], casting="unsafe")
        _prepare_numba(dclean, wclean, self.a, dclean, wclean, good, clean)
        return dclean, good, clean, wclean, fl


def _threads(threads: int) -> int:
    """The threads to use: ``threads`` (0: all of numba's), at most numba's (``NUMBA_NUM_THREADS``)."""
    if threads == 1:
        return 1
    if threads < 0:
        raise ValueError(f"regrid: threads must be 0 (all cores) or positive, not {threads!r}")
    import numba
    most = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))
    return most if threads == 0 else min(int(threads), most)


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
        return self.data.shape


Sink = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], None]


def regrid(data: Any, weight: Any, wcs: Any, grid: TangentGrid, kernel: str = "LANCZOS3",
           flags: Any = None, flux_scale: float = 1.0, variance: float = 1.0, step: int = 16,
           box: tuple[int, int, int, int] | None = None, threads: int = 1,
           band_pixels: int = _BAND_PIXELS) -> RegridResult:
    """Resample a frame with its weight (and flags) onto the sub-image of ``grid`` it covers.

    ``flux_scale`` multiplies the values (the photometric scaling to the field's zero point); ``variance``
    is the sky variance of an input pixel of weight 1 (ADU^2). The output weight is the inverse variance of
    one output pixel's share of an aperture sum: ``w_in / (variance * flux_scale**2 * area)`` (``area``:
    input pixels per output pixel), so that a sum of N output values over an aperture has variance
    ``N / weight`` for uncorrelated input noise. ``box`` (x0, y0, nx, ny) overrides the footprint.
    ``threads``: output rows shared among this many threads (0: all cores; the result does not depend on it).

    One compiled pass over the output: per pixel the mapping (the splines through the coarse nodes), the
    kernel, the flux and weight scaling -- no intermediate arrays of positions. The output is made in bands
    of about ``band_pixels`` pixels, each from only the input rows its kernel reaches (cleaned in a copy of
    those rows): ``data``, ``weight`` and ``flags`` need only be sliceable by rows (arrays, memory maps, an
    astropy ``ImageHDU.section``), and the input is never copied whole. See :func:`regrid_stream` to have
    the bands written out instead of kept.
    """
    x0, y0, nx, ny = box if box is not None else footprint(wcs, _shape(data), grid)
    out = np.empty((ny, nx), dtype=np.float32)
    outw = np.empty((ny, nx), dtype=np.float32)
    outf = np.empty((ny, nx), dtype=np.uint8)
    area = _regrid_bands(data, weight, wcs, grid, kernel, flags, flux_scale, variance, step, (x0, y0, nx, ny),
                         threads, band_pixels, lambda j0, j1: (out[j0:j1], outw[j0:j1], outf[j0:j1]), None)
    return RegridResult(out, outw, outf, x0, y0, area)


@dataclass(frozen=True)
class RegridBox:
    """Where :func:`regrid_stream` put a frame: the sub-image ``(x0, y0, nx, ny)`` of the grid, and the median
    number of input pixels per output pixel (``area``)."""

    x0: int
    y0: int
    nx: int
    ny: int
    area: float


def regrid_stream(data: Any, weight: Any, wcs: Any, grid: TangentGrid, sink: Sink, kernel: str = "LANCZOS3",
                  flags: Any = None, flux_scale: float = 1.0, variance: float = 1.0, step: int = 16,
                  box: tuple[int, int, int, int] | None = None, threads: int = 1,
                  band_pixels: int = _BAND_PIXELS) -> RegridBox:
    """:func:`regrid` (the same values) band by band into ``sink(r0, r1, data, weight, flags)``, called in order
    for output rows ``r0:r1`` of the sub-image (the arrays are reused for the next band: copy or write them
    out). Never more than a band of the output, and the input rows it needs, in memory."""
    x0, y0, nx, ny = box if box is not None else footprint(wcs, _shape(data), grid)
    rows = max(1, min(ny, int(band_pixels) // max(1, nx)))
    buffers: list[np.ndarray] = []

    def bands(j0: int, j1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not buffers:  # made with the first band (after the mapping's temporaries are gone)
            buffers.extend((np.empty((rows, nx), dtype=np.float32), np.empty((rows, nx), dtype=np.float32),
                            np.empty((rows, nx), dtype=np.uint8)))
        out, outw, outf = buffers
        return out[:j1 - j0], outw[:j1 - j0], outf[:j1 - j0]
    area = _regrid_bands(data, weight, wcs, grid, kernel, flags, flux_scale, variance, step, (x0, y0, nx, ny),
                         threads, band_pixels, bands, sink)
    return RegridBox(x0, y0, nx, ny, area)


def _shape(data: Any) -> tuple[int, int]:
    shape = tuple(int(n) for n in np.shape(data))
    if len(shape) != 2:
        raise ValueError(f"regrid: the frame must be 2-d, not of shape {shape}")
    return shape[0], shape[1]


def _regrid_bands(data: Any, weight: Any, wcs: Any, grid: TangentGrid, kernel: str, flags: Any, flux_scale: float,
                  variance: float, step: int, box: tuple[int, int, int, int], threads: int, band_pixels: int,
                  bands: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]], sink: Sink | None) -> float:
    """The output in bands of rows: ``bands(j0, j1)`` gives the arrays of rows ``j0:j1`` to fill, then
    ``sink`` (if any) gets them. Returns the median number of input pixels per output pixel."""
    if not (flux_scale > 0 and math.isfinite(flux_scale)):
        raise ValueError(f"regrid: flux_scale must be positive and finite, not {flux_scale!r}")
    if not (variance > 0 and math.isfinite(variance)):
        raise ValueError(f"regrid: variance must be positive and finite, not {variance!r}")
    a = _kernel_halfwidth(kernel)
    n_threads = _threads(int(threads))
    ny_in, nx_in = _shape(data)
    if tuple(np.shape(weight)) != (ny_in, nx_in):
        raise ValueError(f"the data {(ny_in, nx_in)} and weight {tuple(np.shape(weight))} of the frame differ in "
                         "shape")
    if flags is not None and tuple(np.shape(flags)) != (ny_in, nx_in):
        raise ValueError(f"the flags {tuple(np.shape(flags))} and data {(ny_in, nx_in)} of the frame differ in shape")
    x0, y0, nx, ny = box
    mapping = _Mapping(wcs, grid, x0, y0, nx, ny, step)
    tables = mapping.tables(nx, ny)
    # the median number of input pixels per output pixel, from every 8th row
    area = mapping.sa(np.arange(0, ny, 8, dtype=float), np.arange(nx, dtype=float))
    median_area = float(np.median(area)) if area.size else 1.0
    del area
    # the input y of a band's output rows lies within the span of the y spline's coefficients those rows use
    # (B-splines are non-negative and sum to 1): the band needs only those input rows
    ycoef, yfirst, ydegree = tables[5], tables[6], tables[7].shape[1] - 1
    rows = max(1, min(ny, int(band_pixels) // max(1, nx)))
    reach = max(a, 1) + 1  # the taps of a position y: rows floor(y) - a + 1 .. floor(y) + a (and the 2 bilinear ones)
    fscale = np.float32(flux_scale)
    vfs = float(variance * flux_scale ** 2)
    window = _Window(nx_in, a, flags is not None)
    for j0 in range(0, ny, rows):
        j1 = min(ny, j0 + rows)
        used = ycoef[int(yfirst[j0]):int(yfirst[j1 - 1]) + ydegree + 1]
        ylo, yhi = float(np.min(used)), float(np.max(used))
        # the rows the band reads (those of its pixels on the frame: clipped to it), and a rows more each side:
        # ``clean`` of the rows read is then that of the whole frame
        r0 = min(max(0, int(math.floor(ylo)) - reach - a), ny_in - 1)
        r1 = max(min(ny_in, int(math.floor(yhi)) + reach + a + 1), r0 + 1)
        prepared = window.prepare(data, weight, flags, r0, r1)
        out, outw, outf = bands(j0, j1)
        args = (*prepared, r0, ny_in, a, tables, fscale, vfs, j0, out, outw, outf)
        if n_threads > 1:
            import numba
            before = numba.get_num_threads()
            numba.set_num_threads(n_threads)
            try:
                _regrid_parallel(*args)
            finally:
                numba.set_num_threads(before)
        else:
            _regrid_serial(*args)
        del prepared, args
        if sink is not None:
            sink(j0, j1, out, outw, outf)
    return median_area
