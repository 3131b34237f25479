"""Publishing and removing: migrate an object with its dependencies, delete, clean a private project.

``migrate(session, obj, 'ALL')`` moves an object and everything it depends on
that is not public yet into a project (metadata only: files stay where they
are, spec section 2); ``delete`` removes a private object and its file when
nothing was made from it; ``clean`` empties a user's private project (MYDB).
The prompt's ``context.migrate(obj, 'ALL')`` calls these for its session.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from awe.db.accounts import PrivilegeError, find_project, may_enter, private_project_name
from awe.db.lineage import dependencies
from awe.db.query import fetch_rows
from awe.db.rows import delete_rows
from awe.db.schema import DBObject, links
from awe.db.session import Session

__all__ = ["migrate", "delete", "clean", "DependencyError"]

log = logging.getLogger(__name__)


class DependencyError(RuntimeError):
    """An object cannot be deleted: other objects were made from it."""


def migrate(session: Session, obj: DBObject, project: str) -> list[DBObject]:
    """Move ``obj`` and everything it depends on into ``project`` (metadata only; files stay).

    Objects already visible from ``project`` (e.g. raw frames in ALL) stay
    where they are. Returns the objects moved.
    """
    target = find_project(session.database, project)
    if not may_enter(session.database, target, session.user_id):
        raise PrivilegeError(f"user {session.user} may not write to project {project}: not a member")
    candidates = [obj] + dependencies(obj, session=session)
    public = set(session.database.public_project_ids())
    moving = [o for o in candidates if o.project_id != target.id and o.project_id not in public]
    refused = [o for o in moving if not session.may_write(o.project_id)]
    if refused:
        raise PrivilegeError(f"user {session.user} may not move {refused} out of their projects")
    ids = [o.object_id for o in moving]
    if ids:
        table = DBObject.__table__
        with session.engine.begin() as conn:
            conn.execute(table.update().where(table.c.object_id.in_(ids)).values(project_id=target.id))
    for o in moving:
        o.__dict__["project_id"] = target.id
    log.info("migrated %d object(s) to %s: %s", len(moving), project, [o.filename for o in moving])
    return moving


def _children(session: Session, object_ids: list[int]) -> list[tuple[int, int]]:
    with session.engine.connect() as conn:
        return [(int(p), int(c)) for p, c in conn.execute(
            sa.select(links.c.parent_id, links.c.child_id).where(links.c.parent_id.in_(object_ids)))]


def _check_deletable(session: Session, obj: DBObject) -> None:
    if obj.object_id is None:
        raise ValueError(f"{obj!r} is not committed: nothing to delete")
    name = session.project_name(obj.project_id)
    project = find_project(session.database, name or "?")
    allowed = (project.kind == "private" and project.owner_id == session.user_id) or \
              (project.kind != "private" and obj.creator == session.user
               and may_enter(session.database, project, session.user_id))
    if not allowed:
        raise PrivilegeError(
            f"user {session.user} may not delete {obj.filename} (project {project.name}, made by {obj.creator})"
        )


def delete(session: Session, obj: DBObject) -> None:
    """Remove ``obj`` and its stored file; refused while other objects were made from it."""
    _check_deletable(session, obj)
    children = [c for _, c in _children(session, [obj.object_id])]
    if children:
        from awe.db.query import Query
        visible = {o.object_id: o for o in Query(DBObject, session=session).filter(DBObject.object_id.in_(children))}
        names = [visible[c].filename if c in visible else f"object {c} (not visible to you)" for c in children]
        raise DependencyError(
            f"cannot delete {obj.filename}: {len(children)} object(s) were made from it: {names}; "
            "delete those first"
        )
    _delete_rows(session, [obj])


def _delete_rows(session: Session, objs: list[DBObject]) -> None:
    ids = [o.object_id for o in objs]
    tables = {t.name: t for o in objs for t in type(o)._tables}
    with session.engine.begin() as conn:
        delete_rows(conn, ids)  # catalogue rows of the objects
        conn.execute(links.delete().where(links.c.child_id.in_(ids)))
        for table in sorted(tables.values(), key=lambda t: t is DBObject.__table__):  # family tables first
            conn.execute(table.delete().where(table.c.object_id.in_(ids)))
    for o in objs:
        if o.filename and o.checksum and session.storage.exists(o.filename):
            session.storage.delete(o.filename)
        o.__dict__["object_id"] = None
    log.info("deleted %d object(s): %s", len(objs), [o.filename for o in objs])


def clean(session: Session, project: str | None = None) -> list[DBObject]:
    """Empty a private project (MYDB): delete every object in it that nothing elsewhere uses.

    Returns the deleted objects; those still used by objects in other
    projects stay and are logged.
    """
    p = find_project(session.database, project or private_project_name(session.user))
    if p.kind != "private" or p.owner_id != session.user_id:
        raise PrivilegeError(f"only the owner's private project can be cleaned, not {p.name}")
    table = DBObject.__table__
    with session.engine.connect() as conn:
        ids = list(conn.execute(sa.select(table.c.object_id).where(table.c.project_id == p.id)).scalars())
        rows = fetch_rows(conn, ids)
    remaining = {r["object_id"]: DBObject._from_row(r, session) for r in rows}
    deleted: list[DBObject] = []
    while remaining:
        used = {parent for parent, _ in _children(session, list(remaining))}
        leaves = [o for i, o in remaining.items() if i not in used]
        if not leaves:
            break
        gone = {o.object_id for o in leaves}
        _delete_rows(session, leaves)
        deleted += leaves
        remaining = {i: o for i, o in remaining.items() if i not in gone}
    if remaining:
        log.warning("kept %d object(s) used by objects in other projects: %s", len(remaining),
                    [o.filename for o in remaining.values()])
    return deleted
