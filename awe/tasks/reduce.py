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
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits
from scipy import ndimage as ndi

from awe.db.query import night_of
from awe.db.schema import DBObject, ImStat
from awe.image.background import BackgroundResult, SeeingResult, TooFewStarsError, measure_background, \
    measure_seeing
from awe.image.cosmics import find_cosmics
from awe.image.overscan import OverscanCorrector
from awe.image.satellites import SatelliteResult, find_satellite_tracks
from awe.image.stats import imstat
from awe.image.weights import COLD, COSMIC, HOT, SATELLITE, SATURATED, combine_masks, saturation_mask, weight_map
from awe.instruments import RawGeometry, get_instrument
from awe.model._io import read_header, read_image, write_image
from awe.model.calibration import BiasFrame, ColdPixelMap, HotPixelMap, MasterFlatFrame
from awe.model.frames import BaseFrame, RawFrame, RawScienceFrame
from awe.model.science import (IlluminationCorrection, ReducedScienceFrame, ReducedScienceParams, SatelliteMap,
                               SatelliteParams, WeightFrame, WeightParams)
from awe.tasks.base import MissingCalibrationError, Task, TaskError, as_list, select_calibration
from awe.tasks.calibration import raw_geometry

__all__ = ["ReduceTask", "CalibrationImages", "Reduction", "calibrate_frame", "analyse_frame", "FrameSetup"]

log = logging.getLogger(__name__)

#: WCS keywords carried from the raw header to the products (CRPIX moved to the trimmed grid).
_WCS_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
             "CD2_1", "CD2_2", "EQUINOX", "RADESYS")


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
                  params: ReducedScienceParams, weight_params: WeightParams,
                  satellite_params: SatelliteParams) -> Reduction:
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
        ``ReducedScienceFrame``, ``WeightFrame`` and ``SatelliteMap`` process parameters.

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
    seeing = _seeing(image, bad, setup, level, params)
    if seeing is not None:
        psf_fwhm, psf_beta = seeing.fwhm_pixels, seeing.beta
    else:
        psf_fwhm, psf_beta = params.ASSUMED_SEEING / setup.pixel_scale, 3.0
        log.info("the cosmic-ray star check assumes a seeing of %.2f\" (%.2f pixels)", params.ASSUMED_SEEING,
                 psf_fwhm)
    cosmics = find_cosmics(image, gain=setup.gain, read_noise=setup.read_noise, sat_level=level,
                           sigclip=params.COSMIC_SIGCLIP, sigfrac=params.COSMIC_SIGFRAC,
                           objlim=params.COSMIC_OBJLIM or None, mask=bad, niter=params.COSMIC_NITER,
                           psf_fwhm=psf_fwhm, psf_beta=psf_beta)
    if params.COSMIC_GROW > 0 and cosmics.any():
        cosmics = ndi.binary_dilation(cosmics, structure=np.ones((3, 3), bool), iterations=params.COSMIC_GROW)
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
            params: ReducedScienceParams) -> SeeingResult | None:
    """The seeing from stars above SEEING_DETECT_THRESHOLD sigma, or, if too few, above half of it."""
    threshold = params.SEEING_DETECT_THRESHOLD
    for attempt in (threshold, threshold / 2):
        try:
            return measure_seeing(image, mask=bad, pixel_scale=setup.pixel_scale, saturation=level,
                                  detect_threshold=attempt, box=params.BACKGROUND_MESH)
        except TooFewStarsError as exc:
            log.info("seeing not measured from stars above %g sigma: %s", attempt, exc)
    log.warning("seeing not measured: too few stars, even above %g sigma", threshold / 2)
    return None


# ============================================================================ the task
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
    selection = {
        "raw_filenames": "raw chip files to reduce (['WFI.2003-03-04T04:42:29.496_1.fits'])",
        "instrument": "instrument name ('WFI')",
        "chip": "chip name ('ccd50'); all chips when not given",
        "filter": "filter ('#844' or the ESO name)",
        "date": "observing night ('2003-03-03': from local noon that day to local noon the next)",
        "object": "OBJECT of the raw frames, wildcards allowed ('3C*')",
    }
    shortcuts = {"overscan": ("ReducedScienceFrame", "process_params", "OVERSCAN_CORRECTION")}

    def make(self) -> list[tuple[DBObject, Path | None]]:
        raws = self._raw_frames()
        self.log.info("reducing %d raw frame(s): %s", len(raws), [r.filename for r in raws])
        made: list[tuple[DBObject, Path | None]] = []
        for raw in raws:
            made += self._reduce(raw)
        return made

    # ------------------------------------------------------------ selection
    def _raw_frames(self) -> list[RawFrame]:
        names = as_list(self.raw_filenames)
        if names:
            frames = self._raws_by_name(names)
        else:
            if self.instrument is None:
                raise TypeError("ReduceTask needs raw_filenames= or instrument= (with chip=, object=, filter=, "
                                "date= to narrow the selection); see help(ReduceTask)")
            query = RawScienceFrame.select(instrument=self.instrument, chip=self.chip, filter=self.filter,
                                           date=self.date, object=self.object)
            frames = list(query)
            if not frames:
                asked = {k: v for k, v in self.selection_values.items() if v is not None}
                raise TaskError(f"ReduceTask: no valid raw science frame matches {asked}; check what there is "
                                "with RawScienceFrame.select(...) (flagged frames are left out), or ingest the "
                                "raw files first (awe ingest FILES)")
        return sorted(frames, key=lambda f: (f.DATE_OBS or _dt.datetime.min, f.filename))

    def _raws_by_name(self, names: list[str]) -> list[RawFrame]:
        found = {f.filename: f for f in RawFrame.filename.in_(names)}
        problems = []
        for name in names:
            frame = found.get(name)
            if frame is None:
                others = list(DBObject.filename == name)
                problems.append(f"{name} is a {type(others[0]).__name__}, not a raw frame" if others else
                                f"{name} is not in the database (ingest it first: awe ingest FILE)")
            elif not isinstance(frame, RawScienceFrame):
                problems.append(f"{name} is a {type(frame).__name__}: ReduceTask reduces raw science and "
                                "standard-field frames")
            elif frame.quality_flags or frame.is_valid == 0:
                problems.append(f"{name} is flagged bad (quality_flags={frame.quality_flags}, "
                                f"is_valid={frame.is_valid}); set quality_flags=0 and is_valid=1 if you trust it")
            else:
                for key in ("instrument", "chip", "filter"):
                    want, have = self.selection_values.get(key), getattr(frame, key)
                    if want is not None and (have is None or want not in (have.name, getattr(have, "eso_name", None))):
                        problems.append(f"{name} is of {key} {getattr(have, 'name', None)!r}, not {want!r}")
        if problems:
            raise TaskError("ReduceTask cannot use raw_filenames: " + "; ".join(problems))
        return [found[n] for n in dict.fromkeys(names)]

    # ------------------------------------------------------------ calibrations
    def _calibrations(self, raw: RawFrame, overscan: int) -> dict[str, DBObject | None]:
        """The calibration products for ``raw`` by input role (``illumination`` may be None)."""
        def bias_check(bias: BiasFrame) -> str | None:
            if bias.overscan_correction == overscan:
                return None
            return (f"made with OVERSCAN_CORRECTION={bias.overscan_correction} but this reduction uses {overscan}: "
                    "a master bias is only subtracted from frames overscan-corrected the same way; make one with "
                    f"BiasTask(..., overscan={overscan}) or reduce with overscan={bias.overscan_correction}")

        found: dict[str, DBObject | None] = {
            "bias": self._calibration(BiasFrame, raw, check=bias_check, overscan=overscan),
            "flat": self._calibration(MasterFlatFrame, raw, filter=True),
            "hot_pixels": self._calibration(HotPixelMap, raw),
            "cold_pixels": self._calibration(ColdPixelMap, raw, filter=True),
        }
        try:
            found["illumination"] = select_calibration(IlluminationCorrection, raw, self.log, filter=True)
        except MissingCalibrationError:
            self.log.info("%s is not illumination-corrected: no valid IlluminationCorrection for %s %s %s "
                          "(it is made from reduced standard fields by the photometric calibration)",
                          raw.filename, raw.instrument.name, raw.chip.name, raw.filter.name if raw.filter else "")
            found["illumination"] = None
        return found

    def _calibration(self, cls: type, raw: RawFrame, filter: bool = False, check: Any = None,
                     **extra: Any) -> DBObject:
        try:
            return select_calibration(cls, raw, self.log, filter=filter, check=check)
        except MissingCalibrationError as exc:
            raise MissingCalibrationError(f"{exc}; for {raw.filename}: run {_maker_call(cls, raw, filter, extra)}") \
                from None

    # ------------------------------------------------------------ one frame
    def _reduce(self, raw: RawFrame) -> list[tuple[DBObject, Path | None]]:
        p = self.params(ReducedScienceFrame)
        cal = self._calibrations(raw, p.OVERSCAN_CORRECTION)
        red = self.new_product(ReducedScienceFrame, {"raw": raw, **cal}, template=raw, category="Sci", step="Red",
                               overscan_correction=p.OVERSCAN_CORRECTION)
        reused = self._reuse(red, cal)
        if reused:
            return reused

        path = raw.local_path()
        header = read_header(path)
        geometry = raw_geometry(raw, header)
        pixels = read_image(path)
        images = CalibrationImages(
            bias=cal["bias"].load(), flat=cal["flat"].load(), hot=cal["hot_pixels"].mask(),
            cold=cal["cold_pixels"].mask(),
            illumination=cal["illumination"].correction() if cal["illumination"] is not None else None)
        roles = {"bias": "bias", "flat": "flat", "hot": "hot_pixels", "cold": "cold_pixels",
                 "illumination": "illumination"}
        images.check(geometry.trim_shape, {k: cal[r].filename for k, r in roles.items() if cal[r] is not None})
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
        cards.update({"BIASFILE": cal["bias"].filename, "FLATFILE": cal["flat"].filename,
                      "ILLUMFIL": cal["illumination"].filename if cal["illumination"] else ""})
        made = [(red, self._write(red, result.image, cards, {
                     "OVSCCORR": (p.OVERSCAN_CORRECTION, "OVERSCAN_CORRECTION method"),
                     "SKYLEVEL": (result.background.level, "median sky background [ADU]"),
                     "SKYRMS": (result.background.rms, "sky noise [ADU]"),
                     "SEEING": (red.seeing if red.seeing is not None else -1.0, "FWHM [arcsec], -1: not measured")})),
                (sat, self._write(sat, result.satellites.mask.astype(np.uint8), cards,
                                  {"NTRACKS": (sat.n_tracks, "satellite tracks (mask value 1)")}, dtype=np.uint8)),
                (weight, self._write(weight, result.weight, cards,
                                     {"NZEROWT": (zero, "pixels with weight 0")}, hdus={"FLAGS": result.flags}))]
        if self.inspect:
            self._figure(red, result)
        return made

    def _satellite_map(self, red: ReducedScienceFrame) -> SatelliteMap:
        return self.new_product(SatelliteMap, {"reduced": red}, template=red, category="Sci", step="Sat")

    def _weight_frame(self, red: ReducedScienceFrame, sat: SatelliteMap,
                      cal: dict[str, DBObject | None]) -> WeightFrame:
        inputs = {"reduced": red, "flat": cal["flat"], "hot_pixels": cal["hot_pixels"],
                  "cold_pixels": cal["cold_pixels"], "satellites": sat}
        return self.new_product(WeightFrame, inputs, template=red, category="Sci", step="Weight")

    def _reuse(self, red: ReducedScienceFrame, cal: dict[str, DBObject | None]) -> list | None:
        """The committed products identical to what this run would make, when all three exist.

        A reduced frame is reused only with its satellite map and weight: new
        satellite or weight parameters make all three again (the reduced
        frame counts the tracks found).
        """
        found_red = self.existing(red)
        sat = self.existing(self._satellite_map(found_red)) if found_red is not None else None
        weight = self.existing(self._weight_frame(found_red, sat, cal)) if sat is not None else None
        if weight is None:
            return None
        return [(found_red, None), (sat, None), (weight, None)]

    def _record(self, red: ReducedScienceFrame, result: Reduction, setup: FrameSetup) -> None:
        red.NAXIS2, red.NAXIS1 = (int(n) for n in result.image.shape)
        red.imstat = _stored_imstat(result.imstat)
        red.gain, red.read_noise = setup.gain, setup.read_noise
        red.background, red.background_rms = result.background.level, result.background.rms
        if result.seeing is not None:
            red.seeing, red.psf_radius = result.seeing.fwhm_arcsec, result.seeing.psf_radius
            red.n_stars_seeing = result.seeing.n_stars
        red.n_cosmic_pixels = int(result.cosmics.sum())
        red.n_satellite_tracks = len(result.satellites.tracks)
        red.n_saturated_pixels = int(result.saturated.sum())
        self.log.info("%s: sky %.2f +- %.2f ADU, seeing %s, %d cosmic-ray pixels, %d satellite track(s), "
                      "%d saturated pixels", red.raw.filename, red.background, red.background_rms,
                      f'{red.seeing:.2f}"' if red.seeing is not None else "not measured", red.n_cosmic_pixels,
                      red.n_satellite_tracks, red.n_saturated_pixels)

    @staticmethod
    def _record_tracks(sat: SatelliteMap, result: SatelliteResult) -> None:
        sat.NAXIS2, sat.NAXIS1 = (int(n) for n in result.mask.shape)
        sat.n_tracks = len(result.tracks)
        sat.n_track_pixels = int(result.mask.sum())
        sat.tracks = [_track_dict(t, result.mask.shape) for t in result.tracks]

    def _write(self, obj: BaseFrame, data: np.ndarray, common: dict[str, Any], extra: dict[str, Any],
               dtype: Any = np.float32, hdus: dict[str, np.ndarray] | None = None) -> Path:
        if obj.imstat is None:
            obj.imstat = _stored_imstat(imstat(data))
        obj.NAXIS2, obj.NAXIS1 = (int(n) for n in data.shape)
        cards = dict(common)
        cards.update({"AWECLASS": (type(obj).__name__, "awe product class"),
                      "PROVHASH": (obj.provenance, "awe provenance hash")})
        cards.update(extra)
        path = self.output_path(obj)
        write_image(path, data, cards, extra=hdus, dtype=dtype)
        self.log.info("%s written to %s", type(obj).__name__, path)
        return path

    def _figure(self, red: ReducedScienceFrame, result: Reduction) -> None:
        from awe.image.inspect import new_figure, save_figure, show_image

        fig, (left, right) = new_figure(ncols=2, size=(11.0, 9.0))
        masks = {name: (result.flags & np.uint8(bits)) > 0 for name, bits in _FIGURE_MASKS.items()}
        seeing = f'{red.seeing:.2f}"' if red.seeing is not None else "not measured"
        show_image(left, result.image, f"{red.raw.filename}\nsky {red.background:.1f} +- {red.background_rms:.1f} "
                                       f"ADU, seeing {seeing}", masks=masks)
        top = float(np.percentile(result.weight, 99.9)) or 1.0
        shown = right.imshow(result.weight, origin="lower", cmap="gray", vmin=0.0, vmax=top, interpolation="nearest")
        fig.colorbar(shown, ax=right, fraction=0.05)
        right.set_title(f"weight map ({100 * float(np.mean(result.weight == 0)):.3f} % at 0)")
        path = self.figure_path(red, "masks")
        save_figure(fig, path)
        self.log.info("figure of %s with its masks and weight map saved as %s", red.raw.filename, path)


# ============================================================================ helpers
def _setup(raw: RawFrame, header: fits.Header, geometry: RawGeometry, p: ReducedScienceParams) -> FrameSetup:
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
    cd = [_header_float(header, k) for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")]
    if any(v is None for v in cd):
        return None
    det = abs(cd[0] * cd[3] - cd[1] * cd[2])
    return math.sqrt(det) * 3600.0 if det > 0 else None


def _header_cards(raw: RawFrame, header: fits.Header, geometry: RawGeometry, setup: FrameSetup) -> dict[str, Any]:
    """Header cards every product of a frame shares: observation, chip, WCS moved to the trimmed grid."""
    x0, _, y0, _ = geometry.trim_box
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
    for key in _WCS_KEYS:
        if key in header:
            cards[key] = (header[key], header.comments[key])
    for key, offset in (("CRPIX1", x0 - 1), ("CRPIX2", y0 - 1)):
        if key in cards:
            cards[key] = (float(cards[key][0]) - offset, "reference pixel on the trimmed grid")
    return cards


def _track_dict(track: Any, shape: tuple[int, int]) -> dict[str, float]:
    """A track's parameters with the end points where its line crosses the image border."""
    values = {"rho": float(track.distance), "theta": float(track.angle), "width": float(track.width),
              "length": float(track.length), "peak": float(track.peak), "n_pixels": int(track.n_pixels)}
    ends = _line_ends(track.angle, track.distance, shape)
    if ends is not None:
        values.update(x0=ends[0], y0=ends[1], x1=ends[2], y1=ends[3])
    return values


def _line_ends(angle: float, distance: float, shape: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Where ``x cos(angle) + y sin(angle) = distance`` enters and leaves the image (0-based pixels)."""
    ny, nx = shape
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    points = []
    if abs(s) > 1e-12:
        for x in (-0.5, nx - 0.5):
            y = (distance - x * c) / s
            if -0.5 <= y <= ny - 0.5:
                points.append((x, y))
    if abs(c) > 1e-12:
        for y in (-0.5, ny - 0.5):
            x = (distance - y * s) / c
            if -0.5 <= x <= nx - 0.5:
                points.append((x, y))
    if len(points) < 2:
        return None
    points.sort()
    (xa, ya), (xb, yb) = points[0], points[-1]
    return float(xa), float(ya), float(xb), float(yb)


def _stored_imstat(stat: Any) -> ImStat:
    """``imstat`` for the database: NaN (no usable pixel) stored as NULL."""
    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None
    return ImStat(**{k: finite(getattr(stat, k)) for k in ("mean", "median", "stdev", "min", "max")})


def _maker_call(cls: type, raw: RawFrame, use_filter: bool, extra: Mapping[str, Any]) -> str:
    """The task call that makes a calibration of type ``cls`` valid for ``raw``, e.g.
    ``MasterFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1)``."""
    maker = _maker_of(cls)
    name = maker.__name__ if maker is not None else f"{cls.__name__.replace('Frame', '')}Task"
    accepted = set(maker.selection) | set(maker.shortcuts) if maker is not None else None
    keywords: dict[str, Any] = {"instrument": raw.instrument.name, "chip": raw.chip.name}
    if raw.DATE_OBS is not None and raw.instrument.longitude is not None:
        keywords["date"] = str(night_of(raw.DATE_OBS, raw.instrument.longitude))
    if use_filter and raw.filter is not None:
        keywords["filter"] = raw.filter.name
    keywords.update(extra)
    text = ", ".join(f"{k}={v!r}" for k, v in keywords.items() if accepted is None or k in accepted)
    return f"{name}({text}, commit=1)"


def _maker_of(cls: type) -> type[Task] | None:
    """The task whose products include ``cls``."""
    pending = list(Task.__subclasses__())
    while pending:
        task = pending.pop()
        pending += task.__subclasses__()
        if cls in task.products and len(task.products) == 1:
            return task
    return None
