"""Photometric calibration products (spec sections 6 and 7): standard-star catalogues and zero points.

* :class:`PhotSrcCatalog`: the standard stars measured on one reduced
  standard-field frame (aperture photometry), one :class:`PhotSrc` catalogue row
  per star: name, position, instrumental flux, catalogue magnitude and colour,
  airmass and exposure time. Made by :class:`~awe.tasks.photometry.PhotcatTask`.
* :class:`PhotometricParameters`: a calibration (instrument, chip, filter,
  validity range: the observing night) with the zero point, the extinction and
  the colour term, made by :class:`~awe.tasks.photometry.PhotomTask`. The
  convention, for frames as :class:`~awe.tasks.reduce.ReduceTask` makes them
  (divided by awe's master flat, median 1 over the chip, and multiplied by the
  illumination correction when one exists)::

      mag = -2.5 log10(ADU / s) + zeropoint - extinction * airmass [+ colour_term * colour]

  ``mag`` in the standards' system (``band``: Landolt/Cousins R for #844);
  ``zeropoint`` is the zero point at colour 0 (the colour term, in
  ``colour_name``, is reported and applies when the object's colour is known).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from awe.db.persistent import DateTime, Field, Float, Input, Inputs, Integer, Ref, String
from awe.db.rows import Parent, Rows
from awe.db.schema import DBObject
from awe.pars import Param, ParamGroup

__all__ = ["PhotcatParams", "PhotomParams", "PhotSrcCatalog", "PhotSrc", "PhotometricParameters",
           "PHOT_FLAG_SATURATED", "PHOT_FLAG_BAD_PIXELS", "PHOT_FLAG_NEIGHBOUR", "PHOT_FLAG_EDGE",
           "PHOT_FLAG_MASKED", "PHOT_FLAGS_UNUSABLE"]

#: PhotSrc.flags bits (the extraction's flags of the matched detection are kept in the high byte)
PHOT_FLAG_SATURATED = 1      # a saturated pixel in the aperture
PHOT_FLAG_BAD_PIXELS = 2     # pixels of weight 0 (cosmic ray, bad column...) in the aperture
PHOT_FLAG_NEIGHBOUR = 4      # another detection inside the aperture
PHOT_FLAG_EDGE = 8           # the aperture leaves the frame
PHOT_FLAG_MASKED = 16        # more than MAXIMUM_MASKED_FRACTION of the aperture has weight 0, or bad pixels in the
                             # star's core whose mirror pixels are bad too (flux that cannot be restored)
#: the flags that keep a measurement out of the fits
PHOT_FLAGS_UNUSABLE = PHOT_FLAG_SATURATED | PHOT_FLAG_NEIGHBOUR | PHOT_FLAG_EDGE | PHOT_FLAG_MASKED


class PhotcatParams(ParamGroup):
    """``PhotSrcCatalog.process_params``: how the standard stars are measured."""

    APERTURE_RADIUS = Param(10.0, "radius of the photometric aperture (large, so that the flux does not depend on "
                                  "the seeing: a Moffat beta 3 star of 1.4\" FWHM loses 0.03 % outside 10\")",
                            unit="arcsec")
    BACKGROUND_MESH = Param(120.0, "mesh of the sky background under the apertures (large, so that a bright star's "
                                   "wings do not lift it: 120\" is 500 full-size WFI pixels)", unit="arcsec")
    DETECT_THRESHOLD = Param(5.0, "detection threshold of the sources matched to the standards", unit="sigma")
    SEARCH_RADIUS = Param(90.0, "largest pointing error searched for when matching the standards to the "
                                "detections (shift vote)", unit="arcsec")
    MAXIMUM_MASKED_FRACTION = Param(0.05, "a measurement with more of its aperture at weight 0 (bad columns, "
                                          "cosmic rays: replaced by their mirror pixels) is not used", unit="fraction")
    MATCH_RADIUS = Param(3.0, "a standard is matched to a detection this close to its predicted position (after "
                              "the shift)", unit="arcsec")


class PhotomParams(ParamGroup):
    """``PhotometricParameters.process_params``: the zero-point fit."""

    CLIP = Param(3.0, "reject measurements whose residual exceeds this many sigma (iterated)", unit="sigma")
    MINIMUM_STARS = Param(3, "fewest standard-star measurements kept per chip")
    MINIMUM_AIRMASS_SPAN = Param(0.2, "the extinction is fitted only when the standards' airmasses span this much; "
                                      "else it is taken from the night's other standards or the default")
    EXTINCTION = Param(0.0, "extinction used when it cannot be fitted; 0 takes the instrument's default for the "
                            "filter", unit="mag/airmass")
    FIT_COLOUR_TERM = Param(True, "fit a colour term when the standards carry a colour")
    MAXIMUM_RMS = Param(0.05, "QC: largest rms of the fit residuals of a chip", unit="mag")
    MAXIMUM_ZEROPOINT_ERROR = Param(0.02, "QC: largest error of the zero point", unit="mag")


class PhotSrcCatalog(DBObject):
    """The standard stars measured on one reduced standard-field frame (rows: :class:`PhotSrc`).

    The file is the same table as FITS; :meth:`sources` reads the rows.
    """

    __tablename__ = "phot_src_catalogs"

    parameter_groups = {"process_params": PhotcatParams}

    reduced = Input("ReducedScienceFrame", "the reduced standard-field frame measured")
    standards = Inputs("ReferenceCatalog", "the standard-star catalogue(s) matched")
    astrometry = Inputs("DBObject", "the astrometric solution the positions came from (AstrometricParameters or "
                                    "GAstrometric; none: the frame's header WCS)", optional=True)

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD)")
    filter = Ref("Filter", "filter")
    OBJECT = Field(String(80), "standard field (OBJECT of the frame)", index=True)
    DATE_OBS = Field(DateTime, "start of the exposure (UTC)", index=True)
    MJD_OBS = Field(Float, "modified Julian date of the start of the exposure")
    EXPTIME = Field(Float, "exposure time [s]")
    AIRMASS = Field(Float, "airmass of the exposure")
    band = Field(String(16), "standard band of the catalogue magnitudes (R for #844)")
    colour_name = Field(String(16), "colour index of the colour column (V-R), None when the standards have none")
    aperture_radius = Field(Float, "aperture radius [arcsec]")
    n_standards = Field(Integer, "standard stars of the catalogue on the frame")
    n_measured = Field(Integer, "standard stars matched and measured (rows)")
    offset_x_pix = Field(Float, "shift of the detections from the positions the WCS predicts, x [pix]")
    offset_y_pix = Field(Float, "shift of the detections from the positions the WCS predicts, y [pix]")
    wcs_source = Field(String(255), "the astrometric solution the positions came from (class and file, or the "
                                    "frame's header WCS)")

    def sources(self) -> Table:
        """The measured standard stars (the :class:`PhotSrc` rows, in sky order) as a table with units."""
        if self.object_id is None:
            pending = self.__dict__.get("_pending_rows")
            if pending is None:
                raise ValueError(f"{self!r} is not committed and has no rows")
            return pending
        return (PhotSrc.catalog == self).order_by("row_id").table()

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Catalogue minus instrumental magnitude of the stars against their magnitude; returns the figure."""
        import matplotlib.pyplot as plt
        table = self.sources()
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4.5))
        flux = np.asarray(table["flux"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            inst = -2.5 * np.log10(flux / float(self.EXPTIME or 1.0))
        ax.scatter(table["mag_cat"], np.asarray(table["mag_cat"]) - inst, s=10, c="k")
        ax.set_xlabel(f"catalogue {self.band} [mag]")
        ax.set_ylabel("catalogue - instrumental [mag]")
        ax.set_title(f"{self.OBJECT} {self.chip.name if self.chip else ''} airmass {self.AIRMASS}\n{self.filename}",
                     fontsize=7)
        fig = fig or ax.figure
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig

    def _insert_rows(self, conn: Any) -> None:
        """Called by :func:`awe.db.commit.commit` inside its transaction: write the rows."""
        table = self.__dict__.pop("_pending_rows", None)
        if table is not None:
            PhotSrc.insert(self, table, connection=conn)
            self.__dict__["_committed_rows"] = table


class PhotSrc(Rows):
    """One standard star measured on a reduced frame (a row of a :class:`PhotSrcCatalog`)."""

    __tablename__ = "phot_sources"

    catalog = Parent("PhotSrcCatalog", "the catalogue of the frame")
    name = Field(String(64), "standard-star name")
    ra = Field(Float, "right ascension of the standard (catalogue)", unit="deg")
    dec = Field(Float, "declination of the standard (catalogue)", unit="deg")
    x = Field(Float, "measured position on the reduced frame, x (0-based)", unit="pix")
    y = Field(Float, "measured position on the reduced frame, y (0-based)", unit="pix")
    flux = Field(Float, "instrumental flux in the aperture (background subtracted) [ADU]")
    flux_err = Field(Float, "its error [ADU]")
    mag_cat = Field(Float, "catalogue magnitude in the standard band", unit="mag")
    mag_cat_err = Field(Float, "its error", unit="mag")
    colour = Field(Float, "catalogue colour (colour_name of the catalogue, e.g. V-R)", unit="mag")
    airmass = Field(Float, "airmass of the exposure")
    exptime = Field(Float, "exposure time", unit="s")
    flags = Field(Integer, "PHOT_FLAG_* bits; the extraction flags of the detection times 256")


class PhotometricParameters(DBObject):
    """Zero point, extinction and colour term of one chip and filter for one night (a calibration).

    ``mag = -2.5 log10(ADU/s) + zeropoint - extinction * airmass`` (+ ``colour_term * colour``, colour
    ``colour_name``), for frames reduced by ReduceTask (awe's master flat, and ``illumination`` when it is
    set: the standards were illumination-corrected with it, and so must the frames be). ``extinction_source``
    says where the extinction came from: ``fitted`` (these standards span the airmass), ``night`` (fitted on
    the night's other standard exposures) or ``default`` (the instrument's or EXTINCTION). :meth:`magnitude`
    applies it.
    """

    __tablename__ = "photometric_parameters"

    parameter_groups = {"process_params": PhotomParams}

    photcats = Inputs("PhotSrcCatalog", "the standard-star catalogues of this chip fitted")
    night_photcats = Inputs("PhotSrcCatalog", "the night's catalogues the extinction was fitted on (extinction "
                                              "'night')", optional=True)
    illumination = Input("IlluminationCorrection", "the illumination correction the standards were corrected "
                                                   "with", optional=True)

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD)")
    filter = Ref("Filter", "filter")
    band = Field(String(16), "standard band of the magnitudes (R for #844)")
    zeropoint = Field(Float, "zero point at airmass 0 and colour 0 [mag] (magnitude of 1 ADU/s)")
    zeropoint_error = Field(Float, "its error [mag]")
    extinction = Field(Float, "extinction [mag/airmass]")
    extinction_error = Field(Float, "its error [mag/airmass] (0 when not fitted)")
    extinction_source = Field(String(16), "'fitted', 'night' or 'default'")
    colour_term = Field(Float, "colour term [mag/mag] (None: not fitted)")
    colour_term_error = Field(Float, "its error [mag/mag]")
    colour_name = Field(String(16), "colour index of the colour term (V-R)")
    n_stars = Field(Integer, "standard-star measurements of this chip used (outliers rejected)")
    n_rejected = Field(Integer, "measurements of this chip rejected as outliers")
    rms = Field(Float, "weighted rms (1 / error**2) of this chip's fit residuals [mag]")
    airmass_min = Field(Float, "lowest airmass of the standards fitted")
    airmass_max = Field(Float, "highest airmass of the standards fitted")

    def magnitude(self, flux_adu: Any, exptime: float, airmass: float, colour: Any = None) -> np.ndarray:
        """Calibrated magnitude of ``flux_adu`` [ADU] in an exposure of ``exptime`` [s] at ``airmass``."""
        flux = np.asarray(flux_adu, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = -2.5 * np.log10(flux / exptime) + self.zeropoint - self.extinction * airmass
        if colour is not None and self.colour_term is not None:
            mag = mag + self.colour_term * np.asarray(colour, dtype=float)
        return np.where(flux > 0, mag, np.nan)

    def __str__(self) -> str:
        colour = (f", colour term {self.colour_term:+.4f} +- {self.colour_term_error:.4f} ({self.colour_name})"
                  if self.colour_term is not None else "")
        return (f"{self.chip.name if self.chip else ''} {self.filter.name if self.filter else ''}: zero point "
                f"{self.zeropoint:.4f} +- {self.zeropoint_error:.4f}, extinction {self.extinction:.4f} +- "
                f"{self.extinction_error:.4f} ({self.extinction_source}){colour}, {self.n_stars} stars, rms "
                f"{self.rms:.4f}")
