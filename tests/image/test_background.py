"""Background level/noise and seeing against synthetic truth."""

from __future__ import annotations

import numpy as np
import pytest

from awe.image import _testing as T
from awe.image.background import measure_background, measure_seeing


def test_background_level_and_rms_with_stars_and_gradient():
    field = T.moffat_star_field((400, 300), 150, fwhm=3.0, sky=500.0, gain=2.0, read_noise=5.0, seed=1)
    yy, xx = np.mgrid[0:400, 0:300]
    gradient = 0.1 * yy                                     # 0 .. 40 ADU across the frame
    image = T.add_noise(field.image + gradient, 2.0, 5.0, seed=2)
    truth_rms = np.sqrt((500.0 + 20.0) * 2.0 + 25.0) / 2.0
    result = measure_background(image, box=50, return_map=True)
    assert abs(result.level - 520.0) < 2.0
    # SExtractor's mesh rms is inflated a little by faint star wings and the gradient.
    assert abs(result.rms / truth_rms - 1.0) < 0.06
    inner = (slice(50, -50), slice(50, -50))
    assert np.abs(result.map[inner] - (500.0 + gradient)[inner]).max() < 3.0
    assert result.rms_map.shape == image.shape
    assert measure_background(image).map is None


def test_background_ignores_masked_and_non_finite_pixels():
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 5.0, (200, 200))
    image[:, :60] = 5000.0                                  # a blob the caller masks
    image[10, 10] = np.nan
    mask = np.zeros(image.shape, bool)
    mask[:, :60] = True
    result = measure_background(image, mask=mask, box=32)
    assert abs(result.level - 100.0) < 0.3 and abs(result.rms - 5.0) < 0.1    # measured 0.15 and 0.09
    with pytest.raises(ValueError):
        measure_background(image, mask=mask[:10])
    with pytest.raises(ValueError):
        measure_background(image[0])


@pytest.mark.parametrize("seeing, scale, beta", [(0.8, 0.238, 3.0), (1.2, 0.238, 4.765), (1.5, 0.238, 2.5),
                                                 (1.2, 1.904, 3.0), (1.5, 1.904, 3.0)])
def test_seeing_of_moffat_stars_among_galaxies_and_cosmics(seeing, scale, beta):
    fwhm = seeing / scale
    shape = (400, 400) if scale < 1 else (256, 256)
    field = T.moffat_star_field(shape, 70, fwhm=fwhm, beta=beta, sky=100.0, flux_range=(1000.0, 3e5), seed=5)
    image = field.image.copy()
    T.add_galaxies(image, 10, size_range=(max(fwhm, 1.0), 3 * max(fwhm, 1.0)), seed=6)
    T.add_cosmic_rays(image, 50, seed=7)
    image = np.minimum(T.add_noise(image, field.gain, field.read_noise, seed=8), 65535.0)
    result = measure_seeing(image, pixel_scale=scale, saturation=65535.0)
    # measured over the five cases: FWHM within 1.1 %, beta 3.9 %, psf_radius 1.3 %; the error covers the
    # truth at 1.5 sigma at most and is below 1.1 % of the FWHM
    assert abs(result.fwhm_arcsec / seeing - 1.0) < 0.02
    assert result.fwhm_pixels == pytest.approx(result.fwhm_arcsec / scale)
    assert abs(result.beta - beta) < 0.08 * beta
    # psf_radius: half-light radius of the Moffat profile.
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    r_half = alpha * np.sqrt(2 ** (1 / (beta - 1)) - 1) * scale
    assert abs(result.psf_radius / r_half - 1.0) < 0.025
    assert result.n_stars >= 5 and result.n_fitted >= result.n_stars
    assert 0 < result.fwhm_error and abs(result.fwhm_arcsec - seeing) < 3.0 * result.fwhm_error
    assert result.relative_error < 0.02 and not result.ambiguous


def _stars_among_compact_galaxies(seed):
    """14 undersampled stars (FWHM 0.5 px) and 45 round exponential discs a little wider (fits of ~1.1 px)."""
    field = T.moffat_star_field((256, 256), 14, fwhm=0.5, beta=3.0, sky=100.0, flux_range=(3000.0, 3e4), seed=seed)
    image = field.image.copy()
    T.add_galaxies(image, 45, size_range=(0.55, 0.7), flux_range=(3e3, 3e4), max_axis_ratio=1.15, seed=seed + 100)
    return np.minimum(T.add_noise(image, field.gain, field.read_noise, seed=seed + 200), 65535.0)


@pytest.mark.parametrize("seed", [1, 2, 4, 7])
def test_stars_among_more_numerous_compact_galaxies(seed):
    """The galaxies make the densest group of fits (taken as the seeing before: 1.22, 1.13, 1.23, 1.05 px).
    On seeds 1 and 7 the group of fits narrower than it holds the stars (measured 0.529 and 0.521 px); on
    seeds 2 and 4 the galaxies still win (1.13 and 1.23 px) and the bootstrap error says so (26-27 %)."""
    result = measure_seeing(_stars_among_compact_galaxies(seed), min_fwhm_arcsec=0.2)
    if seed in (1, 7):
        assert abs(result.fwhm_pixels / 0.5 - 1.0) < 0.12
    else:
        assert result.relative_error > 0.15


def test_gauss_legendre_pixel_integral():
    """The Gauss-Legendre stamp integrates a star of FWHM 0.5 px to 1e-3 of its peak, off-centre too."""
    from awe.image.background import _MoffatStamp, _node_layout, moffat_alpha
    fwhm, beta, x0, y0 = 0.5, 3.0, 0.31, -0.42
    model = _MoffatStamp(5, _node_layout(5, float(moffat_alpha(fwhm, beta)), beta), "gauss")
    reference = _MoffatStamp(5, (201,) * 11, "midpoint")
    exact, got = reference(x0, y0, 1.0, fwhm, beta, 0.0), model(x0, y0, 1.0, fwhm, beta, 0.0)
    assert np.abs(got - exact).max() < 1e-3 * exact.max()
    assert sum(model.layout) < 11 * 6                     # fewer nodes far from the star
    value, jac = model.evaluate(np.array([x0, y0, 1.0, fwhm, 0.0, beta]), beta, True)
    np.testing.assert_allclose(value, got.ravel())
    step = 1e-6
    shifted, _ = model.evaluate(np.array([x0, y0, 1.0, fwhm + step, 0.0, beta]), beta, True)
    np.testing.assert_allclose((shifted - value) / step, jac[:, 3], atol=1e-4 * np.abs(jac[:, 3]).max())


def test_gauss_legendre_quadrature_of_undersampled_stars():
    """Stars of FWHM 0.5 px (0.95" at 1.904"/px): the default midpoint rule fits them 2.5 % wide, Gauss-Legendre
    0.9 % (the synthetic stars are themselves integrated on 15 x 15 sub-pixels)."""
    seeing, scale = 0.95, 1.904
    field = T.moffat_star_field((256, 256), 70, fwhm=seeing / scale, beta=3.0, sky=100.0, flux_range=(1000.0, 3e5),
                                seed=5)
    image = field.image.copy()
    T.add_galaxies(image, 10, size_range=(1.0, 3.0), seed=6)
    T.add_cosmic_rays(image, 50, seed=7)
    image = np.minimum(T.add_noise(image, field.gain, field.read_noise, seed=8), 65535.0)
    midpoint = measure_seeing(image, pixel_scale=scale, saturation=65535.0)
    gauss = measure_seeing(image, pixel_scale=scale, saturation=65535.0, quadrature="gauss")
    assert abs(gauss.fwhm_arcsec / seeing - 1.0) < 0.015                            # measured 0.86 %
    assert abs(gauss.fwhm_arcsec / seeing - 1.0) < abs(midpoint.fwhm_arcsec / seeing - 1.0)   # 2.51 %
    assert gauss.n_stars == midpoint.n_stars
    with pytest.raises(ValueError):
        measure_seeing(image, pixel_scale=scale, quadrature="simpson")
