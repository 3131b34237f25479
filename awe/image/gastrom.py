"""The global (simultaneous) astrometric solution of dithered mosaic exposures, as SCAMP does it.

Pure functions on plain arrays: no database, no files. The model of every frame (one chip of one exposure)::

    (xi, eta) = R(theta_e) P_c(u, v) + (a_e, b_e)        standard coordinates about the exposure's
                                                          tangent point T_e [deg], TAN projection

* ``P_c``: the distortion of chip ``c``, a 2-D polynomial of total degree ``order`` in the scaled pixel
  coordinates ``u = (x - x_c) / s``, ``v = (y - y_c) / s`` (chip centre ``x_c, y_c``, half the chip's
  larger side ``s``), shared by every exposure: it holds the chip's place, scale, rotation and the
  optics' distortion in the focal plane;
* ``(a_e, b_e, theta_e)``: the pointing offset and rotation of exposure ``e`` (the first exposure's are 0:
  the gauge; its ``P_c`` carry the absolute frame, tied to the reference catalogue);
* every star ``j`` seen more than once, or matched to the reference catalogue, has an unknown position
  ``S_j`` on one common tangent plane of the field (about ``T_0``).

The residuals are ``F_e(R P_c + t) - S_j`` for each detection (``F_e``: the exact map from the tangent
plane about ``T_e`` to the one about ``T_0``) weighted by the centroid error, and ``S_j - ref_j`` for
each matched reference star weighted by the catalogue's error. They are minimised jointly by
Gauss-Newton iterations on the linearised normal equations: the star positions are eliminated by the
Schur complement (their block is diagonal), which leaves a dense system of only the chip and exposure
parameters (``2 n_terms n_chips + 3 (n_exposures - 1)``, about 200 for 8 chips of order 3), solved
with numpy; the stars follow by back-substitution. Outliers are rejected between iterations (residual
beyond ``clip`` robust sigma), and the detections are matched again with the improved model.

Matching: each exposure's start WCS (the per-chip solutions when they exist, else the header's; a header
frame of a chip solved in another exposure starts from that solution moved by the offset between the two
exposures, which the chips solved in both give) is first registered on the reference catalogue by the
peak of the histogram of all detection-reference offsets (robust to pointing errors of an arcminute;
measured on the solved frames of an exposure when it has any); detections of different exposures closer than the
match radius are linked (friends of friends, a group with two detections of one exposure is dropped as
ambiguous); each group's mean position is matched to the nearest reference star.

The result per frame is a TAN-SIP WCS (:func:`fit_tan_sip` of the model on a grid over the chip) on
the frame's own pixel grid (0-based pixels in the arrays here, FITS 1-based CRPIX in the WCS).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from astropy.wcs import WCS, Sip
from awe.image.astrometry import from_tangent_plane, tangent_plane  # the gnomonic projection, both ways

__all__ = ["FrameSources", "FrameResult", "GlobalSolution", "GAstromError", "solve_global", "tangent_plane",
           "from_tangent_plane", "fit_tan_sip", "register_offset", "poly_terms"]

log = logging.getLogger(__name__)

_ARCSEC = 1.0 / 3600.0


class GAstromError(ValueError):
    """The global solution cannot be made from these inputs (no overlaps, no reference stars...)."""


# ============================================================================ projections
def _replane(xi: np.ndarray, eta: np.ndarray, src: tuple[float, float], dst: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates about ``src`` -> about ``dst`` (exact, through the sphere)."""
    if src == dst:
        return xi, eta
    ra, dec = from_tangent_plane(xi, eta, *src)
    return tangent_plane(ra, dec, *dst)


# ============================================================================ polynomials
def poly_terms(order: int) -> list[tuple[int, int]]:
    """The exponents ``(i, j)`` of ``u**i v**j`` with ``i + j <= order`` (constant first)."""
    return [(i, n - i) for n in range(order + 1) for i in range(n, -1, -1)]


def _design(u: np.ndarray, v: np.ndarray, terms: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.column_stack([u ** i * v ** j for i, j in terms])


@dataclass(frozen=True)
class _ChipScale:
    """Centre and half-size of a chip's pixel grid: ``u = (x - x0) / s``."""

    x0: float
    y0: float
    s: float

    @classmethod
    def of(cls, shape: tuple[int, int]) -> "_ChipScale":
        ny, nx = shape
        return cls((nx - 1) / 2.0, (ny - 1) / 2.0, max(nx, ny) / 2.0)

    def uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(x, dtype=float) - self.x0) / self.s, (np.asarray(y, dtype=float) - self.y0) / self.s


# ============================================================================ inputs and outputs
@dataclass
class FrameSources:
    """The sources of one frame (one chip of one exposure) for the global solution.

    Attributes
    ----------
    key : str
        The frame's name (e.g. the reduced frame's file name): the key of the results.
    exposure : str
        The exposure it belongs to (frames of one exposure share the pointing parameters).
    chip : str
        The chip (frames of one chip share the distortion).
    x, y : ndarray
        0-based pixel positions of the sources.
    err : ndarray
        Their position errors [pix] (one per source: the larger of the two axes' errors).
    wcs : astropy.wcs.WCS
        The start solution on the same pixel grid (per-chip solution or header WCS).
    shape : (ny, nx)
        The frame's size.
    solved : bool
        Whether ``wcs`` is a solution of the frame (True) or a rough header WCS (False). An unsolved frame of
        a chip solved in another exposure starts from that solution moved by the dither; otherwise a chip's
        (an exposure's) start comes from its solved frames when it has any.
    """

    key: str
    exposure: str
    chip: str
    x: np.ndarray
    y: np.ndarray
    err: np.ndarray
    wcs: WCS
    shape: tuple[int, int]
    solved: bool = True


@dataclass
class FrameResult:
    """The solution of one frame: its WCS and the statistics of its own detections."""

    key: str
    wcs: WCS
    n_sources: int
    n_overlap: int          # detections of stars seen in another exposure as well
    n_ref: int              # detections matched to a reference star
    n_tied: int             # detections tied to the reference or to another exposure (either or both)
    rms_internal: float     # arcsec, per axis: detections against the other exposures' (see GlobalSolution)
    rms_ra: float           # arcsec: against the reference catalogue, along RA (cos dec applied)
    rms_dec: float          # arcsec: along Dec
    pointing: tuple[float, float, float]  # the exposure's (a, b) [arcsec] and rotation [deg] of the model


@dataclass
class GlobalSolution:
    """The result of :func:`solve_global`.

    ``rms_internal`` [arcsec, per axis] is the scatter of one detection between exposures: the rms over
    every pair of detections of one star in two exposures of their position difference, divided by
    sqrt(2). ``rms_external`` [arcsec, per axis] is the rms of detection minus reference position over
    the matched reference stars (it includes the catalogue's own errors). ``n_pairs`` counts those
    pairs, ``n_ref`` the reference stars used, ``n_rejected`` the detections rejected as outliers.
    ``residuals`` holds per detection: frame index, x, y, dxi, deta (internal: against the star's
    fitted position) and rxi, reta (against the reference, NaN when not matched), in arcsec.
    """

    frames: dict[str, FrameResult]
    order: int
    rms_internal: float
    rms_external: float
    n_pairs: int
    n_ref: int
    n_stars: int
    n_rejected: int
    iterations: int
    tangent_point: tuple[float, float]
    residuals: dict[str, np.ndarray] = field(default_factory=dict)


# ============================================================================ registration
def register_offset(xi: np.ndarray, eta: np.ndarray, ref_xi: np.ndarray, ref_eta: np.ndarray,
                    max_offset_arcsec: float = 90.0, bin_arcsec: float = 3.0) -> tuple[float, float, int]:
    """The shift [deg] that best lays detections on reference stars: the histogram peak of all offsets.

    Every detection-reference pair closer than ``max_offset_arcsec`` votes for its offset; the peak bin
    (smoothed over its 3x3 neighbours) is refined by the median offset of the pairs within 1.5 bins of it.
    Returns ``(dxi, deta, n)``: the shift to add to the detections and the number of pairs in the peak.
    """
    from scipy.spatial import cKDTree
    if len(xi) == 0 or len(ref_xi) == 0:
        return 0.0, 0.0, 0
    tree = cKDTree(np.column_stack([ref_xi, ref_eta]))
    lists = tree.query_ball_point(np.column_stack([xi, eta]), max_offset_arcsec * _ARCSEC)
    det = np.repeat(np.arange(len(xi)), [len(v) for v in lists])
    ref = np.fromiter((j for v in lists for j in v), dtype=int, count=len(det))
    if len(det) == 0:
        return 0.0, 0.0, 0
    dx = (ref_xi[ref] - xi[det]) / _ARCSEC
    dy = (ref_eta[ref] - eta[det]) / _ARCSEC
    nb = int(math.ceil(2 * max_offset_arcsec / bin_arcsec))
    hist, xe, ye = np.histogram2d(dx, dy, bins=nb, range=[[-max_offset_arcsec, max_offset_arcsec]] * 2)
    padded = np.pad(hist, 1)
    smooth = sum(padded[1 + i:1 + i + nb, 1 + j:1 + j + nb] for i in (-1, 0, 1) for j in (-1, 0, 1))
    ix, iy = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    cx, cy = (xe[ix] + xe[ix + 1]) / 2, (ye[iy] + ye[iy + 1]) / 2
    near = (np.abs(dx - cx) < 1.5 * bin_arcsec) & (np.abs(dy - cy) < 1.5 * bin_arcsec)
    if near.sum() == 0:
        return 0.0, 0.0, 0
    return float(np.median(dx[near]) * _ARCSEC), float(np.median(dy[near]) * _ARCSEC), int(near.sum())


# ============================================================================ the solver
class _Model:
    """Parameters of the model and its evaluation (see the module documentation)."""

    def __init__(self, chips: list[str], exposures: list[str], scales: dict[str, _ChipScale], order: int,
                 tangents: dict[str, tuple[float, float]], t0: tuple[float, float]) -> None:
        self.chips, self.exposures, self.scales, self.order = chips, exposures, scales, order
        self.terms = poly_terms(order)
        self.nt = len(self.terms)
        self.coef = {c: np.zeros((2, self.nt)) for c in chips}
        self.pointing = {e: np.zeros(3) for e in exposures}   # a, b [deg], theta [rad]
        self.tangents, self.t0 = tangents, t0

    @property
    def n_global(self) -> int:
        return 2 * self.nt * len(self.chips) + 3 * (len(self.exposures) - 1)

    def chip_offset(self, chip: str) -> int:
        return 2 * self.nt * self.chips.index(chip)

    def exposure_offset(self, exposure: str) -> int | None:
        i = self.exposures.index(exposure)
        return None if i == 0 else 2 * self.nt * len(self.chips) + 3 * (i - 1)

    def apply(self, step: np.ndarray) -> None:
        for c in self.chips:
            o = self.chip_offset(c)
            self.coef[c] += step[o:o + 2 * self.nt].reshape(2, self.nt)
        for e in self.exposures[1:]:
            o = self.exposure_offset(e)
            assert o is not None
            self.pointing[e] += step[o:o + 3]

    def focal(self, chip: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``P_c(u, v)`` [deg] and the design matrix."""
        u, v = self.scales[chip].uv(x, y)
        design = _design(u, v, self.terms)
        p = design @ self.coef[chip].T
        return p, design

    def standard(self, chip: str, exposure: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standard coordinates about the exposure's tangent point [deg], (n, 2), and ``P_c`` (n, 2)."""
        p, _ = self.focal(chip, x, y)
        a, b, th = self.pointing[exposure]
        c, s = math.cos(th), math.sin(th)
        q = np.column_stack([c * p[:, 0] - s * p[:, 1] + a, s * p[:, 0] + c * p[:, 1] + b])
        return q, p

    def common(self, chip: str, exposure: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Positions on the field's common tangent plane [deg], (n, 2)."""
        q, _ = self.standard(chip, exposure, x, y)
        xi, eta = _replane(q[:, 0], q[:, 1], self.tangents[exposure], self.t0)
        return np.column_stack([xi, eta])

    def sky(self, chip: str, exposure: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, _ = self.standard(chip, exposure, x, y)
        return from_tangent_plane(q[:, 0], q[:, 1], *self.tangents[exposure])


def _frame_centre_sky(frame: FrameSources) -> tuple[float, float]:
    ny, nx = frame.shape
    ra, dec = frame.wcs.all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
    return float(ra[0]), float(dec[0])


def _transferred_starts(frames: Sequence[FrameSources]) -> list[FrameSources]:
    """The frames, each unsolved one (header start) of a chip solved in another exposure started instead from
    that solution moved by the offset between the two exposures, measured on the chips solved in both (a
    header WCS may be off by the chip's place in the mosaic; the dithers move every chip alike)."""
    solved = {(f.exposure, f.chip): f for f in frames if f.solved}
    out = []
    for f in frames:
        best: tuple[FrameSources, list[str]] | None = None
        if not f.solved:
            for (exposure, chip), s in solved.items():
                anchors = [c for (e, c) in solved if e == f.exposure and (exposure, c) in solved] \
                    if chip == f.chip else []
                if anchors and (best is None or len(anchors) > len(best[1])):
                    best = (s, anchors)
        if best is None:
            out.append(f)
            continue
        sibling, anchors = best
        offsets = []
        for c in anchors:
            here = _frame_centre_sky(solved[(f.exposure, c)])
            there = _frame_centre_sky(solved[(sibling.exposure, c)])
            offsets.append(tangent_plane(np.array([here[0]]), np.array([here[1]]), *there))
        dxi = float(np.mean([o[0][0] for o in offsets]))
        deta = float(np.mean([o[1][0] for o in offsets]))
        w = sibling.wcs.deepcopy()
        ra0, dec0 = from_tangent_plane(dxi, deta, float(w.wcs.crval[0]), float(w.wcs.crval[1]))
        w.wcs.crval = [float(ra0) % 360.0, float(dec0)]
        w.wcs.set()
        log.info("frame %s starts from the solution of %s moved by %.1f\", %.1f\" (the offset between their "
                 "exposures on %d chip(s) solved in both)", f.key, sibling.key, dxi * 3600, deta * 3600, len(anchors))
        out.append(replace(f, wcs=w, solved=True))
    return out


def _mean_sky(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    ra, dec = np.radians(np.array(points, dtype=float)).T
    vec = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).sum(axis=1)
    vec /= np.linalg.norm(vec)
    return float(np.degrees(np.arctan2(vec[1], vec[0])) % 360.0), float(np.degrees(np.arcsin(vec[2])))


def _trusted(group: list[FrameSources]) -> list[FrameSources]:
    """The frames of a group (a chip's, an exposure's) whose start WCS is solved; all when none is."""
    return [f for f in group if f.solved] or group


def _init_model(frames: Sequence[FrameSources], wcs: dict[str, WCS], order: int) -> _Model:
    """The model started from the frames' start WCS: ``P_c`` fitted to all exposures of the chip, no pointing.

    Where a chip has frames with solved start WCS, only those give its start: a header WCS may be off by
    the chip's place in the mosaic, which would pull the chip's shared model off.
    """
    chips = sorted({f.chip for f in frames})
    exposures = list(dict.fromkeys(f.exposure for f in frames))  # in the order given
    shapes: dict[str, tuple[int, int]] = {}
    for f in frames:
        if shapes.setdefault(f.chip, tuple(f.shape)) != tuple(f.shape):  # type: ignore[arg-type]
            raise GAstromError(f"chip {f.chip}: frames of different sizes {shapes[f.chip]} and {f.shape} "
                               f"({f.key}); the global solution needs one pixel grid per chip")
    # every exposure's tangent point is the same place of the mosaic (the mean of all its frames' centres)
    tangents = {e: _mean_sky([_frame_centre_sky(f) for f in frames if f.exposure == e]) for e in exposures}
    t0 = _mean_sky(list(tangents.values()))
    model = _Model(chips, exposures, {c: _ChipScale.of(s) for c, s in shapes.items()}, order, tangents, t0)
    for chip in chips:
        designs, targets = [], []
        for f in _trusted([f for f in frames if f.chip == chip]):
            ny, nx = f.shape
            gx, gy = np.meshgrid(np.linspace(0, nx - 1, 12), np.linspace(0, ny - 1, 12))
            ra, dec = wcs[f.key].all_pix2world(gx.ravel(), gy.ravel(), 0)
            xi, eta = tangent_plane(ra, dec, *tangents[f.exposure])
            u, v = model.scales[chip].uv(gx.ravel(), gy.ravel())
            designs.append(_design(u, v, model.terms))
            targets.append(np.column_stack([xi, eta]))
        sol, *_ = np.linalg.lstsq(np.vstack(designs), np.vstack(targets), rcond=None)
        model.coef[chip] = sol.T.copy()
    return model


@dataclass
class _Obs:
    """The detections in one flat array (frame index, chip, exposure, pixel position, error [deg])."""

    frame: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray  # deg


def _positions(model: _Model, frames: Sequence[FrameSources]) -> np.ndarray:
    return np.vstack([model.common(f.chip, f.exposure, f.x, f.y) for f in frames]) if frames else np.zeros((0, 2))


def _group(pos: np.ndarray, exposure_of: np.ndarray, radius_deg: float) -> np.ndarray:
    """Star index of every detection (friends of friends across exposures; -1: alone or ambiguous)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    n = len(pos)
    if n == 0:
        return np.zeros(0, dtype=int)
    pairs = cKDTree(pos).query_pairs(radius_deg, output_type="ndarray")
    pairs = pairs[exposure_of[pairs[:, 0]] != exposure_of[pairs[:, 1]]] if len(pairs) else pairs
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else \
        coo_matrix((n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    # a group with two detections of one exposure is ambiguous (two stars merged): dropped
    combo = labels.astype(np.int64) * (int(exposure_of.max()) + 1) + exposure_of
    _, first, counts = np.unique(combo, return_index=True, return_counts=True)
    bad = np.zeros(len(sizes), dtype=bool)
    bad[labels[first[counts > 1]]] = True
    star = labels.copy()
    star[(sizes[labels] < 2) | bad[labels]] = -1
    return star


def _match_reference(pos: np.ndarray, star: np.ndarray, ref: np.ndarray, radius_deg: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Star ids (groups, and single detections as new stars) and the reference index of each detection."""
    from scipy.spatial import cKDTree
    n = len(pos)
    ids = star.copy()
    alone = ids < 0
    ids[alone] = (ids.max() + 1 if (~alone).any() else 0) + np.arange(int(alone.sum()))
    _, ids = np.unique(ids, return_inverse=True)
    n_star = int(ids.max()) + 1 if n else 0
    counts = np.bincount(ids, minlength=n_star).astype(float)
    mean = np.column_stack([np.bincount(ids, pos[:, k], minlength=n_star) for k in (0, 1)]) / counts[:, None]
    ref_of_star = np.full(n_star, -1)
    if len(ref) and n_star:
        dist, nearest = cKDTree(ref).query(mean, distance_upper_bound=radius_deg)
        ok = np.isfinite(dist)
        # one reference star for one star: the nearest claims it
        order = np.argsort(np.where(ok, dist, np.inf))
        taken: set[int] = set()
        for s in order[ok[order]]:
            if int(nearest[s]) not in taken:
                taken.add(int(nearest[s]))
                ref_of_star[s] = nearest[s]
    # keep stars seen twice or more, or matched to the reference
    keep = (counts >= 2) | (ref_of_star >= 0)
    new = np.cumsum(keep) - 1
    star_id = np.where(keep[ids], new[ids], -1)
    return star_id, ref_of_star[keep]


def _solve_step(model: _Model, frames: Sequence[FrameSources], obs: _Obs, star: np.ndarray,
                ref_of_star: np.ndarray, ref: np.ndarray, ref_sigma: np.ndarray, use: np.ndarray,
                use_ref: np.ndarray, stars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Gauss-Newton step of the chip/exposure parameters and the star positions.

    Returns the parameter step and the new star positions (n_star, 2) [deg on the common plane].
    """
    from scipy import sparse
    ng = model.n_global
    n_star = len(stars)
    nt = model.nt
    rows_g: list[np.ndarray] = []
    cols_g: list[np.ndarray] = []
    vals_g: list[np.ndarray] = []
    resid_parts: list[np.ndarray] = []
    star_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    row0 = 0
    h = 1e-3  # deg: finite step of the plane-to-plane Jacobian
    for k, f in enumerate(frames):
        sel = np.flatnonzero((obs.frame == k) & use)
        if len(sel) == 0:
            continue
        e = f.exposure
        q, p = model.standard(f.chip, e, obs.x[sel], obs.y[sel])
        _, design = model.focal(f.chip, obs.x[sel], obs.y[sel])
        t_e, t0 = model.tangents[e], model.t0
        fx, fy = _replane(q[:, 0], q[:, 1], t_e, t0)
        # Jacobian of F_e (central differences; F is nearly the identity)
        jx = [(np.array(_replane(q[:, 0] + h, q[:, 1], t_e, t0)) - np.array(_replane(q[:, 0] - h, q[:, 1], t_e, t0)))
              / (2 * h),
              (np.array(_replane(q[:, 0], q[:, 1] + h, t_e, t0)) - np.array(_replane(q[:, 0], q[:, 1] - h, t_e, t0)))
              / (2 * h)]
        jf = np.stack([np.stack([jx[0][0], jx[1][0]], axis=-1), np.stack([jx[0][1], jx[1][1]], axis=-1)], axis=1)
        # jf[n, i, j] = d F_i / d q_j
        th = model.pointing[e][2]
        c, s = math.cos(th), math.sin(th)
        rot = np.array([[c, -s], [s, c]])
        drot = np.array([[-s, -c], [c, -s]])
        m = len(sel)
        co = model.chip_offset(f.chip)
        eo = model.exposure_offset(e)
        # d q / d coef[axis, t] = rot[:, axis] * design[:, t];  d r / d . = jf @ that
        jr = jf @ rot  # (m, 2, 2): d F / d p
        for i in (0, 1):  # residual component
            r_rows = row0 + 2 * np.arange(m) + i
            blocks_c = []
            blocks_v = []
            for axis in (0, 1):
                blocks_c.append(co + axis * nt + np.arange(nt)[None, :].repeat(m, 0))
                blocks_v.append(jr[:, i, axis][:, None] * design)
            cols = [np.concatenate(blocks_c, axis=1)]
            vals = [np.concatenate(blocks_v, axis=1)]
            if eo is not None:
                dth = np.einsum("nj,jk,nk->n", jf[:, i, :], drot, p)
                cols.append(np.column_stack([np.full(m, eo), np.full(m, eo + 1), np.full(m, eo + 2)]))
                vals.append(np.column_stack([jf[:, i, 0], jf[:, i, 1], dth]))
            cc = np.concatenate(cols, axis=1)
            vv = np.concatenate(vals, axis=1)
            rows_g.append(np.repeat(r_rows, cc.shape[1]))
            cols_g.append(cc.ravel())
            vals_g.append(vv.ravel())
        model_pos = np.column_stack([fx, fy])
        resid = (model_pos - stars[star[sel]]).ravel()
        resid_parts.append(resid)
        star_parts.append(np.repeat(star[sel], 2) * 2 + np.tile([0, 1], m))
        weight_parts.append(np.repeat(1.0 / obs.sigma[sel] ** 2, 2))
        row0 += 2 * m
    n_det_rows = row0
    # reference rows: S_j - ref = r (d/dS = +1)
    rs = np.flatnonzero((ref_of_star >= 0) & use_ref)
    ref_resid = (stars[rs] - ref[ref_of_star[rs]]).ravel()
    ref_cols = (np.repeat(rs, 2) * 2 + np.tile([0, 1], len(rs)))
    ref_w = np.repeat(1.0 / ref_sigma[ref_of_star[rs]] ** 2, 2)
    n_rows = n_det_rows + len(ref_resid)
    jg = sparse.csr_matrix((np.concatenate(vals_g) if vals_g else np.zeros(0),
                            (np.concatenate(rows_g) if rows_g else np.zeros(0, int),
                             np.concatenate(cols_g) if cols_g else np.zeros(0, int))), shape=(n_rows, ng))
    s_cols = np.concatenate(star_parts + [ref_cols]) if star_parts else ref_cols
    s_vals = np.concatenate([-np.ones(n_det_rows), np.ones(len(ref_resid))])
    js = sparse.csr_matrix((s_vals, (np.arange(n_rows), s_cols)), shape=(n_rows, 2 * n_star))
    r = np.concatenate(resid_parts + [ref_resid]) if resid_parts else ref_resid
    w = np.concatenate(weight_parts + [ref_w]) if weight_parts else ref_w
    wm = sparse.diags(w)
    ngg = (jg.T @ wm @ jg).toarray()
    ngs = (jg.T @ wm @ js).tocsr()
    d = np.asarray((js.T @ wm @ js).diagonal()).ravel()
    gg = jg.T @ (w * r)
    gs = js.T @ (w * r)
    dinv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    schur = ngg - (ngs @ sparse.diags(dinv) @ ngs.T).toarray()
    rhs = -(gg - ngs @ (dinv * gs))
    # the scale of the parameters differs by orders of magnitude: solve the equilibrated system
    scale = np.sqrt(np.clip(np.diag(schur), 1e-300, None))
    step = np.linalg.lstsq(schur / scale[:, None] / scale[None, :], rhs / scale, rcond=1e-12)[0] / scale
    dstar = -dinv * (gs + ngs.T @ step)
    return step, stars + dstar.reshape(-1, 2)


def solve_global(frames: Sequence[FrameSources], ref_ra: Any, ref_dec: Any, ref_err_arcsec: Any, *,
                 order: int = 3, header_start: bool = False, match_radius_arcsec: float | None = None,
                 clip: float = 4.0, max_iterations: int = 12, min_ref: int = 5, min_pairs: int = 10,
                 error_floor_pix: float = 0.01) -> GlobalSolution:
    """The simultaneous astrometric solution of frames of dithered exposures (see the module doc).

    Parameters
    ----------
    frames : sequence of FrameSources
        The frames (every chip of every exposure to solve together) with their sources and start WCS.
    ref_ra, ref_dec : array
        Reference star positions [deg] (at the epoch of the observations).
    ref_err_arcsec : array or float
        Their position errors [arcsec] (per axis).
    order : int
        Total degree of each chip's distortion polynomial.
    header_start : bool
        The start WCS are rough (header) ones: register each exposure on the reference first and match
        with a wider radius.
    match_radius_arcsec : float, optional
        First match radius (default 2", 5" with ``header_start``); later matches use 5 times the rms.
    clip : float
        Outlier rejection: residuals beyond ``clip`` times the robust sigma of the normalised residuals.
    min_ref, min_pairs : int
        Fewer matched reference stars, or fewer overlap pairs between exposures (with more than one
        exposure), raise :class:`GAstromError`.
    error_floor_pix : float
        Added in quadrature to the centroid errors [pix].

    Raises
    ------
    GAstromError
        No frames, no sources, frames of one chip of different sizes, too few reference stars or overlaps.
    """
    frames = list(frames)
    if not frames:
        raise GAstromError("no frames to solve")
    if order < 1:
        raise GAstromError(f"order must be at least 1, not {order}")
    ref_ra = np.atleast_1d(np.asarray(ref_ra, dtype=float))
    ref_dec = np.atleast_1d(np.asarray(ref_dec, dtype=float))
    ref_err = np.broadcast_to(np.asarray(ref_err_arcsec, dtype=float), ref_ra.shape).copy()
    ref_err[~np.isfinite(ref_err) | (ref_err <= 0)] = 0.2
    if len(ref_ra) == 0:
        raise GAstromError("no reference stars in the field: load a reference catalogue that covers it")
    frames = _transferred_starts(frames)
    wcs = {f.key: f.wcs.deepcopy() for f in frames}
    # --- the start model (registered on the reference when it is the header's)
    exposures = list(dict.fromkeys(f.exposure for f in frames))
    if header_start:
        for e in exposures:
            mine = [f for f in frames if f.exposure == e]
            t = _mean_sky([_frame_centre_sky(f) for f in mine])
            # measured on the solved frames when the exposure has any (their offset is ~0)
            pos = [wcs[f.key].all_pix2world(f.x, f.y, 0) for f in _trusted(mine)]
            xi, eta = tangent_plane(np.concatenate([p[0] for p in pos]), np.concatenate([p[1] for p in pos]), *t)
            rx, ry = tangent_plane(ref_ra, ref_dec, *t)
            dxi, deta, n = register_offset(xi, eta, rx, ry)
            log.info("exposure %s registered on the reference: offset %.1f\", %.1f\" (%d pairs)", e,
                     dxi * 3600, deta * 3600, n)
            ra0, dec0 = from_tangent_plane(dxi, deta, *t)
            for f in mine:   # move the start WCS by the offset (at the exposure's centre)
                w = wcs[f.key]
                w.wcs.crval = [w.wcs.crval[0] + float(ra0) - t[0], w.wcs.crval[1] + float(dec0) - t[1]]
                w.wcs.set()
    model = _init_model(frames, wcs, order)
    scale_deg = {f.key: float(np.sqrt(abs(np.linalg.det(wcs[f.key].pixel_scale_matrix)))) for f in frames}
    frame_index = np.concatenate([np.full(len(f.x), k) for k, f in enumerate(frames)])
    obs = _Obs(frame=frame_index, x=np.concatenate([np.asarray(f.x, float) for f in frames]),
               y=np.concatenate([np.asarray(f.y, float) for f in frames]),
               sigma=np.concatenate([np.hypot(np.asarray(f.err, float), error_floor_pix) * scale_deg[f.key]
                                     for f in frames]))
    if len(obs.x) == 0:
        raise GAstromError("no sources in the frames")
    exp_index = {e: i for i, e in enumerate(model.exposures)}
    exposure_of = np.array([exp_index[frames[k].exposure] for k in frame_index])
    rx, ry = tangent_plane(ref_ra, ref_dec, *model.t0)
    ref = np.column_stack([rx, ry])
    ref_sigma = ref_err * _ARCSEC
    radius = (match_radius_arcsec or (5.0 if header_start else 2.0)) * _ARCSEC
    use = np.ones(len(obs.x), dtype=bool)
    iterations = 0
    star = np.zeros(0, dtype=int)
    ref_of_star = np.zeros(0, dtype=int)
    stars = np.zeros((0, 2))
    use_ref = np.zeros(0, dtype=bool)
    for rematch in range(3):
        pos = _positions(model, frames)
        groups = _group(pos, exposure_of, radius)
        star, ref_of_star = _match_reference(pos, groups, ref, radius)
        n_star = len(ref_of_star)
        matched = star >= 0
        n_ref = int((ref_of_star >= 0).sum())
        n_pairs = _count_pairs(star[matched])
        log.info("match %d (radius %.2f\"): %d stars, %d with reference, %d overlap pairs", rematch,
                 radius / _ARCSEC, n_star, n_ref, n_pairs)
        if n_ref < min_ref:
            raise GAstromError(f"only {n_ref} detections matched to reference stars within {radius / _ARCSEC:.1f}\" "
                               f"(at least {min_ref} needed): the reference catalogue does not cover the field, or "
                               "the start WCS is too far off (run AstrometricParametersTask first)")
        if len(model.exposures) > 1 and n_pairs < min_pairs:
            raise GAstromError(f"only {n_pairs} pairs of detections of one star in two exposures (at least "
                               f"{min_pairs} needed): the exposures do not overlap")
        # start the stars at their mean detected position
        counts = np.bincount(star[matched], minlength=n_star).astype(float)
        stars = np.column_stack([np.bincount(star[matched], pos[matched, k], minlength=n_star) for k in (0, 1)])
        with np.errstate(invalid="ignore", divide="ignore"):
            stars = np.where(counts[:, None] > 0, stars / counts[:, None], ref[np.maximum(ref_of_star, 0)])
        use = matched.copy()
        use_ref = ref_of_star >= 0
        for _ in range(max_iterations):
            iterations += 1
            step, stars = _solve_step(model, frames, obs, np.where(matched, star, 0), ref_of_star, ref, ref_sigma,
                                      use, use_ref, stars)
            model.apply(step)
            # re-solve the stars for the new parameters is folded into the next step; check convergence
            change = np.abs(step[: 2 * model.nt * len(model.chips)]).max() if len(step) else 0.0
            resid, ref_resid = _residuals(model, frames, obs, star, stars, ref_of_star, ref)
            norm = np.hypot(resid[:, 0], resid[:, 1]) / obs.sigma
            sigma_robust = 1.4826 * np.median(norm[use]) / 1.1774 if use.any() else 1.0  # Rayleigh median
            bad = use & (norm > clip * max(sigma_robust, 1.0))
            rnorm = np.hypot(ref_resid[:, 0], ref_resid[:, 1]) / ref_sigma[np.maximum(ref_of_star, 0)]
            rsig = 1.4826 * np.median(rnorm[use_ref]) / 1.1774 if use_ref.any() else 1.0
            bad_ref = use_ref & (rnorm > clip * max(rsig, 1.0))
            converged = change < 1e-10 and not bad.any() and not bad_ref.any()
            use &= ~bad
            use_ref &= ~bad_ref
            if converged:
                break
        ext = _external_rms(resid, ref_resid, star, ref_of_star, use, use_ref)
        radius = max(min(radius, 5.0 * ext * _ARCSEC), 0.5 * _ARCSEC) if math.isfinite(ext) else radius
    resid, ref_resid = _residuals(model, frames, obs, star, stars, ref_of_star, ref)
    rejected_total = int(((star >= 0) & ~use).sum())
    return _summary(model, frames, obs, star, stars, ref_of_star, ref, use, use_ref, resid, rejected_total,
                    iterations)


def _count_pairs(star: np.ndarray) -> int:
    counts = np.bincount(star) if len(star) else np.zeros(0, int)
    return int((counts * (counts - 1) // 2).sum())


def _residuals(model: _Model, frames: Sequence[FrameSources], obs: _Obs, star: np.ndarray, stars: np.ndarray,
               ref_of_star: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detection minus fitted star position (n_obs, 2) and fitted star minus reference (n_star, 2) [deg]."""
    pos = _positions(model, frames)
    resid = np.where((star >= 0)[:, None], pos - stars[np.maximum(star, 0)] if len(stars) else 0.0, np.nan)
    ref_resid = np.where((ref_of_star >= 0)[:, None], stars - ref[np.maximum(ref_of_star, 0)], np.nan) \
        if len(stars) else np.zeros((0, 2))
    return resid, ref_resid


def _detection_ref_resid(pos: np.ndarray, star: np.ndarray, ref_of_star: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out = np.full_like(pos, np.nan)
    ok = star >= 0
    has = np.zeros(len(pos), dtype=bool)
    has[ok] = ref_of_star[star[ok]] >= 0
    out[has] = pos[has] - ref[ref_of_star[star[has]]]
    return out


def _external_rms(resid: np.ndarray, ref_resid: np.ndarray, star: np.ndarray, ref_of_star: np.ndarray,
                  use: np.ndarray, use_ref: np.ndarray) -> float:
    """Per-axis rms [arcsec] of detection minus reference over the used matches."""
    ok = use & (star >= 0)
    ok[ok] &= use_ref[star[ok]]
    if not ok.any():
        return math.nan
    d = (resid[ok] + ref_resid[star[ok]]) / _ARCSEC
    return float(np.sqrt(np.mean(d ** 2)))


def _pair_rms(pos: np.ndarray, star: np.ndarray, use: np.ndarray) -> tuple[float, int, np.ndarray]:
    """Per-axis rms of one detection between exposures [arcsec]: pair differences / sqrt(2).

    Computed from the scatter about each star's mean: for a star of n detections the sum over its pairs
    of |d_i - d_j|^2 is n times the sum of |d_i - mean|^2. Also returns the number of pairs and each
    detection's distance to the mean of the others [arcsec], (n, 2).
    """
    ok = use & (star >= 0)
    sid = star[ok]
    p = pos[ok]
    n_star = int(sid.max()) + 1 if len(sid) else 0
    counts = np.bincount(sid, minlength=n_star).astype(float)
    sums = np.column_stack([np.bincount(sid, p[:, k], minlength=n_star) for k in (0, 1)])
    mean = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], 0.0)
    dev = p - mean[sid]
    multi = counts[sid] >= 2
    pairs = int((counts * (counts - 1) / 2).sum())
    other = np.full_like(pos, np.nan)
    n_i = counts[sid][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        others_mean = (sums[sid] - p) / (n_i - 1)
    sel = np.flatnonzero(ok)
    other[sel[multi]] = (p[multi] - others_mean[multi]) / _ARCSEC
    if pairs == 0:
        return math.nan, 0, other
    # sum over pairs of |d|^2 (both axes) = sum_stars n * sum |dev|^2
    pair_sq = float((counts[sid][multi][:, None] * dev[multi] ** 2).sum())
    return math.sqrt(pair_sq / pairs / 2.0 / 2.0) / _ARCSEC, pairs, other


def _summary(model: _Model, frames: Sequence[FrameSources], obs: _Obs, star: np.ndarray, stars: np.ndarray,
             ref_of_star: np.ndarray, ref: np.ndarray, use: np.ndarray, use_ref: np.ndarray, resid: np.ndarray,
             rejected: int, iterations: int) -> GlobalSolution:
    pos = _positions(model, frames)
    rms_int, n_pairs, other = _pair_rms(pos, star, use)
    ref_res = _detection_ref_resid(pos, star, np.where(use_ref, ref_of_star, -1), ref) / _ARCSEC
    ref_res[~use] = np.nan
    ext = float(np.sqrt(np.nanmean(ref_res ** 2))) if np.isfinite(ref_res).any() else math.nan
    results: dict[str, FrameResult] = {}
    for k, f in enumerate(frames):
        sel = obs.frame == k
        a, b, th = model.pointing[f.exposure]
        oth = other[sel & use]
        rr = ref_res[sel]
        good = np.isfinite(rr[:, 0])
        n_int = int(np.isfinite(oth[:, 0]).sum())
        tied = (np.isfinite(other[sel, 0]) & use[sel]) | good
        results[f.key] = FrameResult(
            key=f.key, wcs=_frame_wcs(model, f), n_sources=int(sel.sum()), n_overlap=n_int,
            n_ref=int(good.sum()), n_tied=int(tied.sum()),
            # a detection against the mean of the others: variance (1 + 1/(n-1)) sigma^2; ~sqrt(2) for pairs
            rms_internal=float(np.sqrt(np.nanmean(oth ** 2) / 2.0)) if n_int else math.nan,
            rms_ra=float(np.sqrt(np.mean(rr[good, 0] ** 2))) if good.any() else math.nan,
            rms_dec=float(np.sqrt(np.mean(rr[good, 1] ** 2))) if good.any() else math.nan,
            pointing=(float(a * 3600), float(b * 3600), float(math.degrees(th))))
    n_ref = int(((ref_of_star >= 0) & use_ref).sum())
    residuals = {"frame": obs.frame, "x": obs.x, "y": obs.y, "used": use,
                 "dxi": resid[:, 0] / _ARCSEC, "deta": resid[:, 1] / _ARCSEC,
                 "rxi": ref_res[:, 0], "reta": ref_res[:, 1]}
    log.info("global solution: %d frames, %d stars, %d reference stars, %d pairs, internal rms %.4f\", external "
             "rms %.4f\", %d rejected, %d iterations", len(frames), len(stars), n_ref, n_pairs, rms_int, ext,
             rejected, iterations)
    return GlobalSolution(frames=results, order=model.order, rms_internal=rms_int, rms_external=ext,
                          n_pairs=n_pairs, n_ref=n_ref, n_stars=len(stars), n_rejected=rejected,
                          iterations=iterations, tangent_point=model.t0, residuals=residuals)


# ============================================================================ TAN-SIP output
def _frame_wcs(model: _Model, frame: FrameSources) -> WCS:
    ny, nx = frame.shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 25), np.linspace(0, ny - 1, 25))
    ra, dec = model.sky(frame.chip, frame.exposure, gx.ravel(), gy.ravel())
    return fit_tan_sip(gx.ravel(), gy.ravel(), ra, dec, ((nx - 1) / 2.0, (ny - 1) / 2.0), model.order)


def fit_tan_sip(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, crpix0: tuple[float, float],
                order: int) -> WCS:
    """A TAN-SIP WCS through the points ``(x, y)`` (0-based pixels) -> ``(ra, dec)`` [deg].

    The reference pixel is ``crpix0`` (0-based; CRPIX = crpix0 + 1), CRVAL the sky position there
    (interpolated by a first fit), CD the linear part and the SIP ``A``/``B`` polynomials of degree
    ``order`` (terms of degree 2 and more) the rest, fitted by least squares on the tangent plane.
    """
    x, y, ra, dec = (np.asarray(a, dtype=float).ravel() for a in (x, y, ra, dec))
    u0, v0 = x - crpix0[0], y - crpix0[1]
    terms = [(i, j) for i, j in poly_terms(order)]
    # first pass: the sky position at crpix (constant term of a fit about a nearby tangent point)
    ra_c, dec_c = _mean_sky(list(zip(ra, dec)))
    xi, eta = tangent_plane(ra, dec, ra_c, dec_c)
    design = _design(u0, v0, terms)
    sol, *_ = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)
    crval = from_tangent_plane(sol[0, 0], sol[0, 1], ra_c, dec_c)
    crval = (float(crval[0]), float(crval[1]))
    xi, eta = tangent_plane(ra, dec, *crval)
    higher = [(i, j) for i, j in terms if i + j >= 1]
    design = _design(u0, v0, higher)
    sol, *_ = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)
    cd = np.array([[sol[higher.index((1, 0)), 0], sol[higher.index((0, 1)), 0]],
                   [sol[higher.index((1, 0)), 1], sol[higher.index((0, 1)), 1]]])
    w = WCS(naxis=2)
    w.wcs.crpix = [crpix0[0] + 1.0, crpix0[1] + 1.0]
    w.wcs.crval = list(crval)
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    if order >= 2:
        # CD^-1 (xi, eta) = (u + f, v + g): the SIP polynomials are the higher terms mapped through CD^-1
        inv = np.linalg.inv(cd)
        mapped = sol @ inv.T   # (n_terms, 2): coefficients of f and g (plus the identity in the linear terms)
        a = np.zeros((order + 1, order + 1))
        b = np.zeros((order + 1, order + 1))
        for (i, j), (ca, cb) in zip(higher, mapped):
            if i + j >= 2:
                a[i, j], b[i, j] = ca, cb
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    else:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.set()
    return w
