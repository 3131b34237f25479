"""FITS reading and writing for products: the one place that knows the file format."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits

__all__ = ["read_image", "read_header", "write_image", "ImageBandWriter", "inspect_image", "FitsFormatError"]


class FitsFormatError(ValueError):
    """A file is not a readable FITS image."""


def _first_image_hdu(hdul: fits.HDUList, path: Path) -> fits.ImageHDU | fits.PrimaryHDU:
    for hdu in hdul:
        if hdu.is_image and hdu.data is not None:
            return hdu
    raise FitsFormatError(f"{path}: no image data in any HDU")


def read_image(path: str | Path, ext: int | str | None = None) -> np.ndarray:
    """The pixels of ``ext`` (default: the first HDU with image data) as float32."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = hdul[ext] if ext is not None else _first_image_hdu(hdul, path)
            return np.asarray(hdu.data, dtype=np.float32)
    except (OSError, TypeError, ValueError) as exc:
        if isinstance(exc, FitsFormatError):
            raise
        raise FitsFormatError(f"{path}: cannot read FITS image ({exc}); the file may be corrupt or truncated") \
            from None


def read_header(path: str | Path, ext: int | str = 0) -> fits.Header:
    path = Path(path)
    try:
        return fits.getheader(path, ext)
    except (OSError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise FitsFormatError(f"{path}: cannot read FITS header of extension {ext} ({exc})") from None


def write_image(path: str | Path, data: np.ndarray, header: Mapping[str, Any] | fits.Header | None = None,
                extra: Mapping[str, np.ndarray] | None = None, dtype: Any = np.float32) -> Path:
    """Write ``data`` (and named extra image extensions) atomically: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = fits.Header()
    for key, value in (header.items() if header is not None else []):
        if isinstance(value, tuple):
            hdr[key] = value
        else:
            hdr[key] = _fits_value(value)
    hdus = [fits.PrimaryHDU(np.asarray(data, dtype=dtype), header=hdr)]
    for name, arr in (extra or {}).items():
        hdus.append(fits.ImageHDU(np.asarray(arr), name=name))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=path.parent)
    os.close(fd)
    try:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
                        hdr[key] = value if isinstance(value, tuple) else _fits_value(value)
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
            os.pwrite(self._fd, np.ascontiguousarray(band, dtype=dtype).tobytes(),
                      start + r0 * self.nx * dtype.itemsize)

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


def _fits_value(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None:
        return ""
    return value


def inspect_image(frame: Any, ax: Any = None, path: str | Path | None = None) -> Any:
    """Figure of a frame's pixels (ZScale) titled with its class, file and statistics."""
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval

    data = frame.load()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 8))
    vmin, vmax = ZScaleInterval().get_limits(data[np.isfinite(data)])
    ax.imshow(data, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    stat = getattr(frame, "imstat", None)
    subtitle = f"median {stat.median:.4g}, stdev {stat.stdev:.4g}" if stat and stat.median is not None else ""
    ax.set_title(f"{type(frame).__name__}\n{frame.filename}\n{subtitle}", fontsize=7)
    fig = fig or ax.figure
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
