"""Contexts: who you are, which project you work in, what you may see and change.

Every user has a private project (the spec's MYDB, named after the user in
capitals, e.g. ``AWRSILVOTTI``); ``ALL`` is public; group projects (``KIDS``)
are visible to their members only. Working in project P you see P and the
public projects; new products go into P. ``context.migrate(obj, 'ALL')``
publishes an object with all it depends on; ``context.delete(obj)`` removes a
private object and its file when nothing else uses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa

from awe.config import Settings, load_settings
from awe.db.engine import DatabaseError, head_revision, make_engine, schema_revision, upgrade
from awe.db.schema import DBObject, links, memberships, projects, users

if TYPE_CHECKING:  # pragma: no cover
    from awe.storage import DataStorage

__all__ = ["context", "Context", "Project", "AuthenticationError", "PrivilegeError", "DependencyError",
           "hash_password"]

log = logging.getLogger(__name__)

PUBLIC = "ALL"


class AuthenticationError(PermissionError):
    """Unknown user or wrong password."""


class PrivilegeError(PermissionError):
    """The user may not see or change that project or object."""


class DependencyError(RuntimeError):
    """An object cannot be deleted: other objects were made from it."""


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


def _verify(hashed: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError
    try:
        return PasswordHasher().verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def private_project_name(user: str) -> str:
    return user.upper()


class Context:
    """The current connection, user and project. One instance: ``awe.context``."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._engine: sa.Engine | None = None
        self._storage: "DataStorage | None" = None
        self._user: tuple[int, str] | None = None
        self._project: Project | None = None
        self._visible: list[int] | None = None
        self._entities: dict[tuple[str, int], Any] = {}

    # ----------------------------------------------------------- connection
    def connect(self, settings: Settings | None = None, create_user: bool | None = None,
                **overrides: Any) -> "Context":
        """Open the database of ``settings`` (default: :func:`awe.config.load_settings`) and log in.

        An empty database gets its schema and the public project ``ALL``. An
        unknown user is created (with his private project) when ``create_user``
        is true; by default only on the embedded SQLite database.
        """
        settings = settings.with_(**overrides) if settings and overrides else (settings or load_settings(**overrides))
        self.close()
        engine = make_engine(settings.database_url)
        try:
            revision = schema_revision(engine)
        except sa.exc.OperationalError as exc:
            raise DatabaseError(
                f"cannot reach database {engine.url.render_as_string(hide_password=True)}: {exc.orig}; "
                "check AWE_DATABASE_URL and that the server is running"
            ) from None
        if revision != head_revision():
            if revision is None or settings.is_embedded:
                upgrade(engine)
            else:
                raise DatabaseError(
                    f"database schema is at revision {revision}, this awe needs {head_revision()}: "
                    "run `awe db upgrade`"
                )
        self._settings, self._engine = settings, engine
        self._ensure_public()
        self.login(settings.user, settings.password,
                   create=settings.is_embedded if create_user is None else create_user)
        if settings.project:
            self.set_project(settings.project)
        return self

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self.__init__()

    @property
    def settings(self) -> Settings:
        self._require()
        assert self._settings is not None
        return self._settings

    @property
    def engine(self) -> sa.Engine:
        self._require()
        assert self._engine is not None
        return self._engine

    @property
    def storage(self) -> "DataStorage":
        if self._storage is None:
            from awe.storage import get_storage
            self._storage = get_storage(self.settings.storage, cache_dir=self.settings.cache)
        return self._storage

    @property
    def connected(self) -> bool:
        return self._engine is not None

    def _require(self) -> None:
        if self._engine is None:
            self.connect()

    # ----------------------------------------------------------- users
    def _ensure_public(self) -> None:
        with self.engine.begin() as conn:
            if conn.execute(sa.select(projects.c.id).where(projects.c.name == PUBLIC)).first() is None:
                conn.execute(projects.insert().values(name=PUBLIC, kind="public",
                                                      description="published products, visible to everyone"))

    def add_user(self, name: str, password: str | None = None) -> int:
        """Create a user with a private project; returns the user id."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"user name {name!r} must be letters, digits, '-' or '_'")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is not None:
                raise ValueError(f"user {name!r} exists already")
            uid = conn.execute(users.insert().values(
                name=name, password_hash=hash_password(password) if password else None)).inserted_primary_key[0]
            pname = private_project_name(name)
            if conn.execute(sa.select(projects.c.id).where(projects.c.name == pname)).first() is not None:
                raise ValueError(f"a project named {pname!r} exists already; choose another user name")
            pid = conn.execute(projects.insert().values(name=pname, kind="private", owner_id=uid,
                                                        description=f"private project of {name}")
                               ).inserted_primary_key[0]
            conn.execute(memberships.insert().values(project_id=pid, user_id=uid))
        log.info("user %s created with private project %s", name, pname)
        return uid

    def set_password(self, name: str, password: str | None) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(users.update().where(users.c.name == name).values(
                password_hash=hash_password(password) if password else None)).rowcount
        if not done:
            raise LookupError(f"unknown user {name!r}")

    def add_project(self, name: str, description: str | None = None, members: Iterable[str] = (),
                    public: bool = False) -> int:
        """Create a group (or, with ``public=True``, a public) project with members."""
        with self.engine.begin() as conn:
            if conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first() is not None:
                raise ValueError(f"project {name!r} exists already")
            pid = conn.execute(projects.insert().values(name=name, kind="public" if public else "group",
                                                        description=description)).inserted_primary_key[0]
        for member in members:
            self.add_member(name, member)
        return pid

    def add_member(self, project: str, user: str) -> None:
        """Make ``user`` a member of group project ``project``."""
        p = self.find_project(project)
        with self.engine.begin() as conn:
            uid = conn.execute(sa.select(users.c.id).where(users.c.name == user)).scalar()
            if uid is None:
                raise LookupError(f"unknown user {user!r}: create it with `awe user add {user}`")
            exists = conn.execute(sa.select(memberships).where(memberships.c.project_id == p.id,
                                                               memberships.c.user_id == uid)).first()
            if exists is None:
                conn.execute(memberships.insert().values(project_id=p.id, user_id=uid))

    def login(self, name: str, password: str | None = None, create: bool = False) -> None:
        """Become user ``name`` (checking the password) in his private project."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
        if row is None:
            if not create:
                raise AuthenticationError(
                    f"unknown user {name!r} in database {self.engine.url.render_as_string(hide_password=True)}: "
                    f"ask an administrator to run `awe user add {name}`"
                )
            self.add_user(name, password)
            return self.login(name, password)
        if row["password_hash"] is not None and (password is None or not _verify(row["password_hash"], password)):
            raise AuthenticationError(
                f"wrong password for user {name!r}: set AWE_PASSWORD (or password in awe.toml) to the right one"
            )
        self._user = (row["id"], row["name"])
        self._set(self.find_project(private_project_name(name)))

    @property
    def user(self) -> str:
        self._require()
        assert self._user is not None
        return self._user[1]

    @property
    def user_id(self) -> int:
        self._require()
        assert self._user is not None
        return self._user[0]

    # ----------------------------------------------------------- projects
    def find_project(self, name: str) -> Project:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.name == name)).mappings().first()
        if row is None:
            raise LookupError(f"unknown project {name!r}; known projects: {self.list_projects()}")
        return Project(row["id"], row["name"], row["kind"], row["owner_id"], row["description"])

    def list_projects(self) -> list[str]:
        """Names of the projects this user may work in."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(projects)).mappings().all()
        return [r["name"] for r in rows if self._user is None or self._may_enter(Project(
            r["id"], r["name"], r["kind"], r["owner_id"]))]

    def project_name(self, project_id: int) -> str:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(projects.c.name).where(projects.c.id == project_id)).scalar()

    def _is_member(self, project: Project) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(memberships).where(memberships.c.project_id == project.id,
                                                             memberships.c.user_id == self.user_id)).first() \
                is not None

    def _may_enter(self, project: Project) -> bool:
        return project.kind == "public" or self._is_member(project)

    def may_write(self, project_id: int) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.id == project_id)).mappings().first()
        return row is not None and self._may_enter(Project(row["id"], row["name"], row["kind"], row["owner_id"]))

    def set_project(self, name: str) -> None:
        """Work in project ``name`` (``'ALL'``, your private project, or a group you belong to)."""
        project = self.find_project(name)
        if not self._may_enter(project):
            raise PrivilegeError(
                f"user {self.user} is not a member of project {name}: ask its manager to run "
                f"`awe project add-member {name} {self.user}`"
            )
        self._set(project)

    def _set(self, project: Project) -> None:
        self._project = project
        with self.engine.connect() as conn:
            public = conn.execute(sa.select(projects.c.id).where(projects.c.kind == "public")).scalars().all()
        self._visible = sorted(set(public) | {project.id})

    def get_current_project(self) -> Project:
        """The project new products go into."""
        self._require()
        assert self._project is not None
        return self._project

    @property
    def project(self) -> Project:
        return self.get_current_project()

    def visible_project_ids(self) -> list[int]:
        self._require()
        assert self._visible is not None
        return self._visible

    @staticmethod
    def applies_to(cls: type) -> bool:
        """Whether objects of ``cls`` belong to projects (products) or are shared (reference data)."""
        return "project_id" in cls.__table__.c

    def cached_entity(self, cls: type, object_id: int) -> Any:
        """Reference data (instruments, chips, filters) by id, cached per connection."""
        key = (cls.__tablename__, object_id)
        if key not in self._entities:
            table = cls.__table__
            with self.engine.connect() as conn:
                for row in conn.execute(sa.select(table)).mappings():
                    self._entities[(cls.__tablename__, row["object_id"])] = cls._from_row(row)
        try:
            return self._entities[key]
        except KeyError:
            raise LookupError(f"no {cls.__name__} with id {object_id}") from None

    def forget_entities(self) -> None:
        self._entities.clear()

    # ----------------------------------------------------------- publishing, deleting
    def migrate(self, obj: DBObject, project: str) -> list[DBObject]:
        """Move ``obj`` and everything it depends on into ``project`` (metadata only; files stay).

        Objects already visible from ``project`` (e.g. raw frames in ALL) stay
        where they are. Returns the objects moved.
        """
        target = self.find_project(project)
        if not self._may_enter(target):
            raise PrivilegeError(f"user {self.user} may not write to project {project}: not a member")
        candidates = [obj] + obj.dependencies()
        with self.engine.connect() as conn:
            public = set(conn.execute(sa.select(projects.c.id).where(projects.c.kind == "public")).scalars())
        moving = [o for o in candidates if o.project_id != target.id and o.project_id not in public]
        refused = [o for o in moving if not self.may_write(o.project_id)]
        if refused:
            raise PrivilegeError(f"user {self.user} may not move {refused} out of their projects")
        ids = [o.object_id for o in moving]
        if ids:
            with self.engine.begin() as conn:
                conn.execute(DBObject.__table__.update().where(DBObject.__table__.c.object_id.in_(ids))
                             .values(project_id=target.id))
        for o in moving:
            o.__dict__["project_id"] = target.id
        log.info("migrated %d object(s) to %s: %s", len(moving), project, [o.filename for o in moving])
        return moving

    def _children(self, object_ids: list[int]) -> list[tuple[int, int]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(links.c.parent_id, links.c.child_id).where(links.c.parent_id.in_(object_ids)))]

    def _check_deletable(self, obj: DBObject) -> None:
        if obj.object_id is None:
            raise ValueError(f"{obj!r} is not committed: nothing to delete")
        project = self.find_project(self.project_name(obj.project_id))
        allowed = (project.kind == "private" and project.owner_id == self.user_id) or \
                  (project.kind != "private" and obj.creator == self.user and self._may_enter(project))
        if not allowed:
            raise PrivilegeError(
                f"user {self.user} may not delete {obj.filename} (project {project.name}, made by {obj.creator})"
            )

    def delete(self, obj: DBObject) -> None:
        """Remove ``obj`` and its stored file; refused while other objects were made from it."""
        self._check_deletable(obj)
        children = [c for _, c in self._children([obj.object_id])]
        if children:
            visible = {o.object_id: o for o in DBObject.object_id.in_(children)}
            names = [visible[c].filename if c in visible else f"object {c} (not visible to you)" for c in children]
            raise DependencyError(
                f"cannot delete {obj.filename}: {len(children)} object(s) were made from it: {names}; "
                "delete those first"
            )
        self._delete_rows([obj])

    def _delete_rows(self, objs: list[DBObject]) -> None:
        table = DBObject.__table__
        ids = [o.object_id for o in objs]
        with self.engine.begin() as conn:
            conn.execute(links.delete().where(links.c.child_id.in_(ids)))
            conn.execute(table.delete().where(table.c.object_id.in_(ids)))
        for o in objs:
            if o.filename and o.checksum and self.storage.exists(o.filename):
                self.storage.delete(o.filename)
            o.__dict__["object_id"] = None
        log.info("deleted %d object(s): %s", len(objs), [o.filename for o in objs])

    def clean(self, project: str | None = None) -> list[DBObject]:
        """Empty a private project (MYDB): delete every object in it that nothing elsewhere uses.

        Returns the deleted objects; those still used by objects in other
        projects stay and are logged.
        """
        p = self.find_project(project) if project else self.find_project(private_project_name(self.user))
        if p.kind != "private" or p.owner_id != self.user_id:
            raise PrivilegeError(f"only the owner's private project can be cleaned, not {p.name}")
        table = DBObject.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.project_id == p.id)).mappings().all()
        remaining = {r["object_id"]: DBObject._from_row(r) for r in rows}
        deleted: list[DBObject] = []
        while remaining:
            used = {parent for parent, _ in self._children(list(remaining))}
            leaves = [o for i, o in remaining.items() if i not in used]
            if not leaves:
                break
            ids = {o.object_id for o in leaves}
            self._delete_rows(leaves)
            deleted += leaves
            remaining = {i: o for i, o in remaining.items() if i not in ids}
        if remaining:
            log.warning("kept %d object(s) used by objects in other projects: %s", len(remaining),
                        [o.filename for o in remaining.values()])
        return deleted

    def __repr__(self) -> str:
        if self._engine is None:
            return "<awe context: not connected>"
        return (f"<awe context: user {self.user}, project {self.project.name}, "
                f"database {self.engine.url.render_as_string(hide_password=True)}>")

    def banner(self) -> str:
        """The profile banner of the awe prompt."""
        return (f"Current profile:\n- username : {self.user}\n"
                f"- database : {self.engine.url.render_as_string(hide_password=True)}\n"
                f"- project  : {self.project.name}\n")


context = Context()
