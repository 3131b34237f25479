"""Pictures the web application draws on the server: lineage graphs and validity charts (SVG), previews (PNG)."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

__all__ = ["Node", "lineage_svg", "ValidityBar", "validity_svg", "eclipsed_parts", "preview_png", "wcs_of"]

BOX_W, BOX_H, GAP_X, GAP_Y = 210, 30, 40, 8


@dataclass
class Node:
    object_id: int
    class_name: str
    filename: str | None
    current: bool = False


def _levels(nodes: dict[int, Node], edges: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Column of each node: 0 for those without parents in the graph, else one more than its deepest parent."""
    parents: dict[int, list[int]] = {i: [] for i in nodes}
    for parent, child in edges:
        if parent in nodes and child in nodes:
            parents[child].append(parent)
    level: dict[int, int] = {}

    def depth(i: int, seen: frozenset[int]) -> int:
        if i in level:
            return level[i]
        ps = [p for p in parents[i] if p not in seen]
        level[i] = 0 if not ps else 1 + max(depth(p, seen | {i}) for p in ps)
        return level[i]

    for i in nodes:
        depth(i, frozenset())
    return level


def lineage_svg(nodes: dict[int, Node], edges: Sequence[tuple[int, int]]) -> str:
    """A clickable lineage graph: inputs on the left, products on the right, each box a link to its page."""
    level = _levels(nodes, edges)
    columns: dict[int, list[int]] = {}
    for i in sorted(nodes, key=lambda i: (nodes[i].class_name, nodes[i].filename or "", i)):
        columns.setdefault(level[i], []).append(i)
    pos: dict[int, tuple[float, float]] = {}
    for col, ids in columns.items():
        for row, i in enumerate(ids):
            pos[i] = (10 + col * (BOX_W + GAP_X), 10 + row * (BOX_H + GAP_Y))
    width = 20 + (max(columns) + 1 if columns else 1) * (BOX_W + GAP_X)
    height = 20 + max((len(v) for v in columns.values()), default=1) * (BOX_H + GAP_Y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage">']
    for parent, child in edges:
        if parent in pos and child in pos:
            x1, y1 = pos[parent][0] + BOX_W, pos[parent][1] + BOX_H / 2
            x2, y2 = pos[child][0], pos[child][1] + BOX_H / 2
            mx = (x1 + x2) / 2
            out.append(f'<path d="M{x1:.0f},{y1:.0f} C{mx:.0f},{y1:.0f} {mx:.0f},{y2:.0f} {x2:.0f},{y2:.0f}" '
                       'fill="none" stroke="#8899aa" stroke-width="1"/>')
    for i, (x, y) in pos.items():
        node = nodes[i]
        fill = "#ffe9a8" if node.current else "#e8f0fa"
        name = node.filename or f"object {i}"
        short = name if len(name) <= 34 else name[:15] + "…" + name[-18:]
        out.append(f'<a href="/object/{i}" class="node" data-class={quoteattr(node.class_name)}>'
                   f'<title>{escape(node.class_name)} {escape(name)} (object {i})</title>'
                   f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="4" fill="{fill}" '
                   'stroke="#335577"/>'
                   f'<text x="{x + 5:.0f}" y="{y + 12:.0f}" font-size="10" font-weight="bold">'
                   f'{escape(node.class_name)}</text>'
                   f'<text x="{x + 5:.0f}" y="{y + 25:.0f}" font-size="9">{escape(short)}</text></a>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------------------------- validity chart
@dataclass
class ValidityBar:
    object_id: int
    filename: str | None
    created: dt.datetime
    start: dt.datetime | None
    end: dt.datetime | None
    is_valid: int


def eclipsed_parts(bars: Sequence[ValidityBar]) -> dict[int, list[tuple[dt.datetime, dt.datetime]]]:
    """For each bar, the parts of its validity range that a newer valid calibration covers (it is not chosen there).

    The selection rule of :func:`awe.model.calibration.select_calibration`: among the valid calibrations whose
    range contains the time, the newest (by creation date).
    """
    out: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {}
    for bar in bars:
        if bar.start is None or bar.end is None:
            out[bar.object_id] = []
            continue
        cover = sorted((max(o.start, bar.start), min(o.end, bar.end)) for o in bars
                       if o is not bar and o.is_valid and o.start is not None and o.end is not None
                       and o.created > bar.created and o.start < bar.end and o.end > bar.start)
        merged: list[tuple[dt.datetime, dt.datetime]] = []
        for lo, hi in cover:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        out[bar.object_id] = merged
    return out


def validity_svg(bars: Sequence[ValidityBar]) -> str:
    """Each calibration's validity range (x) against its creation date (y); eclipsed parts grey, invalid red."""
    bars = sorted(bars, key=lambda b: (b.created, b.object_id))
    times = [t for b in bars for t in (b.start, b.end) if t is not None]
    width, left, top, row_h = 900, 150, 30, 22
    height = top + 30 + row_h * max(len(bars), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="validity" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="validity ranges">']
    if not times:
        out.append('<text x="10" y="20">no calibration with a validity range</text></svg>')
        return "".join(out)
    t0, t1 = min(times), max(times)
    span = max((t1 - t0).total_seconds(), 1.0)

    def x(t: dt.datetime) -> float:
        return left + (width - left - 20) * (t - t0).total_seconds() / span

    out.append(f'<text x="{left}" y="15" font-size="10">{t0:%Y-%m-%d %H:%M} UT</text>')
    out.append(f'<text x="{width - 20}" y="15" font-size="10" text-anchor="end">{t1:%Y-%m-%d %H:%M} UT</text>')
    out.append('<text x="5" y="15" font-size="10">created (UT)</text>')
    eclipsed = eclipsed_parts(bars)
    for row, bar in enumerate(bars):
        y = top + row * row_h
        out.append(f'<text x="5" y="{y + 13}" font-size="10">{bar.created:%Y-%m-%d %H:%M:%S}</text>')
        if bar.start is None or bar.end is None:
            continue
        xs, xe = x(bar.start), max(x(bar.end), x(bar.start) + 2)
        state = "invalid" if not bar.is_valid else ("eclipsed" if eclipsed[bar.object_id] and sum(
            (hi - lo).total_seconds() for lo, hi in eclipsed[bar.object_id]) >= (bar.end - bar.start).total_seconds()
            else "chosen")
        fill = {"invalid": "#f4b6b6", "eclipsed": "#cccccc", "chosen": "#7fb2e5"}[state]
        label = f"{bar.filename or bar.object_id}: {bar.start:%Y-%m-%d %H:%M} .. {bar.end:%Y-%m-%d %H:%M} UT ({state})"
        out.append(f'<a href="/object/{bar.object_id}" class="bar {state}"><title>{escape(label)}</title>'
                   f'<rect x="{xs:.1f}" y="{y + 3}" width="{xe - xs:.1f}" height="{row_h - 6}" fill="{fill}" '
                   f'stroke="{"#aa2222" if state == "invalid" else "#335577"}"/>')
        for lo, hi in eclipsed[bar.object_id]:
            out.append(f'<rect x="{x(lo):.1f}" y="{y + 3}" width="{max(x(hi) - x(lo), 1):.1f}" height="{row_h - 6}" '
                       'fill="#888888" fill-opacity="0.55" class="eclipse"/>')
        out.append("</a>")
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------------------------- previews
MAX_PREVIEW = 600


def _image_hdu(hdul: Any) -> Any:
    for hdu in hdul:
        if getattr(hdu, "data", None) is not None and getattr(hdu.data, "ndim", 0) == 2:
            return hdu
    return None


def preview_png(path: Any, overlay: Any = None) -> tuple[bytes, dict[str, Any]]:
    """A zscale PNG of the first 2-D image of a FITS file (binned to at most 600 pixels a side) and its WCS.

    ``overlay`` (a FITS path of a weight map or pixel mask of the same shape): its zero-weight or flagged pixels
    are drawn red. Returns the PNG and the readout data (binning, shape, linear WCS or None).
    """
    from astropy.io import fits
    from astropy.visualization import ZScaleInterval
    from matplotlib.image import imsave

    with fits.open(path, memmap=False) as hdul:
        hdu = _image_hdu(hdul)
        if hdu is None:
            raise ValueError(f"{path}: no 2-D image to preview")
        data = np.asarray(hdu.data, dtype=np.float32)
        header = hdu.header.copy()
    step = max(1, int(np.ceil(max(data.shape) / MAX_PREVIEW)))
    small = data[::step, ::step]
    finite = np.isfinite(small)
    if finite.any() and np.nanmax(small[finite]) > np.nanmin(small[finite]):
        lo, hi = ZScaleInterval().get_limits(small[finite])
    else:
        lo, hi = (float(small[finite].min()) if finite.any() else 0.0), (float(small[finite].min()) + 1
                                                                        if finite.any() else 1.0)
    scaled = np.clip((np.where(finite, small, lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = np.repeat(scaled[:, :, None], 3, axis=2)
    if overlay is not None:
        with fits.open(overlay, memmap=False) as hdul:
            ohdu = _image_hdu(hdul)
            mask_data = None if ohdu is None else np.asarray(ohdu.data)
        if mask_data is not None and mask_data.shape == data.shape:
            small_mask = mask_data[::step, ::step]
            if np.issubdtype(small_mask.dtype, np.floating):
                bad = ~(small_mask > 0)  # a weight map: zero weight
            else:  # a pixel map: 1 = good (most pixels) or 1 = bad (few)
                bad = (small_mask == 0) if small_mask.mean() > 0.5 else (small_mask != 0)
            rgb[bad] = 0.6 * rgb[bad] + 0.4 * np.array([1.0, 0.0, 0.0])
    buf = io.BytesIO()
    imsave(buf, rgb[::-1], format="png")
    return buf.getvalue(), {"step": step, "nx": data.shape[1], "ny": data.shape[0], "wcs": wcs_of(header)}


def wcs_of(header: Any) -> dict[str, Any] | None:
    """The linear (TAN) part of a header's WCS for the browser's RA/Dec readout, or None."""
    if "CRVAL1" not in header or "CRPIX1" not in header:
        return None
    try:
        crpix = [float(header["CRPIX1"]), float(header["CRPIX2"])]
        crval = [float(header["CRVAL1"]), float(header["CRVAL2"])]
        if "CD1_1" in header:
            cd = [[float(header.get("CD1_1", 0)), float(header.get("CD1_2", 0))],
                  [float(header.get("CD2_1", 0)), float(header.get("CD2_2", 0))]]
        else:
            c1, c2 = float(header.get("CDELT1", 1)), float(header.get("CDELT2", 1))
            cd = [[c1, 0.0], [0.0, c2]]
    except (TypeError, ValueError):
        return None
    if not all(np.isfinite(v) for v in crpix + crval + cd[0] + cd[1]):
        return None
    return {"crpix": crpix, "crval": crval, "cd": cd, "ctype": str(header.get("CTYPE1", ""))}


def stamp_png(data: Any, zoom: int = 0) -> bytes:
    """A stamp as a grey PNG: scaled between its 1st and 99.5th percentile, NaN (off the image) dark blue,
    each pixel repeated ``zoom`` times (default: to about 120 pixels a side)."""
    from matplotlib.image import imsave
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if finite.any():
        lo, hi = (float(v) for v in np.percentile(data[finite], [1.0, 99.5]))
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((np.where(finite, data, lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = np.repeat(scaled[:, :, None], 3, axis=2)
    rgb[~finite] = (0.1, 0.1, 0.35)
    zoom = zoom or max(1, int(np.ceil(120 / max(data.shape))))
    rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    buf = io.BytesIO()
    imsave(buf, rgb[::-1], format="png")
    return buf.getvalue()
