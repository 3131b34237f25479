"""One database: its engine, its schema revision and its shared reference data.

A :class:`Database` is shared by every :class:`~awe.db.session.Session` on
the same URL (a web server opens one and serves many users' sessions from it);
it knows nothing about who is asking.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from awe.db.engine import DatabaseError, ensure_schema, make_engine

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.persistent import Persistent

__all__ = ["Database"]

log = logging.getLogger(__name__)

_FIRST_USE_ATTEMPTS = 5


class Database:
    """The engine of one database URL, its schema brought up to date, and the entity cache.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:///...`` or ``postgresql://...``).
    auto_upgrade : bool
        Upgrade an older schema on open (the embedded default does); otherwise an
        older schema raises :class:`DatabaseError` asking for ``awe db upgrade``.
        An empty database always gets the schema.
    """

    def __init__(self, url: str, auto_upgrade: bool = False) -> None:
        self.engine = make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        self._entities: dict[tuple[str | None, int], Any] = {}
        self._lock = threading.Lock()
        try:
            self._ensure_schema(auto_upgrade)
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise DatabaseError(
                f"cannot reach database {self.url}: {exc.orig}; check AWE_DATABASE_URL and that the server is "
                "running"
            ) from None
        except DatabaseError:
            self.engine.dispose()
            raise
        self._first_use()

    def _ensure_schema(self, auto_upgrade: bool) -> None:
        """The schema checked or upgraded (under the lock of :func:`~awe.db.engine.upgrade`).

        SQLite answers "database is locked" without waiting while a new database
        file is switched to WAL by another process opening it at the same moment:
        that is retried a few times.
        """
        for attempt in range(1, _FIRST_USE_ATTEMPTS + 1):
            try:
                ensure_schema(self.engine, auto_upgrade)
                return
            except sa.exc.OperationalError as exc:
                if not self.is_sqlite or "locked" not in str(exc.orig) or attempt == _FIRST_USE_ATTEMPTS:
                    raise
                log.info("database %s is locked by another session setting it up; trying again", self.url)
                time.sleep(0.2 * attempt)

    def _first_use(self) -> None:
        """The entities every database has (the public project ``ALL``, ...), made once whoever comes first.

        Several processes opening a new database at once all try: the ones that
        lose the race (a unique name, or SQLite's write lock taken by the winner)
        look again and find what the winner made.
        """
        from awe.db.accounts import ensure_public
        for attempt in range(1, _FIRST_USE_ATTEMPTS + 1):
            try:
                ensure_public(self)
                return
            except (sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
                if attempt == _FIRST_USE_ATTEMPTS:
                    raise
                log.info("database %s was being set up by another session (%s); looking again", self.url,
                         exc.orig)
                time.sleep(0.05 * attempt)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def public_project_ids(self) -> list[int]:
        from awe.db.schema import projects
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(projects.c.id).where(projects.c.kind == "public")).scalars())

    def cached_entity(self, cls: type[Persistent], object_id: int) -> Any:
        """Reference data (instruments, chips, filters) by id, cached per database."""
        key = (cls.__tablename__, object_id)
        with self._lock:
            if key not in self._entities:
                table = cls.__table__
                with self.engine.connect() as conn:
                    for row in conn.execute(sa.select(table)).mappings():
                        self._entities[(cls.__tablename__, row["object_id"])] = cls._from_row(row)
            try:
                return self._entities[key]
            except KeyError:
                raise LookupError(f"no {cls.__name__} with id {object_id}") from None

    def forget_entities(self) -> None:
        with self._lock:
            self._entities.clear()

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"<awe Database {self.url}>"
