"""FITS reading and writing for products: the one place that knows the file format."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits

from awe.image.fitsbands import ImageBandWriter, fits_value

__all__ = ["read_image", "read_header", "write_image", "ImageBandWriter", "inspect_image", "FitsFormatError"]


class FitsFormatError(ValueError):
    """A file is not a readable FITS image."""


def _image_hdu(hdul: fits.HDUList, path: Path) -> fits.ImageHDU | fits.PrimaryHDU:
    """The first HDU with image data, found from the headers (the data is not read)."""
    for hdu in hdul:
        if hdu.is_image and type(hdu) in (fits.PrimaryHDU, fits.ImageHDU):
            naxis = int(hdu.header.get("NAXIS", 0))
            if naxis == 0:
                continue
            if all(int(hdu.header.get(f"NAXIS{i}", 0)) > 0 for i in range(1, naxis + 1)):
                return hdu
        if hdu.is_image and hdu.data is not None:
            return hdu
    raise FitsFormatError(f"{path}: no image data in any HDU")


#: big-endian dtypes of the BITPIX values :func:`_direct_pixels` reads itself
_DIRECT_DTYPES: dict[int, np.dtype] = {8: np.dtype("u1"), 16: np.dtype(">i2"), -32: np.dtype(">f4"),
                                        -64: np.dtype(">f8")}


def _direct_pixels(path: Path, hdu: Any) -> np.ndarray | None:
    """The float32 pixels of a plain 2-D image HDU read straight from the file, or None when astropy must.

    The values are astropy's (``np.asarray(hdu.data, np.float32)``): integers of 8 or 16 bits with an integer
    BZERO and BSCALE 1 (raw frames: 16-bit with BZERO 32768) are exact in float32, and floats without scaling
    are only byte-swapped. One read and one conversion, where astropy's scaling of 16-bit data makes three
    passes (10 times slower for a 17 MB raw chip file). Anything else (BLANK, other scalings, other BITPIX,
    compressed or not 2-D images, a short file): None.
    """
    if type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU):
        return None
    header = hdu.header
    dtype = _DIRECT_DTYPES.get(int(header.get("BITPIX", 0)))
    if dtype is None or int(header.get("NAXIS", 0)) != 2 or "BLANK" in header:
        return None
    bscale, bzero = header.get("BSCALE", 1), header.get("BZERO", 0)
    if not (isinstance(bscale, (int, float)) and isinstance(bzero, (int, float))) or bscale != 1:
        return None
    if bzero != 0 and (dtype.kind == "f" or float(bzero) != int(bzero)):
        return None
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    try:
        offset = int(hdu.fileinfo()["datLoc"])
    except (AttributeError, KeyError, TypeError):
        return None
    raw = np.fromfile(path, dtype=dtype, count=ny * nx, offset=offset)
    if raw.size != ny * nx:
        return None
    out = np.empty((ny, nx), dtype=np.float32)
    out.ravel()[...] = raw
    if bzero:
        out += np.float32(bzero)
    return out


def read_image(path: str | Path, ext: int | str | None = None) -> np.ndarray:
    """The pixels of ``ext`` (default: the first HDU with image data) as float32."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = hdul[ext] if ext is not None else _image_hdu(hdul, path)
            direct = _direct_pixels(path, hdu)
            if direct is not None:
                return direct
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
            hdr[key] = fits_value(value)
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
