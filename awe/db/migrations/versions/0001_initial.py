"""The initial schema: users, projects, objects (every product), links and reference data.

The first revision creates the tables exactly as the persistent classes of this
release declare them; every later schema change is its own revision with
explicit operations (``alembic revision --autogenerate`` against this metadata).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from alembic import op

from awe.db.persistent import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(bind=op.get_bind())


def downgrade() -> None:
    metadata.drop_all(bind=op.get_bind())
