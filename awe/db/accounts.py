"""Accounts: users, projects (contexts), memberships, passwords, and who may change them.

Every user has a private project (the spec's MYDB, named after the user in
capitals, e.g. ``AWRSILVOTTI``); ``ALL`` is public; group projects (``KIDS``)
are visible to their members only.

Who may do what:

* an **administrator** creates users and projects and manages ``ALL``. The first
  user of a new database is its administrator: on PostgreSQL the role that
  created the schema (the database owner, at ``awe db upgrade`` or first use),
  on the embedded database the first user to log in (by default the OS login);
* a project's **managers** (a membership role) add members and may change the
  mutable attributes of anyone's products in it; members see and write it;
* a user changes only his own password and must give the old one; an
  administrator may reset anyone's.

On PostgreSQL each awe user is a database role of the same name whose password
*is* the awe password (PostgreSQL keeps its hash, unreadable by other roles),
and the rights are also enforced by row-level security (:mod:`awe.db.rls`).
On the embedded database the argon2 hash is in ``users.password_hash``; only
its first user (the administrator) may be passwordless.

The functions that change accounts take the acting :class:`~awe.db.session.Session`
and refuse with :class:`PrivilegeError` (naming who may do it) what it may not do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import sqlalchemy as sa

from awe.db.database import Database
from awe.db.schema import inserted_id, memberships, projects, users

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.session import Session

__all__ = ["Project", "AuthenticationError", "PrivilegeError", "PUBLIC", "hash_password", "verify_password",
           "private_project_name", "ensure_public", "bootstrap_admin", "add_user", "set_password", "add_project",
           "add_member", "find_project", "project_names", "project_name", "is_member", "is_manager", "is_admin",
           "administrators", "authenticate", "check_name"]

log = logging.getLogger(__name__)

PUBLIC = "ALL"


class AuthenticationError(PermissionError):
    """Unknown user or wrong password."""


class PrivilegeError(PermissionError):
    """The user may not see or change that project or object."""


@dataclass(frozen=True)
class Project:
    """A project (context): ``name``, ``kind`` (private, group, public), ``id``."""

    id: int
    name: str
    kind: str
    owner_id: int | None
    description: str | None = None


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher
    return PasswordHasher().hash(password)


def verify_password(hashed: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError
    try:
        return PasswordHasher().verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def private_project_name(user: str) -> str:
    return user.upper()


def check_name(name: str, what: str = "user") -> None:
    """Refuse names that are not letters, digits, '-' or '_' (they become role and project names)."""
    if not name or len(name) > 63 or not name.replace("_", "").replace("-", "").isalnum() or not name.isascii():
        raise ValueError(f"{what} name {name!r} must be 1 to 63 ASCII letters, digits, '-' or '_'")


def _is_postgres(db: Database) -> bool:
    return not db.is_sqlite


def ensure_public(db: Database) -> None:
    """Create the public project ``ALL`` in a new database (and, on PostgreSQL, its administrator)."""
    with db.engine.begin() as conn:
        if conn.execute(sa.select(projects.c.id).where(projects.c.name == PUBLIC)).first() is None:
            conn.execute(projects.insert().values(name=PUBLIC, kind="public",
                                                  description="published products, visible to everyone"))
    if _is_postgres(db):
        with db.engine.connect() as conn:
            role = conn.execute(sa.text("SELECT current_user")).scalar()
        bootstrap_admin(db, str(role))


def bootstrap_admin(db: Database, name: str, password: str | None = None) -> bool:
    """Make ``name`` the administrator of a database that has no user yet; False when it has users.

    On PostgreSQL ``name`` is the role that created the schema (its password is the
    role's); on the embedded database the first user may have no password (the
    banner then says so).
    """
    from awe.db.engine import write_transaction
    check_name(name)
    with db.engine.connect() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(users)).scalar():
            return False
    try:
        with write_transaction(db.engine) as conn:  # several first sessions at once: one makes the administrator
            if conn.execute(sa.select(sa.func.count()).select_from(users)).scalar():
                return False
            _insert_user(conn, db, name, password if db.is_sqlite else None, admin=True)
    except sa.exc.IntegrityError:  # PostgreSQL: another session inserted the same user meanwhile
        return False
    log.info("user %s created as the administrator of %s", name, db.url)
    return True


def _insert_user(conn: sa.Connection, db: Database, name: str, password: str | None, admin: bool) -> int:
    if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is not None:
        raise ValueError(f"user {name!r} exists already")
    pname = private_project_name(name)
    if conn.execute(sa.select(projects.c.id).where(projects.c.name == pname)).first() is not None:
        raise ValueError(f"a project named {pname!r} exists already; choose another user name")
    uid = inserted_id(conn.execute(users.insert().values(
        name=name, is_admin=admin, password_hash=hash_password(password) if password and db.is_sqlite else None)))
    pid = inserted_id(conn.execute(projects.insert().values(name=pname, kind="private", owner_id=uid,
                                                            description=f"private project of {name}")))
    conn.execute(memberships.insert().values(project_id=pid, user_id=uid, role="manager"))
    return uid


def administrators(db: Database) -> list[str]:
    """Names of the administrators (the people to ask)."""
    with db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(users.c.name).where(users.c.is_admin == sa.true())).scalars())


def _require_admin(actor: "Session", what: str) -> None:
    if not is_admin(actor.database, actor.user_id):
        raise PrivilegeError(f"user {actor.user} may not {what}: only an administrator "
                             f"({', '.join(administrators(actor.database)) or 'none yet'}) may")


def add_user(actor: "Session", name: str, password: str | None, *, admin: bool = False) -> int:
    """Create user ``name`` with a private project (administrators only); returns the user id.

    Every user but the embedded database's first one has a password. On
    PostgreSQL this creates (or, when it exists in the cluster, reuses) the
    login role ``name`` with that password and lets it use this database.
    """
    check_name(name)
    _require_admin(actor, f"create user {name}")
    if not password:
        raise ValueError(f"user {name} needs a password (--password); only the embedded database's first user "
                         "may have none")
    db = actor.database
    with actor.engine.begin() as conn:
        uid = _insert_user(conn, db, name, password, admin)
        if _is_postgres(db):
            from awe.db.rls import create_login_role
            create_login_role(conn, name, password, admin=admin)
    log.info("user %s created with private project %s by %s", name, private_project_name(name), actor.user)
    return int(uid)


def set_password(actor: "Session", name: str, password: str, old_password: str | None = None) -> None:
    """Change the password of ``name``: his own (giving the old one), or anyone's by an administrator."""
    if not password:
        raise ValueError("the new password may not be empty")
    db = actor.database
    with actor.engine.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.name).where(users.c.name == name)).first()
    if row is None:
        raise LookupError(f"unknown user {name!r}")
    if name == actor.user:
        if not _password_ok(actor, name, old_password):
            raise AuthenticationError(f"the old password of {name} is wrong: give your current password "
                                      "(--old-password)")
    else:
        _require_admin(actor, f"change the password of {name}")
    with actor.engine.begin() as conn:
        if _is_postgres(db):
            from awe.db.rls import set_role_password
            set_role_password(conn, name, password)
        else:
            conn.execute(users.update().where(users.c.name == name).values(password_hash=hash_password(password)))
    log.info("password of %s changed by %s", name, actor.user)


def _password_ok(actor: "Session", name: str, password: str | None) -> bool:
    db = actor.database
    if _is_postgres(db):
        if not password:
            return False
        url = db.engine.url.set(username=name, password=password)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect():
                return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()
    with db.engine.connect() as conn:
        hashed = conn.execute(sa.select(users.c.password_hash).where(users.c.name == name)).scalar()
    return hashed is None and not password or (hashed is not None and bool(password)
                                               and verify_password(hashed, password or ""))


def add_project(actor: "Session", name: str, description: str | None = None, members: Iterable[str] = (),
                public: bool = False, managers: Iterable[str] = ()) -> int:
    """Create a group (or, with ``public=True``, a public) project (administrators only)."""
    check_name(name, "project")
    _require_admin(actor, f"create project {name}")
    with actor.engine.begin() as conn:
        if conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first() is not None:
            raise ValueError(f"project {name!r} exists already")
        pid = inserted_id(conn.execute(projects.insert().values(name=name, kind="public" if public else "group",
                                                                description=description)))
    for manager in managers:
        add_member(actor, name, manager, manager=True)
    for member in members:
        add_member(actor, name, member)
    log.info("project %s created by %s", name, actor.user)
    return int(pid)


def add_member(actor: "Session", project: str, user: str, *, manager: bool = False) -> None:
    """Make ``user`` a member (or a manager) of group project ``project``: its managers or an administrator."""
    db = actor.database
    p = find_project(db, project)
    if p.kind == "private":
        raise PrivilegeError(f"{project} is the private project of one user: nobody else can join it")
    if not (is_admin(db, actor.user_id) or is_manager(db, p, actor.user_id)):
        raise PrivilegeError(f"user {actor.user} may not add members to {project}: only its managers "
                             f"({', '.join(managers_of(db, p)) or 'none'}) or an administrator may")
    with actor.engine.begin() as conn:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == user)).scalar()
        if uid is None:
            raise LookupError(f"unknown user {user!r}: an administrator creates it with `awe user add {user}`")
        role = "manager" if manager else "member"
        exists = conn.execute(sa.select(memberships.c.role).where(memberships.c.project_id == p.id,
                                                                  memberships.c.user_id == uid)).first()
        if exists is None:
            conn.execute(memberships.insert().values(project_id=p.id, user_id=uid, role=role))
        elif manager and exists.role != "manager":
            conn.execute(memberships.update().where(memberships.c.project_id == p.id,
                                                    memberships.c.user_id == uid).values(role=role))
    log.info("%s added %s to %s as %s", actor.user, user, project, "manager" if manager else "member")


def _project(row: sa.RowMapping) -> Project:
    return Project(row["id"], row["name"], row["kind"], row["owner_id"], row["description"])


def find_project(db: Database, name: str) -> Project:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(projects).where(projects.c.name == name)).mappings().first()
    if row is None:
        raise LookupError(f"unknown project {name!r}; known projects: {project_names(db)}")
    return _project(row)


def project_names(db: Database, user_id: int | None = None) -> list[str]:
    """Names of the projects ``user_id`` may work in (every project when None)."""
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(projects)).mappings().all()
    return [r["name"] for r in rows if user_id is None or may_enter(db, _project(r), user_id)]


def project_name(db: Database, project_id: int) -> str | None:
    with db.engine.connect() as conn:
        return conn.execute(sa.select(projects.c.name).where(projects.c.id == project_id)).scalar()


def is_member(db: Database, project: Project, user_id: int) -> bool:
    with db.engine.connect() as conn:
        return conn.execute(sa.select(memberships).where(memberships.c.project_id == project.id,
                                                         memberships.c.user_id == user_id)).first() is not None


def is_admin(db: Database, user_id: int) -> bool:
    with db.engine.connect() as conn:
        return bool(conn.execute(sa.select(users.c.is_admin).where(users.c.id == user_id)).scalar())


def is_manager(db: Database, project: Project, user_id: int) -> bool:
    """Whether ``user_id`` manages ``project`` (for a public project: whether he is an administrator)."""
    if project.kind == "public":
        return is_admin(db, user_id)
    with db.engine.connect() as conn:
        return conn.execute(sa.select(memberships.c.role).where(
            memberships.c.project_id == project.id, memberships.c.user_id == user_id)).scalar() == "manager"


def managers_of(db: Database, project: Project) -> list[str]:
    if project.kind == "public":
        return administrators(db)
    with db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(users.c.name).join(memberships, memberships.c.user_id == users.c.id)
                                   .where(memberships.c.project_id == project.id,
                                          memberships.c.role == "manager")).scalars())


def may_enter(db: Database, project: Project, user_id: int) -> bool:
    """Whether ``user_id`` may see and write into ``project``."""
    return project.kind == "public" or is_member(db, project, user_id)


def authenticate(db: Database, name: str, password: str | None = None) -> tuple[int, str]:
    """The (id, name) of user ``name`` after checking the password.

    On PostgreSQL the connection itself was the check (``db`` is connected as
    role ``name`` with its password); here the role must be an awe user. On
    the embedded database the argon2 hash is checked; a user without one (only
    the database's first user can be) logs in with no password.
    """
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.name, users.c.password_hash if db.is_sqlite else
                                     sa.null().label("password_hash")).where(users.c.name == name)).mappings().first()
    if row is None:
        raise AuthenticationError(
            f"unknown user {name!r} in database {db.url}: an administrator "
            f"({', '.join(administrators(db)) or 'the database owner'}) creates it with `awe user add {name}`"
        )
    if db.is_sqlite and row["password_hash"] is not None and (
            password is None or not verify_password(row["password_hash"], password)):
        raise AuthenticationError(
            f"wrong password for user {name!r}: set AWE_PASSWORD (or password in awe.toml) to the right one"
        )
    if db.is_sqlite and row["password_hash"] is None and not is_admin(db, int(row["id"])):
        raise AuthenticationError(
            f"user {name!r} has no password, so anyone could log in as him: an administrator "
            f"({', '.join(administrators(db))}) sets one with `awe user passwd {name}`"
        )
    return int(row["id"]), str(row["name"])
