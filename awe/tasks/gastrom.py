"""The global astrometric solution (spec section 6): GAstromSourceListTask and GAstromTask.

::

    GAstromSourceListTask(instrument='WFI', chip='ccd50', object='3C273', commit=1).execute()
    GAstromTask(instrument='WFI', object='3C273', filter='#844', inspect=1, commit=1).execute()
    GAstromTask(instrument='WFI', object='3C273', chip='ccd50', commit=0).execute()   # that chip only

GAstromSourceListTask keeps, per reduced frame, the sources of the global solution (extraction with
:func:`awe.image.extract.extract` on the frame and its weight map; S/N above ``SNR_MIN``, unflagged) as
a :class:`~awe.model.gastrom.GAstromSourceList`. GAstromTask solves every chip of every exposure of a
field together (:func:`awe.image.gastrom.solve_global`: a distortion per chip shared by the exposures,
an offset and rotation per exposure, the stars seen in several exposures and the reference stars),
starting from each frame's per-chip AstrometricParameters when they exist, else from its header WCS,
and stores one :class:`~awe.model.gastrom.GAstrometric` per reduced frame. A failed solution (no
reference stars, no overlaps) raises :class:`~awe.tasks.base.TaskError`: nothing is made.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from awe.db.schema import DBObject
from awe.model.astrometry import AstrometricParameters, header_wcs, wcs_to_cards
from awe.model.frames import QualityFlags
from awe.model.gastrom import GAstrometric, GAstromSourceList
from awe.model.science import ReducedScienceFrame, WeightFrame
from awe.tasks.base import Check, Input, Task, TaskError, apply_checks, as_list, newest_of_each

__all__ = ["GAstromSourceListTask", "GAstromTask", "start_wcs"]

log = logging.getLogger(__name__)

_SELECTION = {
    "instrument": "instrument name ('WFI')",
    "object": "OBJECT of the reduced frames, wildcards allowed ('3C*')",
    "filter": "filter ('#844' or the ESO name)",
    "date": "observing night ('2003-03-03')",
}


def start_wcs(frame: ReducedScienceFrame) -> tuple[Any, Any]:
    """The WCS a reduced frame's global solution starts from, and the per-chip solution it is (or None).

    The frame's newest valid per-chip ``AstrometricParameters`` when there is one (a GAstrometric is not
    a start: a new global solution starts from the per-chip ones again), else its header WCS.
    """
    found = AstrometricParameters.for_frame(frame)
    if found is not None:
        return found.wcs, found
    try:
        return header_wcs(frame), None
    except ValueError as exc:
        raise TaskError(f"{exc}; the global astrometry needs a start WCS: the raw header's, or an "
                        "AstrometricParameters (AstrometricParametersTask)") from None


def _reduced_frames(task: Task, chip: str | None) -> list[ReducedScienceFrame]:
    """The newest valid reduced frame of every raw frame the task's selection names."""
    names = as_list(task.selection_values.get("red_filenames"))
    raws = as_list(task.selection_values.get("raw_filenames"))
    if names:
        frames = list(ReducedScienceFrame.filename.in_(names))
        missing = sorted(set(names) - {f.filename for f in frames})
        if missing:
            raise TaskError(f"{type(task).__name__}: no reduced frame named {missing}")
    elif raws:
        frames = list(ReducedScienceFrame.select(raw_filenames=raws))
    else:
        if task.selection_values.get("instrument") is None:
            name = type(task).__name__
            raise TypeError(f"{name} needs instrument= (with object=, chip=, filter=, date=), red_filenames= or "
                            f"raw_filenames=; see help({name})")
        frames = list(ReducedScienceFrame.select(
            instrument=task.selection_values.get("instrument"), chip=chip,
            filter=task.selection_values.get("filter"), date=task.selection_values.get("date"),
            object=task.selection_values.get("object")))
    newest = newest_of_each(frames, lambda f: f.raw.object_id if f.raw is not None else f.object_id)
    out = sorted(newest, key=lambda f: (f.DATE_OBS, f.chip.name if f.chip else "", f.filename))
    if not out:
        asked = {k: v for k, v in task.selection_values.items() if v is not None}
        raise TaskError(f"{type(task).__name__}: no valid reduced frame matches {asked}; reduce the raw frames "
                        "first (ReduceTask(instrument=..., chip=..., object=..., commit=1))")
    return out


# ============================================================================ the source lists
class GAstromSourceListTask(Task):
    """The sources of each reduced frame for the global astrometric solution (a GAstromSourceList).

    ``GAstromSourceListTask(instrument='WFI', chip='ccd50', object='3C273', commit=1)`` (also
    ``filter=``, ``date=``, or ``red_filenames=[...]``/``raw_filenames=[...]``): extraction on the frame
    with its weight map, the sources above ``SNR_MIN`` without flags, their pixel positions and errors and
    the sky positions of the start WCS (per-chip solution, else the header's).
    """

    products = (GAstromSourceList,)
    inputs = (Input(ReducedScienceFrame, "reduced", kind="product"), Input(WeightFrame, "weight", kind="product"),
              # the start: the per-chip solution when there is one (start_wcs), else the header WCS
              Input(AstrometricParameters, "start", kind="product", optional=True))
    unit = "per_frame"
    version = "3"  # 2: the per-chip start solution is a lineage input; 3: FLUX_RADIUS bounded by the AUTO aperture
    algorithm_modules = ("awe.image.extract", "awe.tasks.gastrom")
    selection = dict(_SELECTION, chip="chip name ('ccd50'); all chips when not given",
                     red_filenames="reduced frames by file name", raw_filenames="reduced frames of these raw files")

    def unit_selections(self) -> list[dict[str, Any]]:
        """One unit per reduced frame."""
        frames = _reduced_frames(self, self.selection_values.get("chip"))
        return [{"red_filenames": [f.filename]} for f in frames]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        made: list[tuple[DBObject, Path | None]] = []
        for frame in _reduced_frames(self, self.selection_values.get("chip")):
            made.append((self._source_list(frame), None))
        return made

    def _source_list(self, frame: ReducedScienceFrame) -> GAstromSourceList:
        from astropy.table import Table

        from awe.image.extract import extract
        weight = frame.weight
        if weight is None:
            raise TaskError(f"{frame.filename} has no valid weight map: reduce its raw frame again "
                            f"(ReduceTask(raw_filenames=[{frame.raw.filename!r}], redo=1, commit=1))")
        p = self.params(GAstromSourceList)
        wcs, per_chip = start_wcs(frame)
        obj = self.new_product(GAstromSourceList, {"reduced": frame, "weight": weight, "start": per_chip},
                               category="Sci", step="GAsrc", instrument=frame.instrument, chip=frame.chip,
                               filter=frame.filter, OBJECT=frame.OBJECT, DATE_OBS=frame.DATE_OBS)
        found = self.existing(obj)
        if found is not None:
            return found
        what = per_chip.filename if per_chip is not None else "header"
        data = frame.load()
        table = extract(data, weight.load(), threshold=float(p.DETECT_THRESHOLD), minarea=int(p.MINAREA),
                        gain=frame.gain)
        flags = np.asarray(table["flags"], dtype=int)
        keep = (np.asarray(table["snr"], dtype=float) > float(p.SNR_MIN)) & ((flags & ~int(p.MAX_FLAGS)) == 0)
        keep &= np.isfinite(np.asarray(table["x"], dtype=float)) & np.isfinite(np.asarray(table["xerr"], dtype=float))
        kept = table[keep]
        ra, dec = wcs.all_pix2world(np.asarray(kept["x"], dtype=float), np.asarray(kept["y"], dtype=float), 0)
        rows = Table({"ra": np.asarray(ra, dtype=float) % 360.0, "dec": np.asarray(dec, dtype=float),
                      **{c: np.asarray(kept[c], dtype=float) for c in
                         ("x", "y", "xerr", "yerr", "flux", "flux_err", "snr", "fwhm_pix")},
                      "flags": np.asarray(kept["flags"], dtype=np.int64)})
        obj.n_detected = len(table)
        obj.n_sources = len(rows)
        obj.start_wcs = what
        obj.__dict__["_pending_rows"] = rows
        self.log.info("%s: %d of %d sources kept (S/N > %g, flags outside %d: none), start WCS: %s",
                      frame.filename, len(rows), len(table), p.SNR_MIN, p.MAX_FLAGS, what)
        apply_checks(obj, [Check("sources for the global astrometry", float(len(rows)), float(p.MIN_SOURCES),
                                 "MIN_SOURCES", QualityFlags.FEW_INPUTS, minimum=True)], self.log)
        self.save_figure(obj, lambda path: obj.inspect(path=path))
        return obj


# ============================================================================ the global solution
class GAstromTask(Task):
    """One simultaneous astrometric solution of every chip of every dithered exposure of a field.

    ``GAstromTask(instrument='WFI', object='3C273', filter='#844', inspect=1, commit=1)`` (``chip=``: that
    chip's exposures only; ``date=``). Needs the frames' GAstromSourceLists (GAstromSourceListTask) and an
    astrometric reference catalogue covering the field. One GAstrometric per reduced frame; frames of
    several fields or filters are solved separately, one solution each. ``inspect=1`` saves the internal
    and external residuals (vectors over the field, histograms).
    """

    products = (GAstrometric,)
    inputs = (Input(GAstromSourceList, "source_list", kind="product"),
              Input(ReducedScienceFrame, "reduced", kind="product"))
    unit = "per_field"
    version = "2"  # 2: a frame is checked by its detections tied to the reference or another exposure
    algorithm_modules = ("awe.image.gastrom", "awe.tasks.gastrom")
    selection = dict(_SELECTION, chip="only this chip's exposures ('ccd50'); all chips when not given")

    def make(self) -> list[tuple[DBObject, Path | None]]:
        self.require("instrument")
        frames = _reduced_frames(self, self.selection_values.get("chip"))
        groups: dict[tuple[str, str], list[ReducedScienceFrame]] = {}
        for f in frames:
            groups.setdefault((f.OBJECT or "", f.filter.name if f.filter else ""), []).append(f)
        made: list[tuple[DBObject, Path | None]] = []
        for (field, filt), members in groups.items():
            self.log.info("global solution of %s in %s: %d frames", field, filt, len(members))
            made += self._solve(members)
        return made

    def _source_lists(self, frames: Sequence[ReducedScienceFrame]) -> list[GAstromSourceList]:
        lists = []
        missing = []
        for f in frames:
            # a list flagged for few sources still takes part (its frame is then tied by few stars)
            query = (GAstromSourceList.reduced.object_id == f.object_id) & (GAstromSourceList.is_valid != 0)
            found = query.max("creation_date")
            if found is None:
                missing.append(f)
            else:
                lists.append(found)
        if missing:
            chips = sorted({f.chip.name for f in missing if f.chip is not None})
            raise TaskError(
                f"GAstromTask: {len(missing)} reduced frame(s) have no GAstromSourceList (or only ones marked "
                f"is_valid=0) "
                f"({', '.join(f.filename for f in missing[:3])}{'...' if len(missing) > 3 else ''}); make them "
                f"first: GAstromSourceListTask(instrument={self.selection_values.get('instrument')!r}, "
                f"chip=<each of {chips}>, object={missing[0].OBJECT!r}, commit=1)")
        return lists

    def _solve(self, frames: list[ReducedScienceFrame]) -> list[tuple[DBObject, Path | None]]:
        from awe.image.gastrom import FrameSources, GAstromError, solve_global
        p = self.params(GAstrometric)
        lists = self._source_lists(frames)
        starts = [start_wcs(frame) for frame in frames]
        per_chip = [s for _, s in starts if s is not None]
        products = []
        for frame, sl in zip(frames, lists):
            obj = self.new_product(GAstrometric, {"reduced": frame, "source_list": sl, "solved_with": lists,
                                                  "start": per_chip},
                                   category="Sci", step="GAstr", instrument=frame.instrument, chip=frame.chip,
                                   filter=frame.filter, OBJECT=frame.OBJECT, DATE_OBS=frame.DATE_OBS)
            products.append(obj)
        found = [self.existing(obj) for obj in products]
        if all(f is not None for f in found):
            return [(f, None) for f in found if f is not None]
        inputs = []
        for frame, sl, (wcs, solved) in zip(frames, lists, starts):
            table = sl.sources()
            err = np.maximum(np.asarray(table["xerr"], dtype=float), np.asarray(table["yerr"], dtype=float))
            exposure = frame.raw.raw_file if frame.raw is not None and frame.raw.raw_file else str(frame.DATE_OBS)
            inputs.append(FrameSources(key=frame.filename, exposure=exposure, chip=frame.chip.name,
                                       x=np.asarray(table["x"], dtype=float), y=np.asarray(table["y"], dtype=float),
                                       err=err, wcs=wcs, shape=(int(frame.NAXIS2), int(frame.NAXIS1)),
                                       solved=solved is not None))
        header_start = len(per_chip) < len(frames)
        self.log.info("start WCS: %d per-chip solution(s), %d header WCS", len(per_chip), len(frames) - len(per_chip))
        from astropy.time import Time
        dates = [f.DATE_OBS for f in frames if f.DATE_OBS is not None]
        mean_epoch = float(np.mean([Time(d).jyear for d in dates])) if dates else None
        ref, catalogs, epoch = self._reference(inputs, mean_epoch)
        try:
            solution = solve_global(inputs, ref["ra"], ref["dec"], ref["err"], order=int(p.DISTORTION_ORDER),
                                    header_start=header_start,
                                    match_radius_arcsec=float(p.MATCH_RADIUS) if not header_start else None,
                                    clip=float(p.CLIP), min_ref=int(p.MIN_REF), min_pairs=int(p.MIN_PAIRS))
        except GAstromError as exc:
            names = ", ".join(sorted({f.OBJECT or "" for f in frames}))
            raise TaskError(f"GAstromTask: no global solution for {names} ({len(frames)} frames): {exc}") from None
        key = hashlib.sha1("".join(sorted(o.provenance for o in products)).encode()).hexdigest()
        made: list[tuple[DBObject, Path | None]] = []
        for obj, frame, fin in zip(products, frames, inputs):
            result = solution.frames[fin.key]
            w = result.wcs
            obj.wcs_cards = wcs_to_cards(w)
            obj.start_wcs = "header" if header_start else "AstrometricParameters"
            obj.reference_catalog = catalogs
            obj.reference_epoch = epoch
            obj.distortion_order = solution.order
            obj.rms_ra, obj.rms_dec, obj.n_ref = _finite(result.rms_ra), _finite(result.rms_dec), result.n_ref
            obj.frame_rms_internal, obj.n_overlap = _finite(result.rms_internal), result.n_overlap
            obj.rms_internal, obj.rms_external = _finite(solution.rms_internal), _finite(solution.rms_external)
            obj.n_pairs, obj.n_ref_stars, obj.n_stars = solution.n_pairs, solution.n_ref, solution.n_stars
            obj.n_frames, obj.n_rejected = len(frames), solution.n_rejected
            obj.pointing_offset_ra, obj.pointing_offset_dec, obj.pointing_rotation = result.pointing
            obj.solution_key = key
            pixel = float(np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix)))) * 3600.0
            internal_pix = result.rms_internal / pixel if math.isfinite(result.rms_internal) else None
            external = math.hypot(result.rms_ra, result.rms_dec) / math.sqrt(2.0) \
                if math.isfinite(result.rms_ra) else None
            apply_checks(obj, [
                Check("internal rms between exposures [pix]", internal_pix, float(p.MAX_RMS_INTERNAL),
                      "MAX_RMS_INTERNAL", QualityFlags.BAD_SOLUTION),
                Check("rms against the reference [arcsec]", external, float(p.MAX_RMS_EXTERNAL), "MAX_RMS_EXTERNAL",
                      QualityFlags.BAD_SOLUTION),
                Check("detections tied to the reference or another exposure", float(result.n_tied),
                      float(p.MIN_FRAME_REF),
                      "MIN_FRAME_REF", QualityFlags.BAD_SOLUTION, minimum=True),
            ], self.log)
            made.append((obj, None))
        self.log.info("GAstromTask: %d frames, internal rms %.4f\", external rms %.4f\", %d pairs, %d reference "
                      "stars", len(frames), solution.rms_internal, solution.rms_external, solution.n_pairs,
                      solution.n_ref)
        self.save_figure(products[0], lambda path: draw_residuals(solution, inputs, path), "residuals")
        return made

    def _reference(self, frames: Sequence[Any], epoch: float | None = None
                   ) -> tuple[dict[str, np.ndarray], str, float | None]:
        """The astrometric reference stars around the frames (positions moved by their proper motions to
        ``epoch``, a Julian year, when given): ra, dec [deg], err [arcsec]; the catalogues; the epoch."""
        from awe.image.gastrom import from_tangent_plane, tangent_plane
        from awe.model.refcat import refcat_sources
        corners = []
        for f in frames:
            ny, nx = f.shape
            ra, dec = f.wcs.all_pix2world([0, nx - 1, 0, nx - 1], [0, 0, ny - 1, ny - 1], 0)
            corners += list(zip(ra, dec))
        ra_c, dec_c = corners[0]
        xi, eta = tangent_plane([c[0] for c in corners], [c[1] for c in corners], ra_c, dec_c)
        centre = from_tangent_plane((xi.max() + xi.min()) / 2, (eta.max() + eta.min()) / 2, ra_c, dec_c)
        radius = float(np.hypot(xi.max() - xi.min(), eta.max() - eta.min())) / 2 + 2.0 / 60
        try:
            table = refcat_sources("astrometric", float(centre[0]), float(centre[1]), radius, epoch=epoch)
        except LookupError as exc:
            raise TaskError(f"GAstromTask: {exc}; load one with `awe refcat FILE --kind astrometric`") from None
        err = _position_errors(table)
        names = sorted({str(c) for c in table["catalog"]}) if "catalog" in table.colnames else []
        epoch = float(table.meta["epoch"]) if table.meta.get("epoch") is not None else None
        self.log.info("%d astrometric reference stars within %.3f deg of %.5f %+.5f (%s)", len(table), radius,
                      centre[0], centre[1], ", ".join(names))
        return ({"ra": np.asarray(table["ra"], dtype=float), "dec": np.asarray(table["dec"], dtype=float),
                 "err": err}, ", ".join(names)[:255], epoch)


def _position_errors(table: Any) -> np.ndarray:
    """Per-axis position errors [arcsec] of reference stars: ra_err/dec_err columns, the extra columns'
    RA_ERR/DEC_ERR, else 0.2 arcsec."""
    n = len(table)
    for a, b in (("ra_err", "dec_err"), ("RA_ERR", "DEC_ERR")):
        if a in table.colnames and b in table.colnames:
            ea, eb = np.asarray(table[a], dtype=float), np.asarray(table[b], dtype=float)
            unit = getattr(table[a], "unit", None)
            if unit is not None and str(unit) not in ("", "arcsec"):
                import astropy.units as u
                factor = float((1 * u.Unit(str(unit))).to(u.arcsec).value)
                ea, eb = ea * factor, eb * factor
            return np.maximum(ea, eb)
    if "extra" in table.colnames:
        out = np.full(n, np.nan)
        for i, extra in enumerate(table["extra"]):
            if isinstance(extra, dict):
                found = [extra.get(k) for k in ("RA_ERR", "DEC_ERR", "ra_err", "dec_err", "e_RAJ2000", "e_DEJ2000")]
                values = [float(v) for v in found if isinstance(v, (int, float))]
                if values:
                    out[i] = max(values)
        if np.isfinite(out).any():
            return np.where(np.isfinite(out), out, np.nanmedian(out))
    return np.full(n, 0.2)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def draw_residuals(solution: Any, frames: Sequence[Any], path: Path | None = None) -> Any:
    """The QA figure of a global solution: internal and external residual vectors over the field, and their
    histograms; returns the figure."""
    import matplotlib.pyplot as plt

    from awe.image.gastrom import tangent_plane
    res = solution.residuals
    frame_idx = np.asarray(res["frame"], dtype=int)
    xi = np.full(len(frame_idx), np.nan)
    eta = np.full(len(frame_idx), np.nan)
    for k, f in enumerate(frames):
        sel = frame_idx == k
        ra, dec = solution.frames[f.key].wcs.all_pix2world(res["x"][sel], res["y"][sel], 0)
        xi[sel], eta[sel] = tangent_plane(ra, dec, *solution.tangent_point)
    used = np.asarray(res["used"], dtype=bool)
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for row, (dx, dy, what, rms) in enumerate(((res["dxi"], res["deta"], "internal", solution.rms_internal),
                                               (res["rxi"], res["reta"], "external", solution.rms_external))):
        ok = used & np.isfinite(dx) & np.isfinite(dy)
        ax = axes[row, 0]
        arrow = 2 * rms if math.isfinite(rms) and rms > 0 else 0.1  # arcsec drawn as 1 arcmin
        ax.quiver(xi[ok] * 60, eta[ok] * 60, dx[ok], dy[ok], angles="xy", scale_units="xy", scale=arrow,
                  width=0.002)
        ax.set_xlabel("xi [arcmin]")
        ax.set_ylabel("eta [arcmin]")
        ax.set_aspect("equal")
        ax.invert_xaxis()
        ax.set_title(f"{what} residuals (an arrow of 1' is {arrow:.3f}\")\nrms {rms:.3f}\" per axis, "
                     f"{int(ok.sum())} detections", fontsize=8)
        ax = axes[row, 1]
        span = max(4 * rms, 0.05) if math.isfinite(rms) else 1.0
        bins = np.linspace(-span, span, 41)
        ax.hist(np.asarray(dx)[ok], bins=bins, histtype="step", label="xi (RA)")
        ax.hist(np.asarray(dy)[ok], bins=bins, histtype="step", label="eta (Dec)")
        ax.set_xlabel(f"{what} residual [arcsec]")
        ax.legend(fontsize=7)
    fig.suptitle(f"global astrometric solution: {len(frames)} frames, {solution.n_stars} stars, "
                 f"{solution.n_pairs} pairs, {solution.n_ref} reference stars, order {solution.order}", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
