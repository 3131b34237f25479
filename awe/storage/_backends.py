"""Where the bytes go: a local folder, or any fsspec file system.

A backend knows keys relative to its root (``ab/cd/name``) and offers a few
primitive operations; :class:`~awe.storage.DataStorage` builds the policy
(checksums, no-overwrite, caching) on top. Missing keys raise
``FileNotFoundError``.
"""

from __future__ import annotations

import errno
import logging
import os
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Iterator
from urllib.parse import quote

from awe.storage._hashing import copy_hashing, sha256_stream

__all__ = ["Backend", "LocalBackend", "FsspecBackend", "make_backend"]

log = logging.getLogger(__name__)

# errors of os.link meaning "this file system has no hard links": fall back to rename
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


class Backend(ABC):
    """Primitive operations on keys relative to a storage root."""

    url: str
    writable: bool = True
    listable: bool = True
    is_local: bool = False
    #: exception types (besides OSError) meaning the storage could not be reached or refused
    errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A binary file object positioned at the start of ``key``."""

    @abstractmethod
    def write_temp(self, key: str, src: BinaryIO) -> tuple[str, int]:
        """Write ``src`` under the (new, temporary) ``key``, durably; return (sha256, bytes)."""

    @abstractmethod
    def publish(self, temp: str, final: str) -> bool:
        """Give ``temp`` the name ``final`` unless ``final`` exists.

        Returns True when published (``temp`` is then gone) and False when
        ``final`` exists already (``temp`` is left for the caller to remove).
        A reader never sees a partial object under ``final``.
        """

    @abstractmethod
    def size(self, key: str) -> int:
        """Size of ``key`` in bytes."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def remove(self, key: str) -> None:
        """Remove ``key``."""

    @abstractmethod
    def walk(self) -> Iterator[tuple[str, float | None]]:
        """Every key under the root with its modification time (POSIX seconds, or None)."""

    def local_path(self, key: str) -> Path | None:
        """The local path of ``key`` when the storage is a local folder, else None."""
        return None


class LocalBackend(Backend):
    """A folder on a local (or mounted) file system; writes are fsync'ed and atomic."""

    is_local = True

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def open_temp(self, key: str) -> BinaryIO:
        """A new, unbuffered file for writing ``key`` (tests wrap it to inject faults)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        return os.fdopen(fd, "wb", buffering=0)

    def write_temp(self, key: str, src: BinaryIO) -> tuple[str, int]:
        """Write every byte, hashing it, fsync, and check the size on disk; on failure remove the file."""
        path = self._path(key)
        try:
            with self.open_temp(key) as dst:
                result = copy_hashing(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            on_disk = path.stat().st_size
            if on_disk != result[1]:
                raise OSError(errno.EIO, f"{on_disk} of {result[1]} bytes reached the disk (disk full?)")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        # stored files are never modified: drop the write permission bits
        os.chmod(path, path.stat().st_mode & ~0o222)
        return result

    def publish(self, temp: str, final: str) -> bool:
        src, dst = self._path(temp), self._path(final)
        try:
            os.link(src, dst)  # atomic and never overwrites
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            log.debug("no hard links in %s (%s): publishing %s by rename", self.root, exc, final)
            if dst.exists():
                return False
            os.rename(src, dst)
        else:
            os.unlink(src)
        _fsync_dir(dst.parent)
        return True

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def remove(self, key: str) -> None:
        path = self._path(key)
        path.unlink()
        _fsync_dir(path.parent)

    def walk(self) -> Iterator[tuple[str, float | None]]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                try:
                    mtime = os.stat(os.path.join(dirpath, name)).st_mtime
                except FileNotFoundError:  # removed meanwhile
                    continue
                yield (name if rel == "." else f"{rel}/{name}"), mtime


def _fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FsspecBackend(Backend):
    """Any fsspec file system (``s3://``, ``memory://``, ``gs://``, ``http(s)://`` read-only, ...).

    Object stores cannot rename atomically: an upload goes to a temporary key,
    is checked for size, then copied server-side to the final key (a copy
    appears whole or not at all) and the temporary key is deleted. Object
    stores have no "create unless exists": two writers storing *different*
    content under one name at the same instant could both pass the existence
    check; unique names (which include a content hash) make that moot.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.http = self.protocol in ("http", "https")
        self.writable = self.listable = not self.http
        self.errors = _client_errors()
        self.root = root.rstrip("/")
        self.url = url.rstrip("/")

    def _path(self, key: str) -> str:
        # an HTTP server decodes the URL path once: escape the '%' of encoded names
        return f"{self.root}/{quote(key, safe='/') if self.http else key}"

    def _info(self, key: str) -> dict:
        path = self._path(key)
        self.fs.invalidate_cache(path)  # other processes write too: never trust a listing cache
        return self.fs.info(path)

    def open_read(self, key: str) -> BinaryIO:
        return self.fs.open(self._path(key), "rb")

    def open_temp(self, key: str) -> BinaryIO:
        """A new file object for uploading ``key`` (tests wrap it to inject faults)."""
        return self.fs.open(self._path(key), "wb")

    def write_temp(self, key: str, src: BinaryIO) -> tuple[str, int]:
        """Upload every byte, hashing it; then check the stored size and read the upload back to check its hash."""
        with self.open_temp(key) as dst:
            digest, nbytes = copy_hashing(src, dst)
        stored = self._info(key)["size"]
        if stored != nbytes:
            raise OSError(errno.EIO, f"upload to {self.url}/{key} is incomplete ({stored} of {nbytes} bytes)")
        with self.open_read(key) as fh:
            uploaded = sha256_stream(fh)
        if uploaded != digest:
            raise OSError(errno.EIO, f"upload to {self.url}/{key} is corrupt (sha256 {uploaded} read back != "
                                     f"{digest} sent)")
        return digest, nbytes

    def publish(self, temp: str, final: str) -> bool:
        if self.exists(final):
            return False
        self.fs.copy(self._path(temp), self._path(final))
        copied, expected = self.size(final), self.size(temp)
        if copied != expected:  # never leave a partial object under the final name
            self.fs.rm_file(self._path(final))
            raise OSError(errno.EIO, f"copy to {self.url}/{final} is incomplete ({copied} of {expected} bytes)")
        try:
            self.remove(temp)
        except OSError as exc:  # published; the leftover is removed by vacuum
            log.warning("could not remove temporary %s/%s: %s", self.url, temp, exc)
        return True

    def size(self, key: str) -> int:
        return int(self._info(key)["size"])

    def exists(self, key: str) -> bool:
        try:
            return self._info(key).get("type", "file") == "file"
        except FileNotFoundError:
            return False

    def remove(self, key: str) -> None:
        if not self.exists(key):
            raise FileNotFoundError(errno.ENOENT, "no such file", f"{self.url}/{key}")
        self.fs.rm_file(self._path(key))

    def walk(self) -> Iterator[tuple[str, float | None]]:
        self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return
        prefix = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        for name, info in sorted(found.items()):
            name = self.fs._strip_protocol(name)
            if name.startswith(prefix) and info.get("type", "file") == "file":
                yield name[len(prefix):], _mtime(info)


def _client_errors() -> tuple[type[BaseException], ...]:
    """Exception types of the usual remote clients that are not OSError (connection failures...)."""
    found: list[type[BaseException]] = []
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        found += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError as HTTPClientError

        found.append(HTTPClientError)
    except ImportError:
        pass
    return tuple(found)


def _mtime(info: dict) -> float | None:
    """Modification time of an fsspec ``info`` record, whatever the file system calls it."""
    for field in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def make_backend(url: str, **storage_options: Any) -> Backend:
    """The backend for a storage URL: a local path or ``file://`` URL, or any fsspec URL."""
    if not isinstance(url, (str, os.PathLike)) or not str(url):
        raise ValueError(f"invalid storage URL {url!r}: give a local folder or an fsspec URL such as s3://bucket/prefix")
    text = os.fspath(url)
    if "://" in text and not text.startswith("file://"):
        return FsspecBackend(text, **storage_options)
    if storage_options:
        raise ValueError(
            f"storage options {sorted(storage_options)} do not apply to the local storage {text}; "
            "they are for fsspec URLs (s3://...)"
        )
    return LocalBackend(text.removeprefix("file://"))
