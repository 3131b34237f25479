"""Standard-star photometry: matching, the zero-point/extinction/colour-term fit, the illumination fit.

Pure functions on arrays (no database): the photometric tasks
(:mod:`awe.tasks.photometry`) select, load and store around them.

The photometric model, per star ``i`` measured on chip ``c(i)`` at airmass ``X``::

    m_cat - m_inst = ZP[c] - k X + colour_term * colour,     m_inst = -2.5 log10(ADU / s)

(``ZP`` per chip, one extinction ``k`` for the night, one colour term),
fitted by weighted least squares with iterative outlier rejection
(:func:`fit_photometry`). The illumination correction (:func:`fit_illumination`)
is a low-order 2-D polynomial fitted to the factor ``10**(-0.4 (residual))``
that brings each star's counts to the chip's zero point, normalised to a
median of 1 over the chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["find_offset", "match_nearest", "instrumental_mag", "PhotometricFit", "fit_photometry",
           "IlluminationResult", "fit_illumination", "TooFewStarsError"]

#: magnitude error floor added in quadrature to every star's error (flat-field and aperture systematics)
ERROR_FLOOR = 0.005


class TooFewStarsError(ValueError):
    """Too few usable standard-star measurements for the fit."""


# ============================================================================ matching
def find_offset(pred_x: np.ndarray, pred_y: np.ndarray, det_x: np.ndarray, det_y: np.ndarray,
                search_radius: float, bin_size: float = 1.0) -> tuple[float, float, int]:
    """The common shift (detected - predicted) of a set of positions, by voting.

    Every pair (predicted star, detection) closer than ``search_radius`` votes
    for its difference in a 2-D histogram of ``bin_size`` bins; the fullest
    bin (smoothed over its neighbours) wins, and the shift is the median of the
    differences within one bin of it. A pointing error shifts every star the
    same way, so the true shift collects one vote per star while chance pairs
    spread out.

    Parameters
    ----------
    pred_x, pred_y : ndarray
        Predicted positions [pix].
    det_x, det_y : ndarray
        Detected positions [pix].
    search_radius : float
        Largest shift considered [pix].
    bin_size : float
        Histogram bin [pix].

    Returns
    -------
    dx, dy : float
        The shift [pix] (0, 0 with no votes).
    votes : int
        Pairs that agree with it (the number of stars matched by it).
    """
    px, py, qx, qy = (np.asarray(a, dtype=float).ravel() for a in (pred_x, pred_y, det_x, det_y))
    if px.size == 0 or qx.size == 0:
        return 0.0, 0.0, 0
    dx = qx[None, :] - px[:, None]
    dy = qy[None, :] - py[:, None]
    near = dx ** 2 + dy ** 2 <= search_radius ** 2
    dx, dy = dx[near], dy[near]
    if dx.size == 0:
        return 0.0, 0.0, 0
    n = int(math.ceil(search_radius / bin_size))
    edges = np.arange(-n, n + 1) * bin_size
    hist, _, _ = np.histogram2d(dx, dy, bins=(edges, edges))
    padded = np.pad(hist, 1)
    smooth = sum(padded[1 + i:1 + i + hist.shape[0], 1 + j:1 + j + hist.shape[1]]
                 for i in (-1, 0, 1) for j in (-1, 0, 1))
    ix, iy = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    cx, cy = (edges[ix] + edges[ix + 1]) / 2, (edges[iy] + edges[iy + 1]) / 2
    close = (np.abs(dx - cx) <= 1.5 * bin_size) & (np.abs(dy - cy) <= 1.5 * bin_size)
    if not close.any():
        return 0.0, 0.0, 0
    return float(np.median(dx[close])), float(np.median(dy[close])), int(close.sum())


def match_nearest(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
                  radius: float) -> np.ndarray:
    """For each position of set 1, the index of the nearest position of set 2 within ``radius`` (-1: none).

    A position of set 2 is given to one position of set 1 only (the closer).
    """
    from scipy.spatial import cKDTree

    x1, y1, x2, y2 = (np.asarray(a, dtype=float).ravel() for a in (x1, y1, x2, y2))
    out = np.full(x1.size, -1, dtype=int)
    if x1.size == 0 or x2.size == 0:
        return out
    dist, idx = cKDTree(np.column_stack([x2, y2])).query(np.column_stack([x1, y1]), distance_upper_bound=radius)
    found = np.isfinite(dist)
    order = np.argsort(np.where(found, dist, np.inf))
    taken: set[int] = set()
    for i in order:
        if not found[i]:
            break
        if int(idx[i]) not in taken:
            taken.add(int(idx[i]))
            out[i] = int(idx[i])
    return out


def instrumental_mag(flux: np.ndarray, flux_err: np.ndarray, exptime: np.ndarray | float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``-2.5 log10(flux / exptime)`` and its error (NaN where the flux is not positive)."""
    flux = np.asarray(flux, dtype=float)
    flux_err = np.asarray(flux_err, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = flux > 0
        mag = np.where(good, -2.5 * np.log10(np.where(good, flux, 1.0) / exptime), np.nan)
        err = np.where(good, 2.5 / math.log(10) * flux_err / np.where(good, flux, 1.0), np.nan)
    return mag, err


# ============================================================================ the photometric fit
@dataclass
class PhotometricFit:
    """The result of :func:`fit_photometry`.

    Attributes
    ----------
    chips : list of str
        The chips, in the order of ``zeropoint``.
    zeropoint, zeropoint_error : dict
        Per chip [mag] (for colour 0 when a colour term is fitted).
    extinction, extinction_error : float
        [mag/airmass]; the error is 0 when the extinction was fixed.
    extinction_fitted : bool
        Whether the extinction was a free parameter.
    colour_term, colour_term_error : float or None
        [mag/mag]; None without colours (the error is 0 when the term was fixed).
    colour_term_fitted : bool
    used : ndarray of bool
        The measurements kept (not rejected as outliers, finite).
    residual : ndarray
        ``m_cat - m_inst - model`` of every measurement [mag] (NaN where not finite).
    rms : dict
        Per chip: weighted rms of the residuals of the kept measurements (weights 1 / error**2) [mag].
    n_stars : dict
        Per chip: measurements kept.
    n_rejected : int
        Outliers rejected.
    """

    chips: list[str]
    zeropoint: dict[str, float]
    zeropoint_error: dict[str, float]
    extinction: float
    extinction_error: float
    extinction_fitted: bool
    colour_term: float | None
    colour_term_error: float | None
    colour_term_fitted: bool
    used: np.ndarray
    residual: np.ndarray
    rms: dict[str, float] = field(default_factory=dict)
    n_stars: dict[str, int] = field(default_factory=dict)
    n_rejected: int = 0


def fit_photometry(mag_cat: np.ndarray, mag_inst: np.ndarray, mag_err: np.ndarray, airmass: np.ndarray,
                   chip: np.ndarray, colour: np.ndarray | None = None, *, extinction: float | None = None,
                   colour_term: float | None = None, clip: float = 3.0, max_iterations: int = 10,
                   min_stars: int = 1, error_floor: float = ERROR_FLOOR) -> PhotometricFit:
    """Zero point per chip, extinction and colour term by weighted least squares with outlier rejection.

    Model: ``mag_cat - mag_inst = ZP[chip] - k * airmass + colour_term * colour``.

    Parameters
    ----------
    mag_cat : ndarray
        Catalogue magnitudes of the standards [mag].
    mag_inst : ndarray
        Instrumental magnitudes ``-2.5 log10(ADU/s)`` [mag].
    mag_err : ndarray
        Combined error of both [mag]; ``error_floor`` is added in quadrature.
    airmass : ndarray
    chip : ndarray of str
        The chip of each measurement (one zero point each).
    colour : ndarray, optional
        The standards' colour (e.g. V-R); with it a colour term is fitted.
    extinction : float, optional
        Fixed extinction [mag/airmass]; None fits it (the airmass must vary).
    colour_term : float, optional
        Fixed colour term (with ``colour``); None fits it when ``colour`` is given.
    clip : float
        Reject measurements whose residual exceeds ``clip`` times its error
        (scaled by the fit's reduced chi-square when that is above 1); the
        rejection is iterated until nothing changes.
    min_stars : int
        Fewest measurements kept per chip.

    Raises
    ------
    TooFewStarsError
        If a chip keeps fewer than ``min_stars`` measurements, or there are
        fewer measurements than free parameters.
    """
    mag_cat, mag_inst, mag_err, airmass = (np.asarray(a, dtype=float).ravel()
                                           for a in (mag_cat, mag_inst, mag_err, airmass))
    chip = np.asarray(chip).astype(str).ravel()
    y = mag_cat - mag_inst
    sigma = np.sqrt(np.square(np.nan_to_num(mag_err, nan=1.0)) + error_floor ** 2)
    finite = np.isfinite(y) & np.isfinite(airmass) & np.isfinite(mag_err) & (mag_err >= 0)
    use_colour = colour is not None
    col = np.asarray(colour, dtype=float).ravel() if colour is not None else np.zeros_like(y)
    if use_colour:
        finite &= np.isfinite(col)
    chips = sorted({str(c) for c in chip[finite]})
    if not chips:
        raise TooFewStarsError("no usable standard-star measurement (no finite magnitude)")
    used = finite.copy()
    n_rejected = 0
    fit_k, fit_c = extinction is None, use_colour and colour_term is None
    target = y.copy()
    if not fit_k:
        target = target + float(extinction) * airmass  # type: ignore[arg-type]
    if use_colour and not fit_c:
        target = target - float(colour_term) * col  # type: ignore[arg-type]
    design = _design(chip, chips, airmass, col, fit_c, fit_k)
    w = 1.0 / sigma
    solution = cov = residual = None
    for _ in range(max_iterations + 1):
        for c in chips:
            n = int(np.count_nonzero(used & (chip == c)))
            if n < min_stars:
                raise TooFewStarsError(f"chip {c}: {n} usable standard-star measurement(s), at least {min_stars} "
                                       "are needed")
        a, b = design[used] * w[used, None], target[used] * w[used]
        if a.shape[0] < a.shape[1]:
            raise TooFewStarsError(f"{a.shape[0]} standard-star measurements for {a.shape[1]} free parameters")
        solution, *_ = np.linalg.lstsq(a, b, rcond=None)
        residual = target - design @ solution
        dof = a.shape[0] - a.shape[1]
        chi2 = float(np.sum((residual[used] / sigma[used]) ** 2)) / dof if dof > 0 else 1.0
        scale = max(chi2, 1.0)
        cov = np.linalg.pinv(a.T @ a) * scale
        if dof <= 1:
            break  # no outlier can be told from the others
        bad = finite & (np.abs(residual) > clip * sigma * math.sqrt(scale))
        new_used = finite & ~bad
        if np.array_equal(new_used, used):
            break
        n_rejected = int(np.count_nonzero(finite & ~new_used))
        used = new_used
    assert solution is not None and cov is not None and residual is not None
    errors = np.sqrt(np.diag(cov))
    nz = len(chips)
    k_index = nz if fit_k else None
    c_index = (nz + (1 if fit_k else 0)) if fit_c else None
    k = -float(solution[k_index]) if k_index is not None else float(extinction)  # type: ignore[arg-type]
    if c_index is not None:
        c_value: float | None = float(solution[c_index])
        c_error: float | None = float(errors[c_index])
    elif use_colour:
        c_value, c_error = float(colour_term), 0.0  # type: ignore[arg-type]
    else:
        c_value = c_error = None
    residual = np.where(finite, residual, np.nan)
    rms = {c: _weighted_rms(residual[used & (chip == c)], sigma[used & (chip == c)]) for c in chips}
    return PhotometricFit(
        chips=chips, zeropoint={c: float(solution[i]) for i, c in enumerate(chips)},
        zeropoint_error={c: float(errors[i]) for i, c in enumerate(chips)},
        extinction=k, extinction_error=float(errors[k_index]) if k_index is not None else 0.0,
        extinction_fitted=fit_k, colour_term=c_value, colour_term_error=c_error,
        colour_term_fitted=fit_c, used=used, residual=residual, rms=rms,
        n_stars={c: int(np.count_nonzero(used & (chip == c))) for c in chips}, n_rejected=n_rejected)


def _weighted_rms(residual: np.ndarray, sigma: np.ndarray) -> float:
    """``sqrt(sum(r**2 / s**2) / sum(1 / s**2))``: the rms the bright (precise) stars dominate."""
    w = 1.0 / sigma ** 2
    return float(np.sqrt(np.sum(w * residual ** 2) / np.sum(w))) if residual.size else float("nan")


def _design(chip: np.ndarray, chips: list[str], airmass: np.ndarray, colour: np.ndarray, use_colour: bool,
            fit_extinction: bool) -> np.ndarray:
    columns = [(chip == c).astype(float) for c in chips]
    if fit_extinction:
        columns.append(airmass)  # its coefficient is -k
    if use_colour:
        columns.append(colour)
    return np.column_stack(columns)


# ============================================================================ the illumination fit
@dataclass
class IlluminationResult:
    """The result of :func:`fit_illumination`.

    Attributes
    ----------
    coefficients : ndarray
        ``c[i, j]`` of ``u**i v**j`` (``u, v``: pixel coordinates scaled to -1..1,
        :class:`awe.model.science.IlluminationFit`'s convention), normalised so
        that the correction's median over the chip is 1.
    degree : int
        The degree used (0: no significant pattern, the correction is 1).
    rms : float
        Weighted rms (1 / error**2) of the kept stars' residuals from the fitted correction [fraction].
    used : ndarray of bool
        The stars kept.
    n_rejected : int
    """

    coefficients: np.ndarray
    degree: int
    rms: float
    used: np.ndarray
    n_rejected: int


def fit_illumination(x: np.ndarray, y: np.ndarray, residual_mag: np.ndarray, mag_err: np.ndarray,
                     shape: tuple[int, int], degree: int = 2, clip: float = 3.0, max_iterations: int = 10,
                     error_floor: float = ERROR_FLOOR, select_degree: bool = True) -> IlluminationResult:
    """A low-order 2-D polynomial illumination correction from standard-star residuals of one chip.

    A star whose catalogue magnitude is brighter than its zero-point-calibrated
    magnitude by ``residual_mag`` (``m_cat - m_inst - model``) received too few
    counts there: the frame has to be multiplied by ``10**(-0.4 residual_mag)``
    at its position. That factor is fitted (weighted by the stars' errors, with
    iterative ``clip``-sigma rejection) and normalised to a median of 1 over the
    ``shape`` grid, so the correction moves no flux on average: the zero point
    fitted on corrected frames changes only by the pattern's mean.

    With ``select_degree`` the degree is chosen from 0 (no pattern: the
    correction is 1) to ``degree`` by Akaike's information criterion
    ``chi2 + 2 n_coefficients`` (the errors scaled by the reduced chi-square of
    the highest degree when that exceeds 1), which picks the surface expected
    to predict the true pattern best: a pattern the stars cannot tell from
    their noise is not put into every frame.

    Parameters
    ----------
    x, y : ndarray
        0-based pixel positions on the trimmed grid.
    residual_mag, mag_err : ndarray
        Residuals of the photometric fit and their errors [mag].
    shape : (ny, nx)
        The trimmed grid.
    degree : int
        (Highest) total degree of the polynomial (1: a plane, 2: quadratic).

    Raises
    ------
    TooFewStarsError
        If fewer stars than twice the number of coefficients are left.
    """
    x, y, res, err = (np.asarray(a, dtype=float).ravel() for a in (x, y, residual_mag, mag_err))
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(res) & np.isfinite(err)
    value = 10 ** (-0.4 * res)
    sigma = np.sqrt(err ** 2 + error_floor ** 2) * math.log(10) / 2.5 * value
    fits = {d: _fit_surface(x, y, value, sigma, finite, shape, d, clip, max_iterations)
            for d in (range(0, degree + 1) if select_degree else [degree])}
    chosen = degree
    if select_degree:
        top = fits[degree]
        used = top[1]
        n = int(np.count_nonzero(used))
        terms = (degree + 1) * (degree + 2) // 2
        scale = max(float(np.sum(((value[used] - top[0](x[used], y[used])) / sigma[used]) ** 2)) /
                    max(n - terms, 1), 1.0)

        def aic(d: int) -> float:
            model = fits[d][0](x[used], y[used])
            chi2 = float(np.sum(((value[used] - model) / sigma[used]) ** 2)) / scale
            return chi2 + (d + 1) * (d + 2)
        chosen = min(fits, key=aic)
    surface, used = fits[chosen]
    median = float(np.median(surface.image()))
    coefficients = surface.coefficients / median
    model = np.polynomial.polynomial.polyval2d(*_uv(x, y, shape), coefficients)
    rel = (value[used] / median - model[used]) / model[used]
    w = 1.0 / (sigma[used] / value[used]) ** 2
    rms = float(np.sqrt(np.sum(w * rel ** 2) / np.sum(w)))
    return IlluminationResult(coefficients, chosen, rms, used, int(np.count_nonzero(finite & ~used)))


def _fit_surface(x: np.ndarray, y: np.ndarray, value: np.ndarray, sigma: np.ndarray, finite: np.ndarray,
                 shape: tuple[int, int], degree: int, clip: float, max_iterations: int) -> tuple[Any, np.ndarray]:
    """One polynomial degree: the weighted fit with iterative clipping; (IlluminationFit, used)."""
    from awe.model.science import IlluminationFit

    n_terms = (degree + 1) * (degree + 2) // 2
    used = finite.copy()
    fit = None
    for _ in range(max_iterations + 1):
        if np.count_nonzero(used) < 2 * n_terms:
            raise TooFewStarsError(f"{int(np.count_nonzero(used))} standard-star measurements on the chip: a "
                                   f"degree-{degree} illumination fit needs at least {2 * n_terms}")
        fit = IlluminationFit.fit(x[used], y[used], value[used], shape, degree=degree,
                                  weights=1.0 / sigma[used] ** 2)
        norm = (value - fit(x, y)) / sigma
        chi2 = float(np.sum(norm[used] ** 2)) / max(int(np.count_nonzero(used)) - n_terms, 1)
        new_used = finite & (np.abs(norm) <= clip * math.sqrt(max(chi2, 1.0)))
        if np.array_equal(new_used, used):
            break
        used = new_used
    assert fit is not None
    return fit, used


def _uv(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    return 2.0 * x / max(nx - 1, 1) - 1.0, 2.0 * y / max(ny - 1, 1) - 1.0
