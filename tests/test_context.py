"""Contexts, privileges, lineage, migrate and delete (spec sections 2 and 9), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from awe.db.commit import commit
from awe import context
from awe.db.accounts import AuthenticationError, PrivilegeError
from awe.db.publish import DependencyError
from awe.db.persistent import Input, Inputs, ReadOnlyAttributeError
from awe.db.schema import DBObject
from awe.model import RawBiasFrame
from tests import _factory


class Stack(DBObject):
    """A test product made of raw biases (declares only lineage roles: no new columns)."""

    frames = Inputs("RawBiasFrame")


class Derived(DBObject):
    """A product made of a Stack."""

    stack = Input("Stack")


def _stack(frames, name="stack-1.fits"):
    s = Stack(filename=name, frames=frames)
    commit([(s, None)])
    return s


@pytest.fixture
def published_raw(db):
    """Raw biases in ALL (as in the course), the user back in his private project."""
    db.set_project("ALL")
    raws = _factory.biases(4)
    db.set_project(db.user.upper())
    return raws


def test_projects_and_switching(db):
    assert db.get_current_project().name == "TESTER"
    db.set_project("ALL")
    assert db.get_current_project().name == "ALL"
    db.set_project("TESTER")
    assert db.get_current_project().name == "TESTER"
    with pytest.raises(LookupError, match="unknown project 'NOPE'"):
        db.set_project("NOPE")


def test_lineage_walks_back_and_forward(published_raw):
    s = _stack(published_raw)
    d = Derived(filename="derived-1.fits", stack=s)
    commit([(d, None)])
    loaded = (Derived.filename == "derived-1.fits")[0]
    assert loaded.stack == s
    assert [f.filename for f in loaded.stack.frames] == [r.filename for r in published_raw]
    deps = loaded.dependencies()
    assert {o.filename for o in deps} == {s.filename} | {r.filename for r in published_raw}
    assert {o.filename for o in loaded.dependencies(raw_only=True)} == {r.filename for r in published_raw}
    assert {o.filename for o in published_raw[0].derived()} == {s.filename, d.filename}
    assert loaded.inputs() == {"stack": [s]}
    # lineage is queryable: products made from a given raw file
    q = Stack.frames.filename == published_raw[2].filename
    assert [o.filename for o in q] == [s.filename]


def test_committed_objects_are_immutable_except_verdicts(published_raw):
    s = _stack(published_raw)
    with pytest.raises(ReadOnlyAttributeError):
        s.filename = "other.fits"
    with pytest.raises(ReadOnlyAttributeError):
        s.frames = []
    with pytest.raises(ReadOnlyAttributeError, match=r"obj.update\(is_valid=0\)"):
        s.is_valid = 0
    assert (Stack.filename == s.filename)[0].is_valid == 1
    s.update(is_valid=0)
    assert s.is_valid == 0
    assert (Stack.filename == s.filename)[0].is_valid == 0
    end = s.creation_date
    s.update(timestamp_end=end)
    assert (Stack.filename == s.filename)[0].timestamp_end == end
    with pytest.raises(AttributeError, match="cannot be updated; the mutable attributes are"):
        s.update(filename="x.fits")


def test_commit_is_all_or_nothing(published_raw):
    a = Stack(filename="a.fits", frames=published_raw)
    clash = Stack(filename=published_raw[0].filename, frames=published_raw)  # filename taken
    with pytest.raises(sa.exc.IntegrityError):
        commit([(a, None), (clash, None)])
    assert a.object_id is None and clash.object_id is None
    assert len(Stack.filename == "a.fits") == 0


def test_migrate_moves_dependencies_not_public_inputs(published_raw):
    s = _stack(published_raw)
    d = Derived(filename="derived-1.fits", stack=s)
    commit([(d, None)])
    moved = context.migrate(d, "ALL")
    assert {o.filename for o in moved} == {"derived-1.fits", "stack-1.fits"}
    context.set_project("ALL")
    assert [o.filename for o in Derived.filename != ""] == ["derived-1.fits"]
    assert len(Stack.filename != "") == 1
    assert all(r.project == "ALL" for r in RawBiasFrame.all())


def test_private_objects_invisible_to_others(published_raw, tmp_path):
    s = _stack(published_raw, "secret.fits")
    oid = s.object_id
    context.add_user("other", "pw-other")
    context.login("other", "pw-other")
    # not by query, not by id, not by filename, not through lineage
    assert len(Stack.filename != "") == 0
    assert len(Stack.filename == "secret.fits") == 0
    with pytest.raises(LookupError, match="not visible|no Stack"):
        Stack.get(oid)
    assert published_raw[0].derived() == []
    # the public raw data stays visible
    assert len(RawBiasFrame.all()) == 4
    with pytest.raises(PrivilegeError, match="not a member"):
        context.set_project("TESTER")


def test_group_projects_only_for_members(published_raw):
    context.add_user("outsider", "pw-outsider")
    context.add_project("KIDS", "KiDS survey", members=["tester"])
    context.set_project("KIDS")
    kids = _stack(published_raw, "kids.fits")
    assert kids.project == "KIDS"
    context.login("outsider", "pw-outsider")
    with pytest.raises(PrivilegeError, match="not a member of project KIDS"):
        context.set_project("KIDS")
    assert len(Stack.filename == "kids.fits") == 0
    with pytest.raises(LookupError):
        Stack.get(kids.object_id)
    context.login("tester")
    context.set_project("KIDS")
    assert len(Stack.filename == "kids.fits") == 1


def test_wrong_password_and_unknown_user(db):
    context.add_user("alice", "correct horse")
    with pytest.raises(AuthenticationError, match="wrong password for user 'alice'"):
        context.login("alice", "battery staple")
    with pytest.raises(AuthenticationError, match="wrong password"):
        context.login("alice", None)
    with pytest.raises(AuthenticationError, match="awe user add bob"):
        context.login("bob", None)
    context.login("alice", "correct horse")
    assert context.user == "alice" and context.project.name == "ALICE"


def test_delete_refused_while_used_then_allowed(published_raw):
    s = _stack(published_raw)
    d = Derived(filename="derived-1.fits", stack=s)
    commit([(d, None)])
    with pytest.raises(DependencyError, match="derived-1.fits"):
        context.delete(s)
    assert len(Stack.filename == s.filename) == 1
    context.delete(d)
    context.delete(s)
    assert len(Stack.filename != "") == 0 and len(Derived.filename != "") == 0
    # raw data in ALL made by someone else cannot be deleted by a normal user
    context.add_user("intruder", "pw-intruder")
    context.login("intruder", "pw-intruder")
    with pytest.raises(PrivilegeError):
        context.delete(published_raw[0])


def test_clean_mydb(published_raw):
    s = _stack(published_raw)
    commit([(Derived(filename="derived-1.fits", stack=s), None)])
    keep = _stack(published_raw, "published.fits")
    context.migrate(keep, "ALL")
    deleted = context.clean()
    assert {o.filename for o in deleted} == {"stack-1.fits", "derived-1.fits"}
    assert [o.filename for o in Stack.filename != ""] == ["published.fits"]
    assert len(RawBiasFrame.all()) == 4
