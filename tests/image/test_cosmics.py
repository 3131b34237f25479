"""Cosmic-ray masking against synthetic truth, at full WFI sampling and at the 8x shrunk test scale."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from awe.image import _testing as T
from awe.image.cosmics import PsfCheck, default_objlim, find_cosmics

SATURATION = 65535.0


def _frame(shape, fwhm, n_stars, n_cosmics, seed):
    field = T.moffat_star_field(shape, n_stars, fwhm=fwhm, beta=3.0, sky=100.0, gain=1.5, read_noise=5.0,
                                flux_range=(500.0, 3e5), seed=seed)
    image = field.image.copy()
    T.add_galaxies(image, 8, size_range=(max(fwhm, 1.0), 4 * max(fwhm, 1.0)), seed=seed + 1)
    labels = T.add_cosmic_rays(image, n_cosmics, seed=seed + 2)
    image = np.minimum(T.add_noise(image, field.gain, field.read_noise, seed=seed + 3), SATURATION)
    return image, labels, field


def _scores(crmask, labels, field):
    """(fraction of cosmic rays with a masked pixel, fraction of cosmic-ray pixels masked,
    fraction of star pixels masked). Star pixels: where the stars add more than the sky
    noise, away (> 2 px) from any cosmic-ray pixel."""
    events = ndi.maximum(crmask.astype(int), labels, np.arange(1, labels.max() + 1))
    star = (field.star_model() > field.noise) & ~ndi.binary_dilation(labels > 0, iterations=2)
    return float(np.mean(events > 0)), float(crmask[labels > 0].mean()), float(crmask[star].mean())


@pytest.mark.parametrize("seeing", [0.8, 1.5])
def test_full_resolution_sampling(seeing):
    """0.238"/px: FWHM 3.4-6.3 px."""
    image, labels, field = _frame((400, 400), seeing / 0.238, 90, 90, seed=11)
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, sat_level=SATURATION)
    events, pixels, stars = _scores(crmask, labels, field)
    # measured: 96.7-97.8 % of the hits and 97.3-97.8 % of their pixels, 0.024 % of the star pixels
    assert events >= 0.93
    assert pixels >= 0.945
    assert stars < 0.0005


@pytest.mark.parametrize("seeing", [1.2, 1.5])
def test_shrunk_sampling(seeing):
    """1.9"/px (a WFI chip shrunk 8 times): undersampled stars, FWHM 0.63-0.79 px."""
    image, labels, field = _frame((512, 512), seeing / 1.904, 200, 200, seed=101)
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, sat_level=SATURATION)
    events, pixels, stars = _scores(crmask, labels, field)
    # measured: 94.5-98.5 % of the hits and 95.1-98.0 % of their pixels, no star pixel
    assert events >= 0.9
    assert pixels >= 0.9
    assert stars < 0.0005


@pytest.mark.parametrize("pixel_scale, seeing", [(0.238, 1.0), (1.904, 1.2)])
def test_the_candidate_detector_finds_what_astroscrappy_finds(pixel_scale, seeing):
    """L.A.Cosmic on its candidate pixels (the default) against astroscrappy on every pixel, PSF check behind both."""
    image, labels, field = _frame((400, 400), seeing / pixel_scale, 120, 120, seed=31)
    masks = {detector: find_cosmics(image, gain=1.5, read_noise=5.0, sat_level=SATURATION, detector=detector)
             for detector in ("candidates", "astroscrappy")}
    fast, full = _scores(masks["candidates"], labels, field), _scores(masks["astroscrappy"], labels, field)
    # measured: identical masks (568 and 573 pixels; 99.2 % / 95.0 % of the hits)
    assert abs(fast[0] - full[0]) <= 0.02 and abs(fast[1] - full[1]) <= 0.02 and fast[2] <= full[2] + 0.0005
    both = masks["candidates"] & masks["astroscrappy"]
    assert both.sum() >= 0.95 * max(masks["candidates"].sum(), masks["astroscrappy"].sum())
    with pytest.raises(ValueError, match="unknown cosmic-ray detector"):
        find_cosmics(image, gain=1.5, read_noise=5.0, detector="fast")


def test_psf_check_is_what_protects_undersampled_stars():
    image, labels, field = _frame((256, 256), 1.2 / 1.904, 80, 60, seed=31)
    plain = find_cosmics(image, gain=1.5, read_noise=5.0, psf_fwhm=0.63, psf_beta=3.0, protect_stars=False)
    checked = find_cosmics(image, gain=1.5, read_noise=5.0, psf_fwhm=0.63, psf_beta=3.0)
    _, _, stars_plain = _scores(plain, labels, field)
    events, _, stars_checked = _scores(checked, labels, field)
    assert stars_plain > 0.15         # L.A.Cosmic alone flags many undersampled star cores (measured 32 %)
    assert stars_checked < 0.0015     # measured 0
    assert events >= 0.88             # measured 91.7 %


def test_cosmic_rays_on_the_edges_and_beside_bad_pixels_are_found():
    """astroscrappy alone never flags the outer 3 pixels of a frame nor the neighbours of masked pixels."""
    ny, nx = 100, 90
    image = np.full((ny, nx), 100.0)
    hits = np.zeros((ny, nx), bool)
    for d in range(3):
        hits[d, 5 + 3 * d::12] = hits[ny - 1 - d, 9 + 3 * d::12] = True
        hits[7 + 3 * d::12, d] = hits[11 + 3 * d::12, nx - 1 - d] = True
    bad = np.zeros((ny, nx), bool)
    bad[30:70, 45] = True                                          # a bad column
    hot = [(20, 20), (20, 60), (80, 30), (80, 70)]
    for y, x in hot:
        bad[y, x] = True
    image[bad] = 5000.0
    for y in (35, 50, 65):
        hits[y, 44] = hits[y + 1, 46] = True                       # beside the column
    for y, x in hot:
        hits[y + 1, x + 1] = hits[y, x - 1] = True                 # beside the hot pixels
    image[hits] += 400.0                                           # ~45 sigma
    image = T.add_noise(image, 1.5, 5.0, seed=7)
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, mask=bad, psf_fwhm=3.0, psf_beta=3.0)
    assert crmask[hits].all()
    assert not crmask[bad].any()
    # the rest: only L.A.Cosmic's faint neighbours of the hits
    extra = crmask & ~hits
    assert not (extra & ~ndi.binary_dilation(hits, structure=np.ones((3, 3), bool))).any()
    assert extra.sum() < 0.5 * hits.sum()


def _tracks(image, n, seed):
    """``n`` straight hits of 2-4 pixels (rows, columns, diagonals) of 150-600 ADU, the other pixels 0.3-1 times
    the first (as :mod:`awe.sim` makes them); returns their label image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(image.shape, np.int32)
    steps = np.array([(0, 1), (1, 0), (1, 1), (1, -1)])
    for k in range(1, n + 1):
        y, x = rng.integers(5, min(image.shape) - 6, 2)
        step = steps[rng.integers(0, 4)]
        peak = rng.uniform(150.0, 600.0)
        for i in range(rng.integers(2, 5)):
            image[y + i * step[0], x + i * step[1]] += peak * (1.0 if i == 0 else rng.uniform(0.3, 1.0))
            labels[y + i * step[0], x + i * step[1]] = k
    return labels


def test_short_tracks_among_undersampled_stars_are_masked_whole():
    """FWHM 0.63 px (1.2" at 1.9"/px): a part of a faint track looks like a star, but nothing outside it says so."""
    fwhm = 0.63
    field = T.moffat_star_field((256, 256), 80, fwhm=fwhm, beta=3.0, sky=100.0, gain=1.5, read_noise=5.0,
                                flux_range=(500.0, 3e5), seed=5)
    image = field.image.copy()
    labels = _tracks(image, 80, seed=6)
    image = T.add_noise(image, 1.5, 5.0, seed=7)
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, psf_fwhm=fwhm, psf_beta=3.0)
    index = np.arange(1, labels.max() + 1)
    every = ndi.minimum(crmask.astype(int), labels, index)
    some = ndi.maximum(crmask.astype(int), labels, index)
    assert crmask[labels > 0].mean() >= 0.9
    assert np.sum((some > 0) & (every == 0)) <= 3           # tracks masked in part: 12 of 80 before
    _, _, stars = _scores(crmask, labels, field)
    assert stars < 0.001


def test_faint_stars_with_a_faint_neighbour_are_spared():
    """A faint undersampled star with another one ~3 px away: the cosmic-ray-on-a-wing hypothesis may put its
    star on the neighbour, so the star hypothesis gets the neighbour too."""
    fwhm = 0.8
    rng = np.random.default_rng(1)
    model = np.zeros((300, 300))
    for yc in range(10, 295, 12):
        for xc in range(10, 295, 12):
            x, y = xc + rng.uniform(-0.5, 0.5), yc + rng.uniform(-0.5, 0.5)
            T.render_moffat(model, x, y, rng.uniform(150.0, 400.0), fwhm, 3.0)      # peak 8-25 sigma
            angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(2.5, 3.5)
            T.render_moffat(model, x + distance * np.cos(angle), y + distance * np.sin(angle),
                            rng.uniform(40.0, 80.0), fwhm, 3.0)
    image = T.add_noise(model + 100.0, 1.5, 5.0, seed=2)
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, psf_fwhm=fwhm, psf_beta=3.0)
    stars = model > 5 * np.sqrt(100.0 / 1.5 + (5.0 / 1.5) ** 2)
    assert stars.sum() > 1000
    assert crmask[stars].mean() < 0.003                      # 1.9 % before


def test_saturated_star_and_bad_pixels_are_not_cosmics():
    field = T.moffat_star_field((128, 128), 1, fwhm=0.7, flux_range=(5e6, 5e6), border=30, seed=4)
    image = np.minimum(T.add_noise(field.image, 1.5, 5.0, seed=5), SATURATION)
    bad = np.zeros(image.shape, bool)
    bad[:, 10] = True
    image[:, 10] = 5000.0                               # a hot column, masked
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, sat_level=SATURATION, mask=bad, psf_fwhm=0.7)
    assert not crmask[bad].any()
    y, x = int(round(field.y[0])), int(round(field.x[0]))
    assert not crmask[y - 3:y + 4, x - 3:x + 4].any()


def test_objlim_and_psf_table():
    assert default_objlim(4.0) == 5.0 and default_objlim(1.0) == 15.0
    check = PsfCheck.build(0.6, 3.0)
    stamp = check.templates(np.array([0, 30]), np.array([0, -45]))
    n = 2 * check.half + 1
    expected = np.zeros((n, n))
    T.render_moffat(expected, check.half + 0.30, check.half - 0.45, 1.0, 0.6, 3.0, radius=3 * n, oversample=31)
    np.testing.assert_allclose(stamp[1].reshape(n, n), expected, atol=2e-4)
    assert stamp[0].reshape(n, n).argmax() == (n * n) // 2
    with pytest.raises(ValueError):
        find_cosmics(np.zeros((50, 50)), gain=0.0, read_noise=5.0)
