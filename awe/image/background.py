"""Sky background level and noise, and seeing, of a science frame.

Pure functions on arrays (no files, no database):

- :func:`measure_background` -- SExtractor-style mesh background with
  ``sep.Background``: global level and rms, optionally the smooth maps;
- :func:`measure_seeing` -- the PSF FWHM and half-light radius from
  isolated, unsaturated point sources, each fitted with a pixel-integrated
  circular Moffat profile.

Coordinates are ``(x, y)`` = (column, row), the centre of pixel ``[0, 0]``
at ``(0, 0)``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import sep
from scipy.spatial import cKDTree

__all__ = [
    "BackgroundResult",
    "SeeingResult",
    "TooFewStarsError",
    "measure_background",
    "measure_seeing",
    "sky_model",
    "moffat_alpha",
    "half_sample_mode",
    "stellar_locus",
]

log = logging.getLogger(__name__)


class TooFewStarsError(LookupError):
    """Not enough isolated, unsaturated point sources to measure the seeing."""


def _prepare_image(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 2-D image; return a C-contiguous native float64 copy and a bool mask.

    Non-finite pixels are added to the mask and set to 0 in the copy so that
    C code (sep, astroscrappy) never sees NaN.
    """
    data = np.asarray(image)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got an array of shape {data.shape}")
    if min(data.shape) < 4:
        raise ValueError(f"image of shape {data.shape} is too small to analyse (need >= 4 x 4 pixels)")
    data = np.ascontiguousarray(data, dtype=np.float64)
    bad = ~np.isfinite(data)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {data.shape}")
        bad |= mask
    if bad.any():
        data = np.where(bad, 0.0, data)
    return data, np.ascontiguousarray(bad)


@dataclass(frozen=True)
class BackgroundResult:
    """Sky background of a frame.

    Attributes
    ----------
    level : float
        Global background level (ADU): SExtractor's median of the mesh
        background estimates.
    rms : float
        Global background noise (ADU), same estimator.
    map : numpy.ndarray or None
        Smooth background map, if requested.
    rms_map : numpy.ndarray or None
        Smooth noise map, if requested.
    """

    level: float
    rms: float
    map: np.ndarray | None = None
    rms_map: np.ndarray | None = None


def _sep_background(data: np.ndarray, bad: np.ndarray, box: int, filter_size: int) -> sep.Background:
    if box < 4:
        raise ValueError(f"background box of {box} pixels is too small; use >= 4 (64 is typical)")
    ny, nx = data.shape
    bw, bh = min(box, nx), min(box, ny)
    return sep.Background(data, mask=bad if bad.any() else None, bw=bw, bh=bh,
                          fw=filter_size, fh=filter_size)


def sky_model(image: np.ndarray, mask: np.ndarray | None = None, box: int = 64) -> sep.Background:
    """The sky model of a frame with ``mask`` (``True``: ignored) left out: SExtractor's mesh of ``box``
    pixels, median-filtered over 3 meshes (what :func:`measure_seeing` and
    :func:`awe.image.cosmics.find_cosmics` make of it when not given one)."""
    data, bad = _prepare_image(image, mask)
    return _sep_background(data, bad, box, 3)


def measure_background(image: np.ndarray, mask: np.ndarray | None = None, box: int = 64,
                       filter_size: int = 3, return_map: bool = False) -> BackgroundResult:
    """Measure the sky background level and noise with a SExtractor mesh.

    The image is cut into ``box`` x ``box`` meshes; in each the sky is the
    sigma-clipped mode estimate (``2.5 median - 1.5 mean``, or the median when
    the mesh is crowded) and the rms is the clipped standard deviation; the
    mesh grid is median-filtered over ``filter_size`` meshes and
    bicubic-spline interpolated to give the maps.

    Parameters
    ----------
    image : numpy.ndarray
        2-D frame in ADU. Non-finite pixels are ignored.
    mask : numpy.ndarray, optional
        ``True`` where a pixel must be ignored (bad pixels, known objects).
    box : int
        Mesh size in pixels (clipped to the image size).
    filter_size : int
        Median filter size, in meshes, applied to the mesh grid.
    return_map : bool
        Also return the background and rms maps (full-size float arrays).

    Returns
    -------
    BackgroundResult
    """
    data, bad = _prepare_image(image, mask)
    bkg = _sep_background(data, bad, box, filter_size)
    result = BackgroundResult(level=float(bkg.globalback), rms=float(bkg.globalrms),
                              map=bkg.back() if return_map else None,
                              rms_map=bkg.rms() if return_map else None)
    log.debug("background level %.3f rms %.3f (box %d)", result.level, result.rms, box)
    return result


@dataclass(frozen=True)
class SeeingResult:
    """Seeing of a frame, from fitted point sources.

    Attributes
    ----------
    fwhm_arcsec : float
        Median FWHM of the selected stars (arcsec).
    fwhm_pixels : float
        The same in pixels.
    psf_radius : float
        Median half-light radius of the selected stars (arcsec): the radius
        of the circle holding half of the flux, SExtractor's FLUX_RADIUS
        (fraction 0.5) computed on the fitted Moffat profile. This is what
        awe stores as Astro-WISE's ``psf_radius``; for a Moffat profile with
        ``beta`` = 3 it is 0.63 FWHM, for a Gaussian 0.5 FWHM.
    beta : float
        Median Moffat ``beta`` of the selected stars (the fixed value when
        ``beta`` was not fitted).
    fwhm_scatter : float
        Robust scatter (MAD-based sigma) of the stars' FWHM, in pixels.
    n_stars : int
        Number of stars used (on the stellar locus).
    fwhm_error : float
        Standard error of ``fwhm_arcsec`` (arcsec), bootstrapped over the
        fitted sources: it includes the uncertainty of which group of fits is
        the stellar locus (``inf`` when almost no resample finds one, NaN when
        not estimated).
    n_fitted : int
        Sources fitted successfully, among which the stellar locus was chosen.
    ambiguous : bool
        A group of sources narrower than the locus exists but too small to be
        the locus itself: the stars may have been taken for galaxies.
    """

    fwhm_arcsec: float
    fwhm_pixels: float
    psf_radius: float
    beta: float
    fwhm_scatter: float
    n_stars: int
    fwhm_error: float = float("nan")
    n_fitted: int = 0
    ambiguous: bool = False

    @property
    def relative_error(self) -> float:
        """``fwhm_error / fwhm_arcsec``."""
        return self.fwhm_error / self.fwhm_arcsec if self.fwhm_arcsec > 0 else float("inf")


def moffat_alpha(fwhm: float | np.ndarray, beta: float | np.ndarray) -> float | np.ndarray:
    """Moffat core radius ``alpha`` for a given FWHM and ``beta``."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _moffat_half_light_radius(fwhm: np.ndarray, beta: np.ndarray) -> np.ndarray:
    # Enclosed flux of a Moffat: 1 - (1 + r^2/alpha^2)^(1 - beta).
    return moffat_alpha(fwhm, beta) * np.sqrt(2.0 ** (1.0 / (beta - 1.0)) - 1.0)


def half_sample_mode(values: np.ndarray) -> float:
    """Robust mode of a 1-D sample (Bickel's half-sample mode).

    Repeatedly keeps the half of the sorted sample with the smallest range
    and returns the mean of the last two or three values.
    """
    x = np.sort(np.asarray(values, dtype=float).ravel())
    if x.size == 0:
        raise ValueError("half_sample_mode of an empty sample")
    while x.size > 3:
        h = (x.size + 1) // 2
        widths = x[h - 1:] - x[: x.size - h + 1]
        i = int(np.argmin(widths))
        x = x[i:i + h]
    if x.size == 3:
        # Keep the closer pair.
        x = x[:2] if x[1] - x[0] < x[2] - x[1] else (x[1:] if x[1] - x[0] > x[2] - x[1] else x)
    return float(x.mean())


def stellar_locus(values: np.ndarray, window: float = 0.1) -> float:
    """The narrowest well-populated cluster of a sample of (log) source widths.

    Stars are the narrowest real sources of a frame, and galaxies may
    outnumber them, so the most common width is not the stellar one. A value
    belongs to a cluster when at least ``max(3, half the densest count)``
    values lie within ``window`` of it; the smallest such value is walked up
    to the local peak of the neighbour count, which is returned.
    """
    x = np.sort(np.asarray(values, dtype=float).ravel())
    if x.size == 0:
        raise ValueError("stellar_locus of an empty sample")
    counts = np.searchsorted(x, x + window, side="right") - np.searchsorted(x, x - window, side="left")
    need = min(max(3, int(np.ceil(counts.max() / 2))), int(counts.max()))
    i = int(np.flatnonzero(counts >= need)[0])
    while i + 1 < x.size and counts[i + 1] >= counts[i]:
        i += 1
    members = x[np.abs(x - x[i]) <= window]
    return float(np.median(members))


#: quadrature error allowed in a model pixel, as a fraction of the star's peak pixel (FWHM error ~1e-3)
_QUADRATURE_TOL = 1e-3
#: largest centre offset (pixels) of a fitted star from its stamp's centre (the fit's bound)
_CENTRE_REACH = 1.5


def _bernstein_rho(z: complex) -> float:
    """Bernstein-ellipse parameter through ``z`` for the interval [-1, 1] (convergence rate of Gauss-Legendre)."""
    w = z + np.sqrt(z * z - 1.0 + 0j)
    return float(max(abs(w), 1.0 / abs(w)))


@functools.lru_cache(maxsize=4096)
def _node_layout(half: int, alpha: float, beta: float) -> tuple[int, ...]:
    """Gauss-Legendre nodes for each pixel column (and row) of a ``2 half + 1`` stamp.

    The Moffat profile ``(1 + r^2 / alpha^2)^-beta`` is analytic but for
    branch points ``alpha`` off the real axis: an ``n``-node rule over one
    pixel errs by about ``30 rho^-2n`` of the profile there (``rho`` of the
    Bernstein ellipse through the branch point nearest the pixel; the 30 is
    measured), so each pixel gets the fewest nodes that keep that below
    ``_QUADRATURE_TOL`` of the peak for a star centred anywhere within
    ``_CENTRE_REACH`` of the stamp centre: the pixels near the star need up to
    ~6 nodes at FWHM 0.5 px, the far wings one.
    """
    counts = []
    for i in range(-half, half + 1):
        near = max(0.0, abs(i) - 0.5 - _CENTRE_REACH)    # the pixel's distance from the nearest possible centre
        scale = 30.0 * (1.0 + near * near / (alpha * alpha)) ** (-beta)
        if scale <= _QUADRATURE_TOL:
            counts.append(1)
            continue
        centre = float(np.clip(i, -_CENTRE_REACH, _CENTRE_REACH))
        rho = _bernstein_rho(complex(2.0 * (centre - i), 2.0 * alpha))
        counts.append(int(np.clip(np.ceil(np.log(scale / _QUADRATURE_TOL) / (2.0 * np.log(rho))), 1, 16)))
    return tuple(counts)


class _MoffatStamp:
    """Pixel-integrated circular Moffat plus constant on one square stamp.

    Each pixel is integrated with a product rule of ``layout[k]`` nodes
    along its column ``k`` and ``layout[j]`` along its row ``j``: the
    midpoint rule (``quadrature='midpoint'``: ``layout[k]`` equal
    sub-pixels) or Gauss-Legendre (``'gauss'``, see :func:`_node_layout`).
    The profile is evaluated on the tensor grid of the nodes and summed
    with their weights into pixels.
    """

    def __init__(self, half: int, layout: tuple[int, ...], quadrature: str = "gauss"):
        n = 2 * half + 1
        if len(layout) != n:
            raise ValueError(f"a layout of {len(layout)} pixels for a stamp of {n}")
        nodes, weights, pixel = [], [], []
        for k, count in enumerate(layout):
            t: np.ndarray
            w: np.ndarray
            if quadrature == "gauss":
                t, w = np.polynomial.legendre.leggauss(count)
            elif quadrature == "midpoint":
                t, w = (np.arange(count) + 0.5) * (2.0 / count) - 1.0, np.full(count, 2.0 / count)
            else:
                raise ValueError(f"unknown quadrature {quadrature!r}: 'gauss' or 'midpoint'")
            nodes.append(k - half + 0.5 * t)
            weights.append(0.5 * w)
            pixel.append(np.full(count, k))
        grid = np.concatenate(nodes)
        self.size, self.layout = n, layout
        self.gx, self.gy = grid[None, :], grid[:, None]
        self.binning = np.zeros((n, grid.size))
        self.binning[np.concatenate(pixel), np.arange(grid.size)] = np.concatenate(weights)

    def __call__(self, x0: float, y0: float, flux: float, fwhm: float, beta: float, sky: float) -> np.ndarray:
        """The model stamp, ``(size, size)``."""
        alpha = moffat_alpha(fwhm, beta)
        r2 = (self.gx - x0) ** 2 + (self.gy - y0) ** 2
        prof = (beta - 1.0) / (np.pi * alpha * alpha) * (1.0 + r2 / (alpha * alpha)) ** (-beta)
        return flux * (self.binning @ prof @ self.binning.T) + sky

    def evaluate(self, p: np.ndarray, beta: float, free_beta: bool) -> tuple[np.ndarray, np.ndarray]:
        """The model (flattened) at ``p = (x0, y0, flux, fwhm, sky[, beta])`` and its derivatives by ``p``.

        Returns the model ``(size**2,)`` and the Jacobian ``(size**2, 5 or 6)``.
        """
        x0, y0, flux, fwhm, sky = p[0], p[1], p[2], p[3], p[4]
        alpha = moffat_alpha(fwhm, beta)
        a2 = alpha * alpha
        dx, dy = self.gx - x0, self.gy - y0
        r2 = dx * dx + dy * dy
        u = r2 / a2
        u += 1.0
        log_u = np.log(u)
        columns = np.empty((5 if free_beta else 4,) + r2.shape)
        prof = columns[2]
        np.multiply(log_u, -beta, out=prof)
        np.exp(prof, out=prof)
        prof *= (beta - 1.0) / (np.pi * a2)
        core = prof / u
        core *= 2.0 * beta / a2                           # -2 d prof / d r2
        d_alpha = core * r2
        d_alpha -= 2.0 * prof
        d_alpha /= alpha
        np.multiply(core, dx, out=columns[0])
        np.multiply(core, dy, out=columns[1])
        np.multiply(d_alpha, alpha / fwhm, out=columns[3])
        if free_beta:
            t = 2.0 ** (1.0 / beta)
            alpha_by_beta = alpha * t * np.log(2.0) / (2.0 * beta * beta * (t - 1.0))
            d_beta = columns[4]
            np.multiply(prof, 1.0 / (beta - 1.0) - log_u, out=d_beta)
            d_alpha *= alpha_by_beta
            d_beta += d_alpha
        binned = (self.binning @ columns @ self.binning.T).reshape(len(columns), -1)
        jac = np.empty((self.size * self.size, 6 if free_beta else 5))
        jac[:, 0], jac[:, 1] = flux * binned[0], flux * binned[1]
        jac[:, 2], jac[:, 3], jac[:, 4] = binned[2], flux * binned[3], 1.0
        if free_beta:
            jac[:, 5] = flux * binned[4]
        return flux * binned[2] + sky, jac


@functools.lru_cache(maxsize=256)
def _stamp_model(half: int, layout: tuple[int, ...], quadrature: str = "gauss") -> _MoffatStamp:
    return _MoffatStamp(half, layout, quadrature)


def _levenberg_marquardt(stamp: np.ndarray, weight: np.ndarray, half: int, p0: np.ndarray, lo: np.ndarray,
                         hi: np.ndarray, beta: float | None, min_fwhm: float, oversample: int | None = None,
                         max_iter: int = 200, ftol: float = 1e-8) -> tuple[np.ndarray, bool]:
    """Weighted least-squares fit of :class:`_MoffatStamp` to ``stamp``; returns the parameters and convergence.

    Levenberg-Marquardt (Marquardt's scaling) within box bounds: a parameter
    at a bound the gradient pushes beyond is held for that step, the others
    are projected into the box (90 % of the way to a bound they would
    cross). With ``oversample`` the pixels are integrated by the midpoint
    rule on that many sub-pixels per axis; otherwise by Gauss-Legendre, the
    layout following the fitted core radius (a finer one as soon as the
    profile gets narrower than the layout was made for, with a 10 %
    margin; FWHMs below ``min_fwhm`` are integrated as at ``min_fwhm``, such
    fits are discarded anyway). Stops
    when chi^2 falls by less than ``ftol`` of itself or the step is
    negligible.
    """
    free_beta = beta is None
    data, w2 = stamp.ravel(), (weight * weight).ravel()

    def beta_of(q: np.ndarray) -> float:
        return float(q[5]) if free_beta else float(beta)  # type: ignore[arg-type]

    def layout_for(q: np.ndarray) -> tuple[tuple[int, ...], float, float]:
        if oversample is not None:
            return (oversample,) * (2 * half + 1), 0.0, 0.0
        fwhm, b = 0.9 * max(float(q[3]), min_fwhm), 0.9 * beta_of(q)
        alpha = float(moffat_alpha(fwhm, b))
        return _node_layout(half, round(alpha, 4) - 1e-4, round(b, 4) - 1e-4), alpha, b

    quadrature = "gauss" if oversample is None else "midpoint"
    # a fit held at a bound of its centre, FWHM or beta this many steps running ends there: it is discarded
    # (:func:`_fit_star`) and would otherwise creep along the bound, where the profile is degenerate
    patience, held_for = 5, 0
    p = p0.copy()
    layout, alpha_made, beta_made = layout_for(p)
    model = _stamp_model(half, layout, quadrature)
    m, jac = model.evaluate(p, beta_of(p), free_beta)
    r = m - data
    chi2 = float(r @ (r * w2))
    lam = 1e-3
    for _ in range(max_iter):
        a = jac.T @ (jac * w2[:, None])
        g = jac.T @ (r * w2)
        scale = a.diagonal().copy()
        scale[scale <= 0] = 1.0
        free = ~(((p <= lo) & (g > 0)) | ((p >= hi) & (g < 0)))
        held_for = held_for + 1 if not (free[0] and free[1] and free[3] and free[5:].all()) else 0
        if held_for >= patience:
            return p, False
        damped = a.copy()
        damped.flat[::len(p) + 1] += lam * scale
        if free.all():
            step = -np.linalg.solve(damped, g)
        else:
            step = np.zeros_like(p)
            step[free] = -np.linalg.solve(damped[np.ix_(free, free)], g[free])
        q = p + step
        # a step beyond a bound goes 90 % of the way there (at the bound after a few: then held)
        below, above = q < lo, q > hi
        if below.any() or above.any():
            with np.errstate(invalid="ignore"):     # infinite bounds are never crossed
                q = np.where(below, np.where(p - lo < 1e-9 * (np.abs(lo) + 1e-9), lo, lo + 0.1 * (p - lo)), q)
                q = np.where(above, np.where(hi - p < 1e-9 * (np.abs(hi) + 1e-9), hi, hi - 0.1 * (hi - p)), q)
        m_new, jac_new = model.evaluate(q, beta_of(q), free_beta)
        r_new = m_new - data
        chi2_new = float(r_new @ (r_new * w2))
        if not chi2_new <= chi2:
            lam *= 4.0
            if lam > 1e10:          # no step downhill left: at the minimum to rounding
                return p, True
            continue
        small = chi2 - chi2_new <= ftol * chi2 or bool(np.all(np.abs(q - p) <= 1e-8 * (np.abs(p) + 1e-8)))
        p, chi2, r, jac = q, chi2_new, r_new, jac_new
        lam = max(lam / 3.0, 1e-9)
        if moffat_alpha(max(float(p[3]), min_fwhm), beta_of(p)) < alpha_made or beta_of(p) < beta_made:
            finer, alpha_made, beta_made = layout_for(p)
            if finer != layout:
                layout = tuple(max(x, y) for x, y in zip(finer, layout))
                model = _stamp_model(half, layout, quadrature)
                m, jac = model.evaluate(p, beta_of(p), free_beta)
                r = m - data
                chi2 = float(r @ (r * w2))
                continue
        if small:
            return p, True
    return p, False


def _fit_star(stamp: np.ndarray, weight: np.ndarray, half: int, start: tuple[float, float], flux0: float,
              fwhm0: float, beta: float | None, min_fwhm: float,
              oversample: int | None = None) -> tuple[float, float, bool]:
    """Fit one stamp from ``start`` (the centre's offset from the stamp centre); return (fwhm, beta, ok)."""
    free_beta = beta is None
    b0 = 3.0 if free_beta else beta
    size = 2 * half + 1
    p0 = [start[0], start[1], max(flux0, 1.0), fwhm0, 0.0] + ([b0] if free_beta else [])
    lo = np.array([-_CENTRE_REACH, -_CENTRE_REACH, 0.0, 0.15, -np.inf] + ([1.2] if free_beta else []))
    hi = np.array([_CENTRE_REACH, _CENTRE_REACH, np.inf, 3.0 * size, np.inf] + ([20.0] if free_beta else []))
    x0 = np.clip(np.asarray(p0, dtype=float), lo + 1e-6, hi - 1e-6)
    try:
        p, converged = _levenberg_marquardt(stamp, weight, half, x0, lo, hi, beta, min_fwhm, oversample)
    except (ValueError, np.linalg.LinAlgError):
        return np.nan, np.nan, False
    b = float(p[5]) if free_beta else float(beta)  # type: ignore[arg-type]
    at_bound = (p[3] <= lo[3] * 1.05 or p[3] >= hi[3] * 0.95
                or (free_beta and (b <= lo[5] * 1.02 or b >= hi[5] * 0.98))
                or abs(p[0]) >= 1.45 or abs(p[1]) >= 1.45)
    return float(p[3]), b, converged and bool(np.all(np.isfinite(p))) and not at_bound


def measure_seeing(image: np.ndarray, mask: np.ndarray | None = None, pixel_scale: float = 1.0,
                   detect_threshold: float = 10.0, saturation: float | None = None,
                   beta: float | None = None, max_stars: int = 60, min_stars: int = 5,
                   max_ellipticity: float = 0.3, box: int = 64,
                   min_fwhm_arcsec: float = 0.4, n_bootstrap: int = 200,
                   quadrature: str = "midpoint", sky: sep.Background | None = None) -> SeeingResult:
    """Measure the seeing (PSF FWHM and half-light radius) of a frame.

    Sources are extracted with ``sep`` above ``detect_threshold`` times the
    background rms. Candidates must be unflagged (not blended, not at the
    edge, no masked pixel), round (``1 - b/a < max_ellipticity``, which
    rejects cosmic-ray worms and inclined galaxies), below ``saturation``,
    and isolated (no source brighter than 1 % of theirs within 1.5 fit
    stamps). The brightest ``max_stars`` are each fitted with a circular
    Moffat profile integrated over the pixels (so undersampled stars are
    measured correctly), with a local constant sky. Fits that end at a
    bound (notably single-pixel cosmic rays, which collapse to a tiny FWHM)
    are discarded. The stellar locus is the narrowest well-populated cluster
    of the fitted FWHMs (:func:`stellar_locus`: galaxies may outnumber
    stars); fits within 25 % of it are the stars. When a sizeable group of
    fits is narrower still, the locus was probably compact galaxies and is
    looked for again among those (``ambiguous`` when they are too few to
    decide). The result is the median FWHM of the stars; its error
    (``fwhm_error``) is the scatter of the whole estimate over bootstrap
    resamples of the fits, the choice of the locus included, so that a frame
    whose few stars could as well be taken for its galaxies (or the reverse)
    gets the large error it deserves.

    Parameters
    ----------
    image : numpy.ndarray
        2-D frame in ADU (background included or not).
    mask : numpy.ndarray, optional
        ``True`` for pixels to ignore (bad pixels, cosmic rays, satellite
        tracks); sources touching them are not used.
    pixel_scale : float
        Arcsec per pixel (1.0 gives results in pixels).
    detect_threshold : float
        Detection threshold in units of the background rms.
    saturation : float, optional
        Sources with a peak (background included) at or above this level are
        rejected.
    beta : float, optional
        Fix the Moffat ``beta``; ``None`` fits it.
    max_stars : int
        Fit at most this many (the brightest) candidates.
    min_stars : int
        Raise :class:`TooFewStarsError` if fewer stars survive.
    max_ellipticity : float
        Largest accepted ``1 - b/a`` of a candidate.
    box : int
        Background mesh size in pixels.
    min_fwhm_arcsec : float
        Fits narrower than this (in units of ``pixel_scale``) are not stars but
        cosmic rays or hot pixels: no site has better seeing.
    n_bootstrap : int
        Resamples of the fits for ``fwhm_error`` (below 2: not estimated, NaN).
    quadrature : {'midpoint', 'gauss'}
        How the model is integrated over the pixels. ``'midpoint'``:
        ``ceil(6 / FWHM guess)`` (at most 11) equal sub-pixels per axis, the
        FWHM guess being the candidates' median ``1.6 r50``; ~4 % too wide
        for stars of FWHM < 1 pixel, whose guess is too wide (the cosmic-ray
        PSF check is tuned on these values). ``'gauss'``: Gauss-Legendre
        nodes per pixel for a pixel error below 0.1 % of the peak at the
        fitted width (:func:`_node_layout`), the FWHM within ~0.1 % of the
        exact pixel integral's fit (measured at FWHM 0.5 px: 0.9 % from the
        truth against 2.5 %), at about 1.2 times the CPU.
    sky : sep.Background, optional
        :func:`sky_model` of ``image`` with ``mask`` at ``box``, when made already (it is made here otherwise).

    Returns
    -------
    SeeingResult

    Raises
    ------
    TooFewStarsError
        If fewer than ``min_stars`` stars are usable.
    """
    if pixel_scale <= 0:
        raise ValueError(f"pixel_scale must be positive (arcsec/pixel), got {pixel_scale}")
    data, bad = _prepare_image(image, mask)
    bkg = sky if sky is not None else _sep_background(data, bad, box, 3)
    back = bkg.back()
    sub = data - back
    rms = float(bkg.globalrms)
    objects = sep.extract(sub, detect_threshold, err=rms, mask=bad if bad.any() else None,
                          minarea=3, deblend_cont=0.005)
    if objects.size == 0:
        raise TooFewStarsError(f"no source above {detect_threshold} sigma: lower detect_threshold")

    x, y = objects["x"], objects["y"]
    a, b = objects["a"], objects["b"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ellipticity = np.where(a > 0, 1.0 - b / a, 1.0)
    r50, rflag = sep.flux_radius(sub, x, y, np.full(x.size, 6.0 * max(float(np.median(a)), 1.0)),
                                 0.5, mask=bad if bad.any() else None, subpix=5)
    fwhm_guess = np.clip(1.6 * r50, 0.5, None)
    # One stamp size for all fits, from the typical source size.
    half = int(np.clip(np.ceil(3.0 * np.median(fwhm_guess)), 3, 25))

    ny, nx = data.shape
    ok = (objects["flag"] == 0) & (rflag == 0) & (ellipticity < max_ellipticity)
    ok &= (x >= half) & (x < nx - half - 1) & (y >= half) & (y < ny - half - 1)
    if saturation is not None:
        ok &= (objects["peak"] + back[np.rint(y).astype(int), np.rint(x).astype(int)]) < saturation
    if x.size > 1:
        # Isolated: no neighbour brighter than 1 % of the source within 1.5 stamps.
        flux = objects["flux"]
        pairs = cKDTree(np.column_stack([x, y])).query_pairs(1.5 * half, output_type="ndarray")
        if pairs.size:
            one, other = pairs[:, 0], pairs[:, 1]
            crowded = np.zeros(x.size, dtype=bool)
            crowded[one[flux[other] > 0.01 * flux[one]]] = True
            crowded[other[flux[one] > 0.01 * flux[other]]] = True
            ok &= ~crowded
    candidates = np.flatnonzero(ok)
    candidates = candidates[np.argsort(objects["flux"][candidates])[::-1][:max_stars]]
    if candidates.size < min_stars:
        raise TooFewStarsError(f"only {candidates.size} isolated, unsaturated, round sources found "
                               f"(need {min_stars}): lower detect_threshold or min_stars")

    if quadrature == "midpoint":
        oversample: int | None = int(np.clip(np.ceil(6.0 / np.median(fwhm_guess[candidates])), 1, 11))
    elif quadrature == "gauss":
        oversample = None
    else:
        raise ValueError(f"unknown quadrature {quadrature!r}: use 'midpoint' or 'gauss'")
    stamps = []
    for i in candidates:
        ix, iy = int(round(x[i])), int(round(y[i]))
        win = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        if bad[win].any():
            continue
        stamp = sub[win]
        # Sky noise plus a Poisson-like term so bright cores do not dominate.
        weight = 1.0 / np.sqrt(rms**2 + np.abs(stamp) * rms / max(float(objects["peak"][i]), rms))
        start = (float(np.clip(x[i] - ix, -0.5, 0.5)), float(np.clip(y[i] - iy, -0.5, 0.5)))
        stamps.append((stamp, weight, start, float(objects["flux"][i]), float(fwhm_guess[i])))
    min_fwhm = min_fwhm_arcsec / pixel_scale
    fwhms, betas = _fit_stars(stamps, half, beta, min_fwhm, oversample)
    keep, ambiguous = _stellar_sample(fwhms, min_stars)
    members = fwhms[keep]
    fwhm_px = float(np.median(members))
    beta_med = float(np.median(betas[keep]))
    r_half = float(np.median(_moffat_half_light_radius(members, betas[keep])))
    scatter = float(1.4826 * np.median(np.abs(members - fwhm_px)))
    error = _bootstrap_error(fwhms[np.isfinite(fwhms)], min_stars, n_bootstrap)
    result = SeeingResult(fwhm_arcsec=fwhm_px * pixel_scale, fwhm_pixels=fwhm_px,
                          psf_radius=r_half * pixel_scale, beta=beta_med, fwhm_scatter=scatter,
                          n_stars=int(members.size), fwhm_error=error * pixel_scale,
                          n_fitted=int(np.isfinite(fwhms).sum()), ambiguous=ambiguous)
    log.info("seeing %.3f\" +- %.3f\" (%.3f px, beta %.2f) from %d of %d fitted stars", result.fwhm_arcsec,
             result.fwhm_error, fwhm_px, beta_med, result.n_stars, result.n_fitted)
    return result


def _on_locus(fwhms: np.ndarray, among: np.ndarray) -> np.ndarray:
    """The fits (of those ``among``) within 25 % of the stellar locus (:func:`stellar_locus` of their logs)."""
    mode = np.exp(stellar_locus(np.log(fwhms[among])))
    return among & (np.abs(np.log(fwhms / mode)) < np.log(1.25))


def _fit_stars(stamps: list, half: int, beta: float | None, min_fwhm: float,
               oversample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FWHM and beta of every stamp; NaN where the fit failed or is narrower than ``min_fwhm`` pixels."""
    fwhms = np.full(len(stamps), np.nan)
    betas = np.full(len(stamps), np.nan)
    for k, (stamp, weight, start, flux, fwhm0) in enumerate(stamps):
        fwhm, bet, good = _fit_star(stamp, weight, half, start, flux, fwhm0, beta, min_fwhm, oversample)
        if good and fwhm >= min_fwhm:
            fwhms[k], betas[k] = fwhm, bet
    return fwhms, betas


def _bootstrap_error(fwhms: np.ndarray, min_stars: int, n_bootstrap: int) -> float:
    """Standard deviation of the seeing estimate over resamples of the fitted FWHMs (fixed seed).

    The whole estimate is repeated on each resample (with replacement): the
    choice of the stellar locus as well as the median of its members.
    Resamples with fewer than ``min_stars`` stars on their locus are left
    out; ``inf`` when fewer than two remain.
    """
    if n_bootstrap < 2:
        return float("nan")
    rng = np.random.default_rng(0)
    estimates = []
    for _ in range(n_bootstrap):
        sample = fwhms[rng.integers(0, fwhms.size, fwhms.size)]
        try:
            keep, _ = _stellar_sample(sample, min_stars, quiet=True)
        except TooFewStarsError:
            continue
        estimates.append(float(np.median(sample[keep])))
    if len(estimates) < 2:
        return float("inf")
    return float(np.std(estimates, ddof=1))


def _stellar_sample(fwhms: np.ndarray, min_stars: int, quiet: bool = False) -> tuple[np.ndarray, bool]:
    """The fits on the stellar locus, and whether that locus is ambiguous.

    Stars are the narrowest real sources, but compact galaxies may
    outnumber them and form the densest narrow group: when at least
    ``max(3, half the members)`` fits are more than 25 % narrower than the
    locus, the locus is looked for again among those (up to three times).
    When they do not make a locus of ``min_stars`` the first locus is kept
    and the result is ``ambiguous``. Raises TooFewStarsError.
    """
    valid = np.isfinite(fwhms)
    if valid.sum() < min_stars:
        raise TooFewStarsError(f"only {int(valid.sum())} star fits converged (need {min_stars})")
    keep = valid & _on_locus(np.where(valid, fwhms, 1.0), valid)
    if keep.sum() < min_stars:
        raise TooFewStarsError(f"only {int(keep.sum())} stars on the stellar locus (need {min_stars})")
    ambiguous = False
    for _ in range(3):
        locus = float(np.median(fwhms[keep]))
        narrower = valid & (fwhms < locus / 1.25)
        if narrower.sum() < max(3, keep.sum() / 2):
            break
        again = narrower & _on_locus(np.where(narrower, fwhms, 1.0), narrower)
        if again.sum() < min_stars:
            ambiguous = True
            if not quiet:
                log.info("seeing: %d sources are narrower than the stellar locus at %.2f px but too few agree: "
                         "the locus may be compact galaxies", int(narrower.sum()), locus)
            break
        if not quiet:
            log.debug("seeing: locus %.2f px replaced by the narrower %.2f px", locus,
                      float(np.median(fwhms[again])))
        keep = again
    return keep, ambiguous
