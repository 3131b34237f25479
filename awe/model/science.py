"""Science products of the reduction (spec sections 6-8) and the illumination correction.

* :class:`ReducedScienceFrame`: one chip of a raw science (or standard-field)
  exposure, overscan-corrected, trimmed, de-biased, flat-fielded and, when a
  valid one exists, illumination-corrected; with its background, noise and
  seeing measured.
* :class:`WeightFrame`: its weight map (normalised flat x hot/cold pixel maps x
  saturation x cosmic rays x satellite tracks); 0 marks a pixel to ignore.
* :class:`SatelliteMap`: the satellite tracks found by the Hough transform
  (a uint8 mask, 1 on a track, and the track parameters).
* :class:`IlluminationCorrection`: a calibration, per chip and filter, of the
  smooth large-scale multiplicative correction that makes the photometry of a
  flat-fielded frame uniform over the chip. ``red.illumination`` is the one a
  reduced frame was corrected with, and
  ``red.illumination.illuminationcorrection`` its fitted surface, so the
  spec's ``red.illumination.illuminationcorrection.inspect()`` draws it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from awe.db.persistent import JSON, Boolean, Field, Float, Input, Inputs, Integer
from awe.db.query import Query
from awe.model.calibration import CalibrationFrame
from awe.model.frames import BaseFrame
from awe.pars import Param, ParamGroup

__all__ = [
    "ReducedScienceFrame", "ReducedScienceParams", "WeightFrame", "WeightParams", "SatelliteMap",
    "SatelliteParams", "IlluminationCorrection", "IlluminationFit", "IlluminationParams",
]


# ---------------------------------------------------------------------------- parameters
class ReducedScienceParams(ParamGroup):
    """``ReducedScienceFrame.process_params``: how a raw science frame is reduced."""

    OVERSCAN_CORRECTION = Param(6, "overscan correction method (0 none, 1 prescan median, 2 overscan median, "
                                   "3 mean of both, 6 per-row overscan median, 7 per-row smoothed); the master "
                                   "bias must have been made with the same", choices=(0, 1, 2, 3, 6, 7))
    COSMIC_SIGCLIP = Param(4.5, "cosmic rays: Laplacian signal-to-noise a pixel needs to be a candidate",
                           unit="sigma")
    COSMIC_SIGFRAC = Param(0.3, "cosmic rays: neighbours of a detection are added down to this fraction of "
                                "COSMIC_SIGCLIP")
    COSMIC_OBJLIM = Param(0.0, "cosmic rays: minimum contrast between the Laplacian and the fine structure "
                               "(higher spares more star cores); 0 chooses it from the PSF width")
    COSMIC_NITER = Param(2, "cosmic rays: L.A.Cosmic iterations (2 with the PSF check keeps every hit 4 finds, "
                            "at about half the CPU)")
    COSMIC_GROW = Param(0, "cosmic rays: grow the mask by this many pixels", unit="pixel")
    COSMIC_DETECTOR = Param("candidates", "cosmic rays: 'candidates' runs L.A.Cosmic's tests on the pixels that can "
                                          "pass them (~10x faster), 'astroscrappy' on every pixel",
                            choices=("candidates", "astroscrappy"))
    SATURATION_LEVEL = Param(0.0, "raw level at and above which a pixel is saturated (masked, weight 0); 0 takes "
                                  "the instrument's (WFI: 45000)", unit="ADU")
    READ_NOISE = Param(0.0, "read noise; 0 takes the header's (ESO DET OUT1 RON) or the instrument's", unit="e-")
    BACKGROUND_MESH = Param(64, "background and seeing: mesh size of the sky map", unit="pixel")
    SEEING_DETECT_THRESHOLD = Param(10.0, "seeing: stars are detected above this many sky sigma (half of it when "
                                          "that finds too few)", unit="sigma")
    ASSUMED_SEEING = Param(1.0, "seeing (FWHM) the cosmic-ray star check assumes when too few stars are found "
                                "to measure it", unit="arcsec")
    SEEING_MAX_ERROR = Param(0.15, "seeing: a value whose bootstrap error exceeds this fraction of it is marked "
                                   "unreliable (seeing_reliable = False)")


class IlluminationParams(ParamGroup):
    """``IlluminationCorrection.process_params`` (IlluminationCorrectionTask)."""

    DEGREE = Param(2, "highest total degree of the 2-D polynomial fitted to the standard-star residuals; the "
                      "degree used (0 .. DEGREE) is the one Akaike's information criterion prefers, and at most "
                      "one with STARS_PER_TERM stars per coefficient")
    STARS_PER_TERM = Param(5, "fewest standard-star measurements per polynomial coefficient: the degree is lowered "
                              "until the stars suffice (1 star per coefficient would follow the noise)")
    CLIP = Param(3.0, "reject standard-star measurements whose residual exceeds this many sigma (iterated), in the "
                      "photometric fit and in the surface fit", unit="sigma")
    MINIMUM_AIRMASS_SPAN = Param(0.2, "the photometric fit's extinction is free only when the standards span this "
                                      "much airmass (else EXTINCTION)")
    EXTINCTION = Param(0.0, "extinction used when it cannot be fitted; 0 takes the instrument's default for the "
                            "filter", unit="mag/airmass")
    FIT_COLOUR_TERM = Param(True, "fit a colour term when the standards carry a colour")
    MINIMUM_STARS = Param(20, "QC: fewest standard-star measurements in the fit")
    MAXIMUM_RANGE = Param(0.2, "QC: largest peak-to-peak of the correction over the chip", unit="fraction")


class WeightParams(ParamGroup):
    """``WeightFrame.process_params``: which masks enter the weight map."""

    USE_COSMIC_MASK = Param(True, "zero weight on cosmic-ray pixels")
    USE_SATELLITE_MASK = Param(True, "zero weight on satellite-track pixels")


class SatelliteParams(ParamGroup):
    """``SatelliteMap.process_params`` (spec section 8)."""

    DETECTION_THRESHOLD = Param(5.0, "pixels this many sky sigma above the background vote in the Hough "
                                     "transform", unit="sigma")
    HOUGH_THRESHOLD = Param(1000.0, "a line is a track when detected along at least this many detector pixels "
                                    "(full-size pixels: a chip shrunk 8 times counts 8 per pixel)", unit="pixel")


# ---------------------------------------------------------------------------- products
class ReducedScienceFrame(BaseFrame):
    """A reduced science (or standard-field) frame of one chip, in ADU on the trimmed grid.

    Made by :class:`~awe.tasks.reduce.ReduceTask` from ``raw`` with ``bias``,
    ``flat``, ``hot_pixels``, ``cold_pixels`` and, when a valid one exists,
    ``illumination``. The FITS header keeps the raw WCS, moved to the trimmed
    grid, and the gain.
    """

    __tablename__ = "reduced_frames"

    parameter_groups = {"process_params": ReducedScienceParams}

    raw = Input("RawScienceFrame", "the raw frame")
    bias = Input("BiasFrame", "master bias subtracted")
    flat = Input("MasterFlatFrame", "master flat divided")
    hot_pixels = Input("HotPixelMap", "hot pixels (zero weight)")
    cold_pixels = Input("ColdPixelMap", "cold pixels (zero weight)")
    illumination = Input("IlluminationCorrection", "illumination correction applied, if any", optional=True)

    overscan_correction = Field(Integer, "overscan correction method used")
    gain = Field(Float, "gain [e-/ADU]")
    read_noise = Field(Float, "read noise used for the noise model [e-]")
    background = Field(Float, "sky background level (mesh estimate, sources masked) [ADU]")
    background_rms = Field(Float, "sky noise [ADU]")
    psf_radius = Field(Float, "PSF radius: median half-light radius of the stars [arcsec]")
    seeing = Field(Float, "median FWHM of the stars [arcsec]")
    seeing_error = Field(Float, "standard error of the seeing (bootstrap over the fitted stars) [arcsec]")
    seeing_reliable = Field(Boolean, "False when the seeing is uncertain: its error exceeds SEEING_MAX_ERROR of it, "
                                     "or the stars may have been mistaken for compact galaxies")
    n_stars_seeing = Field(Integer, "number of stars the seeing was measured on")
    n_cosmic_pixels = Field(Integer, "pixels flagged as cosmic rays")
    n_satellite_tracks = Field(Integer, "satellite tracks found")
    n_saturated_pixels = Field(Integer, "saturated pixels")

    @classmethod
    def select(cls, instrument: str | None = None, chip: str | None = None, filter: str | None = None,
               date: str | _dt.date | None = None, object: str | None = None,
               raw_filenames: Iterable[str] | str | None = None, **attributes: Any) -> Query:
        """Valid reduced frames matching the keywords (see :meth:`BaseFrame.select`).

        ``raw_filenames`` selects the frames reduced from these raw chip files
        (``'WFI.2003-03-04T04:42:29.496_1.fits'``).
        """
        query = super().select(instrument=instrument, chip=chip, filter=filter, date=date, object=object,
                               **attributes)
        if raw_filenames is not None:
            names = [raw_filenames] if isinstance(raw_filenames, str) else list(raw_filenames)
            query &= cls.raw.filename.in_(names)
        return query

    @property
    def seeing_or_assumed(self) -> float:
        """The measured seeing [arcsec], or where too few stars were found the ``ASSUMED_SEEING`` this frame was
        reduced with (what its cosmic-ray star check took): the PSF width later extractions size their
        detection area by."""
        if self.seeing:
            return float(self.seeing)
        groups = self.process_params or {}
        assumed = (groups.get("process_params") or {}).get("ASSUMED_SEEING")
        return float(assumed) if assumed else float(ReducedScienceParams.ASSUMED_SEEING.default)

    @property
    def weight(self) -> "WeightFrame | None":
        """The weight map to use with this frame: the newest valid one not superseded by another.

        The mosaic satellite pass makes a new weight (``previous`` = the one
        it updates) when it finds a track the chip's own search missed; that
        one supersedes the old weight, which stays as it was.
        """
        return _current_derived(WeightFrame, "reduced", self)

    @property
    def satellites(self) -> "SatelliteMap | None":
        """The satellite map of this frame: the newest valid one not superseded by another (see ``weight``)."""
        return _current_derived(SatelliteMap, "reduced", self)


class WeightFrame(BaseFrame):
    """The weight map of a reduced frame: relative inverse variance, 0 on pixels to ignore.

    ``weight = normalised flat x hot x cold x (not saturated) x (not cosmic) x
    (not on a satellite track)``; float32 on the trimmed grid. The file's
    ``FLAGS`` extension says why a pixel has weight 0 (:meth:`flags`).
    """

    __tablename__ = "weight_frames"

    parameter_groups = {"process_params": WeightParams}

    reduced = Input("ReducedScienceFrame", "the reduced frame")
    flat = Input("MasterFlatFrame", "master flat (the relative sensitivity)")
    hot_pixels = Input("HotPixelMap", "hot pixels")
    cold_pixels = Input("ColdPixelMap", "cold pixels")
    satellites = Input("SatelliteMap", "satellite tracks", optional=True)
    previous = Input("WeightFrame", "the weight map this one updates with the tracks followed across the mosaic",
                     optional=True)

    n_zero_weight = Field(Integer, "pixels with weight 0")
    zero_weight_fraction = Field(Float, "fraction of pixels with weight 0")

    def flags(self) -> np.ndarray:
        """The uint8 flag image: bits of :data:`awe.image.weights.mask_bits` (hot 1, cold 2, saturated 4,
        cosmic 8, satellite 16) on the pixels masked for that reason."""
        from awe.model._io import read_image
        return read_image(self.local_path(), ext="FLAGS").astype(np.uint8)


class SatelliteMap(BaseFrame):
    """Satellite tracks of a reduced frame, found by the Hough transform.

    The file is a uint8 mask on the trimmed grid (1 on a track); ``tracks``
    lists each track's parameters: ``rho`` [pixel] and ``theta`` [deg] of the
    line ``x cos(theta) + y sin(theta) = rho`` (0-based trimmed pixels),
    ``width`` [pixel], the detected ``length`` [detector pixels], ``peak``
    [ADU above the sky], ``n_pixels`` detected, and the end points ``x0, y0,
    x1, y1`` where the line crosses the image border.

    ReduceTask makes one per chip from that chip alone. The mosaic pass
    (:func:`awe.tasks.reduce.follow_satellites`) follows the tracks of the
    other chips of the exposure onto this one; when it finds one there, it
    makes a new map (``previous`` = this chip's map, ``followed_from`` = the
    maps the tracks came from) holding the old tracks and the followed
    ones, and a new weight map with them; ``red.satellites`` and
    ``red.weight`` then give the new ones. Committed files never change.
    """

    __tablename__ = "satellite_maps"

    parameter_groups = {"process_params": SatelliteParams}

    reduced = Input("ReducedScienceFrame", "the reduced frame searched")
    previous = Input("SatelliteMap", "the map of this chip that this one updates (mosaic pass)", optional=True)
    followed_from = Inputs("SatelliteMap", "the maps of the other chips of the exposure whose tracks were "
                                           "followed onto this chip (mosaic pass)", optional=True)

    n_tracks = Field(Integer, "number of tracks found (followed ones included)")
    n_followed_tracks = Field(Integer, "tracks found by following those of other chips (mosaic pass)")
    n_track_pixels = Field(Integer, "pixels masked on tracks")
    tracks = Field(JSON, "track parameters: rho, theta, width, length, peak, n_pixels, x0, y0, x1, y1 (and for a "
                         "followed track, followed_from: the chips it was followed from)")

    def mask(self) -> np.ndarray:
        """The track mask (bool, True on a track)."""
        return self.load() > 0


class IlluminationCorrection(CalibrationFrame):
    """The illumination correction of one chip and filter (a calibration with a validity range).

    A flat-fielded frame has a flat sky but its photometry is off by the
    large-scale illumination pattern of the flat-field light; multiplying the
    frame by this correction makes a star's counts the same anywhere on the
    chip (and leaves the sky following the correction). The file holds the
    correction as a float32 image on the trimmed grid; ``fit_coefficients``
    and ``fit_degree`` the polynomial it was evaluated from (see
    :class:`IlluminationFit`). Made by the photometric pipeline from reduced
    standard fields; applied by ``ReduceTask`` when a valid one exists.
    """

    __tablename__ = "illumination_corrections"

    parameter_groups = {"process_params": IlluminationParams}

    reduced_frames = Inputs("ReducedScienceFrame", "reduced standard-field frames it was measured on")
    photcats = Inputs("PhotSrcCatalog", "the standard-star catalogues of the joint photometric fit (every chip of "
                                        "the night's standard exposures)", optional=True)

    fit_degree = Field(Integer, "degree of the 2-D polynomial")
    fit_coefficients = Field(JSON, "coefficients c[i][j] of u**i v**j (u, v: pixel coordinates scaled to -1..1)")
    fit_rms = Field(Float, "rms of the fit residuals [fraction]")

    @property
    def illuminationcorrection(self) -> "IlluminationFit":
        """The fitted correction surface (``red.illumination.illuminationcorrection.inspect()``)."""
        if self.fit_coefficients is None:
            raise ValueError(f"{self.filename} has no fit coefficients")
        return IlluminationFit(np.asarray(self.fit_coefficients, dtype=float),
                               (int(self.NAXIS2), int(self.NAXIS1)), self.fit_rms, self.filename)

    def correction(self) -> np.ndarray:
        """The correction image (float32, trimmed grid): multiply a flat-fielded frame by it."""
        return self.load()

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Draw the correction image with contours every 1 %; returns the figure."""
        return draw_correction(self.correction(), f"{type(self).__name__}\n{self.filename}", ax=ax, path=path)


@dataclass(frozen=True)
class IlluminationFit:
    """A smooth multiplicative correction: a 2-D polynomial in scaled pixel coordinates.

    Parameters
    ----------
    coefficients : ndarray
        ``c[i, j]`` multiplies ``u**i * v**j`` with ``u = 2 x / (nx - 1) - 1``
        and ``v = 2 y / (ny - 1) - 1`` (0-based pixel coordinates ``x``, ``y``).
    shape : (ny, nx)
        Size of the trimmed grid.
    rms : float, optional
        rms of the fit residuals (fraction).
    label : str
        Shown in the figure title.
    """

    coefficients: np.ndarray
    shape: tuple[int, int]
    rms: float | None = None
    label: str = ""

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, values: np.ndarray, shape: tuple[int, int], degree: int = 3,
            weights: np.ndarray | None = None, label: str = "") -> "IlluminationFit":
        """Least-squares fit of a 2-D polynomial of total degree ``degree`` to ``values`` at ``(x, y)``.

        Parameters
        ----------
        x, y : ndarray
            0-based pixel positions on the trimmed grid.
        values : ndarray
            The correction measured there (e.g. a star's catalogue flux over its measured flux).
        shape : (ny, nx)
            Size of the trimmed grid.
        degree : int
            Highest total degree ``i + j`` of ``u**i v**j``.
        weights : ndarray, optional
            Weight of each value (inverse variance).
        """
        x, y, values = (np.asarray(a, dtype=float).ravel() for a in (x, y, values))
        if not (x.size == y.size == values.size):
            raise ValueError(f"x, y and values differ in length ({x.size}, {y.size}, {values.size})")
        terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
        if degree < 0 or x.size < len(terms):
            raise ValueError(f"a degree-{degree} fit needs at least {len(terms)} points, got {x.size}")
        u, v = _scaled(x, shape[1]), _scaled(y, shape[0])
        design = np.column_stack([u**i * v**j for i, j in terms])
        w = np.sqrt(np.asarray(weights, dtype=float).ravel()) if weights is not None else np.ones_like(values)
        solution, *_ = np.linalg.lstsq(design * w[:, None], values * w, rcond=None)
        coefficients = np.zeros((degree + 1, degree + 1))
        for (i, j), c in zip(terms, solution):
            coefficients[i, j] = c
        model = design @ solution
        rms = float(np.sqrt(np.mean(((values - model) / model) ** 2)))
        return cls(coefficients, (int(shape[0]), int(shape[1])), rms, label)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The correction at pixel positions ``x``, ``y``."""
        ny, nx = self.shape
        return np.polynomial.polynomial.polyval2d(_scaled(x, nx), _scaled(y, ny), self.coefficients)

    def image(self) -> np.ndarray:
        """The correction on the whole grid (float32)."""
        ny, nx = self.shape
        grid = np.polynomial.polynomial.polygrid2d(_scaled(np.arange(nx), nx), _scaled(np.arange(ny), ny),
                                                   self.coefficients)
        return grid.T.astype(np.float32)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Draw the fitted surface with contours every 1 %; returns the figure."""
        rms = f", fit rms {100 * self.rms:.2f} %" if self.rms is not None else ""
        return draw_correction(self.image(), f"illumination correction{rms}\n{self.label}", ax=ax, path=path)


def draw_correction(image: np.ndarray, title: str, ax: Any = None, path: str | Path | None = None) -> Any:
    """A correction map in percent from 1, with 1 % contours."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 8))
    percent = 100.0 * (np.asarray(image, dtype=float) - 1.0)
    shown = ax.imshow(percent, origin="lower", cmap="coolwarm", interpolation="nearest")
    low, high = np.floor(np.nanmin(percent)), np.ceil(np.nanmax(percent))
    if high > low:
        contours = ax.contour(percent, levels=np.arange(low, high + 1.0), colors="k", linewidths=0.5)
        ax.clabel(contours, fontsize=6, fmt="%g %%")
    ax.figure.colorbar(shown, ax=ax, label="correction - 1 [%]")
    ax.set_title(title, fontsize=7)
    fig = fig or ax.figure
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig


def _scaled(pixels: np.ndarray, n: int) -> np.ndarray:
    """0-based pixel coordinates on an axis of ``n`` pixels mapped onto -1 .. 1."""
    return 2.0 * np.asarray(pixels, dtype=float) / max(n - 1, 1) - 1.0


def _current_derived(cls: type[BaseFrame], role: str, parent: BaseFrame) -> Any:
    """The newest valid ``cls`` made from ``parent`` (in ``role``) that no other valid one names as ``previous``.

    Products committed together share their creation date: the ``previous``
    links, not the dates, tell an update from what it updates.
    """
    if parent.object_id is None:
        return None
    query = (getattr(cls, role).object_id == parent.object_id) & (cls.quality_flags == 0) & (cls.is_valid != 0)
    candidates = list(query)
    if not candidates:
        return None
    superseded = {c.previous.object_id for c in candidates if getattr(c, "previous", None) is not None}
    current = [c for c in candidates if c.object_id not in superseded] or candidates
    return max(current, key=lambda c: (c.creation_date, c.object_id))
