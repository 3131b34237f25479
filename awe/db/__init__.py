"""Persistence: persistent classes, the query language, sessions, accounts, lineage, commits, publishing."""

from awe.db.accounts import AuthenticationError, PrivilegeError, Project
from awe.db.persistent import Persistent, PersistentError, ReadOnlyAttributeError
from awe.db.publish import DependencyError
from awe.db.query import Query, QueryError
from awe.db.session import NoSessionError, Session, current_session

__all__ = ["Session", "current_session", "NoSessionError", "Project", "AuthenticationError", "PrivilegeError",
           "DependencyError", "Persistent", "PersistentError", "ReadOnlyAttributeError", "Query", "QueryError"]
