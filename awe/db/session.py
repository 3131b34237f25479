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
from typing import TYPE_CHECKING, Any, Callable, Iterator

import sqlalchemy as sa

from awe.config import Settings, load_settings
from awe.db.accounts import (PrivilegeError, Project, authenticate, find_project, may_enter, private_project_name,
                             project_names)
from awe.db.database import Database

if TYPE_CHECKING:  # pragma: no cover
    from awe.storage import DataStorage

__all__ = ["Session", "NoSessionError", "current_session", "set_default_provider", "session_of"]

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

    Use :meth:`open` to log in. ``set_project`` changes the project new products go
    into and what is visible: that project and the public ones.
    """

    def __init__(self, database: Database, settings: Settings, user_id: int, user: str) -> None:
        self.database = database
        self.settings = settings
        self.user_id = user_id
        self.user = user
        self._storage: "DataStorage | None" = None
        self._project: Project | None = None
        self._visible: list[int] = []
        self._set(find_project(database, private_project_name(user)))

    @classmethod
    def open(cls, settings: Settings | None = None, *, create_user: bool | None = None,
             database: Database | None = None, **overrides: Any) -> "Session":
        """Log in with ``settings`` (default: :func:`awe.config.load_settings`).

        An empty database gets its schema and the public project ``ALL``; the
        embedded database is also upgraded in place. An unknown user is created
        (with his private project) when ``create_user`` is true; by default only
        on the embedded SQLite database. ``database`` shares an open database
        (a server's) instead of opening one.
        """
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.with_(**overrides)
        if database is None:
            database = Database(settings.database_url, auto_upgrade=settings.is_embedded)
        create = settings.is_embedded if create_user is None else create_user
        user_id, user = authenticate(database, settings.user, settings.password, create=create)
        session = cls(database, settings, user_id, user)
        if settings.project:
            session.set_project(settings.project)
        return session

    def login(self, name: str, password: str | None = None, create: bool = False) -> None:
        """Become user ``name`` (checking the password) in his private project, in place.

        Objects loaded through this session follow it: they now act for ``name``.
        """
        self.user_id, self.user = authenticate(self.database, name, password, create=create)
        self.settings = self.settings.with_(user=name, password=password, project=None)
        self._storage = None
        self._set(find_project(self.database, private_project_name(self.user)))

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

    def __repr__(self) -> str:
        return f"<awe Session: user {self.user}, project {self.project.name}, database {self.database.url}>"

    def banner(self) -> str:
        """The profile banner of the awe prompt."""
        return (f"Current profile:\n- username : {self.user}\n"
                f"- database : {self.database.url}\n"
                f"- project  : {self.project.name}\n")
