"""One database: its engine, its schema revision and its shared reference data.

A :class:`Database` is shared by every :class:`~awe.db.session.Session` on
the same URL (a web server opens one and serves many users' sessions from it);
it knows nothing about who is asking.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from awe.db.engine import DatabaseError, ensure_schema, make_engine

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.persistent import Persistent

__all__ = ["Database"]


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
            ensure_schema(self.engine, auto_upgrade)
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise DatabaseError(
                f"cannot reach database {self.url}: {exc.orig}; check AWE_DATABASE_URL and that the server is "
                "running"
            ) from None
        except DatabaseError:
            self.engine.dispose()
            raise
        from awe.db.accounts import ensure_public
        ensure_public(self)

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
