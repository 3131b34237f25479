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
    assert events >= 0.93
    assert pixels >= 0.9
    assert stars < 0.001


@pytest.mark.parametrize("seeing", [1.2, 1.5])
def test_shrunk_sampling(seeing):
    """1.9"/px (a WFI chip shrunk 8 times): undersampled stars, FWHM 0.63-0.79 px."""
    image, labels, field = _frame((512, 512), seeing / 1.904, 200, 200, seed=101)
    crmask = find_cosmics(image, gain=1.5, read_noise=5.0, sat_level=SATURATION)
    events, pixels, stars = _scores(crmask, labels, field)
    assert events >= 0.9
    assert pixels >= 0.88
    assert stars < 0.001


def test_psf_check_is_what_protects_undersampled_stars():
    image, labels, field = _frame((256, 256), 1.2 / 1.904, 80, 60, seed=31)
    plain = find_cosmics(image, gain=1.5, read_noise=5.0, psf_fwhm=0.63, psf_beta=3.0, protect_stars=False)
    checked = find_cosmics(image, gain=1.5, read_noise=5.0, psf_fwhm=0.63, psf_beta=3.0)
    _, _, stars_plain = _scores(plain, labels, field)
    events, _, stars_checked = _scores(checked, labels, field)
    assert stars_plain > 0.1          # L.A.Cosmic alone flags most undersampled star cores
    assert stars_checked < 0.003
    assert events >= 0.88


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
