"""Sessions: who is asking, in which project, what they may see, and which data storage.

Every query, lineage walk, commit and task runs for one :class:`Session`. A
script or the prompt has one default session (``context`` in ``from awe
import *``); a web request or a DPU job opens its own and makes it current
for the code it runs::

    session = Session.open(settings)            # log in
    with session.activate():                    # this thread/task now acts for that user
        len(RawBiasFrame.chip.name == 'ccd50')

Which session is current is a :mod:`contextvars` variable, so two threads (or
two asyncio tasks) acting for two users never see each other's session.
Objects loaded through a session remember it (``obj._session``) and use it
for their lazy look-ups, ``update()`` and file access.

When no session is current, :func:`current_session` asks the default
provider, which the prompt/namespace layer installs (``awe/__init__``); the
database layer itself holds no global session.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import sqlalchemy as sa

from awe.config import Settings, load_settings
from awe.db.accounts import (AuthenticationError, PrivilegeError, Project, authenticate, bootstrap_admin, find_project,
                             is_admin, may_enter, private_project_name, project_names)
from awe.db.database import Database
from awe.db.engine import DatabaseError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from awe.storage import DataStorage

__all__ = ["Session", "NoSessionError", "current_session", "set_default_provider", "session_of", "connect_as",
           "acting_as", "login_url"]

log = logging.getLogger(__name__)

_current: contextvars.ContextVar["Session | None"] = contextvars.ContextVar("awe_session", default=None)
_default_provider: Callable[[], "Session"] | None = None


class NoSessionError(RuntimeError):
    """Database work was asked for with no session: log in first."""


def set_default_provider(provider: Callable[[], "Session"] | None) -> None:
    """Install the function that supplies a session when none is current (the prompt's default)."""
    global _default_provider
    _default_provider = provider


def current_session() -> "Session":
    """The session of this thread/task, else the default one (the prompt's)."""
    session = _current.get()
    if session is not None:
        return session
    if _default_provider is not None:
        return _default_provider()
    raise NoSessionError("no awe session is active: open one with Session.open(settings) and use "
                         "`with session.activate():`, or `from awe import *` for the prompt's default session")


def session_of(obj: Any) -> "Session":
    """The session an object was loaded or committed through, else the current one."""
    session = getattr(obj, "__dict__", {}).get("_session")
    return session if session is not None else current_session()


class Session:
    """One user's connection to the database and data storage, in one current project.

    Use :meth:`open` to log in (or :meth:`open_as` on a server's authenticator
    connection). ``set_project`` changes the project new products go into and
    what is visible: that project and the public ones.
    """

    def __init__(self, database: Database, settings: Settings, user_id: int, user: str, *,
                 project: Project | None = None, public_ids: Sequence[int] | None = None) -> None:
        """``project`` and ``public_ids``: the user's private project and the ids of the public ones, when the
        caller has read them already (a server, in one query per request); by default read here."""
        self.database = database
        self.settings = settings
        self.user_id = user_id
        self.user = user
        self._storage: "DataStorage | None" = None
        self._project: Project | None = None
        self._visible: list[int] = []
        #: user -> password this session has proven (``login(name)`` may switch back without it)
        self._proven: dict[str, str | None] = {user: settings.password}
        self._databases: dict[str, Database] = {user: database}
        #: the databases this session opened itself (closed by :meth:`dispose`)
        self._opened: list[Database] = []
        if project is not None and public_ids is not None:
            self._project = project
            self._visible = sorted(set(public_ids) | {project.id})
        else:
            self._set(find_project(database, private_project_name(user)))

    @classmethod
    def open(cls, settings: Settings | None = None, *, create_user: bool | None = None,
             database: Database | None = None, **overrides: Any) -> "Session":
        """Log in with ``settings`` (default: :func:`awe.config.load_settings`) as ``settings.user``.

        An empty database gets its schema and the public project ``ALL``; the
        embedded database is also upgraded in place. Unknown users are never
        created here (an administrator runs ``awe user add``), with one
        exception: the first user of a new embedded database becomes its
        administrator (``create_user`` is accepted for old callers and ignored).

        On PostgreSQL awe logs in as the database role ``settings.user`` with
        ``settings.password`` (a user or password in the URL is replaced), so
        row-level security applies to everything the session does. ``database``
        shares an open database (a server's) when it is connected as that user;
        otherwise the session opens its own.
        """
        del create_user
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.with_(**overrides)
        opened = database is None
        if settings.is_embedded:
            if database is None:
                database = Database(settings.database_url, auto_upgrade=True)
            bootstrap_admin(database, settings.user, settings.password)
        elif database is None or _login_role(database) != settings.user:
            database = connect_as(settings.database_url, settings.user, settings.password)
            opened = True
        user_id, user = authenticate(database, settings.user, settings.password)
        session = cls(database, settings, user_id, user)
        if opened:
            session._opened.append(database)
        if settings.project:
            session.set_project(settings.project)
        return session

    @classmethod
    def open_as(cls, database: Database, user: str, settings: Settings | None = None) -> "Session":
        """A session acting for ``user`` on a server's connection (the web server, a DPU worker).

        On PostgreSQL ``database`` is connected as an authenticator role (made
        with ``awe db authenticator``): every transaction of the session starts
        with ``SET LOCAL ROLE user``, which ends with the transaction, so
        row-level security holds for that user and nothing is left on a pooled
        connection. The caller has authenticated ``user`` (the web login, the
        job's owner); no password is checked here. On the embedded database
        there are no roles: the session simply acts for ``user``.
        """
        settings = settings or load_settings(user=user, database_url=database.url)
        settings = settings.with_(user=user, password=None)
        user_id, name = _user_id(database, user)  # the names of the users are readable by the authenticator
        acting = database if database.is_sqlite else acting_as(database, name)
        return cls(acting, settings, user_id, name)

    def login(self, name: str, password: str | None = None, create: bool = False) -> None:
        """Become user ``name`` (checking the password) in his private project, in place.

        A user this session has logged in as before needs no password again.
        Objects loaded through this session follow it: they now act for ``name``.
        """
        del create
        if password is None and name in self._proven:
            password = self._proven[name]
        if self.database.is_sqlite:
            database = self.database
        elif name in self._databases and self._proven.get(name) == password:
            database = self._databases[name]
        else:
            database = connect_as(self.settings.database_url, name, password)
            self._databases[name] = database
            self._opened.append(database)
        self.user_id, self.user = authenticate(database, name, password)
        self._proven[name] = password
        self.database = database
        self.settings = self.settings.with_(user=name, password=password, project=None)
        self._storage = None
        self._set(find_project(self.database, private_project_name(self.user)))

    @property
    def is_admin(self) -> bool:
        """Whether this user is an administrator (creates users and projects, manages ALL)."""
        return is_admin(self.database, self.user_id)

    # ----------------------------------------------------------- what a session is
    @property
    def engine(self) -> sa.Engine:
        return self.database.engine

    @property
    def storage(self) -> "DataStorage":
        if self._storage is None:
            from awe.storage import get_storage
            self._storage = get_storage(self.settings.storage, cache_dir=self.settings.cache)
        return self._storage

    @property
    def project(self) -> Project:
        """The project new products go into."""
        assert self._project is not None
        return self._project

    def get_current_project(self) -> Project:
        """The project new products go into (the spec's name)."""
        return self.project

    def visible_project_ids(self) -> list[int]:
        """Ids of the projects whose objects this session sees: the current one and the public ones."""
        return self._visible

    def set_project(self, name: str) -> None:
        """Work in project ``name`` (``'ALL'``, your private project, or a group you belong to)."""
        project = find_project(self.database, name)
        if not may_enter(self.database, project, self.user_id):
            raise PrivilegeError(
                f"user {self.user} is not a member of project {name}: ask its manager to run "
                f"`awe project add-member {name} {self.user}`"
            )
        self._set(project)

    def _set(self, project: Project) -> None:
        self._project = project
        self._visible = sorted(set(self.database.public_project_ids()) | {project.id})

    def list_projects(self) -> list[str]:
        """Names of the projects this user may work in."""
        return project_names(self.database, self.user_id)

    def may_write(self, project_id: int) -> bool:
        """Whether this user may put objects into (or change objects of) project ``project_id``."""
        from awe.db.schema import projects
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.id == project_id)).mappings().first()
        return row is not None and may_enter(self.database, Project(row["id"], row["name"], row["kind"],
                                                                    row["owner_id"]), self.user_id)

    def project_name(self, project_id: int) -> str | None:
        from awe.db.accounts import project_name
        return project_name(self.database, project_id)

    # ----------------------------------------------------------- files (only those of visible objects: awe.db.files)
    def retrieve(self, filename: str, dest_dir: "str | Path | None" = None) -> "Path":
        """Copy the file of an object this session sees into ``dest_dir`` (default: the working folder)."""
        from awe.db.files import retrieve
        return retrieve(self, filename, dest_dir)

    def open_file(self, filename: str) -> "Path":
        """A local, verified path to read the file of an object this session sees."""
        from awe.db.files import open_file
        return open_file(self, filename)

    def list_files(self) -> list[str]:
        """The file names of the objects this session sees."""
        from awe.db.files import list_files
        return list_files(self)

    # ----------------------------------------------------------- making it current
    @contextlib.contextmanager
    def activate(self) -> Iterator["Session"]:
        """Make this the current session of the running thread/task inside the ``with`` block."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def close(self) -> None:
        """Forget the storage handle (the database stays open for other sessions sharing it)."""
        self._storage = None

    def dispose(self) -> None:
        """Close the session and the database connections it opened itself (not a shared database's)."""
        self.close()
        opened, self._opened = self._opened, []
        for database in opened:
            database.dispose()

    def __repr__(self) -> str:
        return f"<awe Session: user {self.user}, project {self.project.name}, database {self.database.url}>"

    def banner(self) -> str:
        """The profile banner of the awe prompt."""
        text = (f"Current profile:\n- username : {self.user}\n"
                f"- database : {self.database.url}\n"
                f"- project  : {self.project.name}\n")
        if self.database.is_sqlite and self._passwordless():
            text += ("- security : embedded single-user database, no password: anyone who can read its file "
                     "can read and change everything in it\n")
        return text

    def _passwordless(self) -> bool:
        from awe.db.schema import users
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users.c.password_hash).where(users.c.id == self.user_id)).scalar() is None


def _login_role(database: Database) -> str | None:
    return getattr(database, "_awe_role", None) or database.engine.url.username


def login_url(settings: Settings) -> str:
    """The URL awe connects with: on PostgreSQL as role ``settings.user`` with ``settings.password``."""
    if settings.is_embedded:
        return settings.database_url
    return _as_role(settings.database_url, settings.user, settings.password).render_as_string(hide_password=False)


def _as_role(url: str, user: str, password: str | None) -> sa.URL:
    login = sa.engine.make_url(url if not url.startswith("postgresql://") else
                               "postgresql+psycopg://" + url[len("postgresql://"):])
    return login.set(username=user, password=password)


def connect_as(url: str, user: str, password: str | None) -> Database:
    """The PostgreSQL database of ``url`` connected as role ``user`` with ``password``."""
    login = _as_role(url, user, password)
    try:
        return Database(login.render_as_string(hide_password=False))
    except DatabaseError as exc:
        text = str(exc)
        if "password authentication failed" in text or "no password supplied" in text:
            raise AuthenticationError(  # PostgreSQL does not say which: an unknown role fails the same way
                f"wrong password for user {user!r} (or no such user) on {login.render_as_string(hide_password=True)}"
                f": set AWE_PASSWORD (or password in awe.toml) to the right one; an administrator creates users "
                f"with `awe user add {user}`"
            ) from None
        if "does not exist" in text and "role" in text:
            raise AuthenticationError(
                f"unknown user {user!r} on {login.render_as_string(hide_password=True)}: an administrator "
                f"creates it with `awe user add {user}`"
            ) from None
        raise


def acting_as(database: Database, role: str) -> Database:
    """A view of ``database`` (same pool, same entity cache) whose transactions run as ``role``.

    Every transaction begins with ``SET LOCAL ROLE role``: the role ends with the
    transaction, so a pooled connection goes back to the pool as the
    authenticator, whatever happens.
    """
    import copy

    from awe.db.rls import quote
    view = copy.copy(database)
    engine = database.engine.execution_options()
    statement = f"SET LOCAL ROLE {quote(role)}"

    @sa.event.listens_for(engine, "begin")
    def _set_role(conn: sa.Connection) -> None:
        conn.exec_driver_sql(statement)

    view.engine = engine
    view._awe_role = role  # type: ignore[attr-defined]
    view.dispose = lambda: None  # type: ignore[method-assign]  # the pool belongs to the server's database
    return view


def _user_id(database: Database, name: str) -> tuple[int, str]:
    from awe.db.schema import users
    with database.engine.connect() as conn:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()
    if uid is None:
        raise AuthenticationError(f"unknown user {name!r} in database {database.url}: an administrator creates it "
                                  f"with `awe user add {name}`")
    return int(uid), name
