"""The tables: users, projects and their members, every product (``objects``) and lineage links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from awe.db.persistent import (JSON, DateTime, Embedded, Field, Float, Integer, Persistent, String, metadata,
                               utcnow)

__all__ = ["users", "projects", "memberships", "links", "audit_trail", "exclusions", "login_failures", "DBObject",
           "CURRENT_PRODUCT_INDEX", "Entity", "ImStat", "imstat_field", "inserted_id"]

users = sa.Table(
    "users", metadata,
    sa.Column("id", Integer, primary_key=True, autoincrement=True),
    sa.Column("name", String(64), nullable=False, unique=True),
    sa.Column("password_hash", String(256), nullable=True),  # embedded database only (PostgreSQL: the role's)
    sa.Column("created", DateTime, nullable=False, default=utcnow),
    # administrators create users and projects and manage ALL
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sqlite_autoincrement=True,
)

projects = sa.Table(
    "projects", metadata,
    sa.Column("id", Integer, primary_key=True, autoincrement=True),
    sa.Column("name", String(64), nullable=False, unique=True),
    sa.Column("description", String(256), nullable=True),
    # private: one user's MYDB; group: its members; public: everyone reads and publishes
    sa.Column("kind", String(16), nullable=False),
    sa.Column("owner_id", Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created", DateTime, nullable=False, default=utcnow),
    sqlite_autoincrement=True,
)

def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the one row an ``INSERT ... VALUES`` made."""
    key = result.inserted_primary_key
    if key is None:  # SQLAlchemy has none only for statements that are not a single-row INSERT
        raise TypeError("inserted_id() takes the result of a single-row INSERT")
    return int(key[0])


memberships = sa.Table(
    "memberships", metadata,
    sa.Column("project_id", Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    # member: sees and writes the project; manager: also adds members and changes anyone's products in it
    sa.Column("role", String(16), nullable=False, default="member", server_default="member"),
)


class Entity(Persistent, abstract=True):
    """Reference data shared by every context (instruments, chips, filters)."""


class DBObject(Persistent, abstract=True):
    """Every product: a file in the data storage with its metadata, context and lineage."""

    __tablename__ = "objects"

    filename = Field(String(255), "unique file name in the data storage", unique=True, index=True)
    project_id = Field(Integer, "project (context) the object belongs to", index=True)
    creator = Field(String(64), "user who made the object")
    creation_date = Field(DateTime, "when the object was made (UTC)", index=True)
    quality_flags = Field(Integer, "system quality bitmask, 0 = fine", default=0, mutable=True)
    is_valid = Field(Integer, "user verdict: 0 = bad, 1 = fine (default), 2 = inspected and fine",
                     default=1, mutable=True)
    process_params = Field(JSON, "process parameters the object was made with")
    software_version = Field(String(32), "awe version that made the object")
    provenance = Field(String(40), "hash of (class, output-affecting parameters, input ids, code version)",
                       index=True)
    checksum = Field(String(64), "sha256 of the stored file")
    timestamp_start = Field(DateTime, "start of the validity range (calibrations), UTC", index=True, mutable=True)
    timestamp_end = Field(DateTime, "end of the validity range (calibrations), UTC", index=True, mutable=True)
    qc_report = Field(JSON, "the automatic quality checks run: a list of {check, value, limit, parameter, "
                            "relation, failed, flag} (None: none run)")
    superseded_by = Field(Integer, "object_id of the product that replaced this one (same class, provenance "
                                   "and project: made again with redo=1 or after this one was invalidated); "
                                   "None: the current product")

    def update(self, **changes: Any) -> None:
        """Change mutable attributes of a committed object in the database (one statement).

        ``obj.update(is_valid=0)``, ``obj.update(timestamp_end=datetime(...))``; only
        ``is_valid``, ``quality_flags``, ``timestamp_start`` and ``timestamp_end`` may change,
        only by the object's creator or its project's managers, and every change goes into the
        audit trail (:mod:`awe.db.audit`).
        """
        from awe.db.audit import update_attributes
        update_attributes(self, changes)

    @property
    def project(self) -> str | None:
        """Name of the project (context) holding the object."""
        from awe.db.session import session_of
        return session_of(self).project_name(self.project_id) if self.project_id is not None else None

    def dependencies(self, raw_only: bool = False) -> list["DBObject"]:
        """Every object this one was made from, walking back to the raw frames."""
        from awe.db.lineage import dependencies
        return dependencies(self, raw_only=raw_only)

    def derived(self) -> list["DBObject"]:
        """Every object made (directly or not) from this one."""
        from awe.db.lineage import derived
        return derived(self)

    def inputs(self) -> dict[str, list[Persistent]]:
        """The direct inputs by role."""
        return {name: role.values(self) for name, role in self._inputs.items()}


#: at most one current (not superseded) product per (class, provenance, project), enforced by the database
#: itself: two identical tasks committing at once cannot both succeed (:func:`awe.db.commit.commit`)
CURRENT_PRODUCT_INDEX = "uq_objects_current_provenance"
_current = DBObject.__table__.c.superseded_by.is_(None)
sa.Index(CURRENT_PRODUCT_INDEX, DBObject.__table__.c.class_name, DBObject.__table__.c.provenance,
         DBObject.__table__.c.project_id, unique=True, sqlite_where=_current, postgresql_where=_current)


@dataclass(frozen=True)
class ImStat:
    """Statistics of a frame's data area."""

    mean: float | None = None
    median: float | None = None
    stdev: float | None = None
    min: float | None = None
    max: float | None = None


def imstat_field() -> Embedded:
    return Embedded({k: (Float, f"{k} of the data area [ADU]") for k in ("mean", "median", "stdev", "min", "max")},
                    ImStat, "statistics of the data area")


links = sa.Table(
    "links", metadata,
    sa.Column("child_id", Integer, sa.ForeignKey("objects.object_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", String(64), primary_key=True),
    sa.Column("position", Integer, primary_key=True),
    sa.Column("parent_id", Integer, sa.ForeignKey("objects.object_id"), nullable=False, index=True),
)


audit_trail = sa.Table(
    "audit_trail", metadata,
    sa.Column("id", Integer, primary_key=True, autoincrement=True),
    sa.Column("at", DateTime, nullable=False, default=utcnow, comment="when (UTC)"),
    sa.Column("user_name", String(64), nullable=False, comment="who made the change"),
    # no foreign key: the history of an object stays when the object is deleted
    sa.Column("object_id", Integer, nullable=False, index=True, comment="the object changed"),
    sa.Column("project_id", Integer, nullable=False, index=True, comment="project of the object at the change"),
    sa.Column("filename", String(255), nullable=True, comment="file name of the object"),
    sa.Column("attribute", String(64), nullable=False,
              comment="is_valid, quality_flags, timestamp_start, timestamp_end, project (migrate) or deleted"),
    sa.Column("old_value", String(255), nullable=True, comment="the value before, as JSON"),
    sa.Column("new_value", String(255), nullable=True, comment="the value after, as JSON"),
)

#: the web server's failed logins, shared by all its worker processes (:class:`awe.web.auth.LoginLimiter`); read and
#: written by the server's own role only (on PostgreSQL the authenticators: no awe user sees or clears them)
login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("token", String(32), primary_key=True, comment="random id of the attempt"),
    sa.Column("user_name", String(64), nullable=False, comment="the user name tried (cut to 64 characters)"),
    sa.Column("address", String(64), nullable=False, comment="the client's address"),
    sa.Column("at", Float, nullable=False, comment="when (Unix time [s])"),
    sa.Index("ix_login_failures_user_name_address_at", "user_name", "address", "at"),
    sa.Index("ix_login_failures_at", "at"),
)

exclusions = sa.Table(
    "exclusions", metadata,
    sa.Column("project_id", Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True,
              comment="the project whose selections leave the object out"),
    sa.Column("object_id", Integer, sa.ForeignKey("objects.object_id", ondelete="CASCADE"), primary_key=True,
              comment="the object left out"),
    sa.Column("user_name", String(64), nullable=False, comment="who excluded it"),
    sa.Column("reason", String(255), nullable=False, comment="why"),
    sa.Column("created", DateTime, nullable=False, default=utcnow, comment="when (UTC)"),
)
