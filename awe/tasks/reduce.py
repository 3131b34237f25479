"""ReduceTask: raw science frames to reduced frames with weights and satellite maps (spec sections 6-8).

::

    ReduceTask(raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], commit=1).execute()
    ReduceTask(instrument='WFI', chip='ccd50', object='3C*', commit=1).execute()

For each selected raw science (or standard-field) frame of one chip:

1. overscan correction (``OVERSCAN_CORRECTION``, the method the master bias
   was made with: a bias made otherwise is refused) and trim;
2. de-bias with the master bias, flat-field with the master flat and, when a
   valid one exists, multiply by the illumination correction (its absence is
   logged, not an error);
3. masks: saturated pixels (raw level), cosmic rays (L.A.Cosmic with a PSF
   check), satellite tracks (Hough transform, :class:`SatelliteMap`);
4. the weight map: normalised flat (divided by the square of the
   illumination correction when one is applied: the weight is an inverse
   variance) x hot x cold x saturation x cosmic rays x satellite tracks;
5. background level and rms, seeing (FWHM and ``psf_radius``), ``imstat``.

Every frame gives a :class:`ReducedScienceFrame`, its :class:`SatelliteMap`
and its :class:`WeightFrame`, committed together (all frames of the task in
one transaction). The pure pixel work is :func:`calibrate_frame` and
:func:`analyse_frame`; the task only selects, loads, records and writes.
The products carry the raw header's WCS, distortion terms included, moved
to the trimmed grid (:func:`trimmed_wcs`).

A satellite crosses the whole mosaic but the per-chip search misses a chip
whose corner it only cuts. When one ``execute()`` reduces several chips of
an exposure, the mosaic pass (:func:`follow_satellites`, the pure part
:func:`awe.image.satellites.follow_tracks`) follows every track from chip
to chip through the header WCS and, where it finds one a chip's own search
missed, makes a new SatelliteMap and WeightFrame for that chip (lineage to
the ones they update, which stay as they were; ``red.satellites`` and
``red.weight`` give the new ones). :class:`FollowSatellitesTask` runs the
same pass on chips reduced separately.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from awe.db.schema import DBObject
from awe.image.background import BackgroundResult, SeeingResult, TooFewStarsError, measure_background, \
    measure_seeing, sky_model
from awe.image.cosmics import find_cosmics
from awe.image.overscan import OverscanCorrector
from awe.image.satellites import MosaicChip, SatelliteResult, Track, find_satellite_tracks, follow_tracks, line_ends
from awe.image.stats import imstat
from awe.image.weights import COLD, COSMIC, HOT, SATELLITE, SATURATED, combine_masks, grow_mask, saturation_mask, \
    weight_map
from awe.instruments import RawGeometry, get_instrument
from awe.model._io import read_header, read_image
from awe.model.calibration import BiasFrame, ColdPixelMap, HotPixelMap, MasterFlatFrame
from awe.model.frames import BaseFrame, RawFrame, RawScienceFrame
from awe.model.science import IlluminationCorrection, ReducedScienceFrame, SatelliteMap, WeightFrame
from awe.pars import ParamGroup
from awe.tasks.base import Input, Task, TaskError, as_list, stored_imstat
from awe.tasks.calibration import raw_geometry

__all__ = ["ReduceTask", "FollowSatellitesTask", "CalibrationImages", "Reduction", "calibrate_frame", "analyse_frame",
           "FrameSetup", "ChipProducts", "follow_satellites", "header_wcs", "trimmed_wcs", "trimmed_wcs_cards"]

log = logging.getLogger(__name__)

#: keywords of astropy's WCS header that describe the observation, not the mapping (the products carry their own)
_WCS_TIME_KEYS = frozenset({"DATE-OBS", "MJD-OBS", "DATE-BEG", "DATE-AVG", "DATE-END", "MJD-BEG", "MJD-AVG",
                            "MJD-END", "DATEREF", "MJDREF", "MJDREFI", "MJDREFF", "TIMESYS", "TREFPOS", "TSTART",
                            "TSTOP", "XPOSURE", "TELAPSE"})


#: masks drawn over the reduced frame by ``inspect=1``: label -> flag bits
_FIGURE_MASKS = {"cosmic rays": COSMIC, "satellite tracks": SATELLITE, "saturated": SATURATED,
                 "hot/cold pixels": HOT | COLD}


# ============================================================================ the pure core
@dataclass(frozen=True)
class CalibrationImages:
    """The calibration pixels for one chip, all on the trimmed grid.

    Attributes
    ----------
    bias : ndarray
        Master bias [ADU] (overscan-corrected like the frame).
    flat : ndarray
        Master flat, normalised (median 1).
    hot, cold : ndarray of bool, optional
        Bad pixels (True = bad).
    illumination : ndarray, optional
        Illumination correction: the flat-fielded frame is multiplied by it.
    """

    bias: np.ndarray
    flat: np.ndarray
    hot: np.ndarray | None = None
    cold: np.ndarray | None = None
    illumination: np.ndarray | None = None

    def check(self, shape: tuple[int, int], names: Mapping[str, str] | None = None) -> None:
        """Raise TaskError when an image is not of the trimmed ``shape``."""
        names = names or {}
        for role in ("bias", "flat", "hot", "cold", "illumination"):
            image = getattr(self, role)
            if image is not None and image.shape != shape:
                label = f"the {role}" + (f" {names[role]}" if role in names else "")
                raise TaskError(
                    f"{label} is {image.shape[1]} x {image.shape[0]} pixels but the trimmed frame is {shape[1]} x "
                    f"{shape[0]}: it was made from frames of another layout; make calibrations from raw frames "
                    "like this one")


@dataclass(frozen=True)
class FrameSetup:
    """What the reduction needs to know about a frame besides its pixels.

    Attributes
    ----------
    gain : float
        e-/ADU.
    read_noise : float
        Read noise [e-].
    pixel_scale : float
        arcsec per pixel of the frame.
    binning : float
        Detector pixels per frame pixel (8 for a chip shrunk 8 times).
    saturation : float
        Raw level [ADU] at and above which a pixel is saturated.
    """

    gain: float
    read_noise: float
    pixel_scale: float
    binning: float
    saturation: float


@dataclass(frozen=True)
class Reduction:
    """The result of :func:`analyse_frame` on a calibrated frame.

    Attributes
    ----------
    image : ndarray
        The reduced frame (float32, ADU).
    weight : ndarray
        The weight map (float32; 0 on pixels to ignore).
    flags : ndarray
        Why pixels are masked (uint8, bits of :data:`awe.image.weights.mask_bits`).
    saturated, cosmics : ndarray of bool
        Saturated pixels (with their bleed trails) and cosmic-ray pixels.
    satellites : SatelliteResult
        Track mask and parameters.
    background : BackgroundResult
        Sky level and rms.
    seeing : SeeingResult or None
        None when too few stars were found.
    imstat : ImStat
        Statistics of the reduced frame.
    """

    image: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    saturated: np.ndarray
    cosmics: np.ndarray
    satellites: SatelliteResult
    background: BackgroundResult
    seeing: SeeingResult | None
    imstat: Any


def calibrate_frame(raw: np.ndarray, geometry: RawGeometry, overscan: int, bias: np.ndarray, flat: np.ndarray,
                    illumination: np.ndarray | None = None) -> np.ndarray:
    """Overscan-correct, trim, de-bias, flat-field (and illumination-correct) one raw chip.

    Parameters
    ----------
    raw : ndarray
        The raw extension (any numeric type), of ``geometry.shape``.
    geometry : RawGeometry
        Its sections.
    overscan : int
        OVERSCAN_CORRECTION method (:class:`awe.image.overscan.OverscanMode`).
    bias, flat : ndarray
        Master bias [ADU] and normalised master flat on the trimmed grid.
    illumination : ndarray, optional
        Multiplicative illumination correction on the trimmed grid.

    Returns
    -------
    ndarray
        float32 image on the trimmed grid; 0 where the flat is not positive.
    """
    if raw.shape != geometry.shape:
        raise ValueError(f"the raw frame is {raw.shape[1]} x {raw.shape[0]} pixels, its geometry describes "
                         f"{geometry.shape[1]} x {geometry.shape[0]}")
    corrector = OverscanCorrector(geometry.overscan_x if geometry.n_overscan_x else None, geometry.trim, overscan,
                                  prescan_cols=geometry.prescan_x if geometry.n_prescan_x else None)
    image = corrector(raw)
    image -= bias
    if flat.min() > 0:
        image /= flat
    else:
        usable = flat > 0
        np.divide(image, flat, out=image, where=usable)
        image[~usable] = 0.0
    if illumination is not None:
        image *= illumination
    return image


def analyse_frame(image: np.ndarray, raw_trimmed: np.ndarray, calibration: CalibrationImages, setup: FrameSetup,
                  params: ParamGroup, weight_params: ParamGroup, satellite_params: ParamGroup) -> Reduction:
    """Masks, weight map, background and seeing of a calibrated frame.

    Parameters
    ----------
    image : ndarray
        The output of :func:`calibrate_frame`.
    raw_trimmed : ndarray
        The raw pixels of the trimmed area (for the saturation level).
    calibration : CalibrationImages
        The calibrations used (flat, bad pixels, illumination).
    setup : FrameSetup
        Gain, read noise, pixel scale, binning, saturation.
    params, weight_params, satellite_params : ParamGroup
        ``ReducedScienceFrame``, ``WeightFrame`` and ``SatelliteMap`` process parameters
        (:class:`~awe.model.science.ReducedScienceParams`, :class:`~awe.model.science.WeightParams`,
        :class:`~awe.model.science.SatelliteParams`).

    Returns
    -------
    Reduction
    """
    shape = image.shape
    saturated = saturation_mask(raw_trimmed, setup.saturation)
    bad = saturated.copy()
    for pixels in (calibration.hot, calibration.cold):
        if pixels is not None:
            bad |= pixels
    level = _reduced_level(setup.saturation, image, raw_trimmed, calibration)
    sky = sky_model(image, bad, params.BACKGROUND_MESH)  # the seeing's and the cosmic-ray fill's
    seeing = _seeing(image, bad, setup, level, params, sky)
    if seeing is not None:
        psf_fwhm, psf_beta = seeing.fwhm_pixels, seeing.beta
    else:
        psf_fwhm, psf_beta = params.ASSUMED_SEEING / setup.pixel_scale, 3.0
        log.info("the cosmic-ray star check assumes a seeing of %.2f\" (%.2f pixels)", params.ASSUMED_SEEING,
                 psf_fwhm)
    cosmics = find_cosmics(image, gain=setup.gain, read_noise=setup.read_noise, sat_level=level,
                           sigclip=params.COSMIC_SIGCLIP, sigfrac=params.COSMIC_SIGFRAC,
                           objlim=params.COSMIC_OBJLIM or None, mask=bad, niter=params.COSMIC_NITER,
                           psf_fwhm=psf_fwhm, psf_beta=psf_beta, detector=params.COSMIC_DETECTOR, sky=sky)
    if params.COSMIC_GROW > 0 and cosmics.any():
        cosmics = grow_mask(cosmics, params.COSMIC_GROW)
        cosmics &= ~bad
    satellites = find_satellite_tracks(image, satellite_params.DETECTION_THRESHOLD, satellite_params.HOUGH_THRESHOLD,
                                       mask=bad | cosmics, binning=setup.binning)
    background = measure_background(image, mask=bad | cosmics | satellites.mask, box=params.BACKGROUND_MESH)
    flags = combine_masks(calibration.hot, calibration.cold, saturated, cosmics, satellites.mask, shape=shape)
    ignored = (0 if weight_params.USE_COSMIC_MASK else COSMIC) | (0 if weight_params.USE_SATELLITE_MASK else SATELLITE)
    flat = calibration.flat
    if calibration.illumination is not None:
        flat = flat / np.square(calibration.illumination)
    weight = weight_map(flat, flags=flags & np.uint8(~ignored & 0xFF))
    return Reduction(image=image, weight=weight, flags=flags, saturated=saturated, cosmics=cosmics,
                     satellites=satellites, background=background, seeing=seeing, imstat=imstat(image))


def _reduced_level(raw_level: float, image: np.ndarray, raw_trimmed: np.ndarray,
                   calibration: CalibrationImages) -> float:
    """A raw level in the units of the reduced frame: minus the overscan and bias, through the median flat."""
    step = (slice(None, None, 7), slice(None, None, 7))
    gain = calibration.flat[step]
    if calibration.illumination is not None:
        gain = gain / calibration.illumination[step]
    usable = gain > 0
    offset = np.median((raw_trimmed[step] - image[step] * gain)[usable])
    return float((raw_level - offset) / np.median(gain[usable]))


def _seeing(image: np.ndarray, bad: np.ndarray, setup: FrameSetup, level: float,
            params: ParamGroup, sky: Any = None) -> SeeingResult | None:
    """The seeing from stars above SEEING_DETECT_THRESHOLD sigma, or, if too few, above half of it."""
    threshold = params.SEEING_DETECT_THRESHOLD
    for attempt in (threshold, threshold / 2):
        try:
            return measure_seeing(image, mask=bad, pixel_scale=setup.pixel_scale, saturation=level,
                                  detect_threshold=attempt, box=params.BACKGROUND_MESH, sky=sky)
        except TooFewStarsError as exc:
            log.info("seeing not measured from stars above %g sigma: %s", attempt, exc)
    log.warning("seeing not measured: too few stars, even above %g sigma", threshold / 2)
    return None


# ============================================================================ the task
@dataclass(frozen=True)
class _Calibrations:
    """The calibration products one frame is reduced with (its lineage inputs of those roles)."""

    bias: BiasFrame
    flat: MasterFlatFrame
    hot_pixels: HotPixelMap
    cold_pixels: ColdPixelMap
    illumination: IlluminationCorrection | None

    def by_role(self) -> dict[str, DBObject | None]:
        return {"bias": self.bias, "flat": self.flat, "hot_pixels": self.hot_pixels, "cold_pixels": self.cold_pixels,
                "illumination": self.illumination}


class ReduceTask(Task):
    """Reduce raw science (and standard-field) frames: de-bias, flat-field, masks, weights, seeing.

    ``ReduceTask(raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], commit=1)`` or
    ``ReduceTask(instrument='WFI', chip='ccd50', object='3C*', commit=1)``
    (also ``filter=``, ``date=``). Each frame uses the newest valid master
    bias (made with the same OVERSCAN_CORRECTION), master flat, hot and cold
    pixel maps whose validity covers it, and the illumination correction
    when one exists. Makes a ReducedScienceFrame, its SatelliteMap and its
    WeightFrame per frame; ``inspect=1`` saves a figure of the frame with
    its masks and its weight map.
    """

    products = (ReducedScienceFrame, WeightFrame, SatelliteMap)
    inputs = (Input(RawScienceFrame, "raw", kind="raw"), Input(BiasFrame, "bias"),
              Input(MasterFlatFrame, "flat", filter=True), Input(HotPixelMap, "hot_pixels"),
              Input(ColdPixelMap, "cold_pixels", filter=True),
              Input(IlluminationCorrection, "illumination", filter=True, optional=True))
    unit = "per_frame"
    version = "5"  # 2: COSMIC_NITER 2 (was 4); 3: COSMIC_DETECTOR 'candidates' (was astroscrappy); 4: seeing fits by
    # a plain Levenberg-Marquardt (the same minimum to ~1e-4 in the FWHM); 5: the PSF check spares the fits of groups
    # sharper than any star on empty sky (17 more pixels flagged of 20,300 on a full-size frame)
    algorithm_modules = ("awe.image.overscan", "awe.image.background", "awe.image.cosmics", "awe.image.cosmics_kernels",
                         "awe.image.satellites", "awe.image.weights", "awe.image.stats", "awe.tasks.base",
                         "awe.tasks.reduce")
    #: the task a distributed executor runs after this one's units (the in-process gather() does its pass)
    followed_by = "FollowSatellitesTask"
    selection = {
        "raw_filenames": "raw chip files to reduce (['WFI.2003-03-04T04:42:29.496_1.fits'])",
        "instrument": "instrument name ('WFI')",
        "chip": "chip name ('ccd50'); all chips when not given",
        "filter": "filter ('#844' or the ESO name)",
        "date": "observing night ('2003-03-03': from local noon that day to local noon the next)",
        "object": "OBJECT of the raw frames, wildcards allowed ('3C*')",
    }
    shortcuts = {"overscan": ("ReducedScienceFrame", "process_params", "OVERSCAN_CORRECTION")}

    def unit_selections(self) -> list[dict[str, Any]]:
        """One unit per selected raw chip frame."""
        raws = self._raw_frames()
        self.log.info("reducing %d raw frame(s): %s", len(raws), [r.filename for r in raws])
        return [dict(self.selection_values, raw_filenames=[raw.filename]) for raw in raws]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        made: list[tuple[DBObject, Path | None]] = []
        for raw in self._raw_frames():
            made += self._reduce(raw)
        return made

    def gather(self, made: list[tuple[DBObject, Path | None]]) -> list[tuple[DBObject, Path | None]]:
        """Several chips of one exposure: follow the satellite tracks from chip to chip (the mosaic pass)."""
        products = [obj for obj, _ in made]
        chips = []
        for red, sat, weight in zip(products[0::3], products[1::3], products[2::3]):
            # make() gives (reduced frame, satellite map, weight) per frame
            assert isinstance(red, ReducedScienceFrame) and isinstance(sat, SatelliteMap) \
                and isinstance(weight, WeightFrame), (red, sat, weight)
            chips.append(ChipProducts(red.raw, red, sat, weight))
        return follow_satellites(self, chips)

    # ------------------------------------------------------------ selection
    def _raw_frames(self) -> list[RawFrame]:
        return _raw_frames(self)

    # ------------------------------------------------------------ calibrations
    def _calibrations(self, raw: RawFrame, overscan: int) -> _Calibrations:
        """The calibration products for ``raw`` (``illumination`` may be None)."""
        def bias_check(bias: BiasFrame) -> str | None:
            if bias.overscan_correction == overscan:
                return None
            return (f"made with OVERSCAN_CORRECTION={bias.overscan_correction} but this reduction uses {overscan}: "
                    "a master bias is only subtracted from frames overscan-corrected the same way; make one with "
                    f"BiasTask(..., overscan={overscan}) or reduce with overscan={bias.overscan_correction}")

        bias = self.calibration("bias", raw, check=bias_check, overscan=overscan)
        return _Calibrations(bias=bias, flat=self.calibration("flat", raw),
                             hot_pixels=self.calibration("hot_pixels", raw),
                             cold_pixels=self.calibration("cold_pixels", raw),
                             illumination=self.calibration("illumination", raw))

    def missing_optional(self, decl: Input, frame: Any, exc: Exception) -> None:
        self.log.info("%s is not illumination-corrected: no valid IlluminationCorrection for %s %s %s "
                      "(it is made from reduced standard fields by the photometric calibration)",
                      frame.filename, frame.instrument.name, frame.chip.name, frame.filter.name if frame.filter else "")

    # ------------------------------------------------------------ one frame
    def _reduce(self, raw: RawFrame) -> list[tuple[DBObject, Path | None]]:
        p = self.params(ReducedScienceFrame)
        cal = self._calibrations(raw, p.OVERSCAN_CORRECTION)
        red = self.new_product(ReducedScienceFrame, {"raw": raw, **cal.by_role()}, template=raw, category="Sci",
                               step="Red", overscan_correction=p.OVERSCAN_CORRECTION)
        if cal.illumination is not None:
            self.log.info("%s is illumination-corrected with %s", raw.filename, cal.illumination.filename)
        reused = self._reuse(red, cal)
        if reused:
            return reused

        path = raw.local_path()
        header = read_header(path)
        geometry = raw_geometry(raw, header)
        pixels = read_image(path)
        images = CalibrationImages(
            bias=cal.bias.load(), flat=cal.flat.load(), hot=cal.hot_pixels.mask(), cold=cal.cold_pixels.mask(),
            illumination=cal.illumination.correction() if cal.illumination is not None else None)
        used = {"bias": cal.bias, "flat": cal.flat, "hot": cal.hot_pixels, "cold": cal.cold_pixels,
                "illumination": cal.illumination}
        images.check(geometry.trim_shape, {k: obj.filename for k, obj in used.items() if obj is not None})
        setup = _setup(raw, header, geometry, p)
        try:
            image = calibrate_frame(pixels, geometry, p.OVERSCAN_CORRECTION, images.bias, images.flat,
                                    images.illumination)
        except ValueError as exc:
            raise TaskError(f"{raw.filename}: {exc}") from None
        result = analyse_frame(image, pixels[geometry.trim], images, setup, p, self.params(WeightFrame),
                               self.params(SatelliteMap))
        self._record(red, result, setup)
        sat = self._satellite_map(red)
        self._record_tracks(sat, result.satellites)
        weight = self._weight_frame(red, sat, cal)
        zero = int(np.count_nonzero(result.weight == 0))
        weight.n_zero_weight, weight.zero_weight_fraction = zero, zero / result.weight.size

        cards = _header_cards(raw, header, geometry, setup)
        # file names are long: no comments (a FITS card holds 80 characters)
        cards.update({"BIASFILE": cal.bias.filename, "FLATFILE": cal.flat.filename,
                      "ILLUMFIL": cal.illumination.filename if cal.illumination else ""})
        made: list[tuple[DBObject, Path | None]] = [(red, self._write(red, result.image, cards, {
                     "OVSCCORR": (p.OVERSCAN_CORRECTION, "OVERSCAN_CORRECTION method"),
                     "SKYLEVEL": (result.background.level, "median sky background [ADU]"),
                     "SKYRMS": (result.background.rms, "sky noise [ADU]"),
                     "SEEING": (red.seeing if red.seeing is not None else -1.0, "FWHM [arcsec], -1: not measured"),
                     "SEEINGER": (red.seeing_error if red.seeing_error is not None else -1.0,
                                  "seeing error [arcsec], -1: not measured"),
                     "SEEINGOK": (bool(red.seeing_reliable), "seeing reliable"),
                     "NSTARSEE": (red.n_stars_seeing or 0, "stars the seeing was measured on")})),
                (sat, self._write(sat, result.satellites.mask.astype(np.uint8), cards,
                                  {"NTRACKS": (sat.n_tracks, "satellite tracks (mask value 1)")}, dtype=np.uint8)),
                (weight, self._write(weight, result.weight, cards,
                                     {"NZEROWT": (zero, "pixels with weight 0")}, hdus={"FLAGS": result.flags}))]
        self.save_figure(red, lambda path: self._figure(red, result, path), "masks")
        return made

    def _satellite_map(self, red: ReducedScienceFrame) -> SatelliteMap:
        return self.new_product(SatelliteMap, {"reduced": red}, template=red, category="Sci", step="Sat")

    def _weight_frame(self, red: ReducedScienceFrame, sat: SatelliteMap, cal: _Calibrations) -> WeightFrame:
        inputs = {"reduced": red, "flat": cal.flat, "hot_pixels": cal.hot_pixels, "cold_pixels": cal.cold_pixels,
                  "satellites": sat}
        return self.new_product(WeightFrame, inputs, template=red, category="Sci", step="Weight")

    def _reuse(self, red: ReducedScienceFrame, cal: _Calibrations) -> list[tuple[DBObject, Path | None]] | None:
        """The committed products identical to what this run would make, when all three exist.

        A reduced frame is reused only with its satellite map and weight: new
        satellite or weight parameters make all three again (the reduced
        frame counts the tracks found).
        """
        found_red = self.existing(red)
        if found_red is None:
            return None
        sat = self.existing(self._satellite_map(found_red))
        if sat is None:
            return None
        weight = self.existing(self._weight_frame(found_red, sat, cal))
        if weight is None:
            return None
        # the mosaic satellite pass may have updated them since
        return [(found_red, None), (_latest_version(sat), None), (_latest_version(weight), None)]

    def _record(self, red: ReducedScienceFrame, result: Reduction, setup: FrameSetup) -> None:
        red.NAXIS2, red.NAXIS1 = (int(n) for n in result.image.shape)
        red.imstat = stored_imstat(result.imstat)
        red.gain, red.read_noise = setup.gain, setup.read_noise
        red.background, red.background_rms = result.background.level, result.background.rms
        if result.seeing is not None:
            seeing = result.seeing
            red.seeing, red.psf_radius = seeing.fwhm_arcsec, seeing.psf_radius
            red.n_stars_seeing = seeing.n_stars
            red.seeing_error = seeing.fwhm_error if math.isfinite(seeing.fwhm_error) else None
            limit = self.params(ReducedScienceFrame).SEEING_MAX_ERROR
            red.seeing_reliable = bool(not seeing.ambiguous and seeing.relative_error <= limit)
            if not red.seeing_reliable:
                why = ("a group of narrower sources suggests the stars were taken for compact galaxies"
                       if seeing.ambiguous else
                       f"its error is {100 * seeing.relative_error:.0f} % of it (SEEING_MAX_ERROR "
                       f"{100 * limit:.0f} %)")
                self.log.warning("%s: the seeing %.2f\" +- %.2f\" from %d stars is unreliable: %s",
                                 red.raw.filename, seeing.fwhm_arcsec, seeing.fwhm_error, seeing.n_stars, why)
        red.n_cosmic_pixels = int(result.cosmics.sum())
        red.n_satellite_tracks = len(result.satellites.tracks)
        red.n_saturated_pixels = int(result.saturated.sum())
        self.log.info("%s: sky %.2f +- %.2f ADU, seeing %s, %d cosmic-ray pixels, %d satellite track(s), "
                      "%d saturated pixels", red.raw.filename, red.background, red.background_rms,
                      _seeing_text(red), red.n_cosmic_pixels, red.n_satellite_tracks, red.n_saturated_pixels)

    @staticmethod
    def _record_tracks(sat: SatelliteMap, result: SatelliteResult) -> None:
        sat.NAXIS2, sat.NAXIS1 = (int(n) for n in result.mask.shape)
        sat.n_tracks = len(result.tracks)
        sat.n_track_pixels = int(result.mask.sum())
        sat.tracks = [_track_dict(t, result.mask.shape) for t in result.tracks]

    def _write(self, obj: BaseFrame, data: np.ndarray, common: dict[str, Any], extra: dict[str, Any],
               dtype: Any = np.float32, hdus: dict[str, np.ndarray] | None = None) -> Path:
        return self.write_product(obj, data, {**common, **extra}, dtype=dtype, hdus=hdus)

    def _figure(self, red: ReducedScienceFrame, result: Reduction, path: Path) -> Any:
        from awe.image.inspect import new_figure, save_figure, show_image

        fig, (left, right) = new_figure(ncols=2, size=(11.0, 9.0))
        masks = {name: (result.flags & np.uint8(bits)) > 0 for name, bits in _FIGURE_MASKS.items()}
        seeing = _seeing_text(red)
        show_image(left, result.image, f"{red.raw.filename}\nsky {red.background:.1f} +- {red.background_rms:.1f} "
                                       f"ADU, seeing {seeing}", masks=masks)
        top = float(np.percentile(result.weight, 99.9)) or 1.0
        shown = right.imshow(result.weight, origin="lower", cmap="gray", vmin=0.0, vmax=top, interpolation="nearest")
        fig.colorbar(shown, ax=right, fraction=0.05)
        right.set_title(f"weight map ({100 * float(np.mean(result.weight == 0)):.3f} % at 0)")
        save_figure(fig, path)
        return fig


# ============================================================================ satellites across the mosaic
@dataclass(frozen=True)
class ChipProducts:
    """One chip of an exposure after ReduceTask: the raw frame, its reduced frame, satellite map and weight."""

    raw: RawFrame
    red: ReducedScienceFrame
    sat: SatelliteMap
    weight: WeightFrame


def follow_satellites(task: Task, chips: list[ChipProducts]) -> list[tuple[DBObject, Path | None]]:
    """The mosaic satellite pass over reduced chips: new satellite maps and weights where tracks were followed.

    The chips are grouped by exposure (their raw MEF file); on every exposure
    with two chips or more, :func:`awe.image.satellites.follow_tracks` follows
    each track found on one chip onto the others through the reduced frames'
    header WCS (``DETECTION_THRESHOLD`` and ``HOUGH_THRESHOLD`` of
    ``task``'s SatelliteMap parameters). A chip on which a track is found
    this way gets a new :class:`SatelliteMap` (``previous`` = its map,
    ``followed_from`` = the maps the tracks came from; the old tracks and the
    followed ones) and a new :class:`WeightFrame` (``previous`` = its
    weight; 0 on the new track pixels when ``USE_SATELLITE_MASK``, flag bit
    16). Committed products never change: the new ones supersede them in
    ``red.satellites`` and ``red.weight`` (and in ReduceTask's reuse). An
    identical update made before is reused. Works on committed products and
    on those of the working folder alike; returns ``[(product, file), ...]``
    for the task to commit.
    """
    exposures: dict[str, list[ChipProducts]] = {}
    for chip in chips:
        exposures.setdefault(_exposure_key(chip.raw), []).append(chip)
    made: list[tuple[DBObject, Path | None]] = []
    for key, group in exposures.items():
        if len({c.raw.chip.name for c in group}) < 2:
            continue
        if len({c.raw.chip.name for c in group}) < len(group):
            task.log.warning("exposure %s: several reductions of one chip given; the mosaic satellite pass uses "
                             "the last of each", key)
            group = list({c.raw.chip.name: c for c in group}.values())
        made += _follow_exposure(task, key, group)
    return made


def _exposure_key(raw: RawFrame) -> str:
    if raw.raw_file:
        return str(raw.raw_file)
    return f"{raw.instrument.name} {raw.DATE_OBS.isoformat() if raw.DATE_OBS else raw.filename}"


def _follow_exposure(task: Task, key: str, group: list[ChipProducts]) -> list[tuple[DBObject, Path | None]]:
    sat_params = task.params(SatelliteMap)
    sat_groups = task.pars.get().get("SatelliteMap", {})
    weight_groups = task.pars.get().get("WeightFrame", {})
    mosaic: list[MosaicChip] = []
    targets: dict[str, ChipProducts] = {}
    for chip in group:
        name = chip.raw.chip.name
        wcs = header_wcs(read_header(chip.red.local_path()), chip.red.filename)
        if wcs is None:
            task.log.warning("%s has no WCS: the mosaic satellite pass leaves chip %s out", chip.red.filename, name)
            continue
        weight = chip.weight.load()
        flags = chip.weight.flags()
        ignore = (weight == 0) & ((flags & np.uint8(SATELLITE)) == 0)
        tracks = tuple(_track_of(t) for t in (chip.sat.tracks or []))
        mosaic.append(MosaicChip(name, chip.red.load(), wcs, ignore, tracks, _binning(chip.raw)))
        if chip.sat.process_params != sat_groups or chip.weight.process_params != weight_groups:
            task.log.warning("%s: its satellite map or weight was made with other parameters than this task's "
                             "(%s, %s); tracks are followed from it but not onto it: run with the parameters of "
                             "the reduction (pars=...)", chip.red.filename, chip.sat.process_params,
                             chip.weight.process_params)
        else:
            targets[name] = chip
    if len(mosaic) < 2:
        return []
    task.log.info("exposure %s: following satellite tracks across %d chips", key, len(mosaic))
    results = follow_tracks(mosaic, sat_params.DETECTION_THRESHOLD, sat_params.HOUGH_THRESHOLD)
    by_name = {c.raw.chip.name: c for c in group}
    made: list[tuple[DBObject, Path | None]] = []
    for name, result in results.items():
        target = targets.get(name)
        if target is None or not result.tracks:
            continue
        old_mask = target.sat.mask()
        extra = result.mask & ~old_mask
        if not extra.any():
            continue
        sources = sorted({s for followed in result.tracks for s in followed.sources})
        sat = task.new_product(SatelliteMap, {"reduced": target.red, "previous": target.sat,
                                              "followed_from": [by_name[s].sat for s in sources]},
                               template=target.red, category="Sci", step="Sat", maker=FollowSatellitesTask)
        weight = task.new_product(WeightFrame, {"reduced": target.red, "flat": target.weight.flat,
                                                "hot_pixels": target.weight.hot_pixels,
                                                "cold_pixels": target.weight.cold_pixels, "satellites": sat,
                                                "previous": target.weight},
                                  template=target.red, category="Sci", step="Weight", maker=FollowSatellitesTask)
        found_sat, found_weight = task.existing(sat), task.existing(weight)
        if found_sat is not None and found_weight is not None:
            made += [(found_sat, None), (found_weight, None)]
            continue
        mask = old_mask | result.mask
        followed = [dict(_track_dict(f.track, mask.shape), followed_from=list(f.sources)) for f in result.tracks]
        sat.tracks = list(target.sat.tracks or []) + followed
        sat.n_tracks = len(sat.tracks)
        sat.n_followed_tracks = (target.sat.n_followed_tracks or 0) + len(followed)
        sat.n_track_pixels = int(mask.sum())
        flags = target.weight.flags() | (extra * np.uint8(SATELLITE)).astype(np.uint8)
        pixels = target.weight.load()
        if task.params(WeightFrame).USE_SATELLITE_MASK:
            pixels = np.where(extra, np.float32(0.0), pixels).astype(np.float32)
        zero = int(np.count_nonzero(pixels == 0))
        weight.n_zero_weight, weight.zero_weight_fraction = zero, zero / pixels.size
        sat_path = _write_update(task, sat, target.sat, mask.astype(np.uint8), np.uint8,
                                 {"NTRACKS": (sat.n_tracks, "satellite tracks (mask value 1)"),
                                  "NFOLLOWD": (sat.n_followed_tracks, "tracks followed from other chips")})
        weight_path = _write_update(task, weight, target.weight, pixels, np.float32,
                                    {"NZEROWT": (zero, "pixels with weight 0")}, hdus={"FLAGS": flags})
        task.log.info("%s: %d satellite track(s) followed from %s, %d more pixels masked: new %s and %s",
                      target.red.filename, len(followed), ", ".join(sources), int(extra.sum()), sat.filename,
                      weight.filename)
        made += [(sat, sat_path), (weight, weight_path)]
    return made


#: structural FITS keywords not copied from an old product's header to its update
_STRUCTURAL = frozenset({"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "PCOUNT",
                         "GCOUNT", "XTENSION", "EXTNAME", "CHECKSUM", "DATASUM"})


def _write_update(task: Task, obj: BaseFrame, old: BaseFrame, data: np.ndarray, dtype: Any,
                  extra: dict[str, Any], hdus: dict[str, np.ndarray] | None = None) -> Path:
    """Write an updated product with the header of the one it updates (its own class, provenance, figures)."""
    header = read_header(old.local_path())
    cards: dict[str, Any] = {k: (header[k], header.comments[k]) for k in header
                             if k not in _STRUCTURAL and k not in ("COMMENT", "HISTORY", "")}
    cards["PREVIOUS"] = old.filename
    cards.update(extra)
    return task.write_product(obj, data, cards, dtype=dtype, hdus=hdus, imstat=imstat(data))


def _track_of(values: Mapping[str, Any]) -> Track:
    return Track(angle=float(values["theta"]), distance=float(values["rho"]), width=float(values["width"]),
                 n_pixels=int(values.get("n_pixels", 0)), length=float(values.get("length", 0.0)),
                 peak=float(values.get("peak", 0.0)))


def _binning(raw: RawFrame) -> float:
    """Detector pixels per pixel of a raw chip frame (8 for a chip shrunk 8 times)."""
    header = read_header(raw.local_path())
    geometry = raw_geometry(raw, header)
    return get_instrument(raw.instrument.name).chip(raw.chip.name).nx / geometry.nx


def _latest_version(obj: DBObject) -> DBObject:
    """The newest valid update of ``obj`` (through ``previous`` links, as the mosaic pass makes them), or ``obj``."""
    cls = type(obj)
    if "previous" not in cls._inputs or obj.object_id is None:
        return obj
    for _ in range(100):
        newer = ((cls.previous.object_id == obj.object_id) & (cls.quality_flags == 0)
                 & (cls.is_valid != 0)).max("creation_date")
        if newer is None:
            return obj
        obj = newer
    return obj


class FollowSatellitesTask(Task):
    """Follow satellite tracks across the chips of exposures reduced chip by chip.

    ``FollowSatellitesTask(instrument='WFI', object='3C*', commit=1)`` or
    ``FollowSatellitesTask(raw_filenames=['WFI.2003-03-04T04:53:26.208_1.fits', ...], commit=1)``
    (also ``date=``, ``filter=``, ``chip=``). Takes the reduced frame of each
    selected raw chip frame (the newest valid one) with its current satellite
    map and weight, groups them by exposure and runs the mosaic pass
    (:func:`follow_satellites`) on every exposure of two chips or more.
    ReduceTask runs the same pass by itself when it reduces several chips of
    an exposure in one ``execute()``; this task is for chips reduced
    separately (one task per chip, or in parallel). Makes a new SatelliteMap
    and WeightFrame for each chip where a track of another chip is found.
    """

    products = (SatelliteMap, WeightFrame)
    registers = False  # it makes updates of ReduceTask's products
    inputs = (Input(ReducedScienceFrame, "reduced", kind="product"), Input(SatelliteMap, "previous", kind="product"),
              Input(WeightFrame, "previous", kind="product"))
    unit = "per_exposure"
    algorithm_modules = ("awe.image.satellites", "awe.image.stats", "awe.tasks.base", "awe.tasks.reduce")
    selection = dict(ReduceTask.selection,
                     raw_filenames="raw chip files whose reduced frames to take "
                                   "(['WFI.2003-03-04T04:53:26.208_1.fits'])")

    def _raw_frames(self) -> list[RawFrame]:
        return _raw_frames(self)

    def unit_selections(self) -> list[dict[str, Any]]:
        """One unit per exposure with two reduced chips or more."""
        exposures: dict[str, list[str]] = {}
        for chip in self._reduced_chips():
            exposures.setdefault(_exposure_key(chip.raw), []).append(chip.raw.filename)
        return [dict(self.selection_values, raw_filenames=names) for names in exposures.values() if len(names) > 1]

    def _reduced_chips(self) -> list[ChipProducts]:
        chips: list[ChipProducts] = []
        missing = []
        for raw in self._raw_frames():
            red = (ReducedScienceFrame.select(raw_filenames=[raw.filename])).max("creation_date")
            sat = red.satellites if red is not None else None
            weight = red.weight if red is not None else None
            if red is None or sat is None or weight is None:
                missing.append(raw.filename)
                continue
            chips.append(ChipProducts(raw, red, sat, weight))
        if missing:
            self.log.warning("not reduced (no valid ReducedScienceFrame with its SatelliteMap and WeightFrame), left "
                             "out: %s; reduce them first: ReduceTask(raw_filenames=[...], commit=1)", missing)
        if not chips:
            raise TaskError(f"FollowSatellitesTask: none of the selected frames is reduced ({len(missing)} selected); "
                            "reduce them first: ReduceTask(raw_filenames=[...], commit=1)")
        return chips

    def make(self) -> list[tuple[DBObject, Path | None]]:
        made = follow_satellites(self, self._reduced_chips())
        if not made:
            self.log.info("no satellite track to follow onto another chip")
        return made


# ============================================================================ raw frame selection
def _raw_frames(task: Task) -> list[RawFrame]:
    """The raw science frames a task's selection keywords name (ReduceTask's and FollowSatellitesTask's)."""
    names = as_list(task.raw_filenames)
    if names:
        frames = _raws_by_name(task, names)
    else:
        if task.instrument is None:
            name = type(task).__name__
            raise TypeError(f"{name} needs raw_filenames= or instrument= (with chip=, object=, filter=, "
                            f"date= to narrow the selection); see help({name})")
        query = RawScienceFrame.select(instrument=task.instrument, chip=task.chip, filter=task.filter,
                                       date=task.date, object=task.object)
        frames = list(query)
        if not frames:
            asked = {k: v for k, v in task.selection_values.items() if v is not None}
            raise TaskError(f"{type(task).__name__}: no valid raw science frame matches {asked}; check what "
                            "there is with RawScienceFrame.select(...) (flagged frames are left out), or ingest "
                            "the raw files first (awe ingest FILES)")
    return sorted(frames, key=lambda f: (f.DATE_OBS or _dt.datetime.min, f.filename))


def _raws_by_name(task: Task, names: list[str]) -> list[RawFrame]:
    found = {f.filename: f for f in RawFrame.filename.in_(names)}
    problems = []
    for name in names:
        frame = found.get(name)
        if frame is None:
            others = list(DBObject.filename == name)
            problems.append(f"{name} is a {type(others[0]).__name__}, not a raw frame" if others else
                            f"{name} is not in the database (ingest it first: awe ingest FILE)")
        elif not isinstance(frame, RawScienceFrame):
            problems.append(f"{name} is a {type(frame).__name__}: {type(task).__name__} takes raw science "
                            "and standard-field frames")
        elif frame.quality_flags or frame.is_valid == 0:
            problems.append(f"{name} is flagged bad (quality_flags={frame.quality_flags}, "
                            f"is_valid={frame.is_valid}); set quality_flags=0 and is_valid=1 if you trust it")
        else:
            for key in ("instrument", "chip", "filter"):
                want, have = task.selection_values.get(key), getattr(frame, key)
                if want is not None and (have is None or want not in (have.name, getattr(have, "eso_name", None))):
                    problems.append(f"{name} is of {key} {getattr(have, 'name', None)!r}, not {want!r}")
    if problems:
        raise TaskError(f"{type(task).__name__} cannot use raw_filenames: " + "; ".join(problems))
    return [found[n] for n in dict.fromkeys(names)]


# ============================================================================ helpers
def _seeing_text(red: ReducedScienceFrame) -> str:
    """``1.37" +- 0.02" (9 stars)``, with ``unreliable`` when it is, or ``not measured``."""
    if red.seeing is None:
        return "not measured"
    error = f' +- {red.seeing_error:.2f}"' if red.seeing_error is not None else ""
    flag = ", unreliable" if red.seeing_reliable is False else ""
    return f'{red.seeing:.2f}"{error} ({red.n_stars_seeing} stars{flag})'


def _setup(raw: RawFrame, header: fits.Header, geometry: RawGeometry, p: ParamGroup) -> FrameSetup:
    instrument = get_instrument(raw.instrument.name)
    chip = instrument.chip(raw.chip.name)
    binning = chip.nx / geometry.nx
    read_noise = p.READ_NOISE or _header_float(header, "HIERARCH ESO DET OUT1 RON") or chip.read_noise_e
    scale = _pixel_scale(header) or instrument.pixel_scale * binning
    return FrameSetup(gain=float(raw.gain or chip.gain), read_noise=float(read_noise), pixel_scale=scale,
                      binning=binning, saturation=float(p.SATURATION_LEVEL or instrument.saturation))


def _header_float(header: fits.Header, key: str) -> float | None:
    try:
        value = header[key]
    except KeyError:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pixel_scale(header: fits.Header) -> float | None:
    """arcsec per pixel from the CD matrix, or None."""
    values = [_header_float(header, k) for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")]
    cd = [v for v in values if v is not None]
    if len(cd) < len(values):
        return None
    det = abs(cd[0] * cd[3] - cd[1] * cd[2])
    return math.sqrt(det) * 3600.0 if det > 0 else None


def _header_cards(raw: RawFrame, header: fits.Header, geometry: RawGeometry, setup: FrameSetup) -> dict[str, Any]:
    """Header cards every product of a frame shares: observation, chip, WCS moved to the trimmed grid."""
    cards: dict[str, Any] = {
        "OBJECT": (raw.OBJECT or "", "target"),
        "INSTRUME": (raw.instrument.name, "instrument"),
        "CHIPID": (raw.chip.name, "chip"),
        "FILTER": (raw.filter.name if raw.filter else "", "filter (Astro-WISE id)"),
        "DATE-OBS": (raw.DATE_OBS.isoformat() if raw.DATE_OBS else "", "start of the exposure (UTC)"),
        "MJD-OBS": (raw.MJD_OBS if raw.MJD_OBS is not None else 0.0, "MJD of the start of the exposure"),
        "EXPTIME": (raw.EXPTIME if raw.EXPTIME is not None else 0.0, "exposure time [s]"),
        "AIRMASS": (raw.AIRMASS if raw.AIRMASS is not None else 0.0, "airmass at the start"),
        "GAIN": (setup.gain, "[e-/ADU]"),
        "RDNOISE": (setup.read_noise, "read noise [e-]"),
        "RAWFILE": raw.filename,
        "TRIMSEC": (geometry.trimsec, "trim section of the raw frame"),
        "BUNIT": ("ADU", ""),
    }
    cards.update(trimmed_wcs_cards(header, geometry.trim, raw.filename))
    return cards


def header_wcs(header: fits.Header, source: str = "") -> WCS | None:
    """The celestial WCS of a FITS header (astropy's ``WCS(header)``), or None when it has none.

    wcslib's routine fixes of the header (e.g. ``RADECSYS``) are logged at
    DEBUG; a WCS that cannot be parsed is logged as a WARNING naming
    ``source`` and gives None.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wcs = WCS(header)
        except (ValueError, KeyError) as exc:  # wcslib's errors are ValueErrors
            log.warning("%s: the header's WCS cannot be read (%s); the products carry no WCS: fix the WCS "
                        "keywords of the raw file if the frames are to be regridded", source or "frame", exc)
            return None
    for warning in caught:
        log.debug("%s: WCS header: %s", source or "frame", warning.message)
    if not wcs.has_celestial or wcs.naxis != 2:
        log.info("%s: no celestial WCS in the header", source or "frame")
        return None
    return wcs


def trimmed_wcs(header: fits.Header, trim: tuple[slice, slice], source: str = "") -> WCS | None:
    """The celestial WCS of a raw header moved onto the trimmed grid, or None when it has none.

    The header is read by astropy (:func:`header_wcs`), so every convention
    it knows is carried through the trim: CD or PC/CDELT matrices, SIP
    distortion (``A_p_q``, ``B_p_q``, ``AP``/``BP``), TPV and other ``PVi_j``
    terms. ``trim`` is the trimmed area as (rows, columns) slices of the raw
    array; the result maps 0-based trimmed pixels as the raw WCS maps the same
    physical pixels. Without a usable WCS the frame is reduced without one.
    """
    wcs = header_wcs(header, source)
    return wcs.slice(trim) if wcs is not None else None


def trimmed_wcs_cards(header: fits.Header, trim: tuple[slice, slice], source: str = "") -> dict[str, Any]:
    """Header cards of :func:`trimmed_wcs` (key -> (value, comment)); empty when the header has no WCS.

    Written by astropy (``to_header(relax=True)``, so SIP and PV terms
    survive); a raw header with a CD matrix keeps one (``CDi_j``, as ESO and
    Astro-WISE write it) instead of astropy's PC and CDELT.
    """
    wcs = trimmed_wcs(header, trim, source)
    if wcs is None:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        out = wcs.to_header(relax=True)
    cards = {key: (out[key], out.comments[key]) for key in out if key not in _WCS_TIME_KEYS}
    if any(key.startswith("CD") and key[2:3].isdigit() for key in header):
        cd = wcs.pixel_scale_matrix
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
            cards.pop(key, None)
        for i in range(2):
            for j in range(2):
                cards[f"CD{i + 1}_{j + 1}"] = (float(cd[i, j]), "Coordinate transformation matrix element")
    for key in ("CRPIX1", "CRPIX2"):
        if key in cards:
            cards[key] = (cards[key][0], "reference pixel on the trimmed grid")
    return cards


def _track_dict(track: Any, shape: tuple[int, int]) -> dict[str, float]:
    """A track's parameters with the end points where its line crosses the image border."""
    values = {"rho": float(track.distance), "theta": float(track.angle), "width": float(track.width),
              "length": float(track.length), "peak": float(track.peak), "n_pixels": int(track.n_pixels)}
    ends = line_ends(track.angle, track.distance, shape)
    if ends is not None:
        values.update(x0=ends[0], y0=ends[1], x1=ends[2], y1=ends[3])
    return values
