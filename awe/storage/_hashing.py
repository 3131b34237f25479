"""Streaming SHA-256 of files and of copies."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["sha256_file", "sha256_stream", "copy_hashing", "write_all", "CHUNK"]

CHUNK = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a local file, read in chunks.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    str
        64 lower-case hexadecimal digits.
    """
    with open(Path(path), "rb") as fh:
        return sha256_stream(fh)


def sha256_stream(fh: BinaryIO) -> str:
    """SHA-256 (hex) of everything left to read in a binary file object."""
    digest = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` in chunks; return the SHA-256 (hex) and the number of bytes.

    Every byte is written: a short write (``write`` returning fewer bytes than
    given, as an unbuffered file may on a full disk) is continued until the
    chunk is written, and a write that makes no progress raises ``OSError``
    (``ENOSPC``) instead of being ignored. The digest is of the bytes written.
    """
    digest = hashlib.sha256()
    nbytes = 0
    while chunk := src.read(CHUNK):
        write_all(dst, chunk)
        digest.update(chunk)
        nbytes += len(chunk)
    return digest.hexdigest(), nbytes


def write_all(dst: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to ``dst``, continuing short writes; ``OSError`` when no byte goes in."""
    view = memoryview(data)
    while view:
        written = dst.write(view)
        if written is None:  # a non-blocking file that would block: treat like any refusal
            written = 0
        if written <= 0:
            raise OSError(errno.ENOSPC, f"no byte of the remaining {len(view)} could be written "
                                        "(disk full?)")
        view = view[written:]
