"""Committing products: the file into the data storage first, then the rows in one transaction.

A failure after the files are stored leaves only unreferenced files (``awe
storage vacuum`` removes them), never a row without its file or half a set of
rows: the products of one step appear all together or not at all.

A product whose content also lives in rows of its own table (a catalogue's
sources) defines ``_insert_rows(connection)``: it is called inside the same
transaction, right after the product's row and links.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import sqlalchemy as sa

from awe import __version__
from awe.db.context import PrivilegeError, context
from awe.db.lineage import link_rows
from awe.db.persistent import Field, utcnow
from awe.db.schema import DBObject, links

__all__ = ["commit", "update_attribute"]

log = logging.getLogger(__name__)


def commit(items: Sequence[tuple[DBObject, str | Path | None]]) -> list[DBObject]:
    """Store the products (with their files) in the current project.

    Parameters
    ----------
    items : sequence of (object, file path or None)
        The new objects, in an order where inputs come before what uses them.

    Returns
    -------
    list
        The objects, now with ``object_id``, ``project_id``, ``creator``, ``checksum``.
    """
    project = context.project
    if not context.may_write(project.id):
        raise PrivilegeError(f"user {context.user} may not write to project {project.name}")
    for obj, _ in items:
        if obj.object_id is not None:
            raise ValueError(f"{obj!r} is committed already")
        if not obj.filename:
            raise ValueError(f"{type(obj).__name__} has no filename; it cannot be stored")
    for obj, path in items:
        if path is not None:
            obj.__dict__["checksum"] = context.storage.store(Path(path), obj.filename)
    table = DBObject.__table__
    now = utcnow()
    try:
        with context.engine.begin() as conn:
            for obj, _ in items:
                values = obj._column_values()
                values.update(project_id=project.id, creator=context.user, software_version=__version__)
                values["creation_date"] = values.get("creation_date") or now
                oid = conn.execute(table.insert().values(**values)).inserted_primary_key[0]
                obj.__dict__["object_id"] = oid  # so later items can link to it
                rows = [dict(r, child_id=oid) for r in link_rows(obj)]
                if rows:
                    conn.execute(links.insert(), rows)
                insert_rows = getattr(obj, "_insert_rows", None)
                if insert_rows is not None:
                    insert_rows(conn)
    except BaseException:
        for obj, _ in items:
            obj.__dict__["object_id"] = None
        raise
    for obj, _ in items:
        obj.__dict__.update(project_id=project.id, creator=context.user, software_version=__version__)
        obj.__dict__["creation_date"] = obj.__dict__.get("creation_date") or now
        log.info("committed %s %s to project %s", type(obj).__name__, obj.filename, project.name)
    return [obj for obj, _ in items]


def update_attribute(obj: DBObject, fld: Field, value: Any) -> None:
    """Write a mutable attribute (``is_valid``, ``quality_flags``) of a committed object."""
    if not context.may_write(obj.project_id):
        raise PrivilegeError(f"user {context.user} may not change {obj.filename} in project {obj.project}")
    table = DBObject.__table__
    with context.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.object_id == obj.object_id).values({fld.column: value}))
