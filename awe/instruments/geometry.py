"""Sections of one raw extension: prescan, overscan, illuminated area, trim section.

A raw extension is ``n_prescan_x + nx + n_overscan_x`` columns by
``n_prescan_y + ny + n_overscan_y`` rows.  :class:`RawGeometry` reads the sizes
from the ESO keywords of the extension (``HIERARCH ESO DET OUT1 PRSCX`` ...) so
that binned, windowed or shrunk (simulated) frames stay self-describing, and
falls back to the instrument description.  The trim section of a frame whose
illuminated area differs from the full-size chip is scaled proportionally and
always stays inside the illuminated area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from awe.instruments._spec import ChipSpec

__all__ = ["RawGeometry", "MIN_SCAN_COLUMNS", "scaled_size"]

#: Fewest prescan/overscan columns of a shrunk frame (per-row overscan statistics need them).
MIN_SCAN_COLUMNS = 16

_KEYS = {  # RawGeometry field -> ESO keyword (without HIERARCH), comment
    "n_prescan_x": ("ESO DET OUT1 PRSCX", "Prescan region in X"),
    "n_overscan_x": ("ESO DET OUT1 OVSCX", "Overscan region in X"),
    "n_prescan_y": ("ESO DET OUT1 PRSCY", "Prescan region in Y"),
    "n_overscan_y": ("ESO DET OUT1 OVSCY", "Overscan region in Y"),
    "nx": ("ESO DET OUT1 NX", "Valid pixels along X"),
    "ny": ("ESO DET OUT1 NY", "Valid pixels along Y"),
}
_FALLBACK = {"nx": "ESO DET CHIP NX", "ny": "ESO DET CHIP NY"}


def scaled_size(n: int, scale: float) -> int:
    """``n * scale`` rounded half up (never below 1 for a non-empty size)."""
    if n <= 0:
        return 0
    return max(1, int(math.floor(n * scale + 0.5)))


def _header_value(header: Mapping[str, Any], key: str) -> Any | None:
    for candidate in (key, "HIERARCH " + key):
        try:
            if candidate in header:
                return header[candidate]
        except (KeyError, ValueError):  # astropy may refuse some spellings
            continue
    return None


@dataclass(frozen=True)
class RawGeometry:
    """Layout of one raw extension (sizes in pixels, trim section 1-based inclusive).

    Attributes
    ----------
    nx, ny : int
        Illuminated area.
    n_prescan_x, n_overscan_x : int
        Prescan (left) and overscan (right) columns.
    n_prescan_y, n_overscan_y : int
        Unlit rows below and above the illuminated area.
    trim_box : tuple of int
        Trim section ``(x0, x1, y0, y1)``, 1-based inclusive raw coordinates.
    """

    nx: int
    ny: int
    n_prescan_x: int
    n_overscan_x: int
    n_prescan_y: int
    n_overscan_y: int
    trim_box: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        x0, x1, y0, y1 = self.trim_box
        if not (self.n_prescan_x < x0 <= x1 <= self.n_prescan_x + self.nx
                and self.n_prescan_y < y0 <= y1 <= self.n_prescan_y + self.ny):
            raise ValueError(f"trim section {self.trim_box} lies outside the illuminated area of {self}")

    # ------------------------------------------------------------ constructors
    @classmethod
    def _build(cls, chip: ChipSpec, nx: int, ny: int, px: int, ox: int, py: int, oy: int) -> "RawGeometry":
        """Geometry with the chip's trim section scaled to an illuminated area ``nx`` x ``ny``."""
        if nx <= 0 or ny <= 0:
            raise ValueError(f"{chip.name}: the illuminated area must not be empty (nx={nx}, ny={ny})")

        def scale_range(lo: int, hi: int, prescan: int, n_full: int, n_new: int) -> tuple[int, int]:
            # lo, hi: 1-based raw coordinates at full size -> 0-based inside the illuminated area
            rel0, rel1 = lo - 1 - prescan, hi - 1 - prescan
            factor = n_new / n_full
            new0 = min(max(math.ceil(rel0 * factor - 1e-9), 0), n_new - 1)
            new1 = min(max(math.floor((rel1 + 1) * factor + 1e-9) - 1, new0), n_new - 1)
            return new0, new1

        x0, x1 = scale_range(chip.trim[0], chip.trim[1], chip.prescan_x, chip.nx, nx)
        y0, y1 = scale_range(chip.trim[2], chip.trim[3], chip.prescan_y, chip.ny, ny)
        return cls(nx=nx, ny=ny, n_prescan_x=px, n_overscan_x=ox, n_prescan_y=py, n_overscan_y=oy,
                   trim_box=(px + x0 + 1, px + x1 + 1, py + y0 + 1, py + y1 + 1))

    @classmethod
    def from_chip(cls, chip: ChipSpec) -> "RawGeometry":
        """The full-size geometry of the instrument description."""
        return cls(nx=chip.nx, ny=chip.ny, n_prescan_x=chip.prescan_x, n_overscan_x=chip.overscan_x,
                   n_prescan_y=chip.prescan_y, n_overscan_y=chip.overscan_y, trim_box=chip.trim)

    @classmethod
    def scaled(cls, chip: ChipSpec, scale: float) -> "RawGeometry":
        """The geometry of a chip shrunk by ``scale`` (as the simulator writes it).

        Every size scales proportionally; prescan and overscan columns never drop
        below :data:`MIN_SCAN_COLUMNS` (unless the chip has none).  ``scale=1``
        gives :meth:`from_chip`.
        """
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale!r}")
        if scale == 1:
            return cls.from_chip(chip)

        def columns(n: int) -> int:
            return 0 if n == 0 else max(MIN_SCAN_COLUMNS, scaled_size(n, scale))

        return cls._build(chip, scaled_size(chip.nx, scale), scaled_size(chip.ny, scale),
                          columns(chip.prescan_x), columns(chip.overscan_x),
                          int(math.floor(chip.prescan_y * scale + 0.5)),
                          int(math.floor(chip.overscan_y * scale + 0.5)))

    @classmethod
    def from_header(cls, header: Mapping[str, Any], chip: ChipSpec) -> "RawGeometry":
        """Read the sections from an extension header, falling back to ``chip``.

        Parameters
        ----------
        header : astropy.io.fits.Header or mapping
            Raw extension header; ``HIERARCH ESO DET OUT1 PRSCX/OVSCX/PRSCY/OVSCY/NX/NY``
            are used where present (``ESO DET CHIP NX/NY`` as second choice for the size).
        chip : ChipSpec
            The chip's description.

        Raises
        ------
        ValueError
            If ``NAXIS1``/``NAXIS2`` disagree with the sections found.
        """
        fallback = {"nx": chip.nx, "ny": chip.ny, "n_prescan_x": chip.prescan_x,
                    "n_overscan_x": chip.overscan_x, "n_prescan_y": chip.prescan_y,
                    "n_overscan_y": chip.overscan_y}
        sizes = {}
        for field, (key, _comment) in _KEYS.items():
            value = _header_value(header, key)
            if value is None and field in _FALLBACK:
                value = _header_value(header, _FALLBACK[field])
            sizes[field] = fallback[field] if value is None else int(value)
        geometry = cls._build(chip, sizes["nx"], sizes["ny"], sizes["n_prescan_x"], sizes["n_overscan_x"],
                              sizes["n_prescan_y"], sizes["n_overscan_y"])
        naxis = (_header_value(header, "NAXIS2"), _header_value(header, "NAXIS1"))
        if naxis[0] is not None and naxis[1] is not None and (int(naxis[0]), int(naxis[1])) != geometry.shape:
            raise ValueError(
                f"{chip.name}: the extension is {naxis[1]} x {naxis[0]} pixels but its sections "
                f"(prescan/overscan/illuminated, from the ESO DET OUT1 keywords or the instrument description) "
                f"add up to {geometry.shape[1]} x {geometry.shape[0]}; add the HIERARCH ESO DET OUT1 "
                f"PRSCX/OVSCX/PRSCY/OVSCY/NX/NY keywords to the header")
        return geometry

    # ------------------------------------------------------------ sections
    @property
    def shape(self) -> tuple[int, int]:
        """Raw extension shape ``(ny, nx)`` including all unlit strips."""
        return (self.n_prescan_y + self.ny + self.n_overscan_y, self.n_prescan_x + self.nx + self.n_overscan_x)

    @property
    def prescan_x(self) -> slice:
        """Prescan columns (0-based slice)."""
        return slice(0, self.n_prescan_x)

    @property
    def overscan_x(self) -> slice:
        """Overscan columns (0-based slice); ``raw[:, geometry.overscan_x]`` per row for overscan method 6."""
        start = self.n_prescan_x + self.nx
        return slice(start, start + self.n_overscan_x)

    @property
    def prescan_y(self) -> slice:
        """Unlit rows below the illuminated area (0-based slice)."""
        return slice(0, self.n_prescan_y)

    @property
    def overscan_y(self) -> slice:
        """Unlit rows above the illuminated area (0-based slice)."""
        start = self.n_prescan_y + self.ny
        return slice(start, start + self.n_overscan_y)

    @property
    def data(self) -> tuple[slice, slice]:
        """The illuminated area ``(yslice, xslice)``."""
        return (slice(self.n_prescan_y, self.n_prescan_y + self.ny),
                slice(self.n_prescan_x, self.n_prescan_x + self.nx))

    @property
    def trim(self) -> tuple[slice, slice]:
        """The trim section used by the pipelines ``(yslice, xslice)``."""
        x0, x1, y0, y1 = self.trim_box
        return (slice(y0 - 1, y1), slice(x0 - 1, x1))

    @property
    def trim_shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of the trimmed image."""
        x0, x1, y0, y1 = self.trim_box
        return (y1 - y0 + 1, x1 - x0 + 1)

    @property
    def trimsec(self) -> str:
        """The trim section in IRAF notation ``'[x0:x1,y0:y1]'``."""
        x0, x1, y0, y1 = self.trim_box
        return f"[{x0}:{x1},{y0}:{y1}]"

    @property
    def datasec(self) -> str:
        """The illuminated area in IRAF notation ``'[x0:x1,y0:y1]'``."""
        ys, xs = self.data
        return f"[{xs.start + 1}:{xs.stop},{ys.start + 1}:{ys.stop}]"

    def header_cards(self) -> dict[str, tuple[int, str]]:
        """The ESO keywords describing this geometry, ``{'HIERARCH ESO DET OUT1 PRSCX': (value, comment)}``."""
        cards = {"HIERARCH " + key: (getattr(self, field), comment) for field, (key, comment) in _KEYS.items()}
        cards["HIERARCH ESO DET CHIP NX"] = (self.nx, "Physical active pixels in X")
        cards["HIERARCH ESO DET CHIP NY"] = (self.ny, "Physical active pixels in Y")
        return cards
