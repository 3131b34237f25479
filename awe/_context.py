"""``context``: the prompt's and scripts' default session, as the spec uses it.

::

    awe> context.set_project('ALL')
    awe> context.get_current_project().name
    awe> context.migrate(c, 'ALL')
    awe> context.exclude(raw, reason='satellite trail')   # left out of this project's selections
    awe> context.history(raw)                             # who changed is_valid/quality_flags, when

``context`` always speaks for the *current* session (see
:mod:`awe.db.session`): inside ``with other_session.activate():`` it is that
session; elsewhere it is the default session of this process, opened on first
use from the settings (``AWE_*``, ``awe.toml``). Only this namespace layer
(``from awe import *``, the prompt, the CLI) keeps a default session; the
database layer, the tasks, a web request or a DPU job take theirs explicitly.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

from awe.config import Settings
from awe.db import accounts, audit, publish
from awe.db.accounts import Project
from awe.db.schema import DBObject
from awe.db.session import Session, current_session, set_default_provider

__all__ = ["context", "Context"]


class Context:
    """The default session of the prompt, and a facade over whichever session is current."""

    def __init__(self) -> None:
        self._default: Session | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------- the default session
    def connect(self, settings: Settings | None = None, create_user: bool | None = None,
                **overrides: Any) -> "Context":
        """Log in (default: from :func:`awe.config.load_settings`) and make it the default session."""
        session = Session.open(settings, create_user=create_user, **overrides)
        with self._lock:
            old, self._default = self._default, session
        if old is not None:
            old.dispose()
        return self

    def close(self) -> None:
        """Forget the default session (and close its database)."""
        with self._lock:
            old, self._default = self._default, None
        if old is not None:
            old.dispose()

    @property
    def connected(self) -> bool:
        return self._default is not None

    def _provide(self) -> Session:
        with self._lock:
            default = self._default
        if default is None:
            self.connect()
            default = self._default
        assert default is not None
        return default

    @property
    def session(self) -> Session:
        """The current session (the default one unless another is active)."""
        return current_session()

    def login(self, name: str, password: str | None = None, create: bool = False) -> None:
        """Become user ``name`` (checking the password) in his private project."""
        self.session.login(name, password, create)

    # ----------------------------------------------------------- the current session's view
    settings = property(lambda self: self.session.settings)
    engine = property(lambda self: self.session.engine)
    storage = property(lambda self: self.session.storage)
    user = property(lambda self: self.session.user)
    user_id = property(lambda self: self.session.user_id)
    project = property(lambda self: self.session.project)

    def get_current_project(self) -> Project:
        """The project new products go into."""
        return self.session.project

    def set_project(self, name: str) -> None:
        """Work in project ``name`` (``'ALL'``, your private project, or a group you belong to)."""
        self.session.set_project(name)

    def visible_project_ids(self) -> list[int]:
        return self.session.visible_project_ids()

    def list_projects(self) -> list[str]:
        """Names of the projects this user may work in."""
        return self.session.list_projects()

    def may_write(self, project_id: int) -> bool:
        return self.session.may_write(project_id)

    def project_name(self, project_id: int) -> str | None:
        return self.session.project_name(project_id)

    def banner(self) -> str:
        return self.session.banner()

    # ----------------------------------------------------------- accounts
    @property
    def is_admin(self) -> bool:
        """Whether the current user is an administrator."""
        return self.session.is_admin

    def add_user(self, name: str, password: str | None = None, admin: bool = False) -> int:
        """Create a user with a private project (administrators only); returns the user id."""
        return accounts.add_user(self.session, name, password, admin=admin)

    def set_password(self, name: str, password: str, old_password: str | None = None) -> None:
        """Change your own password (give the old one) or, as an administrator, anyone's."""
        accounts.set_password(self.session, name, password, old_password)

    def add_project(self, name: str, description: str | None = None, members: Iterable[str] = (),
                    public: bool = False, managers: Iterable[str] = ()) -> int:
        """Create a group (or, with ``public=True``, a public) project (administrators only)."""
        return accounts.add_project(self.session, name, description, members, public, managers)

    def add_member(self, project: str, user: str, manager: bool = False) -> None:
        """Make ``user`` a member (or manager) of group project ``project`` (its managers or an administrator)."""
        accounts.add_member(self.session, project, user, manager=manager)

    def find_project(self, name: str) -> Project:
        return accounts.find_project(self.session.database, name)

    # ----------------------------------------------------------- audit trail and exclusion lists
    def history(self, obj: DBObject | int | None = None, project: str | None = None) -> list[audit.Change]:
        """The audit trail you may see (who changed which mutable attribute, when, old and new), oldest first."""
        return audit.history(self.session, obj, project)

    def exclude(self, obj: DBObject, reason: str) -> None:
        """Leave ``obj`` out of the task selections in the current project, without changing it."""
        audit.exclude(self.session, obj, reason)

    def include(self, obj: DBObject) -> bool:
        """Take ``obj`` off the current project's exclusion list."""
        return audit.include(self.session, obj)

    def exclusions(self) -> dict[int, audit.Exclusion]:
        """The current project's exclusion list (object id -> who, why, when)."""
        return audit.excluded(self.session)

    # ----------------------------------------------------------- publishing
    def migrate(self, obj: DBObject, project: str) -> list[DBObject]:
        """Move ``obj`` and everything it depends on into ``project`` (spec section 9)."""
        return publish.migrate(self.session, obj, project)

    def delete(self, obj: DBObject) -> None:
        """Remove ``obj`` and its stored file; refused while other objects were made from it."""
        publish.delete(self.session, obj)

    def clean(self, project: str | None = None) -> list[DBObject]:
        """Empty your private project (MYDB) of everything nothing elsewhere uses."""
        return publish.clean(self.session, project)

    # ----------------------------------------------------------- reference data cache
    def cached_entity(self, cls: type, object_id: int) -> Any:
        return self.session.database.cached_entity(cls, object_id)

    def forget_entities(self) -> None:
        self.session.database.forget_entities()

    @staticmethod
    def applies_to(cls: type) -> bool:
        """Whether objects of ``cls`` belong to projects (products) or are shared (reference data)."""
        return "project_id" in cls.__table__.c  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        if self._default is None:
            return "<awe context: not connected>"
        s = self.session
        return f"<awe context: user {s.user}, project {s.project.name}, database {s.database.url}>"


context = Context()
set_default_provider(context._provide)
