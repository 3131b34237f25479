"""The course night (2003-03-03/04) as a list of exposures, and the site astronomy it needs.

Times and file names are those of the course (spec sections 5 and 6) where it
lists them; the rest follows the night described in WFI.md.  Every random
choice (seeing, pointing errors, dithers, bias drifts) is drawn from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.time import Time

from awe.instruments import InstrumentSpec

__all__ = ["Exposure", "NightPlan", "plan_night", "FIELDS", "ZP_NOMINAL", "EXTINCTION", "DARK_SKY_ADU",
           "QSO_3C273", "airmass", "local_sidereal_time_deg"]

ZP_NOMINAL = 24.47         # R = -2.5 log10(ADU/s) + ZP - k X  (full-size pixels)
EXTINCTION = 0.07          # k [mag/airmass]
DARK_SKY_ADU = 1.5         # dark sky at zenith [ADU/s/pixel]
FILTER_ID = "#844"
QSO_3C273 = (187.2779167, 2.0523889, 12.45)   # RA, Dec [deg] (12:29:06.70 +02:03:08.6), R [mag]

# Field centres [deg]: the Landolt (1992) Selected Areas of the period [A: approximate
# centres], 3C273's field, and a blank high-latitude field for the twilight flats.
FIELDS: dict[str, tuple[float, float]] = {
    "3C273": (187.3340, 1.9782),     # pointing that puts 3C273 on ccd52, away from the gaps
    "SA98": (102.9580, -0.3500),
    "SA101": (149.1670, -0.4170),
    "SA104": (190.6040, -0.5330),
    "SA107": (234.7500, -0.2670),
    "SA110": (280.7080, 0.3830),
    "TWILIGHT": (80.5000, -22.0000),
}

# (UT start, kind, exposure time [s], object or field, extra): the course night.
# For biases and flats 'extra' is the raw median of ccd50 that the course lists.
_SCHEDULE: list[tuple[str, str, float, str, float | None]] = [
    ("2003-03-03T18:02:46.015", "bias", 0.0, "BIAS", 181),
    ("2003-03-03T18:59:58.474", "bias", 0.0, "BIAS", 180),
    ("2003-03-03T19:01:05.890", "bias", 0.0, "BIAS", 180),
    ("2003-03-03T19:18:48.680", "bias", 0.0, "BIAS", 181),
    ("2003-03-03T19:20:11.815", "bias", 0.0, "BIAS", 182),
    ("2003-03-03T19:21:15.723", "bias", 0.0, "BIAS", 182),
    ("2003-03-03T19:22:22.821", "bias", 0.0, "BIAS", 183),
    ("2003-03-03T19:23:24.843", "bias", 0.0, "BIAS", 183),
    ("2003-03-03T19:24:24.163", "bias", 0.0, "BIAS", 183),
    ("2003-03-03T19:25:31.810", "bias", 0.0, "BIAS", 183),
    ("2003-03-03T19:45:17.277", "domeflat", 20.0, "DOME", 17217),
    ("2003-03-03T19:46:58.069", "domeflat", 20.0, "DOME", 17945),
    ("2003-03-03T19:48:27.232", "domeflat", 20.0, "DOME", 18192),
    ("2003-03-03T23:46:15.975", "twilightflat", 8.0, "TWILIGHT", 17270),
    ("2003-03-03T23:48:12.051", "twilightflat", 15.0, "TWILIGHT", 17919),
    ("2003-03-03T23:50:42.573", "twilightflat", 30.0, "TWILIGHT", 19911),
    ("2003-03-04T00:15:04.312", "standard", 30.0, "SA98", None),
    ("2003-03-04T00:16:31.905", "standard", 10.0, "SA98", None),
    ("2003-03-04T01:38:55.120", "standard", 30.0, "SA101", None),
    ("2003-03-04T01:40:19.644", "standard", 10.0, "SA101", None),
    ("2003-03-04T03:21:40.288", "standard", 10.0, "SA104", None),
    ("2003-03-04T04:42:29.496", "standard", 30.0, "SA104", None),
    ("2003-03-04T04:43:52.117", "science", 240.0, "3C273", None),
    ("2003-03-04T04:48:39.640", "science", 240.0, "3C273", None),
    ("2003-03-04T04:53:26.208", "science", 240.0, "3C273", None),
    ("2003-03-04T04:58:13.771", "science", 240.0, "3C273", None),
    ("2003-03-04T05:03:00.339", "science", 240.0, "3C273", None),
    ("2003-03-04T05:07:47.902", "science", 240.0, "3C273", None),
    ("2003-03-04T07:35:12.733", "standard", 10.0, "SA107", None),
    ("2003-03-04T07:36:40.019", "standard", 30.0, "SA107", None),
    ("2003-03-04T09:05:50.571", "standard", 30.0, "SA110", None),
]

# 3C273 dither pattern [arcsec East, arcsec North]: a hexagon of radius 30", visited so that
# every step is 52-60", larger than the gaps (~24" between columns, ~14" between rows).
_DITHERS = [(30.0 * math.cos(math.radians(a)), 30.0 * math.sin(math.radians(a))) for a in (0, 120, 240, 60, 180, 300)]
_SATELLITE_EXPOSURE = 2          # which 3C273 exposure a satellite crosses

# kind -> (DPR CATG, DPR TYPE, DPR TECH, TPL ID)
_DPR = {
    "bias": ("CALIB", "BIAS", "IMAGE", "WFI_cal_Darks"),
    "domeflat": ("CALIB", "FLAT,DOME", "IMAGE", "WFI_img_cal_DomeFlat"),
    "twilightflat": ("CALIB", "FLAT,SKY", "IMAGE", "WFI_img_cal_SkyFlat"),
    "standard": ("CALIB", "STD", "IMAGE", "WFI_img_cal_StdStar"),
    "science": ("SCIENCE", "OBJECT", "IMAGE", "WFI_img_obs_Dither"),
}


@dataclass(frozen=True)
class Exposure:
    """One exposure of the night and everything true about it (chip-independent).

    Attributes
    ----------
    index : int
        Position in the night (also keys its random numbers).
    kind : str
        ``'bias'``, ``'domeflat'``, ``'twilightflat'``, ``'standard'`` or ``'science'``.
    date_obs : str
        UT start, ISO to the millisecond; the file is ``WFI.<date_obs>.fits``.
    exptime : float
        [s].
    object : str
        OBJECT keyword (``'BIAS'``, ``'DOME'``, ``'TWILIGHT'``, ``'SA104'``, ``'3C273'``).
    field : str or None
        Name of the sky field whose sources it sees (key of ``FIELDS``).
    ra, dec : float
        Pointing written in the header [deg].
    ra_true, dec_true : float
        True pointing [deg] (tens of arcsec from the header's).
    rotation_deg : float
        True rotation of the mosaic on the sky relative to the header CD matrices.
    mjd, lst_s, utc_s : float
        MJD-OBS, local sidereal and UT time of day at the start [s].
    airmass_start, airmass_end : float
    seeing : float
        PSF FWHM [arcsec].
    beta : float
        Moffat beta of the PSF.
    sky_rate : float
        Sky [ADU/s/pixel] before the flat-field response (science and standards).
    flat_target : float or None
        Raw median of ccd50 the flat is scaled to (flats only).
    bias_drift : float
        Frame bias offset common to all chips [ADU].
    exp_no : int
        ``HIERARCH ESO DET EXP NO``.
    satellite : bool
        Whether a satellite crosses this exposure.
    """

    index: int
    kind: str
    date_obs: str
    exptime: float
    object: str
    field: str | None
    ra: float
    dec: float
    ra_true: float
    dec_true: float
    rotation_deg: float
    mjd: float
    lst_s: float
    utc_s: float
    airmass_start: float
    airmass_end: float
    seeing: float
    beta: float
    sky_rate: float
    flat_target: float | None
    bias_drift: float
    exp_no: int
    satellite: bool = False

    @property
    def filename(self) -> str:
        """Raw file name ``WFI.<DATE-OBS>.fits``."""
        return f"WFI.{self.date_obs}.fits"

    @property
    def stem(self) -> str:
        """File name without ``.fits``."""
        return f"WFI.{self.date_obs}"

    @property
    def airmass(self) -> float:
        """Mean of start and end airmass."""
        return 0.5 * (self.airmass_start + self.airmass_end)

    @property
    def dpr(self) -> tuple[str, str, str]:
        """ESO DPR CATG, TYPE, TECH."""
        return _DPR[self.kind][:3]

    @property
    def template(self) -> str:
        """ESO TPL ID."""
        return _DPR[self.kind][3]


@dataclass(frozen=True)
class NightPlan:
    """The night: its exposures and night-wide truths drawn from the seed.

    Attributes
    ----------
    exposures : tuple of Exposure
    seed : int
    scale : float
    qe : dict
        Relative sensitivity of every chip (few per cent).
    hot_column_chips, bad_column_chips : dict
        Number of hot / dead columns per chip name (most chips have none).
    """

    exposures: tuple[Exposure, ...]
    seed: int
    scale: float
    qe: dict[str, float]
    hot_column_chips: dict[str, int] = field(default_factory=dict)
    bad_column_chips: dict[str, int] = field(default_factory=dict)

    @property
    def zero_point(self) -> float:
        """Photometric zero point at this scale: ``ZP_NOMINAL + 5 log10(scale)``.

        Fluxes in ADU scale with the pixel area (``scale**2``) so that a shrunk
        frame keeps the per-pixel levels (sky, flats, noise) of a full-size one.
        """
        return ZP_NOMINAL + 5.0 * math.log10(self.scale)

    def exposure(self, name: str) -> Exposure:
        """The exposure with this file name, stem or DATE-OBS."""
        key = name.removesuffix(".fits").removeprefix("WFI.")
        for exp in self.exposures:
            if exp.date_obs == key:
                return exp
        raise LookupError(f"the course night has no exposure {name!r}")


def local_sidereal_time_deg(mjd: float, longitude_deg: float) -> float:
    """Local mean sidereal time [deg] (IAU 1982 GMST; UT1 taken as UTC)."""
    d = mjd - 51544.5
    t = d / 36525.0
    gmst = 280.46061837 + 360.98564736629 * d + 0.000387933 * t * t - t ** 3 / 38710000.0
    return (gmst + longitude_deg) % 360.0


def airmass(ra: float, dec: float, lst_deg: float, latitude_deg: float) -> float:
    """Airmass (Hardie 1962) of a target at ``ra``, ``dec`` [deg] at local sidereal time ``lst_deg``."""
    ha = math.radians(lst_deg - ra)
    lat, d = math.radians(latitude_deg), math.radians(dec)
    sin_alt = math.sin(lat) * math.sin(d) + math.cos(lat) * math.cos(d) * math.cos(ha)
    if sin_alt <= 0.05:
        raise ValueError(f"target at RA {ra:.3f} Dec {dec:.3f} is below the horizon at LST {lst_deg:.2f} deg")
    secz = 1.0 / sin_alt
    x = secz - 1.0
    return secz - 0.0018167 * x - 0.002875 * x * x - 0.0008083 * x ** 3


def _offset(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """Small tangent-plane offset of a position."""
    return (ra + east_arcsec / 3600.0 / math.cos(math.radians(dec)), dec + north_arcsec / 3600.0)


def _nominal_pointing(kind: str, obj: str, dither: int, lst: float, latitude: float,
                      rng: np.random.Generator) -> tuple[float, float]:
    """Where the header says the telescope points."""
    if kind in ("bias", "domeflat"):
        return lst, latitude                        # dome closed, telescope parked at the zenith
    ra, dec = FIELDS[obj]
    if kind == "science":
        return _offset(ra, dec, *_DITHERS[dither])
    if kind == "twilightflat":                      # moved between flats so that stars fall elsewhere
        return _offset(ra, dec, rng.uniform(-60, 60), rng.uniform(-60, 60))
    return _offset(ra, dec, rng.uniform(-30, 30), rng.uniform(-30, 30))


def plan_night(instrument: InstrumentSpec, seed: int, scale: float) -> NightPlan:
    """Draw the course night for ``seed`` at chip scale ``scale``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    # night-wide telescope truths: systematic pointing error and rotator offset
    angle = rng.uniform(0, 2 * np.pi)
    amplitude = rng.uniform(24.0, 34.0)
    pointing_error = (amplitude * math.cos(angle), amplitude * math.sin(angle))
    rotation = float(rng.choice([-1, 1]) * rng.uniform(0.08, 0.12))
    site = (instrument.longitude_deg, instrument.latitude_deg)

    exposures = []
    dither = 0
    drift = 0.0
    for index, (date_obs, kind, exptime, obj, extra) in enumerate(_SCHEDULE):
        mjd = float(Time(date_obs, format="isot", scale="utc").mjd)
        lst = local_sidereal_time_deg(mjd, site[0])
        ra, dec = _nominal_pointing(kind, obj, dither, lst, site[1], rng)
        jitter = rng.normal(0.0, 3.0, size=2)
        ra_true, dec_true = _offset(ra, dec, pointing_error[0] + jitter[0], pointing_error[1] + jitter[1])
        on_sky = kind not in ("bias", "domeflat")
        airmasses = (airmass(ra, dec, lst, site[1]),
                     airmass(ra, dec, local_sidereal_time_deg(mjd + exptime / 86400.0, site[0]), site[1])) \
            if on_sky else (1.0, 1.0)
        if kind == "bias":   # ccd50's bias level follows the course's medians (kept inside 180.4-182.6)
            bias_drift = float(np.clip(extra, 180.4, 182.6)) - 181.5
        else:
            drift = bias_drift = float(np.clip(0.7 * drift + rng.normal(0.0, 0.5), -1.0, 1.0))
        seeing = float(rng.uniform(0.85, 1.3) if kind == "science" else rng.uniform(0.8, 1.5))
        sky = DARK_SKY_ADU * (1.0 + 0.25 * (airmasses[0] - 1.0)) * rng.uniform(0.95, 1.08) \
            if kind in ("standard", "science") else 0.0
        exposures.append(Exposure(
            index=index, kind=kind, date_obs=date_obs, exptime=exptime, object=obj,
            field=obj if on_sky else None, ra=ra % 360.0, dec=dec, ra_true=ra_true % 360.0, dec_true=dec_true,
            rotation_deg=rotation + float(rng.normal(0.0, 0.002)), mjd=mjd, lst_s=round(lst / 15.0 * 3600.0, 3),
            utc_s=round((mjd % 1.0) * 86400.0, 3), airmass_start=round(airmasses[0], 4),
            airmass_end=round(airmasses[1], 4), seeing=seeing, beta=float(rng.uniform(2.8, 3.3)), sky_rate=sky,
            flat_target=float(extra) if kind in ("domeflat", "twilightflat") else None,
            bias_drift=bias_drift, exp_no=1201 + index, satellite=kind == "science" and dither == _SATELLITE_EXPOSURE))
        dither += kind == "science"

    names = [c.name for c in instrument.chips]
    qe = {name: float(1.0 + rng.normal(0.0, 0.015)) for name in names}
    hot_chips = rng.choice(len(names), size=3, replace=False)
    bad_chips = rng.choice(len(names), size=3, replace=False)
    return NightPlan(exposures=tuple(exposures), seed=seed, scale=scale, qe=qe,
                     hot_column_chips={names[i]: (2 if k == 0 else 1) for k, i in enumerate(hot_chips)},
                     bad_column_chips={names[i]: 1 for i in bad_chips})
