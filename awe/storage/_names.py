"""File names and their place inside a storage.

A file ``name`` is kept at ``<h0h1>/<h2h3>/<encoded name>``, where ``h`` is the
SHA-256 of the name and the encoding percent-escapes every character outside a
small safe set (``#``, ``?``, ``%``, ``*``, ``[``, ``]``, spaces, ...), so the
same key works as a POSIX path, an S3 key and an fsspec/HTTP URL path. Two
levels of 256 shards keep every folder small (65 536 leaves: a hundred million
files make ~1 500 per folder). The layout is the same for every kind of storage,
so a local storage folder can be copied to a bucket as it is.

Temporary files live beside their final place and start with :data:`TEMP_PREFIX`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = ["TEMP_PREFIX", "validate_filename", "relative_key", "temp_key", "parse_key", "KeyInfo"]

TEMP_PREFIX = ".awe-tmp-"
_SAFE = "-_.:+=,@~"
_MAX_ENCODED = 255  # NAME_MAX of common file systems
_SHARD = re.compile(r"[0-9a-f]{2}\Z")


def validate_filename(filename: str) -> str:
    """Return ``filename`` if it may name a stored file, else raise ``ValueError``.

    A storage file name is one flat, non-empty name: no ``/`` or ``\\``, no
    ``..``, no leading ``.`` (hidden and temporary files), no control characters.
    """
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"invalid storage file name {filename!r}: it must be a non-empty string")
    problem = None
    if "/" in filename or "\\" in filename:
        problem = "it must not contain '/' or '\\' (storage names are flat)"
    elif ".." in filename:
        problem = "it must not contain '..'"
    elif filename.startswith("."):
        problem = "it must not start with '.' (reserved for temporary files)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in filename):
        problem = "it must not contain control characters"
    elif len(_encode(filename).encode()) > _MAX_ENCODED:
        problem = f"it is too long (at most {_MAX_ENCODED} bytes once escaped)"
    if problem:
        raise ValueError(f"invalid storage file name {filename!r}: {problem}; use the product's unique file name")
    return filename


def _encode(filename: str) -> str:
    return quote(filename, safe=_SAFE)


def _shard(filename: str) -> str:
    digest = hashlib.sha256(filename.encode("utf-8")).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}"


def relative_key(filename: str) -> str:
    """Place of a (valid) file name inside the storage: ``ab/cd/<encoded name>``."""
    validate_filename(filename)
    return f"{_shard(filename)}/{_encode(filename)}"


def temp_key(final_key: str, token: str) -> str:
    """A temporary key beside ``final_key``, unique through ``token``."""
    shard, _, encoded = final_key.rpartition("/")
    return f"{shard}/{TEMP_PREFIX}{token}-{encoded[:80]}"


@dataclass(frozen=True)
class KeyInfo:
    """What a key found in a storage is: a stored file (``filename``) or a temporary file."""

    key: str
    #: the stored file's name; None for a temporary file
    filename: str | None

    @property
    def is_temp(self) -> bool:
        return self.filename is None


def parse_key(key: str) -> KeyInfo | None:
    """Interpret a storage-relative key; ``None`` for anything not in the storage layout."""
    parts = key.split("/")
    if len(parts) != 3 or not (_SHARD.match(parts[0]) and _SHARD.match(parts[1])):
        return None
    leaf = parts[2]
    if leaf.startswith(TEMP_PREFIX):
        return KeyInfo(key, None)
    filename = unquote(leaf)
    if _encode(filename) != leaf or _shard(filename) != f"{parts[0]}/{parts[1]}":
        return None
    try:
        validate_filename(filename)
    except ValueError:
        return None
    return KeyInfo(key, filename)
