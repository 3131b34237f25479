"""Coaddition (spec section 7: ``dpu.run('Coadd', instrument='WFI', filter='#844', object='3C273', commit=1)``).

::

    CoaddTask(instrument='WFI', filter='#844', object='3C273', commit=1).execute()
    CoaddTask(filenames=[r.filename for r in regridded], commit=0).execute()

One unit per field: every current RegriddedFrame of the field and filter (the newest of each reduced
frame; all chips of all dithers) combined on their common grid by :func:`awe.image.coadd.coadd`, streamed
in tiles of rows straight into the product's file (never the whole stack, nor the whole coadd, in memory).
Frames of several fields, filters, grids or zero points are refused with an error naming them; nothing is
made then.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from awe.db.schema import DBObject
from awe.model.coadd import CoaddedRegriddedFrame
from awe.model.regrid import RegriddedFrame
from awe.tasks.base import Input, Task, TaskError, as_list, newest_of_each

__all__ = ["CoaddTask"]

#: side of the central region where the seeing and the depth are measured
_MEASURE_BOX = 2048


class CoaddTask(Task):
    """Combine every regridded frame of a field into one CoaddedRegriddedFrame with weight and flag maps.

    ``CoaddTask(instrument='WFI', filter='#844', object='3C273', commit=0|1)`` (``date=``: that night's
    frames; ``filenames=[...]``: these regridded frames). ``pars.CoaddedRegriddedFrame.process_params
    .COMBINE_TYPE``: WEIGHTED (default), CLIPPED or MEDIAN.
    """

    products = (CoaddedRegriddedFrame,)
    inputs = (Input(RegriddedFrame, "regridded", kind="product"),)
    unit = "per_field"
    version = "2"  # 2: its seeing and psf_radius from the extraction's FLUX_RADIUS, bounded by the AUTO aperture
    # background and extract: the coadd's seeing and depth are measured with them
    algorithm_modules = ("awe.image.coadd", "awe.image.background", "awe.image.extract", "awe.tasks.coadd")
    selection = {
        "instrument": "instrument name ('WFI')",
        "object": "OBJECT of the field ('3C273')",
        "filter": "filter ('#844' or the ESO name)",
        "date": "observing night of the frames ('2003-03-03')",
        "filenames": "the regridded frames to combine, by file name",
    }

    # ------------------------------------------------------------------ selection
    def _frames(self) -> list[RegriddedFrame]:
        names = as_list(self.selection_values.get("filenames"))
        if names:
            frames = list(RegriddedFrame.filename.in_(names))
            missing = sorted(set(names) - {f.filename for f in frames})
            if missing:
                raise TaskError(f"CoaddTask: no regridded frame named {missing}")
        else:
            if self.selection_values.get("instrument") is None or self.selection_values.get("object") is None:
                raise TypeError("CoaddTask needs instrument= and object= (with filter=, date=), or filenames=; "
                                "see help(CoaddTask)")
            frames = list(RegriddedFrame.select(instrument=self.selection_values.get("instrument"),
                                                filter=self.selection_values.get("filter"),
                                                date=self.selection_values.get("date"),
                                                object=self.selection_values.get("object")))
            frames = [f for f in frames if f.superseded_by is None]
        newest = newest_of_each(frames, lambda f: f.reduced.object_id if f.reduced is not None else f.object_id)
        out = sorted(newest, key=lambda f: (f.DATE_OBS, f.chip.name if f.chip else "", f.filename))
        if not out:
            asked = {k: v for k, v in self.selection_values.items() if v is not None}
            raise TaskError(f"CoaddTask: no valid regridded frame matches {asked}; regrid the reduced frames first "
                            "(RegridTask(instrument=..., object=..., commit=1))")
        self._check_one_field(out)
        return out

    @staticmethod
    def _check_one_field(frames: list[RegriddedFrame]) -> None:
        def names(values: Any) -> str:
            return ", ".join(sorted(str(v) for v in values))
        fields = {f.OBJECT for f in frames}
        filters = {f.filter.name if f.filter else None for f in frames}
        if len(fields) > 1 or len(filters) > 1:
            raise TaskError(f"CoaddTask: the {len(frames)} regridded frames are of {len(fields)} field(s) "
                            f"({names(fields)}) and {len(filters)} filter(s) ({names(filters)}); a coadd is of one "
                            "field in one filter: give object= and filter= (or filenames= of one field and filter)")
        grids = {f.grid.object_id if f.grid is not None else None for f in frames}
        if len(grids) > 1:
            scales = {f.pixel_scale for f in frames}
            raise TaskError(f"CoaddTask: the regridded frames lie on {len(grids)} different grids (pixel scales "
                            f"{names(scales)}); regrid them all with one PIXEL_SCALE, or give filenames= of one grid")
        zps = {None if f.zeropoint is None else round(float(f.zeropoint), 6) for f in frames}
        if len(zps) > 1:
            raise TaskError(f"CoaddTask: the regridded frames are on different zero points ({names(zps)}; None: "
                            "not calibrated); regrid them with one ZEROPOINT and with PhotometricParameters")

    # ------------------------------------------------------------------ the unit
    def make(self) -> list[tuple[DBObject, Path | None]]:
        frames = self._frames()
        first = frames[0]
        grid = first.grid
        p = self.params(CoaddedRegriddedFrame)
        obj = self.new_product(CoaddedRegriddedFrame, {"regridded": frames, "grid": grid}, category="Sci",
                               step="Coadd", instrument=first.instrument, filter=first.filter, OBJECT=first.OBJECT,
                               DATE_OBS=min(f.DATE_OBS for f in frames if f.DATE_OBS is not None)
                               if any(f.DATE_OBS is not None for f in frames) else None)
        found = self.existing(obj)
        if found is not None:
            return [(found, None)]
        obj.EXPTIME = float(sum(f.EXPTIME or 0.0 for f in frames))
        self.log.info("coadding %d regridded frames of %s (%s)", len(frames), first.OBJECT, p.COMBINE_TYPE)
        path = self._combine(obj, frames, grid, p)
        self.log.info("%s: %d x %d at (%d, %d), seeing %s\", limiting magnitude %s", obj.filename, obj.NAXIS1,
                      obj.NAXIS2, obj.grid_x0, obj.grid_y0, obj.seeing, obj.limiting_magnitude)
        self.save_figure(obj, lambda fig_path: obj.inspect(path=fig_path))
        return [(obj, path)]

    def _combine(self, obj: CoaddedRegriddedFrame, frames: list[RegriddedFrame], grid: Any, p: Any) -> Path:
        from astropy.io import fits

        from awe.image.coadd import CoaddInput, bounding_box, coadd
        from awe.model.astrometry import wcs_to_cards
        opened = []
        inputs = []
        try:
            # the inputs' sky levels brought to their median (0 after background subtraction)
            skies = [float(f.sky_level or 0.0) for f in frames]
            reference = float(np.median(skies))
            for f, sky in zip(frames, skies):
                hdul = fits.open(f.local_path(), memmap=False)  # rows read through .section: nothing mapped
                opened.append(hdul)
                inputs.append(CoaddInput(int(f.grid_x0), int(f.grid_y0), int(f.NAXIS1), int(f.NAXIS2),
                                         _reader(hdul), f.filename, offset=sky - reference))
            x0, y0, nx, ny = bounding_box(inputs)
            obj.grid_x0, obj.grid_y0 = x0, y0
            obj.NAXIS1, obj.NAXIS2 = nx, ny
            obj.pixel_scale = float(frames[0].pixel_scale)
            obj.zeropoint = frames[0].zeropoint
            obj.n_inputs = len(frames)
            obj.combine_method = str(p.COMBINE_TYPE)
            header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny),
                                  ("EXTEND", True)])
            for key, value in wcs_to_cards(grid.wcs(x0, y0)).items():
                header[key] = value
            header["OBJECT"] = first_text(frames[0].OBJECT)
            header["FILTER"] = first_text(frames[0].filter.name if frames[0].filter else "")
            header["MAGZERO"] = (float(obj.zeropoint) if obj.zeropoint is not None else -1.0,
                                 "mag = -2.5 log10(sum) + MAGZERO; -1: none")
            header["NCOMBINE"] = (len(frames), "regridded frames combined")
            header["COMBINET"] = (str(p.COMBINE_TYPE), "combine method")
            header["GRIDX0"] = (x0, "0-based column of the coadd on the field grid")
            header["GRIDY0"] = (y0, "0-based row of the coadd on the field grid")
            header["SEEING"] = (-1.0, "median FWHM of the stars [arcsec]")
            header["LIMMAG"] = (-1.0, "5-sigma limiting magnitude")
            header["AWECLASS"] = (type(obj).__name__, "awe product class")
            header["PROVHASH"] = (obj.provenance, "awe provenance hash")
            path = self.output_path(obj)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=path.parent)
            os.close(fd)
            os.unlink(tmp)
            wtmp = Path(tmp + ".weight")
            ftmp = Path(tmp + ".flags")
            try:
                stream = fits.StreamingHDU(tmp, header)
                sample: list[np.ndarray] = []
                with open(wtmp, "wb") as wfile, open(ftmp, "wb") as ffile:
                    def sink(r0: int, r1: int, data: np.ndarray, weight: np.ndarray, flags: np.ndarray) -> None:
                        stream.write(np.ascontiguousarray(data, dtype=">f4"))
                        wfile.write(np.ascontiguousarray(weight, dtype=">f4").tobytes())
                        ffile.write(np.ascontiguousarray(flags, dtype=np.uint8).tobytes())
                        good = data[weight > 0]
                        if good.size:
                            sample.append(good[:: max(1, good.size // 2000)])
                    stats = coadd(inputs, sink, method=str(p.COMBINE_TYPE), box=(x0, y0, nx, ny),
                                  clip_sigma=float(p.CLIP_SIGMA), clip_fraction=float(p.CLIP_FRACTION),
                                  tile_pixels=int(p.TILE_PIXELS), sky=reference)
                stream.close()
                _append_stream(tmp, wtmp, "WEIGHT", -32, ">f4", nx, ny)
                _append_stream(tmp, ftmp, "FLAGS", 8, np.uint8, nx, ny)
            finally:
                wtmp.unlink(missing_ok=True)
                ftmp.unlink(missing_ok=True)
        finally:
            for hdul in opened:
                hdul.close()
        obj.n_covered = stats.n_covered
        obj.n_flagged = stats.n_flagged
        from awe.image.stats import imstat
        values = np.concatenate(sample) if sample else np.zeros(0, dtype=np.float32)
        from awe.tasks.base import stored_imstat
        obj.imstat = stored_imstat(imstat(values) if values.size else imstat(np.full(1, np.nan)))
        self._measure(obj, tmp, p)
        with fits.open(tmp, mode="update") as hdul:
            hdul[0].header["SEEING"] = float(obj.seeing) if obj.seeing is not None else -1.0
            hdul[0].header["LIMMAG"] = float(obj.limiting_magnitude) if obj.limiting_magnitude is not None else -1.0
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def _measure(self, obj: CoaddedRegriddedFrame, path: str, p: Any) -> None:
        """Seeing and depth on the central region (at most _MEASURE_BOX pixels square) of the coadd."""
        from astropy.io import fits

        from awe.image.background import TooFewStarsError, measure_seeing
        from awe.image.coadd import aperture_noise, limiting_magnitude
        with fits.open(path, memmap=False) as hdul:  # read through .section: only what is asked for
            ny, nx = int(hdul[0].header["NAXIS2"]), int(hdul[0].header["NAXIS1"])
            # the region with the most coverage: around the weight-weighted centre of a coarse weight map
            w = hdul["WEIGHT"].section
            step = max(1, max(nx, ny) // 256)
            coarse = np.asarray(w[::step, ::step], dtype=np.float64)
            total = coarse.sum()
            if total > 0:
                gy, gx = np.indices(coarse.shape)
                cy = int(round(float((gy * coarse).sum() / total) * step))
                cx = int(round(float((gx * coarse).sum() / total) * step))
            else:
                cy, cx = ny // 2, nx // 2
            half = _MEASURE_BOX // 2
            ys = slice(max(0, min(cy - half, ny - _MEASURE_BOX)), min(ny, max(cy - half, 0) + _MEASURE_BOX))
            xs = slice(max(0, min(cx - half, nx - _MEASURE_BOX)), min(nx, max(cx - half, 0) + _MEASURE_BOX))
            data = np.array(hdul[0].section[ys, xs], dtype=np.float32)
            weight = np.array(w[ys, xs], dtype=np.float32)
        covered = weight > 0
        scale = float(obj.pixel_scale)
        try:
            seeing = measure_seeing(data, mask=~covered, pixel_scale=scale, detect_threshold=10.0, n_bootstrap=0,
                                     min_stars=3)
            obj.seeing, obj.psf_radius = float(seeing.fwhm_arcsec), float(seeing.psf_radius)
            fwhm_pix = seeing.fwhm_pixels
        except TooFewStarsError as exc:
            self.log.warning("%s: seeing not measured: %s", obj.filename, exc)
            fwhm_pix = float("nan")
        if math.isfinite(fwhm_pix) and obj.zeropoint is not None:
            from awe.image.extract import extract
            sources = extract(data, weight, threshold=2.0, minarea=3)
            mask = _source_mask(data.shape, sources)
            measured, _ = aperture_noise(data, weight, float(p.DEPTH_APERTURE) * fwhm_pix, mask=mask)
            if math.isfinite(measured):
                obj.aperture_noise = measured
                obj.limiting_magnitude = limiting_magnitude(measured, float(obj.zeropoint))


def first_text(value: Any) -> str:
    return "" if value is None else str(value)


def _source_mask(shape: tuple[int, ...], sources: Any) -> np.ndarray:
    """True within 2.5 Kron-like radii (at least 3 pixels) of every extracted source."""
    mask = np.zeros(shape, dtype=bool)
    if len(sources) == 0:
        return mask
    ny, nx = shape
    x = np.asarray(sources["x"], dtype=float)
    y = np.asarray(sources["y"], dtype=float)
    a = np.asarray(sources["a"], dtype=float) if "a" in sources.colnames else np.full(len(x), 2.0)
    r = np.clip(np.nan_to_num(4.0 * a, nan=3.0), 3.0, 50.0)
    for xi, yi, ri in zip(x, y, r):
        if not (math.isfinite(xi) and math.isfinite(yi)):
            continue
        x0, x1 = max(0, int(xi - ri)), min(nx, int(xi + ri) + 2)
        y0, y1 = max(0, int(yi - ri)), min(ny, int(yi + ri) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        gy, gx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (gx - xi) ** 2 + (gy - yi) ** 2 <= ri * ri
    return mask


def _reader(hdul: Any) -> Any:
    """Rows ``r0:r1`` of the values, weight and flags, read from the file (``section``: only those rows)."""
    data, weight, flags = hdul[0].section, hdul["WEIGHT"].section, hdul["FLAGS"].section

    def read(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(data[r0:r1]), np.asarray(weight[r0:r1]), np.asarray(flags[r0:r1])
    return read


def _append_stream(path: str, raw: Path, name: str, bitpix: int, dtype: Any, nx: int, ny: int) -> None:
    """Append the raw big-endian pixels of ``raw`` to the FITS file ``path`` as image extension ``name``."""
    from astropy.io import fits
    header = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", bitpix), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny),
                          ("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", name)])
    stream = fits.StreamingHDU(path, header)
    itemsize = np.dtype(dtype).itemsize
    rows = max(1, 4_000_000 // max(1, nx))
    with open(raw, "rb") as fh:
        for _ in range(0, ny, rows):
            chunk = np.frombuffer(fh.read(rows * nx * itemsize), dtype=dtype)
            if chunk.size == 0:
                break
            stream.write(chunk.reshape(-1, nx))
    stream.close()

