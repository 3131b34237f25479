"""Source extraction on a reduced frame: SExtractor's detection and measurements with ``sep``.

Pure functions on arrays (no files, no database), used by the astrometry, the photometry and the
source lists:

- :func:`background_model` -- the mesh sky background and noise (``sep.Background``) with the
  frame's bad pixels (weight 0) left out, to reuse between calls;
- :func:`extract` -- detection above ``threshold`` sigma of the per-pixel sky noise on the image
  convolved with a filter (SExtractor's ``DETECT_THRESH`` with ``FILTER Y``: sep's
  ``filter_type='conv'``), deblending, centroids (windowed, then refined by a pixel-integrated Gaussian
  fit), AUTO (Kron) fluxes, half-light radii and SExtractor-like flags, and optionally circular apertures
  at every source (``apertures=``: :func:`aperture_flux`'s numbers without estimating the background, the
  noise map and the bad pixels again);
- :func:`aperture_flux` -- circular-aperture photometry at given positions.

Conventions
-----------
* Pixel coordinates are 0-based ``(x, y)`` = (column, row): the centre of pixel ``data[0, 0]`` is
  ``(0, 0)``, as in numpy and ``astropy.wcs`` with ``origin=0``.
* ``weight`` is the frame's weight map (:class:`awe.model.WeightFrame`): relative inverse variance,
  0 on pixels to ignore (hot/cold pixels and columns, cosmic rays, satellite tracks, saturated pixels
  and their bleed trails). The noise of a pixel is the sky rms of its mesh times
  ``sqrt(median(weight) / weight)``; pixels of weight 0 are never detected nor measured.
* Saturated pixels (``data >= saturation``) are the exception: they belong to the star that
  saturated them, so they are detected with it (the source is then flagged :data:`FLAG_SATURATED`)
  although their weight is 0; they are still left out of the fluxes and centroids' errors.
* Masked pixels inside a measurement aperture are replaced by their mirror image through the source
  centre when that one is good (SExtractor's ``MASK_TYPE CORRECT``), so a cosmic-ray hit or a bad
  column on a star does not bias its flux; the source is flagged :data:`FLAG_BAD_PIXELS`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import sep
from astropy.table import Table
from scipy import ndimage as ndi
from scipy.special import erf

__all__ = [
    "FLAG_BLENDED", "FLAG_DEBLENDED", "FLAG_SATURATED", "FLAG_TRUNCATED", "FLAG_BAD_PIXELS",
    "background_model", "noise_map", "extract", "aperture_flux",
]

log = logging.getLogger(__name__)

#: the source has neighbours bright and close enough to bias its AUTO flux (> 10 %), or was blended
FLAG_BLENDED = 1
#: the source was separated from others by the deblending
FLAG_DEBLENDED = 2
#: at least one pixel of the source is saturated
FLAG_SATURATED = 4
#: the source touches the image edge or a region of bad pixels (its isophote may be incomplete)
FLAG_TRUNCATED = 8
#: bad pixels (weight 0) inside the measurement aperture (replaced by their mirror pixels)
FLAG_BAD_PIXELS = 16

#: SExtractor's ``default.conv``: a 3x3 pyramid approximating a Gaussian of FWHM 2 pixels
_DEFAULT_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
#: Kron factor and minimum radius (SExtractor's ``PHOT_AUTOPARAMS 2.5, 3.5``)
_KRON_FACTOR = 2.5
_KRON_MIN_RADIUS = 3.5
_SQRT2 = float(np.sqrt(2.0))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
#: Moffat beta of the cleaning of spurious detections near bright ones (SExtractor's CLEAN_PARAM): sep's
#: cleaning with SExtractor's 1.0 drops faint stars next to bright sources that SExtractor keeps (benchmark
#: chip: 24 % of the S/N 5-10 stars found against SExtractor's 29 %); 3 finds as many, with as few spurious.
_CLEAN_BETA = 3.0
#: sources fitted at once by the centroids' Gauss-Newton steps (their arrays stay in the cache)
_FIT_BLOCK = 64
#: largest bad-pixel region interpolated for the detection (pixels, and pixels across)
_MAX_FILL_AREA = 64
_MAX_FILL_EXTENT = 12


def _prepare(data: np.ndarray, weight: np.ndarray | None, mask: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A C-contiguous float32 copy of ``data`` (0 on non-finite pixels), the weight, the bad-pixel mask."""
    image = np.asarray(data)
    if image.ndim != 2:
        raise ValueError(f"extract needs a 2-D image, got an array of shape {image.shape}")
    if min(image.shape) < 8:
        raise ValueError(f"image of shape {image.shape} is too small to extract sources from (need >= 8 x 8)")
    image = np.array(image, dtype=np.float32, order="C", copy=True)
    good = np.isfinite(image)
    nonfinite = not good.all()
    w = None
    if weight is not None:
        w = np.asarray(weight, dtype=np.float32)
        if w.shape != image.shape:
            raise ValueError(f"weight map of shape {w.shape} does not match the image's {image.shape}")
        good &= w > 0  # not NaN either
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != image.shape:
            raise ValueError(f"mask of shape {m.shape} does not match the image's {image.shape}")
        good &= ~m
    bad = ~good
    if bad.all():
        raise ValueError("every pixel of the image is masked (weight 0): nothing to extract")
    if nonfinite:
        image[~np.isfinite(image)] = 0.0
    return image, w, np.ascontiguousarray(bad)


def _where_yx(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask (rows and columns in row-major order), from the flat indices: several times
    faster on a frame whose true pixels are few."""
    lin = np.flatnonzero(mask)
    rows, cols = np.divmod(lin, mask.shape[1])
    return rows, cols


def background_model(data: np.ndarray, weight: np.ndarray | None = None, *, box: int = 64,
                     filter_size: int = 3, mask: np.ndarray | None = None) -> sep.Background:
    """The sky background and noise of a frame (SExtractor's mesh estimate, ``sep.Background``).

    Parameters
    ----------
    data : numpy.ndarray
        2-D frame (ADU).
    weight : numpy.ndarray, optional
        Its weight map; pixels of weight 0 are left out.
    box : int
        Mesh size (pixels; clipped to the image size). SExtractor's ``BACK_SIZE``.
    filter_size : int
        Median filter over the mesh grid (meshes). SExtractor's ``BACK_FILTERSIZE``.
    mask : numpy.ndarray, optional
        ``True`` on further pixels to leave out.

    Returns
    -------
    sep.Background
        ``.back()`` the background map, ``.rms()`` the noise map, ``.globalback``, ``.globalrms``.
    """
    if box < 4:
        raise ValueError(f"background box of {box} pixels is too small; use >= 4 (64 is typical)")
    image, _, bad = _prepare(data, weight, mask)
    return _background(image, bad, box, filter_size)


def _background(image: np.ndarray, bad: np.ndarray, box: int = 64, filter_size: int = 3) -> sep.Background:
    ny, nx = image.shape
    return sep.Background(image, mask=bad if bad.any() else None, bw=min(box, nx), bh=min(box, ny),
                          fw=filter_size, fh=filter_size)


def noise_map(background: Any, weight: np.ndarray | None, bad: np.ndarray,
              bad_yx: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per-pixel sky noise (ADU, float32): the mesh rms times ``sqrt(median(weight) / weight)``.

    Bad pixels get the mesh rms (they are masked in every measurement; the detection needs finite values).
    ``bad_yx``: ``np.nonzero(bad)`` when known.
    """
    err = np.ascontiguousarray(background.rms(dtype=np.float32))
    if weight is not None:
        step = max(1, int(math.sqrt(weight.size / 250000)))
        sample = weight[::step, ::step][~bad[::step, ::step]]
        ref = float(np.median(sample)) if sample.size else float(np.median(weight[~bad]))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            scale = np.divide(np.float32(ref), weight)
        if scale.dtype != np.float32:
            scale = scale.astype(np.float32)
        scale[bad_yx if bad_yx is not None else _where_yx(bad)] = 1.0
        np.sqrt(scale, out=scale)
        err *= scale
    return err


#: the 8-neighbourhood
_CROSS = np.ones((3, 3), bool)


def _bad_regions(bad: np.ndarray, bad_yx: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The 8-connected regions of the bad pixels, from their coordinates only (they are few; ``bad_yx``:
    ``np.nonzero(bad)`` when known).

    Returns the bad pixels' rows and columns, each one's region number (0..n-1) and n.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ny, nx = bad.shape
    by, bx = bad_yx if bad_yx is not None else _where_yx(bad)
    lin = by.astype(np.int64) * nx + bx
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        ok = (bx + dx >= 0) & (bx + dx < nx) & (by + dy < ny)
        cand = lin[ok] + dy * nx + dx
        j = np.minimum(np.searchsorted(lin, cand), lin.size - 1)
        hit = lin[j] == cand
        rows.append(np.flatnonzero(ok)[hit])
        cols.append(j[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(lin.size, lin.size))
    n, comp = connected_components(graph, directed=False)
    return by, bx, comp, int(n)


def _detection_image(sub: np.ndarray, err: np.ndarray, bad: np.ndarray, saturated: np.ndarray,
                     source_snr: float = 3.0, sigma: float = 1.0, *,
                     bad_yx: tuple[np.ndarray, np.ndarray] | None = None,
                     saturated_yx: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The image to detect on, its pixels masked for the detection, and the pixels next to bad regions.

    Each connected region of bad pixels is one of:

    * touching a saturated pixel (a bleed trail, the grown saturation mask): kept as it is, detected with
      its star;
    * compact (at most ``_MAX_FILL_AREA`` pixels, ``_MAX_FILL_EXTENT`` across: a cosmic ray, a cold pixel,
      a masked star or galaxy core) with neighbouring pixels on average ``source_snr`` sigma above the sky:
      on a source, its pixels are filled with the Gaussian-weighted mean of the good pixels around them
      (normalised convolution), so that the source is neither split nor lost;
    * otherwise: set to the sky and masked, grown by one pixel (the faint edges of a cosmic ray or a
      satellite track that the mask missed make no detections either).

    The third result is the (rows, columns) of the good pixels next to a bad region that is not saturated
    (a source on them is flagged truncated). ``bad_yx``, ``saturated_yx``: ``np.nonzero`` of ``bad`` and
    ``saturated`` when known.
    """
    detect = sub.copy()
    ny, nx = sub.shape
    empty = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp))
    if bad_yx is None:
        bad_yx = _where_yx(bad)
    if bad_yx[0].size == 0:
        return detect, np.zeros(sub.shape, dtype=bool), empty
    if saturated_yx is None:
        saturated_yx = _where_yx(saturated)
    any_saturated = saturated_yx[0].size > 0
    by, bx, comp, n = _bad_regions(bad, bad_yx)
    area = np.bincount(comp, minlength=n)
    y0 = np.full(n, ny); y1 = np.zeros(n, dtype=np.intp)  # noqa: E702
    x0 = np.full(n, nx); x1 = np.zeros(n, dtype=np.intp)  # noqa: E702
    np.minimum.at(y0, comp, by)
    np.maximum.at(y1, comp, by)
    np.minimum.at(x0, comp, bx)
    np.maximum.at(x1, comp, bx)
    extent = np.maximum(y1 - y0, x1 - x0) + 1
    # the ring: good pixels next to a region (labelled with one of their regions)
    ry, rx, rlab = [], [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            yy, xx = by + dy, bx + dx
            ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            yy, xx = yy[ok], xx[ok]
            good = ~bad[yy, xx]
            ry.append(yy[good])
            rx.append(xx[good])
            rlab.append(comp[ok][good])
    ring_y, ring_x, ring_c = np.concatenate(ry), np.concatenate(rx), np.concatenate(rlab)
    lin, first = np.unique(ring_y.astype(np.int64) * nx + ring_x, return_index=True)
    ring_y, ring_x, ring_c = ring_y[first], ring_x[first], ring_c[first]
    ring_snr = sub[ring_y, ring_x] / err[ring_y, ring_x]
    total = np.bincount(ring_c, weights=ring_snr, minlength=n)
    count = np.bincount(ring_c, minlength=n)
    on_source = (count > 0) & (total > source_snr * np.maximum(count, 1))
    keep = np.zeros(n, dtype=bool)
    if any_saturated:
        # the regions with a saturated pixel in or next to one of theirs (a bleed trail, the grown saturation
        # mask): looked up from the saturated pixels, which are fewer, among the sorted bad ones
        lin = by.astype(np.int64) * nx + bx
        sy, sx = saturated_yx
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = sy + dy, sx + dx
                inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
                q = yy[inside].astype(np.int64) * nx + xx[inside]
                j = np.minimum(np.searchsorted(lin, q), lin.size - 1)
                keep[comp[j[lin[j] == q]]] = True
    fill = on_source & (area <= _MAX_FILL_AREA) & (extent <= _MAX_FILL_EXTENT) & ~keep
    drop = ~keep & ~fill
    # masked: the dropped regions grown by a pixel (saturated pixels never), the filled ones where unfillable
    masked = np.zeros(sub.shape, dtype=bool)
    d = drop[comp]
    masked[by[d], bx[d]] = True
    r = drop[ring_c]
    masked[ring_y[r], ring_x[r]] = True
    _fill_regions(detect, masked, sub, bad, by, bx, comp, np.flatnonzero(fill), (y0, y1, x0, x1), sigma)
    if any_saturated:
        masked[saturated_yx] = False
    # the masked pixels are among the dropped regions, their rings and the filled regions
    f = fill[comp]
    cand_y = np.concatenate([by[d], ring_y[r], by[f]])
    cand_x = np.concatenate([bx[d], ring_x[r], bx[f]])
    hit = masked[cand_y, cand_x]
    detect[cand_y[hit], cand_x[hit]] = 0.0
    near = ~keep[ring_c]
    return detect, masked, (ring_y[near], ring_x[near])


def _fill_regions(detect: np.ndarray, masked: np.ndarray, sub: np.ndarray, bad: np.ndarray, by: np.ndarray,
                  bx: np.ndarray, comp: np.ndarray, regions: np.ndarray, boxes: tuple[np.ndarray, ...],
                  sigma: float, chunk: int = 2048) -> None:
    """Fill the bad regions ``regions`` of ``detect`` with the normalised convolution of the good pixels.

    Each region's window is its bounding box grown by 3 pixels (clipped to the image), outside of which the
    Gaussian filter sees zeros; the windows of a chunk of regions are stacked, zero-padded to the largest, and
    filtered at once (the padding is what the filter's constant mode sees beyond a window: the same values).
    Pixels where the good pixels around weigh too little (< 0.02) are set in ``masked`` instead.
    """
    ny, nx = sub.shape
    y0, y1, x0, x1 = boxes
    slot = np.full(comp.max() + 1 if comp.size else 0, -1, dtype=np.intp)
    for start in range(0, regions.size, chunk):
        ks = regions[start:start + chunk]
        m = ks.size
        wy0, wy1 = np.maximum(y0[ks] - 3, 0), np.minimum(y1[ks] + 4, ny)
        wx0, wx1 = np.maximum(x0[ks] - 3, 0), np.minimum(x1[ks] + 4, nx)
        gy = wy0[:, None] + np.arange(int((wy1 - wy0).max()))[None, :]
        gx = wx0[:, None] + np.arange(int((wx1 - wx0).max()))[None, :]
        inside = (gy < wy1[:, None])[:, :, None] & (gx < wx1[:, None])[:, None, :]
        pix = (np.minimum(gy, ny - 1)[:, :, None], np.minimum(gx, nx - 1)[:, None, :])
        good = ((~bad[pix]) & inside).astype(np.float32)
        values = sub[pix] * good
        values[~inside] = 0.0
        smooth = ndi.gaussian_filter(np.concatenate([values, good]), (0.0, sigma, sigma), mode="constant",
                                     truncate=3.0)
        num, den = smooth[:m], smooth[m:]
        slot[ks] = np.arange(m)
        mine = slot[comp] >= 0
        py, px = by[mine], bx[mine]
        k = slot[comp[mine]]
        ly, lx = py - wy0[k], px - wx0[k]
        d = den[k, ly, lx]
        ok = d > 0.02
        detect[py[ok], px[ok]] = num[k[ok], ly[ok], lx[ok]] / d[ok]
        masked[py[~ok], px[~ok]] = True
        slot[ks] = -1


def _gaussian_centroids(sub: np.ndarray, err: np.ndarray, bad: np.ndarray, seg: np.ndarray, x: np.ndarray,
                        y: np.ndarray, sigma0: np.ndarray, flux0: np.ndarray, gain: float | None,
                        niter: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit every source at once with a pixel-integrated circular Gaussian plus a constant.

    Damped Gauss-Newton on a square stamp around each source (half-size 2.5 typical sigma, 2-10 pixels), the
    pixels of other sources and bad pixels left out, weights from the sky noise and the model's Poisson noise.
    Integrating the Gaussian over each pixel makes the centroid unbiased on undersampled stars, where a
    windowed centroid is pulled towards the pixel centres. Returns ``x, y, xerr, yerr`` and ``ok`` (the fit
    converged to a positive source within 1.5 pixels of the start).
    """
    ny, nx = sub.shape
    n = x.size
    s0 = np.clip(np.nan_to_num(sigma0, nan=1.0), 0.25, 20.0)
    half = int(np.clip(np.ceil(2.5 * float(np.median(s0))), 2, 10))
    off = np.arange(-half, half + 1)
    gx = np.rint(x).astype(int)[:, None] + off[None, :]
    gy = np.rint(y).astype(int)[:, None] + off[None, :]
    inside = ((gy >= 0) & (gy < ny))[:, :, None] & ((gx >= 0) & (gx < nx))[:, None, :]
    cx, cy = np.clip(gx, 0, nx - 1), np.clip(gy, 0, ny - 1)
    pix = cy[:, :, None] * nx + cx[:, None, :]  # the stamps' pixels, as indices into the flattened frame
    data, sky_var = sub.reshape(-1).take(pix).astype(np.float64), err.reshape(-1).take(pix).astype(np.float64) ** 2
    labels = seg.reshape(-1).take(pix)
    use = inside & ~bad.reshape(-1).take(pix) & ((labels == 0) | (labels == np.arange(1, n + 1)[:, None, None])) \
        & (sky_var > 0)
    p = np.column_stack([x, y, np.maximum(np.nan_to_num(flux0), 1.0), s0, np.zeros(n)])
    # the pixels' edges: u - 0.5 for each pixel u of the stamp, and the last one's u + 0.5
    vx, vy = (np.concatenate([u - 0.5, u[:, -1:] + 0.5], axis=1) for u in (gx.astype(float), gy.astype(float)))
    eye = np.eye(5)[None]
    size = off.size

    def block_equations(idx: np.ndarray | slice, gradient: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The weighted normal matrix and gradient (``gradient``) of the sources ``idx`` at the current
        parameters."""
        xc, yc, flux, s, b = (p[idx, i] for i in range(5))
        m = xc.size
        edges = []
        for v, c in ((vx[idx], xc), (vy[idx], yc)):
            # a pixel's upper edge is the next one's lower edge (the same number: u + 0.5 = (u + 1) - 0.5)
            a = (v - c[:, None]) / s[:, None]
            ea, ga = erf(a / _SQRT2), _INV_SQRT_2PI * np.exp(-0.5 * a ** 2)
            a1, a0, g1, g0 = a[:, 1:], a[:, :-1], ga[:, 1:], ga[:, :-1]
            e = 0.5 * (ea[:, 1:] - ea[:, :-1])
            edges.append((e, -(g1 - g0) / s[:, None], -(a1 * g1 - a0 * g0) / s[:, None]))
        (ex, dex, sex), (ey, dey, sey) = edges
        # the Jacobian (m, pixels, 5) written in place: d/dx, d/dy, d/dflux (the profile), d/dsigma, d/dsky (1,
        # written once in the buffer reused by every block)
        jac4 = jac_buffer[:m]
        prof = jac4[..., 2]
        np.multiply(ey[:, :, None], ex[:, None, :], out=prof)
        f = flux[:, None, None]
        model = f * prof + b[:, None, None]
        np.multiply((flux[:, None] * ey)[:, :, None], dex[:, None, :], out=jac4[..., 0])
        np.multiply((flux[:, None] * dey)[:, :, None], ex[:, None, :], out=jac4[..., 1])
        np.multiply(f, sey[:, :, None] * ex[:, None, :] + ey[:, :, None] * sex[:, None, :], out=jac4[..., 3])
        jac = jac4.reshape(m, -1, 5)
        total_var = sky_var[idx] + (np.maximum(model - b[:, None, None], 0.0) / gain if gain else 0.0)
        w = np.where(use[idx], 1.0 / np.where(total_var > 0, total_var, 1.0), 0.0).reshape(m, -1)
        jw = np.multiply(jac, w[:, :, None], out=jw_buffer[:m]).transpose(0, 2, 1)
        if not gradient:
            return jw @ jac, None
        resid = (data[idx] - model).reshape(m, -1)
        return jw @ jac, (jw @ resid[:, :, None])[:, :, 0]

    jac_buffer = np.empty((min(n, _FIT_BLOCK), size, size, 5))
    jac_buffer[..., 4] = 1.0
    jw_buffer = np.empty((min(n, _FIT_BLOCK), size * size, 5))

    def normal_equations(idx: np.ndarray, gradient: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """:func:`block_equations` of ``idx`` in blocks of sources small enough to stay in the cache (each
        source's numbers are its own: the same in any block); a run of consecutive sources as a slice."""
        normal, grad = np.empty((idx.size, 5, 5)), np.zeros((idx.size, 5))
        for start in range(0, idx.size, _FIT_BLOCK):
            part = idx[start:start + _FIT_BLOCK]
            sel: np.ndarray | slice = part
            if part[-1] - part[0] == part.size - 1:
                sel = slice(int(part[0]), int(part[-1]) + 1)
            normal[start:start + part.size], g = block_equations(sel, gradient)
            if g is not None:
                grad[start:start + part.size] = g
        return normal, grad

    active = np.arange(n)
    for _ in range(niter):
        if active.size == 0:
            break
        normal, grad = normal_equations(active)
        damped = normal + 1e-3 * eye * np.maximum(np.einsum("nii->ni", normal), 1e-12)[:, :, None]
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                break
        step = np.nan_to_num(step)
        moving = np.abs(step[:, 0:2]).max(axis=1) > 1e-4
        step[:, 0:2] = np.clip(step[:, 0:2], -0.5, 0.5)
        step[:, 3] = np.clip(step[:, 3], -0.5 * p[active, 3], 0.5 * p[active, 3])
        p[active] += step
        p[active, 3] = np.clip(p[active, 3], 0.15, 3.0 * s0[active] + 1.0)
        active = active[moving]
    normal, _ = normal_equations(np.arange(n), gradient=False)
    with np.errstate(all="ignore"):
        cov = np.linalg.pinv(normal)
    xerr, yerr = np.sqrt(np.abs(cov[:, 0, 0])), np.sqrt(np.abs(cov[:, 1, 1]))
    ok = np.isfinite(p).all(axis=1) & (p[:, 2] > 0) & (np.hypot(p[:, 0] - x, p[:, 1] - y) < 1.5)
    ok &= (p[:, 3] > 0.16) & (p[:, 3] < 3.0 * s0 + 0.9) & (use.sum(axis=(1, 2)) >= 6) & np.isfinite(xerr + yerr)
    return p[:, 0], p[:, 1], xerr, yerr, ok


def _kernel(filter_fwhm_pix: float | None) -> np.ndarray:
    if filter_fwhm_pix is None:
        return _DEFAULT_KERNEL
    if not filter_fwhm_pix > 0:
        raise ValueError(f"filter_fwhm_pix must be positive (pixels), got {filter_fwhm_pix}")
    sigma = filter_fwhm_pix / 2.3548
    half = max(1, int(np.ceil(2.0 * sigma)))
    r = np.arange(-half, half + 1)
    k = np.exp(-(r[None, :] ** 2 + r[:, None] ** 2) / (2.0 * sigma * sigma))
    return k / k.max()


def _mirror_correction(sub: np.ndarray, bad: np.ndarray, err: np.ndarray, bad_yx: tuple[np.ndarray, np.ndarray],
                       x: np.ndarray, y: np.ndarray, inside: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux and variance of the bad pixels inside each aperture, from their mirror pixels.

    ``bad_yx``: the rows and columns of the bad pixels in row-major order (``np.nonzero(bad)``);
    ``inside.contains(i, xx, yy)`` says which pixel centres ``(xx, yy)`` fall in the apertures ``i``
    (an index per pixel); only the sources ``rows`` (those with bad pixels in their aperture) are looked at.
    All of them at once: each source's bad pixels are those of the rows its aperture spans (a slice of
    ``bad_yx``), cut to its columns and its aperture; the sums are what each source's own ``np.sum`` over its
    mirror pixels gives (bit-identical to summing source by source: up to 7 terms added in order, all sources
    at once; beyond, numpy's pairwise sum, source by source).
    """
    ny, nx = sub.shape
    dflux = np.zeros(x.size)
    dvar = np.zeros(x.size)
    by, bx = bad_yx
    rows = np.asarray(rows, dtype=np.intp)
    if rows.size == 0 or by.size == 0:
        return dflux, dvar
    r = inside.extent(rows)
    lo = np.searchsorted(by, np.floor(y[rows] - r))
    hi = np.searchsorted(by, np.ceil(y[rows] + r) + 1)
    counts = hi - lo
    # in chunks of sources of at most ~2 million candidate pixels (a long satellite track across large apertures)
    ends = np.cumsum(counts)
    start = 0
    while start < rows.size:
        base = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, base + 2_000_000, side="right")), start + 1)
        c = counts[start:stop]
        owner = np.repeat(np.arange(start, stop), c)
        offset = np.cumsum(c) - c
        pos = np.arange(int(c.sum())) + np.repeat(lo[start:stop] - offset, c)
        yy, xx = by[pos], bx[pos]
        keep = np.abs(xx - x[rows[owner]]) <= r[owner] + 1
        yy, xx, owner = yy[keep], xx[keep], owner[keep]
        sel = inside.contains(rows[owner], xx, yy)
        yy, xx, owner = yy[sel], xx[sel], owner[sel]
        src = rows[owner]
        my = np.rint(2 * y[src] - yy).astype(int)
        mx = np.rint(2 * x[src] - xx).astype(int)
        ok = (mx >= 0) & (mx < nx) & (my >= 0) & (my < ny)
        mx, my, owner = mx[ok], my[ok], owner[ok]
        ok = ~bad[my, mx]
        mx, my, owner = mx[ok], my[ok], owner[ok]
        values = sub[my, mx]
        variances = err[my, mx].astype(np.float64) ** 2
        bounds = np.searchsorted(owner, np.arange(start, stop + 1))
        first, length = bounds[:-1], np.diff(bounds)
        # up to 7 pixels np.sum adds them in order: those sums for all such sources at once, in that order
        few = np.flatnonzero((length > 0) & (length < 8))
        if few.size:
            at, k = first[few], length[few]
            flux_sum = values[at].astype(np.float64)
            var_sum = variances[at]
            for c in range(1, int(k.max())):
                more = c < k
                j = np.where(more, at + c, at)
                flux_sum = np.where(more, flux_sum + values[j].astype(np.float64), flux_sum)
                var_sum = np.where(more, var_sum + variances[j], var_sum)
            dflux[rows[start + few]] = flux_sum
            dvar[rows[start + few]] = var_sum
        for j in np.flatnonzero(length >= 8):  # pairwise beyond: each source's own np.sum
            s, e = bounds[j], bounds[j + 1]
            i = rows[start + j]
            dflux[i] = float(np.sum(values[s:e], dtype=np.float64))
            dvar[i] = float(np.sum(variances[s:e]))
        start = stop
    return dflux, dvar


class _Circles:
    def __init__(self, x: np.ndarray, y: np.ndarray, r: np.ndarray):
        self.x, self.y, self.r = x, y, r

    def extent(self, i: np.ndarray) -> np.ndarray:
        return np.asarray(self.r[i], dtype=float)

    def contains(self, i: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        return np.asarray((xx - self.x[i]) ** 2 + (yy - self.y[i]) ** 2 <= self.r[i] ** 2)


class _Ellipses:
    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, theta: np.ndarray,
                 r: np.ndarray):
        self.x, self.y, self.r = x, y, r
        self.cxx, self.cyy, self.cxy = sep.ellipse_coeffs(a, b, theta)
        self.a = a

    def extent(self, i: np.ndarray) -> np.ndarray:
        return np.asarray(self.r[i] * self.a[i], dtype=float)

    def contains(self, i: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        dx, dy = xx - self.x[i], yy - self.y[i]
        q = self.cxx[i] * dx * dx + self.cyy[i] * dy * dy + self.cxy[i] * dx * dy
        return np.asarray(q <= self.r[i] ** 2)


def extract(data: np.ndarray, weight: np.ndarray | None = None, *, threshold: float = 1.5, minarea: int = 5,
            filter_fwhm_pix: float | None = None, saturation: float | None = None, gain: float | None = None,
            deblend_cont: float = 0.005, mask: np.ndarray | None = None, background: Any = None,
            saturated: np.ndarray | None = None, apertures: Any = None) -> Table:
    """Detect and measure the sources of a reduced frame.

    Detection follows SExtractor: the background-subtracted image is convolved with the filter and
    every connected group of at least ``minarea`` pixels above ``threshold`` times the per-pixel sky
    noise (the unfiltered one, as ``DETECT_THRESH``) is a source, split by the multi-threshold
    deblending (32 levels, ``deblend_cont``). Pixels of weight 0 never belong to a source, except
    saturated ones (``data >= saturation``).

    Parameters
    ----------
    data : numpy.ndarray
        2-D reduced frame (ADU, sky included).
    weight : numpy.ndarray, optional
        Its weight map (relative inverse variance; 0 = bad pixel). ``None``: all pixels equal.
    threshold : float
        Detection threshold in sigma of the per-pixel sky noise (``DETECT_THRESH``).
    minarea : int
        Minimum number of pixels above the threshold (``DETECT_MINAREA``), also the smallest deblended
        component. 5 suits stars of FWHM >= 2 pixels; on undersampled frames (FWHM ~ 1 pixel) 3 keeps
        the faint stars (5 loses a fifth of those at S/N 5-10).
    filter_fwhm_pix : float, optional
        FWHM (pixels) of the Gaussian detection filter; ``None`` uses SExtractor's ``default.conv``
        (3x3, about 2 pixels).
    saturation : float, optional
        Level (ADU, in ``data``) at and above which a pixel is saturated; ``None``: no saturation flag.
    gain : float, optional
        e-/ADU, for the sources' Poisson noise in ``flux_err``; ``None``: sky noise only.
    deblend_cont : float
        Minimum contrast of a deblended component (``DEBLEND_MINCONT``); 1 switches deblending off.
    mask : numpy.ndarray, optional
        ``True`` on further pixels to ignore.
    background : sep.Background, optional
        A background model of this frame (:func:`background_model`); made here when not given.
    saturated : numpy.ndarray, optional
        ``True`` on pixels known to be saturated (a coadd's or regridded frame's flag map), in addition to
        ``data >= saturation``: treated alike (detected whole, flagged ``FLAG_SATURATED``, not measured).
    apertures : array_like, optional
        Radii (pixels) of circular apertures measured at every source's position, as :func:`aperture_flux`
        measures them (the same numbers) but on this extraction's background, noise map and bad pixels (those
        of ``weight`` and ``mask``): columns ``flux_aper``, ``flux_aper_err`` (ADU) and ``flags_aper``, one
        entry per radius (NaN where the position is not finite).

    Returns
    -------
    astropy.table.Table
        One row per source (sorted by decreasing flux): ``x, y`` (centroid, 0-based pix: the windowed
        centroid refined by a fit of a pixel-integrated Gaussian, which stays unbiased on undersampled
        stars; the windowed one where that fit fails), ``xerr, yerr`` (pix, 1-sigma, from the fit's
        covariance, else from the isophotal moments), ``a, b, theta`` (pix, rad,
        counter-clockwise from +x), ``flux, flux_err`` (AUTO flux, ADU), ``flux_radius`` (half-light
        radius, pix), ``fwhm_pix`` (Gaussian-equivalent, ``2 flux_radius``), ``snr``
        (``flux / flux_err``), ``peak`` (highest background-subtracted pixel, ADU), ``npix``
        (isophotal pixels), ``background`` (sky at the source, ADU), ``flags`` (``FLAG_*`` bits).
        ``meta`` holds the background level and rms and the parameters.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive (sigma), got {threshold}")
    if minarea < 1:
        raise ValueError(f"minarea must be at least 1 pixel, got {minarea}")
    image, w, bad = _prepare(data, weight, mask)
    if apertures is not None:
        radii = np.atleast_1d(np.asarray(apertures, dtype=float))
        if radii.ndim != 1 or radii.size == 0 or np.any(~(radii > 0)):
            raise ValueError(f"apertures must be positive radii (pixels), got {apertures!r}")
    saturated_map = saturated
    saturated = image >= saturation if saturation is not None else np.zeros(image.shape, dtype=bool)
    if saturated_map is not None:
        if np.shape(saturated_map) != image.shape:
            raise ValueError(f"saturated map of shape {np.shape(saturated_map)} does not match the image's "
                             f"{image.shape}")
        saturated = saturated | np.asarray(saturated_map, dtype=bool)
    bkg = background if background is not None else _background(image, bad)
    back = np.ascontiguousarray(bkg.back(dtype=np.float32))
    if back.shape != image.shape:
        raise ValueError(f"background model of shape {back.shape} does not match the image's {image.shape}")
    sub = image
    sub -= back
    # the bad pixels (weight 0, mask), the saturated ones and both (what the measurements mask) by their
    # coordinates (row-major): few, looked up by the detection image, the mirror corrections and the flags
    mbad = bad | saturated
    mby, mbx = _where_yx(mbad)
    in_bad, in_sat = bad[mby, mbx], saturated[mby, mbx]
    bad_yx, sat_yx = (mby[in_bad], mbx[in_bad]), (mby[in_sat], mbx[in_sat])
    err = noise_map(bkg, w, bad, bad_yx)
    sep.set_extract_pixstack(max(300000, image.size // 4))
    sep.set_sub_object_limit(4096)
    # Bad pixels must not make detections (the filter would spread a masked cosmic ray into its neighbours),
    # nor split or hide the source they lie on, and saturated stars are detected whole: _detection_image.
    detect, unfilled, near_bad = _detection_image(sub, err, bad, saturated, bad_yx=bad_yx, saturated_yx=sat_yx)
    objects, seg = sep.extract(detect, threshold, err=err, mask=unfilled if unfilled.any() else None,
                               minarea=minarea, filter_kernel=_kernel(filter_fwhm_pix), filter_type="conv",
                               deblend_nthresh=32, deblend_cont=deblend_cont, clean=True, clean_param=_CLEAN_BETA,
                               segmentation_map=True)
    del detect, unfilled
    n = objects.size
    log.debug("extract: %d sources above %.2f sigma (sky %.3f, rms %.3f ADU)", n, threshold,
              bkg.globalback, bkg.globalrms)
    if apertures is not None:
        # the apertures see the saturated pixels of positive weight (only the bad ones are masked): kept aside
        # while the measurements mask them
        sat_pix = (mby[~in_bad], mbx[~in_bad])
        sat_values = sub[sat_pix]
    table = _measure(objects, seg, sub, back, err, mbad, (mby, mbx), in_sat, near_bad, gain) if n else _empty()
    if apertures is not None:
        sub[sat_pix] = sat_values  # now ``image - back`` with the bad pixels at 0, as aperture_flux makes it
        _aperture_columns(table, sub, bad, bad_yx, err, radii, gain)
    table.meta.update({"BACKGND": float(bkg.globalback), "BACK_RMS": float(bkg.globalrms),
                       "THRESH": float(threshold), "MINAREA": int(minarea), "DEBCONT": float(deblend_cont),
                       "FILTFWHM": float(filter_fwhm_pix) if filter_fwhm_pix else 2.0})
    return table


_COLUMNS = ("x", "y", "xerr", "yerr", "a", "b", "theta", "flux", "flux_err", "flux_radius", "fwhm_pix", "snr",
            "peak", "npix", "background", "flags")


def _empty() -> Table:
    cols: dict[str, np.ndarray] = {c: np.zeros(0) for c in _COLUMNS}
    cols["npix"] = np.zeros(0, dtype=np.int64)
    cols["flags"] = np.zeros(0, dtype=np.int32)
    return Table(cols)


def _measure(objects: np.ndarray, seg: np.ndarray, sub: np.ndarray, back: np.ndarray, err: np.ndarray,
             mbad: np.ndarray, mbad_yx: tuple[np.ndarray, np.ndarray], sat: np.ndarray,
             near_bad: tuple[np.ndarray, np.ndarray], gain: float | None) -> Table:
    """Measure the detected sources on ``sub`` (its bad pixels ``mbad``, at ``mbad_yx`` in row-major order, are
    set to 0 here; ``sat``: which of them are saturated)."""
    ny, nx = sub.shape
    n = objects.size
    ids = np.arange(1, n + 1)
    x0, y0 = objects["x"].astype(float), objects["y"].astype(float)
    # Aperture shapes: finite, at least 0.3 pix, a >= b, |theta| <= pi/2 (sep checks them).
    a = np.nan_to_num(objects["a"].astype(float), nan=0.3)
    b = np.nan_to_num(objects["b"].astype(float), nan=0.3)
    a, b = np.maximum(np.maximum(a, b), 0.3), np.maximum(np.minimum(a, b), 0.3)
    theta = np.clip(np.nan_to_num(objects["theta"].astype(float)), -np.pi / 2, np.pi / 2)
    # Measurements see the bad pixels masked, the saturated ones too (their value is not the flux).
    meas = sub
    meas[mbad_yx] = 0.0
    masked = mbad if mbad_yx[0].size else None

    # AUTO (Kron) aperture: 2.5 Kron radii, at least 3.5 pixels' worth (SExtractor's PHOT_AUTOPARAMS).
    kron, kflag = sep.kron_radius(meas, x0, y0, a, b, theta, 6.0, mask=masked, segmap=seg, seg_id=ids)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, _KRON_MIN_RADIUS)
    r_auto = np.maximum(_KRON_FACTOR * kron, _KRON_MIN_RADIUS / np.sqrt(a * b))
    flux, flux_err, aflag = sep.sum_ellipse(meas, x0, y0, a, b, theta, r_auto, err=err, gain=gain,
                                            mask=masked, segmap=seg, seg_id=ids, subpix=5)
    flux_all, _, allflag = sep.sum_ellipse(meas, x0, y0, a, b, theta, r_auto, mask=masked, subpix=5)
    contamination = flux_all - flux
    rows = np.flatnonzero(allflag & sep.APER_HASMASKED)
    if rows.size:
        df, dv = _mirror_correction(meas, mbad, err, mbad_yx, x0, y0, _Ellipses(x0, y0, a, b, theta, r_auto), rows)
        flux = flux + df
        flux_err = np.sqrt(flux_err ** 2 + dv)

    # half the AUTO flux lies within the circle around the AUTO ellipse (its semi-major axis r_auto a), which
    # bounds the growth curve; sep's radial bins scale with that bound (finer for a tighter one)
    r50, _ = sep.flux_radius(meas, x0, y0, np.minimum(6.0 * a, r_auto * a), 0.5,
                             normflux=np.where(flux > 0, flux, np.nan), mask=masked, subpix=5)
    r50 = np.where(np.isfinite(r50) & (r50 > 0), r50, np.sqrt(a * b))
    # Windowed centroid (SExtractor's XWIN): Gaussian window of sigma 2 FLUX_RADIUS / 2.35, never narrower than
    # 1 pixel: on undersampled stars a narrower window locks the centroids onto pixel centres (0.13 pix rms of
    # bias at FWHM 0.7 pix with sigma 0.3, 0.05 with sigma 1).
    sig = np.maximum(2.0 * r50 / 2.3548, 1.0)
    xw, yw, wflag = sep.winpos(meas, x0, y0, sig, mask=masked, subpix=5)
    moved = ~np.isfinite(xw) | ~np.isfinite(yw) | (np.hypot(xw - x0, yw - y0) > np.maximum(2.0 * sig, 1.0)) \
        | (wflag != 0)
    xw = np.where(moved, x0, xw)
    yw = np.where(moved, y0, yw)
    xg, yg, xerr_g, yerr_g, fitted = _gaussian_centroids(meas, err, mbad, seg, xw, yw, r50 / 1.1774, flux, gain)
    x = np.where(fitted, xg, xw)
    y = np.where(fitted, yg, yw)

    flags = np.zeros(n, dtype=np.int32)
    deblended = (objects["flag"] & sep.OBJ_MERGED) != 0
    flags[deblended] |= FLAG_BLENDED | FLAG_DEBLENDED
    flags[contamination > 0.1 * np.abs(flux)] |= FLAG_BLENDED
    flags[(objects["flag"] & sep.OBJ_TRUNC) != 0] |= FLAG_TRUNCATED
    flags[(aflag & sep.APER_TRUNC) != 0] |= FLAG_TRUNCATED
    flags[rows] |= FLAG_BAD_PIXELS
    hit = np.unique(seg[mbad_yx[0][sat], mbad_yx[1][sat]])
    flags[hit[hit > 0] - 1] |= FLAG_SATURATED
    # sources touching a region of bad pixels (saturated ones aside): their isophote may be cut
    hit = np.unique(seg[near_bad])
    flags[hit[hit > 0] - 1] |= FLAG_TRUNCATED

    ex2 = np.asarray(objects["errx2"], dtype=float)
    ey2 = np.asarray(objects["erry2"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(flux_err > 0, flux / flux_err, 0.0)
    ix = np.clip(np.rint(x).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(y).astype(int), 0, ny - 1)
    table = Table({
        "x": x, "y": y,
        "xerr": np.where(fitted, xerr_g, np.sqrt(np.where(ex2 > 0, ex2, np.nan))),
        "yerr": np.where(fitted, yerr_g, np.sqrt(np.where(ey2 > 0, ey2, np.nan))),
        "a": objects["a"].astype(float), "b": objects["b"].astype(float), "theta": theta,
        "flux": flux, "flux_err": flux_err, "flux_radius": r50, "fwhm_pix": 2.0 * r50, "snr": snr,
        "peak": objects["peak"].astype(float), "npix": objects["npix"].astype(np.int64),
        "background": back[iy, ix].astype(float), "flags": flags,
    })
    table.sort("flux", reverse=True)
    return table


def aperture_flux(data: np.ndarray, weight: np.ndarray | None, x: Any, y: Any, radius_pix: Any, *,
                  background: Any = None, gain: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Circular-aperture fluxes at given positions, on the background-subtracted frame.

    Parameters
    ----------
    data : numpy.ndarray
        2-D reduced frame (ADU, sky included).
    weight : numpy.ndarray or None
        Its weight map (0 = bad pixel); the errors follow it.
    x, y : array_like
        0-based pixel positions of the aperture centres.
    radius_pix : float or array_like
        Aperture radius (pixels), one or one per position.
    background : sep.Background, optional
        A background model of this frame (:func:`background_model`); made here when not given.
    gain : float, optional
        e-/ADU, for the sources' Poisson noise; ``None``: sky noise only.

    Returns
    -------
    flux, flux_err, flags : numpy.ndarray
        ADU; ``flags`` has :data:`FLAG_TRUNCATED` (aperture off the image) and :data:`FLAG_BAD_PIXELS`
        (bad pixels inside, replaced by their mirror pixels through the centre when good).
    """
    image, w, bad = _prepare(data, weight, None)
    xs = np.atleast_1d(np.asarray(x, dtype=float))
    ys = np.atleast_1d(np.asarray(y, dtype=float))
    if xs.shape != ys.shape:
        raise ValueError(f"x and y differ in length ({xs.size} and {ys.size})")
    r = np.broadcast_to(np.asarray(radius_pix, dtype=float), xs.shape).copy()
    if np.any(~(r > 0)):
        raise ValueError("aperture radii must be positive (pixels)")
    bkg = background if background is not None else _background(image, bad)
    sub = image
    sub -= bkg.back(dtype=np.float32)
    bad_yx = _where_yx(bad)
    sub[bad_yx] = 0.0
    err = noise_map(bkg, w, bad, bad_yx)
    return _aperture_sums(sub, bad, bad_yx, err, xs, ys, r, gain)


def _aperture_sums(sub: np.ndarray, bad: np.ndarray, bad_yx: tuple[np.ndarray, np.ndarray], err: np.ndarray,
                   xs: np.ndarray, ys: np.ndarray, r: np.ndarray, gain: float | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`aperture_flux` on the background-subtracted frame ``sub`` (0 on its ``bad`` pixels, at
    ``bad_yx`` in row-major order) with its noise map ``err``."""
    flux, flux_err, aflag = sep.sum_circle(sub, xs, ys, r, err=err, gain=gain,
                                           mask=bad if bad_yx[0].size else None, subpix=5)
    flags = np.zeros(xs.size, dtype=np.int32)
    flags[(aflag & sep.APER_TRUNC) != 0] |= FLAG_TRUNCATED
    rows = np.flatnonzero(aflag & sep.APER_HASMASKED)
    if rows.size:
        df, dv = _mirror_correction(sub, bad, err, bad_yx, xs, ys, _Circles(xs, ys, r), rows)
        flux = flux + df
        flux_err = np.sqrt(flux_err ** 2 + dv)
        flags[rows] |= FLAG_BAD_PIXELS
    return np.asarray(flux, dtype=float), np.asarray(flux_err, dtype=float), flags


def _aperture_columns(table: Table, sub: np.ndarray, bad: np.ndarray, bad_yx: tuple[np.ndarray, np.ndarray],
                      err: np.ndarray, radii: np.ndarray, gain: float | None) -> None:
    """Add ``flux_aper, flux_aper_err, flags_aper`` (one entry per radius of ``radii``) to ``table``."""
    n, k = len(table), radii.size
    x, y = np.asarray(table["x"], dtype=float), np.asarray(table["y"], dtype=float)
    flux, flux_err = np.full((n, k), np.nan), np.full((n, k), np.nan)
    flags = np.zeros((n, k), dtype=np.int32)
    fin = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if fin.size:
        m = fin.size
        # every aperture of every source in one call: aperture by aperture, the sources in the table's order
        f, e, fl = _aperture_sums(sub, bad, bad_yx, err, np.tile(x[fin], k), np.tile(y[fin], k),
                                  np.repeat(radii, m), gain)
        flux[fin], flux_err[fin], flags[fin] = f.reshape(k, m).T, e.reshape(k, m).T, fl.reshape(k, m).T
    table["flux_aper"], table["flux_aper_err"], table["flags_aper"] = flux, flux_err, flags
