"""Comparisons of calibration products with the simulator's truth (shared by tests and benchmarks)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from awe.image._testing import render_moffat
from awe.image.flat import smooth_large_scale
from awe.sim import Truth


def trim(truth: Truth, chip: str) -> tuple[slice, slice]:
    return truth.geometry(chip).trim


def true_master_bias(truth: Truth, chip: str) -> np.ndarray:
    """The noiseless overscan-corrected (method 6) and trimmed master bias, hot pixels included.

    The level method 6 subtracts from a row is the median of its noisy overscan pixels; when the noise is
    much larger than the pattern's column-to-column spread (2.4 vs 0.3 ADU) that median's expectation is the
    *mean* of the noiseless pattern over the overscan columns (the median of the noiseless values is off by
    up to 0.08 ADU).
    """
    geometry, section = truth.geometry(chip), trim(truth, chip)
    pattern = truth.bias_pattern(chip).astype(np.float64)
    overscan_level = np.mean(pattern[section[0], geometry.overscan_x], axis=1)
    return pattern[section] - overscan_level[:, None] + truth.hot_excess(chip)[section]


def chip_truth(truth: Truth, chip: str) -> dict:
    table = truth.chips()
    row = table[list(table["chip"]).index(chip)]
    return {name: row[name] for name in table.colnames}


def flat_errors(flat: np.ndarray, truth: Truth, chip: str, good: np.ndarray) -> tuple[float, float]:
    """rms of the pixel-scale and of the large-scale (64 full-size pixels) relative error of a flat."""
    true_flat = truth.flat(chip)[trim(truth, chip)]
    ratio = flat / true_flat
    ratio = ratio / np.median(ratio[good])
    large = smooth_large_scale(ratio, max(1, round(64 * truth.scale)), ~good)
    small = ratio / large
    return float(np.std(small[good])), float(np.std(large[good]))


def star_pixels(truth: Truth, name: str, chip: str, shape: tuple[int, int], rms: float) -> np.ndarray:
    """Pixels (trimmed grid) where an unsaturated true star adds more than 5 sky sigma (saturated stars and
    their trails left out)."""
    section = trim(truth, chip)
    exposure = truth.exposure(name)
    sources = truth.frame_sources(name, chip)
    stars = sources[np.asarray(sources["kind"]) == "star"]
    model = np.zeros(shape)
    fwhm = exposure["seeing_arcsec"] / truth.pixel_scale
    for s in stars:
        render_moffat(model, s["x"] - section[1].start, s["y"] - section[0].start, s["flux_flatfielded"], fwhm,
                      exposure["beta"])
    saturated = ndi.binary_dilation(truth.saturated(name, chip)[section], iterations=3)
    return (model > 5 * rms) & ~saturated


# ============================================================================ source lists on grid images
def grid_truth(truth: Truth, image: Any, sl: Any, seeing_arcsec: float, field: str = "3C273") -> dict:
    """True sources of ``field`` on a grid image (regridded frame or coadd) with their true S/N, which count,
    and the matches with its source list ``sl``.

    **True S/N**: the true flux ``10^(-0.4 (R - zeropoint))`` over the sky noise of a circular aperture of
    radius ``max(hypot(FWHM, 1.5 r_eff), 1 pixel)`` from the weight map at the source. **Counted**: true
    sources more than 3 pixels inside the image, on pixels with weight > 0 within a pixel, more than 6 pixels
    from a pixel flagged saturated and without a brighter true source within 2.5 pixels; a detection is a true
    source's (``found``, ``match``: the index of the nearest detection) when it lies within 1.5 pixels of it.
    """
    stars = truth.stars(field=field)
    wcs = image.wcs()
    x, y = wcs.all_world2pix(np.asarray(stars["ra"], float), np.asarray(stars["dec"], float), 0)
    weight, flags = image.weight_map(), image.flag_map()
    ny, nx = weight.shape
    inside = (x > 3) & (x < nx - 4) & (y > 3) & (y < ny - 4)
    stars, x, y = stars[inside], x[inside], y[inside]
    scale = float(image.pixel_scale)
    galaxy = np.asarray(stars["kind"]) == "galaxy"
    r_eff = np.where(galaxy, np.nan_to_num(np.asarray(stars["r_eff_arcsec"], float)), 0.0) / scale
    radius = np.maximum(np.hypot(seeing_arcsec / scale, 1.5 * r_eff), 1.0)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    flux = 10.0 ** (-0.4 * (np.asarray(stars["mag_R"], float) - float(image.zeropoint)))
    w = weight[iy, ix]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(w > 0, flux / np.sqrt(math.pi * radius ** 2 / np.where(w > 0, w, 1.0)), 0.0)
    bad = ndi.binary_dilation(weight <= 0, iterations=1)
    saturated = ndi.binary_dilation((flags & 4) != 0, iterations=6)
    tree = cKDTree(np.column_stack([x, y]))
    crowded = np.array([any(flux[k] > flux[i] for k in near if k != i)
                        for i, near in enumerate(tree.query_ball_point(np.column_stack([x, y]), 2.5))], dtype=bool)
    counted = ~bad[iy, ix] & ~saturated[iy, ix] & ~crowded
    table = sl.table()
    det = np.column_stack([np.asarray(table["X"], float), np.asarray(table["Y"], float)])
    d_true, j_true = cKDTree(det).query(np.column_stack([x, y]))
    d_det, _ = tree.query(det)
    dx = np.clip(np.rint(det[:, 0]).astype(int), 0, nx - 1)
    dy = np.clip(np.rint(det[:, 1]).astype(int), 0, ny - 1)
    return dict(stars=stars, x=x, y=y, snr=snr, counted=counted, galaxy=galaxy, found=d_true < 1.5, match=j_true,
                table=table, d_det=d_det, det_masked=saturated[dy, dx] | bad[dy, dx], flux=flux)


def true_pairs(truth: Truth, images: Any, lists: Any, members: Any, field: str = "3C273") -> dict:
    """The true pairs of two grid images' source lists and whether their association put them together.

    ``images``, ``lists``: the two images and their SourceLists; ``members``: the AssociateList's member
    table (``Association.of(al).table()``: AID, SLID, SID). A true pair is a true source of ``field`` on both
    images (:func:`grid_truth`, with each image's seeing), found and counted on both; ``same``: its two
    detections have the same association id. Returns ``m1``, ``m2`` (the :func:`grid_truth` of each),
    ``i1``, ``i2`` (the common true sources' indices in them), ``both`` (a true pair), ``same``, ``snr`` (the
    smaller true S/N of the two) and ``rows1``, ``rows2`` (the detections' rows in each list's table).
    """
    sl1, sl2 = lists
    aid = {(int(s), int(i)): int(a) for a, s, i in zip(members["AID"], members["SLID"], members["SID"])}
    m1, m2 = (grid_truth(truth, f, sl, float(f.seeing), field) for f, sl in zip(images, lists))
    ids1, ids2 = np.asarray(m1["stars"]["id"]), np.asarray(m2["stars"]["id"])
    _, i1, i2 = np.intersect1d(ids1, ids2, return_indices=True)
    both = m1["found"][i1] & m2["found"][i2] & m1["counted"][i1] & m2["counted"][i2]
    rows1, rows2 = m1["match"][i1], m2["match"][i2]
    sid1 = np.asarray(m1["table"]["SID"])[rows1]
    sid2 = np.asarray(m2["table"]["SID"])[rows2]
    same = np.array([aid[(sl1.SLID, int(a))] == aid[(sl2.SLID, int(b))] for a, b in zip(sid1, sid2)], dtype=bool)
    snr = np.minimum(m1["snr"][i1], m2["snr"][i2])
    return dict(m1=m1, m2=m2, i1=i1, i2=i2, both=both, same=same, snr=snr, rows1=rows1, rows2=rows2)
