"""Exceptions of the data storage."""

from __future__ import annotations

__all__ = ["StorageError", "MissingFileError", "CorruptFileError"]


class StorageError(OSError):
    """A data-storage operation failed; the message names the file and what to do."""

    def __str__(self) -> str:
        # the message already names the file: do not let OSError prefix it with ``filename``
        if self.errno is None and len(self.args) == 1:
            return str(self.args[0])
        return super().__str__()


class MissingFileError(StorageError, FileNotFoundError):
    """The file is not in the data storage."""

    def __init__(self, filename: str, url: str) -> None:
        super().__init__(
            f"file {filename} is not in storage {url}: check the file name and the storage URL "
            "(AWE_STORAGE); if the database lists the file, restore it from a backup or re-derive the product"
        )
        self.filename = filename
        self.url = url


class CorruptFileError(StorageError):
    """A file's content does not match its recorded SHA-256 checksum."""

    def __init__(self, filename: str, url: str, actual: str, expected: str) -> None:
        super().__init__(
            f"file {filename} in storage {url} is corrupt (sha256 {actual} != recorded {expected}): "
            "restore it from a backup or re-derive the product"
        )
        self.filename = filename
        self.url = url
        self.actual = actual
        self.expected = expected
