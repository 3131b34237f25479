"""Changing what may change, and the record of it: mutable attributes, the audit trail, exclusion lists.

``obj.update(is_valid=0)`` (or ``quality_flags``, ``timestamp_start``,
``timestamp_end``) changes a committed object in the database. Only the
object's creator or the managers of its project may (for ``ALL`` and other
non-private projects the administrators manage too), and the rights are part
of the one ``UPDATE`` statement (``WHERE object_id = :id AND project_id IN
(:writable) AND (creator = :me OR project_id IN (:managed))``, the lists read
from the database), never taken from the Python object: a forged object changes
nothing. Every change is a row of the audit trail (who, when, object,
attribute, old, new), written in the same transaction; :func:`history` reads it.

A user who does not trust a shared frame but may not (or does not want to)
flag it puts it on his project's exclusion list (``context.exclude(frame,
reason=...)``): the selections of the tasks leave it out in that project, and
say so in their log, as they say which frames they left out because someone
else flagged them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa

from awe.db.accounts import PrivilegeError, find_project, is_admin, is_manager, managers_of, project_name
from awe.db.persistent import Field, utcnow
from awe.db.schema import DBObject, audit_trail, exclusions, projects

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.session import Session

__all__ = ["update_attributes", "changeable", "record", "history", "Change", "exclude", "include", "excluded",
           "Exclusion", "left_out_notes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One row of the audit trail."""

    at: _dt.datetime
    user: str
    object_id: int
    filename: str | None
    project: str | None
    attribute: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return (f"{self.at:%Y-%m-%d %H:%M:%S} {self.user}: {self.filename or self.object_id} {self.attribute} "
                f"{self.old!r} -> {self.new!r}")


def _encode(value: Any) -> str:
    if isinstance(value, _dt.datetime):
        return json.dumps(value.isoformat())
    return json.dumps(value, default=str)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def managed_project_ids(session: "Session") -> list[int]:
    """The visible projects whose objects ``session`` may change whoever made them (read from the database)."""
    db = session.database
    admin = is_admin(db, session.user_id)
    with session.engine.connect() as conn:
        rows = conn.execute(sa.select(projects).where(projects.c.id.in_(session.visible_project_ids()))).mappings()
        found = [find_project(db, r["name"]) for r in rows]
    return [p.id for p in found if (admin and p.kind != "private") or is_manager(db, p, session.user_id)]


def changeable(session: "Session", table: sa.Table | None = None) -> sa.ColumnElement[bool]:
    """The SQL condition "``session`` may change this row of ``objects``": its project is one the session may
    write to, and the session made it or manages that project. Built from the database, not from any object."""
    t = DBObject.__table__ if table is None else table
    writable = [pid for pid in session.visible_project_ids() if session.may_write(pid)]
    return t.c.project_id.in_(writable) & ((t.c.creator == session.user)
                                           | t.c.project_id.in_(managed_project_ids(session)))


def refusal(session: "Session", object_id: int, what: str) -> PrivilegeError:
    """Why ``session`` may not ``what`` object ``object_id``, naming who may (only what the session may see)."""
    t = DBObject.__table__
    with session.engine.connect() as conn:
        row = conn.execute(sa.select(t.c.filename, t.c.project_id, t.c.creator).where(
            t.c.object_id == object_id, t.c.project_id.in_(session.visible_project_ids()))).first()
    if row is None:
        return PrivilegeError(f"user {session.user} may not {what} object {object_id}: no object with that id is "
                              f"visible in project {session.project.name}")
    pname = project_name(session.database, row.project_id) or "?"
    managers = managers_of(session.database, find_project(session.database, pname))
    return PrivilegeError(
        f"user {session.user} may not {what} {row.filename} (project {pname}): only its creator {row.creator} or "
        f"the managers of {pname} ({', '.join(managers) or 'none'}) may")


def record(conn: sa.Connection, session: "Session", object_id: int, project_id: int, filename: str | None,
           attribute: str, old: Any, new: Any) -> None:
    """Add one change to the audit trail, in the caller's transaction."""
    conn.execute(audit_trail.insert().values(at=utcnow(), user_name=session.user, object_id=object_id,
                                             project_id=project_id, filename=filename, attribute=attribute,
                                             old_value=_encode(old), new_value=_encode(new)))


def update_attributes(obj: DBObject, changes: dict[str, Any]) -> None:
    """Write mutable attributes (``is_valid``, ``quality_flags``, validity range) of a committed object.

    One transaction: the old values are read, the row is changed only if the
    session may change it (the condition is in the ``UPDATE``), and the audit
    trail gets one row per attribute that changed.
    """
    from awe.db.session import session_of
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
    table = DBObject.__table__
    allowed = changeable(session)
    values = {fields[name].column: fields[name].to_db(value) for name, value in changes.items()}
    columns = [table.c[fields[name].column] for name in changes]
    with session.engine.begin() as conn:
        row = conn.execute(sa.select(table.c.project_id, table.c.filename, *columns).where(
            table.c.object_id == obj.object_id, allowed).with_for_update()).first()
        done = 0 if row is None else conn.execute(sa.update(table).where(
            table.c.object_id == obj.object_id, allowed).values(values)).rowcount
        if done and row is not None:
            for name in changes:
                old = getattr(row, fields[name].column)
                if old != values[fields[name].column]:
                    record(conn, session, obj.object_id, row.project_id, row.filename, name, old,
                           values[fields[name].column])
    if not done:
        raise refusal(session, obj.object_id, "change")
    obj.__dict__.update(changes)
    log.info("updated %s %s: %s", type(obj).__name__, obj.filename, changes)


def history(session: "Session", obj: DBObject | int | None = None, project: str | None = None) -> list[Change]:
    """The audit trail visible to ``session``, oldest first: of one object, of one project, or everything.

    Only rows of projects the session sees are returned (on PostgreSQL row-level
    security holds that too).
    """
    t = audit_trail
    visible = session.visible_project_ids()
    query = sa.select(t).where(t.c.project_id.in_(visible)).order_by(t.c.id)
    if obj is not None:
        query = query.where(t.c.object_id == (obj if isinstance(obj, int) else obj.object_id))
    if project is not None:
        query = query.where(t.c.project_id == find_project(session.database, project).id)
    with session.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    names = {pid: project_name(session.database, pid) for pid in {r["project_id"] for r in rows}}
    return [Change(r["at"], r["user_name"], r["object_id"], r["filename"], names[r["project_id"]], r["attribute"],
                   _decode(r["old_value"]), _decode(r["new_value"])) for r in rows]


# ====================================================================== exclusion lists
@dataclass(frozen=True)
class Exclusion:
    """An object left out of the selections of one project."""

    object_id: int
    filename: str | None
    user: str
    reason: str
    created: _dt.datetime


def exclude(session: "Session", obj: DBObject, reason: str) -> None:
    """Leave ``obj`` out of the task selections of the session's current project (the object is not changed)."""
    if not reason or not reason.strip():
        raise ValueError("give a reason for the exclusion (reason='...'): it is written to the task logs")
    project = session.project
    if not session.may_write(project.id):
        raise PrivilegeError(f"user {session.user} may not change the exclusion list of project {project.name}")
    t = DBObject.__table__
    with session.engine.begin() as conn:
        seen = conn.execute(sa.select(t.c.object_id).where(
            t.c.object_id == obj.object_id, t.c.project_id.in_(session.visible_project_ids()))).scalar()
        if seen is None:
            raise PrivilegeError(f"object {obj.object_id} is not visible in project {project.name}: nothing to "
                                 "exclude")
        key = (exclusions.c.project_id == project.id) & (exclusions.c.object_id == seen)
        conn.execute(exclusions.delete().where(key))
        conn.execute(exclusions.insert().values(project_id=project.id, object_id=seen, user_name=session.user,
                                                reason=reason.strip()[:255], created=utcnow()))
    log.info("%s excluded %s from the selections of project %s: %s", session.user, obj.filename, project.name,
             reason)


def include(session: "Session", obj: DBObject) -> bool:
    """Take ``obj`` off the current project's exclusion list; False when it was not on it."""
    project = session.project
    if not session.may_write(project.id):
        raise PrivilegeError(f"user {session.user} may not change the exclusion list of project {project.name}")
    with session.engine.begin() as conn:
        done = conn.execute(exclusions.delete().where(exclusions.c.project_id == project.id,
                                                      exclusions.c.object_id == obj.object_id)).rowcount
    return bool(done)


def excluded(session: "Session", object_ids: Iterable[int] | None = None) -> dict[int, Exclusion]:
    """The exclusion list of the session's current project (object id -> :class:`Exclusion`)."""
    e, t = exclusions, DBObject.__table__
    query = (sa.select(e.c.object_id, t.c.filename, e.c.user_name, e.c.reason, e.c.created)
             .join(t, t.c.object_id == e.c.object_id).where(e.c.project_id == session.project.id))
    if object_ids is not None:
        query = query.where(e.c.object_id.in_(list(object_ids)))
    with session.engine.connect() as conn:
        return {r.object_id: Exclusion(r.object_id, r.filename, r.user_name, r.reason, r.created)
                for r in conn.execute(query)}


def left_out_notes(session: "Session", candidates: Iterable[DBObject], chosen: Iterable[DBObject]) -> list[str]:
    """Why each candidate that is not among ``chosen`` was left out, for a task's log.

    Names the exclusion list (who, why) and flags set by someone else than the
    session's user (who, when, from the audit trail).
    """
    chosen_ids = {o.object_id for o in chosen}
    left = [o for o in candidates if o.object_id not in chosen_ids]
    if not left:
        return []
    ids = [o.object_id for o in left]
    skipped = excluded(session, ids)
    last: dict[int, Change] = {}
    for change in _changes_of(session, ids):
        if change.attribute in ("is_valid", "quality_flags"):
            last[change.object_id] = change
    notes = []
    for o in left:
        if o.object_id in skipped:
            x = skipped[o.object_id]
            notes.append(f"{o.filename}: on the exclusion list of project {session.project.name} "
                         f"(by {x.user}: {x.reason})")
        elif o.object_id in last and last[o.object_id].user != session.user:
            c = last[o.object_id]
            notes.append(f"{o.filename}: flagged by {c.user} on {c.at:%Y-%m-%d %H:%M} "
                         f"({c.attribute} {c.old!r} -> {c.new!r})")
        elif o.is_valid == 0 or o.quality_flags:
            notes.append(f"{o.filename}: is_valid={o.is_valid}, quality_flags={o.quality_flags}")
    return notes


def _changes_of(session: "Session", ids: list[int]) -> list[Change]:
    t = audit_trail
    with session.engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.object_id.in_(ids), t.c.project_id.in_(
            session.visible_project_ids())).order_by(t.c.id)).mappings().all()
    return [Change(r["at"], r["user_name"], r["object_id"], r["filename"], None, r["attribute"],
                   _decode(r["old_value"]), _decode(r["new_value"])) for r in rows]
