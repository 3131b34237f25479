"""Publishing and removing: migrate an object with its dependencies, delete, clean a private project.

``migrate(session, obj, 'ALL')`` moves an object and everything it depends on
that is not public yet into a project (metadata only: files stay where they
are, spec section 2); ``delete`` removes a private object and its file when
nothing was made from it; ``clean`` empties a user's private project (MYDB).
The prompt's ``context.migrate(obj, 'ALL')`` calls these for its session.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from awe.db.accounts import PrivilegeError, find_project, may_enter, private_project_name
from awe.db.lineage import dependencies
from awe.db.query import fetch_rows
from awe.db.persistent import registry
from awe.db.rows import delete_rows
from awe.db.schema import DBObject, links
from awe.db.session import Session

__all__ = ["migrate", "delete", "clean", "DependencyError"]

log = logging.getLogger(__name__)


class DependencyError(RuntimeError):
    """An object cannot be deleted: other objects were made from it."""


def _rows(conn: sa.Connection, session: Session, ids: list[int]) -> dict[int, sa.Row[Any]]:
    """The database's own view of objects ``ids`` (those visible to ``session``): never the Python objects'."""
    t = DBObject.__table__
    columns = [t.c.object_id, t.c.class_name, t.c.filename, t.c.checksum, t.c.project_id, t.c.creator,
               t.c.provenance]
    rows = conn.execute(sa.select(*columns).where(t.c.object_id.in_(ids),
                                                  t.c.project_id.in_(session.visible_project_ids())))
    return {int(r.object_id): r for r in rows}


def migrate(session: Session, obj: DBObject, project: str) -> list[DBObject]:
    """Move ``obj`` and everything it depends on into ``project`` (metadata only; files stay).

    Objects already visible from ``project`` (e.g. raw frames in ALL) stay
    where they are. An object whose identical twin (same class and provenance)
    is already current in ``project`` -- another participant published the
    same product -- is not moved: it is marked superseded by the twin, and the
    moved objects made from it are linked to the twin instead (spec section 9:
    every participant publishes). Rights are checked on the database's rows in
    the ``UPDATE`` itself: a forged object moves nothing. Returns the objects
    now in ``project`` in place of ``obj`` and its dependencies (twins included).
    """
    from awe.db.audit import changeable, record, refusal
    target = find_project(session.database, project)
    if not may_enter(session.database, target, session.user_id):
        raise PrivilegeError(f"user {session.user} may not write to project {project}: not a member")
    if obj.object_id is None:
        raise ValueError(f"{obj!r} is not committed: commit it first")
    candidates = {o.object_id: o for o in [obj] + dependencies(obj, session=session)}
    table = DBObject.__table__
    public = set(session.database.public_project_ids())
    current = table.c.superseded_by.is_(None) if "superseded_by" in table.c else sa.true()
    with session.engine.begin() as conn:
        rows = _rows(conn, session, list(candidates))
        if obj.object_id not in rows:
            raise refusal(session, obj.object_id, "migrate")
        moving = [i for i, r in rows.items() if r.project_id != target.id and r.project_id not in public]
        twins: dict[int, int] = {}
        for i in moving:
            r = rows[i]
            if r.provenance:
                twin = conn.execute(sa.select(table.c.object_id).where(
                    table.c.class_name == r.class_name, table.c.provenance == r.provenance,
                    table.c.project_id == target.id, table.c.object_id != i, current)).scalar()
                if twin is not None:
                    twins[i] = int(twin)
        allowed = changeable(session)
        for dup, twin in twins.items():
            done = conn.execute(table.update().where(table.c.object_id == dup, allowed).values(
                **({"superseded_by": twin} if "superseded_by" in table.c else {}))).rowcount
            if not done:
                raise refusal(session, dup, "migrate")
            conn.execute(links.update().where(links.c.parent_id == dup, links.c.child_id.in_(moving))
                         .values(parent_id=twin))
        move = [i for i in moving if i not in twins]
        if move:
            done = conn.execute(table.update().where(table.c.object_id.in_(move), allowed)
                                .values(project_id=target.id)).rowcount
            if done != len(move):
                bad = [i for i in move if i != obj.object_id] or move
                raise refusal(session, obj.object_id if obj.object_id in move else bad[0], "migrate")
        for i in move:
            record(conn, session, i, rows[i].project_id, rows[i].filename, "project",
                   session.project_name(rows[i].project_id), project)
        for dup, twin in twins.items():
            record(conn, session, dup, rows[dup].project_id, rows[dup].filename, "superseded_by", None, twin)
    result: list[DBObject] = []
    for i in move:
        o = candidates[i]
        o.__dict__["project_id"] = target.id
        result.append(o)
    if twins:
        with session.engine.connect() as conn:
            loaded = {r["object_id"]: DBObject._from_row(r, session) for r in fetch_rows(conn, list(twins.values()))}
        result += [loaded[t] for t in twins.values()]
        log.info("%d object(s) already in %s (same class and provenance): linked to those instead: %s", len(twins),
                 project, {rows[d].filename: loaded[t].filename for d, t in twins.items()})
    log.info("migrated %d object(s) to %s: %s", len(move), project, [rows[i].filename for i in move])
    return result


def _children(session: Session, object_ids: list[int]) -> list[tuple[int, int]]:
    with session.engine.connect() as conn:
        return [(int(p), int(c)) for p, c in conn.execute(
            sa.select(links.c.parent_id, links.c.child_id).where(links.c.parent_id.in_(object_ids)))]


def delete(session: Session, obj: DBObject) -> None:
    """Remove ``obj`` and its stored file; refused while other objects were made from it.

    Only the creator or the project's managers may; the rights and the object's
    class, file and project are read from the database, not from ``obj``.
    """
    from awe.db.audit import changeable, refusal
    if obj.object_id is None:
        raise ValueError(f"{obj!r} is not committed: nothing to delete")
    table = DBObject.__table__
    with session.engine.connect() as conn:
        row = _rows(conn, session, [obj.object_id]).get(obj.object_id)
        mine = conn.execute(sa.select(table.c.object_id).where(table.c.object_id == obj.object_id,
                                                               changeable(session))).first()
    if row is None or mine is None:
        raise refusal(session, obj.object_id, "delete")
    children = [c for _, c in _children(session, [obj.object_id])]
    if children:
        from awe.db.query import Query
        visible = {o.object_id: o for o in Query(DBObject, session=session).filter(DBObject.object_id.in_(children))}
        names = [visible[c].filename if c in visible else f"object {c} (not visible to you)" for c in children]
        raise DependencyError(
            f"cannot delete {row.filename}: {len(children)} object(s) were made from it: {names}; "
            "delete those first"
        )
    _delete_rows(session, [obj.object_id])
    obj.__dict__["object_id"] = None


def _delete_rows(session: Session, ids: list[int]) -> None:
    """Delete objects ``ids`` (all or none: every one must be the session's to change) and their files."""
    from awe.db.audit import changeable, record, refusal
    table = DBObject.__table__
    with session.engine.begin() as conn:
        rows = _rows(conn, session, ids)
        allowed = conn.execute(sa.select(table.c.object_id).where(table.c.object_id.in_(ids),
                                                                  changeable(session))).scalars().all()
        refused = sorted(set(ids) - set(allowed))
        if refused:
            raise refusal(session, refused[0], "delete")
        tables = {t.name: t for r in rows.values() for t in registry[r.class_name]._tables}
        delete_rows(conn, ids)  # catalogue rows of the objects
        conn.execute(links.delete().where(links.c.child_id.in_(ids)))
        for t in tables.values():  # the family tables, then the objects rows (rights checked again)
            if t is not table:
                conn.execute(t.delete().where(t.c.object_id.in_(ids)))
        done = conn.execute(table.delete().where(table.c.object_id.in_(ids), changeable(session))).rowcount
        if done != len(ids):
            raise refusal(session, ids[0], "delete")
        for i, r in rows.items():
            record(conn, session, i, r.project_id, r.filename, "deleted", r.filename, None)
    for r in rows.values():
        if r.filename and r.checksum and session.storage.exists(r.filename):
            session.storage.delete(r.filename)
    log.info("deleted %d object(s): %s", len(ids), [r.filename for r in rows.values()])


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
        _delete_rows(session, sorted(gone))
        for o in leaves:
            o.__dict__["object_id"] = None
        deleted += leaves
        remaining = {i: o for i, o in remaining.items() if i not in gone}
    if remaining:
        log.warning("kept %d object(s) used by objects in other projects: %s", len(remaining),
                    [o.filename for o in remaining.values()])
    return deleted
