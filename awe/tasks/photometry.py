"""Photometric calibration (spec sections 6 and 7): PhotcatTask, IlluminationCorrectionTask, PhotomTask.

::

    PhotcatTask(instrument='WFI', raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], commit=1).execute()
    IlluminationCorrectionTask(instrument='WFI', date='2003-03-03', filter='#844', commit=1).execute()
    PhotomTask(instrument='WFI', raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], commit=1).execute()

The order on a night: reduce the standard fields (ReduceTask), their astrometry
(AstrometricParametersTask), PhotcatTask on every standard exposure,
IlluminationCorrectionTask (the standards of all the night's exposures pooled per
chip), PhotomTask. ReduceTask applies the illumination correction to every frame
it reduces afterwards; PhotomTask corrects the standards it fits with it (at each
star's position) when their frames were reduced before it existed, so the zero
point holds for frames reduced with it.

* **PhotcatTask** (one unit per reduced standard-field frame): the standards of
  the standard catalogue on the frame, placed with the frame's best astrometric
  solution (:func:`awe.model.astrometry.best_wcs`; without one, the header WCS
  with the shift found by matching the reference stars to the detections),
  matched to the detections (:func:`awe.image.extract.extract`) and measured in
  a large circular aperture (``APERTURE_RADIUS``, :func:`awe.image.extract.aperture_flux`):
  a :class:`~awe.model.photometry.PhotSrcCatalog`.
* **IlluminationCorrectionTask** (per chip): the joint photometric fit of the
  night's catalogues, then per chip a low-order polynomial through the stars'
  residuals (:func:`awe.image.photometry.fit_illumination`), median 1 over the chip:
  an :class:`~awe.model.science.IlluminationCorrection`.
* **PhotomTask** (one unit: the selected catalogues together): zero point per
  chip, the night's extinction, colour term (:func:`awe.image.photometry.fit_photometry`):
  a :class:`~awe.model.photometry.PhotometricParameters` per chip.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.table import Table

from awe.db.query import night_of, observing_night
from awe.db.schema import DBObject
from awe.image import photometry as phot
from awe.instruments import get_instrument
from awe.model.astrometry import AstrometricParameters
from awe.model.frames import QualityFlags, RawStandardFrame
from awe.model.photometry import (PHOT_FLAG_BAD_PIXELS, PHOT_FLAG_EDGE, PHOT_FLAG_MASKED, PHOT_FLAG_NEIGHBOUR,
                                  PHOT_FLAG_SATURATED, PHOT_FLAGS_UNUSABLE, PhotometricParameters, PhotSrcCatalog)
from awe.model.refcat import ReferenceCatalog
from awe.model.science import IlluminationCorrection, IlluminationFit, ReducedScienceFrame
from awe.tasks.base import Check, Input, Task, TaskError, apply_checks, as_list, select_calibration

__all__ = ["PhotcatTask", "PhotomTask", "IlluminationCorrectionTask", "Measurements"]

log = logging.getLogger(__name__)

_UNUSABLE = PHOT_FLAGS_UNUSABLE
#: the weight map's FLAGS bit of saturated pixels (awe.image.weights.SATURATED)
_SATURATED_BIT = 4

_SELECTION = {
    "raw_filenames": "raw chip files of the standard-field exposures (['WFI.2003-03-04T04:42:29.496_1.fits'])",
    "instrument": "instrument name ('WFI')",
    "chip": "chip name ('ccd50'); all chips when not given",
    "filter": "filter ('#844' or the ESO name)",
    "date": "observing night ('2003-03-03')",
    "object": "OBJECT of the standard fields, wildcards allowed ('SA*')",
}


# ============================================================================ selection helpers
def _reduced_frames(task: Task) -> list[ReducedScienceFrame]:
    """The newest valid reduced frame of every selected raw frame."""
    sel = task.selection_values
    if not any(sel.get(k) for k in ("raw_filenames", "instrument", "chip", "date", "object")):
        raise TypeError(f"{type(task).__name__} needs raw_filenames= or instrument= (with chip=, date=, filter=, "
                        f"object=): see help({type(task).__name__})")
    names = as_list(sel.get("raw_filenames")) or None
    chip = sel.get("chip")
    query = ReducedScienceFrame.select(instrument=sel.get("instrument"), chip=None if names else chip,
                                       filter=sel.get("filter"), date=sel.get("date"), object=sel.get("object"),
                                       raw_filenames=names)
    newest: dict[str, ReducedScienceFrame] = {}
    for red in query:
        if not names and not isinstance(red.raw, RawStandardFrame):
            continue  # selected by night, chip...: the standard-field exposures only
        key = red.raw.filename
        if key not in newest or (red.creation_date, red.object_id) > (newest[key].creation_date,
                                                                      newest[key].object_id):
            newest[key] = red
    if names:
        missing = sorted(set(names) - set(newest))
        if missing:
            raise TaskError(f"{type(task).__name__}: no valid reduced frame of {missing}: reduce them first "
                            f"(ReduceTask(raw_filenames={missing!r}, commit=1))")
    frames = [newest[k] for k in sorted(newest) if chip is None or newest[k].chip.name == chip]
    if not frames:
        raise TaskError(f"{type(task).__name__}: no valid reduced standard-field frame matches {sel}: reduce the "
                        "standard fields first (ReduceTask)")
    return frames


def _catalog_of(red: ReducedScienceFrame) -> PhotSrcCatalog | None:
    query = (PhotSrcCatalog.reduced.object_id == red.object_id) & (PhotSrcCatalog.quality_flags == 0) \
        & (PhotSrcCatalog.is_valid != 0)
    return query.max("creation_date")


def _night_catalogs(instrument: str, filter_name: str | None, when: _dt.datetime, longitude: float
                    ) -> list[PhotSrcCatalog]:
    """The newest valid catalogue of every standard-field frame of the night of ``when``."""
    start, end = observing_night(night_of(when, longitude), longitude)
    query = (PhotSrcCatalog.instrument.name == instrument) & PhotSrcCatalog.DATE_OBS.between(start, end) \
        & (PhotSrcCatalog.quality_flags == 0) & (PhotSrcCatalog.is_valid != 0)
    if filter_name is not None:
        query &= PhotSrcCatalog.filter.name == filter_name
    newest: dict[int, PhotSrcCatalog] = {}
    for cat in query:
        red = cat.reduced
        key = red.raw.object_id if red is not None and red.raw is not None else cat.object_id
        if key not in newest or (cat.creation_date, cat.object_id) > (newest[key].creation_date,
                                                                      newest[key].object_id):
            newest[key] = cat
    return list(newest.values())


# ============================================================================ PhotcatTask
class PhotcatTask(Task):
    """Measure the standard stars on reduced standard-field frames: a PhotSrcCatalog per frame.

    ``PhotcatTask(instrument='WFI', raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], inspect=1,
    commit=1)``. The standards of the visible standard catalogue(s) are placed with the frame's best
    astrometric solution (the header WCS and a shift from matching the reference stars when there is
    none), matched to the detections and measured in an aperture of APERTURE_RADIUS. ``inspect=1``:
    the frame with the standards marked and catalogue minus instrumental magnitude against magnitude.
    """

    products = (PhotSrcCatalog,)
    inputs = (Input(ReducedScienceFrame, "reduced", kind="product"),
              Input(ReferenceCatalog, "standards", kind="product"),
              Input(AstrometricParameters, "astrometry", kind="product"))  # the frame's best solution places them
    unit = "per_frame"
    version = "3"  # 2: positions from the astrometric solution (an input); a standard with a masked core kept, flagged;
    # 3: FLUX_RADIUS bounded by the AUTO aperture (extraction)
    algorithm_modules = ("awe.image.extract", "awe.image.photometry", "awe.tasks.photometry")
    selection = dict(_SELECTION)

    def unit_selections(self) -> list[dict[str, Any]]:
        frames = _reduced_frames(self)
        self.log.info("measuring the standards on %d reduced frame(s): %s", len(frames),
                      [red.raw.filename for red in frames])
        base = {k: v for k, v in self.selection_values.items() if k == "instrument"}
        return [dict(base, raw_filenames=[red.raw.filename]) for red in frames]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        made: list[tuple[DBObject, Path | None]] = []
        for red in _reduced_frames(self):
            made.append(self._measure(red))
        return made

    # ------------------------------------------------------------ one frame
    def _measure(self, red: ReducedScienceFrame) -> tuple[DBObject, Path | None]:
        from awe.image.extract import FLAG_SATURATED, aperture_flux, background_model, extract

        p = self.params(PhotSrcCatalog)
        wcs, source, solved = self._wcs(red)
        data = red.load()
        weight_frame = red.weight
        if weight_frame is None:
            raise TaskError(f"{red.filename} has no valid weight map: reduce {red.raw.filename} again (ReduceTask)")
        weight = weight_frame.load()
        flags_image = weight_frame.flags()
        ny, nx = data.shape
        scale = _pixel_scale(wcs)
        centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        radius = math.hypot(nx, ny) / 2 * scale / 3600.0 + p.SEARCH_RADIUS / 3600.0
        spec = get_instrument(red.instrument.name).filter(red.filter.name) if red.filter is not None else None
        band = spec.standard_band if spec is not None else None
        colour_name = spec.standard_colour if spec is not None else None
        if band is None:
            self.log.warning("the instrument description gives no standard band for filter %s: using the "
                             "standard catalogue's main magnitude", red.filter.name if red.filter else None)
        standards = self._standards(red, float(centre[0]), float(centre[1]), radius, band, colour_name)
        if "colour" not in standards.colnames:
            colour_name = None
        catalogs = [c for c in ReferenceCatalog.filename.in_(list(standards.meta.get("catalogs", [])))] \
            if len(standards) else []
        margin = p.SEARCH_RADIUS / scale
        if len(standards):
            sx, sy = wcs.all_world2pix(np.asarray(standards["ra"]), np.asarray(standards["dec"]), 0)
            inside = (sx > -margin) & (sx < nx - 1 + margin) & (sy > -margin) & (sy < ny - 1 + margin)
            standards, sx, sy = standards[inside], sx[inside], sy[inside]
        if len(standards) == 0:
            raise TaskError(f"{red.raw.filename} ({red.OBJECT}, chip {red.chip.name}): no standard star of the "
                            f"visible standard catalogue(s) is on the frame (searched {radius:.3f} deg around RA "
                            f"{centre[0]:.4f}, Dec {centre[1]:.4f}): is it a standard field? Load a standard "
                            "catalogue that covers it (awe refcat FILE --kind standard)")
        mag_cat = np.asarray(standards["mag"], dtype=float)
        mag_cat_err = np.asarray(standards["mag_err"], dtype=float)
        mag_cat_err = np.where(np.isfinite(mag_cat_err) & (mag_cat_err >= 0), mag_cat_err, 0.02)
        colour = np.asarray(standards["colour"], dtype=float) if colour_name else None
        band_column = str(standards.meta.get("band") or band or "mag")

        background = background_model(data, weight, box=max(16, int(round(p.BACKGROUND_MESH / scale))))
        detections = extract(data, weight, threshold=p.DETECT_THRESHOLD, gain=red.gain, background=background)
        if len(detections) == 0:
            raise TaskError(f"{red.raw.filename}: no source detected above {p.DETECT_THRESHOLD} sigma")
        dx = dy = 0.0
        if solved is None:
            dx, dy, votes = self._shift(red, wcs, detections, sx, sy, p.SEARCH_RADIUS / scale, scale)
            self.log.info("%s: the detections are shifted by (%.2f, %.2f) pixels from the header WCS (%d matched "
                          "stars agree)", red.raw.filename, dx, dy, votes)
        match = phot.match_nearest(sx + dx, sy + dy, np.asarray(detections["x"]), np.asarray(detections["y"]),
                                   p.MATCH_RADIUS / scale)
        px, py = sx + dx, sy + dy
        on_chip = (px >= 0) & (px <= nx - 1) & (py >= 0) & (py <= ny - 1)
        found = match >= 0
        core = max(1.5 * (float(red.seeing) / scale if red.seeing else 2.0), 2.0)
        # a star whose core the weight map masks (saturated, or taken for cosmic rays on undersampled frames) may
        # not be detected: through a solved WCS it is kept where it must be, flagged, not lost without a trace
        burnt = np.zeros(found.size, dtype=bool)
        lost = np.flatnonzero(~found & on_chip) if solved is not None else np.zeros(0, dtype=int)
        if lost.size:
            burnt[lost] = _aperture_pixels(flags_image, weight, px[lost], py[lost], core, core)[1] > 0
        self.log.info("%s: %d standard star(s) on the frame, %d matched to a detection within %.1f\"%s",
                      red.raw.filename, int(on_chip.sum()), int(found.sum()), p.MATCH_RADIUS,
                      f", {int(burnt.sum())} undetected with a masked core (kept, flagged)" if burnt.any() else "")
        if not on_chip.any():
            raise TaskError(f"{red.raw.filename} ({red.OBJECT}, chip {red.chip.name}): no standard star of the "
                            f"visible standard catalogue(s) falls on the frame ({len(standards)} just outside it)")
        if not (found | burnt).any():
            raise TaskError(f"{red.raw.filename}: none of the {int(on_chip.sum())} standard star(s) on the frame "
                            f"was found within {p.MATCH_RADIUS}\" of its predicted position ({source}); check the "
                            "astrometric solution (AstrometricParametersTask) or raise MATCH_RADIUS")
        sel = np.flatnonzero(found | burnt)
        index = match[sel]  # the detection of each kept star, -1 for the saturated undetected ones
        det_x, det_y = np.asarray(detections["x"], dtype=float), np.asarray(detections["y"], dtype=float)
        x = np.where(index >= 0, det_x[index], px[sel])
        y = np.where(index >= 0, det_y[index], py[sel])
        det_flags = np.where(index >= 0, np.asarray(detections["flags"], dtype=np.int64)[index], 0)
        r_pix = p.APERTURE_RADIUS / scale
        flux, flux_err, aflags = aperture_flux(data, weight, x, y, r_pix, background=background, gain=red.gain)
        flags = np.zeros(x.size, dtype=np.int64)
        flags[(aflags & 8) != 0] |= PHOT_FLAG_EDGE
        flags[(aflags & 16) != 0] |= PHOT_FLAG_BAD_PIXELS
        flags[(det_flags & FLAG_SATURATED) != 0] |= PHOT_FLAG_SATURATED
        saturated, masked, core_lost = _aperture_pixels(flags_image, weight, x, y, r_pix, core)
        flags[saturated] |= PHOT_FLAG_SATURATED
        flags[(masked > p.MAXIMUM_MASKED_FRACTION) | core_lost | (index < 0)] |= PHOT_FLAG_MASKED
        detected = index >= 0
        flags[np.flatnonzero(detected)[_bright_neighbour(detections, index[detected], r_pix)]] |= PHOT_FLAG_NEIGHBOUR
        flags |= det_flags << 8
        table = Table({
            "name": np.asarray(standards["name"]).astype(str)[sel],
            "ra": np.asarray(standards["ra"], dtype=float)[sel], "dec": np.asarray(standards["dec"], dtype=float)[sel],
            "x": x, "y": y, "flux": flux, "flux_err": flux_err,
            "mag_cat": mag_cat[sel], "mag_cat_err": mag_cat_err[sel],
            "colour": colour[sel] if colour is not None else np.full(sel.size, np.nan),
            "airmass": np.full(sel.size, float(red.AIRMASS) if red.AIRMASS is not None else np.nan),
            "exptime": np.full(sel.size, float(red.EXPTIME or 0.0)),
            "flags": flags,
        })
        for col, unit in (("ra", "deg"), ("dec", "deg"), ("x", "pix"), ("y", "pix"), ("mag_cat", "mag"),
                          ("mag_cat_err", "mag"), ("colour", "mag"), ("exptime", "s")):
            table[col].unit = unit
        n_good = int(np.count_nonzero((flags & _UNUSABLE) == 0))
        self.log.info("%s: %d standard(s) measured in a %.1f\" aperture, %d usable (not saturated, on the frame, "
                      "no bright neighbour); magnitudes from column %s%s", red.raw.filename, len(table),
                      p.APERTURE_RADIUS, n_good, band_column, f", colour {colour_name}" if colour_name else "")
        cat = self.new_product(PhotSrcCatalog, {"reduced": red, "standards": catalogs,
                                                "astrometry": [solved] if solved is not None else []}, template=red,
                               category="Cal", step="Photc", band=band or band_column, colour_name=colour_name,
                               aperture_radius=float(p.APERTURE_RADIUS), n_standards=int(on_chip.sum()),
                               n_measured=len(table), offset_x_pix=float(dx), offset_y_pix=float(dy),
                               wcs_source=source[:255])
        found_cat = self.existing(cat)
        self.save_figure(found_cat or cat, lambda fig_path: _photcat_figure(red, data, table, fig_path), "standards")
        if found_cat is not None:
            return found_cat, None
        cat.__dict__["_pending_rows"] = table
        path = self.output_path(cat)
        out = table.copy()
        out.meta.update({"AWECLASS": "PhotSrcCatalog", "PROVHASH": cat.provenance, "REDFILE": red.filename[:68],
                         "AIRMASS": cat.AIRMASS, "EXPTIME": cat.EXPTIME, "BAND": cat.band or ""})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long keyword values
            out.write(path, format="fits", overwrite=True)
        return cat, path

    def _standards(self, red: ReducedScienceFrame, ra: float, dec: float, radius: float, band: str | None,
                   colour: str | None) -> Table:
        """The visible standards around the frame, their magnitudes in ``band`` (and ``colour`` when they have
        it), positions at the epoch of the exposure."""
        from awe.model.refcat import refcat_sources

        try:
            return refcat_sources("standard", ra=ra, dec=dec, radius_deg=radius, epoch=red.DATE_OBS, band=band,
                                  colour=colour)
        except LookupError as exc:
            first = exc
        if colour is not None:
            try:
                table = refcat_sources("standard", ra=ra, dec=dec, radius_deg=radius, epoch=red.DATE_OBS,
                                       band=band)
                self.log.warning("%s: the standards have no %s colour (%s): no colour term", red.raw.filename,
                                 colour, first)
                return table
            except LookupError as exc:
                first = exc
        raise TaskError(f"{red.raw.filename}: {first}; load a standard-star catalogue"
                        f"{' with ' + band + ' magnitudes' if band else ''} (awe refcat FILE --kind standard)")

    def _wcs(self, red: ReducedScienceFrame) -> tuple[Any, str, Any]:
        """The frame's best WCS (:func:`awe.model.astrometry.best_wcs`), what it is, and the astrometric
        solution it comes from (None: the header's, which logs a warning there)."""
        from awe.model.astrometry import best_wcs

        wcs, solution = best_wcs(red)
        if solution is not None:
            return wcs, f"{type(solution).__name__} {solution.filename}", solution
        return wcs, "header WCS", None

    def _shift(self, red: ReducedScienceFrame, wcs: Any, detections: Table, sx: np.ndarray, sy: np.ndarray,
               search_pix: float, scale: float) -> tuple[float, float, int]:
        """The shift of the detections from the header WCS: the standards and the astrometric reference stars
        vote (:func:`awe.image.photometry.find_offset`)."""
        from awe.model.refcat import refcat_sources

        px, py = list(sx), list(sy)
        ny, nx = int(red.NAXIS2), int(red.NAXIS1)
        try:
            centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
            radius = math.hypot(nx, ny) / 2 * scale / 3600.0 + search_pix * scale / 3600.0
            refs = refcat_sources("astrometric", ra=float(centre[0]), dec=float(centre[1]), radius_deg=radius,
                                  epoch=red.DATE_OBS)
            if len(refs):
                refs = refs[np.argsort(np.asarray(refs["mag"], dtype=float))][:300]
                rx, ry = wcs.all_world2pix(np.asarray(refs["ra"]), np.asarray(refs["dec"]), 0)
                px += list(rx)
                py += list(ry)
        except LookupError:
            self.log.info("no astrometric reference catalogue visible: the standards alone fix the shift")
        bright = detections[np.argsort(-np.asarray(detections["flux"], dtype=float))][:600]
        return phot.find_offset(np.asarray(px), np.asarray(py), np.asarray(bright["x"]), np.asarray(bright["y"]),
                                search_pix, bin_size=max(1.0, 1.0 / scale))


def _pixel_scale(wcs: Any) -> float:
    """Mean pixel scale of a WCS [arcsec/pixel]."""
    from astropy.wcs.utils import proj_plane_pixel_scales
    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def _aperture_pixels(flags_image: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float,
                     core: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per aperture: whether a saturated pixel (the weight map's FLAGS) lies in it, the fraction of its pixels
    of weight 0 (off the frame counts as masked), and whether a pixel of the star's core (within ``core``)
    is bad together with its mirror through the centre (flux the mirror correction cannot restore)."""
    ny, nx = flags_image.shape
    saturated = np.zeros(x.size, dtype=bool)
    masked = np.ones(x.size)
    core_lost = np.zeros(x.size, dtype=bool)
    r = int(math.ceil(radius))
    for i, (xi, yi) in enumerate(zip(x, y)):
        yy, xx = np.mgrid[int(round(yi)) - r:int(round(yi)) + r + 1, int(round(xi)) - r:int(round(xi)) + r + 1]
        inside = (xx - xi) ** 2 + (yy - yi) ** 2 <= radius ** 2
        on = inside & (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
        if not on.any():
            continue
        saturated[i] = bool(np.any((flags_image[yy[on], xx[on]] & _SATURATED_BIT) != 0))
        masked[i] = 1.0 - float(np.count_nonzero(weight[yy[on], xx[on]] > 0)) / float(np.count_nonzero(inside))
        central = on & ((xx - xi) ** 2 + (yy - yi) ** 2 <= core ** 2)
        bad = central & (weight[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)] <= 0)
        if bad.any():
            mx = np.rint(2 * xi - xx[bad]).astype(int)
            my = np.rint(2 * yi - yy[bad]).astype(int)
            off = (mx < 0) | (mx >= nx) | (my < 0) | (my >= ny)
            core_lost[i] = bool(np.any(off) or np.any(weight[np.clip(my, 0, ny - 1), np.clip(mx, 0, nx - 1)] <= 0))
    return saturated, masked, core_lost


def _bright_neighbour(detections: Table, index: np.ndarray, radius: float, fraction: float = 0.005) -> np.ndarray:
    """Whether another detection inside the aperture has more than ``fraction`` of the star's flux."""
    from scipy.spatial import cKDTree

    x, y = np.asarray(detections["x"], dtype=float), np.asarray(detections["y"], dtype=float)
    flux = np.asarray(detections["flux"], dtype=float)
    tree = cKDTree(np.column_stack([x, y]))
    out = np.zeros(index.size, dtype=bool)
    for i, j in enumerate(index):
        near = [k for k in tree.query_ball_point([x[j], y[j]], radius + 2.0) if k != j]
        out[i] = bool(near) and bool(np.any(flux[near] > fraction * max(flux[j], 0.0)))
    return out


def _photcat_figure(red: ReducedScienceFrame, data: np.ndarray, table: Table, path: Path) -> Any:
    from awe.image.inspect import new_figure, save_figure, show_image

    fig, (left, right) = new_figure(ncols=2, size=(11.0, 7.0))
    show_image(left, data, f"{red.raw.filename} {red.OBJECT}\n{len(table)} standard(s)")
    usable = (np.asarray(table["flags"]) & _UNUSABLE) == 0
    left.scatter(table["x"][usable], table["y"][usable], s=80, facecolors="none", edgecolors="lime")
    left.scatter(table["x"][~usable], table["y"][~usable], s=80, facecolors="none", edgecolors="red")
    inst, _ = phot.instrumental_mag(np.asarray(table["flux"]), np.asarray(table["flux_err"]),
                                    np.asarray(table["exptime"]))
    diff = np.asarray(table["mag_cat"]) - inst
    right.scatter(np.asarray(table["mag_cat"])[usable], diff[usable], c="k", s=12, label="used")
    right.scatter(np.asarray(table["mag_cat"])[~usable], diff[~usable], c="r", marker="x", s=12,
                  label="saturated, edge or neighbour")
    right.set_xlabel("catalogue magnitude [mag]")
    right.set_ylabel("catalogue - instrumental [mag]")
    right.legend(fontsize=7)
    save_figure(fig, path)
    return None


# ============================================================================ measurements of many catalogues
class Measurements:
    """The usable standard-star measurements of a set of catalogues, pooled (one array per quantity).

    The flux of a star on a frame reduced without an illumination correction is multiplied by the
    correction at its position when ``illumination`` gives one for its chip (``corrected`` records it);
    ``uncorrect=True`` instead removes the correction a frame was reduced with (the illumination fit
    needs the bare flat-fielded fluxes).
    """

    def __init__(self, catalogs: Sequence[PhotSrcCatalog], illumination: dict[str, IlluminationCorrection | None]
                 | None = None, uncorrect: bool = False) -> None:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("mag_cat", "mag_inst", "mag_err", "airmass", "chip",
                                                              "colour", "x", "y", "catalog")}
        self.catalogs = list(catalogs)
        self.corrected: dict[str, IlluminationCorrection] = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        for n, cat in enumerate(self.catalogs):
            rows = cat.sources()
            flags = np.asarray(rows["flags"], dtype=np.int64)
            keep = (flags & _UNUSABLE) == 0
            rows = rows[keep]
            chip = cat.chip.name
            red = cat.reduced
            self.shapes[chip] = (int(red.NAXIS2), int(red.NAXIS1))
            x, y = np.asarray(rows["x"], dtype=float), np.asarray(rows["y"], dtype=float)
            flux, flux_err = np.asarray(rows["flux"], dtype=float), np.asarray(rows["flux_err"], dtype=float)
            factor = np.ones(x.size)
            if uncorrect and red.illumination is not None:
                factor = 1.0 / red.illumination.illuminationcorrection(x, y)
            elif not uncorrect and red.illumination is None and illumination and illumination.get(chip) is not None:
                ill = illumination[chip]
                assert ill is not None
                factor = ill.illuminationcorrection(x, y)
                self.corrected[chip] = ill
            elif not uncorrect and red.illumination is not None:
                self.corrected[chip] = red.illumination
            inst, inst_err = phot.instrumental_mag(flux * factor, flux_err * factor, np.asarray(rows["exptime"]))
            parts["mag_cat"].append(np.asarray(rows["mag_cat"], dtype=float))
            parts["mag_inst"].append(inst)
            parts["mag_err"].append(np.hypot(inst_err, np.asarray(rows["mag_cat_err"], dtype=float)))
            parts["airmass"].append(np.asarray(rows["airmass"], dtype=float))
            parts["chip"].append(np.full(len(rows), chip))
            parts["colour"].append(np.asarray(rows["colour"], dtype=float))
            parts["x"].append(x)
            parts["y"].append(y)
            parts["catalog"].append(np.full(len(rows), n))
        def pooled(key: str) -> np.ndarray:
            return np.concatenate(parts[key]) if parts[key] else np.zeros(0)
        self.mag_cat, self.mag_inst, self.mag_err = pooled("mag_cat"), pooled("mag_inst"), pooled("mag_err")
        self.airmass, self.colour, self.x, self.y = pooled("airmass"), pooled("colour"), pooled("x"), pooled("y")
        self.chip = pooled("chip").astype(str)
        self.catalog = pooled("catalog").astype(int)

    @property
    def airmass_span(self) -> float:
        finite = self.airmass[np.isfinite(self.airmass)]
        return float(finite.max() - finite.min()) if finite.size else 0.0

    def has_colour(self) -> bool:
        return int(np.count_nonzero(np.isfinite(self.colour))) >= 3

    def fit(self, *, extinction: float | None, colour_term: float | None, use_colour: bool, clip: float,
            min_stars: int = 1) -> phot.PhotometricFit:
        return phot.fit_photometry(self.mag_cat, self.mag_inst, self.mag_err,
                                   self.airmass, self.chip,
                                   self.colour if use_colour else None,
                                   extinction=extinction, colour_term=colour_term, clip=clip, min_stars=min_stars)


def _default_extinction(instrument: str, filter_name: str | None, value: float) -> float:
    if value > 0:
        return float(value)
    spec = get_instrument(instrument).filter(filter_name) if filter_name else None
    if spec is None or spec.extinction is None:
        raise TaskError(f"the standards do not span enough airmass to fit the extinction, and the instrument "
                        f"description gives no default for filter {filter_name}: set "
                        "PhotometricParameters.process_params.EXTINCTION")
    return float(spec.extinction)


# ============================================================================ IlluminationCorrectionTask
class IlluminationCorrectionTask(Task):
    """The illumination correction of each chip from the standard-star residuals of a night.

    ``IlluminationCorrectionTask(instrument='WFI', date='2003-03-03', filter='#844', commit=1)`` (or
    ``raw_filenames=`` of the standard exposures to use, ``chip=``). The night's PhotSrcCatalogs of
    every chip are fitted together (zero point per chip, extinction, colour term); each chip's
    residuals get a 2-D polynomial of total degree 0 .. DEGREE (Akaike's criterion chooses; 0 when the
    standards show no pattern beyond their noise), normalised to a median of 1 over the chip:
    multiplying a frame by it makes a star's counts the same anywhere on the chip. ReduceTask applies
    it to what it reduces afterwards. ``inspect=1``: the correction with the stars' residuals.
    """

    products = (IlluminationCorrection,)
    inputs = (Input(PhotSrcCatalog, "photcats", kind="product"),)
    unit = "per_chip"
    version = "1"
    algorithm_modules = ("awe.image.photometry", "awe.tasks.photometry")
    selection = dict(_SELECTION)

    def unit_selections(self) -> list[dict[str, Any]]:
        frames = _reduced_frames(self)
        chips = sorted({red.chip.name for red in frames})
        return [dict(self.selection_values, chip=chip) for chip in chips]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        chip = str(self.selection_values.get("chip"))  # one unit per chip (unit_selections)
        frames = _reduced_frames(self)  # this chip's (and the selection's)
        pool = self._pool(frames)
        p = self.params(IlluminationCorrection)
        meas = Measurements(pool, uncorrect=True)
        span = meas.airmass_span
        first = frames[0]
        extinction = None if span >= p.MINIMUM_AIRMASS_SPAN else _default_extinction(
            first.instrument.name, first.filter.name if first.filter else None, p.EXTINCTION)
        use_colour = bool(p.FIT_COLOUR_TERM) and meas.has_colour()
        try:
            fit = meas.fit(extinction=extinction, colour_term=None, use_colour=use_colour, clip=p.CLIP)
        except phot.TooFewStarsError as exc:
            raise TaskError(f"{type(self).__name__}: {exc}") from None
        self.log.info("joint fit of %d catalogue(s), %d stars: extinction %.4f +- %.4f (%s), zero points %s",
                      len(pool), int(fit.used.sum()), fit.extinction, fit.extinction_error,
                      "fitted" if fit.extinction_fitted else "default", {c: round(z, 4) for c, z in
                                                                         fit.zeropoint.items()})
        mine = (meas.chip == chip) & fit.used
        chip_cats = [c for c in pool if c.chip.name == chip]
        n_mine = int(np.count_nonzero(mine))
        degree = int(p.DEGREE)
        while degree > 0 and n_mine < p.STARS_PER_TERM * (degree + 1) * (degree + 2) // 2:
            degree -= 1
        if degree < p.DEGREE:
            self.log.warning("chip %s: %d standard-star measurements are too few for a degree-%d fit (STARS_PER_TERM "
                             "%d per coefficient): fitting degree %d at most", chip, n_mine, p.DEGREE, p.STARS_PER_TERM,
                             degree)
        if n_mine < 2 * p.STARS_PER_TERM:
            raise TaskError(f"{type(self).__name__}: chip {chip}: {n_mine} usable standard-star measurement(s) are "
                            f"too few for an illumination correction (at least {2 * p.STARS_PER_TERM}); pool more "
                            "standard exposures (all of the night's)")
        try:
            result = phot.fit_illumination(meas.x[mine], meas.y[mine], fit.residual[mine],
                                           meas.mag_err[mine], meas.shapes[chip], degree=degree,
                                           clip=p.CLIP)
        except phot.TooFewStarsError as exc:
            raise TaskError(f"{type(self).__name__}: chip {chip}: {exc}; pool more standard exposures (all of "
                            "the night's) or lower IlluminationCorrection.process_params.DEGREE") from None
        degree = result.degree
        if degree == 0:
            self.log.warning("chip %s: the standards show no large-scale pattern beyond their noise (Akaike's "
                             "information criterion prefers degree 0): the correction is flat (1)", chip)
        reds = [c.reduced for c in chip_cats]
        template = reds[0]
        longitude = template.instrument.longitude
        nights = sorted({night_of(r.DATE_OBS, longitude) for r in reds})
        start = observing_night(nights[0], longitude)[0]
        end = observing_night(nights[-1], longitude)[1]
        ill = self.new_product(IlluminationCorrection, {"reduced_frames": reds, "photcats": pool}, template=template,
                               category="Cal", step="Illum", timestamp_start=start, timestamp_end=end,
                               nframes=len(reds), overscan_correction=template.overscan_correction,
                               fit_degree=degree, fit_coefficients=result.coefficients.tolist(),
                               fit_rms=result.rms)
        for key in ("OBJECT", "DATE_OBS", "MJD_OBS", "EXPTIME", "AIRMASS", "RA", "DEC"):
            setattr(ill, key, None)
        self._log_existing(template)
        found = self.existing(ill)
        if found is not None:
            return [(found, None)]
        image = IlluminationFit(result.coefficients, meas.shapes[chip]).image()
        ill.NAXIS2, ill.NAXIS1 = image.shape
        n_used = int(result.used.sum())
        apply_checks(ill, [Check("standard stars in the fit", n_used, p.MINIMUM_STARS, "MINIMUM_STARS",
                                 QualityFlags.FEW_INPUTS, minimum=True),
                           Check("peak-to-peak of the correction", float(image.max() - image.min()),
                                 p.MAXIMUM_RANGE, "MAXIMUM_RANGE", QualityFlags.NOT_FLAT)], self.log)
        self.log.info("chip %s: illumination correction of degree %d from %d stars of %d exposure(s) (%d "
                      "rejected), range %.4f .. %.4f, fit rms %.2f %%", chip, degree, n_used, len(reds),
                      result.n_rejected, float(image.min()), float(image.max()), 100 * result.rms)
        path = self.write_product(ill, image, {"FITDEG": (degree, "degree of the 2-D polynomial"),
                                               "NSTARS": (n_used, "standard-star measurements fitted"),
                                               "CHIPID": chip})
        x, y, res = meas.x[mine], meas.y[mine], fit.residual[mine]
        self.save_figure(ill, lambda fig_path: _illumination_figure(ill, image, x, y, res, fig_path))
        return [(ill, path)]

    def _pool(self, frames: Sequence[ReducedScienceFrame]) -> list[PhotSrcCatalog]:
        """The catalogues fitted: those of the selected frames' nights (every chip), or, with raw_filenames,
        of those frames' exposures (every chip)."""
        first = frames[0]
        longitude = first.instrument.longitude
        pool: dict[int, PhotSrcCatalog] = {}
        for red in frames:
            for cat in _night_catalogs(red.instrument.name, red.filter.name if red.filter else None,
                                       red.DATE_OBS, longitude):
                pool[cat.object_id] = cat
        if self.selection_values.get("raw_filenames"):
            exposures = {_exposure(r.raw.filename) for r in frames}
            pool = {k: c for k, c in pool.items() if _exposure(c.reduced.raw.filename) in exposures}
        chip = self.selection_values.get("chip")
        if not any(c.chip.name == chip for c in pool.values()):
            raise TaskError(f"{type(self).__name__}: no PhotSrcCatalog of chip {chip} for "
                            f"{[r.raw.filename for r in frames]}: run PhotcatTask(instrument="
                            f"{first.instrument.name!r}, raw_filenames=[...], commit=1) on the night's standard "
                            "fields first")
        return list(pool.values())

    def _log_existing(self, frame: ReducedScienceFrame) -> None:
        try:
            old = select_calibration(IlluminationCorrection, frame, logging.getLogger("awe.quiet"), filter=True)
        except LookupError:
            self.log.info("no IlluminationCorrection exists for %s %s yet", frame.chip.name,
                          frame.filter.name if frame.filter else "")
            return
        self.log.info("an IlluminationCorrection exists for %s %s already: %s (made %s); the new one will be "
                      "newer and chosen from now on", frame.chip.name, frame.filter.name if frame.filter else "",
                      old.filename, old.creation_date)


def _exposure(raw_filename: str) -> str:
    """``WFI.2003-03-04T04:42:29.496_1.fits`` -> ``WFI.2003-03-04T04:42:29.496``."""
    stem = raw_filename[:-5] if raw_filename.endswith(".fits") else raw_filename
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def _illumination_figure(ill: IlluminationCorrection, image: np.ndarray, x: np.ndarray, y: np.ndarray,
                         residual: np.ndarray, path: Path) -> Any:
    from awe.image.inspect import new_figure, save_figure
    from awe.model.science import draw_correction

    fig, (left, right) = new_figure(ncols=2, size=(10.0, 8.0))
    draw_correction(image, f"IlluminationCorrection {ill.chip.name}\n{ill.filename}", ax=left)
    shown = right.scatter(x, y, c=-residual, cmap="coolwarm", s=25, vmin=-0.03, vmax=0.03)
    fig.colorbar(shown, ax=right, label="stars: -residual [mag] (~ the correction - 1)")
    right.set_xlim(0, image.shape[1])
    right.set_ylim(0, image.shape[0])
    right.set_aspect("equal")
    right.set_title("standard-star residuals of the joint fit", fontsize=8)
    save_figure(fig, path)
    return None


# ============================================================================ PhotomTask
class PhotomTask(Task):
    """Zero point per chip, the night's extinction and a colour term from PhotSrcCatalogs.

    ``PhotomTask(instrument='WFI', raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], inspect=1,
    commit=0)``. The catalogues of the selected frames are fitted together: ``mag_cat -
    mag_inst = ZP[chip] - k airmass + colour_term colour``. When they span less airmass than
    MINIMUM_AIRMASS_SPAN, the extinction and colour term are fitted on all the night's catalogues
    (``extinction_source`` 'night'), or, when those do not span it either, the extinction is the
    instrument's default for the filter ('default'). Standards on frames reduced before an
    illumination correction existed are corrected with it. Selected by ``chip=`` and night (as
    target processing plans it), the extinction and colour term are the night's, fitted on the
    standards of every chip, and the chip's standard frames without a catalogue (no standard star
    on the chip) are left out. One PhotometricParameters per chip (valid for the night);
    ``inspect=1``: residuals against airmass, magnitude and position.
    """

    products = (PhotometricParameters,)
    inputs = (Input(PhotSrcCatalog, "photcats", kind="product"),
              Input(IlluminationCorrection, "illumination", filter=True, optional=True))
    unit = "per_field"  # one unit: the catalogues of the selection are fitted together
    version = "2"  # 2: one chip of a night takes the night's extinction
    algorithm_modules = ("awe.image.photometry", "awe.tasks.photometry")
    selection = dict(_SELECTION)

    def missing_optional(self, decl: Input, frame: Any, exc: Exception) -> None:
        self.log.info("no IlluminationCorrection for %s (%s): the standards are fitted as they were reduced",
                      frame.filename, frame.chip.name)

    def make(self) -> list[tuple[DBObject, Path | None]]:
        frames = _reduced_frames(self)
        catalogs = []
        missing = []
        for red in frames:
            cat = _catalog_of(red)
            if cat is None:
                missing.append(red.raw.filename)
            else:
                catalogs.append(cat)
        named = bool(as_list(self.selection_values.get("raw_filenames")))
        if missing and (named or not catalogs):
            raise TaskError(f"PhotomTask: no valid PhotSrcCatalog of {missing}: run PhotcatTask(instrument="
                            f"{frames[0].instrument.name!r}, raw_filenames={missing!r}, commit=1) first")
        if missing:  # selected by night and chip: a frame without standards on it (or not measured) adds nothing
            self.log.info("PhotomTask: %d of the selected standard frames have no valid PhotSrcCatalog (no "
                          "standard star on the chip, or PhotcatTask failed on them): fitting without %s",
                          len(missing), missing)
            left_out = set(missing)
            frames = [r for r in frames if r.raw.filename not in left_out]
        pp = self.params(PhotometricParameters)
        illumination = {red.chip.name: self.calibration("illumination", red) for red in
                        {r.chip.name: r for r in frames}.values()}
        meas = Measurements(catalogs, illumination)
        if meas.mag_cat.size == 0:
            raise TaskError(f"PhotomTask: the catalogues of {[r.raw.filename for r in frames]} have no usable "
                            "standard star (all saturated, off the frame or with bright neighbours)")
        use_colour = bool(pp.FIT_COLOUR_TERM) and meas.has_colour()
        first = frames[0]
        night: list[PhotSrcCatalog] = []
        # one chip of a mosaic night (chip=, no file names): the atmosphere is the night's, so the extinction
        # and colour term come from the standards of every chip, each chip's zero point from its own
        one_chip = bool(self.selection_values.get("chip")) and not named
        try:
            if meas.airmass_span >= pp.MINIMUM_AIRMASS_SPAN and not one_chip:
                source = "fitted"
                fit = meas.fit(extinction=None, colour_term=None, use_colour=use_colour, clip=pp.CLIP)
                k_fit = fit
            else:
                night = _night_catalogs(first.instrument.name, first.filter.name if first.filter else None,
                                        first.DATE_OBS, first.instrument.longitude)
                night_meas = Measurements(night, {**self._night_illumination(night), **illumination})
                if night_meas.airmass_span >= pp.MINIMUM_AIRMASS_SPAN:
                    source = "night"
                    k_fit = night_meas.fit(extinction=None, colour_term=None,
                                           use_colour=use_colour and night_meas.has_colour(), clip=pp.CLIP)
                    why = (f"one chip ({self.selection_values.get('chip')}) of the night" if one_chip else
                           f"the selected standards span {meas.airmass_span:.3f} airmass (< MINIMUM_AIRMASS_SPAN "
                           f"{pp.MINIMUM_AIRMASS_SPAN:.2f})")
                    self.log.info("%s: extinction %.4f +- %.4f fitted on the night's %d standard catalogue(s) "
                                  "of %d chip(s) (airmass %.3f .. %.3f)", why, k_fit.extinction,
                                  k_fit.extinction_error, len(night), len(set(night_meas.chip)),
                                  np.nanmin(night_meas.airmass), np.nanmax(night_meas.airmass))
                else:
                    source = "default"
                    value = _default_extinction(first.instrument.name,
                                                first.filter.name if first.filter else None, pp.EXTINCTION)
                    k_fit = None
                    self.log.warning("the standards of the night span %.3f airmass (< MINIMUM_AIRMASS_SPAN %.2f): "
                                     "the extinction is the default %.4f mag/airmass", night_meas.airmass_span,
                                     pp.MINIMUM_AIRMASS_SPAN, value)
                colour_term = k_fit.colour_term if k_fit is not None and use_colour else None
                fit = meas.fit(extinction=k_fit.extinction if k_fit is not None else value,
                               colour_term=colour_term, use_colour=use_colour and colour_term is not None,
                               clip=pp.CLIP)
        except phot.TooFewStarsError as exc:
            raise TaskError(f"PhotomTask: {exc}") from None
        made: list[tuple[DBObject, Path | None]] = []
        for chip in fit.chips:
            made.append(self._product(chip, fit, k_fit, source, meas, catalogs, night, illumination.get(chip)))
        self.save_figure(made[0][0], lambda path: _photom_figure(fit, meas, path), "residuals")
        return made

    def _night_illumination(self, night: Sequence[PhotSrcCatalog]) -> dict[str, IlluminationCorrection | None]:
        out: dict[str, IlluminationCorrection | None] = {}
        for cat in night:
            chip = cat.chip.name
            if chip not in out:
                out[chip] = self.calibration("illumination", cat.reduced)
        return out

    def _product(self, chip: str, fit: phot.PhotometricFit, k_fit: phot.PhotometricFit | None, source: str,
                 meas: Measurements, catalogs: Sequence[PhotSrcCatalog], night: Sequence[PhotSrcCatalog],
                 illumination: IlluminationCorrection | None) -> tuple[DBObject, Path | None]:
        pp = self.params(PhotometricParameters)
        mine = [c for c in catalogs if c.chip.name == chip]
        template = mine[0]
        on_chip = meas.chip == chip
        airmass = meas.airmass[on_chip & fit.used]
        k_err = k_fit.extinction_error if k_fit is not None else 0.0
        zp_err = fit.zeropoint_error[chip]
        if source != "fitted" and k_err > 0 and airmass.size:
            zp_err = math.hypot(zp_err, k_err * float(np.mean(airmass)))  # the extinction's error carried over
        colour_term = fit.colour_term
        colour_err = fit.colour_term_error if source == "fitted" else (
            k_fit.colour_term_error if k_fit is not None else None)
        longitude = template.instrument.longitude
        nights = sorted({night_of(c.DATE_OBS, longitude) for c in mine})
        start = observing_night(nights[0], longitude)[0]
        end = observing_night(nights[-1], longitude)[1]
        used_ill = meas.corrected.get(chip) or illumination
        params = self.new_product(
            PhotometricParameters,
            {"photcats": mine, "night_photcats": list(night) if source == "night" else [],
             "illumination": used_ill},
            template=template.reduced, category="Cal", step="Photom", timestamp_start=start, timestamp_end=end,
            band=template.band, zeropoint=fit.zeropoint[chip], zeropoint_error=zp_err,
            extinction=fit.extinction, extinction_error=k_err if source != "fitted" else fit.extinction_error,
            extinction_source=source, colour_term=colour_term, colour_term_error=colour_err,
            colour_name=template.colour_name if colour_term is not None else None,
            n_stars=fit.n_stars[chip],
            n_rejected=int(np.count_nonzero(on_chip & ~fit.used & np.isfinite(fit.residual))),
            rms=fit.rms[chip], airmass_min=float(airmass.min()) if airmass.size else None,
            airmass_max=float(airmass.max()) if airmass.size else None)
        found = self.existing(params)
        if found is not None:
            return found, None
        apply_checks(params, [
            Check("standard stars used", params.n_stars, pp.MINIMUM_STARS, "MINIMUM_STARS", QualityFlags.FEW_INPUTS,
                  minimum=True),
            Check("fit rms", params.rms if params.n_stars > 1 else None, pp.MAXIMUM_RMS, "MAXIMUM_RMS",
                  QualityFlags.BAD_SOLUTION),
            Check("zero point error", params.zeropoint_error, pp.MAXIMUM_ZEROPOINT_ERROR, "MAXIMUM_ZEROPOINT_ERROR",
                  QualityFlags.BAD_SOLUTION)], self.log)
        self.log.info("PhotometricParameters %s (illumination correction: %s)", params,
                      used_ill.filename if used_ill is not None else "none")
        return params, None


def _photom_figure(fit: phot.PhotometricFit, meas: Measurements, path: Path) -> Any:
    from awe.image.inspect import new_figure, save_figure

    fig, axes = new_figure(ncols=2, nrows=2, size=(11.0, 8.5))
    res = fit.residual
    used = fit.used
    for chip in fit.chips:
        on = (meas.chip == chip) & used
        axes[0, 0].scatter(meas.airmass[on], res[on], s=10, label=chip)
        axes[0, 1].scatter(meas.mag_cat[on], res[on], s=10, label=chip)
        axes[1, 0].scatter(meas.x[on], res[on], s=10, label=chip)
        axes[1, 1].scatter(meas.y[on], res[on], s=10, label=chip)
    rejected = ~used & np.isfinite(res)
    for ax, values, label in ((axes[0, 0], meas.airmass, "airmass"),
                              (axes[0, 1], meas.mag_cat, "catalogue magnitude [mag]"),
                              (axes[1, 0], meas.x, "x on the chip [pix]"),
                              (axes[1, 1], meas.y, "y on the chip [pix]")):
        ax.scatter(values[rejected], res[rejected], marker="x", c="r", s=14, label="rejected")
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("residual [mag]")
    axes[0, 0].legend(fontsize=7)
    zps = ", ".join(f"{c} {fit.zeropoint[c]:.3f}" for c in fit.chips)
    fig.suptitle(f"zero points {zps}; extinction {fit.extinction:.4f} +- {fit.extinction_error:.4f}", fontsize=9)
    save_figure(fig, path)
    return None
