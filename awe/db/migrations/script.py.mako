"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
% if context.get("comment_upgrades"):

    if op.get_context().dialect.supports_comments:  # SQLite keeps no comments (and would rebuild the table)
        ${context.get("comment_upgrades").replace("\n", "\n    ")}
% endif


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
% if context.get("comment_downgrades"):

    if op.get_context().dialect.supports_comments:
        ${context.get("comment_downgrades").replace("\n", "\n    ")}
% endif
