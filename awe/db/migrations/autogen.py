"""Write the next schema revision: the difference between the declared tables and the migrated schema.

Run from a source checkout after changing a persistent class or table::

    python -m awe.db.migrations.autogen "seeing errors on reduced frames"
    python -m awe.db.migrations.autogen "..." --url postgresql://me@localhost/scratch   # an empty database

It upgrades an empty scratch database (a temporary SQLite file by default) to
the current head, compares it with the live metadata (Alembic autogenerate),
writes ``versions/NNNN_<slug>.py`` with explicit operations (batch mode, so the
revision also runs on SQLite), and checks that a fresh database upgraded
through the new revision matches the metadata. Review the file before
committing: autogenerate cannot see renames (it writes drop + add, losing the
data) or data copies; write those by hand (0002 is an example).

Changed comments (the docs of fields) are written as plain ``op.alter_column``
calls under ``if dialect.supports_comments``, apart from the batch blocks:
SQLite keeps no comments, and a batch block would rebuild the whole table for
one. SQLite does not see comment changes at all, so compare on PostgreSQL
(``--postgres`` starts a throw-away server as the tests do, from a source
checkout; or ``--url`` of an empty database) before a release.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from awe.db.engine import _alembic_config, head_revision, make_engine, upgrade

__all__ = ["schema_differences", "write_revision", "main"]

log = logging.getLogger(__name__)


def schema_differences(engine: sa.Engine) -> list[Any]:
    """Alembic's differences between the database of ``engine`` and the declared metadata ([] = in step)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import awe.model  # noqa: F401  (registers every table)
    from awe.db.persistent import metadata
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "target_metadata": metadata})
        return compare_metadata(context, metadata)


def _is_comment_only(operation: Any) -> bool:
    from alembic.operations import ops
    if isinstance(operation, (ops.CreateTableCommentOp, ops.DropTableCommentOp)):
        return True
    return (isinstance(operation, ops.AlterColumnOp) and operation.modify_comment is not False
            and operation.modify_type is None and operation.modify_nullable is None
            and operation.modify_server_default is False and operation.modify_name is None)


def _take_comment_changes(container: Any) -> list[Any]:
    """Remove the comment-only changes from the table blocks of ``container``; return them."""
    from alembic.operations import ops
    taken: list[Any] = []
    kept: list[Any] = []
    for block in container.ops:
        if isinstance(block, ops.ModifyTableOps):
            comments = [o for o in block.ops if _is_comment_only(o)]
            taken += comments
            block.ops = [o for o in block.ops if not _is_comment_only(o)]
            if not block.ops:
                continue
        kept.append(block)
    container.ops = kept
    return taken


def _split_comment_changes(script: Any) -> None:
    """Move comment changes to their own, dialect-guarded part of the revision (see script.py.mako)."""
    from alembic.operations import ops
    up = _take_comment_changes(script.upgrade_ops_list[0])
    down = _take_comment_changes(script.downgrade_ops_list[0])
    if up or down:
        script.upgrade_ops_list.append(ops.UpgradeOps(up, upgrade_token="comment_upgrades"))
        script.downgrade_ops_list.append(ops.DowngradeOps(down, downgrade_token="comment_downgrades"))


def _next_id(head: str) -> str | None:
    return f"{int(head) + 1:04d}" if head.isdigit() else None


def _scratch(url: str | None, folder: str) -> sa.Engine:
    engine = make_engine(url or f"sqlite:///{folder}/scratch.sqlite")
    if sa.inspect(engine).get_table_names():
        engine.dispose()
        raise ValueError(f"autogen: the database {url} is not empty; give --url of an empty scratch database "
                         "(autogen creates the schema in it)")
    return engine


def write_revision(message: str, url: str | None = None) -> Path | None:
    """Write the next revision for ``message``; None (nothing written) when the schema is already in step."""
    from alembic import command

    with tempfile.TemporaryDirectory(prefix="awe-autogen-") as folder:
        engine = _scratch(url, folder)
        try:
            upgrade(engine)
            empty: list[bool] = []

            def arrange(_context: Any, _revision: Any, directives: list[Any]) -> None:
                script = directives[0]
                if script.upgrade_ops.is_empty():
                    directives[:] = []
                    empty.append(True)
                    return
                _split_comment_changes(script)

            with engine.begin() as conn:
                cfg = _alembic_config(conn, process_revision_directives=arrange)
                cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
                script = command.revision(cfg, message=message, autogenerate=True,
                                          rev_id=_next_id(head_revision()))
        finally:
            engine.dispose()
        if empty or script is None:
            return None
        assert not isinstance(script, list)
        path = Path(script.path)
        check = make_engine(f"sqlite:///{folder}/check.sqlite")
        try:
            upgrade(check)
            left = schema_differences(check)
        finally:
            check.dispose()
        if left:
            log.warning("after %s a fresh database still differs from the metadata (edit the revision):\n  %s",
                        path.name, "\n  ".join(map(str, left)))
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m awe.db.migrations.autogen",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("message", help="what the revision changes (also its file name)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="an EMPTY scratch database to compare on (default: a temporary SQLite file)")
    where.add_argument("--postgres", action="store_true",
                       help="compare on a throw-away PostgreSQL server (sees comment changes; needs the PostgreSQL "
                            "binaries and a source checkout, as the tests do)")
    args = parser.parse_args(argv)
    if args.postgres:
        try:
            from tests._postgres import PostgresServer
        except ImportError:
            raise SystemExit("autogen: --postgres runs from a source checkout (it uses tests/_postgres.py); "
                             "give --url of an empty PostgreSQL database instead") from None
        server = PostgresServer()
        try:
            path = write_revision(args.message, server.new_database())
        finally:
            server.stop()
    else:
        try:
            path = write_revision(args.message, args.url)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    if path is None:
        print(f"the schema at {head_revision()} already matches the declared tables: nothing written")
    else:
        print(f"wrote {path}: review it before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
