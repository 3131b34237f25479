"""Database engines: SQLite (embedded default, WAL) and PostgreSQL (psycopg 3), schema by Alembic."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa

__all__ = ["make_engine", "upgrade", "schema_revision", "DatabaseError"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(RuntimeError):
    """The database cannot be reached or has an unexpected schema."""


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _alembic_config(connection: sa.Connection):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (creates it in an empty database)."""
    from alembic import command
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)


def schema_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
