"""Explicit sessions: two users in one process, alternately and from two threads, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from awe.db.commit import commit
from awe.db.persistent import Inputs
from awe.db.query import Query
from awe.db.schema import DBObject
from awe.db.session import NoSessionError, Session, current_session
from awe.model import RawBiasFrame
from tests import _factory


class Secret(DBObject):
    """A private test product made of raw biases."""

    frames = Inputs("RawBiasFrame")


@pytest.fixture
def two_users(db):
    """Raw biases in ALL; sessions of alice and bob sharing one database, each with a private product."""
    db.set_project("ALL")
    raws = _factory.biases(2)
    db.set_project(db.user.upper())
    database = db.session.database
    db.add_user("alice", "pw-alice")
    db.add_user("bob", "pw-bob")
    alice = Session.open(db.settings, user="alice", password="pw-alice", project=None, database=database)
    bob = Session.open(db.settings, user="bob", password="pw-bob", project=None, database=database)
    commit([(Secret(filename="alice-secret.fits", frames=raws), None)], session=alice)
    commit([(Secret(filename="bob-secret.fits", frames=raws), None)], session=bob)
    yield alice, bob, raws
    alice.dispose()
    bob.dispose()


def _names(session: Session) -> set[str]:
    return {o.filename for o in Query(Secret, session=session)}


def test_sessions_used_alternately(two_users):
    alice, bob, raws = two_users
    for _ in range(3):
        assert _names(alice) == {"alice-secret.fits"}
        assert _names(bob) == {"bob-secret.fits"}
        with alice.activate():
            assert {o.filename for o in Secret.all()} == {"alice-secret.fits"}
            assert current_session() is alice
            # lineage walks forward from a shared raw frame see only the walker's products
            loaded = (RawBiasFrame.filename == raws[0].filename)[0]
            assert {o.filename for o in loaded.derived()} == {"alice-secret.fits"}
        with bob.activate():
            loaded = (RawBiasFrame.filename == raws[0].filename)[0]
            assert {o.filename for o in loaded.derived()} == {"bob-secret.fits"}
            with pytest.raises(LookupError):
                Secret.get((Secret.filename == "alice-secret.fits").using(alice)[0].object_id)
    # an object remembers the session it came through
    mine = Query(Secret, session=alice)[0]
    assert {o.filename for o in mine.dependencies()} == {r.filename for r in raws}


def test_sessions_in_two_threads(two_users):
    alice, bob, _ = two_users
    seen: dict[str, list[set[str]]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(name: str, session: Session) -> None:
        try:
            with session.activate():
                barrier.wait(timeout=30)
                for _ in range(20):
                    seen[name].append({o.filename for o in Secret.all()})
                    assert current_session() is session
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=("alice", alice)),
               threading.Thread(target=work, args=("bob", bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen["alice"] == [{"alice-secret.fits"}] * 20
    assert seen["bob"] == [{"bob-secret.fits"}] * 20


def test_no_session_is_a_clear_error(two_users):
    """Without the prompt's default provider, database work names what to do."""
    from awe.db import session as session_module
    saved = session_module._default_provider
    session_module.set_default_provider(None)
    try:
        with pytest.raises(NoSessionError, match="Session.open"):
            len(Secret.all())
        alice = two_users[0]
        assert len(Secret.all().using(alice)) == 1
    finally:
        session_module.set_default_provider(saved)


def test_a_forged_object_cannot_change_another_users_product(two_users):
    """update() checks rights in its own SQL statement, not from the Python object."""
    alice, bob, _ = two_users
    theirs = Query(Secret, session=alice)[0]
    theirs.__dict__["_session"] = bob  # bob got hold of alice's object
    with pytest.raises(PermissionError, match="may not change"):
        theirs.update(is_valid=0)
    assert Query(Secret, session=alice)[0].is_valid == 1


def test_objects_travel_without_their_session(two_users):
    """A pickled object (sent to a worker) leaves its session behind and acts for the one current there."""
    import pickle
    alice, bob, raws = two_users
    mine = Query(Secret, session=alice)[0]
    copy = pickle.loads(pickle.dumps(mine))
    assert "_session" not in copy.__dict__ and copy == mine
    with alice.activate():
        assert {o.filename for o in copy.dependencies()} == {r.filename for r in raws}
    with bob.activate():
        with pytest.raises(PermissionError, match="may not change"):
            copy.update(is_valid=0)


def test_open_as_acts_for_the_user_without_his_password(two_users, db):
    """The server path: on PostgreSQL through an authenticator role that may only SET ROLE to the users."""
    alice, bob, _ = two_users
    server = alice.database
    if not server.is_sqlite:
        from awe.db.database import Database
        from awe.db.rls import create_authenticator
        with db.engine.begin() as conn:
            create_authenticator(conn, "awe_server", "pw-server")
        url = db.engine.url.set(username="awe_server", password="pw-server")
        server = Database(url.render_as_string(hide_password=False))
    try:
        served = Session.open_as(server, "alice", alice.settings)
        assert _names(served) == {"alice-secret.fits"} and served.user == "alice"
        assert _names(Session.open_as(server, "bob", bob.settings)) == {"bob-secret.fits"}
        with pytest.raises(PermissionError, match="awe user add nobody"):
            Session.open_as(server, "nobody", alice.settings)
    finally:
        if server is not alice.database:
            server.dispose()
