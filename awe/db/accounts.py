"""Accounts: users, projects (contexts), memberships and passwords.

Every user has a private project (the spec's MYDB, named after the user in
capitals, e.g. ``AWRSILVOTTI``); ``ALL`` is public; group projects (``KIDS``)
are visible to their members only. The functions here take the
:class:`~awe.db.database.Database` they work on; who may call them is the
business of the caller (the CLI, the web server).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import sqlalchemy as sa

from awe.db.database import Database
from awe.db.schema import inserted_id, memberships, projects, users

__all__ = ["Project", "AuthenticationError", "PrivilegeError", "PUBLIC", "hash_password", "verify_password",
           "private_project_name", "ensure_public", "add_user", "set_password", "add_project", "add_member",
           "find_project", "project_names", "project_name", "is_member", "authenticate"]

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


def ensure_public(db: Database) -> None:
    """Create the public project ``ALL`` in a new database."""
    with db.engine.begin() as conn:
        if conn.execute(sa.select(projects.c.id).where(projects.c.name == PUBLIC)).first() is None:
            conn.execute(projects.insert().values(name=PUBLIC, kind="public",
                                                  description="published products, visible to everyone"))


def add_user(db: Database, name: str, password: str | None = None) -> int:
    """Create a user with a private project; returns the user id."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"user name {name!r} must be letters, digits, '-' or '_'")
    with db.engine.begin() as conn:
        if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is not None:
            raise ValueError(f"user {name!r} exists already")
        uid = inserted_id(conn.execute(users.insert().values(
            name=name, password_hash=hash_password(password) if password else None)))
        pname = private_project_name(name)
        if conn.execute(sa.select(projects.c.id).where(projects.c.name == pname)).first() is not None:
            raise ValueError(f"a project named {pname!r} exists already; choose another user name")
        pid = inserted_id(conn.execute(projects.insert().values(name=pname, kind="private", owner_id=uid,
                                                                description=f"private project of {name}")))
        conn.execute(memberships.insert().values(project_id=pid, user_id=uid))
    log.info("user %s created with private project %s", name, pname)
    return int(uid)


def set_password(db: Database, name: str, password: str | None) -> None:
    with db.engine.begin() as conn:
        done = conn.execute(users.update().where(users.c.name == name).values(
            password_hash=hash_password(password) if password else None)).rowcount
    if not done:
        raise LookupError(f"unknown user {name!r}")


def add_project(db: Database, name: str, description: str | None = None, members: Iterable[str] = (),
                public: bool = False) -> int:
    """Create a group (or, with ``public=True``, a public) project with members."""
    with db.engine.begin() as conn:
        if conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first() is not None:
            raise ValueError(f"project {name!r} exists already")
        pid = inserted_id(conn.execute(projects.insert().values(name=name, kind="public" if public else "group",
                                                                description=description)))
    for member in members:
        add_member(db, name, member)
    return int(pid)


def add_member(db: Database, project: str, user: str) -> None:
    """Make ``user`` a member of group project ``project``."""
    p = find_project(db, project)
    with db.engine.begin() as conn:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == user)).scalar()
        if uid is None:
            raise LookupError(f"unknown user {user!r}: create it with `awe user add {user}`")
        exists = conn.execute(sa.select(memberships).where(memberships.c.project_id == p.id,
                                                           memberships.c.user_id == uid)).first()
        if exists is None:
            conn.execute(memberships.insert().values(project_id=p.id, user_id=uid))


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


def may_enter(db: Database, project: Project, user_id: int) -> bool:
    """Whether ``user_id`` may see and write into ``project``."""
    return project.kind == "public" or is_member(db, project, user_id)


def authenticate(db: Database, name: str, password: str | None = None, create: bool = False) -> tuple[int, str]:
    """The (id, name) of user ``name`` after checking the password.

    An unknown user is created (with his private project) when ``create``.
    """
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
    if row is None:
        if not create:
            raise AuthenticationError(
                f"unknown user {name!r} in database {db.url}: ask an administrator to run `awe user add {name}`"
            )
        add_user(db, name, password)
        return authenticate(db, name, password)
    if row["password_hash"] is not None and (password is None or not verify_password(row["password_hash"],
                                                                                      password)):
        raise AuthenticationError(
            f"wrong password for user {name!r}: set AWE_PASSWORD (or password in awe.toml) to the right one"
        )
    return int(row["id"]), str(row["name"])
