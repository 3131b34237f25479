"""Database engines: SQLite (embedded default, WAL) and PostgreSQL (psycopg 3), schema by Alembic.

The schema is the chain of revisions in ``awe/db/migrations/versions`` (0001 is
the first release's schema, frozen; every later change is its own revision,
written by ``python -m awe.db.migrations.autogen "message"``). :func:`upgrade`
runs the chain the way SQLite and PostgreSQL need it to keep data intact:

* on SQLite, in one ``BEGIN IMMEDIATE`` transaction (DDL included, so a failed
  revision leaves the database as it was; a second process waits and then finds
  the schema current) with foreign-key enforcement off while tables are rebuilt
  (otherwise rebuilding ``objects`` would cascade-delete every ``links`` row),
  and ``PRAGMA foreign_key_check`` before the commit;
* on PostgreSQL, in one transaction under an advisory lock.

A database at a revision this code does not know was made by a newer awe and is
refused with :class:`DatabaseError`, never touched.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

__all__ = ["make_engine", "write_transaction", "upgrade", "ensure_schema", "schema_revision", "head_revision",
           "known_revisions", "DatabaseError"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")

#: key of the PostgreSQL advisory lock held while the schema is upgraded
_PG_LOCK = 0x617765_5F_6462  # "awe_db"


class DatabaseError(RuntimeError):
    """The database cannot be reached or has an unexpected schema."""


def _sqlite_engine(url: str, *, foreign_keys: bool = True, transactional_ddl: bool = False,
                   **kwargs: Any) -> sa.Engine:
    path = sa.engine.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60}, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
        if transactional_ddl:
            # the driver's own transaction handling leaves DDL outside any transaction;
            # "begin" below issues BEGIN itself so DDL and data changes commit or roll back together
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    if transactional_ddl:
        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    return engine


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True)


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that holds the database's write lock from its first statement, committed at the end.

    SQLite: ``BEGIN IMMEDIATE``, so a read-then-write (look for an identical
    product, then insert) is serialised with every other writer instead of
    failing with "database is locked" when another process wrote in between;
    a second writer waits (the busy timeout). PostgreSQL: an ordinary
    transaction (its unique indexes and row locks serialise conflicting writes).
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _script_directory():
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def _alembic_config(connection: sa.Connection, **attributes: Any):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    cfg.attributes.update(attributes)
    return cfg


def head_revision() -> str:
    """The revision this code's schema is at (the last of the chain)."""
    head = _script_directory().get_current_head()
    assert head is not None
    return head


def known_revisions() -> list[str]:
    """Every revision of this code, oldest first."""
    return [script.revision for script in reversed(list(_script_directory().walk_revisions()))]


def _current_revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext
    return MigrationContext.configure(conn).get_current_revision()


def schema_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return _current_revision(conn)


def _refuse_unknown(revision: str | None, engine: sa.Engine) -> None:
    if revision is not None and revision not in known_revisions():
        raise DatabaseError(
            f"database {engine.url.render_as_string(hide_password=True)} has schema revision {revision!r}, "
            f"which this awe (schema {head_revision()}) does not know: it was made or upgraded by a newer awe; "
            "install that awe version (or newer) to use it"
        )


@contextlib.contextmanager
def _migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in one transaction that schema changes may use, committed at the end unless it raises.

    SQLite: foreign keys off, transactional DDL, write lock taken at the start,
    foreign-key check before the commit. PostgreSQL: an advisory lock.
    """
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            yield conn
        return
    # a private engine (one connection, closed at the end) with the pragmas a schema change needs
    migration_engine = _sqlite_engine(engine.url.render_as_string(hide_password=False), foreign_keys=False,
                                      transactional_ddl=True, poolclass=sa.pool.NullPool)
    try:
        with migration_engine.begin() as conn:
            yield conn
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                tables = sorted({row[0] for row in broken})
                raise DatabaseError(
                    f"schema upgrade of {engine.url.database} would leave {len(broken)} row(s) of {tables} "
                    "pointing at missing rows; nothing was changed. Report this with the revision names"
                )
    finally:
        migration_engine.dispose()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (creates it in an empty database); a no-op when it is there.

    Raises :class:`DatabaseError` for a database made by a newer awe (a revision
    this code does not know); such a database is not changed.
    """
    from alembic import command
    with _migrating(engine) as conn:
        before = _current_revision(conn)
        _refuse_unknown(before, engine)
        if conn.dialect.name == "postgresql":  # row-level security: re-applied below, in this transaction
            from awe.db import rls
            rls.suspend(conn)
        command.upgrade(_alembic_config(conn), revision)
        if conn.dialect.name == "postgresql" and _current_revision(conn) == head_revision():
            rls.install(conn)  # the policies of this code's tables (an older revision's schema has other tables)
        after = _current_revision(conn)
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "empty", after)


def ensure_schema(engine: sa.Engine, auto_upgrade: bool) -> str:
    """Check the database's schema against this code; upgrade an empty one (or an older one if ``auto_upgrade``).

    Returns the revision. Raises :class:`DatabaseError` naming what to do: for
    an older schema without ``auto_upgrade`` (``awe db upgrade``), and for a
    schema made by a newer awe.
    """
    revision = schema_revision(engine)
    head = head_revision()
    if revision == head:
        return head
    _refuse_unknown(revision, engine)
    if revision is not None and not auto_upgrade:
        raise DatabaseError(
            f"database schema is at revision {revision}, this awe needs {head}: run `awe db upgrade`"
        )
    upgrade(engine)
    return head_revision()
