"""The few deliberately global operations, each as narrow as it can be.

Row-level security (PostgreSQL) lets a user see only the rows of the projects
he may enter. Three operations must look further, and each returns or changes
only what it must:

- :func:`file_status` -- ingest's duplicate check: is a file name taken, with
  which checksum, and in which project *if the caller may enter that project*
  (else only "in a project you cannot see");
- :func:`publish_raw` -- the end of the raw-data squat: a raw frame that sits
  in a project the caller cannot see, and whose stored content the caller
  proves by its SHA-256, is moved into a public project the caller ingests
  into (raw frames are the telescope's data: one object per raw chip, file
  names are unique, so the frame is shared rather than copied);
- :func:`referenced_files` -- the storage vacuum's list of every referenced
  file name (only names: no project, no owner).

On PostgreSQL each is a ``SECURITY DEFINER`` SQL function created by
:func:`install` (the row-level security set-up calls it on every schema
upgrade); the caller is ``current_user``, matched to ``users.name``. Where the
functions are not installed (SQLite, which has no row-level security; a
PostgreSQL database without it) the same statements run as plain SQL with the
caller's identity from the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import sqlalchemy as sa

from awe.db.schema import DBObject, memberships, projects, users

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.session import Session

__all__ = ["FileStatus", "file_status", "publish_raw", "referenced_files", "install", "installed", "privileged_role",
           "FUNCTIONS"]

log = logging.getLogger(__name__)

#: the caller's awe user id inside the functions. In a SECURITY DEFINER function ``current_user`` is the owner, so the
#: caller is the role set with ``SET ROLE`` (the authenticator pattern), else the login role; one database role per
#: awe user, named as the user
_CALLER = ("(CASE WHEN current_setting('role') NOT IN ('', 'none') THEN current_setting('role') "
           "ELSE session_user::text END)")
_CALLER_ID = f"(SELECT u.id FROM users u WHERE u.name = {_CALLER})"
#: the projects the caller may enter: the public ones and those he is a member of (his private one included)
_ENTERABLE = (f"(SELECT p.id FROM projects p WHERE p.kind = 'public' OR p.id IN "
              f"(SELECT m.project_id FROM memberships m WHERE m.user_id = {_CALLER_ID}))")

FUNCTIONS: dict[str, str] = {
    "awe_file_status": f"""
CREATE OR REPLACE FUNCTION awe_file_status(names text[], checksums text[])
RETURNS TABLE (filename text, same boolean, checksum text, project_id integer, project_name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT o.filename::text, o.checksum IS NOT DISTINCT FROM wanted.checksum,
           CASE WHEN o.project_id IN {_ENTERABLE} THEN o.checksum::text END,
           CASE WHEN o.project_id IN {_ENTERABLE} THEN o.project_id END,
           CASE WHEN o.project_id IN {_ENTERABLE} THEN p.name::text END
    FROM unnest(names, checksums) AS wanted(name, checksum)
    JOIN objects o ON o.filename = wanted.name JOIN projects p ON p.id = o.project_id
$$""",
    "awe_publish_raw": f"""
CREATE OR REPLACE FUNCTION awe_publish_raw(names text[], checksums text[], target integer)
RETURNS SETOF text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    UPDATE objects o SET project_id = target
    FROM unnest(names, checksums) AS wanted(name, checksum)
    WHERE o.filename = wanted.name AND o.checksum = wanted.checksum
      AND o.object_id IN (SELECT r.object_id FROM raw_frames r)
      AND target IN (SELECT p.id FROM projects p WHERE p.kind = 'public')
      AND o.project_id NOT IN {_ENTERABLE}
      AND {_CALLER_ID} IS NOT NULL
    RETURNING o.filename::text
$$""",
    "awe_referenced_files": """
CREATE OR REPLACE FUNCTION awe_referenced_files()
RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT o.filename::text FROM objects o WHERE o.filename IS NOT NULL
$$""",
}
_SIGNATURES = {"awe_file_status": "text[], text[]", "awe_publish_raw": "text[], text[], integer",
               "awe_referenced_files": ""}


@dataclass(frozen=True)
class FileStatus:
    """Whether a file name is taken, and where as far as the caller may know.

    Attributes
    ----------
    filename : str
        The name.
    same : bool
        Whether the recorded SHA-256 is the one the caller gave (his copy has the same content).
    checksum : str or None
        SHA-256 recorded for the name, only when the caller may enter its project.
    project_id, project_name : int or None, str or None
        The project holding it, only when the caller may enter that project;
        None for "another project you cannot see".
    """

    filename: str
    same: bool
    checksum: str | None
    project_id: int | None
    project_name: str | None

    @property
    def visible(self) -> bool:
        return self.project_id is not None


def privileged_role(connection: sa.Connection) -> str:
    """The role that owns the privileged functions of this database: no login, nobody acts as it."""
    name = connection.execute(sa.text("SELECT current_database()")).scalar()
    return f"awe_{name}_privileged"[:63]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def install(connection: sa.Connection) -> None:
    """Create (or replace) the privileged functions; PostgreSQL only, idempotent.

    The functions are owned by a ``NOLOGIN`` role of their own
    (:func:`privileged_role`) that may read ``objects``, ``raw_frames``, the
    projects and memberships, and change only ``objects.project_id``, with
    policies of its own, so row-level security forced on the table owner does
    not bind them (nobody logs in as that role: it acts only inside these
    functions). Run by the schema owner with ``CREATEROLE``, or a superuser
    (the row-level security set-up calls it on every schema upgrade); without
    ``CREATEROLE`` the functions are owned by the caller (enough where row-level
    security is not forced on him). Everyone may execute them.
    """
    if connection.dialect.name != "postgresql":
        return
    owner = _own_role(connection)
    for name, body in FUNCTIONS.items():
        connection.execute(sa.text(body))
        signature = f"{name}({_SIGNATURES[name]})"
        if owner is not None:
            connection.execute(sa.text(f"ALTER FUNCTION {signature} OWNER TO {_q(owner)}"))
        connection.execute(sa.text(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC"))
        connection.execute(sa.text(f"GRANT EXECUTE ON FUNCTION {signature} TO PUBLIC"))
    log.debug("installed the privileged functions %s (owner %s)", sorted(FUNCTIONS), owner or "the caller")


def _own_role(connection: sa.Connection) -> str | None:
    """Make the privileged role with its grants and policies; None when the caller may not create roles."""
    role = privileged_role(connection)
    me = connection.execute(sa.text("SELECT current_user")).scalar()
    try:
        with connection.begin_nested():
            if connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None:
                connection.execute(sa.text(f"CREATE ROLE {_q(role)} NOLOGIN"))
            superuser = connection.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
            if not superuser.scalar():  # to give it the functions, the caller must be able to act as it
                connection.execute(sa.text(f"GRANT {_q(role)} TO {_q(str(me))}"))
    except sa.exc.DBAPIError as exc:
        log.warning("cannot create the role %s (%s): the privileged functions are owned by %s, so row-level "
                    "security forced on %s binds them", role, exc.orig, me, me)
        return None
    r = _q(role)
    for statement in (
        f"GRANT USAGE, CREATE ON SCHEMA public TO {r}",
        f"GRANT SELECT ON objects, raw_frames, projects, memberships TO {r}",
        f"GRANT SELECT (id, name) ON users TO {r}",
        f"GRANT UPDATE (project_id) ON objects TO {r}",
        "DROP POLICY IF EXISTS awe_privileged_read ON objects",
        f"CREATE POLICY awe_privileged_read ON objects FOR SELECT TO {r} USING (true)",
        "DROP POLICY IF EXISTS awe_privileged_publish ON objects",
        # only into a public project; that it is a raw frame the function checks (a policy on objects naming
        # raw_frames would recurse through raw_frames' own policy on objects)
        f"CREATE POLICY awe_privileged_publish ON objects FOR UPDATE TO {r} USING (true) "
        "WITH CHECK (project_id IN (SELECT id FROM projects WHERE kind = 'public'))",
        "DROP POLICY IF EXISTS awe_privileged_read ON raw_frames",
        f"CREATE POLICY awe_privileged_read ON raw_frames FOR SELECT TO {r} USING (true)",
    ):
        connection.execute(sa.text(statement))
    return role


def installed(connection: sa.Connection) -> bool:
    """Whether the privileged functions are in this (PostgreSQL) database."""
    if connection.dialect.name != "postgresql":
        return False
    found = connection.execute(sa.text("SELECT count(*) FROM pg_proc WHERE proname = ANY(:names)"),
                               {"names": list(FUNCTIONS)}).scalar()
    return int(found or 0) >= len(FUNCTIONS)


def _enterable(user_id: int) -> sa.Select:
    return sa.select(projects.c.id).where(
        (projects.c.kind == "public")
        | projects.c.id.in_(sa.select(memberships.c.project_id).where(memberships.c.user_id == user_id)))


def file_status(session: "Session", filenames: Sequence[str],
                checksums: Sequence[str | None] | None = None) -> dict[str, FileStatus]:
    """Which of ``filenames`` are taken in any project, naming only projects the caller may enter.

    Parameters
    ----------
    session : Session
        The caller.
    filenames : sequence of str
        The names to look up.
    checksums : sequence of str, optional
        The SHA-256 of the caller's copy of each (for :attr:`FileStatus.same`).

    Returns
    -------
    dict
        name -> :class:`FileStatus` for every taken name (free names are absent).
    """
    if not filenames:
        return {}
    given = dict(zip(filenames, checksums if checksums is not None else [None] * len(filenames)))
    with session.engine.connect() as conn:
        if installed(conn):
            rows = conn.execute(sa.text("SELECT * FROM awe_file_status(:names, :sums)"),
                                {"names": list(given), "sums": list(given.values())}).all()
            return {r.filename: FileStatus(r.filename, bool(r.same), r.checksum, r.project_id, r.project_name)
                    for r in rows}
        table = DBObject.__table__
        enterable = set(conn.execute(_enterable(session.user_id)).scalars())
        stmt = (sa.select(table.c.filename, table.c.checksum, table.c.project_id, projects.c.name)
                .join(projects, projects.c.id == table.c.project_id).where(table.c.filename.in_(list(filenames))))
        found = {}
        for r in conn.execute(stmt):
            seen = r.project_id in enterable
            found[r.filename] = FileStatus(r.filename, r.checksum == given[r.filename],
                                           r.checksum if seen else None, r.project_id if seen else None,
                                           r.name if seen else None)
        return found


def publish_raw(session: "Session", items: Iterable[tuple[str, str]], project_id: int) -> list[str]:
    """Move raw frames the caller cannot see into the public project ``project_id``.

    Only raw frames, only when their recorded SHA-256 is the one given (the
    caller holds the same raw data), only out of projects the caller may not
    enter, and only into a public project. Nothing else about them changes;
    nothing about their former project is returned.

    Parameters
    ----------
    session : Session
        The caller (he must be ingesting into ``project_id``).
    items : iterable of (filename, sha256)
        The raw chip files and the checksums of the caller's copies.
    project_id : int
        A public project.

    Returns
    -------
    list of str
        The file names whose frames were moved.
    """
    pairs = list(items)
    if not pairs:
        return []
    names, sums = [n for n, _ in pairs], [c for _, c in pairs]
    with session.engine.begin() as conn:
        if installed(conn):
            moved = list(conn.execute(sa.text("SELECT * FROM awe_publish_raw(:names, :sums, :target)"),
                                      {"names": names, "sums": sums, "target": project_id}).scalars())
        else:
            from awe.db.persistent import metadata
            table = DBObject.__table__
            raw_ids = sa.select(metadata.tables["raw_frames"].c.object_id)
            public = sa.select(projects.c.id).where(projects.c.kind == "public", projects.c.id == project_id)
            known = conn.execute(sa.select(users.c.id).where(users.c.id == session.user_id)).first()
            moved = []
            if known is not None and conn.execute(public).first() is not None:
                enterable = set(conn.execute(_enterable(session.user_id)).scalars())
                for name, checksum in pairs:
                    done = conn.execute(sa.update(table).where(
                        table.c.filename == name, table.c.checksum == checksum, table.c.object_id.in_(raw_ids),
                        table.c.project_id.not_in(enterable)).values(project_id=project_id)).rowcount
                    if done:
                        moved.append(name)
    if moved:
        log.info("published %d raw frame(s) held in a project %s cannot see into project %s: %s", len(moved),
                 session.user, session.project_name(project_id), moved)
    return moved


def referenced_files(session: "Session") -> set[str]:
    """Every file name any object of the database refers to (the storage vacuum keeps these)."""
    with session.engine.connect() as conn:
        if installed(conn):
            return set(conn.execute(sa.text("SELECT * FROM awe_referenced_files()")).scalars())
        table = DBObject.__table__
        return set(conn.execute(sa.select(table.c.filename).where(table.c.filename.is_not(None))).scalars())
