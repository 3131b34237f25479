"""The per-chip astrometric solution (spec section 6): AstrometricParametersTask.

::

    AstrometricParametersTask(raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], inspect=1, commit=1).execute()
    AstrometricParametersTask(red_filenames=[red.filename], commit=0).execute()
    AstrometricParametersTask(instrument='WFI', chip='ccd50', object='3C*', commit=1).execute()

For each selected reduced frame (the newest valid one of each raw frame):

1. its sources (:func:`awe.image.extract.extract` with the weight map; S/N above ``SNR_MIN``, neither
   saturated nor truncated), brightest first;
2. the astrometric reference stars on and around it (``refcat_sources('astrometric', ...)``, the
   positions moved by their proper motions to the epoch of DATE-OBS);
3. :func:`awe.image.astrometry.solve_astrometry`, starting from the frame's header WCS: a pattern match
   (rotation and shift, robust to a header off by ``MAX_OFFSET`` and ``MAX_ROTATION``), then nearest-
   neighbour matching and a sigma-clipped TAN-SIP fit in turn, the distortion order up to
   ``DISTORTION_ORDER`` chosen by leave-one-out prediction;
4. an :class:`~awe.model.astrometry.AstrometricParameters` with the solution's keywords, its rms and
   matched stars (catalogue rows), quality flags (``MIN_REF``: FEW_INPUTS, ``MAX_RMS``: BAD_SOLUTION) and,
   with ``inspect=1``, the figure of residual vectors over the chip and residual histograms.

A frame that cannot be solved (too few sources, no reference star on it, no match: a pointing degrees
off) raises :class:`~awe.tasks.base.TaskError` naming it and what to do: nothing is made or committed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from awe.db.schema import DBObject
from awe.model.astrometry import AstrometricParameters, header_wcs, wcs_to_cards
from awe.model.frames import QualityFlags
from awe.model.refcat import ReferenceCatalog
from awe.model.science import ReducedScienceFrame
from awe.tasks.base import Check, Input, Task, TaskError, apply_checks, as_list

__all__ = ["AstrometricParametersTask", "reduced_frames", "saturation_level"]

log = logging.getLogger(__name__)


def reduced_frames(task: Task) -> list[ReducedScienceFrame]:
    """The newest valid reduced frame of every frame the task's selection names (``red_filenames``,
    ``raw_filenames`` or ``instrument`` with ``chip``, ``object``, ``filter``, ``date``)."""
    values = task.selection_values
    names = as_list(values.get("red_filenames"))
    raws = as_list(values.get("raw_filenames"))
    name = type(task).__name__
    if names:
        frames = [f for f in ReducedScienceFrame.filename.in_(names) if f.is_valid]
        missing = sorted(set(names) - {f.filename for f in frames})
        if missing:
            raise TaskError(f"{name}: no valid reduced frame named {missing}")
    elif raws:
        frames = list(ReducedScienceFrame.select(raw_filenames=raws))
        missing = sorted(set(raws) - {f.raw.filename for f in frames if f.raw is not None})
        if missing:
            raise TaskError(f"{name}: {missing} have no valid reduced frame; reduce them first "
                            f"(ReduceTask(raw_filenames={missing!r}, commit=1))")
    else:
        if values.get("instrument") is None:
            raise TypeError(f"{name} needs red_filenames=, raw_filenames= or instrument= (with chip=, object=, "
                            f"filter=, date=); see help({name})")
        frames = list(ReducedScienceFrame.select(instrument=values.get("instrument"), chip=values.get("chip"),
                                                 filter=values.get("filter"), date=values.get("date"),
                                                 object=values.get("object")))
    newest: dict[Any, ReducedScienceFrame] = {}
    for f in frames:
        key = f.raw.object_id if f.raw is not None else f.object_id
        if key not in newest or (f.creation_date, f.object_id) > (newest[key].creation_date, newest[key].object_id):
            newest[key] = f
    out = sorted(newest.values(), key=lambda f: (f.DATE_OBS, f.chip.name if f.chip else "", f.filename))
    if not out:
        asked = {k: v for k, v in values.items() if v is not None}
        raise TaskError(f"{name}: no valid reduced frame matches {asked}; reduce the raw frames first "
                        "(ReduceTask(instrument=..., chip=..., object=..., commit=1))")
    return out


def saturation_level(frame: ReducedScienceFrame) -> float | None:
    """The level in the reduced frame above which a pixel is saturated (ADU, conservative).

    The raw saturation level (``SATURATION_LEVEL`` of the reduction, else the instrument's) minus the
    master bias level, divided by the highest normalised flat response (taken as 1.1); the overscan
    level, not subtracted here, makes it lower still.
    """
    from awe.instruments import get_instrument

    params = (frame.process_params or {}).get("process_params", {})
    level = float(params.get("SATURATION_LEVEL") or 0.0)
    if level <= 0 and frame.instrument is not None:
        try:
            level = float(get_instrument(frame.instrument.name).saturation)
        except (KeyError, ValueError, AttributeError):
            level = 0.0
    if level <= 0:
        return None
    bias = frame.bias
    bias_level = float(bias.imstat.median) if bias is not None and bias.imstat is not None and \
        bias.imstat.median is not None else 0.0
    return (level - bias_level) / 1.1


class AstrometricParametersTask(Task):
    """The astrometric solution of each reduced frame against the astrometric reference catalogue.

    ``AstrometricParametersTask(raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], inspect=1, commit=1)``
    (or ``red_filenames=[...]``, or ``instrument='WFI', chip='ccd50', object='3C*'``): extraction, pattern
    matching from the header WCS, a sigma-clipped TAN-SIP fit; one AstrometricParameters per frame.
    ``inspect=1`` saves the residual vectors over the chip and the residual histograms.
    """

    products = (AstrometricParameters,)
    inputs = (Input(ReducedScienceFrame, "reduced", kind="product"),
              Input(ReferenceCatalog, "reference", kind="product"))
    unit = "per_frame"
    version = "3"  # 2: a frame without a measured seeing is extracted for its reduction's ASSUMED_SEEING (was 2 px);
    # 3: FLUX_RADIUS (and the windowed centroid sized by it) from a growth curve bounded by the AUTO aperture
    algorithm_modules = ("awe.image.extract", "awe.image.astrometry", "awe.tasks.astrometry")
    selection = {
        "red_filenames": "reduced frames by file name",
        "raw_filenames": "the reduced frames of these raw chip files ('WFI.2003-03-04T04:42:29.496_1.fits')",
        "instrument": "instrument name ('WFI')",
        "chip": "chip name ('ccd50'); all chips when not given",
        "object": "OBJECT of the frames, wildcards allowed ('3C*')",
        "filter": "filter ('#844')",
        "date": "observing night ('2003-03-03')",
    }

    def unit_selections(self) -> list[dict[str, Any]]:
        """One unit per reduced frame."""
        frames = reduced_frames(self)
        self.log.info("astrometry of %d reduced frame(s)", len(frames))
        return [{"red_filenames": [f.filename]} for f in frames]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        return [(self._solve(frame), None) for frame in reduced_frames(self)]

    # ------------------------------------------------------------ one frame
    def _solve(self, frame: ReducedScienceFrame) -> AstrometricParameters:
        from astropy.table import Table
        from astropy.time import Time

        from awe.image.astrometry import AstrometryError, solve_astrometry
        from awe.image.extract import FLAG_SATURATED, FLAG_TRUNCATED, extract

        p = self.params(AstrometricParameters)
        what = f"{frame.raw.filename if frame.raw is not None else frame.filename} ({frame.OBJECT}, " \
               f"{frame.chip.name if frame.chip else '?'})"
        weight = frame.weight
        if weight is None:
            raise TaskError(f"{what}: the reduced frame {frame.filename} has no valid weight map; reduce it again "
                            "(ReduceTask(raw_filenames=[...], redo=1, commit=1))")
        try:
            start = header_wcs(frame)
        except ValueError as exc:
            raise TaskError(f"{what}: {exc}; the astrometry starts from the header WCS") from None
        ny, nx = int(frame.NAXIS2), int(frame.NAXIS1)
        epoch = float(Time(frame.DATE_OBS).jyear) if frame.DATE_OBS is not None else None
        refs, catalogs = self._reference(start, (ny, nx), float(p.MAX_OFFSET), epoch, what)
        obj = self.new_product(AstrometricParameters, {"reduced": frame, "reference": catalogs}, category="Sci",
                               step="Astrom", instrument=frame.instrument, chip=frame.chip, filter=frame.filter,
                               OBJECT=frame.OBJECT, DATE_OBS=frame.DATE_OBS)
        found = self.existing(obj)
        if found is not None:
            return found

        data = frame.load()
        pixel = float(np.sqrt(abs(np.linalg.det(start.pixel_scale_matrix)))) * 3600.0
        fwhm_pix = frame.seeing_or_assumed / pixel
        minarea = int(p.MINAREA) or (3 if fwhm_pix < 2.0 else 5)
        if frame.seeing is None:
            self.log.info("%s: no seeing measured; the extraction assumes the reduction's %.2f\" (%.2f pixels)",
                          what, frame.seeing_or_assumed, fwhm_pix)
        sources = extract(data, weight.load(), threshold=float(p.DETECT_THRESHOLD), minarea=minarea,
                          saturation=saturation_level(frame), gain=frame.gain)
        flags = np.asarray(sources["flags"], dtype=int)
        usable = (np.asarray(sources["snr"], float) > float(p.SNR_MIN)) & \
            ((flags & (FLAG_SATURATED | FLAG_TRUNCATED)) == 0) & np.isfinite(np.asarray(sources["x"], float))
        det = sources[usable]
        xerr = np.nan_to_num(np.asarray(det["xerr"], float), nan=0.1)
        yerr = np.nan_to_num(np.asarray(det["yerr"], float), nan=0.1)
        pos_err = np.maximum(np.hypot(xerr, yerr) / math.sqrt(2.0) * pixel, 0.01)
        ref_err = np.hypot(np.asarray(refs["ra_err"], float), np.asarray(refs["dec_err"], float)) / math.sqrt(2.0)
        ref_err = np.where(np.isfinite(ref_err) & (ref_err > 0), ref_err, float(p.REF_ERROR))
        dateobs = frame.DATE_OBS.isoformat() if frame.DATE_OBS is not None else None
        self.log.info("%s: %d of %d sources usable (S/N > %g, minarea %d), %d reference stars at epoch %s; start: "
                      "the header WCS", what, len(det), len(sources), p.SNR_MIN, minarea, len(refs),
                      f"{epoch:.3f}" if epoch else "of the catalogue")
        try:
            solution = solve_astrometry(np.asarray(det["x"], float), np.asarray(det["y"], float), pos_err,
                                        np.asarray(refs["ra"], float), np.asarray(refs["dec"], float), ref_err,
                                        start, (ny, nx), order=int(p.DISTORTION_ORDER), clip=float(p.CLIP),
                                        max_offset=float(p.MAX_OFFSET), max_rotation=float(p.MAX_ROTATION),
                                        min_matches=int(p.MIN_MATCHES), dateobs=dateobs)
        except AstrometryError as exc:
            raise TaskError(f"AstrometricParametersTask: no astrometric solution for {what}: {exc}") from None

        obj.wcs_cards = wcs_to_cards(solution.wcs)
        obj.distortion_order = solution.order
        obj.rms_ra, obj.rms_dec = _finite(solution.rms_ra), _finite(solution.rms_dec)
        obj.n_ref = solution.n_ref
        obj.n_rejected = int(solution.rejected.sum())
        obj.n_detected = len(sources)
        obj.n_reference = len(refs)
        obj.reference_epoch = epoch
        obj.start_offset_ra, obj.start_offset_dec = solution.start_offset
        obj.start_rotation = solution.start_rotation
        obj.match_significance = _finite(solution.pattern.significance)
        d, r = solution.det_index, solution.ref_index
        obj.__dict__["_pending_rows"] = Table({
            "ra": np.asarray(refs["ra"], float)[r], "dec": np.asarray(refs["dec"], float)[r],
            "x": np.asarray(det["x"], float)[d], "y": np.asarray(det["y"], float)[d],
            "xerr": xerr[d], "yerr": yerr[d], "dra": solution.dxi, "ddec": solution.deta,
            "ref_err": ref_err[r], "ref_mag": np.asarray(refs["mag"], float)[r],
            "snr": np.asarray(det["snr"], float)[d], "flags": np.asarray(det["flags"], np.int64)[d],
            "rejected": np.asarray(solution.rejected, bool)})
        apply_checks(obj, [
            Check("matched reference stars", float(solution.n_ref), float(p.MIN_REF), "MIN_REF",
                  QualityFlags.FEW_INPUTS, minimum=True),
            Check("rms about the reference [arcsec]", max(solution.rms_ra, solution.rms_dec), float(p.MAX_RMS),
                  "MAX_RMS", QualityFlags.BAD_SOLUTION),
        ], self.log)
        self.log.info("%s: order %d, %d reference stars (%d rejected), rms %.3f\" / %.3f\"; the header WCS was "
                      "%.1f\", %.1f\" and %.3f deg off", what, solution.order, solution.n_ref, obj.n_rejected,
                      solution.rms_ra, solution.rms_dec, *solution.start_offset, solution.start_rotation)
        self.save_figure(obj, lambda path: obj.inspect(path=path))
        return obj

    def _reference(self, start: Any, shape: tuple[int, int], margin_arcsec: float, epoch: float | None,
                   what: str) -> tuple[Any, list[ReferenceCatalog]]:
        """The astrometric reference stars within the frame's radius plus ``margin`` of its centre, brightest
        first, at ``epoch``; and the catalogues they come from."""
        from awe.image.astrometry import tangent_plane
        from awe.model.refcat import refcat_sources

        ny, nx = shape
        centre = start.all_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0]], 0)[0]
        corner = start.all_pix2world([[0.0, 0.0]], 0)[0]
        cx, cy = tangent_plane([corner[0]], [corner[1]], float(centre[0]), float(centre[1]))
        radius = float(np.hypot(cx[0], cy[0])) + (margin_arcsec + 60.0) / 3600.0
        try:
            refs = refcat_sources("astrometric", float(centre[0]), float(centre[1]), radius, epoch=epoch)
        except LookupError as exc:
            raise TaskError(f"AstrometricParametersTask: {what}: {exc}") from None
        if len(refs) == 0:
            raise TaskError(f"AstrometricParametersTask: no astrometric reference star within {radius * 60:.1f}' of "
                            f"{what} (RA {centre[0]:.4f}, Dec {centre[1]:.4f} from its header): load a reference "
                            "catalogue covering the field (awe refcat FILE --kind astrometric), or check the "
                            "header's pointing")
        mag = np.asarray(refs["mag"], float)
        refs = refs[np.argsort(np.where(np.isfinite(mag), mag, np.inf), kind="stable")]
        names = list(refs.meta.get("catalogs", []))
        catalogs = sorted(ReferenceCatalog.filename.in_(names), key=lambda c: c.filename) if names else []
        return refs, catalogs


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
