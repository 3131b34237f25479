"""PostgreSQL enforces the rights itself: raw SQL with a user's own credentials, and the authenticator path.

Every check here goes around awe's Python layer (psycopg with user bob's password, as ``psql`` would), so
it proves row-level security, not a filter in the client. The figures (isolation paths tried / held) are
printed with ``-s``.
"""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from awe.db import rls
from awe.db.query import Query
from awe.db.schema import DBObject
from awe.db.session import Session
from tests.conftest import _connect
from tests.security._team import make_team


@pytest.fixture
def team(tmp_path, monkeypatch, postgres):
    from awe import context
    monkeypatch.chdir(tmp_path)
    db = _connect(tmp_path, None, postgres=postgres)
    t = make_team(db)
    yield t
    t.close()
    context.close()


def _dsn(session: Session) -> str:
    url = session.database.engine.url
    return f"host={url.host} port={url.port} dbname={url.database} user={url.username} password={url.password}"


def test_every_table_with_project_data_has_forced_row_level_security(team, postgres):
    protected = rls.protected_tables()
    assert {"objects", "links", "frames", "raw_frames", "bias_frames", "reference_sources", "audit_trail",
            "exclusions"} <= set(protected)
    with team.admin.engine.connect() as conn:
        state = rls.row_security(conn)
    for table in protected:
        assert state[table] == (True, True), table
    for table in ("users", "projects", "memberships"):
        assert state[table][0], table
    # re-applied (as every upgrade does) it changes nothing: same tables, same policies
    def policies(conn: sa.Connection) -> list:
        return sorted(conn.execute(sa.text("SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies"))
                      .all())

    owner = sa.create_engine(team.admin.database.engine.url.set(username="awe", password=postgres.password))
    try:
        with owner.begin() as conn:
            before = policies(conn)
            assert rls.install(conn) == protected
            rls.install(conn)
            assert policies(conn) == before and rls.row_security(conn) == state
    finally:
        owner.dispose()
    # and every table of the metadata that has a project_id or a foreign key to objects is among them
    from awe.db.persistent import metadata
    for table in metadata.sorted_tables:
        to_objects = any(fk.column.table.name == "objects" for fk in table.foreign_keys)
        if ("project_id" in table.c or to_objects) and table.name not in ("memberships",):
            assert table.name in protected, table.name


def test_raw_sql_as_another_user_sees_changes_and_forges_nothing(team):
    alice, bob = team.alice, team.bob
    private = team.alice_private.object_id
    public = (DBObject.filename == "alice-public.fits").using(alice)[0].object_id
    alice_project = alice.project.id
    tried = held = 0
    leaks: list[str] = []

    def refused(sql: str, params: tuple = ()) -> None:
        """The statement fails (policy or privilege) or changes nothing."""
        nonlocal tried, held
        tried += 1
        with psycopg.connect(_dsn(bob)) as conn:
            try:
                cur = conn.execute(sql, params)
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.CheckViolation):
                held += 1
                return
            if cur.rowcount == 0 or (cur.description is not None and cur.fetchall() in ([], [(0,)])):
                held += 1
            else:
                leaks.append(sql)

    # the same view as the prompt: bob (in BOB, with ALL) sees ALL and BOB only
    with psycopg.connect(_dsn(bob)) as conn:
        seen = {r[0] for r in conn.execute("SELECT filename FROM objects")}
        assert conn.execute("SELECT current_user").fetchone()[0] == "bob"
    assert seen == {o.filename for o in Query(DBObject, session=bob)}
    assert "alice-private.fits" not in seen and "alice-public.fits" in seen
    # nothing of alice's private product in any protected table
    for table, (kind, column) in rls.protected_tables().items():
        key = alice_project if kind == "project" else private
        refused(f'SELECT count(*) FROM "{table}" WHERE "{column}" = %s', (key,))
    # no change, delete, move of someone else's rows
    for sql, params in [
        ("UPDATE objects SET is_valid = 0 WHERE object_id = %s", (private,)),
        ("UPDATE objects SET is_valid = 0 WHERE object_id = %s", (public,)),  # visible, not his
        ("UPDATE objects SET is_valid = 0 WHERE object_id = %s", (team.raws[0].object_id,)),
        ("UPDATE objects SET project_id = %s WHERE object_id = %s", (bob.project.id, public)),
        ("DELETE FROM objects WHERE object_id = %s", (public,)),
        ("DELETE FROM links WHERE child_id = %s", (public,)),
        ("DELETE FROM frames WHERE object_id = %s", (team.raws[0].object_id,)),
        ("UPDATE memberships SET role = 'member' WHERE project_id <> %s", (bob.project.id,)),
        ("UPDATE users SET is_admin = true WHERE name = 'bob'", ()),
        ("DELETE FROM audit_trail", ()),
        ("UPDATE audit_trail SET user_name = 'bob'", ()),
    ]:
        refused(sql, params)
    # no forged rows in alice's project or under alice's name
    for sql, params in [
        ("INSERT INTO objects (class_name, filename, project_id, creator) VALUES ('TeamProduct', 'f1', %s, 'bob')",
         (alice_project,)),
        ("INSERT INTO objects (class_name, filename, project_id, creator) VALUES ('TeamProduct', 'f2', %s, "
         "'alice')", (bob.project.id,)),
        ("INSERT INTO links (child_id, role, position, parent_id) VALUES (%s, 'x', 9, %s)", (public, private)),
        ("INSERT INTO memberships (project_id, user_id, role) SELECT %s, id, 'member' FROM users WHERE name = 'bob'",
         (alice_project,)),
        ("INSERT INTO audit_trail (at, user_name, object_id, project_id, attribute) VALUES (now(), 'alice', %s, %s, "
         "'is_valid')", (public, bob.project.id)),
        ("INSERT INTO exclusions (project_id, object_id, user_name, reason, created) VALUES (%s, %s, 'bob', 'x', "
         "now())", (alice_project, public)),
        ("INSERT INTO users (name, is_admin, created) VALUES ('mallory', true, now())", ()),
        ("INSERT INTO projects (name, kind, created) VALUES ('MINE', 'group', now())", ()),
        ("SELECT password_hash FROM users", ()),
        ("SELECT count(*) FROM login_failures", ()),  # the web server's failed logins: its own role only
        ("DELETE FROM login_failures", ()),
    ]:
        refused(sql, params)
    print(f"\nraw SQL as another user: {tried} isolation paths tried, {held} held")
    assert leaks == []
    assert held == tried == len(rls.protected_tables()) + 22
    # alice's rows are all there
    with psycopg.connect(_dsn(alice)) as conn:
        assert conn.execute("SELECT count(*) FROM objects WHERE object_id = %s", (private,)).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM links WHERE child_id = %s", (private,)).fetchone()[0] == 2


def test_authenticator_acts_for_one_user_per_transaction(team, postgres):
    from awe.db.database import Database
    with team.admin.engine.begin() as conn:
        rls.create_authenticator(conn, "awe_web", "pw-web")
    url = team.admin.database.engine.url.set(username="awe_web", password="pw-web")
    server = Database(url.render_as_string(hide_password=False))
    try:
        with server.engine.connect() as conn:  # the authenticator alone reads no project data
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("SELECT count(*) FROM objects"))
        bob = Session.open_as(server, "bob", team.bob.settings)
        alice = Session.open_as(server, "alice", team.alice.settings)
        for _ in range(2):
            assert {o.filename for o in Query(DBObject, session=bob)} == \
                {o.filename for o in Query(DBObject, session=team.bob)}
            assert "alice-private.fits" in {o.filename for o in Query(DBObject, session=alice)}
            assert "alice-private.fits" not in {o.filename for o in Query(DBObject, session=bob)}
        with bob.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == "bob"
        with server.engine.connect() as conn:  # the pooled connection is back as the authenticator
            assert conn.execute(sa.text("SELECT current_user")).scalar() == "awe_web"
        forged = (DBObject.filename == "alice-public.fits").using(bob)[0]
        with pytest.raises(PermissionError):
            forged.update(is_valid=0)
    finally:
        server.dispose()
