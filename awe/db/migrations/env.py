"""Alembic environment: runs on the connection awe hands over (see awe.db.engine.upgrade)."""

from alembic import context as alembic_context

import awe.model  # noqa: F401  (registers every table)
from awe.db.persistent import metadata

connection = alembic_context.config.attributes["connection"]
alembic_context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with alembic_context.begin_transaction():
    alembic_context.run_migrations()
