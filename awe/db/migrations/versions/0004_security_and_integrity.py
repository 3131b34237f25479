"""Security and integrity: one current product per (class, provenance, project); ids never reused on SQLite.

* ``objects.superseded_by``: the product that replaced this one (made again with
  ``redo=1`` or after this one was invalidated); NULL for the current product.
  The partial unique index ``uq_objects_current_provenance`` on (class_name,
  provenance, project_id) WHERE superseded_by IS NULL lets at most one current
  product exist per key, so two identical tasks committing at once cannot both
  succeed. Older duplicates already in the database (redo=1 made them before)
  are marked superseded by the newest of their key first (data copy by hand).
* SQLite: the tables whose ids other rows or provenance hashes name (objects,
  instruments, chips, filters, users, projects) are rebuilt with AUTOINCREMENT,
  their rows kept, so an id is never given out again after a delete.
  PostgreSQL's sequences never reuse ids already.

The column and index were written by ``python -m awe.db.migrations.autogen``;
the data copy and the rebuilds by hand.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

#: the tables that get AUTOINCREMENT on SQLite (their integer primary key)
AUTOINCREMENT_TABLES = ["objects", "instruments", "chips", "filters", "users", "projects"]

_CURRENT = "superseded_by IS NULL"
#: a rebuilt table keeps its constraint names (batch mode would leave the primary key unnamed)
_NAMES = {"pk": "pk_%(table_name)s"}
_SAME_KEY = ("n.class_name = objects.class_name AND n.provenance = objects.provenance "
             "AND n.project_id = objects.project_id")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    sqlite = _sqlite()
    with op.batch_alter_table('objects', schema=None, recreate="always" if sqlite else "auto",
                              table_kwargs={"sqlite_autoincrement": True}, naming_convention=_NAMES) as batch_op:
        batch_op.add_column(sa.Column('superseded_by', sa.Integer(), nullable=True, comment='object_id of the product that replaced this one (same class, provenance and project: made again with redo=1 or after this one was invalidated); None: the current product'))
    # earlier duplicates of a key are superseded by its newest product
    op.execute(f"UPDATE objects SET superseded_by = (SELECT max(n.object_id) FROM objects n WHERE {_SAME_KEY}) "
               f"WHERE provenance IS NOT NULL AND object_id < (SELECT max(n.object_id) FROM objects n "
               f"WHERE {_SAME_KEY})")
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.create_index('uq_objects_current_provenance', ['class_name', 'provenance', 'project_id'], unique=True, sqlite_where=sa.text(_CURRENT), postgresql_where=sa.text(_CURRENT))
    _accounts_upgrade()
    if sqlite:
        for table in AUTOINCREMENT_TABLES[1:]:
            with op.batch_alter_table(table, schema=None, recreate="always",
                                      table_kwargs={"sqlite_autoincrement": True}, naming_convention=_NAMES):
                pass


def _accounts_upgrade() -> None:
    """Roles, the audit trail and the exclusion lists (helper S1; by hand from autogenerate's output).

    The first user becomes the administrator; the owners of private projects their managers.
    """
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_admin', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), server_default='member', nullable=False))
    op.execute("UPDATE users SET is_admin = " + ("1" if _sqlite() else "true")
               + " WHERE id = (SELECT min(id) FROM users)")
    op.execute("UPDATE memberships SET role = 'manager' WHERE EXISTS (SELECT 1 FROM projects p WHERE "
               "p.id = memberships.project_id AND p.kind = 'private' AND p.owner_id = memberships.user_id)")
    op.create_table('audit_trail',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False, comment='when (UTC)'),
    sa.Column('user_name', sa.String(length=64), nullable=False, comment='who made the change'),
    sa.Column('object_id', sa.Integer(), nullable=False, comment='the object changed'),
    sa.Column('project_id', sa.Integer(), nullable=False, comment='project of the object at the change'),
    sa.Column('filename', sa.String(length=255), nullable=True, comment='file name of the object'),
    sa.Column('attribute', sa.String(length=64), nullable=False, comment='is_valid, quality_flags, timestamp_start, timestamp_end, project (migrate) or deleted'),
    sa.Column('old_value', sa.String(length=255), nullable=True, comment='the value before, as JSON'),
    sa.Column('new_value', sa.String(length=255), nullable=True, comment='the value after, as JSON'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_trail'))
    )
    with op.batch_alter_table('audit_trail', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_trail_object_id'), ['object_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_trail_project_id'), ['project_id'], unique=False)
    op.create_table('exclusions',
    sa.Column('project_id', sa.Integer(), nullable=False, comment='the project whose selections leave the object out'),
    sa.Column('object_id', sa.Integer(), nullable=False, comment='the object left out'),
    sa.Column('user_name', sa.String(length=64), nullable=False, comment='who excluded it'),
    sa.Column('reason', sa.String(length=255), nullable=False, comment='why'),
    sa.Column('created', sa.DateTime(), nullable=False, comment='when (UTC)'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_exclusions_object_id_objects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_exclusions_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', 'object_id', name=op.f('pk_exclusions'))
    )


def _accounts_downgrade() -> None:
    op.drop_table('exclusions')
    with op.batch_alter_table('audit_trail', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_trail_project_id'))
        batch_op.drop_index(batch_op.f('ix_audit_trail_object_id'))
    op.drop_table('audit_trail')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('role')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('is_admin')


def downgrade() -> None:
    _accounts_downgrade()
    sqlite = _sqlite()
    with op.batch_alter_table('objects', schema=None, recreate="always" if sqlite else "auto",
                              table_kwargs={"sqlite_autoincrement": False}, naming_convention=_NAMES) as batch_op:
        batch_op.drop_index('uq_objects_current_provenance', sqlite_where=sa.text(_CURRENT), postgresql_where=sa.text(_CURRENT))
        batch_op.drop_column('superseded_by')
    if sqlite:
        for table in AUTOINCREMENT_TABLES[1:]:
            with op.batch_alter_table(table, schema=None, recreate="always",
                                      table_kwargs={"sqlite_autoincrement": False}, naming_convention=_NAMES):
                pass
