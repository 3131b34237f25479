"""Where the sky lands on the chips, and the smooth optical terms of the flat field.

The true mapping of every chip is a TAN projection about the true pointing with
a mild radial distortion about the optical axis (written as SIP), the
instrument's CRPIX/CD as a start, shifted by a few pixels and rotated by small
per-chip angles plus the rotator offset of the exposure.  The header of a raw
file carries the instrument's nominal CRPIX/CD and the nominal pointing only.

Focal-plane coordinates ``(xi, eta)`` [deg] (from the undistorted, unrotated
true chip mapping) feed the smooth flat-field terms: vignetting, the
stray-light illumination term and the dome lamp pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS, Sip

from awe.instruments import ChipSpec, InstrumentSpec, RawGeometry

__all__ = ["ChipOptics", "chip_optics", "true_wcs", "header_wcs", "header_wcs_cards", "focal_plane",
           "vignetting", "illumination", "dome_lamp", "DISTORTION_ARCSEC", "FIELD_RADIUS_DEG"]

FIELD_RADIUS_DEG = 0.3        # unit of the smooth optical terms
DISTORTION_ARCSEC = 1.5       # radial distortion at 0.4 deg from the optical axis


@dataclass(frozen=True)
class ChipOptics:
    """Night-constant mapping of one chip at the simulated scale.

    Attributes
    ----------
    chip : str
    crpix_header : tuple of float
        Instrument CRPIX scaled to the raw frame (1-based).
    cd_header : ndarray
        Instrument CD matrix scaled to the raw frame [deg/pixel].
    crpix_true : tuple of float
        True position of the optical axis on the chip (1-based raw pixels).
    cd_true : ndarray
        True CD matrix before the exposure's rotator offset.
    sip_c : float
        Radial distortion: ``u' = u (1 + sip_c (u^2 + v^2))`` in pixels about ``crpix_true``.
    """

    chip: str
    crpix_header: tuple[float, float]
    cd_header: np.ndarray
    crpix_true: tuple[float, float]
    cd_true: np.ndarray
    sip_c: float


def _rotation(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _scaled_crpix(chip: ChipSpec, geometry: RawGeometry, scale: float) -> tuple[float, float]:
    """Instrument CRPIX (full-size raw pixels) mapped onto the shrunk raw frame."""
    x = geometry.n_prescan_x + (chip.crpix[0] - 0.5 - chip.prescan_x) * (geometry.nx / chip.nx) + 0.5
    y = geometry.n_prescan_y + (chip.crpix[1] - 0.5 - chip.prescan_y) * (geometry.ny / chip.ny) + 0.5
    return (x, y)


def chip_optics(instrument: InstrumentSpec, scale: float, seed: int) -> dict[str, ChipOptics]:
    """The true and nominal mappings of every chip for a night drawn from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    pixel_deg = instrument.pixel_scale / 3600.0 / scale
    r_pix = 0.4 / pixel_deg
    sip_c = (DISTORTION_ARCSEC / 3600.0 / pixel_deg) / r_pix ** 3
    optics = {}
    for chip in instrument.chips:
        geometry = RawGeometry.scaled(chip, scale)
        crpix = _scaled_crpix(chip, geometry, scale)
        cd = np.array(chip.cd) * (chip.nx / geometry.nx)
        shift = rng.normal(0.0, 2.0, size=2) * scale          # a few full-size pixels
        tilt = rng.normal(0.0, 0.012)                         # deg
        optics[chip.name] = ChipOptics(
            chip=chip.name, crpix_header=crpix, cd_header=cd,
            crpix_true=(crpix[0] + shift[0], crpix[1] + shift[1]), cd_true=_rotation(tilt) @ cd, sip_c=sip_c)
    return optics


def true_wcs(optics: ChipOptics, ra: float, dec: float, rotation_deg: float) -> WCS:
    """The true TAN-SIP mapping of a chip for a pointing and rotator offset (raw pixels)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = list(optics.crpix_true)
    w.wcs.cd = _rotation(rotation_deg) @ optics.cd_true
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[3, 0] = a[1, 2] = optics.sip_c
    b[0, 3] = b[2, 1] = optics.sip_c
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def header_wcs_cards(optics: ChipOptics, ra: float, dec: float) -> dict[str, tuple[object, str]]:
    """The rough WCS keywords of a raw extension (nominal pointing, instrument CRPIX/CD)."""
    cd = optics.cd_header
    return {
        "CTYPE1": ("RA---TAN", "Pixel coordinate system"),
        "CTYPE2": ("DEC--TAN", "Pixel coordinate system"),
        "CRVAL1": (round(ra, 7), "RA at reference pixel [deg]"),
        "CRVAL2": (round(dec, 7), "Dec at reference pixel [deg]"),
        "CRPIX1": (round(optics.crpix_header[0], 3), "Reference pixel in X"),
        "CRPIX2": (round(optics.crpix_header[1], 3), "Reference pixel in Y"),
        "CD1_1": (float(cd[0, 0]), "Transformation matrix"),
        "CD1_2": (float(cd[0, 1]), "Transformation matrix"),
        "CD2_1": (float(cd[1, 0]), "Transformation matrix"),
        "CD2_2": (float(cd[1, 1]), "Transformation matrix"),
        "EQUINOX": (2000.0, "Standard FK5 (years)"),
        "RADESYS": ("FK5", "Coordinate reference frame"),
    }


def header_wcs(optics: ChipOptics, ra: float, dec: float) -> WCS:
    """The rough WCS that the raw header carries."""
    w = WCS(naxis=2)
    cards = header_wcs_cards(optics, ra, dec)
    w.wcs.ctype = [cards["CTYPE1"][0], cards["CTYPE2"][0]]
    w.wcs.crval = [cards["CRVAL1"][0], cards["CRVAL2"][0]]
    w.wcs.crpix = [cards["CRPIX1"][0], cards["CRPIX2"][0]]
    w.wcs.cd = optics.cd_header
    w.wcs.set()
    return w


def focal_plane(optics: ChipOptics, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane coordinates ``(xi, eta)`` [deg] of every raw pixel (float32 2-D arrays)."""
    ny, nx = shape
    u = (np.arange(nx, dtype=np.float64) + 1.0 - optics.crpix_true[0])[None, :]
    v = (np.arange(ny, dtype=np.float64) + 1.0 - optics.crpix_true[1])[:, None]
    cd = optics.cd_true
    xi = (cd[0, 0] * u + cd[0, 1] * v).astype(np.float32)
    eta = (cd[1, 0] * u + cd[1, 1] * v).astype(np.float32)
    return xi, eta


def vignetting(xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Smooth radial fall-off of the telescope's throughput (1 on the axis, ~0.95 at the corners)."""
    rho2 = (xi * xi + eta * eta) / np.float32(FIELD_RADIUS_DEG ** 2)
    return (1.0 - 0.025 * rho2 - 0.005 * rho2 * rho2).astype(np.float32)


def illumination(xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Stray light in uniformly lit frames (flats, sky): a central excess of ~4 % and a weak tilt.

    Present in flats but not in the light of point sources, it makes the zero
    point of flat-fielded frames vary across the mosaic (illumination correction).
    """
    rho2 = (xi * xi + eta * eta) / np.float32(FIELD_RADIUS_DEG ** 2)
    tilt = 0.008 * (xi + 0.5 * eta) / np.float32(FIELD_RADIUS_DEG)
    return (1.0 + 0.04 * np.exp(-rho2 / (2 * 0.55 ** 2)) + tilt).astype(np.float32)


def dome_lamp(xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Large-scale pattern of the dome-flat lamps (a ~2-3 % gradient), absent from twilight flats."""
    xs, ys = xi / np.float32(FIELD_RADIUS_DEG), eta / np.float32(FIELD_RADIUS_DEG)
    return (1.0 + 0.022 * (0.866 * xs + 0.5 * ys) + 0.008 * (xs * xs + ys * ys - 0.6)).astype(np.float32)
