"""Lineage: which objects a product was made from, and what was made from it.

Links are rows (child, role, position, parent); walks run as recursive SQL
queries, so a coadd made of hundreds of frames traces back to its raw frames in
one round trip.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa

from awe.db.schema import DBObject, links
from awe.db.session import Session, session_of

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.persistent import Persistent

__all__ = ["load_inputs", "dependencies", "derived", "provenance_hash", "link_rows"]


def _load_objects(session: Session, ids: Iterable[int]) -> dict[int, DBObject]:
    """Objects by id that ``session`` may see (one query)."""
    from awe.db.query import load_objects
    return load_objects(session, DBObject, list(ids))


def load_inputs(obj: "Persistent", role: str) -> list[DBObject]:
    """The inputs of ``obj`` in ``role``, in their stored order (only those its session may see)."""
    session = session_of(obj)
    stmt = (sa.select(links.c.parent_id).where(links.c.child_id == obj.object_id, links.c.role == role)
            .order_by(links.c.position))
    with session.engine.connect() as conn:
        ids = list(conn.execute(stmt).scalars())
    objects = _load_objects(session, ids)
    return [objects[i] for i in ids if i in objects]


def _walk(session: Session, start: int, forward: bool) -> list[int]:
    """Ids reachable from ``start`` along links (backward: parents; forward: children)."""
    src, dst = (links.c.parent_id, links.c.child_id) if forward else (links.c.child_id, links.c.parent_id)
    seed = sa.select(dst.label("oid")).where(src == start).cte("walk", recursive=True)
    previous = seed.alias()
    step = links.alias()
    s_src, s_dst = (step.c.parent_id, step.c.child_id) if forward else (step.c.child_id, step.c.parent_id)
    walk = seed.union(sa.select(s_dst).where(s_src == previous.c.oid))
    with session.engine.connect() as conn:
        return list(conn.execute(sa.select(walk.c.oid)).scalars())


def dependencies(obj: DBObject, raw_only: bool = False, session: Session | None = None) -> list[DBObject]:
    """Every visible object ``obj`` depends on (recursively), oldest first.

    Parameters
    ----------
    raw_only : bool
        Return only raw frames (objects without inputs of their own).
    session : Session, optional
        Whose view; default: the session ``obj`` was loaded through.
    """
    session = session or session_of(obj)
    if obj.object_id is None:
        found: dict[int, DBObject] = {}
        for role in obj._inputs.values():
            for parent in role.values(obj):
                if isinstance(parent, DBObject) and parent.object_id is not None:
                    found[parent.object_id] = parent
                    found.update({d.object_id: d for d in dependencies(parent, session=session)})
        result = list(found.values())
    else:
        result = list(_load_objects(session, _walk(session, obj.object_id, forward=False)).values())
    if raw_only:
        result = [o for o in result if not o._inputs]
    return sorted(result, key=lambda o: o.object_id)


def derived(obj: DBObject, session: Session | None = None) -> list[DBObject]:
    """Every visible object made, directly or not, from ``obj``."""
    if obj.object_id is None:
        return []
    session = session or session_of(obj)
    return sorted(_load_objects(session, _walk(session, obj.object_id, forward=True)).values(),
                  key=lambda o: o.object_id)


def link_rows(obj: "Persistent") -> list[dict[str, Any]]:
    """The links rows of a product about to be committed (its inputs must be committed)."""
    rows = []
    for name, role in obj._inputs.items():
        for position, parent in enumerate(role.values(obj)):
            if parent.object_id is None:
                raise ValueError(
                    f"{type(obj).__name__}.{name} input {parent!r} is not committed: commit the inputs first"
                )
            rows.append({"role": name, "position": position, "parent_id": parent.object_id})
    return rows


def provenance_hash(cls_name: str, params: dict, inputs: dict[str, list[Any]], code_version: str) -> str:
    """sha1 of (class, output-affecting parameters, input identities by role, code version).

    An input is identified by its own provenance when it has one (a product:
    the same before and after it is committed, so a product made in the same
    task as its input is found again), else by its object id (raw frames),
    else by its file name.
    """
    def ident(value: Any) -> Any:
        return (getattr(value, "provenance", None) or getattr(value, "object_id", None)
                or getattr(value, "filename", None) or str(value))

    payload = {
        "class": cls_name,
        "params": params,
        "inputs": {role: sorted(str(ident(v)) for v in values) for role, values in sorted(inputs.items())},
        "version": code_version,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()
