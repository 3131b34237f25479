"""The global astrometric solution's products (spec section 6: GAstromSourceListTask, GAstromTask).

* :class:`GAstromSourceList`: the sources of one reduced frame chosen for the global solution (S/N above
  ``SNR_MIN``, unflagged), as catalogue rows :class:`GAstromSource` (pixel positions with their errors,
  and the sky position of the start WCS) -- made by :class:`~awe.tasks.gastrom.GAstromSourceListTask`;
* :class:`GAstrometric`: the solution of one reduced frame from the simultaneous fit of every chip of
  every dithered exposure of a field (:class:`~awe.tasks.gastrom.GAstromTask`, algorithm in
  :mod:`awe.image.gastrom`), with the same interface as the per-chip ``AstrometricParameters``:
  ``obj.wcs`` is an ``astropy.wcs.WCS`` (TAN-SIP) on the reduced frame's pixel grid, ``rms_ra``,
  ``rms_dec`` [arcsec] against the reference catalogue, ``n_ref``; besides, the internal rms between
  exposures and the statistics of the whole solution.

The WCS keywords are stored and read as AstrometricParameters' are (``wcs_cards``,
:func:`awe.model.astrometry.wcs_from_cards`). Which solution a reduced frame uses:
:func:`awe.model.astrometry.best_wcs` asks :func:`solution_for` (the frame's newest valid GAstrometric,
:meth:`GAstrometric.for_frame`) first, then falls back to the per-chip AstrometricParameters, then to
the header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from awe.db.persistent import JSON, DateTime, Field, Float, Input, Inputs, Integer, Ref, String
from awe.db.rows import Parent, Rows
from awe.db.schema import DBObject
from awe.model.astrometry import WCSSolution
from awe.pars import Param, ParamGroup

__all__ = ["GAstromSourceList", "GAstromSource", "GAstrometric", "GAstromSourceParams", "GAstrometricParams",
           "solution_for"]


# ---------------------------------------------------------------------------- parameters
class GAstromSourceParams(ParamGroup):
    """``GAstromSourceList.process_params``: which sources of a reduced frame enter the global solution."""

    SNR_MIN = Param(20.0, "keep sources above this signal-to-noise ratio (AUTO flux over its error)")
    DETECT_THRESHOLD = Param(5.0, "detection threshold of the extraction (per pixel, filtered; only the bright "
                                  "sources are kept)", unit="sigma")
    MINAREA = Param(5, "minimum number of pixels above the threshold", unit="pixel")
    MAX_FLAGS = Param(0, "keep sources whose extraction flags have no bit outside this mask (0: unflagged only)")
    MIN_SOURCES = Param(3, "a list with fewer sources is flagged FEW_INPUTS (GAstromTask still uses it)")


class GAstrometricParams(ParamGroup):
    """``GAstrometric.process_params``: the simultaneous solution and its quality checks."""

    DISTORTION_ORDER = Param(3, "total degree of each chip's distortion polynomial (shared by every exposure)")
    MATCH_RADIUS = Param(2.0, "first match radius between exposures and to the reference, from per-chip "
                              "solutions (5 arcsec from header WCS); later matches use 5 x the rms", unit="arcsec")
    CLIP = Param(4.0, "outlier rejection: residuals beyond this many robust sigma", unit="sigma")
    MIN_REF = Param(10, "fewest reference stars the whole solution needs (fewer: no solution)")
    MIN_PAIRS = Param(10, "fewest pairs of detections of one star in two exposures (fewer: no solution)")
    MAX_RMS_INTERNAL = Param(0.25, "a frame whose internal rms (between exposures) exceeds this many pixels is "
                                   "flagged BAD_SOLUTION", unit="pixel")
    MAX_RMS_EXTERNAL = Param(0.6, "a frame whose rms against the reference exceeds this is flagged BAD_SOLUTION",
                             unit="arcsec")
    MIN_FRAME_REF = Param(5, "a frame with fewer detections tied to the reference or to another exposure is "
                             "flagged BAD_SOLUTION (a frame with few reference stars is held by its chip's "
                             "distortion and its exposure's pointing, which the other frames fix)")


# ---------------------------------------------------------------------------- the source list
class GAstromSourceList(DBObject):
    """The sources of one reduced frame for the global astrometric solution (rows: :class:`GAstromSource`).

    No file: the sources are catalogue rows, inserted with the product; ``sources()`` reads them.
    """

    __tablename__ = "gastrom_source_lists"

    parameter_groups = {"process_params": GAstromSourceParams}

    reduced = Input("ReducedScienceFrame", "the reduced frame the sources were extracted from")
    weight = Input("WeightFrame", "its weight map (weight 0: never detected)")
    start = Input("AstrometricParameters", "the per-chip solution whose WCS gave the sky positions "
                  "(none: the header's WCS; start_wcs names which)", optional=True)

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD)")
    filter = Ref("Filter", "filter")
    OBJECT = Field(String(80), "target name of the reduced frame", index=True)
    DATE_OBS = Field(DateTime, "start of the exposure (UTC)", index=True)
    n_sources = Field(Integer, "number of sources kept")
    n_detected = Field(Integer, "number of sources extracted before the S/N and flag cuts")
    start_wcs = Field(String(255), "the WCS the sky positions come from: 'header' or the per-chip solution's "
                                   "file name")

    def sources(self) -> Table:
        """The sources (x, y, xerr, yerr [pix], ra, dec [deg], flux, flux_err [ADU], snr, fwhm_pix, flags)."""
        pending = self.__dict__.get("_pending_rows")
        if self.object_id is None:
            if pending is None:
                raise ValueError(f"{self!r} is not committed and has no sources")
            return Table(pending)
        query: Any = GAstromSource.of(self).order_by("row_id")
        return query.table()

    def _insert_rows(self, conn: Any) -> None:
        """Called by :func:`awe.db.commit.commit` inside its transaction: write the sources."""
        table = self.__dict__.pop("_pending_rows", None)
        if table is not None:
            GAstromSource.insert(self, table, connection=conn)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """The sources on the chip (symbol size by S/N); returns the figure."""
        import matplotlib.pyplot as plt
        table = self.sources()
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(4, 7))
        snr = np.asarray(table["snr"], dtype=float)
        ax.scatter(table["x"], table["y"], s=4 + 20 * np.clip(np.log10(np.maximum(snr, 1)) - 1.3, 0, 2), c="k")
        ax.set_aspect("equal")
        ax.set_xlabel("x [pix]")
        ax.set_ylabel("y [pix]")
        ax.set_title(f"{len(table)} sources for the global astrometry\n{self.filename}", fontsize=6)
        fig = fig or ax.figure
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig


class GAstromSource(Rows):
    """One source of a GAstromSourceList: a star's pixel position on its reduced frame, with errors."""

    __tablename__ = "gastrom_sources"

    source_list = Parent("GAstromSourceList", "the source list the source belongs to")
    ra = Field(Float, "right ascension from the start WCS (ICRS)", unit="deg")
    dec = Field(Float, "declination from the start WCS (ICRS)", unit="deg")
    x = Field(Float, "windowed centroid, 0-based column on the reduced frame", unit="pix")
    y = Field(Float, "windowed centroid, 0-based row on the reduced frame", unit="pix")
    xerr = Field(Float, "error of x", unit="pix")
    yerr = Field(Float, "error of y", unit="pix")
    flux = Field(Float, "AUTO-like total flux", unit="adu")
    flux_err = Field(Float, "error of the flux", unit="adu")
    snr = Field(Float, "signal-to-noise ratio")
    fwhm_pix = Field(Float, "FWHM", unit="pix")
    flags = Field(Integer, "extraction flags (awe.image.extract FLAG_*)")


# ---------------------------------------------------------------------------- the solution
class GAstrometric(WCSSolution, DBObject):
    """The global astrometric solution of one reduced frame (solved with every frame of its field).

    ``obj.wcs`` is the TAN-SIP WCS on the reduced frame's pixel grid (FITS convention: CRPIX 1-based;
    ``wcs.all_pix2world(x, y, 0)`` takes 0-based pixels). ``rms_ra``, ``rms_dec``, ``n_ref``: this frame's
    detections against the reference catalogue; ``frame_rms_internal``: against the same stars in the
    other exposures; ``rms_internal``, ``rms_external``, ``n_pairs``, ``n_ref_stars``, ``n_stars``,
    ``n_frames``: the whole solution's (see :class:`awe.image.gastrom.GlobalSolution`). The frames of
    one solution share ``solution_key`` and name each other's source lists in ``solved_with``.
    """

    __tablename__ = "gastrometrics"

    parameter_groups = {"process_params": GAstrometricParams}

    reduced = Input("ReducedScienceFrame", "the reduced frame the solution is for")
    source_list = Input("GAstromSourceList", "this frame's sources")
    solved_with = Inputs("GAstromSourceList", "the source lists of every frame solved together")
    start = Inputs("AstrometricParameters", "the per-chip solutions the global one started from (none: the "
                                            "header WCS)", optional=True)

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD)")
    filter = Ref("Filter", "filter")
    OBJECT = Field(String(80), "target name of the reduced frame", index=True)
    DATE_OBS = Field(DateTime, "start of the exposure (UTC)", index=True)
    wcs_cards = Field(JSON, "the solution as FITS WCS keywords (TAN-SIP, RADESYS ICRS) on the reduced grid")
    start_wcs = Field(String(32), "what the solution started from: 'AstrometricParameters' or 'header'")
    reference_catalog = Field(String(255), "file name(s) of the reference catalogue(s) used")
    reference_epoch = Field(Float, "epoch the reference positions were used at (Julian year)")
    distortion_order = Field(Integer, "degree of the chips' distortion polynomials")
    rms_ra = Field(Float, "rms of this frame's detections against the reference, along RA [arcsec]")
    rms_dec = Field(Float, "rms of this frame's detections against the reference, along Dec [arcsec]")
    n_ref = Field(Integer, "this frame's detections matched to reference stars")
    frame_rms_internal = Field(Float, "per-axis rms of this frame's detections against the other exposures' "
                                      "[arcsec]")
    n_overlap = Field(Integer, "this frame's detections of stars seen in other exposures")
    rms_internal = Field(Float, "the whole solution's per-axis rms between exposures (pair differences / "
                                "sqrt 2) [arcsec]")
    rms_external = Field(Float, "the whole solution's per-axis rms against the reference [arcsec]")
    n_pairs = Field(Integer, "pairs of detections of one star in two exposures (whole solution)")
    n_ref_stars = Field(Integer, "reference stars used (whole solution)")
    n_stars = Field(Integer, "stars solved for (whole solution)")
    n_frames = Field(Integer, "frames solved together")
    n_rejected = Field(Integer, "detections rejected as outliers (whole solution)")
    pointing_offset_ra = Field(Float, "the exposure's pointing offset of the model, xi [arcsec]")
    pointing_offset_dec = Field(Float, "the exposure's pointing offset of the model, eta [arcsec]")
    pointing_rotation = Field(Float, "the exposure's rotation of the model [deg]")
    solution_key = Field(String(40), "shared by the frames of one simultaneous solution", index=True)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """A grid of the WCS over the chip with the solution's figures in the title; returns the figure."""
        import matplotlib.pyplot as plt
        w = self.wcs
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 5))
        red = self.reduced
        nx, ny = int(red.NAXIS1 or 2048), int(red.NAXIS2 or 4096)
        for x in np.linspace(0, nx - 1, 9):
            ra, dec = w.all_pix2world(np.full(50, x), np.linspace(0, ny - 1, 50), 0)
            ax.plot(ra, dec, "k-", lw=0.5)
        for y in np.linspace(0, ny - 1, 9):
            ra, dec = w.all_pix2world(np.linspace(0, nx - 1, 50), np.full(50, y), 0)
            ax.plot(ra, dec, "k-", lw=0.5)
        ax.invert_xaxis()
        ax.set_xlabel("RA [deg]")
        ax.set_ylabel("Dec [deg]")
        ax.set_title(f"GAstrometric: internal {self.frame_rms_internal or float('nan'):.3f}\", external "
                     f"{self.rms_ra or float('nan'):.3f}\"/{self.rms_dec or float('nan'):.3f}\", "
                     f"n_ref {self.n_ref}\n{self.filename}", fontsize=6)
        fig = fig or ax.figure
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig


def solution_for(frame: Any) -> Any:
    """The best committed astrometric solution of a reduced frame: its GAstrometric, else None.

    ``awe.model.astrometry.best_wcs`` calls this first (the global solution is preferred to the per-chip
    AstrometricParameters when it exists).
    """
    return GAstrometric.for_frame(frame)
