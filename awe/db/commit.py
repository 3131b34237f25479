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
from awe.db.accounts import PrivilegeError
from awe.db.lineage import link_rows
from awe.db.persistent import Field, utcnow
from awe.db.schema import DBObject, inserted_id, links
from awe.db.session import Session, current_session, session_of

__all__ = ["commit", "update_attributes"]

log = logging.getLogger(__name__)


def commit(items: Sequence[tuple[DBObject, str | Path | None]], session: Session | None = None) -> list[DBObject]:
    """Store the products (with their files) in the session's current project.

    Parameters
    ----------
    items : sequence of (object, file path or None)
        The new objects, in an order where inputs come before what uses them.
    session : Session, optional
        Who commits, and into which project; default: the current session.

    Returns
    -------
    list
        The objects, now with ``object_id``, ``project_id``, ``creator``, ``checksum``.
    """
    session = session or current_session()
    project = session.project
    if not session.may_write(project.id):
        raise PrivilegeError(f"user {session.user} may not write to project {project.name}")
    for obj, _ in items:
        if obj.object_id is not None:
            raise ValueError(f"{obj!r} is committed already")
        if not obj.filename:
            raise ValueError(f"{type(obj).__name__} has no filename; it cannot be stored")
    for obj, path in items:
        if path is not None:
            obj.__dict__["checksum"] = session.storage.store(Path(path), obj.filename)
    now = utcnow()
    try:
        with session.engine.begin() as conn:
            for obj, _ in items:
                (root, values), *families = obj._table_values()
                values.update(project_id=project.id, creator=session.user, software_version=__version__)
                values["creation_date"] = values.get("creation_date") or now
                oid = inserted_id(conn.execute(root.insert().values(**values)))
                for family, family_values in families:
                    conn.execute(family.insert().values(object_id=oid, **family_values))
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
        obj.__dict__.update(project_id=project.id, creator=session.user, software_version=__version__,
                            _session=session)
        obj.__dict__["creation_date"] = obj.__dict__.get("creation_date") or now
        log.info("committed %s %s to project %s", type(obj).__name__, obj.filename, project.name)
    return [obj for obj, _ in items]


def update_attributes(obj: DBObject, changes: dict[str, Any]) -> None:
    """Write mutable attributes (``is_valid``, ``quality_flags``, validity range) of a committed object.

    The rights are checked by the statement itself: it changes the row only while
    it is in a project the object's session may write to, whatever the Python
    object says.
    """
    if obj.object_id is None:
        raise ValueError(f"{obj!r} is not committed: set its attributes directly")
    fields: dict[str, Field] = {}
    for name in changes:
        fld = type(obj)._fields.get(name)
        if not isinstance(fld, Field) or not fld.mutable:
            mutable = sorted(n for n, f in type(obj)._fields.items() if isinstance(f, Field) and f.mutable)
            raise AttributeError(f"{type(obj).__name__}.{name} cannot be updated; the mutable attributes are "
                                 f"{mutable}")
        fields[name] = fld
    if not changes:
        return
    session = session_of(obj)
    writable = [pid for pid in session.visible_project_ids() if session.may_write(pid)]
    table = DBObject.__table__
    values = {fields[name].column: fields[name].to_db(value) for name, value in changes.items()}
    with session.engine.begin() as conn:
        done = conn.execute(sa.update(table).where(table.c.object_id == obj.object_id,
                                                   table.c.project_id.in_(writable)).values(values)).rowcount
    if not done:
        raise PrivilegeError(f"user {session.user} may not change {obj.filename} (object {obj.object_id}): it is "
                             "not in a project you may write to")
    obj.__dict__.update(changes)
    log.info("updated %s %s: %s", type(obj).__name__, obj.filename, changes)
