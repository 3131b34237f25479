"""The per-chip astrometric solution of a reduced frame (spec section 6: AstrometricParametersTask).

* :class:`AstrometricParameters`: the solution of one reduced frame (input role ``reduced``) -- the
  TAN-SIP WCS as FITS keywords (``wcs_cards``; ``obj.wcs`` is the ``astropy.wcs.WCS`` on the reduced
  frame's pixel grid), ``rms_ra``, ``rms_dec`` [arcsec] of the reference stars about it, ``n_ref``, the
  reference catalogue(s) used (``reference``) and the epoch their positions were moved to
  (``reference_epoch``), how far off the start (header) WCS was; made by
  :class:`~awe.tasks.astrometry.AstrometricParametersTask` (algorithm: :mod:`awe.image.astrometry`);
* :class:`AstrometricMatch`: its matched stars as catalogue rows (detection, reference star,
  residual, rejected or not): ``obj.matches()``; the inspection figure and the global solution use them.

The shared interface of a solution, reused by the global one (``awe.model.gastrom.GAstrometric``): a
``wcs`` property built from ``wcs_cards`` (:func:`wcs_from_cards`), ``rms_ra``, ``rms_dec``, ``n_ref``,
input role ``reduced``. Which solution a reduced frame uses is :func:`best_wcs`: its GAstrometric when
there is a valid one (``awe.model.gastrom.solution_for``), else its newest valid AstrometricParameters,
else its header's WCS (logged as a WARNING).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from awe.db.persistent import JSON, Boolean, DateTime, Field, Float, Input, Inputs, Integer, Ref, String
from awe.db.rows import Parent, Rows
from awe.db.schema import DBObject
from awe.pars import Param, ParamGroup

__all__ = ["AstrometricParameters", "AstrometricParams", "AstrometricMatch", "best_wcs", "header_wcs",
           "wcs_to_cards", "wcs_from_cards"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the WCS as keywords
def wcs_to_cards(wcs: Any) -> dict[str, Any]:
    """The FITS WCS keywords (SIP included) of an astropy WCS as a plain, JSON-storable dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = wcs.to_header(relax=True)
    return {key: header[key] for key in header if key not in ("COMMENT", "HISTORY", "")}


def wcs_from_cards(cards: dict[str, Any]) -> Any:
    """The ``astropy.wcs.WCS`` of FITS WCS keywords (as :func:`wcs_to_cards` writes them)."""
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, relax=True)


def header_wcs(frame: Any) -> Any:
    """The WCS of a reduced frame's FITS header (the raw header's, moved to the trimmed grid)."""
    from astropy.wcs import WCS, FITSFixedWarning

    from awe.model._io import read_header
    header = read_header(frame.local_path())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise ValueError(f"{frame.filename}: its header has no celestial WCS (CTYPE/CRVAL/CRPIX/CD keywords)")
    return wcs


# ---------------------------------------------------------------------------- parameters
class AstrometricParams(ParamGroup):
    """``AstrometricParameters.process_params``: extraction, matching, fit and quality checks."""

    DETECT_THRESHOLD = Param(1.5, "extraction threshold (per pixel of the filtered image)", unit="sigma")
    MINAREA = Param(0, "fewest pixels of a source; 0: 3 when the stars' FWHM is below 2 pixels, else 5",
                    unit="pixel")
    SNR_MIN = Param(5.0, "sources used: signal-to-noise ratio above this, not saturated nor truncated")
    MAX_OFFSET = Param(90.0, "largest shift of the header WCS the pattern match looks for", unit="arcsec")
    MAX_ROTATION = Param(1.0, "largest rotation of the header WCS the pattern match looks for", unit="deg")
    DISTORTION_ORDER = Param(3, "highest degree of the TAN-SIP polynomial; the order that predicts left-out "
                                "stars best is used (lower with few stars; 1: plain TAN)")
    CLIP = Param(4.0, "outlier rejection: residuals beyond this many robust sigma", unit="sigma")
    REF_ERROR = Param(0.2, "position error of reference stars whose catalogue gives none", unit="arcsec")
    MIN_MATCHES = Param(6, "fewest matched reference stars for any solution (fewer: an error, nothing made)")
    MIN_REF = Param(10, "a solution with fewer matched reference stars is flagged FEW_INPUTS")
    MAX_RMS = Param(0.5, "a solution whose rms (either axis) about the reference exceeds this is flagged "
                         "BAD_SOLUTION", unit="arcsec")


# ---------------------------------------------------------------------------- the product
class WCSSolution:
    """What every astrometric solution of a reduced frame offers (AstrometricParameters, GAstrometric): the
    solution's WCS keywords (``wcs_cards``) as :attr:`wcs`, and :meth:`for_frame`."""

    filename: str
    wcs_cards: Any
    reduced: Any

    @property
    def wcs(self) -> Any:
        """The solution as an ``astropy.wcs.WCS`` valid on the reduced frame's pixel grid."""
        if not self.wcs_cards:
            raise ValueError(f"{self.filename} has no WCS keywords")
        return wcs_from_cards(dict(self.wcs_cards))

    @classmethod
    def for_frame(cls, frame: Any) -> Any:
        """The newest valid, unflagged solution of this class for a (committed) reduced frame, or None."""
        if getattr(frame, "object_id", None) is None:
            return None
        query = (cls.reduced.object_id == frame.object_id) & (cls.quality_flags == 0) & (cls.is_valid != 0)  # type: ignore[attr-defined]
        found = query.max("creation_date")
        return found if isinstance(found, cls) else None


class AstrometricParameters(WCSSolution, DBObject):
    """The astrometric solution of one reduced frame, from its own stars and a reference catalogue.

    ``obj.wcs`` is the TAN-SIP WCS (TAN when ``distortion_order`` is 1) on the reduced frame's pixel
    grid (FITS CRPIX, 1-based; ``wcs.all_pix2world(x, y, 0)`` takes 0-based pixels), RADESYS ICRS, for
    the reference positions at ``reference_epoch``. ``rms_ra``, ``rms_dec``: rms of the matched
    reference stars about it [arcsec]; ``n_ref`` of them were kept (``n_rejected`` rejected as outliers).
    """

    __tablename__ = "astrometric_parameters"

    parameter_groups = {"process_params": AstrometricParams}

    reduced = Input("ReducedScienceFrame", "the reduced frame the solution is for")
    reference = Inputs("ReferenceCatalog", "the astrometric reference catalogue(s) matched")

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD)")
    filter = Ref("Filter", "filter")
    OBJECT = Field(String(80), "target name of the reduced frame", index=True)
    DATE_OBS = Field(DateTime, "start of the exposure (UTC)", index=True)
    wcs_cards = Field(JSON, "the solution as FITS WCS keywords (TAN-SIP, RADESYS ICRS) on the reduced grid")
    distortion_order = Field(Integer, "degree of the fitted polynomial (1: TAN without SIP)")
    rms_ra = Field(Float, "rms of the matched reference stars about the solution along RA (times cos dec) "
                          "[arcsec]")
    rms_dec = Field(Float, "rms of the matched reference stars about the solution along Dec [arcsec]")
    n_ref = Field(Integer, "matched reference stars kept in the fit")
    n_rejected = Field(Integer, "matched pairs rejected as outliers")
    n_detected = Field(Integer, "sources extracted on the frame")
    n_reference = Field(Integer, "reference stars on and around the frame")
    reference_epoch = Field(Float, "epoch the reference positions were moved to by their proper motions "
                                   "(Julian year of DATE-OBS)")
    start_offset_ra = Field(Float, "how far the header WCS was off at the frame centre, solution minus header, "
                                   "along RA [arcsec]")
    start_offset_dec = Field(Float, "the same along Dec [arcsec]")
    start_rotation = Field(Float, "rotation of the solution relative to the header WCS (North through East) "
                                  "[deg]")
    match_significance = Field(Float, "the pattern match's excess of pairs over chance [sigma]")

    def matches(self) -> Table:
        """The matched stars: ``x, y`` [pix], ``ra, dec`` [deg] (reference), ``dra, ddec`` [arcsec] (reference
        minus solution), ``xerr, yerr``, ``ref_err``, ``ref_mag``, ``snr``, ``flags``, ``rejected``."""
        pending = self.__dict__.get("_pending_rows")
        if self.object_id is None:
            if pending is None:
                raise ValueError(f"{self!r} is not committed and has no matches")
            return Table(pending)
        query: Any = AstrometricMatch.of(self).order_by("row_id")
        return query.table()

    def _insert_rows(self, conn: Any) -> None:
        """Called by :func:`awe.db.commit.commit` inside its transaction: write the matches."""
        table = self.__dict__.pop("_pending_rows", None)
        if table is not None:
            AstrometricMatch.insert(self, table, connection=conn)

    def inspect(self, path: str | Path | None = None) -> Any:
        """The quality of the solution: residual vectors over the chip and histograms of the residuals.

        Returns the figure (saved to ``path`` when given).
        """
        import matplotlib.pyplot as plt

        table = self.matches()
        kept = ~np.asarray(table["rejected"], dtype=bool)
        x, y = np.asarray(table["x"], float), np.asarray(table["y"], float)
        dra, ddec = np.asarray(table["dra"], float), np.asarray(table["ddec"], float)
        fig = plt.figure(figsize=(9, 6))
        ax = fig.add_axes((0.06, 0.1, 0.4, 0.8))
        nx = int(self.reduced.NAXIS1 or (x.max() + 1 if x.size else 1))
        ny = int(self.reduced.NAXIS2 or (y.max() + 1 if y.size else 1))
        scale = 0.08 * max(nx, ny) / max(float(np.percentile(np.hypot(dra[kept], ddec[kept]), 90)) if kept.any()
                                         else 1.0, 1e-3)
        ax.quiver(x[kept], y[kept], -dra[kept], ddec[kept], angles="xy", scale_units="xy", scale=1.0 / scale,
                  color="k", width=0.004)
        if (~kept).any():
            ax.plot(x[~kept], y[~kept], "rx", ms=5, label="rejected")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xlim(0, nx)
        ax.set_ylim(0, ny)
        ax.set_aspect("equal")
        ax.set_xlabel("x [pix]")
        ax.set_ylabel("y [pix]")
        ax.set_title(f"residuals (reference - solution) x {scale:.0f} pix/arcsec", fontsize=8)
        for k, (values, label) in enumerate(((dra, "RA"), (ddec, "Dec"))):
            hax = fig.add_axes((0.58, 0.56 - 0.46 * k, 0.38, 0.34))
            bins = list(np.linspace(-1.0, 1.0, 41))
            hax.hist(np.clip(values[kept], -1, 1), bins=bins, color="0.4")
            if (~kept).any():
                hax.hist(np.clip(values[~kept], -1, 1), bins=bins, color="r", alpha=0.6)
            rms = self.rms_ra if label == "RA" else self.rms_dec
            hax.set_xlabel(f"d{label} [arcsec] (rms {rms or float('nan'):.3f}\")")
            hax.set_ylabel("stars")
        fig.suptitle(f"AstrometricParameters of {self.reduced.filename}\norder {self.distortion_order}, "
                     f"n_ref {self.n_ref} ({self.n_rejected} rejected), rms {self.rms_ra or float('nan'):.3f}\" / "
                     f"{self.rms_dec or float('nan'):.3f}\", epoch {self.reference_epoch or float('nan'):.2f}",
                     fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig


class AstrometricMatch(Rows):
    """One matched star of an AstrometricParameters: the detection and its reference star.

    (For the global solution, A2: these rows are the per-chip matches, ``AstrometricMatch.of(solution)``.)
    """

    __tablename__ = "astrometric_matches"

    solution = Parent("AstrometricParameters", "the per-chip solution the match belongs to")
    ra = Field(Float, "right ascension of the reference star at the reference epoch (ICRS)", unit="deg")
    dec = Field(Float, "declination of the reference star at the reference epoch (ICRS)", unit="deg")
    x = Field(Float, "centroid of the detection, 0-based column on the reduced frame", unit="pix")
    y = Field(Float, "centroid of the detection, 0-based row on the reduced frame", unit="pix")
    xerr = Field(Float, "error of x", unit="pix")
    yerr = Field(Float, "error of y", unit="pix")
    dra = Field(Float, "residual along RA (times cos dec), reference minus solution", unit="arcsec")
    ddec = Field(Float, "residual along Dec, reference minus solution", unit="arcsec")
    ref_err = Field(Float, "position error of the reference star (per axis)", unit="arcsec")
    ref_mag = Field(Float, "magnitude of the reference star", unit="mag")
    snr = Field(Float, "signal-to-noise ratio of the detection")
    flags = Field(Integer, "extraction flags of the detection (awe.image.extract FLAG_*)")
    rejected = Field(Boolean, "rejected as an outlier: not in the fit nor in the rms")


# ---------------------------------------------------------------------------- which solution
def best_wcs(frame: Any) -> tuple[Any, Any]:
    """The best astrometric solution of a reduced frame: ``(astropy WCS, the solution object or None)``.

    Its valid global solution (``GAstrometric``, through ``awe.model.gastrom.solution_for``) when there is
    one, else its newest valid per-chip :class:`AstrometricParameters`, else the WCS of its header (the raw
    header's: off by up to an arcminute; logged as a WARNING) with ``None``.
    """
    try:
        gastrom: Any = importlib.import_module("awe.model.gastrom")
    except ImportError:  # pragma: no cover - the global astrometry is part of awe
        gastrom = None
    solution_for = getattr(gastrom, "solution_for", None)
    found = solution_for(frame) if solution_for is not None else None
    if found is None:
        found = AstrometricParameters.for_frame(frame)
    if found is not None:
        log.info("astrometry of %s: %s %s", frame.filename, type(found).__name__, found.filename)
        return found.wcs, found
    log.warning("%s has no astrometric solution (AstrometricParametersTask or GAstromTask): using its header WCS, "
                "which may be an arcminute off", frame.filename)
    return header_wcs(frame), None
