"""Committing products: the file into the data storage first, then the rows in one transaction.

A failure after the files are stored leaves only unreferenced files (``awe
storage vacuum`` removes them), never a row without its file or half a set of
rows: the products of one step appear all together or not at all.

At most one *current* product exists per (class, provenance, project): the
database enforces it (a partial unique index on the rows whose
``superseded_by`` is NULL, :data:`~awe.db.schema.CURRENT_PRODUCT_INDEX`). When
a product with the same key is current already, the new one either

* **adopts** it: two identical tasks ran at once and the other one committed
  first; the new object is not inserted, its stored file is removed, and the
  existing product is returned in its place; or
* **supersedes** it: the product was made again knowing the old one (``redo=1``,
  or the old one was invalidated, flagged or lost its file): the new row is
  inserted and the old one gets ``superseded_by`` = the new id (kept, not
  deleted; lineage and queries still see it).

Which one is decided by what the maker saw: :func:`current_twin` records the
current product of the key when a task makes the new object
(``obj._replaces``); a twin that is still that one is superseded, a twin that
appeared meanwhile is adopted. An object made without that record adopts a
valid twin (``is_valid != 0`` and ``quality_flags == 0``) and supersedes any
other.

A product whose content also lives in rows of its own table (a catalogue's
sources) defines ``_insert_rows(connection)``: it is called inside the same
transaction, right after the product's row and links.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import sqlalchemy as sa

from awe import __version__
from awe.db.accounts import PrivilegeError
from awe.db.engine import write_transaction
from awe.db.lineage import link_rows
from awe.db.persistent import utcnow
from awe.db.schema import CURRENT_PRODUCT_INDEX, DBObject, inserted_id, links
from awe.db.session import Session, current_session

__all__ = ["commit", "current_twin", "check_product_filename", "Twin"]

log = logging.getLogger(__name__)

#: how often a commit that lost a race for a (class, provenance, project) key looks again
_ATTEMPTS = 5


@dataclass(frozen=True)
class Twin:
    """The current product of an object's (class, provenance, project) key."""

    object_id: int
    filename: str
    is_valid: int | None
    quality_flags: int | None

    @property
    def valid(self) -> bool:
        return (self.is_valid is None or self.is_valid != 0) and not self.quality_flags


def check_product_filename(obj: DBObject) -> str:
    """The object's file name if it is one plain name, else raise ``ValueError`` naming the object.

    A product's file name is a flat name in the data storage: no directory
    separator, no ``..``, no absolute path, no NUL or other control character.
    """
    from awe.storage._names import validate_filename
    name = obj.filename
    if not name:
        raise ValueError(f"{type(obj).__name__} has no filename; it cannot be stored")
    try:
        return validate_filename(name)
    except ValueError as exc:
        raise ValueError(f"cannot commit {type(obj).__name__} {name!r}: {exc}") from None


def current_twin(conn: sa.Connection, obj: DBObject, project_id: int) -> Twin | None:
    """The current (not superseded) product with ``obj``'s class and provenance in project ``project_id``."""
    if not obj.provenance:
        return None
    t = DBObject.__table__
    row = conn.execute(sa.select(t.c.object_id, t.c.filename, t.c.is_valid, t.c.quality_flags).where(
        t.c.class_name == type(obj).__name__, t.c.provenance == obj.provenance, t.c.project_id == project_id,
        t.c.superseded_by.is_(None))).first()
    return Twin(*row) if row is not None else None


def remember_twin(obj: DBObject, session: Session) -> None:
    """Record on a new object the current product of its key in the session's project (see the module doc)."""
    with session.engine.connect() as conn:
        twin = current_twin(conn, obj, session.project.id)
    obj.__dict__["_replaces"] = twin.object_id if twin is not None else None


def _supersedes(obj: DBObject, twin: Twin) -> bool:
    if "_replaces" in obj.__dict__:
        return bool(obj.__dict__["_replaces"] == twin.object_id)
    return not twin.valid


class _Raced(RuntimeError):
    """Another commit changed the current product of a key during this one: look again."""


def _lost_race(exc: Exception) -> bool:
    """Whether the insert failed on the one-current-product index (another commit of the same key won)."""
    if isinstance(exc, _Raced):
        return True
    text = str(getattr(exc, "orig", exc))
    return CURRENT_PRODUCT_INDEX in text or "objects.class_name, objects.provenance, objects.project_id" in text


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
        The objects, now with ``object_id``, ``project_id``, ``creator``, ``checksum``, in the order
        given; an object whose identical twin was committed meanwhile is replaced by that twin
        (see the module doc).

    Raises
    ------
    ValueError
        An object is committed already, or its file name is not one plain name (``../x``,
        an absolute path, a NUL): nothing is stored then.
    PrivilegeError
        The session may not write to its project.
    """
    session = session or current_session()
    project = session.project
    if not session.may_write(project.id):
        raise PrivilegeError(f"user {session.user} may not write to project {project.name}")
    for obj, _ in items:
        if obj.object_id is not None:
            raise ValueError(f"{obj!r} is committed already")
        check_product_filename(obj)
    stored: set[int] = set()  # indices of the items whose file is in the storage
    for attempt in range(1, _ATTEMPTS + 1):
        with session.engine.connect() as conn:
            expected = {i: current_twin(conn, obj, project.id) for i, (obj, _) in enumerate(items)}
        for i, (obj, path) in enumerate(items):
            twin = expected[i]
            if path is not None and i not in stored and (twin is None or _supersedes(obj, twin)):
                obj.__dict__["checksum"] = session.storage.store(Path(path), obj.filename)
                stored.add(i)
        try:
            adopted = _insert(items, session, project.id, stored)
            break
        except (sa.exc.IntegrityError, _Raced) as exc:
            if not _lost_race(exc) or attempt == _ATTEMPTS:
                raise
            log.info("an identical product was committed meanwhile (%s); looking again", getattr(exc, "orig", exc))
    result: list[DBObject] = []
    now = utcnow()
    for i, (obj, _) in enumerate(items):
        if i in adopted:
            twin_obj = adopted[i]
            if i in stored:
                _discard_stored(session, obj.filename)
            log.info("an identical %s was committed meanwhile: %s; using it instead of %s", type(obj).__name__,
                     twin_obj.filename, obj.filename)
            result.append(twin_obj)
            continue
        obj.__dict__.update(project_id=project.id, creator=session.user, software_version=__version__,
                            _session=session)
        obj.__dict__["creation_date"] = obj.__dict__.get("creation_date") or now
        obj.__dict__.pop("_replaces", None)
        log.info("committed %s %s to project %s", type(obj).__name__, obj.filename, project.name)
        result.append(obj)
    return result


def _insert(items: Sequence[tuple[DBObject, str | Path | None]], session: Session,
            project_id: int, stored: set[int]) -> dict[int, DBObject]:
    """Insert the rows in one transaction; returns the adopted twins by item index.

    An item to insert whose file was not stored (its twin was there a moment ago and is gone)
    makes the commit look again.
    """
    now = utcnow()
    adopted: dict[int, int] = {}
    superseded: list[tuple[DBObject, Twin]] = []
    table = DBObject.__table__
    try:
        with write_transaction(session.engine) as conn:
            for i, (obj, path) in enumerate(items):
                twin = current_twin(conn, obj, project_id)
                if twin is not None and not _supersedes(obj, twin):
                    adopted[i] = twin.object_id
                    obj.__dict__["object_id"] = twin.object_id  # later items link to the twin
                    continue
                if path is not None and i not in stored:
                    raise _Raced(f"the product {obj.filename} was to adopt is gone")
                (root, values), *families = obj._table_values()
                values.update(project_id=project_id, creator=session.user, software_version=__version__,
                              superseded_by=None)
                values["creation_date"] = values.get("creation_date") or now
                if twin is not None:  # the old one steps aside first: the index admits one current row
                    moved = conn.execute(sa.update(table).where(table.c.object_id == twin.object_id,
                                                                table.c.superseded_by.is_(None))
                                         .values(superseded_by=0)).rowcount
                    if not moved:
                        raise _Raced(f"{obj.filename} could not supersede {twin.filename} (object {twin.object_id}): "
                                     "another commit superseded it meanwhile, or you may not change it (only its "
                                     "creator or the project's managers may); nothing was committed")
                oid = inserted_id(conn.execute(root.insert().values(**values)))
                if twin is not None:
                    conn.execute(sa.update(table).where(table.c.object_id == twin.object_id)
                                 .values(superseded_by=oid))
                    superseded.append((obj, twin))
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
    for obj, twin in superseded:
        log.info("%s %s supersedes %s (object %d, kept)", type(obj).__name__, obj.filename, twin.filename,
                 twin.object_id)
    found: dict[int, DBObject] = {}
    if adopted:
        for i, oid in adopted.items():
            cls = type(items[i][0])
            found[i] = list((cls.object_id == oid).using(session))[0]
    return found


def _discard_stored(session: Session, filename: str) -> None:
    """Remove the stored file of an object that was not committed (its twin was)."""
    try:
        session.storage.delete(filename)
    except Exception as exc:  # a file left behind is only work for `awe storage vacuum`
        log.warning("could not remove %s from the data storage (awe storage vacuum will): %s", filename, exc)

