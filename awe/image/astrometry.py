"""The astrometric solution of one chip: pattern matching to a reference catalogue and a TAN-SIP fit.

Pure functions on arrays (no files, no database), used by
:class:`~awe.tasks.astrometry.AstrometricParametersTask`:

- :func:`tangent_plane`, :func:`from_tangent_plane` -- the gnomonic projection about a point;
- :func:`match_pattern` -- the rotation and shift between the detections (placed on the sky by a rough
  start WCS) and the reference stars: a 2-D histogram of all detection-reference offsets for each
  rotation of a grid (a cross-correlation of the two point patterns); the true match is the one peak
  many pairs share, found whatever the start WCS's error (up to ``max_offset`` and ``max_rotation``),
  and refused when it does not stand out of the chance coincidences;
- :func:`match_nearest` -- one-to-one nearest-neighbour pairs within a radius;
- :func:`fit_tan_sip` -- the weighted least-squares fit of the polynomial from pixels to the tangent
  plane with sigma-clipping, as a TAN-SIP WCS (:func:`sip_wcs`, with the inverse polynomials);
- :func:`solve_astrometry` -- all of it: pattern match, then matching and fitting in turn with
  shrinking match radius, the distortion order limited by the number of matched stars.

Conventions: pixel coordinates are 0-based ``(x, y)`` on the reduced frame (``astropy.wcs`` with
``origin=0``); tangent-plane coordinates ``xi`` (towards East, along RA) and ``eta`` (North) in arcsec
unless named ``_deg``; rotations in degrees, counter-clockwise on the sky (North through East).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

__all__ = ["AstrometryError", "PatternMatch", "AstrometricSolution", "tangent_plane", "from_tangent_plane",
           "match_pattern", "match_nearest", "poly_terms", "fit_tan_sip", "sip_wcs", "solve_astrometry",
           "choose_order", "loo_order", "wcs_offset"]

log = logging.getLogger(__name__)

_ARCSEC = 3600.0


class AstrometryError(ValueError):
    """No astrometric solution: too few sources or reference stars, or no match between them."""


# ============================================================================ projection
def tangent_plane(ra: Any, dec: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of (``ra``, ``dec``) [deg] about (``ra0``, ``dec0``): ``xi, eta`` [deg]."""
    a, d = np.radians(np.asarray(ra, dtype=float)), np.radians(np.asarray(dec, dtype=float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def from_tangent_plane(xi: Any, eta: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`tangent_plane`: (``ra``, ``dec``) [deg] of ``xi, eta`` [deg]."""
    x, y = np.radians(np.asarray(xi, dtype=float)), np.radians(np.asarray(eta, dtype=float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.cos(c) * np.sin(d0) + np.where(rho > 0, y * np.sin(c) * np.cos(d0) / rho, 0.0))
    ra = a0 + np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def _rotate(xi: np.ndarray, eta: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate tangent-plane positions by ``angle_deg`` counter-clockwise on the sky (North through East)."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # xi points East (left on the sky): a rotation North-through-East is clockwise in (xi, eta)
    return c * xi + s * eta, -s * xi + c * eta


# ============================================================================ matching
@dataclass(frozen=True)
class PatternMatch:
    """The rotation and shift that bring the detections onto the reference stars.

    ``rotation_deg`` and ``offset`` (``dxi, deta`` [arcsec]) are to be applied to the detections'
    tangent-plane positions (rotation about the tangent point first); ``n_pairs`` pairs share them,
    where ``expected`` pairs would by chance (``significance`` = excess over the Poisson error).
    """

    rotation_deg: float
    offset: tuple[float, float]
    n_pairs: int
    expected: float
    significance: float


def match_pattern(det_xi: np.ndarray, det_eta: np.ndarray, ref_xi: np.ndarray, ref_eta: np.ndarray, *,
                  max_offset: float = 90.0, max_rotation: float = 1.0, rotation_step: float = 0.1,
                  bin_size: float = 1.5, min_pairs: int = 5, min_significance: float = 5.0) -> PatternMatch:
    """Find the rotation and shift between two point patterns on the sky (arcsec, one tangent plane).

    For each rotation of the grid (``-max_rotation`` to ``max_rotation`` by ``rotation_step``, then a
    grid five times finer around the best), the offsets of every detection-reference pair within
    ``max_offset`` are histogrammed in ``bin_size`` bins and summed over 3 x 3 bins; the rotation with
    the highest peak wins and the offset is the mean of the pairs in its peak. A rotation error of one
    step moves the chip's corners by ``radius x step``, which must stay within the 3-bin window:
    keep ``rotation_step`` below about ``2 bin_size / radius`` (radians).

    Raises
    ------
    AstrometryError
        If the best peak has fewer than ``min_pairs`` pairs or stands less than ``min_significance``
        Poisson sigma above the chance coincidences: the start WCS is further off than ``max_offset``
        (a wrong pointing), or the detections and references have too few stars in common.
    """
    det_xi, det_eta = np.asarray(det_xi, float), np.asarray(det_eta, float)
    ref_xi, ref_eta = np.asarray(ref_xi, float), np.asarray(ref_eta, float)
    if det_xi.size < min_pairs or ref_xi.size < min_pairs:
        raise AstrometryError(f"too few stars to match: {det_xi.size} detections and {ref_xi.size} reference "
                              f"stars (need at least {min_pairs} of each)")
    nbin = int(math.ceil(2 * max_offset / bin_size))
    edges = (np.arange(nbin + 1) - nbin / 2) * bin_size
    window = np.ones((3, 3))
    ref_tree = cKDTree(np.column_stack([ref_xi, ref_eta]))

    def peak(angle: float) -> tuple[float, float, float, int, float]:
        xi, eta = _rotate(det_xi, det_eta, angle)
        pairs = ref_tree.query_ball_point(np.column_stack([xi, eta]), r=max_offset * math.sqrt(2.0))
        di = np.repeat(np.arange(xi.size), [len(p) for p in pairs])
        ri = np.fromiter((j for p in pairs for j in p), dtype=np.int64, count=di.size)
        dx, dy = ref_xi[ri] - xi[di], ref_eta[ri] - eta[di]
        hist, _, _ = np.histogram2d(dx, dy, bins=(edges, edges))
        summed = ndi.convolve(hist, window, mode="constant")
        k = int(np.argmax(summed))
        i, j = divmod(k, summed.shape[1])
        inside = (np.abs(dx - (edges[i] + bin_size / 2)) <= 1.5 * bin_size) & \
            (np.abs(dy - (edges[j] + bin_size / 2)) <= 1.5 * bin_size)
        n = int(inside.sum())
        expected = float(hist.sum()) * 9.0 / hist.size
        ox = float(np.median(dx[inside])) if n else 0.0
        oy = float(np.median(dy[inside])) if n else 0.0
        return float(summed.flat[k]), ox, oy, n, expected

    coarse = np.arange(-max_rotation, max_rotation + 1e-9, rotation_step)
    results = [(a, *peak(a)) for a in coarse]
    best = max(results, key=lambda r: r[1])
    fine = np.arange(best[0] - rotation_step, best[0] + rotation_step + 1e-9, rotation_step / 5.0)
    results = [(a, *peak(a)) for a in fine]
    best = max(results, key=lambda r: (r[1], -abs(r[0] - best[0])))
    angle, height, ox, oy, n, expected = best
    significance = (n - expected) / math.sqrt(max(expected, 1.0))
    log.debug("pattern match: rotation %.3f deg, offset %.2f\", %.2f\", %d pairs (%.1f by chance, %.1f sigma)",
              angle, ox, oy, n, expected, significance)
    if n < min_pairs or significance < min_significance:
        raise AstrometryError(
            f"no match between the {det_xi.size} detections and the {ref_xi.size} reference stars within "
            f"{max_offset:.0f}\" and {max_rotation:.1f} deg of the start WCS: the best shift has {n} pairs where "
            f"{expected:.1f} are expected by chance ({significance:.1f} sigma, need {min_pairs} pairs and "
            f"{min_significance:.0f} sigma). Is the pointing (header CRVAL) right, and does the reference "
            "catalogue cover the field to the depth of the frame?")
    return PatternMatch(rotation_deg=float(angle), offset=(ox, oy), n_pairs=n, expected=expected,
                        significance=float(significance))


def match_nearest(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
                  radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i1, i2)`` of the pairs that are each other's nearest neighbour within ``radius``."""
    if len(x1) == 0 or len(x2) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    p1, p2 = np.column_stack([x1, y1]), np.column_stack([x2, y2])
    d12, j_ = cKDTree(p2).query(p1, distance_upper_bound=radius)
    _, i_ = cKDTree(p1).query(p2, distance_upper_bound=radius)
    j, i = np.atleast_1d(j_), np.atleast_1d(i_)
    ok = np.isfinite(d12)
    i1 = np.flatnonzero(ok)
    i2 = j[ok]
    mutual = i[i2] == i1
    return i1[mutual], i2[mutual]


# ============================================================================ fitting
def poly_terms(order: int, lowest: int = 0) -> list[tuple[int, int]]:
    """The exponents ``(p, q)`` of ``u^p v^q`` with ``lowest <= p + q <= order``."""
    return [(p, n - p) for n in range(lowest, order + 1) for p in range(n, -1, -1)]


def choose_order(n_stars: int, order: int, per_term: float = 3.0) -> int:
    """The highest distortion order up to ``order`` with at least ``per_term`` stars per fitted term."""
    for o in range(order, 0, -1):
        if n_stars >= per_term * len(poly_terms(o)):
            return o
    return 1


def loo_order(x: np.ndarray, y: np.ndarray, xi: np.ndarray, eta: np.ndarray, sigma: np.ndarray, max_order: int,
              shape: tuple[int, int], gain: float = 0.05) -> int:
    """The distortion order (1 to ``max_order``) that predicts left-out stars best.

    For each order with at least two stars per term, the weighted leave-one-out residuals of the
    polynomial fit (exact for least squares: residual / (1 - leverage)) are summed over both axes; a
    higher order is taken only if it lowers that sum by more than ``gain`` (a fraction): with the few
    stars of a chip, a high order bends the solution between them and beyond them.
    """
    ny, nx = shape
    u = (x - (nx - 1) / 2.0) / (max(nx, ny) / 2.0)
    v = (y - (ny - 1) / 2.0) / (max(nx, ny) / 2.0)
    w = 1.0 / np.asarray(sigma, float)
    best, best_score = 1, math.inf
    for o in range(1, max_order + 1):
        terms = poly_terms(o)
        if x.size < 2 * len(terms) + 2:
            break
        m = _design(u, v, terms) * w[:, None]
        q, _ = np.linalg.qr(m)
        leverage = np.minimum(np.sum(q * q, axis=1), 0.999)
        score = 0.0
        for target in (xi, eta):
            coef = np.linalg.lstsq(m, target * w, rcond=None)[0]
            r = (target * w - m @ coef) / (1.0 - leverage)
            score += float(np.sum(r * r))
        if score < best_score * (1.0 - gain):
            best, best_score = o, score
    return best


def _design(u: np.ndarray, v: np.ndarray, terms: list[tuple[int, int]]) -> np.ndarray:
    return np.column_stack([u ** p * v ** q for p, q in terms])


@dataclass
class _PolyFit:
    """``xi = sum a_pq u^p v^q`` (and ``eta`` with ``b``) in normalised pixel offsets ``u = (x - x0) / s``."""

    terms: list[tuple[int, int]]
    a: np.ndarray
    b: np.ndarray
    x0: float
    y0: float
    scale: float
    kept: np.ndarray

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = _design((np.asarray(x, float) - self.x0) / self.scale, (np.asarray(y, float) - self.y0) / self.scale,
                    self.terms)
        return m @ self.a, m @ self.b

    def coefficients(self) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
        """The coefficients for un-normalised pixel offsets ``x - x0``."""
        a = {t: float(c) / self.scale ** (t[0] + t[1]) for t, c in zip(self.terms, self.a)}
        b = {t: float(c) / self.scale ** (t[0] + t[1]) for t, c in zip(self.terms, self.b)}
        return a, b


def _fit_poly(x: np.ndarray, y: np.ndarray, xi: np.ndarray, eta: np.ndarray, sigma: np.ndarray, order: int,
              x0: float, y0: float, scale: float, clip: float, max_iter: int = 10) -> _PolyFit:
    """Weighted polynomial fit of ``xi``, ``eta`` on pixels, iteratively rejecting residuals beyond ``clip``
    robust sigma (on either axis); never rejects more than half of the points."""
    terms = poly_terms(order)
    m = _design((x - x0) / scale, (y - y0) / scale, terms)
    w = 1.0 / np.asarray(sigma, float)
    kept = np.ones(x.size, dtype=bool)
    a: np.ndarray = np.zeros(len(terms))
    b: np.ndarray = np.zeros(len(terms))
    for _ in range(max_iter):
        mw = m[kept] * w[kept, None]
        a = np.linalg.lstsq(mw, xi[kept] * w[kept], rcond=None)[0]
        b = np.linalg.lstsq(mw, eta[kept] * w[kept], rcond=None)[0]
        rx, ry = (xi - m @ a) * w, (eta - m @ b) * w
        sx = 1.4826 * float(np.median(np.abs(rx[kept] - np.median(rx[kept])))) or float(np.std(rx[kept])) or 1.0
        sy = 1.4826 * float(np.median(np.abs(ry[kept] - np.median(ry[kept])))) or float(np.std(ry[kept])) or 1.0
        new = (np.abs(rx) <= clip * sx) & (np.abs(ry) <= clip * sy)
        if new.sum() < max(len(terms) + 1, x.size // 2):
            break
        if np.array_equal(new, kept):
            break
        kept = new
    return _PolyFit(terms, a, b, x0, y0, scale, kept)


def sip_wcs(crpix: tuple[float, float], crval: tuple[float, float], a: dict[tuple[int, int], float],
            b: dict[tuple[int, int], float], order: int, shape: tuple[int, int], dateobs: str | None = None) -> Any:
    """The TAN-SIP ``astropy.wcs.WCS`` of a polynomial from pixel offsets to the tangent plane [deg].

    ``a``, ``b``: coefficients of ``xi``, ``eta`` for ``u^p v^q`` (``u = x + 1 - CRPIX1``, FITS pixels);
    their linear terms are the CD matrix and the higher ones, through its inverse, the SIP ``A``/``B``
    polynomials. The inverse polynomials ``AP``/``BP`` (order + 1) are fitted on a grid over the frame
    (``shape`` = (ny, nx)). Order 1: a plain TAN WCS. RADESYS ICRS.
    """
    from astropy.wcs import WCS, Sip

    cd = np.array([[a.get((1, 0), 0.0), a.get((0, 1), 0.0)], [b.get((1, 0), 0.0), b.get((0, 1), 0.0)]])
    w = WCS(naxis=2)
    w.wcs.crpix = [float(crpix[0]), float(crpix[1])]
    w.wcs.crval = [float(crval[0]) % 360.0, float(crval[1])]
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    if dateobs:
        w.wcs.dateobs = dateobs
    if order < 2:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.set()
        return w
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    inv = np.linalg.inv(cd)
    A = np.zeros((order + 1, order + 1))
    B = np.zeros((order + 1, order + 1))
    for (p, q) in poly_terms(order, lowest=2):
        f, g = inv @ np.array([a.get((p, q), 0.0), b.get((p, q), 0.0)])
        A[p, q], B[p, q] = f, g
    # inverse polynomials on a grid reaching a little beyond the frame
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(-0.05 * nx, 1.05 * nx, 40), np.linspace(-0.05 * ny, 1.05 * ny, 40))
    u = gx.ravel() + 1.0 - crpix[0]
    v = gy.ravel() + 1.0 - crpix[1]
    fu = sum(A[p, q] * u ** p * v ** q for p, q in poly_terms(order, lowest=2))
    gv = sum(B[p, q] * u ** p * v ** q for p, q in poly_terms(order, lowest=2))
    U, V = u + fu, v + gv
    s = max(float(np.max(np.abs(U))), float(np.max(np.abs(V))), 1.0)
    inv_order = order + 1
    terms = poly_terms(inv_order, lowest=1)
    m = _design(U / s, V / s, terms)
    ap = np.linalg.lstsq(m, u - U, rcond=None)[0]
    bp = np.linalg.lstsq(m, v - V, rcond=None)[0]
    AP = np.zeros((inv_order + 1, inv_order + 1))
    BP = np.zeros((inv_order + 1, inv_order + 1))
    for (p, q), ca, cb in zip(terms, ap, bp):
        AP[p, q], BP[p, q] = ca / s ** (p + q), cb / s ** (p + q)
    w.sip = Sip(A, B, AP, BP, w.wcs.crpix)
    w.wcs.set()
    return w


@dataclass
class AstrometricSolution:
    """The result of :func:`solve_astrometry`.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
        TAN-SIP (TAN for order 1) on the frame's pixel grid (0-based ``all_pix2world(x, y, 0)``).
    order : int
        The distortion order fitted (limited by the number of matches).
    det_index, ref_index : numpy.ndarray
        The matched pairs (indices into the detections and the reference stars given).
    dxi, deta : numpy.ndarray
        Their residuals, reference minus solution, along RA (times cos dec) and Dec [arcsec].
    rejected : numpy.ndarray
        True for the pairs rejected as outliers (not in the fit nor in the rms).
    rms_ra, rms_dec : float
        Rms of the kept residuals [arcsec].
    n_ref : int
        Matched reference stars kept in the fit.
    pattern : PatternMatch
        The first, pattern match of the start WCS.
    start_offset : tuple of float
        How far the start WCS was off at the frame centre (``xi, eta`` [arcsec], solution minus start), and
    start_rotation : float
        its rotation [deg] (solution relative to start, North through East).
    """

    wcs: Any
    order: int
    det_index: np.ndarray
    ref_index: np.ndarray
    dxi: np.ndarray
    deta: np.ndarray
    rejected: np.ndarray
    rms_ra: float
    rms_dec: float
    n_ref: int
    pattern: PatternMatch
    start_offset: tuple[float, float] = (0.0, 0.0)
    start_rotation: float = 0.0
    log: list[str] = field(default_factory=list)


def wcs_offset(wcs: Any, other: Any, shape: tuple[int, int]) -> tuple[float, float, float]:
    """Shift (``xi, eta`` [arcsec] of ``wcs`` minus ``other`` at the frame centre) and rotation [deg] between two
    WCS of one frame, from the frame's centre and the middles of its edges."""
    ny, nx = shape
    x = np.array([(nx - 1) / 2, 0.0, nx - 1.0, (nx - 1) / 2, (nx - 1) / 2])
    y = np.array([(ny - 1) / 2, (ny - 1) / 2, (ny - 1) / 2, 0.0, ny - 1.0])
    r1, d1 = wcs.all_pix2world(x, y, 0)
    r2, d2 = other.all_pix2world(x, y, 0)
    x1, y1 = tangent_plane(r1, d1, float(r2[0]), float(d2[0]))
    x2, y2 = tangent_plane(r2, d2, float(r2[0]), float(d2[0]))
    a1 = np.arctan2(y1[1:] - y1[0], x1[1:] - x1[0])
    a2 = np.arctan2(y2[1:] - y2[0], x2[1:] - x2[0])
    rot = float(np.degrees(np.angle(np.mean(np.exp(1j * (a2 - a1))))))
    return float(x1[0] * _ARCSEC), float(y1[0] * _ARCSEC), rot


def fit_tan_sip(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, sigma: np.ndarray, order: int,
                shape: tuple[int, int], crval: tuple[float, float], clip: float = 4.0,
                dateobs: str | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Fit a TAN-SIP WCS to matched pixel and sky positions, with sigma-clipping.

    The tangent point is moved to the sky position of the frame's central pixel (CRPIX) and the fit
    repeated until it stays there. Returns the WCS, the residuals ``dxi, deta`` (reference minus fit,
    arcsec) of every pair and the mask of the pairs kept.

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based pixel positions.
    ra, dec : numpy.ndarray
        Their reference sky positions [deg].
    sigma : numpy.ndarray
        Per-axis position error of each pair [arcsec] (detection and reference combined).
    order : int
        Distortion order (1: linear, plain TAN).
    shape : tuple of int
        The frame's (ny, nx).
    crval : tuple of float
        A first tangent point [deg] (close to the frame centre).
    clip : float
        Rejection threshold in robust sigma.
    """
    ny, nx = shape
    x0, y0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    scale = max(nx, ny) / 2.0
    ra0, dec0 = float(crval[0]), float(crval[1])
    fit = None
    for _ in range(4):
        xi, eta = tangent_plane(ra, dec, ra0, dec0)
        fit = _fit_poly(x, y, xi * _ARCSEC, eta * _ARCSEC, sigma, order, x0, y0, scale, clip)
        c_xi, c_eta = fit(np.array([x0]), np.array([y0]))
        ra0_new, dec0_new = from_tangent_plane(c_xi / _ARCSEC, c_eta / _ARCSEC, ra0, dec0)
        moved = math.hypot(float(c_xi[0]), float(c_eta[0]))
        ra0, dec0 = float(ra0_new[0]), float(dec0_new[0])
        if moved < 1e-5:
            break
    assert fit is not None
    # the last fit, about the final tangent point
    xi, eta = tangent_plane(ra, dec, ra0, dec0)
    fit = _fit_poly(x, y, xi * _ARCSEC, eta * _ARCSEC, sigma, order, x0, y0, scale, clip)
    a, b = fit.coefficients()
    a = {t: c / _ARCSEC for t, c in a.items() if t != (0, 0)}
    b = {t: c / _ARCSEC for t, c in b.items() if t != (0, 0)}
    wcs = sip_wcs((x0 + 1.0, y0 + 1.0), (ra0, dec0), a, b, order, shape, dateobs)
    fra, fdec = wcs.all_pix2world(x, y, 0)
    fxi, feta = tangent_plane(fra, fdec, ra0, dec0)
    return wcs, (xi - fxi) * _ARCSEC, (eta - feta) * _ARCSEC, fit.kept


def solve_astrometry(x: np.ndarray, y: np.ndarray, pos_err: np.ndarray, ref_ra: np.ndarray, ref_dec: np.ndarray,
                     ref_err: np.ndarray, start_wcs: Any, shape: tuple[int, int], *, order: int = 3,
                     clip: float = 4.0, max_offset: float = 90.0, max_rotation: float = 1.0,
                     min_matches: int = 6, stars_per_term: float = 3.0, max_pattern_stars: int = 250,
                     dateobs: str | None = None) -> AstrometricSolution:
    """Solve the astrometry of one frame from its detections and a reference catalogue.

    1. The detections (brightest first: ``x, y`` sorted by decreasing flux) are put on the sky with
       ``start_wcs`` and the brightest ``max_pattern_stars`` of them and of the reference stars on the frame
       (widened by ``max_offset``) are pattern-matched (:func:`match_pattern`): rotation and shift.
    2. Nearest-neighbour pairs within 3" of the matched pattern; a linear fit; then matching with the
       latest fit within 5 x its rms (at least 1", at most 3") and fitting with the order limited by the
       number of pairs (:func:`choose_order`, ``stars_per_term`` per term), until the pairs stay the same.

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based pixel positions of the detections, brightest first.
    pos_err : numpy.ndarray
        Their position errors [arcsec] (per axis).
    ref_ra, ref_dec : numpy.ndarray
        Reference stars [deg] at the epoch of the frame, brightest first.
    ref_err : numpy.ndarray
        Their position errors [arcsec].
    start_wcs : astropy.wcs.WCS
        The rough WCS (the header's) on the frame's pixel grid.
    shape : tuple of int
        The frame's (ny, nx).
    order : int
        The highest distortion order (TAN-SIP polynomial degree).
    clip : float
        Outlier rejection in robust sigma.
    max_offset, max_rotation : float
        How far off the start WCS may be [arcsec, deg].
    min_matches : int
        Fewest matched pairs for a solution.

    Raises
    ------
    AstrometryError
        Too few detections or reference stars, no pattern match, or fewer than ``min_matches`` pairs.
    """
    ny, nx = shape
    x, y = np.asarray(x, float), np.asarray(y, float)
    pos_err, ref_err = np.asarray(pos_err, float), np.asarray(ref_err, float)
    ref_ra, ref_dec = np.asarray(ref_ra, float), np.asarray(ref_dec, float)
    if x.size < min_matches:
        raise AstrometryError(f"only {x.size} usable sources detected on the frame (need {min_matches}): is it "
                              "empty, very short or out of focus?")
    centre = start_wcs.all_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0]], 0)[0]
    ra0, dec0 = float(centre[0]), float(centre[1])
    dra, ddec = start_wcs.all_pix2world(x, y, 0)
    dxi, deta = (v * _ARCSEC for v in tangent_plane(dra, ddec, ra0, dec0))
    rxi, reta = (v * _ARCSEC for v in tangent_plane(ref_ra, ref_dec, ra0, dec0))
    # the reference stars on the frame, widened by the largest offset
    corners = start_wcs.all_pix2world(np.array([0, nx - 1, 0, nx - 1]), np.array([0, 0, ny - 1, ny - 1]), 0)
    cxi, ceta = (v * _ARCSEC for v in tangent_plane(corners[0], corners[1], ra0, dec0))
    margin = max_offset + math.radians(max_rotation) * float(np.max(np.hypot(cxi, ceta)))
    on = (rxi > cxi.min() - margin) & (rxi < cxi.max() + margin) & (reta > ceta.min() - margin) & \
        (reta < ceta.max() + margin)
    if on.sum() < min_matches:
        raise AstrometryError(f"only {int(on.sum())} reference stars within {margin:.0f}\" of the frame (need "
                              f"{min_matches}): the reference catalogue does not cover RA {ra0:.4f}, Dec {dec0:.4f} "
                              "(wrong pointing in the header, or load a catalogue of this field)")
    on_idx = np.flatnonzero(on)
    pattern = match_pattern(dxi[:max_pattern_stars], deta[:max_pattern_stars], rxi[on_idx[:max_pattern_stars]],
                            reta[on_idx[:max_pattern_stars]], max_offset=max_offset, max_rotation=max_rotation,
                            min_pairs=min_matches)
    pxi, peta = _rotate(dxi, deta, pattern.rotation_deg)
    pxi, peta = pxi + pattern.offset[0], peta + pattern.offset[1]
    di, rj = match_nearest(pxi, peta, rxi[on_idx], reta[on_idx], 3.0)
    rj = on_idx[rj]
    if di.size < min_matches:
        raise AstrometryError(f"only {di.size} detections within 3\" of reference stars after the pattern match "
                              f"(need {min_matches})")
    sigma_all = np.hypot(pos_err, 0.0)
    wcs = None
    used_order = 1
    previous: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    dx_res = dy_res = np.zeros(0)
    kept = np.zeros(0, dtype=bool)
    for iteration in range(8):
        sigma = np.hypot(sigma_all[di], np.where(np.isfinite(ref_err[rj]), ref_err[rj], 0.2))
        used_order = 1 if iteration == 0 else choose_order(di.size, order, stars_per_term)
        wcs, dx_res, dy_res, kept = fit_tan_sip(x[di], y[di], ref_ra[rj], ref_dec[rj], sigma, used_order, shape,
                                                (ra0, dec0), clip, dateobs)
        rms = float(np.sqrt(np.mean(dx_res[kept] ** 2 + dy_res[kept] ** 2) / 2.0))
        key = (tuple(di), tuple(rj))
        if key == previous and iteration > 1:
            break
        previous = key
        radius = float(np.clip(5.0 * rms, 1.0, 3.0))
        sra, sdec = wcs.all_pix2world(x, y, 0)
        sxi, seta = (v * _ARCSEC for v in tangent_plane(sra, sdec, ra0, dec0))
        new_di, new_rj = match_nearest(sxi, seta, rxi[on_idx], reta[on_idx], radius)
        if new_di.size < min_matches:
            break
        di, rj = new_di, on_idx[new_rj]
    else:  # not converged in 8 rounds: the fit of the latest pairs
        sigma = np.hypot(sigma_all[di], np.where(np.isfinite(ref_err[rj]), ref_err[rj], 0.2))
        wcs, dx_res, dy_res, kept = fit_tan_sip(x[di], y[di], ref_ra[rj], ref_dec[rj], sigma, used_order, shape,
                                                (ra0, dec0), clip, dateobs)
    assert wcs is not None
    if di.size < min_matches or int(kept.sum()) < min_matches:
        raise AstrometryError(f"only {int(kept.sum())} reference stars matched (need {min_matches})")
    # the order that predicts the stars left out best, on the pairs kept; the final fit with it
    sigma = np.hypot(sigma_all[di], np.where(np.isfinite(ref_err[rj]), ref_err[rj], 0.2))
    k = kept
    txi, teta = tangent_plane(ref_ra[rj][k], ref_dec[rj][k], ra0, dec0)
    best = loo_order(x[di][k], y[di][k], txi * _ARCSEC, teta * _ARCSEC, sigma[k], used_order, shape)
    if best != used_order:
        log.debug("distortion order %d predicts left-out stars better than %d", best, used_order)
        used_order = best
        wcs, dx_res, dy_res, kept = fit_tan_sip(x[di], y[di], ref_ra[rj], ref_dec[rj], sigma, used_order, shape,
                                                (ra0, dec0), clip, dateobs)
    rms_ra = float(np.sqrt(np.mean(dx_res[kept] ** 2)))
    rms_dec = float(np.sqrt(np.mean(dy_res[kept] ** 2)))
    off_xi, off_eta, rot = wcs_offset(wcs, start_wcs, shape)
    log.info("astrometric solution: order %d, %d of %d pairs kept, rms %.3f\" (RA) %.3f\" (Dec); the start WCS was "
             "%.1f\", %.1f\" and %.3f deg off", used_order, int(kept.sum()), di.size, rms_ra, rms_dec, off_xi,
             off_eta, rot)
    return AstrometricSolution(wcs=wcs, order=used_order, det_index=di, ref_index=rj, dxi=dx_res, deta=dy_res,
                               rejected=~kept, rms_ra=rms_ra, rms_dec=rms_dec, n_ref=int(kept.sum()),
                               pattern=pattern, start_offset=(off_xi, off_eta), start_rotation=rot)
