"""A user's access to stored files: only the files of objects he may see.

The raw :class:`~awe.storage.DataStorage` is the service's object (commits,
ingest, DPU workers hold it): it serves any file by name. A user's reads go
through his session instead (``session.retrieve(filename)``,
``session.open_file(filename)``, ``session.list_files()``, and every model
object's ``retrieve()``/``local_path()``), which first looks the name up
*through the session's own view of the database* -- the query language's
visibility rules and, on PostgreSQL, row-level security -- and refuses a
file no visible object has. The checksum recorded with the object verifies
what is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from awe.db.accounts import PrivilegeError
from awe.db.schema import DBObject

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.session import Session

__all__ = ["FileAccessError", "visible_checksum", "retrieve", "open_file", "list_files"]


class FileAccessError(PrivilegeError):
    """The file is not one of an object the user may see (it may not exist at all)."""


def visible_checksum(session: "Session", filename: str) -> str | None:
    """The recorded SHA-256 of ``filename`` if an object visible to ``session`` has it; else raise.

    Raises
    ------
    FileAccessError
        If no object the session may see has that file (whether or not it is stored: the answer is the same, so
        the name of another user's private file cannot be probed).
    """
    table = DBObject.__table__
    stmt = sa.select(table.c.checksum).where(table.c.filename == filename,
                                             table.c.project_id.in_(session.visible_project_ids()))
    with session.engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        raise FileAccessError(
            f"user {session.user} has no object with file {filename!r} in project {session.project.name} or the "
            "public projects: check the name, or set_project() to the project that holds it")
    return row.checksum


def retrieve(session: "Session", filename: str, dest_dir: str | Path | None = None) -> Path:
    """Copy the file of a visible object into ``dest_dir`` (default: the working folder), verified."""
    checksum = visible_checksum(session, filename)
    return session.storage.retrieve(filename, Path(dest_dir or session.settings.workdir), checksum=checksum)


def open_file(session: "Session", filename: str) -> Path:
    """A local, verified path to read the file of a visible object from (do not modify it)."""
    checksum = visible_checksum(session, filename)
    return session.storage.open(filename, checksum=checksum)


def list_files(session: "Session") -> list[str]:
    """The file names of the objects the session sees (sorted)."""
    table = DBObject.__table__
    stmt = sa.select(table.c.filename).where(table.c.filename.is_not(None),
                                             table.c.project_id.in_(session.visible_project_ids()))
    with session.engine.connect() as conn:
        return sorted(conn.execute(stmt).scalars())
