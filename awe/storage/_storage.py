"""The data storage (DS): unique file names to immutable, checksummed files."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import re
import shutil
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, cast
from uuid import uuid4

from awe.storage._backends import make_backend
from awe.storage._errors import CorruptFileError, MissingFileError, StorageError
from awe.storage._hashing import copy_hashing, sha256_file, sha256_stream
from awe.storage._names import TEMP_PREFIX, KeyInfo, parse_key, relative_key, temp_key, validate_filename

__all__ = ["DataStorage"]

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
#: errors meaning "no space": the message says "disk full"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DataStorage:
    """Files by unique name in a local folder or behind any fsspec URL.

    The database keeps each product's metadata and the SHA-256 of its file;
    the storage keeps the file. Stored files never change: storing a name
    again with the same content does nothing, with other content is refused.

    Parameters
    ----------
    url : str
        A local folder (``/data/awe``, ``file:///data/awe``) or an fsspec URL:
        ``s3://bucket/prefix``, ``memory://name``, ``gs://...``, or
        ``https://server/path`` (read-only). An S3 endpoint other than AWS is
        given with ``client_kwargs={'endpoint_url': ...}`` or the environment
        (``AWS_ENDPOINT_URL``).
    cache_dir : str or Path, optional
        Local folder keeping copies of files fetched from a remote storage, so
        each is downloaded once. Cached copies are verified against the
        checksum whenever one is given. Unused for a local storage.
    **storage_options
        Passed to the fsspec file system (credentials, endpoint, ...).

    Attributes
    ----------
    url : str
        The storage URL (a local storage: its absolute folder).

    Notes
    -----
    Inside the storage a file ``name`` lives at ``ab/cd/<name, percent-escaped>``
    with ``abcd`` the start of the SHA-256 of the name (see
    :mod:`awe.storage._names`), so no folder grows huge and names with ``#``,
    ``:`` or ``?`` work on every file system and URL scheme.
    """

    def __init__(self, url: str, cache_dir: str | Path | None = None, **storage_options: Any) -> None:
        self._backend = make_backend(url, **storage_options)
        self._options = storage_options
        self.url: str = self._backend.url
        self.cache_dir: Path | None = Path(cache_dir).expanduser().absolute() if cache_dir else None
        self._scratch: Path | None = None

    def __repr__(self) -> str:
        cache = f", cache_dir={str(self.cache_dir)!r}" if self.cache_dir else ""
        return f"DataStorage({self.url!r}{cache})"

    def __reduce__(self):
        # picklable for DPU workers: rebuilt from its URL, cache folder and options
        return (_rebuild, (self.url, self.cache_dir, self._options))

    @property
    def is_local(self) -> bool:
        """True when the storage is a folder on a local (or mounted) file system."""
        return self._backend.is_local

    # ------------------------------------------------------------------ writing
    def store(self, local_path: str | Path, filename: str | None = None) -> str:
        """Copy a local file into the storage, atomically.

        Parameters
        ----------
        local_path : str or Path
            The file to store.
        filename : str, optional
            Its name in the storage; default: the name of ``local_path``.

        Returns
        -------
        str
            The SHA-256 (hex) of the content, to record in the database.

        Raises
        ------
        StorageError
            If the name is stored already with different content, the storage
            is read-only, or the upload failed (nothing is then stored under
            the name).
        """
        local_path = Path(local_path)
        filename = validate_filename(filename if filename is not None else local_path.name)
        self._require_writable("store", filename)
        if not local_path.is_file():
            raise FileNotFoundError(errno.ENOENT, f"cannot store {filename}: no such local file", str(local_path))
        return self._store(filename, lambda: open(local_path, "rb"), lambda: (sha256_file(local_path),
                                                                               local_path.stat().st_size))

    def store_bytes(self, data: bytes | memoryview, filename: str, checksum: str | None = None) -> str:
        """Store a file's content held in memory, atomically: the one write of it (hashed while written).

        Like :meth:`store`; ``checksum`` (the SHA-256 the caller computed, e.g. to look the file up first)
        is checked against the bytes written, and a mismatch stores nothing.
        """
        filename = validate_filename(filename)
        self._require_writable("store", filename)
        checksum = _check_digest(checksum, filename)
        view = memoryview(data).cast("B")

        def digest() -> tuple[str, int]:
            return checksum or hashlib.sha256(view).hexdigest(), view.nbytes
        return self._store(filename, lambda: cast(BinaryIO, _MemoryReader(view)), digest, expected=checksum)

    def _store(self, filename: str, opener: Callable[[], BinaryIO], digest: Callable[[], tuple[str, int]],
               expected: str | None = None) -> str:
        """Write what ``opener`` opens under ``filename`` through a temporary key (its hash must be ``expected``
        when given); ``digest()``: the content's hash and size, to compare with a file stored under the name."""
        key = relative_key(filename)
        with self._translate(filename, "store", missing=False):
            if self._backend.exists(key):
                return self._same_as_stored(filename, key, *digest())
            temp = temp_key(key, uuid4().hex)
            published = False
            try:
                with opener() as src:
                    written, nbytes = self._backend.write_temp(temp, src)
                if expected is not None and expected != written:
                    raise StorageError(f"{filename}: the bytes written hash to {written}, not {expected}; "
                                       "nothing stored")
                published = self._backend.publish(temp, key)
            finally:
                if not published:
                    self._discard(temp)
            if not published:  # someone stored the name meanwhile
                return self._same_as_stored(filename, key, written, nbytes)
        log.info("stored %s (%d bytes, sha256 %s) in %s", filename, nbytes, written, self.url)
        return written

    def _same_as_stored(self, filename: str, key: str, digest: str, nbytes: int) -> str:
        """``digest`` if the stored file has this content (storing again is a no-op), else raise."""
        stored_size = self._backend.size(key)
        if stored_size != nbytes:
            difference = f"{stored_size} bytes stored != {nbytes} bytes new"
        else:
            with self._backend.open_read(key) as fh:
                stored = sha256_stream(fh)
            if stored == digest:
                log.debug("%s is stored already in %s with the same content", filename, self.url)
                return digest
            difference = f"sha256 {stored} stored != {digest} new"
        raise StorageError(
            f"refusing to overwrite {filename} in storage {self.url}: it holds different content "
            f"({difference}); stored files never change: give the new file a new unique name, or delete "
            "the stored one first if no database object refers to it"
        )

    def _discard(self, key: str) -> None:
        """Remove a temporary key, if it is there; a failure only leaves work for :func:`vacuum`."""
        try:
            self._backend.remove(key)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove temporary %s in %s (vacuum removes it later): %s", key, self.url, exc)

    def delete(self, filename: str) -> None:
        """Remove a stored file (and its cached copy).

        Raises
        ------
        MissingFileError
            If the file is not stored.
        """
        key = relative_key(filename)
        self._require_writable("delete", filename)
        with self._translate(filename, "delete"):
            self._backend.remove(key)
        if self.cache_dir is not None:
            (self._cache_root() / key).unlink(missing_ok=True)
        log.info("deleted %s from %s", filename, self.url)

    # ------------------------------------------------------------------ reading
    def retrieve(self, filename: str, dest_dir: str | Path = ".", checksum: str | None = None) -> Path:
        """Copy a stored file into a local folder.

        Parameters
        ----------
        filename : str
            The stored file.
        dest_dir : str or Path
            Folder to copy it into (created if needed); the copy keeps the name.
        checksum : str, optional
            SHA-256 recorded in the database; the copy is verified against it
            (a copy already in ``dest_dir`` with this checksum is kept as is).

        Returns
        -------
        Path
            ``dest_dir / filename``.

        Raises
        ------
        MissingFileError
            If the file is not stored.
        CorruptFileError
            If the content does not match ``checksum``; no copy is left behind.
        """
        key = relative_key(filename)
        checksum = _check_digest(checksum, filename)
        dest = Path(dest_dir) / filename
        if checksum is not None and dest.is_file() and sha256_file(dest) == checksum:
            log.debug("%s is in %s already", filename, dest.parent)
            return dest
        with self._translate(filename, "retrieve"):
            if self.cache_dir is not None and not self.is_local:
                cached = self._cached_copy(filename, key, checksum)
                self._copy_to(filename, lambda: open(cached, "rb"), dest, None)
            else:
                self._copy_to(filename, lambda: self._backend.open_read(key), dest, checksum)
        log.debug("retrieved %s from %s into %s", filename, self.url, dest.parent)
        return dest

    def open(self, filename: str, checksum: str | None = None) -> Path:
        """A local path to read the file from now: the stored file itself or a cached copy.

        Do not modify the file at that path. Raises like :meth:`retrieve`.
        """
        key = relative_key(filename)
        checksum = _check_digest(checksum, filename)
        with self._translate(filename, "open"):
            local = self._backend.local_path(key)
            if local is None:
                return self._cached_copy(filename, key, checksum)
            if not local.is_file():
                raise MissingFileError(filename, self.url)
            if checksum is not None:
                actual = sha256_file(local)
                if actual != checksum:
                    raise CorruptFileError(filename, self.url, actual, checksum)
            return local

    def _cached_copy(self, filename: str, key: str, checksum: str | None) -> Path:
        """The verified cached copy of a remote file, downloaded if absent or bad."""
        path = self._cache_root() / key
        if path.is_file():
            if checksum is None:
                return path
            actual = sha256_file(path)
            if actual == checksum:
                log.debug("cache hit for %s", filename)
                return path
            log.warning("cached copy %s is corrupt (sha256 %s != %s); fetching it again", path, actual, checksum)
            path.unlink(missing_ok=True)
        self._copy_to(filename, lambda: self._backend.open_read(key), path, checksum)
        return path

    def _copy_to(self, filename: str, opener: Callable[[], BinaryIO], dest: Path, checksum: str | None) -> str:
        """Copy what ``opener`` opens to the local ``dest`` through a temporary file, verifying it."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = opener()
        tmp = dest.with_name(f"{TEMP_PREFIX}{uuid4().hex}-{dest.name[:80]}")
        try:
            with src, open(tmp, "xb") as dst:
                digest, _ = copy_hashing(src, dst)
            if checksum is not None and digest != checksum:
                raise CorruptFileError(filename, self.url, digest, checksum)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def _cache_root(self) -> Path:
        """This storage's part of the cache folder (a private temporary one if none was given)."""
        if self.cache_dir is not None:
            return self.cache_dir / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="awe-storage-"))
            weakref.finalize(self, shutil.rmtree, self._scratch, ignore_errors=True)
        return self._scratch

    # ------------------------------------------------------------------ queries
    def exists(self, filename: str) -> bool:
        """Whether the file is stored."""
        key = relative_key(filename)
        with self._translate(filename, "look up"):
            return self._backend.exists(key)

    def verify(self, filename: str, checksum: str | None = None) -> str:
        """Whether the stored file is there and whole: ``'ok'``, ``'missing'`` or ``'corrupt'``.

        Parameters
        ----------
        filename : str
            The stored file.
        checksum : str, optional
            The SHA-256 recorded in the database; without it only existence is checked.

        Returns
        -------
        str
            ``'missing'`` when not stored, ``'corrupt'`` when the content's SHA-256 is not ``checksum``,
            else ``'ok'``. Other failures (storage unreachable) raise :class:`StorageError`.
        """
        checksum = _check_digest(checksum, filename)
        if not self.exists(filename):
            return "missing"
        if checksum is None:
            return "ok"
        try:
            return "ok" if self.checksum(filename) == checksum else "corrupt"
        except MissingFileError:  # removed meanwhile
            return "missing"

    def size(self, filename: str) -> int:
        """Size of the stored file in bytes (:class:`MissingFileError` if not stored)."""
        key = relative_key(filename)
        with self._translate(filename, "look up"):
            return self._backend.size(key)

    def checksum(self, filename: str) -> str:
        """SHA-256 (hex) of the stored file, read in full (:class:`MissingFileError` if not stored)."""
        key = relative_key(filename)
        with self._translate(filename, "read"):
            with self._backend.open_read(key) as fh:
                return sha256_stream(fh)

    def list(self) -> Iterator[str]:
        """The names of the stored files (temporary files and foreign objects are skipped)."""
        for info, _ in self._entries():
            if info.filename is not None:  # not a temporary file
                yield info.filename

    # ------------------------------------------------------------- for vacuum
    def _entries(self) -> Iterator[tuple[KeyInfo, float | None]]:
        """Every stored and temporary file with its modification time."""
        if not self._backend.listable:
            raise StorageError(f"storage {self.url} is served over HTTP and cannot be listed; list it on the server")
        with self._translate("(listing)", "list"):
            for key, mtime in self._backend.walk():
                info = parse_key(key)
                if info is None:
                    log.debug("ignoring %s in %s: not in the storage layout", key, self.url)
                else:
                    yield info, mtime

    def _remove_temp(self, key: str) -> None:
        """Remove a temporary key found by :meth:`_entries`."""
        self._require_writable("remove", key)
        self._discard(key)

    # ------------------------------------------------------------------ helpers
    def _require_writable(self, action: str, filename: str) -> None:
        if not self._backend.writable:
            raise StorageError(
                f"cannot {action} {filename}: storage {self.url} is read-only (HTTP); "
                "use a writable storage URL (a local folder, s3://...) for this"
            )

    @contextmanager
    def _translate(self, filename: str, action: str, missing: bool = True) -> Iterator[None]:
        """Turn the backend's errors into storage errors that name the file.

        With ``missing``, a ``FileNotFoundError`` means the file is not stored
        (:class:`MissingFileError`); otherwise (storing) it is a failure like any other.
        """
        failures: tuple[type[BaseException], ...] = (OSError, *self._backend.errors)
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError as exc:
            if not missing:
                raise StorageError(
                    f"could not {action} {filename} in storage {self.url}: {exc}; check that the storage "
                    "URL (bucket, folder) exists"
                ) from exc
            raise MissingFileError(filename, self.url) from exc
        except failures as exc:
            full = isinstance(exc, OSError) and exc.errno in _FULL
            hint = ("the storage is full (disk full?): free space or use a bigger storage, then retry" if full
                    else "check that the storage is reachable and writable (disk full?), then retry")
            raise StorageError(
                f"could not {action} {filename} in storage {self.url}: {exc}; nothing was stored under "
                f"that name: {hint}" if action == "store" else
                f"could not {action} {filename} in storage {self.url}: {exc}; nothing was changed under "
                f"that name: {hint}"
            ) from exc


def _check_digest(checksum: str | None, filename: str) -> str | None:
    """A recorded checksum as 64 lower-case hex digits (or None); ValueError if malformed."""
    if checksum is None:
        return None
    value = str(checksum).strip().lower()
    if not _HEX64.match(value):
        raise ValueError(
            f"checksum {checksum!r} given for {filename} is not a SHA-256 (64 hex digits); "
            "pass the checksum recorded in the database, or None"
        )
    return value


def _rebuild(url: str, cache_dir: Path | None, options: dict) -> DataStorage:
    return DataStorage(url, cache_dir, **options)


class _MemoryReader(io.RawIOBase):
    """A binary file reading a buffer in place: ``read`` gives read-only slices of it, not copies (an
    ``io.BytesIO`` of a buffer copies all of it first, and each read once more)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view.toreadonly()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> memoryview:
        end = self._view.nbytes if size is None or size < 0 else min(self._view.nbytes, self._pos + size)
        chunk = self._view[self._pos:end]
        self._pos = end
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:chunk.nbytes] = chunk
        return chunk.nbytes
