"""Persistence: persistent classes, the query language, contexts, lineage and commits."""

from awe.db.context import (AuthenticationError, DependencyError, PrivilegeError, Project, context)
from awe.db.persistent import Persistent, PersistentError, ReadOnlyAttributeError
from awe.db.query import Query, QueryError

__all__ = ["context", "Project", "AuthenticationError", "PrivilegeError", "DependencyError", "Persistent",
           "PersistentError", "ReadOnlyAttributeError", "Query", "QueryError"]
