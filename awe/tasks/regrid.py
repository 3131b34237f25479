"""Regridding (spec section 6: RegridTask).

::

    pars = Pars(RegridTask)
    pars.RegriddedFrame.process_params.BACKGROUND_SUBTRACTION_TYPE = 1
    pars.RegriddedFrame.swarpconf.PIXEL_SCALE = 0.238
    RegridTask(instrument='WFI', chip='ccd50', object='3C*', pars=pars, inspect=1, commit=0).execute()
    RegridTask(red_filenames=[...], commit=1).execute()

One unit per reduced frame: the frame and its weight resampled (:func:`awe.image.regrid.regrid`) through
its best astrometric solution (GAstrometric, else AstrometricParameters; none: an error naming the task
to run) onto its field's :class:`~awe.model.regrid.RegridGrid` (created or found: every job of a field and
pixel scale uses the same grid), its values scaled with its chip's PhotometricParameters, exposure time
and airmass to the field's zero point (``ZEROPOINT``; none: an error naming PhotomTask, or unscaled with
``ALLOW_UNCALIBRATED``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from awe.db.commit import remember_twin
from awe.db.lineage import provenance_hash
from awe.db.schema import DBObject
from awe.model.astrometry import AstrometricParameters
from awe.model.frames import QualityFlags, RawScienceFrame
from awe.model.gastrom import GAstrometric
from awe.model.photometry import PhotometricParameters
from awe.model.regrid import FLAG_SATURATED, RegridGrid, RegriddedFrame
from awe.model.science import ReducedScienceFrame, WeightFrame
from awe.tasks.base import Input, MissingCalibrationError, Task, TaskError
from awe.tasks.gastrom import _reduced_frames

__all__ = ["RegridTask", "field_grid"]

_GRID_VERSION = "RegridGrid:1"


def _mosaic_half_extent(instrument: str) -> tuple[float, float]:
    """Half the width and height [deg] of the instrument's mosaic on the sky about its pointing."""
    from awe.instruments import get_instrument
    spec = get_instrument(instrument)
    xi: list[float] = []
    eta: list[float] = []
    for chip in spec.chips:
        cd = np.asarray(chip.cd, dtype=float)
        x0, y0 = chip.trim[0], chip.trim[2]
        x1, y1 = chip.trim[1], chip.trim[3]
        for x in (x0, x1):
            for y in (y0, y1):
                d = cd @ (np.array([x, y], dtype=float) - np.asarray(chip.crpix, dtype=float))
                xi.append(float(d[0]))
                eta.append(float(d[1]))
    return max(abs(v) for v in xi), max(abs(v) for v in eta)


def field_grid(instrument: str, field: str, pointings: list[tuple[float, float]], scale: float, rounding: float,
               margin: float) -> dict[str, Any]:
    """The grid of a field: tangent point = the mean pointing rounded to ``rounding`` arcsec, size = the
    mosaic's extent plus ``margin`` arcsec on each side, at ``scale`` arcsec per pixel."""
    if not pointings:
        raise TaskError(f"RegridTask: no raw frame of {field!r} gives a pointing for its grid")
    ra = np.radians([p[0] for p in pointings])
    dec = float(np.mean([p[1] for p in pointings]))
    mean_ra = math.degrees(math.atan2(float(np.mean(np.sin(ra))), float(np.mean(np.cos(ra))))) % 360.0
    step = rounding / 3600.0 if rounding > 0 else 1e-9
    ra0 = round(mean_ra / step) * step % 360.0
    dec0 = round(dec / step) * step
    hx, hy = _mosaic_half_extent(instrument)
    nx = 2 * int(math.ceil((hx * 3600.0 + margin) / scale)) + 1
    ny = 2 * int(math.ceil((hy * 3600.0 + margin) / scale)) + 1
    return {"grid_ra": float(ra0), "grid_dec": float(dec0), "pixel_scale": float(scale), "grid_nx": nx,
            "grid_ny": ny}


class RegridTask(Task):
    """Resample reduced frames with their weights onto their field's common grid, on one zero point.

    ``RegridTask(instrument='WFI', chip='ccd50', object='3C*', pars=pars, inspect=1, commit=0|1)`` (also
    ``filter=``, ``date=``, ``red_filenames=[...]``, ``raw_filenames=[...]``): one RegriddedFrame per
    reduced frame (the newest of each raw frame), the sub-image of the grid its chip covers.
    """

    products = (RegriddedFrame,)
    inputs = (Input(ReducedScienceFrame, "reduced", kind="product"), Input(WeightFrame, "weight", kind="product"),
              Input(PhotometricParameters, "photometry", kind="calibration", filter=True),
              Input(RegridGrid, "grid", kind="product"),
              # the solution resampled through: the global one (GAstromTask), the per-chip one where there is none
              Input(GAstrometric, "astrometry", kind="product"),
              Input(AstrometricParameters, "astrometry", kind="product"))
    unit = "per_frame"
    version = "1"
    algorithm_modules = ("awe.image.regrid", "awe.image.background", "awe.tasks.regrid")  # background: psf_radius, sky
    selection = {
        "instrument": "instrument name ('WFI')",
        "chip": "chip name ('ccd50'); all chips when not given",
        "object": "OBJECT of the reduced frames, wildcards allowed ('3C*')",
        "filter": "filter ('#844' or the ESO name)",
        "date": "observing night ('2003-03-03')",
        "red_filenames": "reduced frames by file name",
        "raw_filenames": "the reduced frames of these raw files",
    }

    def unit_selections(self) -> list[dict[str, Any]]:
        """One unit per reduced frame."""
        return [{"red_filenames": [f.filename]} for f in _reduced_frames(self, self.selection_values.get("chip"))]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        made: list[tuple[DBObject, Path | None]] = []
        for frame in _reduced_frames(self, self.selection_values.get("chip")):
            made += self._regrid(frame)
        return made

    # ------------------------------------------------------------------ inputs
    def _astrometry(self, frame: ReducedScienceFrame) -> Any:
        from awe.model.gastrom import solution_for
        found = solution_for(frame)
        if found is None:
            found = AstrometricParameters.for_frame(frame)
        if found is None:
            raw = frame.raw.filename if frame.raw is not None else "..."
            raise TaskError(f"RegridTask: {frame.filename} has no astrometric solution; solve it first: "
                            f"AstrometricParametersTask(raw_filenames=[{raw!r}], commit=1) (and, for the best one, "
                            f"GAstromSourceListTask + GAstromTask(instrument={frame.instrument.name!r}, "
                            f"object={frame.OBJECT!r}, commit=1))")
        return found

    def _photometry(self, frame: ReducedScienceFrame) -> Any:
        p = self.params(RegriddedFrame)
        try:
            return self.calibration("photometry", frame)
        except MissingCalibrationError as exc:
            if p.ALLOW_UNCALIBRATED:
                self.log.warning("%s regridded unscaled (ALLOW_UNCALIBRATED): %s", frame.filename, exc)
                return None
            raise TaskError(f"RegridTask: {exc}. Or set pars.RegriddedFrame.process_params.ALLOW_UNCALIBRATED = "
                            "True to regrid it unscaled (flagged FEW_INPUTS)") from None

    def _grid(self, frame: ReducedScienceFrame) -> RegridGrid:
        """The field's grid: the current one of this provenance, else a new one (adopted if a twin commits first)."""
        sw = self.params(RegriddedFrame, "swarpconf")
        raws = RawScienceFrame.select(instrument=frame.instrument.name, object=frame.OBJECT)
        pointings = sorted({(float(r.RA), float(r.DEC)) for r in raws if r.RA is not None and r.DEC is not None})
        if not pointings and frame.RA is not None:
            pointings = [(float(frame.RA), float(frame.DEC))]
        values = field_grid(frame.instrument.name, frame.OBJECT or "", pointings, float(sw.PIXEL_SCALE),
                            float(sw.GRID_ROUNDING), float(sw.GRID_MARGIN))
        key = dict(values, OBJECT=frame.OBJECT, instrument=frame.instrument.name)
        provenance = provenance_hash("RegridGrid", key, {}, _GRID_VERSION)
        found = ((RegridGrid.provenance == provenance) & (RegridGrid.is_valid != 0)
                 & (RegridGrid.superseded_by == None)).max("creation_date")  # noqa: E711
        if isinstance(found, RegridGrid):
            return found
        grid = self.new_product(RegridGrid, {}, category="Sci", step="Grid", instrument=frame.instrument,
                                OBJECT=frame.OBJECT, **values)
        grid.provenance = provenance
        grid.process_params = {}
        remember_twin(grid, self.session)
        self.log.info("new grid of %s: tangent point %.5f %+.5f, %d x %d pixels of %g\"", frame.OBJECT,
                      values["grid_ra"], values["grid_dec"], values["grid_nx"], values["grid_ny"],
                      values["pixel_scale"])
        return grid

    # ------------------------------------------------------------------ one frame
    def _regrid(self, frame: ReducedScienceFrame) -> list[tuple[DBObject, Path | None]]:
        from awe.image.background import TooFewStarsError, measure_background, measure_seeing
        from awe.image.regrid import regrid
        sw = self.params(RegriddedFrame, "swarpconf")
        p = self.params(RegriddedFrame)
        weight = frame.weight
        if weight is None:
            raise TaskError(f"{frame.filename} has no valid weight map: reduce its raw frame again "
                            f"(ReduceTask(raw_filenames=[{frame.raw.filename!r}], redo=1, commit=1))")
        solution = self._astrometry(frame)
        photometry = self._photometry(frame)
        grid = self._grid(frame)
        obj = self.new_product(RegriddedFrame, {"reduced": frame, "weight": weight, "astrometry": solution,
                                                "photometry": photometry, "grid": grid},
                               template=frame, category="Sci", step="Regr")
        found = self.existing(obj)
        if found is not None:
            return [(found, None)]
        target = float(p.ZEROPOINT)
        exptime = float(frame.EXPTIME or 0.0)
        if photometry is not None:
            if not exptime > 0:
                raise TaskError(f"RegridTask: {frame.filename} has EXPTIME {frame.EXPTIME}: its flux cannot be "
                                "scaled to a zero point")
            airmass = float(frame.AIRMASS or 1.0)
            flux_scale = 10 ** (0.4 * (target - photometry.zeropoint + photometry.extinction * airmass)) / exptime
            zeropoint = target
        else:
            flux_scale, zeropoint = 1.0, float("nan")
        data = frame.load()
        wmap = weight.load()
        flags = (weight.flags() & FLAG_SATURATED).astype(np.uint8)
        bad: np.ndarray | None = None
        rms = float(frame.background_rms) if frame.background_rms else 0.0
        # the input's background: only to subtract it, or for its noise when the reduced frame has none recorded
        if p.BACKGROUND_SUBTRACTION_TYPE == 1 or not frame.background_rms:
            bad = ~(wmap > 0) | ~np.isfinite(data)
            sky = measure_background(data, mask=bad, box=int(p.BACKGROUND_MESH),
                                     return_map=bool(p.BACKGROUND_SUBTRACTION_TYPE))
            if p.BACKGROUND_SUBTRACTION_TYPE == 1 and sky.map is not None:
                data = (data - sky.map).astype(np.float32)
            if not frame.background_rms:
                rms = float(sky.rms)
        # the weight map is relative (flat-field response): a pixel of weight w has variance rms^2 / w
        wgood = wmap[wmap > 0]
        norm = float(np.median(wgood)) if wgood.size else 1.0
        result = regrid(data, wmap / np.float32(norm), solution.wcs, grid.tangent_grid(),
                        kernel=str(sw.RESAMPLING_TYPE), flags=flags, flux_scale=flux_scale, variance=rms * rms,
                        step=int(sw.MAPPING_STEP), threads=int(sw.NTHREADS))
        obj.grid_x0, obj.grid_y0 = result.x0, result.y0
        obj.pixel_scale = float(sw.PIXEL_SCALE)
        obj.kernel = str(sw.RESAMPLING_TYPE).upper()
        obj.zeropoint = zeropoint if math.isfinite(zeropoint) else None
        obj.flux_scale = float(flux_scale)
        obj.photometric = photometry is not None
        obj.background_subtracted = int(p.BACKGROUND_SUBTRACTION_TYPE)
        covered = result.weight > 0
        out_sky = measure_background(result.data, mask=~covered, box=64) if covered.any() else None
        obj.sky_rms = float(out_sky.rms) if out_sky is not None else None
        obj.sky_level = 0.0 if p.BACKGROUND_SUBTRACTION_TYPE == 1 or out_sky is None else float(out_sky.level)
        obj.n_flagged = int(np.count_nonzero(result.flags & FLAG_SATURATED))
        # the PSF as measured on the input pixels (the pixel-integrated profile fit is exact there; resampling an
        # undersampled frame broadens the profile it would fit on the output grid): the reduced frame's
        # measurement, else a new one on its pixels
        if frame.psf_radius is not None and frame.seeing is not None:
            obj.psf_radius, obj.seeing = float(frame.psf_radius), float(frame.seeing)
        else:
            try:
                if bad is None:
                    bad = ~(wmap > 0) | ~np.isfinite(data)
                seeing = measure_seeing(data, mask=bad, pixel_scale=_input_scale(solution.wcs), detect_threshold=5.0,
                                        n_bootstrap=0, min_stars=3)
                obj.psf_radius, obj.seeing = float(seeing.psf_radius), float(seeing.fwhm_arcsec)
            except TooFewStarsError as exc:
                self.log.warning("%s: seeing not measured: %s", frame.filename, exc)
        if photometry is None:
            obj.quality_flags = QualityFlags.FEW_INPUTS
        cards = _wcs_cards(grid, result.x0, result.y0)
        cards.update({"OBJECT": frame.OBJECT or "", "FILTER": frame.filter.name if frame.filter else "",
                      "EXPTIME": (exptime, "of the reduced frame [s]"),
                      "MAGZERO": (zeropoint if math.isfinite(zeropoint) else -1.0,
                                  "mag = -2.5 log10(sum) + MAGZERO; -1: none"),
                      "FLXSCALE": (float(flux_scale), "factor applied to the reduced frame's ADU"),
                      "GRIDX0": (result.x0, "0-based column on the field grid"),
                      "GRIDY0": (result.y0, "0-based row on the field grid"),
                      "KERNEL": (obj.kernel, "resampling kernel"),
                      "BACKSUB": (int(p.BACKGROUND_SUBTRACTION_TYPE), "background subtracted")})
        data_out = result.data  # float32, as the weight and the flags (uint8); 0 where nothing is covered, in place
        np.copyto(data_out, np.float32(0.0), where=~covered)
        path = self.write_product(obj, data_out, cards, hdus={"WEIGHT": result.weight, "FLAGS": result.flags},
                                  imstat=_imstat(data_out, covered))
        self.log.info("%s regridded: %d x %d at (%d, %d), flux scale %.5g, psf_radius %s", frame.filename,
                      obj.NAXIS1, obj.NAXIS2, result.x0, result.y0, flux_scale, obj.psf_radius)
        self.save_figure(obj, lambda fig_path: obj.inspect(path=fig_path))
        made: list[tuple[DBObject, Path | None]] = []
        if grid.object_id is None:
            made.append((grid, None))
        made.append((obj, path))
        return made


def _input_scale(wcs: Any) -> float:
    """The pixel scale [arcsec] of a WCS (square root of the CD determinant)."""
    from astropy.wcs.utils import proj_plane_pixel_area
    return float(np.sqrt(proj_plane_pixel_area(wcs.celestial)) * 3600.0)


def _imstat(data: np.ndarray, covered: np.ndarray) -> Any:
    from awe.image.stats import imstat
    return imstat(data, mask=~covered)


def _wcs_cards(grid: RegridGrid, x0: int, y0: int) -> dict[str, Any]:
    from awe.model.astrometry import wcs_to_cards
    return dict(wcs_to_cards(grid.wcs(x0, y0)))
