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

Across the mosaic
-----------------
:func:`follow_tracks` takes the tracks found on the chips of one exposure
and follows each onto the other chips through their WCS (a great circle on
the sky, a straight line on every chip), where it is looked for along the
known line only, with a length threshold a tenth of ``hough_threshold``
(:data:`FOLLOW_LENGTH_FRACTION`): this finds the corners the per-chip
search cannot.

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

__all__ = ["Track", "SatelliteResult", "find_satellite_tracks", "line_mask", "line_ends", "follow_tracks", "MosaicChip",
           "FollowedTrack", "FollowResult", "FOLLOW_LENGTH_FRACTION",
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


def _detections(image: np.ndarray, mask: np.ndarray | None, detection_threshold: float, box: int,
                compact_width: float, min_elongation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Steps 1 and 2: (background-subtracted image, bad pixels, detected non-compact pixels, sky rms)."""
    data, bad = _prepare_image(image, mask)
    bkg = _sep_background(data, bad, box, 3)
    sub = data - bkg.back()
    rms_map = bkg.rms()
    with np.errstate(divide="ignore", invalid="ignore"):
        det = (sub > detection_threshold * rms_map) & ~bad
    return sub, bad, _remove_compact(det, compact_width, min_elongation), float(bkg.globalrms)


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
    sub, bad, det, rms = _detections(image, mask, detection_threshold, box, compact_width, min_elongation)
    ny, nx = sub.shape

    hb = max(1, int(round(4.0 / binning)))
    max_gap = max(10.0, 0.05 * float(np.hypot(ny, nx)))
    binned = _bin_or(det, hb)
    diag = float(np.hypot(*binned.shape))
    n_theta = int(np.clip(np.ceil(np.pi * diag / 2.0), 180, 3600))
    thetas = np.linspace(-np.pi / 2, np.pi / 2, n_theta, endpoint=False)
    min_votes = max(0.5 * hough_threshold / (binning * hb), 5.0)
    result_mask = np.zeros(sub.shape, dtype=bool)
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
        result_mask |= line_mask(sub.shape, angle, rho, half_width + margin)
        track = Track(angle=angle, distance=float(rho), width=width, n_pixels=int(on_track.sum()),
                      length=length, peak=peak)
        tracks.append(track)
        log.info("satellite track: angle %.2f deg, distance %.1f px, width %.1f px, length %.0f px",
                 track.angle, track.distance, track.width, track.length)
    return SatelliteResult(mask=result_mask, tracks=tracks)


# ============================================================================ across the mosaic
#: The mosaic pass (:func:`follow_tracks`) accepts a followed track detected along this fraction of
#: ``hough_threshold`` (or along half the line's length on the chip, when that is shorter).
FOLLOW_LENGTH_FRACTION = 0.1


@dataclass(frozen=True)
class MosaicChip:
    """One chip of an exposure, as :func:`follow_tracks` needs it.

    Attributes
    ----------
    name : str
        The chip (``'ccd50'``), to say where a track came from.
    image : numpy.ndarray
        The reduced frame (ADU).
    wcs : astropy.wcs.WCS
        Its celestial WCS, 0-based pixel coordinates of ``image`` (the
        header's: rough pointing, but the chips' relative layout is good to a
        few pixels, and that is what following a track needs).
    mask : numpy.ndarray, optional
        True on pixels to ignore (weight 0 for any reason but a satellite).
    tracks : sequence of Track
        The tracks found on this chip (``find_satellite_tracks``).
    binning : float
        Detector pixels per image pixel.
    """

    name: str
    image: np.ndarray
    wcs: object
    mask: np.ndarray | None = None
    tracks: tuple = ()
    binning: float = 1.0


@dataclass(frozen=True)
class FollowedTrack:
    """A track found on a chip by following the tracks of other chips.

    Attributes
    ----------
    track : Track
        The line as measured on this chip (``length`` is the detected length
        in detector pixels, compared with the lower threshold of the pass).
    sources : tuple of str
        The chips whose tracks predicted it.
    predicted_angle, predicted_distance : float
        The line predicted through the WCS (degrees, image pixels).
    """

    track: Track
    sources: tuple
    predicted_angle: float
    predicted_distance: float


@dataclass(frozen=True)
class FollowResult:
    """What :func:`follow_tracks` found on one chip.

    ``mask`` is True on the pixels of the followed tracks (the tracks the
    chip's own search found are not repeated); ``tested`` lists the
    predicted lines ``(angle, distance, sources)`` that crossed the chip and
    were looked at, found or not.
    """

    mask: np.ndarray
    tracks: list = field(default_factory=list)
    tested: list = field(default_factory=list)


def line_ends(angle: float, distance: float, shape: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Where the line ``x cos(angle) + y sin(angle) = distance`` (degrees, pixels) enters and leaves an image.

    Returns ``(x0, y0, x1, y1)`` on the border of the pixel area (0-based
    pixel centres, edges at -0.5 and n - 0.5), or None if it misses it.
    """
    ny, nx = shape
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    points = []
    if abs(s) > 1e-12:
        for x in (-0.5, nx - 0.5):
            y = (distance - x * c) / s
            if -0.5 <= y <= ny - 0.5:
                points.append((x, y))
    if abs(c) > 1e-12:
        for y in (-0.5, ny - 0.5):
            x = (distance - y * s) / c
            if -0.5 <= x <= nx - 0.5:
                points.append((x, y))
    if len(points) < 2:
        return None
    points.sort()
    (xa, ya), (xb, yb) = points[0], points[-1]
    return float(xa), float(ya), float(xb), float(yb)


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.deg2rad(ra), np.deg2rad(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


@dataclass(frozen=True)
class _SkyLine:
    """A track's great circle: pole ``n`` and a point ``a`` on it (unit vectors)."""

    source: str
    n: np.ndarray
    a: np.ndarray


@dataclass
class _Prediction:
    theta: float          # radians
    rho: float            # image pixels
    t0: float             # the line's extent on the chip (position along it)
    t1: float
    sources: list


def _sky_line(chip: MosaicChip, track: Track) -> _SkyLine | None:
    ends = line_ends(track.angle, track.distance, chip.image.shape)
    if ends is None:
        return None
    ra, dec = chip.wcs.all_pix2world([ends[0], ends[2]], [ends[1], ends[3]], 0)
    a, b = _unit(np.asarray(ra), np.asarray(dec))
    n = np.cross(a, b)
    norm = float(np.linalg.norm(n))
    if norm < 1e-12:
        return None
    return _SkyLine(chip.name, n / norm, a)


def _pixel_scale_deg(wcs: object, shape: tuple[int, int]) -> float:
    """Mean pixel size (degrees) at the centre of the image."""
    ny, nx = shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    ra, dec = wcs.all_pix2world([cx, cx + 1.0, cx], [cy, cy, cy + 1.0], 0)
    u = _unit(np.asarray(ra), np.asarray(dec))
    return float(np.degrees(np.sqrt(np.linalg.norm(np.cross(u[1] - u[0], u[2] - u[0])))))


def _predict(line: _SkyLine, chip: MosaicChip, scale_deg: float) -> _Prediction | None:
    """The great circle as a straight line on the chip's pixels (fitted to points along it), or None."""
    ny, nx = chip.image.shape
    corners_x = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5, (nx - 1) / 2.0])
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5, (ny - 1) / 2.0])
    ra, dec = chip.wcs.all_pix2world(corners_x, corners_y, 0)
    u = _unit(np.asarray(ra), np.asarray(dec))
    centre = u[4]
    radius = 1.2 * float(np.max(np.arccos(np.clip(u[:4] @ centre, -1.0, 1.0))))
    if abs(float(line.n @ centre)) > np.sin(radius):
        return None
    b = np.cross(line.n, line.a)
    q = centre - float(line.n @ centre) * line.n
    phi0 = float(np.arctan2(q @ b, q @ line.a))
    step = np.deg2rad(scale_deg)
    phi = phi0 + np.arange(-radius, radius + step, step)
    points = np.cos(phi)[:, None] * line.a + np.sin(phi)[:, None] * b
    ra = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(points[:, 2], -1.0, 1.0)))
    x, y = chip.wcs.all_world2pix(ra, dec, 0, quiet=True)
    near = np.isfinite(x) & np.isfinite(y) & (x > -3) & (x < nx + 2) & (y > -3) & (y < ny + 2)
    if near.sum() < 2:
        return None
    theta, rho = _fit_line(x[near], y[near])
    ends = line_ends(float(np.rad2deg(theta)), rho, (ny, nx))
    if ends is None:
        return None
    t = [-ends[0] * np.sin(theta) + ends[1] * np.cos(theta), -ends[2] * np.sin(theta) + ends[3] * np.cos(theta)]
    return _Prediction(theta, rho, float(min(t)), float(max(t)), [line.source])


def _offset_at_middle(pred: _Prediction, theta: float, rho: float) -> float:
    """Distance of the prediction's mid point from the line (theta [rad], rho)."""
    tm = 0.5 * (pred.t0 + pred.t1)
    xm = pred.rho * np.cos(pred.theta) - tm * np.sin(pred.theta)
    ym = pred.rho * np.sin(pred.theta) + tm * np.cos(pred.theta)
    return float(xm * np.cos(theta) + ym * np.sin(theta) - rho)


def _angle_difference(a: float, b: float) -> float:
    """Difference of two line directions (radians), modulo pi, in [0, pi/2]."""
    d = (a - b) % np.pi
    return float(min(d, np.pi - d))


def _same_line(pred: _Prediction, theta: float, rho: float, tolerance: float, max_angle: float) -> bool:
    """Whether the line (theta [rad], rho) runs within ``max_angle`` and ``tolerance`` of the prediction."""
    return (_angle_difference(pred.theta, theta) <= max_angle
            and abs(_offset_at_middle(pred, theta, rho)) <= tolerance)


def _test_line(sub: np.ndarray, bad: np.ndarray, det: np.ndarray, rms: float, pred: _Prediction, binning: float,
               detection_threshold: float, min_length: float, tolerance: float, max_angle: float, margin: float,
               max_width: float) -> tuple[Track, np.ndarray] | None:
    """Look for a track near a predicted line; (track, mask) when one is there."""
    ny, nx = sub.shape
    ys, xs = np.nonzero(det)
    c, s = np.cos(pred.theta), np.sin(pred.theta)
    length = pred.t1 - pred.t0
    reach = tolerance + 0.5 * length * np.tan(max_angle) + 2.0
    d = xs * c + ys * s - pred.rho
    t = -xs * s + ys * c
    near = (np.abs(d) <= reach) & (t >= pred.t0 - 2.0) & (t <= pred.t1 + 2.0)
    xs, ys = xs[near].astype(float), ys[near].astype(float)
    if xs.size < 3:
        return None
    # A Hough transform restricted to the lines near the prediction, pivoting on its mid point.
    tm = 0.5 * (pred.t0 + pred.t1)
    xm, ym = pred.rho * c - tm * s, pred.rho * s + tm * c
    n_angles = int(np.clip(np.ceil(2.0 * max_angle * max(length, 1.0) / 0.5), 3, 721)) | 1
    thetas = pred.theta + np.linspace(-max_angle, max_angle, n_angles)
    offsets = (xs - xm)[None, :] * np.cos(thetas)[:, None] + (ys - ym)[None, :] * np.sin(thetas)[:, None]
    edges = np.arange(-np.ceil(tolerance) - 1.5, np.ceil(tolerance) + 2.0, 1.0)
    votes = np.stack([np.histogram(o, edges)[0] for o in offsets])
    votes = votes[:, :-2] + votes[:, 1:-1] + votes[:, 2:]          # 3-pixel wide band
    if votes.max() < 3:
        return None
    # of the lines with the most votes, the one closest to the prediction (a short segment leaves the angle loose)
    ties_angle, ties_bin = np.nonzero(votes == votes.max())
    centres = 0.5 * (edges[1:-2] + edges[2:-1])
    closest = int(np.lexsort((np.abs(centres[ties_bin]), np.abs(thetas[ties_angle] - pred.theta)))[0])
    best_angle, best_bin = int(ties_angle[closest]), int(ties_bin[closest])
    theta = float(thetas[best_angle])
    offset = float(centres[best_bin])
    rho = float(xm * np.cos(theta) + ym * np.sin(theta) + offset)
    refined = _refine_line(xs, ys, theta, rho, band=2.5)
    if refined is not None:
        # the least-squares line, unless stray detections pulled it off the track (fewer pixels on it)
        r_theta, r_rho, _ = refined
        def on_line(th: float, r: float) -> int:
            return int(np.count_nonzero(np.abs(xs * np.cos(th) + ys * np.sin(th) - r) <= 1.5))
        if (_angle_difference(r_theta, pred.theta) <= max_angle
                and abs(_offset_at_middle(pred, r_theta, r_rho)) <= tolerance + 1.0
                and on_line(r_theta, r_rho) >= on_line(theta, rho)):
            theta, rho = float(r_theta), float(r_rho)
    ends = line_ends(float(np.rad2deg(theta)), rho, (ny, nx))
    if ends is None:
        return None
    t_ends = sorted([-ends[0] * np.sin(theta) + ends[1] * np.cos(theta),
                     -ends[2] * np.sin(theta) + ends[3] * np.cos(theta)])
    section = _cross_section(sub, ~bad, theta, rho, (t_ends[0], t_ends[1]), max_width / 2.0, rms)
    if section is None:
        return None
    peak, width, centre = section
    if peak < 0.3 * detection_threshold * rms:
        return None
    rho += centre
    half_width = width / 2.0
    ys_all, xs_all = np.nonzero(det)
    on_track = np.abs(xs_all * np.cos(theta) + ys_all * np.sin(theta) - rho) <= half_width + 1.0
    if on_track.sum() < 3:
        return None
    t_on = -xs_all[on_track] * np.sin(theta) + ys_all[on_track] * np.cos(theta)
    max_gap = max(10.0, 0.05 * float(np.hypot(ny, nx)))
    detected = float(_main_run(t_on, max_gap)[2]) * binning
    needed = max(min(min_length, 0.5 * (t_ends[1] - t_ends[0]) * binning), 3.0 * binning)
    if detected < needed:
        log.debug("satellites: followed line at angle %.2f detected over %.0f px < %.0f", np.rad2deg(theta),
                  detected, needed)
        return None
    angle = float(np.rad2deg(theta))
    if angle >= 90.0:
        angle, rho = angle - 180.0, -rho
    elif angle < -90.0:
        angle, rho = angle + 180.0, -rho
    track = Track(angle=angle, distance=float(rho), width=width, n_pixels=int(on_track.sum()), length=detected,
                  peak=peak)
    return track, line_mask(sub.shape, angle, rho, half_width + margin)


def follow_tracks(chips: "list[MosaicChip]", detection_threshold: float = DETECTION_THRESHOLD,
                  hough_threshold: float = HOUGH_THRESHOLD, tolerance: float = 15.0, max_angle: float = 0.5,
                  min_length_fraction: float = FOLLOW_LENGTH_FRACTION, margin: float = 2.0,
                  max_width: float = 40.0, compact_width: float = 3.0, min_elongation: float = 4.0,
                  box: int = 64) -> dict[str, FollowResult]:
    """Follow the tracks found on some chips of an exposure onto the others, through their WCS.

    A satellite crosses the whole mosaic, but the per-chip search
    (:func:`find_satellite_tracks`) needs ``hough_threshold`` detector pixels
    of track and misses a chip whose corner it only cuts. Here every track
    found on a chip is turned into its great circle on the sky (through that
    chip's WCS) and projected onto every other chip it crosses; there the
    track is looked for along the known line only: among the detected
    pixels (steps 1-2 of :func:`find_satellite_tracks`) within ``tolerance``
    and ``max_angle`` of the prediction, the line with the most detections is
    refined, its median cross-section over the whole chip must be significant
    (as in the search), and it must be detected along ``min_length_fraction``
    times ``hough_threshold`` detector pixels (or along half of its length on
    the chip, when that is shorter). Knowing the line, the length needed is
    far lower than for a search over all lines. Tracks a chip's own search
    found are not looked for again.

    Parameters
    ----------
    chips : list of MosaicChip
        The chips of one exposure, with the tracks found on each.
    detection_threshold, hough_threshold : float
        ``DETECTION_THRESHOLD`` and ``HOUGH_THRESHOLD`` of the per-chip search.
    tolerance : float
        How far (arcsec) the track may lie from the predicted line: the error
        of the WCS's relative chip layout and of the source track's fit over
        the distance followed.
    max_angle : float
        How far (degrees) its direction may differ from the prediction.
    min_length_fraction : float
        The length needed, as a fraction of ``hough_threshold``.
    margin, max_width, compact_width, min_elongation, box
        As in :func:`find_satellite_tracks`.

    Returns
    -------
    dict
        Chip name -> :class:`FollowResult` (every chip, empty when nothing was followed onto it).
    """
    if tolerance <= 0 or max_angle <= 0 or min_length_fraction <= 0:
        raise ValueError("tolerance, max_angle and min_length_fraction must be positive, got "
                         f"{tolerance}, {max_angle}, {min_length_fraction}")
    names = [chip.name for chip in chips]
    if len(set(names)) != len(names):
        raise ValueError(f"follow_tracks needs each chip once, got {names}")
    lines = [line for chip in chips for line in (_sky_line(chip, t) for t in chip.tracks) if line is not None]
    results: dict[str, FollowResult] = {}
    for chip in chips:
        shape = chip.image.shape
        result = FollowResult(mask=np.zeros(shape, dtype=bool))
        results[chip.name] = result
        others = [line for line in lines if line.source != chip.name]
        if not others:
            continue
        scale_deg = _pixel_scale_deg(chip.wcs, shape)
        tol_px = tolerance / 3600.0 / scale_deg
        angle_rad = np.deg2rad(max_angle)
        predictions: list[_Prediction] = []
        for line in others:
            pred = _predict(line, chip, scale_deg)
            if pred is None:
                continue
            if any(_same_line(pred, np.deg2rad(t.angle), t.distance, tol_px + t.width, angle_rad)
                   for t in chip.tracks):
                continue
            same = next((p for p in predictions if _same_line(pred, p.theta, p.rho, tol_px, angle_rad)), None)
            if same is not None:
                same.sources.append(line.source)
            else:
                predictions.append(pred)
        if not predictions:
            continue
        sub, bad, det, rms = _detections(chip.image, chip.mask, detection_threshold, box, compact_width,
                                         min_elongation)
        for pred in predictions:
            sources = tuple(dict.fromkeys(pred.sources))
            result.tested.append((float(np.rad2deg(pred.theta)), pred.rho, sources))
            found = _test_line(sub, bad, det, rms, pred, chip.binning, detection_threshold,
                               min_length_fraction * hough_threshold, tol_px, angle_rad, margin, max_width)
            if found is None:
                log.info("satellites: the track of %s crosses %s over %.0f px but is not seen there",
                         ", ".join(sources), chip.name, pred.t1 - pred.t0)
                continue
            track, pixels = found
            np.logical_or(result.mask, pixels, out=result.mask)
            result.tracks.append(FollowedTrack(track, sources, float(np.rad2deg(pred.theta)), pred.rho))
            log.info("satellites: the track of %s followed onto %s: angle %.2f deg, distance %.1f px, detected "
                     "over %.0f detector px", ", ".join(sources), chip.name, track.angle, track.distance,
                     track.length)
    return results
