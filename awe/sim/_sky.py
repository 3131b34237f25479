"""The sky of the night: stars from number counts, galaxies, 3C273, Landolt-like standards,
and the reference catalogues a pipeline calibrates against."""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table, vstack

from awe.sim._plan import FIELDS, QSO_3C273

__all__ = ["make_sources", "astrometric_refcat", "standard_refcat", "FIELD_RADIUS"]

FIELD_RADIUS = 0.45            # deg around each field centre: covers the mosaic with dithers
STAR_MAG_RANGE = (9.0, 23.5)
GALAXY_MAG_RANGE = (14.0, 21.5)
REFCAT_MAG_LIMIT = 20.5


def _star_counts(m: np.ndarray) -> np.ndarray:
    """Differential star counts at high galactic latitude [per deg^2 per mag] in R."""
    return np.where(m < 20.0, 1000.0 * 10 ** (0.29 * (m - 20.0)), 1000.0 * 10 ** (0.15 * (m - 20.0)))


def _galaxy_counts(m: np.ndarray) -> np.ndarray:
    """Differential galaxy counts [per deg^2 per mag] in R (slope 0.33 dex/mag)."""
    return 10 ** (5.0 + 0.33 * (m - 24.0))


def _draw_mags(rng: np.random.Generator, counts, mag_range: tuple[float, float], area: float) -> np.ndarray:
    grid = np.linspace(*mag_range, 2001)
    density = counts(grid)
    cdf = np.concatenate(([0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))))
    n = rng.poisson(cdf[-1] * area)
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)


def _positions(rng: np.random.Generator, centre: tuple[float, float], n: int, radius: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions in a disc (small-field approximation)."""
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    dec = centre[1] + r * np.sin(phi)
    ra = centre[0] + r * np.cos(phi) / np.cos(np.radians(dec))
    return ra % 360.0, dec


def _field_sources(rng: np.random.Generator, name: str, centre: tuple[float, float]) -> Table:
    area = math.pi * FIELD_RADIUS ** 2
    star_mag = _draw_mags(rng, _star_counts, STAR_MAG_RANGE, area)
    with_galaxies = name != "TWILIGHT"
    gal_mag = _draw_mags(rng, _galaxy_counts, GALAXY_MAG_RANGE, area) if with_galaxies else np.zeros(0)
    ns, ng = len(star_mag), len(gal_mag)
    ra, dec = _positions(rng, centre, ns + ng, FIELD_RADIUS)
    r_eff = np.clip(10 ** rng.normal(math.log10(0.9) - 0.12 * (gal_mag - 20.0), 0.15), 0.25, 8.0)
    sersic = np.where(rng.uniform(0, 1, ng) < 0.7, 1.0, 4.0)
    table = Table({
        "field": np.full(ns + ng, name),
        "name": np.full(ns + ng, "", dtype="U16"),
        "kind": np.concatenate([np.full(ns, "star"), np.full(ng, "galaxy")]).astype("U8"),
        "ra": ra, "dec": dec,
        "mag_R": np.concatenate([star_mag, gal_mag]),
        "v_minus_r": np.concatenate([np.clip(rng.normal(0.55, 0.2, ns), 0.1, 1.4),
                                     np.clip(rng.normal(0.6, 0.15, ng), 0.2, 1.2)]),
        "r_eff_arcsec": np.concatenate([np.zeros(ns), r_eff]),
        "sersic_n": np.concatenate([np.zeros(ns), sersic]),
        "axis_ratio": np.concatenate([np.ones(ns), rng.uniform(0.3, 1.0, ng)]),
        "pa_deg": np.concatenate([np.zeros(ns), rng.uniform(0.0, 180.0, ng)]),
    })
    return table


def _standards(rng: np.random.Generator, name: str, centre: tuple[float, float]) -> Table:
    """Landolt-like standard stars of one Selected Area (R 11.5-16.5) inside the mosaic."""
    n = int(rng.integers(28, 42))
    dec = centre[1] + rng.uniform(-0.22, 0.22, n)
    ra = centre[0] + rng.uniform(-0.22, 0.22, n) / np.cos(np.radians(dec))
    mags = rng.uniform(11.5, 16.5, n)
    return Table({
        "field": np.full(n, name), "name": [f"{name}-{100 + 7 * i}" for i in range(n)],
        "kind": np.full(n, "star").astype("U8"), "ra": ra % 360.0, "dec": dec, "mag_R": mags,
        "v_minus_r": np.clip(rng.normal(0.45, 0.2, n), 0.0, 1.2),
        "r_eff_arcsec": np.zeros(n), "sersic_n": np.zeros(n), "axis_ratio": np.ones(n), "pa_deg": np.zeros(n),
    })


def make_sources(seed: int) -> Table:
    """All true sources of the night's fields (stars, galaxies, standards, 3C273).

    Columns: ``id, field, name, kind ('star'|'galaxy'), ra, dec [deg], mag_R,
    v_minus_r, r_eff_arcsec, sersic_n, axis_ratio, pa_deg``.
    """
    parts = []
    for k, (name, centre) in enumerate(FIELDS.items()):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 4, k]))
        parts.append(_field_sources(rng, name, centre))
        if name.startswith("SA"):
            parts.append(_standards(rng, name, centre))
        if name == "3C273":
            ra, dec, mag = QSO_3C273
            parts.append(Table({"field": [name], "name": ["3C273"], "kind": ["star"], "ra": [ra], "dec": [dec],
                                "mag_R": [mag], "v_minus_r": [0.35], "r_eff_arcsec": [0.0], "sersic_n": [0.0],
                                "axis_ratio": [1.0], "pa_deg": [0.0]}))
    table = vstack(parts, join_type="exact")
    table["name"] = table["name"].astype("U16")
    table["kind"] = table["kind"].astype("U8")
    table["field"] = table["field"].astype("U8")
    table.add_column(np.arange(1, len(table) + 1), name="id", index=0)
    return table


def astrometric_refcat(sources: Table, seed: int) -> Table:
    """Astrometric reference catalogue: stars to R 20.5 of the sky fields, 0.1-0.2" errors.

    Columns: ``RA, DEC [deg], MAG (R, ~0.15 mag errors), RA_ERR, DEC_ERR [arcsec]``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    pick = (sources["kind"] == "star") & (sources["mag_R"] < REFCAT_MAG_LIMIT) & (sources["field"] != "TWILIGHT")
    stars = sources[pick]
    n = len(stars)
    err = rng.uniform(0.1, 0.2, n)
    dec = stars["dec"] + rng.normal(0, 1, n) * err / 3600.0
    ra = stars["ra"] + rng.normal(0, 1, n) * err / 3600.0 / np.cos(np.radians(stars["dec"]))
    table = Table({"RA": ra, "DEC": dec, "MAG": stars["mag_R"] + rng.normal(0, 0.15, n),
                   "RA_ERR": err, "DEC_ERR": err})
    table.meta.update({"EQUINOX": 2000.0, "EPOCH": 2000.0, "COMMENT": "simulated astrometric reference stars"})
    table["RA"].unit = table["DEC"].unit = "deg"
    table["RA_ERR"].unit = table["DEC_ERR"].unit = "arcsec"
    table["MAG"].unit = "mag"
    return table


def standard_refcat(sources: Table, seed: int) -> Table:
    """Standard-star catalogue (Landolt-like): ``NAME, FIELD, RA, DEC, V, R, B_V, V_R, e_V, e_R``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6]))
    stars = sources[(sources["name"] != "") & (sources["name"] != "3C273")]
    n = len(stars)
    e_r = rng.uniform(0.002, 0.008, n)
    e_v = rng.uniform(0.002, 0.008, n)
    r = stars["mag_R"] + rng.normal(0, 1, n) * e_r
    v = stars["mag_R"] + stars["v_minus_r"] + rng.normal(0, 1, n) * e_v
    pos_err = 0.15 / 3600.0
    table = Table({
        "NAME": stars["name"], "FIELD": stars["field"],
        "RA": stars["ra"] + rng.normal(0, pos_err, n) / np.cos(np.radians(stars["dec"])),
        "DEC": stars["dec"] + rng.normal(0, pos_err, n),
        "V": v, "R": r, "B_V": np.round(1.6 * stars["v_minus_r"] + rng.normal(0, 0.03, n), 3),
        "V_R": v - r, "e_V": e_v, "e_R": e_r,
    })
    table.meta.update({"EQUINOX": 2000.0, "COMMENT": "simulated Landolt-like standard stars (Cousins R)"})
    for col in ("RA", "DEC"):
        table[col].unit = "deg"
    return table
