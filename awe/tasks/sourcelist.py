"""Source lists and their association (spec section 10): SourceListTask, AssociateListTask.

::

    SourceListTask(filenames=[frame.filename], commit=1).execute()
    AssociateListTask(ids=[(sl1.SLID, 's'), (sl2.SLID, 's')], radius=1.0, commit=1).execute()

**SourceListTask** works on any image product -- a reduced frame, a regridded frame, a coadd -- through what
every one of them has (duck-typed, nothing specific to one class):

* the pixels (``load()``) and the weight map: a regridded frame's or coadd's own ``WEIGHT`` extension
  (``weight_map()``; a file without one is refused), else ``image.weight`` (a product with ``load()`` or an
  array; none: uniform noise, logged);
* saturated pixels: a reduced frame's saturation level, a regridded frame's or coadd's flag map
  (``flag_map()``: bit 4, saturated in an input; those pixels have weight 0 but the star is detected whole
  and flagged 4 in FLAGS);
* the WCS: a reduced frame's best solution (:func:`awe.model.astrometry.best_wcs`: GAstrometric, else
  AstrometricParameters, else its header), any other image's header WCS;
* the zero point: the image's own ``zeropoint`` (a coadd's or regridded frame's: ``mag = -2.5 log10(ADU) +
  zeropoint``), else the chip's PhotometricParameters for the image's night and filter with its airmass and
  exposure time (``zeropoint - extinction * AIRMASS + 2.5 log10(EXPTIME)``), else ``MAG_ZEROPOINT``
  (logged as a WARNING: instrumental magnitudes).

Extraction (:func:`awe.image.extract.extract`, SExtractor's detection with the weight map), circular apertures
(measured by the extraction: :func:`awe.image.extract.aperture_flux`'s numbers), the AUTO (Kron) flux, shapes
and flags, and a stellarity (:mod:`awe.image.stellarity`) calibrated on the image's own stars; one
:class:`~awe.model.sourcelist.SourceList` with its :class:`~awe.model.sourcelist.Source` rows. A file that is
not an image product raises :class:`~awe.tasks.base.TaskError` naming it: nothing is made.

**AssociateListTask** matches the sources of two or more lists ('s': a SourceList's SLID, 'a': an
AssociateList's id, whose associations are extended) one-to-one on the sky: every pair of sources of two
inputs closer than ``SEARCH_DISTANCE`` is a candidate, the closest pairs are taken first, and a source takes
part in one pair at most. An association's position is the mean of its members'. Unmatched sources are
associations of their own (``n_single``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from awe.db.schema import DBObject
from awe.image.weights import grow_mask
from awe.model.frames import BaseFrame, QualityFlags
from awe.model.science import ReducedScienceFrame
from awe.model.sourcelist import N_APERTURES, AssociateList, SourceList, image_wcs
from awe.tasks.base import Input, MissingCalibrationError, Task, TaskError, as_list

__all__ = ["SourceListTask", "AssociateListTask", "measure_sources", "image_product", "image_weight", "image_wcs",
           "image_zeropoint", "image_saturated", "fill_saturated",
           "associate"]

log = logging.getLogger(__name__)

_LN10 = 2.5 / math.log(10.0)


# ============================================================================ what an image product offers
def image_product(name: str, task: str = "SourceListTask") -> BaseFrame:
    """The current image product named ``name`` (a file name in the database); ``TaskError`` when there is
    none or it is not an image of the sky (a raw frame, a calibration frame, a weight map, a catalogue)."""
    from awe.model.calibration import CalibrationFrame
    from awe.model.frames import RawFrame
    from awe.model.science import SatelliteMap, WeightFrame

    if not isinstance(name, str) or not name:
        raise TaskError(f"{task}: {name!r} is not a file name: give the filename of an image product (e.g. "
                        "filenames=[frame.filename])")
    found = (DBObject.filename == name).max("creation_date")
    if found is None:
        path = Path(name)
        hint = (" (a local file: awe products are found by their file name in the database; ingest raw files "
                "with 'awe ingest', reduce them with ReduceTask)") if path.exists() else ""
        raise TaskError(f"{task}: no product named {name!r}{hint}")
    if not isinstance(found, BaseFrame) or isinstance(found, (RawFrame, CalibrationFrame, WeightFrame, SatelliteMap)) \
            or found.checksum is None:
        raise TaskError(f"{task}: {name} is a {type(found).__name__}, not an image product of the sky: give a "
                        "reduced, regridded or coadded frame (ReducedScienceFrame, RegriddedFrame, "
                        "CoaddedRegriddedFrame)")
    if found.is_valid == 0:
        raise TaskError(f"{task}: {name} is marked invalid (is_valid=0); give a valid image")
    return found


def image_weight(image: Any) -> tuple[np.ndarray | None, Any]:
    """The weight map of an image product: (array or None, the weight product or None).

    An image with its own weight extension (``weight_map()``: a regridded frame, a coadd) must have it:
    ``TaskError`` naming the file otherwise (its weight product is then None: the weight is in its file)."""
    own = getattr(image, "weight_map", None)
    if callable(own):
        try:
            array = np.asarray(own())
        except (KeyError, OSError, ValueError) as exc:
            raise TaskError(f"SourceListTask: {image.filename} ({type(image).__name__}) has no readable WEIGHT "
                            f"extension ({exc}): remake it (RegridTask / CoaddTask write the values, WEIGHT and "
                            "FLAGS)") from None
        return array, None
    weight = getattr(image, "weight", None)
    if weight is None:
        return None, None
    if isinstance(weight, np.ndarray):
        return weight, None
    if hasattr(weight, "load"):
        return np.asarray(weight.load()), weight
    raise TaskError(f"{image.filename}: its weight {weight!r} is neither an array nor a product with load()")


def image_zeropoint(image: Any, logger: logging.Logger, default: float) -> tuple[float, Any, str]:
    """The zero point of ADU sums on an image: (zero point, the PhotometricParameters used or None, source)."""
    own = getattr(image, "zeropoint", None)
    if own is not None and math.isfinite(float(own)):
        return float(own), None, f"zeropoint of {type(image).__name__} {image.filename}"
    from awe.model.photometry import PhotometricParameters
    from awe.tasks.base import select_calibration
    if getattr(image, "chip", None) is not None and getattr(image, "instrument", None) is not None:
        try:
            params: Any = select_calibration(PhotometricParameters, image, logger, filter=True)
        except MissingCalibrationError as exc:
            logger.warning("%s: no photometric calibration (%s); magnitudes on MAG_ZEROPOINT = %g", image.filename,
                           exc, default)
        else:
            exptime, airmass = float(image.EXPTIME or 0.0), float(image.AIRMASS or 0.0)
            if not exptime > 0:
                raise TaskError(f"{image.filename}: EXPTIME {image.EXPTIME} is not positive: the zero point of "
                                f"{params.filename} is per second")
            frame_ill = getattr(getattr(image, "illumination", None), "object_id", None)
            used_ill = getattr(params.illumination, "object_id", None)
            if frame_ill != used_ill:
                logger.warning("%s was reduced %s the illumination correction the zero point %s assumes (%s)",
                               image.filename, "with" if frame_ill else "without", params.filename,
                               params.illumination.filename if params.illumination else "none")
            zp = float(params.zeropoint) - float(params.extinction) * airmass + 2.5 * math.log10(exptime)
            return zp, params, (f"PhotometricParameters {params.filename} at airmass {airmass:.3f}, "
                                f"{exptime:g} s")
    else:
        logger.warning("%s has neither a zeropoint nor a chip for a photometric calibration; magnitudes on "
                       "MAG_ZEROPOINT = %g", image.filename, default)
    return float(default), None, "MAG_ZEROPOINT"


def image_saturated(image: Any) -> np.ndarray | None:
    """The pixels saturated in the inputs of a regridded frame or coadd (its ``flag_map()``, bit 4), else None."""
    flags = getattr(image, "flag_map", None)
    if not callable(flags):
        return None
    from awe.model.regrid import FLAG_SATURATED
    try:
        return (np.asarray(flags()) & FLAG_SATURATED) != 0
    except (KeyError, OSError, ValueError) as exc:
        raise TaskError(f"SourceListTask: {image.filename} ({type(image).__name__}) has no readable FLAGS extension "
                        f"({exc}): remake it (RegridTask / CoaddTask)") from None


def fill_saturated(data: np.ndarray, saturated: np.ndarray) -> np.ndarray:
    """``data`` with each region of ``saturated`` pixels raised to at least the brightest pixel around it.

    A coadd or regridded frame has no data (weight 0, value 0) where an input was saturated: a saturated star
    would be detected as a ring of fragments around its core. Raised to the level of the ring, the core makes
    one detection (the measurements mask those pixels anyway: they carry no flux)."""
    from scipy import ndimage as ndi
    if not saturated.any():
        return data
    labels, n = ndi.label(grow_mask(saturated, 1))
    ring = np.where(saturated, 0, labels)
    # each region's brightest ring pixel, from the ring pixels alone (scipy's labelled maximum sorts the whole
    # frame: 24 s of a full-size coadd)
    where = np.flatnonzero(ring)
    top = np.full(n, -np.inf, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # a NaN stays NaN (then 0), as in scipy's
        np.maximum.at(top, ring.ravel()[where] - 1, np.asarray(data, dtype=np.float32).ravel()[where])
    top = np.where(np.isfinite(top), top, 0.0).astype(np.float32)
    out = data.copy()
    values = np.nan_to_num(out[saturated], nan=0.0)
    out[saturated] = np.maximum(values, top[labels[saturated] - 1])
    return out


def _saturation(image: Any) -> float | None:
    if isinstance(image, ReducedScienceFrame):
        from awe.tasks.astrometry import saturation_level
        return saturation_level(image)
    value = getattr(image, "saturation", None)
    return float(value) if value is not None else None


def _magnitudes(flux: np.ndarray, err: np.ndarray, zp: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)) + zp, np.nan)
        magerr = np.where(flux > 0, _LN10 * err / np.where(flux > 0, flux, 1.0), np.nan)
    return mag, magerr


# ============================================================================ SourceListTask
def measure_sources(data: np.ndarray, weight: np.ndarray | None, wcs: Any, zeropoint: float, *,
                    threshold: float = 1.5, minarea: int = 5, deblend_cont: float = 0.005,
                    diameters: list[float] | tuple[float, ...] = (3.0, 6.0, 12.0), saturation: float | None = None,
                    gain: float | None = None, stellarity_snr: float = 30.0, fwhm_pix: float | None = None,
                    saturated: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """The source list of an image (pure: arrays and a WCS in, the :class:`~awe.model.sourcelist.Source`
    columns out, SID 1.. brightest first).

    ``diameters`` [arcsec] of the circular apertures; ``zeropoint``: ``MAG = -2.5 log10(FLUX) + zeropoint``;
    ``fwhm_pix``: the seeing, the PSF's size when too few bright stars calibrate CLASS_STAR; ``saturated``: a map
    of pixels known to be saturated (besides ``data >= saturation``). Returns the table
    and ``{'locus', 'mag_limit', 'background', 'background_rms', 'pixel_scale'}``; ``ValueError`` when
    CLASS_STAR cannot be calibrated.
    """
    from astropy.table import Table

    from awe.image.extract import extract
    from awe.image.stellarity import class_star, psf_locus

    zp = float(zeropoint)
    scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    # the apertures are measured with the extraction (every aperture of every source in one pass, on the
    # extraction's background, noise map and bad pixels); their flags (bad pixels, edges inside the large
    # apertures) are not SExtractor's FLAGS, which describe the detection and the AUTO measurement
    k = len(diameters)
    det = extract(data, weight, threshold=threshold, minarea=minarea, saturation=saturation, gain=gain,
                  deblend_cont=deblend_cont, saturated=saturated,
                  apertures=0.5 * np.asarray(diameters, dtype=float) / scale)
    good = np.isfinite(np.asarray(det["x"], float)) & np.isfinite(np.asarray(det["y"], float))
    if not good.all():
        det = det[good]
    n = len(det)
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    ra, dec = wcs.all_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))
    jac = np.asarray(wcs.pixel_scale_matrix, float) * 3600.0  # arcsec per pixel (approximately uniform)
    xerr = np.nan_to_num(np.asarray(det["xerr"], float), nan=1.0)
    yerr = np.nan_to_num(np.asarray(det["yerr"], float), nan=1.0)
    ra_err = np.hypot(jac[0, 0] * xerr, jac[0, 1] * yerr)
    dec_err = np.hypot(jac[1, 0] * xerr, jac[1, 1] * yerr)

    flux = np.asarray(det["flux"], float)
    flux_err = np.asarray(det["flux_err"], float)
    flags = np.asarray(det["flags"], np.int64)
    snr = np.asarray(det["snr"], float)
    r50 = np.asarray(det["flux_radius"], float)
    rows: dict[str, Any] = {"SID": np.arange(1, n + 1, dtype=np.int64), "RA": np.asarray(ra, float) % 360.0,
                            "DEC": np.asarray(dec, float), "RA_ERR": ra_err, "DEC_ERR": dec_err, "X": x, "Y": y,
                            "X_ERR": xerr, "Y_ERR": yerr}
    af_all = np.asarray(det["flux_aper"], float).reshape(n, k)
    ae_all = np.asarray(det["flux_aper_err"], float).reshape(n, k)
    for i in range(1, k + 1):
        af, ae = af_all[:, i - 1], ae_all[:, i - 1]
        mag, magerr = _magnitudes(af, ae, zp)
        rows.update({f"FLUX_APER_{i}": af, f"FLUXERR_APER_{i}": ae, f"MAG_APER_{i}": mag,
                     f"MAGERR_APER_{i}": magerr})
    mag, magerr = _magnitudes(flux, flux_err, zp)
    a, b = np.asarray(det["a"], float), np.asarray(det["b"], float)
    locus = psf_locus(r50, snr, flags, snr_min=stellarity_snr, fallback_radius=0.5 * fwhm_pix if fwhm_pix else None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ellipticity = np.where(a > 0, 1.0 - b / a, np.nan)
    rows.update({"FLUX_AUTO": flux, "FLUXERR_AUTO": flux_err, "MAG_AUTO": mag, "MAGERR_AUTO": magerr,
                 "SNR": snr, "BACKGROUND": np.asarray(det["background"], float), "A": a * scale, "B": b * scale,
                 "THETA": np.degrees(np.asarray(det["theta"], float)), "ELLIPTICITY": ellipticity,
                 "FWHM": np.asarray(det["fwhm_pix"], float) * scale, "FLUX_RADIUS": r50 * scale,
                 "CLASS_STAR": class_star(r50, snr, locus), "FLAGS": flags})
    faint = (snr > 3) & (snr < 20) & (flux_err > 0)
    noise = float(np.median(flux_err[faint])) if faint.any() else float("nan")
    info = {"locus": locus, "mag_limit": zp - 2.5 * math.log10(5.0 * noise) if noise > 0 else None,
            "background": float(det.meta.get("BACKGND", float("nan"))),
            "background_rms": float(det.meta.get("BACK_RMS", float("nan"))), "pixel_scale": scale}
    return Table(rows), info


class SourceListTask(Task):
    """The sources of image products (reduced, regridded, coadded frames) as SourceLists.

    ``SourceListTask(filenames=[frame.filename], commit=1)``: extraction with the weight map, positions with
    errors, aperture and AUTO fluxes and magnitudes on the image's zero point, shapes, CLASS_STAR and flags.
    """

    products = (SourceList,)
    inputs = (Input(ReducedScienceFrame, "image", kind="product"),)
    unit = "per_frame"
    #: 2: a regridded frame's or coadd's own WEIGHT and FLAGS extensions and grid WCS (saturated cores filled);
    #: 3: FLUX_RADIUS (and FWHM, the windowed centroid) from a growth curve bounded by the AUTO aperture
    version = "3"
    algorithm_modules = ("awe.image.extract", "awe.image.stellarity", "awe.image.weights", "awe.tasks.sourcelist")
    selection = {"filenames": "file names of the image products (reduced, regridded or coadded frames)"}

    def unit_selections(self) -> list[dict[str, Any]]:
        """One unit per image (checked here: a bad name fails the planning, before any work)."""
        names = as_list(self.selection_values.get("filenames"))
        if not names:
            raise TypeError("SourceListTask needs filenames=[...] (image products: reduced, regridded or coadded "
                            "frames); see help(SourceListTask)")
        for name in names:
            image_product(name)
        return [{"filenames": [name]} for name in names]

    def make(self) -> list[tuple[DBObject, Path | None]]:
        names = as_list(self.selection_values.get("filenames"))
        if not names:
            raise TypeError("SourceListTask needs filenames=[...]")
        images = [image_product(name) for name in names]
        return [(self._source_list(image), None) for image in images]

    def _source_list(self, image: Any) -> SourceList:
        p = self.params(SourceList)
        diameters = [float(d) for d in p.APERTURE_DIAMETERS]
        if len(diameters) != N_APERTURES or not all(d > 0 for d in diameters):
            raise TaskError(f"SourceListTask: APERTURE_DIAMETERS must be {N_APERTURES} positive diameters [arcsec], "
                            f"not {list(p.APERTURE_DIAMETERS)}")
        weight, weight_obj = image_weight(image)
        saturated_map = image_saturated(image)
        try:
            wcs, solution, wcs_what = image_wcs(image)
        except ValueError as exc:
            raise TaskError(f"SourceListTask: {image.filename}: {exc}; solve its astrometry first "
                            "(AstrometricParametersTask or GAstromTask)") from None
        zp, photometry, zp_what = image_zeropoint(image, self.log, float(p.MAG_ZEROPOINT))
        obj = self.new_product(SourceList, {"image": image, "weight": weight_obj,
                                            "astrometry": [solution] if solution is not None else [],
                                            "photometry": [photometry] if photometry is not None else []},
                               category="Sci", step="SrcList", instrument=getattr(image, "instrument", None),
                               chip=getattr(image, "chip", None), filter=getattr(image, "filter", None),
                               OBJECT=getattr(image, "OBJECT", None), DATE_OBS=getattr(image, "DATE_OBS", None))
        found = self.existing(obj)
        if found is not None:
            return found
        if weight is None:
            self.log.warning("%s has no weight map: every pixel weighs the same (bad pixels are not masked)",
                             image.filename)

        data = np.asarray(image.load(), dtype=np.float32)
        for what, array in (("weight map", weight), ("flag map", saturated_map)):
            if array is not None and array.shape != data.shape:
                raise TaskError(f"SourceListTask: {image.filename}: its {what} is {array.shape[1]}x{array.shape[0]} "
                                f"pixels, the image {data.shape[1]}x{data.shape[0]}: remake the image")
        if saturated_map is not None:
            data = fill_saturated(data, saturated_map)
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
        seeing = getattr(image, "seeing", None)
        fwhm_pix = (float(seeing) if seeing else 2.0 * scale) / scale
        minarea = int(p.MINAREA) or (3 if fwhm_pix < 2.0 else 5)
        saturation = _saturation(image)
        try:
            rows, info = measure_sources(data, weight, wcs, zp, threshold=float(p.DETECT_THRESHOLD), minarea=minarea,
                                         deblend_cont=float(p.DEBLEND_MINCONT), diameters=diameters,
                                         saturation=saturation, gain=getattr(image, "gain", None),
                                         stellarity_snr=float(p.STELLARITY_SNR), fwhm_pix=fwhm_pix,
                                         saturated=saturated_map)
        except ValueError as exc:
            raise TaskError(f"SourceListTask: {image.filename}: {exc}") from None
        n = len(rows)
        locus = info["locus"]
        obj.mag_limit = info["mag_limit"]
        obj.n_sources = n
        obj.aperture_diameters = diameters
        obj.zeropoint = zp
        obj.zeropoint_source = zp_what[:255]
        obj.detection = {"threshold": float(p.DETECT_THRESHOLD), "minarea": minarea,
                         "deblend_mincont": float(p.DEBLEND_MINCONT), "saturation": saturation,
                         "saturated_pixels": int(saturated_map.sum()) if saturated_map is not None else None,
                         "background": info["background"], "background_rms": info["background_rms"]}
        obj.pixel_scale = scale
        obj.wcs_source = wcs_what[:255]
        obj.psf_flux_radius = locus.r_psf * scale
        obj.n_psf_stars = locus.n_stars
        obj.__dict__["_pending_rows"] = rows
        if n == 0:
            obj.quality_flags = (obj.quality_flags or 0) | QualityFlags.FEW_INPUTS
        self.log.info("%s: %d sources above %g sigma (minarea %d), zero point %.3f (%s), WCS %s, PSF half-light "
                      "radius %.2f\" from %d stars, 5-sigma limit %s mag", image.filename, n, p.DETECT_THRESHOLD,
                      minarea, zp, zp_what, wcs_what, obj.psf_flux_radius, locus.n_stars,
                      f"{obj.mag_limit:.2f}" if obj.mag_limit is not None else "?")
        self.save_figure(obj, lambda path: obj.inspect(path=path))
        return obj


# ============================================================================ AssociateListTask
def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])


def _match(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray, radius_arcsec: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest matches within ``radius_arcsec``: (index in 1, index in 2, distance [arcsec])."""
    from scipy.spatial import cKDTree
    if len(ra1) == 0 or len(ra2) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    v1, v2 = _unit_vectors(ra1, dec1), _unit_vectors(ra2, dec2)
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    pairs = cKDTree(v1).sparse_distance_matrix(cKDTree(v2), chord, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    order = np.argsort(pairs["v"], kind="stable")
    i, j, c = pairs["i"][order], pairs["j"][order], pairs["v"][order]
    used1 = np.zeros(len(ra1), bool)
    used2 = np.zeros(len(ra2), bool)
    keep = []
    for k in range(len(i)):  # greedy on distance: the closest pairs first, each source in one pair
        if not used1[i[k]] and not used2[j[k]]:
            used1[i[k]] = used2[j[k]] = True
            keep.append(k)
    sel = np.asarray(keep, dtype=int)
    dist = np.degrees(2.0 * np.arcsin(np.minimum(c[sel] / 2.0, 1.0))) * 3600.0
    return i[sel].astype(int), j[sel].astype(int), dist


def associate(groups: list[list[dict[str, np.ndarray]]], radius_arcsec: float) -> dict[str, np.ndarray]:
    """Associate inputs one after another (pure: no database).

    ``groups``: one entry per input, a list of associations, each a dict of member arrays ``SLID, SID, RA,
    DEC, distance`` (a source list: one single-member association per source). Returns the member columns
    ``AID, SLID, SID, RA, DEC, distance`` of the merged associations (AID 1..).
    """
    members: list[dict[str, list[float]]] = []
    pos_ra: list[float] = []
    pos_dec: list[float] = []

    def position(m: dict[str, list[float]]) -> tuple[float, float]:
        v = _unit_vectors(np.asarray(m["RA"]), np.asarray(m["DEC"])).mean(axis=0)
        return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arctan2(v[2], np.hypot(v[0],
                                                                                                         v[1]))))

    for gi, group in enumerate(groups):
        new = [{k: [float(x) for x in np.atleast_1d(v)] for k, v in g.items()} for g in group]
        new_pos = [position(m) for m in new]
        if gi == 0 or not members:
            i = j = np.zeros(0, int)
        else:
            i, j, dist = _match(np.asarray(pos_ra), np.asarray(pos_dec), np.asarray([p[0] for p in new_pos]),
                                np.asarray([p[1] for p in new_pos]), radius_arcsec)
            for a, b, d in zip(i, j, dist):
                m = new[b]
                m["distance"] = [float(d)] * len(m["SID"])
                for key in ("SLID", "SID", "RA", "DEC", "distance"):
                    members[a][key] += m[key]
                pos_ra[a], pos_dec[a] = position(members[a])
        matched_new = set(int(b) for b in j)
        for b, m in enumerate(new):
            if b not in matched_new:
                members.append(m)
                pos_ra.append(new_pos[b][0])
                pos_dec.append(new_pos[b][1])
    out: dict[str, list[float]] = {"AID": [], "SLID": [], "SID": [], "RA": [], "DEC": [], "distance": []}
    for aid, m in enumerate(members, start=1):
        k = len(m["SID"])
        out["AID"] += [aid] * k
        for key in ("SLID", "SID", "RA", "DEC", "distance"):
            out[key] += m[key]
    return {"AID": np.asarray(out["AID"], np.int64), "SLID": np.asarray(out["SLID"], np.int64),
            "SID": np.asarray(out["SID"], np.int64), "RA": np.asarray(out["RA"], float),
            "DEC": np.asarray(out["DEC"], float), "distance": np.asarray(out["distance"], float)}


class AssociateListTask(Task):
    """Associate the sources of two or more source lists (or associate lists) one-to-one on the sky.

    ``AssociateListTask(ids=[(sl1.SLID, 's'), (sl2.SLID, 's')], radius=1.0, commit=1)``: 's' marks a
    SourceList's SLID, 'a' an AssociateList's id; ``radius`` sets ``AssociateList.process_params.
    SEARCH_DISTANCE`` [arcsec]. The report (log and the product) gives the matched and single counts.
    """

    products = (AssociateList,)
    inputs = (Input(SourceList, "sourcelists", kind="product"),
              Input(AssociateList, "associatelists", kind="product", optional=True))
    unit = "per_field"
    version = "1"
    algorithm_modules = ("awe.tasks.sourcelist",)
    selection = {"ids": "[(id, 's' | 'a'), ...]: SourceList SLIDs ('s') and AssociateList ids ('a'), two or more"}
    shortcuts = {"radius": ("AssociateList", "process_params", "SEARCH_DISTANCE")}

    def unit_selections(self) -> list[dict[str, Any]]:
        self._inputs_of()
        ids = [[int(i), str(t)] for i, t in self._ids()]
        return [{"ids": ids}]

    def _ids(self) -> list[tuple[Any, Any]]:
        ids = self.selection_values.get("ids")
        if not ids or isinstance(ids, (str, bytes)):
            raise TypeError("AssociateListTask needs ids=[(slid1, 's'), (slid2, 's'), ...] "
                            "(see help(AssociateListTask))")
        out = []
        for item in ids:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise TaskError(f"AssociateListTask: {item!r} is not (id, 's' | 'a'); give ids=[(slid1, 's'), "
                                "(slid2, 's')]")
            out.append((item[0], item[1]))
        return out

    def _inputs_of(self) -> list[tuple[Any, str]]:
        """The inputs as objects, checked: known ids of the right class, two or more, no list twice."""
        ids = self._ids()
        if len(ids) < 2:
            raise TaskError(f"AssociateListTask: associate two lists or more, not {len(ids)}")
        inputs: list[tuple[Any, str]] = []
        seen: dict[int, str] = {}
        for ident, kind in ids:
            if kind not in ("s", "a"):
                raise TaskError(f"AssociateListTask: ({ident!r}, {kind!r}): the type is 's' (SourceList) or 'a' "
                                "(AssociateList)")
            try:
                number = int(ident)
            except (TypeError, ValueError):
                raise TaskError(f"AssociateListTask: {ident!r} is not an id (a SourceList's SLID or an "
                                "AssociateList's object_id)") from None
            cls = SourceList if kind == "s" else AssociateList
            obj = (cls.object_id == number).first()
            if obj is None:
                other = AssociateList if kind == "s" else SourceList
                what = " (it is a(n) %s: type %r)" % (other.__name__, "a" if kind == "s" else "s") \
                    if (other.object_id == number).first() is not None else ""
                raise TaskError(f"AssociateListTask: no {cls.__name__} with id {number}{what}")
            if obj.is_valid == 0:
                raise TaskError(f"AssociateListTask: {cls.__name__} {number} ({obj.filename}) is marked invalid")
            slids = [number] if kind == "s" else [s.object_id for s in obj.sourcelists]
            for slid in slids:
                if slid in seen:
                    raise TaskError(f"AssociateListTask: SourceList {slid} is given twice ({seen[slid]} and "
                                    f"({number}, {kind!r})): a list cannot be associated with itself")
                seen[slid] = f"({number}, {kind!r})"
            inputs.append((obj, kind))
        return inputs

    def make(self) -> list[tuple[DBObject, Path | None]]:
        from astropy.table import Table

        from awe.model.sourcelist import Association, Source

        inputs = self._inputs_of()
        p = self.params(AssociateList)
        radius = float(p.SEARCH_DISTANCE)
        if not radius > 0:
            raise TaskError(f"AssociateListTask: SEARCH_DISTANCE (radius=) must be positive [arcsec], not {radius}")
        sourcelists: list[SourceList] = []
        alists: list[AssociateList] = []
        for obj, kind in inputs:
            if kind == "s":
                sourcelists.append(obj)
            else:
                alists.append(obj)
                sourcelists += list(obj.sourcelists)
        first = inputs[0][0]
        first_list = first if isinstance(first, SourceList) else list(first.sourcelists)[0]
        result = self.new_product(AssociateList, {"sourcelists": sourcelists, "associatelists": alists},
                                  category="Sci", step="AssocList", OBJECT=first_list.OBJECT,
                                  filter=first_list.filter)
        found = self.existing(result)
        if found is not None:
            return [(found, None)]
        groups: list[list[dict[str, np.ndarray]]] = []
        for obj, kind in inputs:
            if kind == "s":
                t = (Source.SLID == obj.object_id).order_by("SID").table(["SLID", "SID", "RA", "DEC"])
                groups.append([{"SLID": np.array([s]), "SID": np.array([i]), "RA": np.array([r]),
                                "DEC": np.array([d]), "distance": np.array([0.0])}
                               for s, i, r, d in zip(t["SLID"], t["SID"], t["RA"], t["DEC"])])
            else:
                members: Any = Association.of(obj).order_by("AID", "SLID")
                t = members.table(["AID", "SLID", "SID", "RA", "DEC", "distance"])
                aid = np.asarray(t["AID"])
                starts = np.flatnonzero(np.r_[True, aid[1:] != aid[:-1]]) if len(aid) else np.zeros(0, int)
                ends = np.r_[starts[1:], len(aid)]
                groups.append([{k: np.asarray(t[k])[a:b] for k in ("SLID", "SID", "RA", "DEC", "distance")}
                               for a, b in zip(starts, ends)])
            self.log.info("input (%s, %r): %d entries", obj.object_id, kind, len(groups[-1]))
        rows = associate(groups, radius)
        aid = rows["AID"]
        sizes = np.bincount(aid)[1:] if len(aid) else np.zeros(0, int)
        result.n_lists = len(sourcelists)
        result.search_distance = radius
        result.n_associations = int(len(sizes))
        result.n_matched = int(np.sum(sizes >= 2))
        result.n_single = int(np.sum(sizes == 1))
        result.n_members = int(len(aid))
        result.__dict__["_pending_rows"] = Table(rows)
        self.log.info("associated %d lists within %g\": %d associations, %d matched (members of 2 lists or more), "
                      "%d single", len(sourcelists), radius, result.n_associations, result.n_matched,
                      result.n_single)
        return [(result, None)]
