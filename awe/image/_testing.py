"""Seeded synthetic science frames with known truth, for tests and benchmarks.

The generators here draw what the science-frame algorithms of
:mod:`awe.image` must find or ignore, and return the truth alongside the
pixels:

- :func:`moffat_star_field` -- sky, pixel-integrated Moffat stars, noise;
- :func:`add_galaxies` -- elliptical exponential discs;
- :func:`add_cosmic_rays` -- sharp spots and short worms that bypass the PSF;
- :func:`add_track` -- a straight satellite or airplane track.

Every function takes a :class:`numpy.random.Generator` (or a seed) so that a
test is reproducible. Images are ``float64`` in ADU; coordinates are
``(x, y)`` = (column, row) with the centre of pixel ``[0, 0]`` at ``(0, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "StarField",
    "moffat_fwhm_to_alpha",
    "moffat_star_field",
    "render_moffat",
    "add_galaxies",
    "add_cosmic_rays",
    "add_track",
    "add_noise",
]


def moffat_fwhm_to_alpha(fwhm: float, beta: float) -> float:
    """Core radius ``alpha`` of a Moffat profile of the given FWHM and ``beta``."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def render_moffat(image: np.ndarray, x: float, y: float, flux: float, fwhm: float,
                  beta: float = 3.0, radius: float | None = None,
                  oversample: int | None = None) -> None:
    """Add one pixel-integrated Moffat star to ``image`` in place.

    Parameters
    ----------
    image : numpy.ndarray
        2-D float image, modified in place.
    x, y : float
        Centre (column, row) in pixels.
    flux : float
        Total flux in ADU (the part beyond ``radius`` is lost, < 1 % for the
        default radius and ``beta >= 2.5``).
    fwhm : float
        Full width at half maximum in pixels.
    beta : float
        Moffat ``beta``.
    radius : float, optional
        Half size of the rendered stamp in pixels; default ``max(6 fwhm, 4)``.
    oversample : int, optional
        Sub-pixels per pixel along each axis used to integrate the profile over
        the pixel; default grows as the PSF gets undersampled.
    """
    alpha = moffat_fwhm_to_alpha(fwhm, beta)
    if radius is None:
        radius = max(6.0 * fwhm, 4.0)
    if oversample is None:
        oversample = int(np.clip(np.ceil(8.0 / fwhm), 3, 15))
    ny, nx = image.shape
    x0, x1 = max(int(np.floor(x - radius)), 0), min(int(np.ceil(x + radius)) + 1, nx)
    y0, y1 = max(int(np.floor(y - radius)), 0), min(int(np.ceil(y + radius)) + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel() - x
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel() - y
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    profile = (beta - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)
    profile = profile.reshape(y1 - y0, oversample, x1 - x0, oversample).mean(axis=(1, 3))
    image[y0:y1, x0:x1] += flux * profile


@dataclass
class StarField:
    """A synthetic frame and its truth.

    Attributes
    ----------
    image : numpy.ndarray
        Sky + stars (+ whatever was added later), in ADU, without noise until
        :func:`add_noise` is called.
    x, y, flux : numpy.ndarray
        Star centres (pixels) and total fluxes (ADU).
    fwhm, beta : float
        PSF FWHM (pixels) and Moffat ``beta``.
    sky : float
        Sky level in ADU.
    gain, read_noise : float
        e-/ADU and read noise in e- used by :func:`add_noise`.
    """

    image: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    fwhm: float
    beta: float
    sky: float
    gain: float
    read_noise: float

    @property
    def noise(self) -> float:
        """Sky noise in ADU (Poisson on the sky plus read noise)."""
        return float(np.sqrt(self.sky * self.gain + self.read_noise**2) / self.gain)

    def star_model(self) -> np.ndarray:
        """Noise-free image of the stars only (no sky)."""
        model = np.zeros_like(self.image)
        for xi, yi, fi in zip(self.x, self.y, self.flux):
            render_moffat(model, xi, yi, fi, self.fwhm, self.beta)
        return model


def moffat_star_field(shape: tuple[int, int] = (512, 512), n_stars: int = 100,
                      fwhm: float = 4.0, beta: float = 3.0, sky: float = 100.0,
                      gain: float = 1.5, read_noise: float = 5.0,
                      flux_range: tuple[float, float] = (500.0, 2e5),
                      min_separation: float = 0.0, border: float = 0.0,
                      seed: int | np.random.Generator | None = 0) -> StarField:
    """Sky plus Moffat stars at random positions with a power-law flux distribution.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    n_stars : int
        Number of stars.
    fwhm, beta : float
        PSF FWHM in pixels and Moffat ``beta``.
    sky : float
        Flat sky level in ADU.
    gain, read_noise : float
        e-/ADU and e- (kept for :func:`add_noise`).
    flux_range : tuple of float
        Total star fluxes (ADU) are log-uniform in this range.
    min_separation : float
        If positive, stars are placed at least this many pixels apart.
    border : float
        Keep star centres this many pixels away from the edges.
    seed : int or numpy.random.Generator
        Random state.

    Returns
    -------
    StarField
        The noise-free image and the truth; call :func:`add_noise` last.
    """
    rng = _generator(seed)
    ny, nx = shape
    xs: list[float] = []
    ys: list[float] = []
    attempts = 0
    while len(xs) < n_stars:
        attempts += 1
        if attempts > 100 * n_stars:
            raise ValueError(f"cannot place {n_stars} stars {min_separation} px apart in {shape}: "
                             "lower n_stars or min_separation")
        x = rng.uniform(border, nx - 1 - border)
        y = rng.uniform(border, ny - 1 - border)
        if min_separation > 0 and xs:
            d2 = (np.asarray(xs) - x) ** 2 + (np.asarray(ys) - y) ** 2
            if d2.min() < min_separation**2:
                continue
        xs.append(x)
        ys.append(y)
    lo, hi = np.log(flux_range[0]), np.log(flux_range[1])
    flux = np.exp(rng.uniform(lo, hi, n_stars))
    image = np.full(shape, float(sky))
    for xi, yi, fi in zip(xs, ys, flux):
        render_moffat(image, xi, yi, fi, fwhm, beta)
    return StarField(image=image, x=np.asarray(xs), y=np.asarray(ys), flux=flux, fwhm=fwhm,
                     beta=beta, sky=float(sky), gain=gain, read_noise=read_noise)


def add_galaxies(image: np.ndarray, n: int, size_range: tuple[float, float] = (3.0, 10.0),
                 flux_range: tuple[float, float] = (2e3, 5e4), max_axis_ratio: float = 4.0,
                 seed: int | np.random.Generator | None = 1) -> np.ndarray:
    """Add elliptical exponential discs in place; return their ``(n, 5)`` truth.

    Columns of the truth: ``x, y, flux, scale length (px), axis ratio``.
    """
    rng = _generator(seed)
    ny, nx = image.shape
    truth = np.empty((n, 5))
    for i in range(n):
        x, y = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        h = rng.uniform(*size_range)
        q = 1.0 / rng.uniform(1.0, max_axis_ratio)
        pa = rng.uniform(0, np.pi)
        flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1])))
        r = int(np.ceil(8 * h))
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, nx)
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, ny)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx, dy = xx - x, yy - y
        u = dx * np.cos(pa) + dy * np.sin(pa)
        v = (-dx * np.sin(pa) + dy * np.cos(pa)) / q
        profile = np.exp(-np.hypot(u, v) / h)
        image[y0:y1, x0:x1] += flux * profile / (2 * np.pi * h * h * q)
        truth[i] = x, y, flux, h, q
    return truth


def add_cosmic_rays(image: np.ndarray, n: int, amplitude_median: float = 600.0,
                    amplitude_sigma: float = 0.6, amplitude_range: tuple[float, float] = (150.0, 8000.0),
                    max_length: float = 8.0, seed: int | np.random.Generator | None = 2) -> np.ndarray:
    """Add ``n`` cosmic-ray hits in place; return an int label image of them.

    Half of the hits are spots (1 to 4 pixels), half short straight worms up
    to ``max_length`` pixels at a random angle. The charge goes straight into
    the pixels the particle crosses (no PSF, no diffusion): that sharpness is
    what tells a cosmic ray from a star. The peak amplitude (ADU) is
    log-normal (``amplitude_median``, ``amplitude_sigma`` in ln) clipped to
    ``amplitude_range``; the other pixels of a hit get 0.3 to 1 times it.

    Returns
    -------
    numpy.ndarray
        ``int32`` image, 0 where no cosmic hit, ``k`` (1..n) on the pixels of
        hit ``k``; where two hits overlap the later label wins.
    """
    rng = _generator(seed)
    ny, nx = image.shape
    labels = np.zeros(image.shape, dtype=np.int32)
    for k in range(1, n + 1):
        x, y = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        amp = float(np.clip(rng.lognormal(np.log(amplitude_median), amplitude_sigma), *amplitude_range))
        if rng.random() < 0.5:
            w, h = rng.integers(1, 3), rng.integers(1, 3)
            ix, iy = int(x), int(y)
            yy, xx = np.mgrid[iy:min(iy + h, ny), ix:min(ix + w, nx)]
            yy, xx = yy.ravel(), xx.ravel()
        else:
            length = rng.uniform(2.0, max_length)
            ang = rng.uniform(0, np.pi)
            t = np.linspace(0.0, length, int(np.ceil(length * 4)) + 1)
            xx = np.clip(np.rint(x + t * np.cos(ang)), 0, nx - 1).astype(int)
            yy = np.clip(np.rint(y + t * np.sin(ang)), 0, ny - 1).astype(int)
            idx = np.unique(yy * nx + xx)
            yy, xx = idx // nx, idx % nx
        values = amp * rng.uniform(0.3, 1.0, len(xx))
        values[rng.integers(len(xx))] = amp
        image[yy, xx] += values
        labels[yy, xx] = k
    return labels


def add_track(image: np.ndarray, angle: float, distance: float, width: float,
              amplitude: float) -> np.ndarray:
    """Add a straight track across the image in place; return its truth mask.

    The line is ``x cos(angle) + y sin(angle) = distance`` (``angle`` in
    degrees, the direction of the line's normal, as in a Hough transform).
    The cross-section is a Gaussian of FWHM ``width`` pixels and peak
    ``amplitude`` ADU; the returned mask flags pixels within ``width`` of the
    line centre (where the track adds more than ~6 % of its peak).
    """
    ny, nx = image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    th = np.deg2rad(angle)
    d = xx * np.cos(th) + yy * np.sin(th) - distance
    sigma = width / 2.3548
    image += amplitude * np.exp(-0.5 * (d / sigma) ** 2)
    return np.abs(d) <= width


def add_noise(image: np.ndarray, gain: float, read_noise: float,
              seed: int | np.random.Generator | None = 3) -> np.ndarray:
    """Return ``image`` with Poisson (photon) and Gaussian read noise, in ADU."""
    rng = _generator(seed)
    electrons = rng.poisson(np.clip(image, 0, None) * gain).astype(np.float64)
    electrons += rng.normal(0.0, read_noise, image.shape)
    return electrons / gain
