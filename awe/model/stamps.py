"""Stamps through the lineage: cut-outs of a sky position from every image that went into a product.

The DB viewer's "stamps of all the images that have been used to obtain that catalogue, back to the FF and
BIAS raw frames" (spec section 10)::

    s = stamps(source)                             # a Source row (SLID, RA, DEC): its list's image and inputs
    s = frame.stamps(187.2779, 2.0524, 20.0)       # any image product; RA, Dec [deg], size [arcsec]
    s = sourcelist.stamps(ra, dec, 20.0)
    [(st.role, st.cls, st.filename, st.data.shape) for st in s]
    s.inspect('stamps.png')                        # one figure: the grid of stamps, labelled

The walk starts at the image and follows the lineage (the declared inputs of each product, recursively):

* an image of the sky with its own astrometry (a coadd, a regridded frame, a reduced frame: a reduced frame's
  best solution, :func:`awe.model.astrometry.best_wcs`; a coadd's or regridded frame's grid WCS moved by its
  offset on the grid, ``wcs()``; another image's header WCS) is cut at the position's pixel through its WCS;
  a coadd's or regridded frame's own weight (``WEIGHT`` extension) is cut with it (role ``...weight``); below
  them the walk goes on to the regridded and reduced frames, each cut through its own WCS (a regridded
  frame's ``weight`` input, the reduced frame's weight map, is reached as that reduced frame's weight);
* the frames below a reduced frame have no WCS of their own but share its chip's pixels: calibration frames
  (master bias, flats, pixel maps) are on the same trimmed grid and are cut at the same pixel; raw frames
  (science, biases, flats) keep their prescan/overscan, so the pixel is moved by the trim section's origin
  (:class:`awe.instruments.geometry.RawGeometry` of its header: raw x = reduced x + first trimmed column).

A position outside an image skips that image and what lies below it. An object reached twice at the same
pixel (the master bias below the frame and below its flats) gives one stamp, labelled with the first role.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

__all__ = ["Stamp", "Stamps", "stamps", "cutout"]

log = logging.getLogger(__name__)


@dataclass
class Stamp:
    """One cut-out: ``data`` (NaN outside the image), the lineage ``role`` (``'image'``, ``'image.raw'``,
    ``'image.flat.domeflat.raw_dome_flat_frames'``), the image's ``filename``, class name ``cls`` and id,
    the position's pixel ``x``, ``y`` on that image (0-based; the stamp's centre pixel is their rounded
    value) and how it was found (``grid``: ``'wcs'``, ``'reduced'`` (same pixels as the reduced frame) or
    ``'raw'`` (moved by the trim section))."""

    data: np.ndarray
    role: str
    filename: str
    cls: str
    object_id: int | None
    x: float
    y: float
    grid: str

    def __repr__(self) -> str:
        return (f"Stamp({self.role}: {self.cls} {self.filename}, {self.data.shape[1]}x{self.data.shape[0]} at "
                f"({self.x:.1f}, {self.y:.1f}) [{self.grid}])")


class Stamps(list):
    """The stamps of one position (a list of :class:`Stamp`), with :meth:`inspect`."""

    ra: float = float("nan")
    dec: float = float("nan")

    def roles(self) -> list[str]:
        return [s.role for s in self]

    def inspect(self, path: str | Path | None = None, ncols: int = 6) -> Any:
        """One figure with every stamp (scaled between its 1st and 99.5th percentile), titled with its role,
        class and file; saved as ``path`` (PNG) when given. Returns the figure."""
        import matplotlib.pyplot as plt
        n = max(len(self), 1)
        ncols = min(ncols, n)
        nrows = (n + ncols - 1) // ncols
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.5 * nrows), squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        for ax, st in zip(axes.ravel(), self):
            finite = st.data[np.isfinite(st.data)]
            lo, hi = (np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0))
            ax.imshow(st.data, origin="lower", cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      interpolation="nearest")
            role = st.role if len(st.role) < 34 else "..." + st.role[-31:]
            name = st.filename if len(st.filename) <= 36 else st.filename[:22] + "..." + st.filename[-11:]
            ax.set_title(f"{role}\n{st.cls}\n{name}", fontsize=5)
        fig.suptitle(f"stamps at RA {self.ra:.5f}, Dec {self.dec:.5f}: {len(self)} images", fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def cutout(data: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """The ``(2 half + 1)`` square of ``data`` centred on the pixel nearest (x, y), NaN outside ``data``."""
    size = 2 * half + 1
    out = np.full((size, size), np.nan, dtype=np.float32)
    ix, iy = int(np.rint(x)), int(np.rint(y))
    ny, nx = data.shape
    x0, y0 = ix - half, iy - half
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, nx), min(y0 + size, ny)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = data[sy0:sy1, sx0:sx1]
    return out


def _is_sky_image(obj: Any) -> bool:
    from awe.model.calibration import CalibrationFrame
    from awe.model.frames import BaseFrame, RawFrame
    return isinstance(obj, BaseFrame) and not isinstance(obj, (RawFrame, CalibrationFrame))


def _inputs(obj: Any) -> Iterable[tuple[str, Any]]:
    """(role, input) of every declared input of ``obj`` that is an image with a file, in declaration order."""
    from awe.model.frames import BaseFrame
    for name, role in obj._inputs.items():
        for parent in role.values(obj):
            if isinstance(parent, BaseFrame) and parent.checksum is not None:
                yield name, parent


def _trim_origin(raw: Any) -> tuple[int, int]:
    """(first column, first row) of a raw frame's trim section (0-based)."""
    from awe.instruments import get_instrument
    from awe.instruments.geometry import RawGeometry
    from awe.model._io import read_header
    chip = get_instrument(raw.instrument.name).chip(raw.chip.name)
    geometry = RawGeometry.from_header(read_header(raw.local_path()), chip)
    ys, xs = geometry.trim
    return int(xs.start), int(ys.start)


def stamps(target: Any, ra: float | None = None, dec: float | None = None, size_arcsec: float = 20.0) -> Stamps:
    """Cut-outs of (``ra``, ``dec``) [deg], ``size_arcsec`` wide, from ``target`` and every image below it.

    ``target``: an image product; a :class:`~awe.model.sourcelist.SourceList` (its image); or a source (a
    :class:`~awe.model.sourcelist.Source` row, or any mapping with ``SLID``, ``RA``, ``DEC``), whose position
    is used when ``ra``/``dec`` are not given.
    """
    from awe.model.sourcelist import SourceList
    image = target
    if not hasattr(target, "_inputs"):  # a row of Source
        try:
            slid, row_ra, row_dec = int(target["SLID"]), float(target["RA"]), float(target["DEC"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise TypeError(f"stamps() takes an image product, a SourceList or a Source row (with SLID, RA, DEC), "
                            f"not {target!r}") from None
        sl = (SourceList.object_id == slid).first()
        if sl is None:
            raise LookupError(f"stamps(): no SourceList with SLID {slid} (the source's list) is visible")
        image = sl
        ra = row_ra if ra is None else ra
        dec = row_dec if dec is None else dec
    if isinstance(image, SourceList):
        image = image.image
        if image is None:
            raise LookupError(f"stamps(): the image of {target!r} is not visible")
    if ra is None or dec is None:
        raise TypeError("stamps() needs ra and dec [deg] (or a Source row)")
    if not size_arcsec > 0:
        raise ValueError(f"stamps(): size_arcsec must be positive, not {size_arcsec}")
    if not _is_sky_image(image):
        raise TypeError(f"stamps() starts at an image of the sky (reduced, regridded, coadded frame), not a "
                        f"{type(image).__name__}")
    out = Stamps()
    out.ra, out.dec = float(ra), float(dec)
    seen: set[tuple[Any, int, int]] = set()
    _visit(image, "image", None, float(ra), float(dec), float(size_arcsec), out, seen)
    log.info("stamps at RA %.5f, Dec %.5f: %d images below %s", ra, dec, len(out), image.filename)
    return out


def _visit(obj: Any, role: str, anchor: tuple[float, float, int] | None, ra: float, dec: float, size: float,
           out: Stamps, seen: set[tuple[Any, int, int]]) -> None:
    """Cut ``obj`` (a stamp) and walk its inputs; ``anchor`` = (x, y, half size) on the reduced grid above."""
    from awe.model.frames import RawFrame
    from awe.model.science import ReducedScienceFrame

    grid = "reduced"
    if _is_sky_image(obj):
        from awe.model.sourcelist import image_wcs
        try:
            wcs, _, _ = image_wcs(obj)
        except (ValueError, OSError) as exc:
            if anchor is None:
                log.warning("stamps: %s has no WCS (%s): skipped with its inputs", obj.filename, exc)
                return
            x, y, half = anchor
        else:
            x, y = (float(v) for v in wcs.all_world2pix([[ra, dec]], 0)[0])
            scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
            half = max(int(np.ceil(0.5 * size / scale)), 2)
            grid = "wcs"
        anchor_here: tuple[float, float, int] | None = (x, y, half)
        if not isinstance(obj, ReducedScienceFrame) and anchor is not None and grid != "wcs":
            anchor_here = anchor
    elif anchor is None:
        log.warning("stamps: %s (%s) has no WCS and no reduced frame above it: skipped", obj.filename, role)
        return
    else:
        x, y, half = anchor
        anchor_here = anchor
        if isinstance(obj, RawFrame):
            x0, y0 = _trim_origin(obj)
            x, y = x + x0, y + y0
            grid = "raw"
    ny, nx = int(obj.NAXIS2 or 0), int(obj.NAXIS1 or 0)
    if nx and ny and not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        log.info("stamps: (%.5f, %.5f) is off %s (%s) at pixel (%.1f, %.1f): skipped with its inputs", ra, dec,
                 obj.filename, role, x, y)
        return
    key = (obj.object_id, int(np.rint(x)), int(np.rint(y)))
    if key in seen:
        return
    seen.add(key)
    data = np.asarray(obj.load())
    out.append(Stamp(cutout(data, x, y, half), role, obj.filename, type(obj).__name__, obj.object_id, x, y, grid))
    del data
    from awe.model.regrid import _GridImage
    on_grid = isinstance(obj, _GridImage)
    if on_grid:  # its own WEIGHT extension, same pixels; its inputs are cut through their own WCS
        wkey = (f"{obj.object_id}:WEIGHT", int(np.rint(x)), int(np.rint(y)))
        if wkey not in seen:
            seen.add(wkey)
            out.append(Stamp(cutout(np.asarray(obj.weight_map()), x, y, half), f"{role}.weight", obj.filename,
                             f"{type(obj).__name__}[WEIGHT]", obj.object_id, x, y, grid))
        anchor_here = None
    weight = getattr(obj, "weight", None) if grid == "wcs" and not on_grid else None
    if weight is not None and hasattr(weight, "load") and getattr(weight, "checksum", None) is not None:
        wkey = (weight.object_id, int(np.rint(x)), int(np.rint(y)))
        if wkey not in seen:
            seen.add(wkey)
            out.append(Stamp(cutout(np.asarray(weight.load()), x, y, half), f"{role}.weight", weight.filename,
                             type(weight).__name__, weight.object_id, x, y, grid))
    from awe.model.science import WeightFrame
    for name, parent in _inputs(obj):
        if on_grid and isinstance(parent, WeightFrame):
            continue
        _visit(parent, f"{role}.{name}", anchor_here, ra, dec, size, out, seen)
