"""Who may administer: every refusal of the accounts layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from awe import context
from awe.db import accounts
from awe.db.accounts import AuthenticationError, PrivilegeError
from awe.db.session import Session


@pytest.fixture
def people(db):
    db.add_user("alice", "pw-alice")
    db.add_user("bob", "pw-bob")
    db.add_project("KIDS", "KiDS", managers=["alice"])
    database = db.session.database
    alice = Session.open(db.settings, user="alice", password="pw-alice", project=None, database=database)
    bob = Session.open(db.settings, user="bob", password="pw-bob", project=None, database=database)
    yield db.session, alice, bob
    alice.dispose()
    bob.dispose()


def test_only_administrators_create_users_and_projects(people):
    admin, alice, bob = people
    assert admin.is_admin and not alice.is_admin and not bob.is_admin
    with pytest.raises(PrivilegeError, match="only an administrator \\(.*tester\\) may"):
        accounts.add_user(bob, "mallory", "pw")
    with pytest.raises(PrivilegeError, match="only an administrator"):
        accounts.add_project(bob, "MINE")
    with pytest.raises(PrivilegeError, match="only an administrator"):
        accounts.add_project(alice, "OTHER")  # managing one project makes no administrator
    with pytest.raises(ValueError, match="needs a password"):
        accounts.add_user(admin, "nopass", None)
    assert "mallory" not in accounts.project_names(admin.database) and "MINE" not in accounts.project_names(
        admin.database)


def test_managers_add_members_nobody_adds_himself(people):
    admin, alice, bob = people
    with pytest.raises(PrivilegeError, match="only its managers \\(alice\\) or an administrator"):
        accounts.add_member(bob, "KIDS", "bob")
    with pytest.raises(PrivilegeError, match="private project"):
        accounts.add_member(bob, "ALICE", "bob")
    with pytest.raises(PrivilegeError, match="private project"):
        accounts.add_member(admin, "ALICE", "bob")
    assert "KIDS" not in bob.list_projects()
    accounts.add_member(alice, "KIDS", "bob")
    assert "KIDS" in bob.list_projects()
    with pytest.raises(PrivilegeError):  # a member is no manager
        accounts.add_member(bob, "KIDS", "tester", manager=True)


def test_passwords_own_with_the_old_one_others_by_administrators(people, db):
    admin, alice, bob = people
    with pytest.raises(PrivilegeError, match="only an administrator"):
        accounts.set_password(bob, "alice", "owned")
    with pytest.raises(AuthenticationError, match="old password of bob is wrong"):
        accounts.set_password(bob, "bob", "new", "guess")
    with pytest.raises(AuthenticationError, match="old password"):
        accounts.set_password(bob, "bob", "new")
    accounts.set_password(bob, "bob", "pw-bob-2", "pw-bob")
    with pytest.raises(AuthenticationError, match="wrong password"):
        Session.open(db.settings, user="bob", password="pw-bob", project=None).dispose()
    Session.open(db.settings, user="bob", password="pw-bob-2", project=None).dispose()
    accounts.set_password(admin, "bob", "reset")  # administrators reset
    Session.open(db.settings, user="bob", password="reset", project=None).dispose()
    with pytest.raises(AuthenticationError, match="awe user add carol"):
        Session.open(db.settings, user="carol", password="x", project=None)
    assert "carol" not in {u for u in _user_names(admin)}


def _user_names(session):
    from awe.db.schema import users
    with session.engine.connect() as conn:
        return list(conn.execute(sa.select(users.c.name)).scalars())


def test_embedded_database_first_user_is_the_passwordless_administrator(sqlite_db, tmp_path):
    session = context.session
    assert session.is_admin and "no password: anyone who can read its file" in session.banner()
    # an unknown AWE_USER is not created on the spot
    with pytest.raises(AuthenticationError, match="awe user add stranger"):
        Session.open(session.settings, user="stranger", project=None, database=session.database)
    # a passwordless user other than the first (an older database) cannot be impersonated
    from awe.db.schema import users
    with session.engine.begin() as conn:
        conn.execute(users.update().where(users.c.name == "tester").values(password_hash=None))
    context.add_user("legacy", "pw")
    with session.engine.begin() as conn:
        conn.execute(users.update().where(users.c.name == "legacy").values(password_hash=None))
    with pytest.raises(AuthenticationError, match="has no password"):
        Session.open(session.settings, user="legacy", project=None, database=session.database)
    alice_id = context.add_user("alice", "pw-alice")
    alice = Session.open(session.settings, user="alice", password="pw-alice", project=None,
                         database=session.database)
    assert alice.user_id == alice_id and "no password" not in alice.banner()
