"""Satellite and airplane tracks: Hough-transform detection and masking.

:func:`find_satellite_tracks` is the algorithm behind Astro-WISE's
``SatelliteMap``; its two process parameters map onto the arguments:

``DETECTION_THRESHOLD`` (default 5.0) -> ``detection_threshold``
    A pixel takes part when it is this many background sigma above the
    local sky.
``HOUGH_THRESHOLD`` (default 1000.0) -> ``hough_threshold``
    A line is a track when it is *detected along at least this many
    detector pixels*: the number of one-pixel steps along the line at which
    a detected pixel lies within the track's width, over the longest stretch
    of the line without a gap of more than 5 % of the image diagonal (at
    least 10 pixels), counted in full-resolution detector pixels (an image
    binned or shrunk ``n`` times is passed ``binning=n`` and each of its
    steps counts ``n``). 1000 is half the short side and a quarter of the
    long side of a 2k x 4k WFI chip: a track crossing the chip is found
    unless it only clips a corner, while chance alignments of stars and
    cosmic rays never get near it. The same number keeps its meaning on a
    chip shrunk 8 times (where it is 125 image pixels).

Steps
-----
1. Subtract a mesh background (``sep``) and keep pixels above
   ``detection_threshold`` sigma (user-masked and non-finite pixels never).
2. Drop compact sources so that stars, galaxies and cosmic-ray clusters do
   not vote: every 8-connected group of detected pixels that is wider than
   ``compact_width`` pixels, less elongated than ``min_elongation`` (both
   from its second moments) and filled (its area at least 0.2 times its
   extent squared) is removed. Thin groups (faint stars, small cosmic
   rays, fragments of a faint track), long groups (a track, even with the
   stars it crosses) and sparse ones (crossing tracks) stay.
3. Hough transform (scikit-image) of the remaining pixels on an image binned
   to about 4 detector pixels (any detected pixel sets the binned pixel),
   with an angular step fine enough that a line is good to one binned pixel
   over the whole image. Peaks above half the vote count that
   ``hough_threshold`` implies become candidates.
4. For each candidate (strongest first): refine the line by a robust total
   least-squares fit of the detected pixels near it; measure the track's
   cross-section from the median background-subtracted profile across it
   (along its longest run of detections; the median ignores the stars and
   cosmic rays on the way); the
   width is where that profile exceeds half the sky noise. The candidate is
   accepted if the profile peak is significant (5 times its error and 0.3
   ``detection_threshold`` times the sky noise: a track found pixel by
   pixel is that bright, a chance alignment of sources is not) and its
   detected length reaches ``hough_threshold``; its pixels are then removed from the
   detections so a track is found once.
5. Mask every accepted line across the whole image, ``width / 2 + margin``
   pixels either side of its centre.

Coordinates: ``x`` is the column, ``y`` the row, the centre of pixel
``[0, 0]`` at ``(0, 0)``; a line is ``x cos(angle) + y sin(angle) =
distance`` (scikit-image's convention), ``angle`` in degrees in
``[-90, 90)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import hough_line, hough_line_peaks

from awe.image.background import _prepare_image, _sep_background

__all__ = ["Track", "SatelliteResult", "find_satellite_tracks", "line_mask",
           "DETECTION_THRESHOLD", "HOUGH_THRESHOLD"]

log = logging.getLogger(__name__)

#: Astro-WISE's SatelliteMap defaults.
DETECTION_THRESHOLD = 5.0
HOUGH_THRESHOLD = 1000.0


@dataclass(frozen=True)
class Track:
    """One detected track.

    Attributes
    ----------
    angle : float
        Direction of the line's normal, degrees in ``[-90, 90)``.
    distance : float
        Signed distance of the line from pixel ``(0, 0)``, image pixels.
    width : float
        Measured full width of the track (image pixels), where its median
        cross-section exceeds half the sky noise; the mask adds a margin.
    n_pixels : int
        Detected pixels on the track.
    length : float
        Detected length along the track in detector pixels (longest run
        without large gaps): what is compared with ``hough_threshold``.
    peak : float
        Median surface brightness on the track's centre line above the sky
        (ADU per pixel).
    """

    angle: float
    distance: float
    width: float
    n_pixels: int
    length: float
    peak: float


@dataclass(frozen=True)
class SatelliteResult:
    """Tracks found on a frame and their mask (``True`` on track pixels)."""

    mask: np.ndarray
    tracks: list[Track] = field(default_factory=list)


def _remove_compact(det: np.ndarray, compact_width: float, min_elongation: float) -> np.ndarray:
    """Drop detected groups that are wide and not elongated (stars, galaxies)."""
    labels, n = ndi.label(det, structure=np.ones((3, 3), bool))
    if n == 0:
        return det
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    count = np.bincount(lab, minlength=n + 1)[1:].astype(float)
    mx = np.bincount(lab, xs, n + 1)[1:] / count
    my = np.bincount(lab, ys, n + 1)[1:] / count
    dx, dy = xs - mx[lab - 1], ys - my[lab - 1]
    sxx = np.bincount(lab, dx * dx, n + 1)[1:] / count
    syy = np.bincount(lab, dy * dy, n + 1)[1:] / count
    sxy = np.bincount(lab, dx * dy, n + 1)[1:] / count
    tr, dif = sxx + syy, np.sqrt((sxx - syy) ** 2 + 4 * sxy**2)
    lam1, lam2 = (tr + dif) / 2, np.clip((tr - dif) / 2, 0, None)
    # Full extent of a uniform bar: sqrt(12 variance); +1 for the pixel size.
    length = np.sqrt(12 * lam1 + 1)
    width = np.sqrt(12 * lam2 + 1)
    # A filled blob covers about its extent squared; crossing tracks (an X)
    # have round moments but cover a small fraction of it.
    filled = count > 0.2 * length**2
    compact = (width > compact_width) & (length < min_elongation * width) & filled
    keep = np.concatenate([[False], ~compact])
    log.debug("satellites: %d of %d detected groups are compact sources", int(compact.sum()), n)
    return keep[labels]


def _bin_or(det: np.ndarray, b: int) -> np.ndarray:
    """Block-OR binning by ``b`` (edges padded)."""
    if b == 1:
        return det
    ny, nx = det.shape
    py, px = -ny % b, -nx % b
    padded = np.pad(det, ((0, py), (0, px)))
    return padded.reshape(padded.shape[0] // b, b, padded.shape[1] // b, b).any(axis=(1, 3))


def _fit_line(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """Total least-squares line through points; return (theta rad in [-pi/2, pi/2), rho)."""
    mx, my = xs.mean(), ys.mean()
    cov = np.cov(np.vstack([xs - mx, ys - my]))
    evals, evecs = np.linalg.eigh(cov)
    nx_, ny_ = evecs[:, 0]  # normal = direction of least variance
    theta = np.arctan2(ny_, nx_)
    if theta >= np.pi / 2:
        theta -= np.pi
    elif theta < -np.pi / 2:
        theta += np.pi
    return float(theta), float(mx * np.cos(theta) + my * np.sin(theta))


def _main_run(t: np.ndarray, max_gap: float) -> tuple[float, float, int]:
    """The stretch of positions ``t`` with the most distinct pixel steps and no gap above ``max_gap``.

    Returns (start, end, number of distinct one-pixel steps in it).
    """
    steps = np.unique(np.floor(t))
    breaks = np.flatnonzero(np.diff(steps) > max_gap)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [steps.size - 1]])
    best = int(np.argmax(ends - starts))
    return float(steps[starts[best]]), float(steps[ends[best]] + 1.0), int(ends[best] - starts[best] + 1)


def line_mask(shape: tuple[int, int], angle: float, distance: float, half_width: float) -> np.ndarray:
    """Boolean mask of pixels within ``half_width`` of the line ``(angle deg, distance)``."""
    th = np.deg2rad(angle)
    ny, nx = shape
    d = (np.arange(nx, dtype=np.float32)[None, :] * np.float32(np.cos(th))
         + np.arange(ny, dtype=np.float32)[:, None] * np.float32(np.sin(th)) - np.float32(distance))
    return np.abs(d) <= half_width


def _profile(sub: np.ndarray, usable: np.ndarray, theta: float, rho: float, t_range: tuple[float, float],
             reach: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median cross-section of the image across a line, in 0.5-pixel bins of distance.

    Only pixels within ``reach`` of the line whose position along it lies in
    ``t_range`` are used. Returns (bin centres, medians, pixel counts).
    """
    ny, nx = sub.shape
    c, s = np.cos(theta), np.sin(theta)
    # Pixels of a band around the line, found through its bounding box.
    if abs(s) > abs(c):  # more horizontal than vertical: iterate over columns
        x = np.arange(nx)
        yc = (rho - x * c) / s
        half = int(np.ceil(reach / abs(s))) + 1
        off = np.arange(-half, half + 1)
        yy = np.rint(yc)[:, None] + off[None, :]
        xx = np.broadcast_to(x[:, None], yy.shape)
    else:
        y = np.arange(ny)
        xc = (rho - y * s) / c
        half = int(np.ceil(reach / abs(c))) + 1
        off = np.arange(-half, half + 1)
        xx = np.rint(xc)[:, None] + off[None, :]
        yy = np.broadcast_to(y[:, None], xx.shape)
    xx, yy = xx.ravel().astype(int), yy.ravel().astype(int)
    inside = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
    xx, yy = xx[inside], yy[inside]
    d = xx * c + yy * s - rho
    t = -xx * s + yy * c
    sel = (np.abs(d) <= reach) & (t >= t_range[0]) & (t <= t_range[1]) & usable[yy, xx]
    d, vals = d[sel], sub[yy[sel], xx[sel]]
    edges = np.arange(-reach, reach + 0.5, 0.5)
    which = np.digitize(d, edges) - 1
    centres = edges[:-1] + 0.25
    med = np.full(centres.size, np.nan)
    counts = np.zeros(centres.size, dtype=int)
    order = np.argsort(which, kind="stable")
    which_s, vals_s = which[order], vals[order]
    bounds = np.searchsorted(which_s, np.arange(centres.size + 1))
    for i in range(centres.size):
        chunk = vals_s[bounds[i]:bounds[i + 1]]
        counts[i] = chunk.size
        if chunk.size:
            med[i] = np.median(chunk)
    return centres, med, counts


def _refine_line(xs: np.ndarray, ys: np.ndarray, theta: float, rho: float,
                 band: float) -> tuple[float, float, np.ndarray] | None:
    """Refit a Hough line to the detected pixels within ``band`` of it, narrowing the band.

    Returns ``(theta, rho, t)`` with ``t`` the positions along the line of
    the pixels finally within the band, or ``None`` if fewer than 3 are.
    """
    for _ in range(4):
        near = np.abs(xs * np.cos(theta) + ys * np.sin(theta) - rho) <= band
        if near.sum() < 3:
            return None
        theta, rho = _fit_line(xs[near].astype(float), ys[near].astype(float))
        d = xs * np.cos(theta) + ys * np.sin(theta) - rho
        near = np.abs(d) <= band
        spread = 1.4826 * float(np.median(np.abs(d[near]))) if near.any() else 0.0
        band = max(3.0 * spread + 1.0, 2.0)
    near = np.abs(xs * np.cos(theta) + ys * np.sin(theta) - rho) <= band
    if near.sum() < 3:
        return None
    return theta, rho, -xs[near] * np.sin(theta) + ys[near] * np.cos(theta)


def _cross_section(sub: np.ndarray, usable: np.ndarray, theta: float, rho: float,
                   t_range: tuple[float, float], reach: float, rms: float) -> tuple[float, float, float] | None:
    """Peak, full width and centre offset of a track from its median profile.

    The peak is the highest median within 1 pixel of the line and must
    exceed 5 times its error; the width spans the bins around the centre
    whose median exceeds half the sky noise (and 3 times its error), walking
    over the non-empty bins only (an axis-parallel line leaves every other
    half-pixel bin empty). Returns ``None`` if there is no significant peak.
    """
    centres, med, counts = _profile(sub, usable, theta, rho, t_range, reach)
    valid = counts > 0
    if not valid.any():
        return None
    err = 1.2533 * rms / np.sqrt(np.maximum(counts, 1))
    core = int(np.argmin(np.abs(centres)))
    peak = float(np.nanmax(med[max(core - 2, 0):core + 3]))
    if not peak > 5.0 * err[core]:
        return None
    vbins = np.flatnonzero(valid)
    above = med[vbins] > max(0.5 * rms, 3.0 * float(np.median(err[valid])))
    lo = hi = int(np.argmin(np.abs(centres[vbins])))
    while lo - 1 >= 0 and above[lo - 1]:
        lo -= 1
    while hi + 1 < above.size and above[hi + 1]:
        hi += 1
    edge_lo, edge_hi = centres[vbins[lo]], centres[vbins[hi]]
    step = float(np.median(np.diff(centres[vbins]))) if vbins.size > 1 else 0.5
    return peak, max(float(edge_hi - edge_lo) + step, 1.0), 0.5 * float(edge_lo + edge_hi)


def find_satellite_tracks(image: np.ndarray, detection_threshold: float = DETECTION_THRESHOLD,
                          hough_threshold: float = HOUGH_THRESHOLD, mask: np.ndarray | None = None,
                          binning: float = 1.0, margin: float = 2.0, max_width: float = 40.0,
                          compact_width: float = 3.0, min_elongation: float = 4.0,
                          max_tracks: int = 10, box: int = 64) -> SatelliteResult:
    """Find and mask satellite and airplane tracks on a science frame.

    Parameters
    ----------
    image : numpy.ndarray
        2-D frame in ADU (bias-subtracted and flat-fielded; sky included or
        not).
    detection_threshold : float
        ``DETECTION_THRESHOLD``: per-pixel detection limit in background
        sigma.
    hough_threshold : float
        ``HOUGH_THRESHOLD``: minimum detected length of a track, in
        full-resolution detector pixels (see the module notes).
    mask : numpy.ndarray, optional
        ``True`` for pixels to ignore (bad columns, saturated stars and
        their bleed trails: these are long and straight too).
    binning : float
        Detector pixels per image pixel along each axis (1 for a
        full-resolution chip, 8 for a chip shrunk 8 times).
    margin : float
        Image pixels added on each side of the measured track width in the
        mask.
    max_width : float
        Widest cross-section examined, image pixels (airplanes are wide).
    compact_width : float
        Detected groups at most this wide (pixels) always vote.
    min_elongation : float
        Wider groups vote only if at least this many times longer than wide.
    max_tracks : int
        Stop after this many tracks.
    box : int
        Background mesh size, pixels.

    Returns
    -------
    SatelliteResult
        The track mask and the list of :class:`Track`.
    """
    if detection_threshold <= 0 or hough_threshold <= 0 or binning <= 0:
        raise ValueError("detection_threshold, hough_threshold and binning must be positive, got "
                         f"{detection_threshold}, {hough_threshold}, {binning}")
    data, bad = _prepare_image(image, mask)
    ny, nx = data.shape
    bkg = _sep_background(data, bad, box, 3)
    sub = data - bkg.back()
    rms_map = bkg.rms()
    rms = float(bkg.globalrms)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = (sub > detection_threshold * rms_map) & ~bad
    det = _remove_compact(det, compact_width, min_elongation)

    hb = max(1, int(round(4.0 / binning)))
    max_gap = max(10.0, 0.05 * float(np.hypot(ny, nx)))
    binned = _bin_or(det, hb)
    diag = float(np.hypot(*binned.shape))
    n_theta = int(np.clip(np.ceil(np.pi * diag / 2.0), 180, 3600))
    thetas = np.linspace(-np.pi / 2, np.pi / 2, n_theta, endpoint=False)
    min_votes = max(0.5 * hough_threshold / (binning * hb), 5.0)
    result_mask = np.zeros(data.shape, dtype=bool)
    tracks: list[Track] = []
    if binned.sum() < min_votes:
        return SatelliteResult(mask=result_mask, tracks=tracks)
    hspace, angles, dists = hough_line(binned, theta=thetas)
    _, cand_theta, cand_rho = hough_line_peaks(
        hspace, angles, dists, min_distance=5, min_angle=max(int(n_theta / 90), 3),
        threshold=min_votes, num_peaks=4 * max_tracks)
    log.debug("satellites: %d Hough candidates above %.0f votes", len(cand_theta), min_votes)

    ys_all, xs_all = np.nonzero(det)
    free = np.ones(xs_all.size, dtype=bool)
    for theta, rho_b in zip(cand_theta, cand_rho):
        if len(tracks) >= max_tracks:
            break
        xs, ys = xs_all[free], ys_all[free]
        # Binned pixel i covers detector pixels i*hb .. i*hb + hb - 1.
        rho = rho_b * hb + (hb - 1) / 2.0 * (np.cos(theta) + np.sin(theta))
        line = _refine_line(xs, ys, theta, rho, band=1.5 * hb + 2.0)
        if line is None:
            continue
        theta, rho, t = line
        # Extent of the track: its longest run of detections, so that stray
        # stars or cosmic rays further along the line do not stretch it.
        start, end, _ = _main_run(t, max_gap)
        section = _cross_section(sub, ~bad, theta, rho, (start, end), max_width / 2.0, rms)
        if section is None:
            continue
        peak, width, offset = section
        # A track detected pixel by pixel at detection_threshold sigma is
        # itself bright: its median centre is well above the sky noise.
        if peak < 0.3 * detection_threshold * rms:
            log.debug("satellites: candidate angle %.2f rejected (profile peak %.2f)", np.rad2deg(theta), peak)
            continue
        rho += offset
        half_width = width / 2.0
        on_track = np.abs(xs * np.cos(theta) + ys * np.sin(theta) - rho) <= half_width + 1.0
        t = -xs[on_track] * np.sin(theta) + ys[on_track] * np.cos(theta)
        length = float(_main_run(t, max_gap)[2]) * binning
        if length < hough_threshold:
            log.debug("satellites: candidate angle %.2f detected over %.0f px < %.0f", np.rad2deg(theta),
                      length, hough_threshold)
            continue
        idx = np.flatnonzero(free)
        claim = np.abs(xs_all[idx] * np.cos(theta) + ys_all[idx] * np.sin(theta) - rho) <= half_width + margin
        free[idx[claim]] = False
        angle = float(np.rad2deg(theta))
        result_mask |= line_mask(data.shape, angle, rho, half_width + margin)
        track = Track(angle=angle, distance=float(rho), width=width, n_pixels=int(on_track.sum()),
                      length=length, peak=peak)
        tracks.append(track)
        log.info("satellite track: angle %.2f deg, distance %.1f px, width %.1f px, length %.0f px",
                 track.angle, track.distance, track.width, track.length)
    return SatelliteResult(mask=result_mask, tracks=tracks)
