"""Cosmic-ray masking of a science frame: L.A.Cosmic plus a PSF check.

:func:`find_cosmics` runs L.A.Cosmic (van Dokkum 2001) -- by default on its
candidate pixels only (:func:`_candidate_lacosmic`: the Laplacian everywhere,
astroscrappy's medians and growth steps only where the Laplacian can pass
the threshold; ~10x less CPU, 95 % of astroscrappy's pixels on a full-size
chip and the same figures against the simulator's cosmic-ray truth), or on
every pixel with ``astroscrappy.detect_cosmics`` -- and then vets every connected group of
flagged pixels against the frame's PSF (:func:`psf_consistent`): a group
that a pixel-integrated Moffat star explains as well as "sharp spike" is
released, and a star with a cosmic ray on it keeps only the cosmic ray.

L.A.Cosmic alone tells stars from cosmic rays by their sharpness
(``objlim``). That mostly works when stars are well sampled (WFI's
0.238"/px, FWHM 3-6 px), though it still flags a few star cores, and fails
when they are undersampled (FWHM below ~1.5 px, e.g. a WFI chip shrunk 8
times, 1.9"/px: seeing 0.8-1.5" is FWHM 0.4-0.8 px), where nearly every
star core is as sharp as a cosmic ray and only the faint wings the PSF
puts in the neighbouring pixels give it away. The PSF check weighs exactly
those. Below FWHM ~0.6 px even the wings vanish into the noise for the
fainter hits: a 2 x 2 cosmic ray then looks like a star centred on a pixel
corner and is released.

astroscrappy never flags the outer 3 pixels of a frame, nor the neighbours
of masked pixels (it grows the mask by one pixel): the frame is given to it
mirrored beyond its edges, with its bad pixels filled from their good
neighbours instead of masked (~4 % of the pixels of a WFI chip shrunk 8
times, 511 x 254, lay in those blind spots).

Measured on 512 x 512 frames with 200 Moffat stars, 8 galaxies and 200
hits of :func:`awe.image._testing.add_cosmic_rays` (3 seeds; fraction of
hit pixels masked / of star pixels masked): 0.238"/px, seeing 0.8-1.5":
0.97-0.99 / 0.000 %; 1.9"/px: seeing 0.8" (FWHM 0.42 px) 0.81-0.85 /
0.19 %, 1.0" 0.88-0.91 / 0.33 %, 1.2" 0.92-0.96 / 0.25 %, 1.5" 0.97-0.99
/ 0.23 %. The stars still flagged are close blends (< 1.5 FWHM apart,
with a star or a galaxy, some on the frame's edge) and stars touching a
cosmic ray.

Pure function on arrays; no files, no database.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import astroscrappy
import bottleneck as bn
import numpy as np
import sep
from scipy import ndimage as ndi
from scipy.stats import chi2 as chi2_dist

from awe.image.background import (TooFewStarsError, _prepare_image, _sep_background, measure_seeing,
                                  moffat_alpha)
from awe.image.weights import grow_mask

__all__ = ["find_cosmics", "default_objlim", "default_model_error", "psf_consistent", "PsfCheck"]

log = logging.getLogger(__name__)


def default_model_error(psf_fwhm: float) -> float:
    """PSF-model error allowed in the star check: 5 % when sampled (FWHM >= 1.5 px), up to 7.5 % at 0.5 px."""
    return 0.05 + 0.025 * float(np.clip(1.5 - psf_fwhm, 0.0, 1.0))


def default_objlim(psf_fwhm: float) -> float:
    """L.A.Cosmic's star/cosmic contrast limit for a PSF of ``psf_fwhm`` pixels.

    5 (van Dokkum's value) for well-sampled stars (FWHM >= 3 px), rising
    linearly to 15 at FWHM 1.5 px and below: the sharper the stars, the
    more contrast a cosmic ray must show. Undersampled stars are protected
    by :func:`psf_consistent` anyway.
    """
    return float(np.interp(psf_fwhm, [1.5, 3.0], [15.0, 5.0]))


@dataclass(frozen=True)
class PsfCheck:
    """A pixel-integrated circular Moffat PSF, tabulated for fast stamps.

    The PSF averaged over one pixel is tabulated every ``1 / steps`` pixel,
    so the stamp of a star at any centre on that grid is a strided slice.

    Attributes
    ----------
    fwhm, beta : float
        PSF FWHM (pixels) and Moffat ``beta``.
    half : int
        Stamp half size: stamps are ``2 half + 1`` pixels square.
    steps : int
        Table points per pixel (centre resolution ``1 / steps`` pixel).
    reach : int
        Largest star offset from the stamp centre (pixels) the table allows.
    table : numpy.ndarray
        Pixel-integrated unit-flux PSF at offsets ``-(half + reach) ..
        half + reach`` pixels, every ``1 / steps`` pixel, along each axis.
    """

    fwhm: float
    beta: float
    half: int
    steps: int
    reach: int
    table: np.ndarray

    @classmethod
    def build(cls, fwhm: float, beta: float = 3.0) -> PsfCheck:
        """Tabulate a PSF of ``fwhm`` pixels; stamp size and resolution follow from it."""
        if fwhm <= 0 or beta <= 1:
            raise ValueError(f"PSF needs fwhm > 0 and beta > 1, got {fwhm} and {beta}")
        half = int(np.clip(np.ceil(fwhm) + 1, 3, 8))
        reach = half
        steps = int(np.clip(np.ceil(60.0 / fwhm / 10.0) * 10, 10, 100))
        alpha = moffat_alpha(fwhm, beta)
        # Samples at (i + 0.5) / steps from -(half + reach + 0.5): the mean of
        # `steps` consecutive samples is the average over one pixel.
        m = int(round((2 * (half + reach) + 1) * steps))
        u = (np.arange(m) + 0.5) / steps - (half + reach + 0.5)
        # box[i, j] averages samples i..i+steps-1: the pixel centred at offset
        # i / steps - (half + reach). The table is symmetric about its centre
        # (offset 0, index centre): only the quadrant from there is computed.
        centre = (half + reach) * steps
        v = u[centre:]
        prof = (1.0 + (v[:, None] ** 2 + v[None, :] ** 2) / alpha**2) ** (-beta)
        prof *= (beta - 1.0) / (np.pi * alpha**2)
        c = np.cumsum(np.cumsum(np.pad(prof, ((1, 0), (1, 0))), axis=0), axis=1)
        quadrant = (c[steps:, steps:] - c[:-steps, steps:] - c[steps:, :-steps] + c[:-steps, :-steps])
        half_table = np.concatenate([quadrant[:0:-1], quadrant], axis=0)
        box = np.concatenate([half_table[:, :0:-1], half_table], axis=1)
        return cls(fwhm=float(fwhm), beta=float(beta), half=half, steps=steps, reach=reach,
                   table=box / steps**2)

    def templates(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        """Unit-flux stamps ``(len(ix), size * size)`` of stars centred at ``(ix, iy) / steps``.

        ``ix``, ``iy`` are integer offsets from the stamp's central pixel in
        units of ``1 / steps`` pixel, at most ``reach * steps`` in size.
        """
        n = 2 * self.half + 1
        width = self.table.shape[1]
        # Pixel (k, l) - half seen from a star at d: table index (k - d + half + reach) steps, one flat take
        base = (self.reach * self.steps - np.asarray(iy)) * width + (self.reach * self.steps - np.asarray(ix))
        return self.table.ravel().take(base[:, None] + _template_offsets(n, self.steps, width)[None, :])


@functools.lru_cache(maxsize=16)
def _template_offsets(n: int, steps: int, width: int) -> np.ndarray:
    """Flat offsets in a PSF table of ``width`` columns of the ``n`` x ``n`` pixels of a stamp."""
    k = np.arange(n) * steps
    return (k[:, None] * width + k[None, :]).ravel()


@functools.lru_cache(maxsize=256)
def _chi2_limit(significance: float, dof: int) -> float:
    """``1 - significance`` quantile of a chi^2 law with ``dof`` degrees of freedom."""
    return float(chi2_dist.isf(significance, dof))


@functools.lru_cache(maxsize=16)
def _plane_design(n: int) -> np.ndarray:
    """Columns 1, x, y of a tilted-plane sky on an ``n`` x ``n`` stamp, shape ``(3, n * n)``."""
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    return np.stack([np.ones(n * n), x.ravel(), y.ravel()])


class _PlaneFit:
    """The weighted tilted-plane fit of one stamp, for fitting ``flux * template + plane`` to many templates.

    With the plane ``X`` (3 columns) and weights ``W``, each template ``t``
    adds one column: eliminating the plane (its normal matrix ``P = X W
    X^T`` is shared), the flux is ``(t W s - c P^-1 b) / (t W t - c P^-1
    c)`` with ``c = X W t``, ``b = X W s``, and the chi^2 falls below the
    plane's by ``numerator^2 / denominator`` -- the 4 x 4 normal equations
    of each template solved at once, without solving them one by one.
    ``singular`` when the stamp's usable pixels do not fix a plane.
    """

    def __init__(self, stamp: np.ndarray, w: np.ndarray):
        n = int(round(np.sqrt(stamp.size)))
        self.plane = _plane_design(n)
        self.w, self.wd = w, w * stamp
        # the template products X W t and t W s in one product
        self.cols = np.empty((stamp.size, 4))
        self.cols[:, :3] = (self.plane * w).T
        self.cols[:, 3] = self.wd
        self.b = self.cols[:, :3].T @ stamp
        self.p_inv = _inverse_3x3(self.cols[:, :3].T @ self.plane.T)
        self.singular = self.p_inv is None
        self.chi2 = np.inf if self.p_inv is None else float(stamp @ self.wd - self.b @ self.p_inv @ self.b)

    def fit(self, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """chi^2 of each template's fit (``inf`` where its flux is not positive), its flux and ``c P^-1``."""
        if self.p_inv is None:
            n_t = len(templates)
            return np.full(n_t, np.inf), np.zeros(n_t), np.zeros((n_t, 3))
        products = templates @ self.cols                # (n_t, 4): X W t and t W s
        c = products[:, :3]
        cp = c @ self.p_inv
        den = (templates * templates) @ self.w - (cp * c).sum(axis=1)
        num = products[:, 3] - cp @ self.b
        positive = den > 0
        flux = np.divide(num, den, out=np.zeros_like(num), where=positive)
        chi2 = np.where(positive & (num > 0), self.chi2 - num * flux, np.inf)
        return chi2, flux, cp

    def plane_of(self, flux: float, cp: np.ndarray) -> np.ndarray:
        """The plane's (sky, x slope, y slope) fitted with a template of that ``flux`` and ``c P^-1``."""
        assert self.p_inv is not None
        return self.p_inv @ self.b - flux * cp


def _inverse_3x3(m: np.ndarray) -> np.ndarray | None:
    """Inverse of a symmetric positive 3 x 3 matrix by its adjugate; ``None`` if singular."""
    (a, b, c), (_, e, f), (_, _, i) = m.tolist()
    co_a, co_b, co_c = e * i - f * f, c * f - b * i, b * f - c * e
    det = a * co_a + b * co_b + c * co_c
    if not det > 1e-12 * abs(a * e * i) or not np.isfinite(det):
        return None
    return np.array([[co_a, co_b, co_c], [co_b, a * i - c * c, b * c - a * f],
                     [co_c, b * c - a * f, a * e - b * b]]) / det


def _linear_psf_fit(templates: np.ndarray, stamp: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted fit of ``flux * template + tilted plane`` for each template.

    Returns the chi^2 (``inf`` where the flux comes out <= 0) and the
    parameters ``(flux, sky, x slope, y slope)`` of each fit.
    """
    fit = _PlaneFit(stamp, w)
    chi2, flux, cp = fit.fit(templates)
    if fit.p_inv is None:
        return chi2, np.zeros((len(templates), 4))
    params = np.empty((len(templates), 4))
    params[:, 0] = flux
    params[:, 1:] = (fit.p_inv @ fit.b)[None, :] - flux[:, None] * cp
    return chi2, params


def _plane_chi2(stamp: np.ndarray, w: np.ndarray) -> float:
    """chi^2 of a weighted tilted-plane fit (pixels with ``w = 0`` ignored)."""
    return _PlaneFit(stamp, w).chi2


@functools.lru_cache(maxsize=64)
def _grid(half_grid: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets of a ``2 half_grid + 1`` square grid of centres, and the column and row of each grid point."""
    size = 2 * half_grid + 1
    return np.arange(-half_grid, half_grid + 1) * step, np.tile(np.arange(size), size), np.arange(size).repeat(size)


def _best_psf_fit(check: PsfCheck, stamp: np.ndarray, w: np.ndarray, centre: tuple[int, int] = (0, 0),
                  base: np.ndarray | None = None, span: float = 0.6,
                  avoid: tuple[int, int, float] | None = None,
                  plane: _PlaneFit | None = None) -> tuple[float, np.ndarray, np.ndarray, tuple[int, int]]:
    """Best PSF + plane fit with the star within ``span`` pixel of ``centre``.

    ``centre`` is in table steps from the stamp centre; ``base`` (e.g. an
    already fitted neighbour) is subtracted from the stamp first. A coarse
    grid of centres spanning +-``span`` (0.6 pixel by default, as a star
    centred on a pixel corner may peak in either pixel) in steps of 0.2
    pixel (wide spans: 0.5 pixel or FWHM / 4), then zoomed 5 x 5 grids around
    the best down to the table resolution: undersampled stars need their
    centre to ~0.01 pixel. ``avoid = (x, y, r)`` (table steps) forbids
    centres within ``r`` of ``(x, y)``. Returns the chi^2, the fitted star
    (``flux * template``), the whole fitted model (star + plane + ``base``)
    and the star's centre (table steps); the arrays are zeros if no fit has
    a positive flux. ``plane``: the :class:`_PlaneFit` of ``stamp`` and ``w`` (no ``base``), if made already.
    """
    s = check.steps
    limit = check.reach * s
    data = stamp if base is None else stamp - base
    if plane is None or base is not None:
        plane = _PlaneFit(data, w)
    coarse = 0.2 if span <= 1.0 else max(0.5, check.fwhm / 4.0)
    step = max(int(round(coarse * s)), 1)
    cx, cy = centre
    half_grid = max(int(round(span * s / step)), 1)
    best, best_t, best_flux, best_cp = np.inf, None, 0.0, None
    while True:
        offs, col, row = _grid(half_grid, step)
        xs = np.minimum(np.maximum(cx + offs, -limit), limit)
        ys = np.minimum(np.maximum(cy + offs, -limit), limit)
        gx, gy = xs[col], ys[row]                                   # meshgrid(xs, ys) order
        templates = check.templates(gx, gy)
        chi2, flux, cp = plane.fit(templates)
        if avoid is not None:
            chi2 = np.where(np.hypot(gx - avoid[0], gy - avoid[1]) < avoid[2], np.inf, chi2)
        i = int(np.argmin(chi2))
        if chi2[i] < best:
            best, cx, cy = float(chi2[i]), int(gx[i]), int(gy[i])
            best_t, best_flux, best_cp = templates[i], float(flux[i]), cp[i]
        if step == 1:
            break
        step = max(step // 4, 1)
        half_grid = 2
    if best_t is None or best_cp is None:
        return best, np.zeros_like(stamp), np.zeros_like(stamp), (cx, cy)
    star = best_flux * best_t
    model = star + plane.plane_of(best_flux, best_cp) @ plane.plane
    if base is not None:
        model = model + base
    return best, star, model, (cx, cy)


def _batch_best_fits(check: PsfCheck, stamps: np.ndarray, ws: np.ndarray,
                     span: float = 0.6) -> list[tuple[float, np.ndarray, np.ndarray, tuple[int, int]]]:
    """:func:`_best_psf_fit` (centre 0, no ``base``, nothing avoided) of many stamps ``(G, N)`` at once.

    The same grids and zooms, each stamp's plane eliminated as in
    :class:`_PlaneFit`, the products of all stamps in one batched matrix
    product per round: the same result as stamp by stamp.
    """
    g_count, size = stamps.shape
    out: list[tuple[float, np.ndarray, np.ndarray, tuple[int, int]]] = []
    if g_count == 0:
        return out
    s = check.steps
    limit = check.reach * s
    fits = [_PlaneFit(stamps[k], ws[k]) for k in range(g_count)]      # each stamp's plane eliminated
    plane = fits[0].plane
    cols = np.stack([f.cols for f in fits])
    b = np.stack([f.b for f in fits])
    usable = np.array([not f.singular for f in fits])
    p_inv = np.stack([np.zeros((3, 3)) if f.p_inv is None else f.p_inv for f in fits])
    base_chi2 = np.array([f.chi2 for f in fits])
    coarse = 0.2 if span <= 1.0 else max(0.5, check.fwhm / 4.0)
    step = max(int(round(coarse * s)), 1)
    half_grid = max(int(round(span * s / step)), 1)
    cx, cy = np.zeros(g_count, dtype=np.int64), np.zeros(g_count, dtype=np.int64)
    best = np.full(g_count, np.inf)
    best_t = np.zeros((g_count, size))
    best_flux = np.zeros(g_count)
    best_cp = np.zeros((g_count, 3))
    found = np.zeros(g_count, dtype=bool)
    width = check.table.shape[1]
    offsets = _template_offsets(2 * check.half + 1, s, width)
    table = check.table.ravel()
    rows = np.arange(g_count)
    first_round = True
    while True:
        offs, col, row = _grid(half_grid, step)
        xs = np.minimum(np.maximum(cx[:, None] + offs[None, :], -limit), limit)
        ys = np.minimum(np.maximum(cy[:, None] + offs[None, :], -limit), limit)
        gx, gy = xs[:, col], ys[:, row]                            # (G, n_t), meshgrid order
        if first_round:
            # every stamp's first grid is around its centre: the same templates
            shared = check.templates(gx[0], gy[0])                  # (n_t, N)
            templates = np.broadcast_to(shared, (g_count,) + shared.shape)
            squares = ws @ (shared * shared).T                       # (G, n_t)
        else:
            base_index = (limit - gy) * width + (limit - gx)
            templates = table.take(base_index[:, :, None] + offsets[None, None, :])     # (G, n_t, N)
            squares = ((templates * templates) @ ws[:, :, None])[:, :, 0]
        first_round = False
        products = (shared @ cols) if templates.strides[0] == 0 else templates @ cols   # (G, n_t, 4)
        c = products[:, :, :3]
        cp = c @ p_inv                                               # (G, n_t, 3)
        den = squares - (cp * c).sum(axis=2)
        num = products[:, :, 3] - (cp @ b[:, :, None])[:, :, 0]
        positive = den > 0
        flux = np.divide(num, den, out=np.zeros_like(num), where=positive)
        chi2 = np.where(positive & (num > 0) & usable[:, None], base_chi2[:, None] - num * flux, np.inf)
        i = np.argmin(chi2, axis=1)
        better = chi2[rows, i] < best
        best = np.where(better, chi2[rows, i], best)
        cx = np.where(better, gx[rows, i], cx)
        cy = np.where(better, gy[rows, i], cy)
        best_t[better] = templates[rows[better], i[better]]
        best_flux[better] = flux[rows[better], i[better]]
        best_cp[better] = cp[rows[better], i[better]]
        found |= better
        if step == 1:
            break
        step = max(step // 4, 1)
        half_grid = 2
    for k in range(g_count):
        centre = (int(cx[k]), int(cy[k]))
        if not found[k]:
            out.append((float(best[k]), np.zeros(size), np.zeros(size), centre))
            continue
        star = best_flux[k] * best_t[k]
        sky = p_inv[k] @ b[k] - best_flux[k] * best_cp[k]
        out.append((float(best[k]), star, star + sky @ plane, centre))
    return out


def _second_peak(check: PsfCheck, stamp: np.ndarray, w: np.ndarray, model: np.ndarray,
                 centre: tuple[int, int]) -> bool:
    """Whether the one-star fit leaves a 4-sigma excess a resolved distance from the star.

    A necessary condition for a blend of two stars (:func:`_two_star_chi2`);
    a cosmic ray's excess sits on the star the fit put on it.
    """
    n = 2 * check.half + 1
    y, x = np.divmod(np.arange(n * n), n)
    dist = np.hypot(x - check.half - centre[0] / check.steps, y - check.half - centre[1] / check.steps)
    excess = (stamp - model) * np.sqrt(w) > 4.0
    return bool(np.any(excess & (dist >= _min_separation(check) - 0.5)))


def _min_separation(check: PsfCheck) -> float:
    """Smallest distance (pixels) at which two stars count as resolved: ``max(1.5, 1.5 FWHM)``."""
    return max(1.5, 1.5 * check.fwhm)


def _resolved(check: PsfCheck, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether stars centred at ``a`` and ``b`` (table steps) are resolved."""
    return bool(np.hypot(a[0] - b[0], a[1] - b[1]) >= _min_separation(check) * check.steps)


def _two_star_chi2(check: PsfCheck, stamp: np.ndarray, w: np.ndarray, first: np.ndarray,
                   centre: tuple[int, int]) -> float:
    """chi^2 of two stars: ``first`` (at ``centre``, refitted) plus one anywhere in the stamp.

    The stars must be resolved: at least ``max(1.5, 1.5 FWHM)`` pixels
    apart (closer pairs of undersampled stars are indistinguishable from a
    cosmic ray a few pixels long).
    """
    reach = float(check.reach)
    avoid = (centre[0], centre[1], _min_separation(check) * check.steps)
    chi2, second, _, where = _best_psf_fit(check, stamp, w, base=first, span=reach, avoid=avoid)
    if not second.any():
        return np.inf
    # One more alternation: refit the first star with the second subtracted, then the second.
    _, first, _, centre = _best_psf_fit(check, stamp, w, base=second)
    avoid = (centre[0], centre[1], avoid[2])
    chi2_again = _best_psf_fit(check, stamp, w, base=first, span=reach, avoid=avoid)[0]
    return min(chi2, chi2_again)


_STAR_PARAMETERS = 3   # flux and centre


def _star_outside(check: PsfCheck, stamp: np.ndarray, w: np.ndarray, centre: tuple[int, int],
                  significance: float) -> bool:
    """Whether a star at ``centre`` (table steps) is detected in the pixels of weight ``w`` alone.

    Its flux fitted on those pixels (with the tilted plane) must lower the
    plane's chi^2 by more than the ``1 - significance`` quantile of chi^2
    with one degree of freedom.
    """
    template = check.templates(np.array([centre[0]]), np.array([centre[1]]))
    chi2, _ = _linear_psf_fit(template, stamp, w)
    return bool(_plane_chi2(stamp, w) - chi2[0] > _chi2_limit(significance, 1))


def _judge_group(check: PsfCheck, stamp: np.ndarray, w: np.ndarray, own: np.ndarray, significance: float,
                 blends: bool, searches: tuple | None = None) -> tuple[bool, np.ndarray | None]:
    """Judge one flagged group on its stamp (see :func:`psf_consistent`).

    Returns ``(True, None)`` for a star, ``(False, pixels)`` for a star with
    a cosmic ray on it (``pixels``: the group's star pixels, stamp-shaped,
    flattened) and ``(False, None)`` for a cosmic ray. ``searches``: the results of the three standard
    searches (near the peak, anywhere, anywhere on the pixels outside the group), if made already
    (:func:`_batch_best_fits`).
    """
    n = 2 * check.half + 1
    reach = float(check.reach)
    others = (w > 0) & ~own
    m = int(own.sum())

    def q(dof: int) -> float:
        return _chi2_limit(significance, max(dof, 1))

    # (a): the star near the group's brightest pixel, or anywhere in the
    # stamp (a group on the wing of a bright undersampled star).
    if searches is None:
        plane = _PlaneFit(stamp, w)
        fit = _best_psf_fit(check, stamp, w, plane=plane)
        wide = _best_psf_fit(check, stamp, w, span=reach, plane=plane)
    else:
        fit, wide = searches[0], searches[1]
    chi_star, first, model, centre = fit if fit[0] <= wide[0] else wide
    # Cosmic-ray hypotheses: the group's pixels free, the others on (b) a
    # plane, or (c) a star anywhere in the stamp plus the plane (a cosmic
    # ray on a star's wing); (c) is only fitted when needed.
    chi_plane = _plane_chi2(stamp, w * others)
    wing: list[tuple[float, tuple[int, int]]] = [] if searches is None else [(searches[2][0], searches[2][3])]

    def chi_wing() -> float:
        if not wing:
            fit_c = _best_psf_fit(check, stamp, w * others, span=reach)
            wing.append((fit_c[0], fit_c[3]))
        return wing[0][0]

    sky_ok = chi_star < chi_plane + q(m - 1)
    if sky_ok and chi_star < chi_wing() + q(m + 2):
        return True, None
    # Two stars: a blend, or (a) plus the star (c) put on a neighbour in the
    # stamp (otherwise (c) wins by that unrelated star alone).
    if first.any() and ((sky_ok and _resolved(check, centre, wing[0][1]))
                        or (blends and m >= 2 and _second_peak(check, stamp, w, model, centre))):
        chi_two = _two_star_chi2(check, stamp, w, first, centre)
        if chi_two < chi_plane + q(m - 4) and chi_two < chi_wing() + q(m - 1):
            return True, None
    if m < 2 or not first.any():
        return False, None
    # A star with a cosmic ray on it: the pixels the star model leaves far
    # too bright are the cosmic ray (some may have escaped L.A.Cosmic); the
    # rest of the group is released if the star fitted without them
    # explains it and shows on its own: by more group pixels than its
    # parameters, or in the pixels outside the group (otherwise it is the
    # rest of a cosmic-ray track). A few rounds, as the cosmic ray first
    # drags the fit.
    sigma = np.sqrt(np.divide(1.0, w, where=w > 0, out=np.ones_like(w)))
    near = ndi.binary_dilation(own.reshape(n, n), structure=np.ones((3, 3), bool)).ravel()
    hit = near & (w > 0) & (stamp - model > 4.0 * sigma)
    for _ in range(3):
        n_hit = int((hit & own).sum())
        if not 0 < n_hit < m:
            break
        chi_split, _, model, split_centre = _best_psf_fit(check, stamp, w * ~hit)
        shows = m - n_hit > _STAR_PARAMETERS or _star_outside(check, stamp, w * (others & ~hit), split_centre,
                                                              significance)
        if shows and chi_split < chi_wing() + q(m - n_hit + 2 + int((hit & others).sum())):
            return False, own & ~hit
        more = near & (w > 0) & (stamp - model > 4.0 * sigma)
        if not (more & ~hit).any():
            break
        hit |= more
    return False, None


def psf_consistent(data: np.ndarray, groups: np.ndarray, n_groups: int, check: PsfCheck,
                   sky_rms: float, gain: float, model_error: float = 0.05,
                   significance: float = 1e-3, blends: bool = True,
                   excluded: np.ndarray | None = None) -> np.ndarray:
    """Which flagged pixel groups look like stars rather than cosmic rays.

    For each group of ``m`` flagged pixels a stamp around its brightest
    pixel is fitted by weighted linear least squares under three models:

    (a) a star: flux times the PSF plus a tilted plane (local sky and the
        wings of neighbours), the centre searched within 0.6 pixel of the
        brightest pixel (to 1/100 pixel for undersampled PSFs) and anywhere
        in the stamp (a group on the wing of a bright star);
    (b) a cosmic ray on the sky: the ``m`` pixels free, the others on a
        tilted plane (``m - 1`` more parameters than (a));
    (c) a cosmic ray on a star's wing: the ``m`` pixels free, the others
        fitted by a star anywhere in the stamp plus the plane (``m`` more
        parameters than (a), plus the freedom of the star's position,
        counted as 2). When that star is resolved from (a)'s, (c) may win
        by it alone (an unrelated neighbour): (a) then gets a second star
        too (the two-star fit below) before it is compared with (c).

    The group is released as a star only if neither (b) nor (c) beats (a)
    significantly: ``chi2_a - chi2_b`` and ``chi2_a - chi2_c`` below the
    ``1 - significance`` quantiles of chi^2 laws with those numbers of
    degrees of freedom (how the differences are distributed when the group
    is a star). So a star stays flagged with probability below about twice
    ``significance``, and a cosmic ray is released only when it is too
    faint for its missing PSF wings to show. With ``blends``, a group that
    fails (a) is tried as two blended stars (3 more parameters) before it
    is kept. A group that stays a cosmic ray is split when it is a star
    with a cosmic ray on it: its pixels more than 4 sigma above the star
    model are the cosmic ray, and the rest is released if the star fitted
    without them is as good as (c) and that star shows on its own: either
    by more pixels of the group than its three parameters (flux, centre),
    or by being detected (at ``significance``) in the pixels outside the
    group. One to three pixels alone always fit a star, and the rest of a
    cosmic-ray track beside its brightest pixels is far more common than a
    star touching a cosmic ray. Pixel variance: ``sky_rms^2 + signal /
    gain + (model_error signal)^2``.

    Parameters
    ----------
    data : numpy.ndarray
        Background-subtracted frame (ADU).
    groups : numpy.ndarray
        ``int`` label image of the flagged groups (``scipy.ndimage.label``).
    n_groups : int
        Number of labels.
    check : PsfCheck
        The PSF.
    sky_rms : float
        Sky noise (ADU).
    gain : float
        e-/ADU.
    model_error : float
        Fractional PSF model error allowed per pixel.
    significance : float
        False-alarm probability of the "sharper than the PSF" test.
    blends : bool
        When one star does not explain a group of two or more pixels, try
        two stars (the second anywhere in the stamp: a blend or a bright
        neighbour). The second star of (c)'s comparison is tried either
        way.
    excluded : numpy.ndarray, optional
        ``True`` for pixels never used in a fit (bad pixels).

    Returns
    -------
    numpy.ndarray
        ``bool`` image, True on the flagged pixels that belong to stars
        (whole groups, or the star part of a split group within its stamp).
    """
    h = check.half
    n = 2 * h + 1
    star_pixels = np.zeros(data.shape, dtype=bool)
    if n_groups == 0:
        return star_pixels
    labels = np.arange(1, n_groups + 1)
    peaks = _brightest_pixels(data, groups, n_groups)
    star_groups = np.zeros(n_groups + 1, dtype=bool)
    padded = np.pad(data, h, mode="constant")
    pad_groups = np.pad(groups, h, mode="constant", constant_values=-1)
    pad_excl = np.pad(excluded if excluded is not None else np.zeros(data.shape, bool), h,
                      mode="constant", constant_values=True)
    pad_star = np.zeros(padded.shape, dtype=bool)

    # the stamps around the peaks (stamp y, x = peak y, x in the padded frame), all at once
    py, px = peaks[:, 0], peaks[:, 1]
    stamps = np.lib.stride_tricks.sliding_window_view(padded, (n, n))[py, px].reshape(n_groups, n * n)
    g = np.lib.stride_tricks.sliding_window_view(pad_groups, (n, n))[py, px].reshape(n_groups, n * n)
    excl = np.lib.stride_tricks.sliding_window_view(pad_excl, (n, n))[py, px].reshape(n_groups, n * n)
    usable = ~excl & ((g == 0) | (g == labels[:, None]))
    own_all = (g == labels[:, None]) & usable
    signal = np.clip(stamps, 0.0, None)
    ws = np.where(usable, 1.0 / (sky_rms**2 + signal / gain + (model_error * signal) ** 2), 0.0)
    judged = [(int(k), int(px[i]), int(py[i]), (slice(py[i], py[i] + n), slice(px[i], px[i] + n)), stamps[i],
               ws[i], own_all[i])
              for i, k in enumerate(labels) if (usable[i] & ~own_all[i]).sum() >= 6]
    # a group far sharper than any star, on empty sky, is a cosmic ray without the fits
    if judged:
        sharp = _sharper_than_any_star(check, np.array([j[4] for j in judged]), np.array([j[5] for j in judged]),
                                       np.array([j[6] for j in judged]))
        log.debug("%d of %d flagged groups sharper than any star on empty sky", int(sharp.sum()), len(judged))
        judged = [j for j, obvious in zip(judged, sharp) if not obvious]
    # the three searches every group starts with, all groups at once (in chunks)
    searches: list[tuple] = []
    for start in range(0, len(judged), _BATCH):
        part_of = judged[start:start + _BATCH]
        stamps = np.array([j[4] for j in part_of]).reshape(len(part_of), n * n)
        ws = np.array([j[5] for j in part_of]).reshape(len(part_of), n * n)
        others = (ws > 0) & ~np.array([j[6] for j in part_of]).reshape(len(part_of), n * n)
        near = _batch_best_fits(check, stamps, ws)
        anywhere = _batch_best_fits(check, stamps, ws, span=float(check.reach))
        wing = _batch_best_fits(check, stamps, ws * others, span=float(check.reach))
        searches.extend(zip(near, anywhere, wing))
    for (k, px, py, win, stamp, w, own), found in zip(judged, searches):
        whole, part = _judge_group(check, stamp, w, own, significance, blends, found)
        if whole:
            star_groups[k] = True
            log.debug("group %d at (%d, %d): a star", k, px, py)
        elif part is not None:
            pad_star[win] |= part.reshape(n, n)
            log.debug("group %d at (%d, %d): a star with a cosmic ray", k, px, py)
    return pad_star[h:-h, h:-h] | star_groups[groups]


def _brightest_pixels(data: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's brightest pixel ``(n_groups, 2)`` as (y, x), the first in row order on ties: what
    ``scipy.ndimage.maximum_position`` gives, from a sort of the grouped pixels only (it sorts the whole frame)."""
    where = np.flatnonzero(groups)
    label = groups.ravel()[where]
    order = np.lexsort((-data.ravel()[where], label))        # stable: row order kept among equal values
    first = order[np.searchsorted(label[order], np.arange(1, n_groups + 1))]
    return np.stack(np.unravel_index(where[first], data.shape), axis=1).astype(np.int64)


_OBVIOUS_SIGMA = 5.0   # how far (in sigma) the neighbours of a group's brightest pixel must fall short of the
                       # faintest any star's could be for :func:`_sharper_than_any_star`


def _neighbour_ratios(check: PsfCheck) -> np.ndarray:
    """The PSF's 8 neighbours of its central pixel over that pixel, ``(centres, 8)``, for star centres within
    0.6 pixel of it (every 0.05 pixel; the range :func:`_best_psf_fit` searches near the brightest pixel)."""
    n = 2 * check.half + 1
    offs = np.unique(np.round(np.arange(-0.6, 0.6001, 0.05) * check.steps).astype(int))
    gx, gy = np.meshgrid(offs, offs)
    t = check.templates(gx.ravel(), gy.ravel()).reshape(-1, n, n)
    h = check.half
    ring = t[:, h - 1:h + 2, h - 1:h + 2].reshape(-1, 9)
    return np.delete(ring, 4, axis=1) / ring[:, 4:5]


def _sharper_than_any_star(check: PsfCheck, stamps: np.ndarray, ws: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Which groups (stamps ``(G, N)`` centred on their brightest pixel, weights, own pixels) are cosmic rays
    on empty sky beyond doubt, so that the fits of :func:`psf_consistent` can be spared.

    ``S`` = the sum of the usable neighbours of the brightest pixel that are not the group's, minus ``r`` times
    that pixel, ``r`` being the smallest ratio of those neighbours to the central pixel that the PSF has for
    any centre within 0.6 pixel: a star (with any local sky above zero) makes ``S >= 0`` but for the noise.
    A group is obvious when ``S`` lies ``_OBVIOUS_SIGMA`` sigma below 0 and its neighbours hold no
    significant light (no star under it whose part the full check could release), from at least 3
    neighbours. On well-sampled frames nearly every single hit is; on undersampled ones only bright hits.
    """
    n = 2 * check.half + 1
    c = check.half * n + check.half
    idx = np.array([c + dy * n + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    values, w = stamps[:, idx], ws[:, idx]
    usable = (w > 0) & ~own[:, idx]
    var = np.divide(1.0, w, where=usable, out=np.zeros_like(w))
    ratios = _neighbour_ratios(check)                                      # (centres, 8)
    r = (usable.astype(float) @ ratios.T).min(axis=1)                      # (G,)
    light = np.where(usable, values, 0.0).sum(axis=1)
    noise = var.sum(axis=1)
    centre, centre_w = stamps[:, c], ws[:, c]
    s_value = light - r * centre
    s_var = noise + r ** 2 * np.divide(1.0, centre_w, where=centre_w > 0, out=np.full_like(centre_w, np.inf))
    return ((usable.sum(axis=1) >= 3) & (centre_w > 0) & (s_value < -_OBVIOUS_SIGMA * np.sqrt(s_var))
            & (light < 3.0 * np.sqrt(noise)))


_BATCH = 16        # flagged groups searched at once by :func:`psf_consistent`: small enough products that
                   # OpenBLAS keeps them on one thread (its threads cost 2x the CPU on a busy 2-core machine)
_EDGE = 5          # pixels mirrored beyond each edge for astroscrappy (which never flags its outer 3)
_FILL = 5          # bad pixels are filled from the good ones of this box around them
_FILL_CHUNK = 65536


def _fill_bad(data: np.ndarray, bad: np.ndarray, sky: sep.Background | None = None) -> np.ndarray:
    """``data`` with each bad pixel replaced by the median of the good ones in the ``_FILL``-pixel box around it.

    Bad pixels with no good pixel that close (inside large defects) take the
    sky of the frame's coarse background mesh (``sky``, made here when not given).
    """
    if not bad.any():
        return data
    h = _FILL // 2
    ys, xs = np.nonzero(bad)
    padded = np.pad(np.where(bad, np.nan, data), h, mode="constant", constant_values=np.nan)
    view = np.lib.stride_tricks.sliding_window_view(padded, (_FILL, _FILL))
    values = np.full(len(ys), np.nan)
    for start in range(0, len(ys), _FILL_CHUNK):
        part = slice(start, start + _FILL_CHUNK)
        boxes = view[ys[part], xs[part]].reshape(-1, _FILL * _FILL)
        some = np.isfinite(boxes).any(axis=1)
        values[part][some] = np.nanmedian(boxes[some], axis=1)
    empty = np.isnan(values)
    if empty.any():
        model = sky if sky is not None else _sep_background(data, bad, 64, 3)
        values[empty] = model.back()[ys[empty], xs[empty]]
    filled = data.copy()
    filled[ys, xs] = values
    return filled


def _lacosmic(data: np.ndarray, bad: np.ndarray, gain: float, read_noise: float, sat_level: float,
              sigclip: float, sigfrac: float, objlim: float, niter: int, sky: sep.Background | None = None
              ) -> np.ndarray:
    """astroscrappy's L.A.Cosmic mask of ``data``, blind spots removed.

    astroscrappy never flags the outer 3 pixels of an image, nor the
    neighbours of masked pixels (it grows the input mask by one pixel).
    So the frame is mirrored ``_EDGE`` pixels beyond its edges, and its bad
    pixels, instead of being masked, are filled from their good neighbours
    (:func:`_fill_bad`); they are left out of the result.
    """
    image = np.pad(_fill_bad(data, bad, sky), _EDGE, mode="reflect").astype(np.float32)
    crmask, _ = astroscrappy.detect_cosmics(
        image, sigclip=sigclip, sigfrac=sigfrac, objlim=objlim, gain=gain, readnoise=read_noise,
        satlevel=sat_level * gain, niter=niter, sepmed=True, cleantype="meanmask", fsmode="median")
    return crmask[_EDGE:-_EDGE, _EDGE:-_EDGE] & ~bad


def find_cosmics(image: np.ndarray, gain: float, read_noise: float, sat_level: float = 65535.0,
                 sigclip: float = 4.5, sigfrac: float = 0.3, objlim: float | None = None,
                 mask: np.ndarray | None = None, psf_fwhm: float | None = None,
                 psf_beta: float | None = None, niter: int = 2,
                 protect_stars: bool = True, significance: float = 1e-3,
                 model_error: float | None = None, detector: str = "candidates",
                 sky: sep.Background | None = None) -> np.ndarray:
    """Mask the cosmic-ray hits of a single exposure.

    Parameters
    ----------
    image : numpy.ndarray
        2-D frame in ADU, sky included (bias-subtracted, flat-fielded or
        raw): the noise model is built from the pixel values, so a
        sky-subtracted frame would underestimate the noise.
    gain : float
        e-/ADU of the frame.
    read_noise : float
        Read noise in electrons.
    sat_level : float
        Saturation level in ADU. Saturated stars (and their surroundings) are
        never flagged.
    sigclip : float
        L.A.Cosmic detection limit: Laplacian signal-to-noise a pixel needs
        to be a cosmic-ray candidate (lower flags more).
    sigfrac : float
        Neighbours of a detected pixel are added down to
        ``sigfrac * sigclip``.
    objlim : float, optional
        L.A.Cosmic's minimum contrast between the Laplacian and the
        fine-structure image; raise it if star cores are flagged. ``None``
        picks :func:`default_objlim` for the PSF FWHM.
    mask : numpy.ndarray, optional
        ``True`` for pixels to ignore (bad pixels); never flagged.
    psf_fwhm : float, optional
        PSF FWHM in pixels. ``None`` measures it with
        :func:`awe.image.background.measure_seeing`; if that finds too few
        stars, 3 px is assumed and a warning is logged.
    psf_beta : float, optional
        Moffat ``beta`` of the PSF for the star check; ``None`` uses the
        measured one (or 3).
    niter : int
        L.A.Cosmic iterations. Each finds the hits' neighbours the one
        before left; with the PSF check behind it, 2 keep every hit 4 find
        (to one pixel) at about half the CPU.
    protect_stars : bool
        Release flagged groups that the PSF explains (:func:`psf_consistent`).
    significance : float
        False-alarm probability of the PSF check's "sharper than a star"
        tests: roughly the fraction of flagged isolated stars that stay
        flagged (twice this). Higher keeps more faint cosmic rays on
        undersampled frames and more stars.
    model_error : float, optional
        Fractional per-pixel error of the PSF model allowed in the star check:
        it absorbs the difference between the measured Moffat profile and a
        real star (beta varies across the field and between stars, and an
        undersampled star's pixels depend on where its centre falls). Larger
        spares more stars and releases more cosmic rays on star wings.
        ``None``: 5 % for PSFs of 1.5 pixels FWHM and wider, rising to 7.5 %
        at 0.5 pixel.
    detector : {'candidates', 'astroscrappy'}
        Who runs L.A.Cosmic: :func:`_candidate_lacosmic` (its tests on the
        ~0.5 % of the pixels that can pass them: ~1 s of CPU for a full-size
        WFI chip) or astroscrappy on the whole frame (~10 s).
    sky : sep.Background, optional
        The frame's sky model with ``mask`` (:func:`awe.image.background.sky_model`, mesh 64), when made
        already: the level of bad pixels far from any good one, and of the seeing measured here.

    Returns
    -------
    numpy.ndarray
        ``bool`` mask, True on cosmic-ray pixels.
    """
    if gain <= 0 or read_noise < 0:
        raise ValueError(f"gain must be > 0 and read_noise >= 0, got {gain} and {read_noise}")
    data, bad = _prepare_image(image, mask)
    if psf_fwhm is None or (psf_beta is None and protect_stars):
        try:
            seeing = measure_seeing(data, mask=bad, saturation=sat_level, max_stars=40, sky=sky)
            psf_fwhm = seeing.fwhm_pixels if psf_fwhm is None else psf_fwhm
            psf_beta = seeing.beta if psf_beta is None else psf_beta
        except TooFewStarsError as exc:
            log.warning("cannot measure the PSF for cosmic-ray masking (%s); assuming FWHM 3 px", exc)
            psf_fwhm = 3.0 if psf_fwhm is None else psf_fwhm
    if psf_beta is None:
        psf_beta = 3.0
    if objlim is None:
        objlim = default_objlim(psf_fwhm)
    if detector == "candidates":
        crmask = _candidate_lacosmic(data, bad, gain=gain, read_noise=read_noise, sigclip=sigclip, sigfrac=sigfrac,
                                     objlim=objlim, niter=niter, sky=sky)
    elif detector == "astroscrappy":
        crmask = _lacosmic(data, bad, gain=gain, read_noise=read_noise, sat_level=sat_level, sigclip=sigclip,
                           sigfrac=sigfrac, objlim=objlim, niter=niter, sky=sky)
    else:
        raise ValueError(f"unknown cosmic-ray detector {detector!r}: use 'candidates' or 'astroscrappy'")
    # Saturated pixels are the weight map's business, not cosmic rays: release
    # every group touching one (undersampled saturated stars escape
    # astroscrappy's own saturation test, which needs a wide saturated core).
    saturated = grow_mask(data >= sat_level, 1)
    if saturated.any() and crmask.any():
        groups, n_groups = ndi.label(crmask, structure=np.ones((3, 3), bool))
        hit = np.zeros(n_groups + 1, dtype=bool)
        hit[np.unique(groups[saturated & crmask])] = True
        hit[0] = False
        crmask &= ~hit[groups]
    n_flagged = int(crmask.sum())
    if protect_stars and n_flagged:
        bkg = _sep_background(data, bad | crmask, 64, 3)
        groups, n_groups = ndi.label(crmask, structure=np.ones((3, 3), bool))
        check = PsfCheck.build(psf_fwhm, psf_beta)
        star_pixels = psf_consistent(data - bkg.back(), groups, n_groups, check, float(bkg.globalrms),
                                     gain, significance=significance, excluded=bad,
                                     model_error=default_model_error(psf_fwhm) if model_error is None else model_error)
        crmask &= ~star_pixels
        log.debug("PSF check released %d of %d flagged pixels", int(star_pixels.sum()), n_flagged)
    log.info("cosmic rays: %d pixels (%.4f %%), PSF FWHM %.2f px, objlim %.1f", int(crmask.sum()),
             100.0 * crmask.mean(), psf_fwhm, objlim)
    return crmask


# ============================================================================ candidate-first L.A.Cosmic
_HALF = 3          # the 7 x 7 windows of the noise model and of the Laplacian's local median
_MARGIN = 7        # pixels mirrored beyond each edge (the 13 x 13 windows of the noise model stay inside)
_NEAR_3 = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
_NEAR_5 = np.array([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)])
_NEAR_13 = np.array([(dy, dx) for dy in range(-6, 7) for dx in range(-6, 7)])


def _lplus(e: np.ndarray) -> np.ndarray:
    """L.A.Cosmic's positive Laplacian of ``e`` on its own grid (float32, 0 on the outer pixels).

    The Laplacian of the image subsampled 2 x 2, negative values set to 0
    and averaged back over each 2 x 2 block: per pixel the mean over its
    four corners of ``max(0, 2 v - vertical neighbour - horizontal neighbour)``
    (one compiled pass, :func:`awe.image.cosmics_kernels.lplus`, imported on first use: numba is slow to load).
    """
    from awe.image.cosmics_kernels import lplus
    e = np.ascontiguousarray(e, dtype=np.float32)
    out = np.zeros_like(e)
    lplus(e, out)
    return out


def _lplus_at(e: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """:func:`_lplus` at the pixels ``(ys, xs)`` only (none on the outer pixels)."""
    v2 = 2.0 * e[ys, xs]
    total = np.zeros(len(ys), dtype=np.float32)
    for vertical in (e[ys - 1, xs], e[ys + 1, xs]):
        for horizontal in (e[ys, xs - 1], e[ys, xs + 1]):
            total += np.maximum(v2 - vertical - horizontal, 0.0)
    return 0.25 * total


def _windows(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, half: int) -> np.ndarray:
    """The ``(2 half + 1)``-pixel square windows of ``image`` around ``(ys, xs)``: shape ``(n, size, size)``."""
    size = 2 * half + 1
    view = np.lib.stride_tricks.sliding_window_view(image, (size, size))
    return view[ys - half, xs - half]


def _sepmed(windows: np.ndarray) -> np.ndarray:
    """Separable median of square windows ``(n, k, k)``: the median of the row medians (as astroscrappy's)."""
    return bn.median(bn.median(windows, axis=2), axis=1)


def _scores(e: np.ndarray, lap: np.ndarray, ys: np.ndarray, xs: np.ndarray,
            read_noise2: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_window_scores` of the pixels ``(ys, xs)``: where many lie close together (a star's core, a
    cosmic-ray track) the medians are computed once over their common box (:func:`_box_scores`), the same
    values as window by window at a fraction of the cost; the scattered ones window by window."""
    sp = np.empty(len(ys), dtype=np.float32)
    contrast = np.empty(len(ys), dtype=np.float32)
    cell = (ys // _CELL) * (e.shape[1] // _CELL + 1) + xs // _CELL
    order = np.argsort(cell, kind="stable")
    _, starts, counts = np.unique(cell[order], return_index=True, return_counts=True)
    lone = [order[st:st + n] for st, n in zip(starts, counts) if n < _BOX_MIN]
    for st, n in zip(starts, counts):
        if n >= _BOX_MIN:
            idx = order[st:st + n]
            sp[idx], contrast[idx] = _box_scores(e, lap, ys[idx], xs[idx], read_noise2)
    if lone:
        idx = np.concatenate(lone)
        sp[idx], contrast[idx] = _window_scores(e, lap, ys[idx], xs[idx], read_noise2)
    return sp, contrast


_CELL = 16         # pixels to score are boxed by cells of this size ...
_BOX_MIN = 4       # ... when a cell holds at least this many


def _box_scores(e: np.ndarray, lap: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                read_noise2: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_window_scores` of pixels within one small box: the running medians over the box (plus the
    margins the windows need) instead of window by window. Medians of odd counts are exact elements, so
    the values are the same."""
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    size, m = 2 * _HALF + 1, 2 * _HALF
    region = e[y0 - m:y1 + m, x0 - m:x1 + m]
    rows = bn.move_median(region, size, axis=1)[:, size - 1:]                   # columns x0-3 .. x1+2
    level = bn.move_median(rows, size, axis=0)[size - 1:, :]                    # rows y0-3 .. y1+2
    noise = np.sqrt(np.maximum(level + read_noise2, 1e-5))
    s = lap[y0 - _HALF:y1 + _HALF, x0 - _HALF:x1 + _HALF] / (2.0 * noise)
    s_med = bn.move_median(bn.move_median(s, size, axis=1)[:, size - 1:], size, axis=0)[size - 1:, :]
    iy, ix = ys - y0, xs - x0
    sp = s[iy + _HALF, ix + _HALF] - s_med[iy, ix]
    # the fine structure: the 5 x 5 medians on the box and 4 pixels around, the 9 x 9 medians of those
    med5 = bn.move_median(bn.move_median(region, 5, axis=1)[:, 4:], 5, axis=0)[4:, :]
    med9 = bn.move_median(bn.move_median(med5, 9, axis=1)[:, 8:], 9, axis=0)[8:, :]
    fine = np.maximum((med5[iy + 4, ix + 4] - med9[iy, ix]) / noise[iy + _HALF, ix + _HALF], 0.01)
    return sp.astype(np.float32), (sp / fine).astype(np.float32)


def _window_scores(e: np.ndarray, lap: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                   read_noise2: float) -> tuple[np.ndarray, np.ndarray]:
    """L.A.Cosmic's Laplacian signal-to-noise ``s'`` and its fine-structure contrast ``s' / f`` at ``(ys, xs)``.

    As astroscrappy computes them (``sepmed=True``): the noise model from
    the separable 7 x 7 median of the image at every pixel of the 7 x 7
    window, ``s = L+ / (2 noise)`` there and ``s'`` the centre's ``s`` less
    the window's median; the fine structure ``f``, the separable 5 x 5
    median less the separable 9 x 9 median of it, over the noise.
    """
    patch = _windows(e, ys, xs, 2 * _HALF)
    size = 2 * _HALF + 1
    rows = bn.move_median(patch, size, axis=2)[:, :, size - 1:]
    level = bn.move_median(rows, size, axis=1)[:, size - 1:, :]          # (n, 7, 7)
    noise = np.sqrt(np.maximum(level + read_noise2, 1e-5))
    s = _windows(lap, ys, xs, _HALF) / (2.0 * noise)
    c = _HALF
    sp = s[:, c, c] - _sepmed(s)
    # fine structure: the separable 5 x 5 median less the separable 9 x 9 median of that
    med5 = bn.move_median(bn.move_median(patch, 5, axis=2)[:, :, 4:], 5, axis=1)[:, 4:, :]   # (n, 9, 9)
    fine = np.maximum((med5[:, 4, 4] - _sepmed(med5)) / noise[:, c, c], 0.01)
    return sp.astype(np.float32), (sp / fine).astype(np.float32)


def _around(ys: np.ndarray, xs: np.ndarray, offsets: np.ndarray, shape: tuple[int, int],
            border: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pixels at ``offsets`` from ``(ys, xs)`` at least ``border`` pixels inside ``shape``."""
    ny, nx = shape
    yy = (ys[:, None] + offsets[None, :, 0]).ravel()
    xx = (xs[:, None] + offsets[None, :, 1]).ravel()
    inside = (yy >= border) & (yy < ny - border) & (xx >= border) & (xx < nx - border)
    if yy.size * 16 < ny * nx:  # few: sorting them is cheaper than a pass over the frame
        found_y, found_x = np.divmod(np.unique(yy[inside] * nx + xx[inside]), nx)
        return found_y, found_x
    marks = np.zeros(shape, dtype=bool)
    marks[yy[inside], xx[inside]] = True
    found_y, found_x = np.nonzero(marks)
    return found_y, found_x


class _Scores:
    """:func:`_scores` of the pixels asked for, each computed once per iteration (``reset`` after a cleaning)."""

    def __init__(self, e: np.ndarray, lap: np.ndarray, read_noise2: float) -> None:
        self.e, self.lap, self.read_noise2 = e, lap, read_noise2
        self.sp = np.full(e.shape, np.nan, dtype=np.float32)
        self.contrast = np.full(e.shape, np.nan, dtype=np.float32)

    def reset(self, ys: np.ndarray, xs: np.ndarray) -> None:
        self.sp[ys, xs] = np.nan

    def __call__(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        todo = np.isnan(self.sp[ys, xs])
        if todo.any():
            ty, tx = ys[todo], xs[todo]
            self.sp[ty, tx], self.contrast[ty, tx] = _scores(self.e, self.lap, ty, tx, self.read_noise2)
        return self.sp[ys, xs], self.contrast[ys, xs]


def _grow(scores: _Scores, primary: tuple[np.ndarray, np.ndarray], sigclip: float,
          sigcliplow: float, bound: np.ndarray) -> np.ndarray:
    """L.A.Cosmic's two growth steps from the primary detections; flat indices of the flagged pixels.

    ``bound``: ``L+`` a pixel needs to reach ``s' > 1`` (a lower bound); neighbours below the step's
    threshold times it are not scored.
    """
    ys, xs = primary
    shape = scores.e.shape
    for limit in (sigclip, sigcliplow):
        if len(ys) == 0:
            break
        ny, nx = _around(ys, xs, _NEAR_3, shape, _MARGIN - 1)
        able = scores.lap[ny, nx] > np.float32(limit) * bound[ny, nx]
        able[np.isin(ny * shape[1] + nx, ys * shape[1] + xs)] = True  # the pixels grown from stay
        ny, nx = ny[able], nx[able]
        sp, _ = scores(ny, nx)
        keep = sp > limit
        ys, xs = ny[keep], nx[keep]
    return ys.astype(np.int64) * shape[1] + xs


def _clean(e: np.ndarray, flagged: np.ndarray, fallback: float) -> None:
    """Replace the flagged pixels (bool image) of ``e`` by the mean of the unflagged ones in their 5 x 5 box."""
    ys, xs = np.nonzero(flagged)
    if len(ys) == 0:
        return
    values = _windows(e, ys, xs, 2).reshape(len(ys), 25)
    usable = ~_windows(flagged, ys, xs, 2).reshape(len(ys), 25)
    count = usable.sum(axis=1)
    total = np.where(usable, values, 0.0).sum(axis=1)
    e[ys, xs] = np.where(count > 0, total / np.maximum(count, 1), fallback)


def _candidate_lacosmic(data: np.ndarray, bad: np.ndarray, gain: float, read_noise: float, sigclip: float,
                        sigfrac: float, objlim: float, niter: int, sky: sep.Background | None = None) -> np.ndarray:
    """L.A.Cosmic evaluated on its candidate pixels only (COSMIC_DETECTOR ``'candidates'``).

    The positive Laplacian ``L+`` is computed everywhere (a few array
    operations); a pixel can only pass L.A.Cosmic's test ``L+ / (2 noise) -
    median > sigclip`` if ``L+ > 2 sigclip noise``, with the noise of the
    faintest level around it (the 8 x 8 block minimum over the 3 x 3 blocks
    around its own). Only those candidates (0.5 % of a full-size WFI chip,
    stars and noise peaks included) get the 7 x 7 medians of the noise model
    and the fine structure, then the growth steps; each further iteration
    cleans what was flagged (mean of the unflagged pixels in the 5 x 5 box)
    and looks again within 2 pixels of it. Bad pixels are filled from their
    good neighbours first and never flagged. Returns the mask.
    """
    sigcliplow = sigfrac * sigclip
    read_noise2 = float(read_noise) ** 2
    e = np.pad(_fill_bad(data, bad, sky), _MARGIN, mode="reflect").astype(np.float32) * np.float32(gain)
    shape = e.shape
    lap = _lplus(e)
    # the faintest 8 x 8 block median within 8 to 16 pixels: about the lowest 7 x 7 median (the noise
    # model's level) there can be
    block = 8
    by, bx = -(-shape[0] // block), -(-shape[1] // block)
    tiles = np.pad(e, ((0, by * block - shape[0]), (0, bx * block - shape[1])), mode="edge")
    low = bn.median(tiles.reshape(by, block, bx, block).transpose(0, 2, 1, 3).reshape(by, bx, block * block), axis=2)
    low = ndi.minimum_filter(low, size=3, mode="nearest")
    noise_low = np.sqrt(np.maximum(low + read_noise2, 1e-5)).astype(np.float32)
    bound = np.repeat(np.repeat(noise_low, block, axis=0), block, axis=1)[:shape[0], :shape[1]]
    bound *= np.float32(2.0)
    limit = bound * np.float32(sigclip)
    inner = np.zeros(shape, dtype=bool)
    inner[_MARGIN - 1:-_MARGIN + 1, _MARGIN - 1:-_MARGIN + 1] = True
    ys, xs = np.nonzero((lap > limit) & inner)
    log.debug("cosmic-ray candidates: %d of %d pixels", len(ys), lap.size)
    flagged = np.zeros(shape, dtype=bool)
    fallback = float(np.median(e[::7, ::7]))
    scores = _Scores(e, lap, read_noise2)
    for iteration in range(niter):
        sp, contrast = scores(ys, xs)
        primary = (sp > sigclip) & (contrast > objlim)
        found = _grow(scores, (ys[primary], xs[primary]), sigclip, sigcliplow, bound)
        new = found[~flagged.ravel()[found]]
        log.debug("cosmic-ray candidates, iteration %d: %d pixels tested, %d new flagged", iteration + 1, len(ys),
                  len(new))
        if len(new) == 0:
            break
        flagged.ravel()[new] = True
        if iteration + 1 == niter:
            break
        _clean(e, flagged, fallback)
        # the Laplacian changes within one pixel of what was cleaned; look again within 2 pixels
        fy, fx = np.divmod(new, shape[1])
        ry, rx = _around(fy, fx, _NEAR_3, shape, 1)
        lap[ry, rx] = _lplus_at(e, ry, rx)
        ys, xs = _around(fy, fx, _NEAR_5, shape, _MARGIN - 1)
        # the scores of everything within 6 pixels of a cleaned pixel change
        scores.reset(*_around(fy, fx, _NEAR_13, shape, _MARGIN - 1))
        keep = (lap[ys, xs] > limit[ys, xs]) & ~flagged[ys, xs]
        ys, xs = ys[keep], xs[keep]
    return flagged[_MARGIN:-_MARGIN, _MARGIN:-_MARGIN] & ~bad
