"""FITS images written band of rows by band (:class:`ImageBandWriter`), so that no plane is held whole.

Light on purpose (numpy and astropy.io.fits only): the streamed regridding imports it without the database
layer that :mod:`awe.model._io` (which re-exports it) brings along.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits

__all__ = ["ImageBandWriter", "fits_value"]


class ImageBandWriter:
    """A FITS file of a primary image and image extensions of one shape (``ny`` x ``nx``), written band of rows
    by band: the layout (headers, data offsets) is fixed when the file is opened, every :meth:`write` puts
    the rows ``r0 : r0 + len(band)`` of each plane in place (big-endian, as FITS has it), so no plane is ever
    held whole. Atomic as :func:`write_image`: a temporary file, renamed over ``path`` by :meth:`close`
    (removed by :meth:`abort`, or by a ``with`` block left on an exception).

    ``planes``: the name (``None``: the primary HDU, first) and the dtype (float32, int16, int32, uint8) of each.
    ``fsync``: the file flushed to the disk before the rename (False: a scratch file, left to the page cache).
    """

    def __init__(self, path: str | Path, ny: int, nx: int, header: Mapping[str, Any] | fits.Header | None = None,
                 planes: tuple[tuple[str | None, Any], ...] = ((None, np.float32),), fsync: bool = True) -> None:
        if not planes or planes[0][0] is not None:
            raise ValueError("ImageBandWriter: the first plane is the primary HDU (name None)")
        self.path = Path(path)
        self.ny, self.nx = int(ny), int(nx)
        self._fsync = bool(fsync)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dtypes = [np.dtype(d).newbyteorder(">") if np.dtype(d).itemsize > 1 else np.dtype(d) for _, d in planes]
        blocks: list[bytes] = []
        self._offsets: list[int] = []
        offset = 0
        for k, ((name, _), dtype) in enumerate(zip(planes, self._dtypes)):
            bitpix = {"f4": -32, "f8": -64, "i2": 16, "i4": 32, "u1": 8}.get(dtype.kind + str(dtype.itemsize))
            if bitpix is None:
                raise ValueError(f"ImageBandWriter: no FITS BITPIX for {dtype}")
            if k == 0:
                hdr = fits.Header([("SIMPLE", True), ("BITPIX", bitpix), ("NAXIS", 2), ("NAXIS1", self.nx),
                                   ("NAXIS2", self.ny), ("EXTEND", True)])
                for key, value in (header.items() if header is not None else []):
                    if key not in hdr:
                        hdr[key] = value if isinstance(value, tuple) else fits_value(value)
            else:
                hdr = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", bitpix), ("NAXIS", 2), ("NAXIS1", self.nx),
                                   ("NAXIS2", self.ny), ("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", str(name))])
            text = hdr.tostring(padding=True).encode("ascii")
            blocks.append(text)
            offset += len(text)
            self._offsets.append(offset)
            size = self.ny * self.nx * dtype.itemsize
            offset += -(-size // 2880) * 2880
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fd: int | None = fd
        try:
            os.ftruncate(fd, offset)  # the data's padding: zeros
            for text, start in zip(blocks, self._offsets):
                os.pwrite(fd, text, start - len(text))
        except BaseException:
            self.abort()
            raise

    def write(self, r0: int, *bands: np.ndarray) -> None:
        """Rows ``r0 : r0 + len(band)`` of every plane (one band per plane, in the order of ``planes``)."""
        if self._fd is None:
            raise ValueError(f"ImageBandWriter: {self.path} is closed")
        if len(bands) != len(self._dtypes):
            raise ValueError(f"ImageBandWriter: {len(bands)} bands for {len(self._dtypes)} planes")
        for band, dtype, start in zip(bands, self._dtypes, self._offsets):
            band = np.asarray(band)
            if band.ndim != 2 or band.shape[1] != self.nx or not 0 <= r0 <= self.ny - band.shape[0]:
                raise ValueError(f"ImageBandWriter: a band of shape {band.shape} at row {r0} does not fit "
                                 f"{self.ny} x {self.nx}")
            # converted to big-endian a few rows at a time: no copy of the whole band
            step = max(1, (1 << 18) // max(1, self.nx * dtype.itemsize))
            for k in range(0, band.shape[0], step):
                piece = np.ascontiguousarray(band[k:k + step], dtype=dtype)
                os.pwrite(self._fd, memoryview(piece).cast("B"), start + (r0 + k) * self.nx * dtype.itemsize)

    def close(self) -> Path:
        """fsync, rename over ``path``; returns it."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (``path`` is left as it was)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ImageBandWriter":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def fits_value(value: Any) -> Any:
    """A header card's value as FITS can hold it (numpy scalars as Python numbers, dates as ISO text, None as
    ''); :func:`awe.model._io.write_image` writes its cards the same way."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None:
        return ""
    return value
