"""Simulator of the Astro-WISE course night (WFI, 2003-03-03/04) with its truth.

>>> from awe.sim import simulate_night, Truth            # doctest: +SKIP
>>> outdir = simulate_night("night", scale=0.125, seed=1)  # doctest: +SKIP
>>> Truth(outdir).chips()["bias_level"][0]               # doctest: +SKIP
181.5

Layout of ``outdir``::

    WFI.<DATE-OBS>.fits       31 ESO raw MEF files: 10 biases, 3 dome flats, 3 twilight
                              flats, 9 standard fields, 6 dithered 3C273 exposures
    refcat/astrometric.fits   RA, DEC, MAG (R), RA_ERR, DEC_ERR: stars to R 20.5
    refcat/standards.fits     NAME, FIELD, RA, DEC, V, R, B_V, V_R, e_V, e_R (Landolt-like)
    truth/                    read it with :class:`Truth` (layout in :mod:`awe.sim._truthio`)

At ``scale`` < 1 every chip shrinks proportionally (the sky covered stays the
same, pixels grow to ``0.238 / scale`` arcsec) and fluxes in ADU scale with
the pixel area, so that levels per pixel (bias, flats, sky, noise) stay those
of real WFI frames: the zero point is ``24.47 + 5 log10(scale)``.

The file conventions that differ between ESO file generations and archives
are options of :func:`simulate_night` (``extname_style``, ``detector_id_key``,
``primary_detector_ids``, ``shuffle_extensions``); the pixels do not depend
on them.
"""

from awe.sim._night import main_sim, simulate_night
from awe.sim._truthio import MASK_BITS
from awe.sim.truth import Truth

__all__ = ["simulate_night", "main_sim", "Truth", "MASK_BITS"]
