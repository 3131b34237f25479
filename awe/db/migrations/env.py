"""Alembic environment: runs on the connection awe hands over (see :func:`awe.db.engine.upgrade`).

The revisions themselves never read the live metadata (each is explicit
operations); ``target_metadata`` is only what ``autogen`` compares the
database with to write the next revision.
"""

from alembic import context as alembic_context

import awe.model  # noqa: F401  (registers every table)
from awe.db.persistent import metadata

config = alembic_context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "awe's migrations run on a connection awe hands over: use `awe db upgrade`, "
        "or `python -m awe.db.migrations.autogen \"message\"` to write a new revision"
    )
alembic_context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite alters a table by rebuilding it
    compare_type=True,
    process_revision_directives=config.attributes.get("process_revision_directives"),
)
with alembic_context.begin_transaction():
    alembic_context.run_migrations()
