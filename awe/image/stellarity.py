"""Stellarity: a CLASS_STAR-like 0..1 from a source's size against the frame's own point-spread function.

Pure functions on the extraction's measurements (:func:`awe.image.extract.extract`). The PSF's half-light
radius ``r_psf`` and its spread are measured on the frame's bright, unflagged sources: the stellar locus is
the densest, narrowest clump of half-light radii at high S/N (galaxies scatter to larger radii, cosmic rays
and hot pixels are masked by the weight map). A source of half-light radius ``r`` measured with error
``sigma_r`` (from its S/N: ``sigma_r = r_psf * K / SNR``, with K fitted on the locus itself, plus the locus's
intrinsic width) is then weighed between two hypotheses:

* a point source: ``r ~ N(r_psf, sigma)``;
* not a point source: ``r`` uniform on ``[0.5 r_psf, 4 r_psf]`` (broadened by the same error): compact
  galaxies up to well resolved ones, and anything sharper than the PSF (a residual artefact).

``CLASS_STAR`` is the posterior probability of the first with equal priors: 1 for a bright star, near 0 for a
resolved galaxy, tending to 0.5 at low S/N where the radius cannot tell (as SExtractor's neural network does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

__all__ = ["PSFLocus", "psf_locus", "class_star"]

_SQRT2 = math.sqrt(2.0)
#: the non-stellar hypothesis: half-light radii uniform between these multiples of the PSF's
_OTHER_RANGE = (0.5, 4.0)


@dataclass(frozen=True)
class PSFLocus:
    """The stellar locus of a frame: the PSF's half-light radius [pix], its intrinsic spread [pix], the
    coefficient ``k`` of the measurement error (``sigma_r = k r_psf / SNR``) and the number of stars used."""

    r_psf: float
    width: float
    k: float
    n_stars: int


def psf_locus(flux_radius: np.ndarray, snr: np.ndarray, flags: np.ndarray, snr_min: float = 30.0,
              fallback_radius: float | None = None) -> PSFLocus:
    """Measure the stellar locus on the bright, unflagged sources (S/N above ``snr_min``).

    The locus is the densest window of half-light radii among the smallest 40 % of them, refined by
    the median about it; its width and the error coefficient come from the spread about it at high and
    moderate S/N. With fewer than 5 bright sources, ``fallback_radius`` (e.g. the seeing's half FWHM, in
    pixels) is used with a 10 % width; without one, ``ValueError``.
    """
    r = np.asarray(flux_radius, dtype=float)
    s = np.asarray(snr, dtype=float)
    ok = np.isfinite(r) & (r > 0) & np.isfinite(s) & (np.asarray(flags, dtype=int) == 0)
    bright = ok & (s > snr_min)
    if bright.sum() < 5:
        if fallback_radius is None or not fallback_radius > 0:
            raise ValueError(f"only {int(bright.sum())} unflagged sources above S/N {snr_min}: too few for the "
                             "PSF's half-light radius (CLASS_STAR); lower STELLARITY_SNR")
        return PSFLocus(float(fallback_radius), 0.1 * float(fallback_radius), 1.0, 0)
    rb = np.sort(r[bright])
    # Stars are the smallest sources: the locus is the densest window (+-15 %) among the smallest 40 % of the
    # bright sources (on a high-latitude field galaxies outnumber stars, so the densest clump overall may be
    # theirs), refined once by the median within +-20 % (iterating would drift into the galaxies' continuum).
    low = rb[: max(5, int(math.ceil(0.4 * rb.size)))]
    lo = np.searchsorted(low, low * 0.85)
    hi = np.searchsorted(low, low * 1.15, side="right")
    centre = float(low[int(np.argmax(hi - lo))])
    near = rb[np.abs(rb - centre) < 0.2 * centre]
    if near.size >= 3:
        centre = float(np.median(near))
    # intrinsic width (pixel phase of undersampled stars, PSF variations): robust spread within +-20 %
    close = ok & (np.abs(r - centre) < 0.2 * centre)
    sample = r[close & bright]
    width = float(1.4826 * np.median(np.abs(sample - centre))) if sample.size >= 3 else 0.05 * centre
    width = max(width, 0.03 * centre)
    # error coefficient: the spread at moderate S/N beyond the intrinsic width, times S/N
    mid = close & (s > 5) & (s <= snr_min)
    k = 1.0
    if mid.sum() >= 10:
        dev = np.abs(r[mid] - centre)
        excess = np.maximum((1.4826 * dev) ** 2 - width ** 2, 0.0)
        k = float(np.sqrt(np.median(excess * s[mid] ** 2)) / centre)
        k = float(np.clip(k, 0.3, 5.0))
    return PSFLocus(centre, width, k, int(bright.sum()))


def class_star(flux_radius: np.ndarray, snr: np.ndarray, locus: PSFLocus) -> np.ndarray:
    """The posterior probability (0..1) that each source is a point source (see the module)."""
    r = np.asarray(flux_radius, dtype=float)
    s = np.maximum(np.asarray(snr, dtype=float), 0.5)
    sigma = np.sqrt(locus.width ** 2 + (locus.k * locus.r_psf / s) ** 2)
    with np.errstate(invalid="ignore", over="ignore"):
        star = np.exp(-0.5 * ((r - locus.r_psf) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        a, b = _OTHER_RANGE[0] * locus.r_psf, _OTHER_RANGE[1] * locus.r_psf
        other = 0.5 * (erf((r - a) / (_SQRT2 * sigma)) - erf((r - b) / (_SQRT2 * sigma))) / (b - a)
        p = star / (star + other)
    p = np.where(np.isfinite(p), p, np.where(np.abs(r - locus.r_psf) < 3 * sigma, 1.0, 0.0))
    p = np.where(np.isfinite(r) & (r > 0), p, 0.5)
    return np.clip(p, 0.0, 1.0)
