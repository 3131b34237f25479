"""PostgreSQL: one role per awe user, and row-level security on every table that holds project data.

The rights of :mod:`awe.db.accounts` are enforced by the database itself, so
that ``psql`` with a user's own credentials shows exactly what the awe prompt
shows, whatever the client:

* every awe user is a login role of the same name (its password is the awe
  password); the roles of one database are members of its group role
  ``awe_<database>_users``, which holds the table privileges;
* the web server and DPU workers log in as an *authenticator* (a ``NOINHERIT``
  role that is a member of every user role and has no privilege of its own) and
  act for a user with ``SET LOCAL ROLE`` per transaction
  (:meth:`awe.db.session.Session.open_as`, the pattern PostgREST uses);
* policies keyed on ``current_user`` -> ``users.name``: a row of ``objects`` is
  seen in the public projects and the projects the user is a member of; it is
  inserted only into those with ``creator = current_user``; it is changed or
  deleted only by its creator or by the project's managers (for ``ALL`` and the
  other non-private projects: also the administrators). A row of a table keyed
  by an object (every family table, ``links``, the catalogue rows) follows its
  object; a table with a ``project_id`` (the audit trail, the exclusion lists)
  follows its project, and rows naming a user (``user_name``) are inserted only
  under one's own name. The audit trail is append-only.
* ``users.password_hash`` is not readable by the user roles (PostgreSQL keeps
  the real hashes in ``pg_authid``, unreadable anyway); every role that may
  connect reads the schema revision and the names of users and projects (an
  authenticator needs them to open a session), and no project data.

:func:`protected_tables` derives the list from the declared metadata (every
table with a ``project_id`` column or a foreign key to ``objects``, and every
catalogue row table), and :func:`install` (re)applies everything idempotently;
:func:`awe.db.engine.upgrade` calls it in the transaction of every schema
upgrade, so a later table cannot be forgotten. ``FORCE ROW LEVEL SECURITY``
binds the owner too (the first administrator, made a member of the group);
only superusers bypass it. The policies are for the group's members: a role
outside it (the privileged functions' own role) gets none of them.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

__all__ = ["protected_tables", "install", "suspend", "group_role", "authenticator_marker", "create_login_role",
           "set_role_password", "create_authenticator", "quote", "ME", "VISIBLE", "MANAGED", "IS_ADMIN"]

log = logging.getLogger(__name__)

#: the user ids of the session's role (one or none)
ME = "(SELECT u.id FROM users u WHERE u.name = current_user)"
IS_ADMIN = "EXISTS (SELECT 1 FROM users u WHERE u.name = current_user AND u.is_admin)"
#: the projects the session sees and writes: the public ones and those it is a member of
VISIBLE = (f"(SELECT p.id FROM projects p WHERE p.kind = 'public' "
           f"OR p.id IN (SELECT m.project_id FROM memberships m WHERE m.user_id IN {ME}))")
#: the projects whose products the session may change whoever made them
MANAGED = (f"(SELECT m.project_id FROM memberships m WHERE m.role = 'manager' AND m.user_id IN {ME} "
           f"UNION SELECT p.id FROM projects p WHERE p.kind <> 'private' AND {IS_ADMIN})")

#: tables with policies of their own (the accounts)
_ACCOUNT_TABLES = ("users", "projects", "memberships")
#: for a table with several foreign keys to objects: the one naming the row's object
_KEY_COLUMNS = {"links": "child_id"}
#: append-only tables: rows are inserted and read, never changed or deleted
_APPEND_ONLY = ("audit_trail",)
#: tables whose rows only the user named in ``user_name`` sees and changes (the DPU's jobs)
_OWN_ROWS = ("dpu_jobs",)
#: the web server's own tables: read and written by the authenticators only (as their marker role, ``SET LOCAL ROLE``:
#: they are ``NOINHERIT``), by no awe user (the failed logins: a user who could read them would see who tried which
#: name, one who could delete them would lift the limit)
_SERVER_TABLES = {"login_failures": "SELECT, INSERT, DELETE"}


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _may_change(alias: str = "") -> str:
    a = f"{alias}." if alias else ""
    return f"({a}project_id IN {VISIBLE} AND ({a}creator = current_user OR {a}project_id IN {MANAGED}))"


def protected_tables() -> dict[str, tuple[str, str]]:
    """Every table holding project data -> (``'project'`` or ``'object'``, the column it is keyed on).

    ``objects`` and the tables with a ``project_id`` are keyed on their project;
    the tables with a foreign key to ``objects`` (family tables, ``links``) and
    the catalogue row tables on their object.
    """
    import awe.model  # noqa: F401  (registers every table)
    from awe.db.persistent import metadata
    from awe.db.rows import row_registry
    row_parents = {cls.__table__.name: cls._parents[0].column for cls in row_registry.values()
                   if getattr(cls, "_parents", None) and getattr(cls, "__table__", None) is not None}
    found: dict[str, tuple[str, str]] = {}
    for table in metadata.sorted_tables:
        if table.name in _ACCOUNT_TABLES:
            continue
        if "project_id" in table.c:
            found[table.name] = ("project", "project_id")
            continue
        keys = [fk.parent.name for fk in table.foreign_keys if fk.column.table.name == "objects"]
        if table.name in row_parents:
            keys = [row_parents[table.name]]
        if len(keys) > 1:
            if table.name not in _KEY_COLUMNS:
                raise RuntimeError(f"table {table.name} has several foreign keys to objects ({keys}): name the one "
                                   "its rows belong to in awe.db.rls._KEY_COLUMNS")
            keys = [_KEY_COLUMNS[table.name]]
        if keys:
            found[table.name] = ("object", keys[0])
    return found


def _database(conn: sa.Connection) -> str:
    return str(conn.execute(sa.text("SELECT current_database()")).scalar())


def group_role(conn: sa.Connection) -> str:
    """The role every awe user role of this database is a member of (it holds the table privileges)."""
    return f"awe_{_database(conn)}_users"[:63]


def authenticator_marker(conn: sa.Connection) -> str:
    """The (privilege-less) role whose members are this database's authenticators."""
    return f"awe_{_database(conn)}_authenticators"[:63]


def _role_exists(conn: sa.Connection, name: str) -> bool:
    return conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first() is not None


def _literal(conn: sa.Connection, value: str) -> str:
    """A quoted SQL string literal (DDL takes no parameters)."""
    from psycopg import sql
    raw = conn.connection.dbapi_connection
    return sql.Literal(value).as_string(raw)  # type: ignore[arg-type]


def _ensure_role(conn: sa.Connection, name: str, options: str = "NOLOGIN") -> None:
    if not _role_exists(conn, name):
        conn.execute(sa.text(f"CREATE ROLE {quote(name)} {options}"))


def create_login_role(conn: sa.Connection, name: str, password: str, *, admin: bool = False) -> None:
    """The login role of awe user ``name`` with ``password`` (an existing role of the cluster is reused and
    gets this password), a member of this database's group; the authenticators may act as it."""
    options = f"LOGIN {'CREATEROLE' if admin else 'NOCREATEROLE'} PASSWORD {_literal(conn, password)}"
    if _role_exists(conn, name):
        conn.execute(sa.text(f"ALTER ROLE {quote(name)} {options}"))
    else:
        conn.execute(sa.text(f"CREATE ROLE {quote(name)} {options}"))
    conn.execute(sa.text(f"GRANT {quote(group_role(conn))} TO {quote(name)}"))
    for auth in _authenticators(conn):
        conn.execute(sa.text(f"GRANT {quote(name)} TO {quote(auth)}"))


def set_role_password(conn: sa.Connection, name: str, password: str) -> None:
    conn.execute(sa.text(f"ALTER ROLE {quote(name)} PASSWORD {_literal(conn, password)}"))


def _authenticators(conn: sa.Connection) -> list[str]:
    marker = authenticator_marker(conn)
    return list(conn.execute(sa.text(
        "SELECT m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid "
        "JOIN pg_roles m ON m.oid = a.member WHERE r.rolname = :marker"), {"marker": marker}).scalars())


def create_authenticator(conn: sa.Connection, name: str, password: str) -> None:
    """A login role that can do nothing but ``SET ROLE`` to the awe users' roles (the web server, DPU workers)."""
    options = f"LOGIN NOINHERIT NOCREATEROLE PASSWORD {_literal(conn, password)}"
    if _role_exists(conn, name):
        conn.execute(sa.text(f"ALTER ROLE {quote(name)} {options}"))
    else:
        conn.execute(sa.text(f"CREATE ROLE {quote(name)} {options}"))
    marker = authenticator_marker(conn)
    _ensure_role(conn, marker)
    conn.execute(sa.text(f"GRANT {quote(marker)} TO {quote(name)}"))
    # never a superuser's role (the owner of a test or bootstrap database can be one): it would bypass every policy
    for user in conn.execute(sa.text("SELECT u.name FROM users u JOIN pg_roles r ON r.rolname = u.name "
                                     "WHERE NOT r.rolsuper")).scalars():
        conn.execute(sa.text(f"GRANT {quote(user)} TO {quote(name)}"))


def _grant_directory(conn: sa.Connection, role: str) -> None:
    """What every role that may connect reads (an authenticator before it acts for a user): the schema
    revision and the names of the users and projects; no project data."""
    r = role if role == "PUBLIC" else quote(role)
    conn.execute(sa.text(f"GRANT SELECT ON alembic_version, projects TO {r}"))
    conn.execute(sa.text(f"GRANT SELECT (id, name, created, is_admin) ON users TO {r}"))


def _policy(conn: sa.Connection, table: str, name: str, command: str, using: str | None = None,
            check: str | None = None, to: str | None = None) -> None:
    """One policy for the awe users (the members of the group role; other roles -- the privileged functions'
    role of :mod:`awe.db.privileged` -- have policies of their own, or none and see nothing)."""
    conn.execute(sa.text(f"DROP POLICY IF EXISTS {quote(name)} ON {quote(table)}"))
    sql = f"CREATE POLICY {quote(name)} ON {quote(table)} FOR {command} TO {to or quote(group_role(conn))}"
    if using is not None:
        sql += f" USING ({using})"
    if check is not None:
        sql += f" WITH CHECK ({check})"
    conn.execute(sa.text(sql))


def _existing_tables(conn: sa.Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def suspend(conn: sa.Connection) -> None:
    """Release the owner from the policies for a schema upgrade (data copies must see every row);
    :func:`install` binds it again at the end of the same transaction."""
    for table in set(protected_tables()) & _existing_tables(conn):
        conn.execute(sa.text(f"ALTER TABLE {quote(table)} NO FORCE ROW LEVEL SECURITY"))


def install(conn: sa.Connection) -> dict[str, tuple[str, str]]:
    """(Re)apply roles, privileges and policies to the schema of ``conn`` (idempotent); returns the protected tables.

    Run by the owner (or a superuser) in the schema upgrade's transaction.
    """
    tables = protected_tables()
    existing = _existing_tables(conn)
    group = group_role(conn)
    _ensure_role(conn, group)
    _ensure_role(conn, authenticator_marker(conn))
    me = str(conn.execute(sa.text("SELECT current_user")).scalar())
    if not conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar():
        conn.execute(sa.text(f"GRANT {quote(group)} TO {quote(me)}"))  # the owner is bound like every user
    conn.execute(sa.text("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC"))
    conn.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {quote(group)}"))
    conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quote(group)}"))
    conn.execute(sa.text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quote(group)}"))
    # the accounts: names readable, password hashes not; schema revision read-only
    conn.execute(sa.text(f"REVOKE ALL ON users, alembic_version FROM {quote(group)}"))
    conn.execute(sa.text(f"GRANT SELECT ON alembic_version TO {quote(group)}"))
    conn.execute(sa.text(f"GRANT SELECT (id, name, created, is_admin), UPDATE (is_admin), "
                         f"INSERT (name, password_hash, created, is_admin) ON users TO {quote(group)}"))
    for table in _APPEND_ONLY:
        if table in existing:
            conn.execute(sa.text(f"REVOKE UPDATE, DELETE ON {quote(table)} FROM {quote(group)}"))
    for table, privileges in _SERVER_TABLES.items():
        if table in existing:
            conn.execute(sa.text(f"REVOKE ALL ON {quote(table)} FROM {quote(group)}"))
            conn.execute(sa.text(f"GRANT {privileges} ON {quote(table)} TO {quote(authenticator_marker(conn))}"))
    for table in _ACCOUNT_TABLES:
        conn.execute(sa.text(f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY"))
        conn.execute(sa.text(f"ALTER TABLE {quote(table)} NO FORCE ROW LEVEL SECURITY"))
        _policy(conn, table, "awe_read", "SELECT", using="true", to="PUBLIC")  # the directory: names only
    for command in ("INSERT", "UPDATE", "DELETE"):
        using = None if command == "INSERT" else IS_ADMIN
        check = None if command == "DELETE" else IS_ADMIN
        _policy(conn, "users", f"awe_{command.lower()}", command, using, check)
        _policy(conn, "projects", f"awe_{command.lower()}", command, using, check)
        manages = f"({IS_ADMIN} OR project_id IN {MANAGED})"
        _policy(conn, "memberships", f"awe_{command.lower()}", command,
                None if command == "INSERT" else manages, None if command == "DELETE" else manages)
    for table, (kind, column) in tables.items():
        if table not in existing:
            continue
        t = quote(table)
        conn.execute(sa.text(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"))
        conn.execute(sa.text(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY"))
        names = _column_names(conn, table)
        if table == "objects":
            read, insert = f"project_id IN {VISIBLE}", f"project_id IN {VISIBLE} AND creator = current_user"
            change, after = _may_change(), f"project_id IN {VISIBLE}"
        elif kind == "project":
            read = insert = change = after = f"{quote(column)} IN {VISIBLE}"
            if "user_name" in names:
                insert = f"{insert} AND user_name = current_user"
            if table in _OWN_ROWS:
                read = insert = change = after = f"user_name = current_user AND {quote(column)} IN {VISIBLE}"
        else:
            key = f"{t}.{quote(column)}"
            read = f"EXISTS (SELECT 1 FROM objects o WHERE o.object_id = {key})"
            insert = change = after = (f"EXISTS (SELECT 1 FROM objects o WHERE o.object_id = {key} "
                                       f"AND {_may_change('o')})")
        _policy(conn, table, "awe_read", "SELECT", using=read)
        _policy(conn, table, "awe_insert", "INSERT", check=insert)
        if table in _APPEND_ONLY:
            for command in ("update", "delete"):
                conn.execute(sa.text(f"DROP POLICY IF EXISTS awe_{command} ON {t}"))
            continue
        _policy(conn, table, "awe_update", "UPDATE", using=change, check=after)
        _policy(conn, table, "awe_delete", "DELETE", using=change)
    _grant_directory(conn, "PUBLIC")
    try:
        from awe.db import privileged  # the narrow global operations (ingest's duplicate check, vacuum)
    except ImportError:  # pragma: no cover - merged with it
        privileged = None  # type: ignore[assignment]
    if privileged is not None and hasattr(privileged, "install"):
        privileged.install(conn)
    log.info("row-level security installed on %d table(s) by %s for group %s", len(tables), me, group)
    return tables


def _column_names(conn: sa.Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def row_security(conn: sa.Connection) -> dict[str, tuple[bool, bool]]:
    """Table -> (RLS enabled, forced) for every table of the schema (for the tests and ``awe db check``)."""
    rows: Any = conn.execute(sa.text(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"))
    return {r[0]: (bool(r[1]), bool(r[2])) for r in rows}
