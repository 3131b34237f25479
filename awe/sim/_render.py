"""Light on a chip: Moffat stars, seeing-convolved Sersic galaxies, a satellite track.

Sources are rendered in groups of equal stamp size, integrated over the pixel
by sub-sampling (frames shrunk by ``scale`` are undersampled), and added into
an image of ADU per pixel at unit response.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize

__all__ = ["moffat_alpha", "add_stars", "add_galaxies", "add_track", "sersic_mixture"]

_RADII = np.array([2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512])
_CHUNK = 4_000_000          # sub-sampled values evaluated at once


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width ``alpha`` for a FWHM and ``beta``."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _subsampling(fwhm: float) -> int:
    return int(min(9, max(1, math.ceil(4.0 / fwhm))))


def _bin_radius(r: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(_RADII, np.minimum(r, _RADII[-1]))
    return _RADII[np.minimum(idx, len(_RADII) - 1)]


def _deposit(image: np.ndarray, iy: np.ndarray, ix: np.ndarray, stamps: np.ndarray) -> None:
    """Add stamps ``(k, n, n)`` centred on pixels ``(iy, ix)`` into ``image``, clipped at its edges."""
    k, n, _ = stamps.shape
    r = n // 2
    off = np.arange(-r, r + 1)
    yy = (iy[:, None, None] + off[None, :, None]).repeat(n, axis=2)
    xx = (ix[:, None, None] + off[None, None, :]).repeat(n, axis=1)
    inside = (yy >= 0) & (yy < image.shape[0]) & (xx >= 0) & (xx < image.shape[1])
    np.add.at(image, (yy[inside], xx[inside]), stamps[inside].astype(np.float32))


def _sub_offsets(n_pix: int, nsub: int) -> np.ndarray:
    """Sub-sample centres relative to the stamp's central pixel, shape ``(n_pix * nsub,)``."""
    r = n_pix // 2
    return (np.arange(n_pix * nsub) + 0.5) / nsub - 0.5 - r


def _bin(values: np.ndarray, n_pix: int, nsub: int) -> np.ndarray:
    k = values.shape[0]
    return values.reshape(k, n_pix, nsub, n_pix, nsub).mean(axis=(2, 4))


def add_stars(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float, beta: float,
              min_level: float = 0.02) -> None:
    """Add Moffat point sources of total ``flux`` [ADU] at 0-based pixel positions ``x``, ``y``.

    Each stamp reaches out until the profile drops below ``min_level`` ADU and
    at least to the radius holding 99.9 % of the light.
    """
    if len(x) == 0:
        return
    alpha = moffat_alpha(fwhm, beta)
    norm = (beta - 1.0) / (math.pi * alpha * alpha)
    r_flux = alpha * math.sqrt(1000.0 ** (1.0 / (beta - 1.0)) - 1.0)
    with np.errstate(divide="ignore"):
        r_level = alpha * np.sqrt(np.maximum((np.asarray(flux) * norm / min_level) ** (1.0 / beta) - 1.0, 0.0))
    radius = _bin_radius(np.ceil(np.maximum(r_flux, r_level)).astype(int))
    nsub = _subsampling(fwhm)
    ny, nx = image.shape
    keep = (x > -radius) & (x < nx + radius) & (y > -radius) & (y < ny + radius) & (flux > 0)
    x, y, flux, radius = x[keep], y[keep], flux[keep], radius[keep]
    for r in np.unique(radius):
        sel = np.flatnonzero(radius == r)
        n_pix = 2 * r + 1
        per_source = (n_pix * nsub) ** 2
        step = max(1, _CHUNK // per_source)
        sub = _sub_offsets(n_pix, nsub)
        for start in range(0, len(sel), step):
            part = sel[start:start + step]
            ix, iy = np.rint(x[part]).astype(int), np.rint(y[part]).astype(int)
            dx = (sub[None, :] - (x[part] - ix)[:, None]).astype(np.float32)
            dy = (sub[None, :] - (y[part] - iy)[:, None]).astype(np.float32)
            r2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
            profile = (1.0 + r2 / np.float32(alpha * alpha)) ** np.float32(-beta)
            stamps = _bin(profile, n_pix, nsub) * (norm * flux[part])[:, None, None]
            _deposit(image, iy, ix, stamps)


def _sersic_b(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 0.009876 / n


@functools.cache
def sersic_mixture(n: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-mixture approximation of a circular Sersic profile cut at 8 ``r_eff``.

    Returns amplitudes (summing to 1) and variances in units of ``r_eff**2``,
    fitted by non-negative least squares to the surface-brightness profile.
    """
    variances = np.geomspace(0.01, 3.0, 6) if n <= 1.5 else np.geomspace(1e-5, 30.0, 10)
    r = np.linspace(0.0, 8.0, 4001)[1:]
    profile = np.exp(-_sersic_b(n) * (r ** (1.0 / n) - 1.0))
    design = np.exp(-r[:, None] ** 2 / (2.0 * variances[None, :])) / (2.0 * np.pi * variances[None, :])
    weight = np.sqrt(r)[:, None]
    amplitude, _ = optimize.nnls(design * weight, profile * weight[:, 0])
    keep = amplitude > 0
    return amplitude[keep] / amplitude[keep].sum(), variances[keep]


def add_galaxies(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, r_eff_px: np.ndarray,
                 sersic_n: np.ndarray, axis_ratio: np.ndarray, pa_deg: np.ndarray, fwhm: float) -> None:
    """Add elliptical Sersic galaxies seen through the seeing, each normalised to ``flux`` [ADU].

    Profiles are Gaussian mixtures (:func:`sersic_mixture`) convolved
    analytically with a Gaussian of the seeing FWHM; ``pa_deg`` is the
    major-axis angle from the +x axis.
    """
    if len(x) == 0:
        return
    psf_var = (fwhm / 2.3548) ** 2
    radius = _bin_radius(np.ceil(4.0 * r_eff_px + 2.0 * fwhm + 1.0).astype(int))
    ny, nx = image.shape
    keep = (x > -radius) & (x < nx + radius) & (y > -radius) & (y < ny + radius) & (flux > 0)
    nsub = max(1, min(2, math.ceil(1.5 / fwhm)))
    theta = np.radians(pa_deg)
    for n in np.unique(sersic_n[keep]):
        amplitude, variance = sersic_mixture(float(n))
        for r in np.unique(radius[keep & (sersic_n == n)]):
            sel = np.flatnonzero(keep & (sersic_n == n) & (radius == r))
            n_pix = 2 * r + 1
            m = n_pix * nsub
            sub = _sub_offsets(n_pix, nsub)
            step = max(1, _CHUNK // (m * m * 2))
            for start in range(0, len(sel), step):
                part = sel[start:start + step]
                ix, iy = np.rint(x[part]).astype(int), np.rint(y[part]).astype(int)
                dx = (sub[None, None, :] - (x[part] - ix)[:, None, None]).astype(np.float32)
                dy = (sub[None, :, None] - (y[part] - iy)[:, None, None]).astype(np.float32)
                c, s = np.cos(theta[part]), np.sin(theta[part])
                re2, q2 = r_eff_px[part] ** 2, axis_ratio[part] ** 2
                profile = np.zeros((len(part), m, m), dtype=np.float32)
                for a_k, v_k in zip(amplitude, variance):
                    # covariance of (galaxy component + seeing), then its inverse
                    major, minor = v_k * re2 + psf_var, v_k * re2 * q2 + psf_var
                    sxx = major * c * c + minor * s * s
                    syy = major * s * s + minor * c * c
                    sxy = (major - minor) * c * s
                    det = sxx * syy - sxy * sxy
                    ixx, iyy, ixy = (syy / det)[:, None, None], (sxx / det)[:, None, None], (-sxy / det)[:, None, None]
                    q = ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy
                    profile += (a_k / np.sqrt(det)).astype(np.float32)[:, None, None] * np.exp(-0.5 * q)
                stamps = _bin(profile, n_pix, nsub)
                total = stamps.sum(axis=(1, 2))
                stamps *= (flux[part] / np.where(total > 0, total, 1.0))[:, None, None]
                _deposit(image, iy, ix, stamps)


def add_track(image: np.ndarray, mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
              fwhm: float, peak: float) -> bool:
    """Add a straight Gaussian-profile track through pixel points ``p0``, ``p1`` (``(x, y)``, 0-based).

    Pixels within one FWHM of the track's centre line are flagged in ``mask``.
    Returns whether the track touched the image.
    """
    ny, nx = image.shape
    (x0, y0), (x1, y1) = p0, p1
    sigma = fwhm / 2.3548
    half = int(math.ceil(4 * sigma)) + 1
    steep = abs(y1 - y0) > abs(x1 - x0)
    if steep:   # walk along rows
        along = np.arange(ny)
        centre = x0 + (along - y0) * (x1 - x0) / (y1 - y0)
        cos = abs(y1 - y0) / math.hypot(x1 - x0, y1 - y0)
        n_across = nx
    else:       # walk along columns
        along = np.arange(nx)
        centre = y0 + (along - x0) * (y1 - y0) / (x1 - x0)
        cos = abs(x1 - x0) / math.hypot(x1 - x0, y1 - y0)
        n_across = ny
    across = np.floor(centre)[:, None].astype(int) + np.arange(-half, half + 2)[None, :]
    dist = np.abs(across - centre[:, None]) * cos
    inside = (across >= 0) & (across < n_across)
    if not inside.any():
        return False
    values = (peak * np.exp(-0.5 * (dist / sigma) ** 2)).astype(np.float32)
    rows, cols = (np.broadcast_to(along[:, None], across.shape), across) if steep else \
        (across, np.broadcast_to(along[:, None], across.shape))
    rows, cols = rows[inside], cols[inside]
    image[rows, cols] += values[inside]
    close = dist[inside] <= fwhm
    mask[rows[close], cols[close]] = True
    return True
