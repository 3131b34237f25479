"""Streaming SHA-256 of files and of copies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["sha256_file", "sha256_stream", "copy_hashing", "CHUNK"]

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
    """Copy ``src`` to ``dst`` in chunks; return the SHA-256 (hex) and the number of bytes."""
    digest = hashlib.sha256()
    nbytes = 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        nbytes += len(chunk)
    return digest.hexdigest(), nbytes
