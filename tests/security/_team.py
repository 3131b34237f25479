"""A small team on a fresh database (SQLite and PostgreSQL): the administrator tester, alice and bob."""

from __future__ import annotations

from dataclasses import dataclass

from awe import context
from awe.db.commit import commit
from awe.db.persistent import Inputs
from awe.db.schema import DBObject
from awe.db.session import Session
from tests import _factory


class TeamProduct(DBObject):
    """A test product made of raw biases."""

    frames = Inputs("RawBiasFrame")


@dataclass
class Team:
    admin: Session
    alice: Session
    bob: Session
    raws: list
    alice_private: DBObject
    alice_public: DBObject

    def close(self) -> None:
        self.alice.dispose()
        self.bob.dispose()


def make_team(db) -> Team:
    """Raw biases in ALL (made by the administrator), alice's private product and one she published."""
    db.set_project("ALL")
    raws = _factory.biases(4)
    db.set_project(db.user.upper())
    db.add_user("alice", "pw-alice")
    db.add_user("bob", "pw-bob")
    database = db.session.database
    alice = Session.open(db.settings, user="alice", password="pw-alice", project=None, database=database)
    bob = Session.open(db.settings, user="bob", password="pw-bob", project=None, database=database)
    (private,) = commit([(TeamProduct(filename="alice-private.fits", frames=raws[:2]), None)], session=alice)
    (public,) = commit([(TeamProduct(filename="alice-public.fits", frames=raws[2:]), None)], session=alice)
    from awe.db.publish import migrate
    migrate(alice, public, "ALL")
    return Team(context.session, alice, bob, raws, private, public)


def forged(like: DBObject, session: Session, **values) -> DBObject:
    """A DBObject made by hand: the ids of someone else's object and whatever project the forger likes."""
    obj = type(like).__new__(type(like))
    obj.__dict__.update(object_id=like.object_id, filename=like.filename, creator=session.user, _session=session,
                        **values)
    return obj
