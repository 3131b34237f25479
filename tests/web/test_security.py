"""The web application refuses what it must, on SQLite and on PostgreSQL (row-level security, authenticator).

Wrong passwords, no session, one user's session asking for another's private objects by id, file name, lineage
link and download URL, path traversal, injection strings in every query field, cross-site request forgery on
every state-changing form, altered cookies: refused, nothing changed, nothing leaked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
import sqlalchemy as sa

from tests.web.conftest import csrf_of

pytestmark = pytest.mark.postgres


def _state(web) -> tuple:
    """Everything a refused request must leave alone: objects, their projects and verdicts, the audit trail."""
    out = []
    for session in (web.team.admin, web.team.alice, web.team.bob):  # on PostgreSQL each sees his own part
        with session.engine.connect() as conn:
            out.append(conn.execute(sa.text("SELECT object_id, project_id, is_valid, timestamp_start, timestamp_end "
                                            "FROM objects ORDER BY object_id")).all())
            out.append(conn.execute(sa.text("SELECT count(*) FROM audit_trail")).scalar())
    return tuple(out)


def _private_names(web) -> list[str]:
    return ["alice-private.fits", "alice-image.fits", "alice-stars"]


def _leaks(web, text: str) -> bool:
    return any(name in text for name in _private_names(web))


def test_login_wrong_password_rate_limit_and_logout(web):
    client = web.client()
    r = client.post("/login", data={"username": "alice", "password": "wrong"})
    assert r.status_code == 401 and "wrong user name or password" in r.text
    assert client.get("/classes").status_code == 401
    r = client.post("/login", data={"username": "nobody", "password": "x"})
    assert r.status_code == 401 and "wrong user name or password" in r.text  # the same answer: no user probing
    r = client.post("/login", data={"username": "alice", "password": ""})
    assert r.status_code == 401
    for _ in range(3):  # five failures in the window (two above)...
        assert client.post("/login", data={"username": "alice", "password": "wrong"}).status_code == 401
    r = client.post("/login", data={"username": "alice", "password": "pw-alice"})
    assert r.status_code == 429 and "too many failed logins" in r.text  # ... block even the right password
    assert web.client("bob").get("/classes").status_code == 200  # another user is not blocked
    alice = web.client()
    web.app.state.web.limiter.succeeded("alice", "testclient")
    r = alice.post("/login", data={"username": "alice", "password": "pw-alice", "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    assert alice.get("/classes").status_code == 200
    token = csrf_of(alice)
    assert alice.post("/logout", data={"csrf": token}).status_code == 303
    assert alice.get("/classes").status_code == 401


def test_failed_login_limit_is_shared_by_the_server_processes(web):
    """Two servers on one database (as ``awe serve --workers 2`` runs two processes): one count of failures."""
    from starlette.testclient import TestClient

    from awe.web import create_app
    other = create_app(web.app.state.web.settings, web.server, secret="test-secret-" + "x" * 40)
    one = web.client()
    two = TestClient(other, base_url="http://testserver", follow_redirects=False)
    for client in (one, two, one, two, one):  # five failures, spread over both
        assert client.post("/login", data={"username": "alice", "password": "wrong"}).status_code == 401
    for client in (one, two):  # both refuse the sixth, even with the right password
        r = client.post("/login", data={"username": "alice", "password": "pw-alice"})
        assert r.status_code == 429 and "too many failed logins" in r.text
    assert web.app.state.web.limiter.blocked_for("alice", "testclient") > 0
    assert other.state.web.limiter.blocked_for("alice", "testclient") > 0
    assert two.post("/login", data={"username": "bob", "password": "pw-bob"}).status_code == 303  # bob is not
    other.state.web.limiter.succeeded("alice", "testclient")  # lifted in one, lifted in both
    assert one.post("/login", data={"username": "alice", "password": "pw-alice"}).status_code == 303


def test_failed_logins_sent_at_once_do_not_pass_the_limit(web):
    """Attempts racing each other (threads of one server, processes of several) pass the limit at most 5 times."""
    from concurrent.futures import ThreadPoolExecutor

    limiter = web.app.state.web.limiter
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: limiter.reserve("carol", "10.0.0.1")[0], range(12)))
    passed = sum(1 for w in waits if not w)
    assert passed <= 5  # (attempts refused in the race are not counted: fewer may pass, never more)
    for _ in range(5 - passed):
        assert not limiter.reserve("carol", "10.0.0.1")[0]
    assert limiter.reserve("carol", "10.0.0.1")[0] and limiter.blocked_for("carol", "10.0.0.1") > 0
    assert not limiter.blocked_for("carol", "10.0.0.2")  # per address
    wait, token = limiter.reserve("dave", "10.0.0.1")
    assert not wait
    limiter.release("dave", "10.0.0.1", token)  # the check could not run: not counted
    for _ in range(5):
        assert not limiter.reserve("dave", "10.0.0.1")[0]
    assert limiter.reserve("dave", "10.0.0.1")[0]


def test_failed_logins_are_hidden_from_the_users(web):
    """On PostgreSQL only the server's role reads and writes the failures: a user's own connection can neither
    see who tried nor lift the limit."""
    assert web.client().post("/login", data={"username": "alice", "password": "wrong"}).status_code == 401
    with web.app.state.web.limiter._begin() as conn:  # the server's role (on PostgreSQL: as the marker role)
        assert conn.execute(sa.text("SELECT count(*) FROM login_failures")).scalar() == 1
    if web.server.is_sqlite:
        return
    for session in (web.team.alice, web.team.bob):
        for sql in ("SELECT count(*) FROM login_failures", "DELETE FROM login_failures",
                    "INSERT INTO login_failures (token, user_name, address, at) VALUES ('x', 'a', 'b', 0)"):
            with session.engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(sql))


def test_a_server_role_that_may_not_count_in_the_database_counts_in_its_process(web):
    """PostgreSQL: a server run as an ordinary awe user (neither an authenticator nor the owner) may not touch
    the failures' table: it still limits failed logins, in its own process (with a warning)."""
    if web.server.is_sqlite:
        return
    from awe.db.database import Database
    from awe.web.auth import SharedLoginLimiter
    url = web.server.engine.url.set(username="bob", password="pw-bob")
    database = Database(url.render_as_string(hide_password=False))
    try:
        limiter = SharedLoginLimiter(database)
        for _ in range(5):
            assert not limiter.reserve("alice", "10.0.0.9")[0]
        assert limiter.reserve("alice", "10.0.0.9")[0] and limiter.blocked_for("alice", "10.0.0.9")
        assert limiter._mode == (False, None)
        limiter.succeeded("alice", "10.0.0.9")
        assert not limiter.blocked_for("alice", "10.0.0.9")
    finally:
        database.dispose()
    assert web.app.state.web.limiter._shared() and web.app.state.web.limiter._mode[1].endswith("_authenticators")


def test_a_rows_page_leaves_no_transaction_nor_role_on_the_pooled_connection(web):
    """The rows of a page are fetched in one round trip (BEGIN, SET LOCAL ROLE, the query, COMMIT at once on
    PostgreSQL): afterwards the server's pooled connection is idle and acts as the server's role again."""
    alice = web.client("alice")
    cat = web.team.alice_catalog.object_id
    assert "S1" in alice.get(f"/rows/ReferenceSource?parent={cat}&sort=mag").text
    assert alice.get("/rows/ReferenceSource?parent=999999").status_code == 404
    if web.server.is_sqlite:
        return
    with web.server.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == "awe_web"
        assert conn.connection.driver_connection.autocommit is False
    assert web.client("bob").get(f"/rows/ReferenceSource?parent={cat}").status_code == 404  # not bob's


def test_html_requests_without_a_session_go_to_the_login_page(web):
    r = web.client().get("/object/1", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/object/1")


def _urls(web) -> list[str]:
    t = web.team
    priv, img, cat = t.alice_private.object_id, t.alice_image.object_id, t.alice_catalog.object_id
    return [f"/object/{priv}", f"/object/{priv}/lineage.svg", f"/object/{img}/preview.png",
            f"/object/{img}/fits", f"/object/{priv}/publish?project=ALL",
            "/file/alice-private.fits", "/file/alice-image.fits", f"/rows/ReferenceSource?parent={cat}",
            f"/rows/ReferenceSource/download?parent={cat}&format=csv"]


def test_no_session_is_refused_everywhere(web):
    before = _state(web)
    client = web.client()
    for url in _urls(web) + ["/", "/classes", "/query/TeamProduct", "/query/TeamProduct/download", "/validity",
                             "/rows/ReferenceSource", "/rows/Source", "/jobs", "/jobs/table", "/jobs/1",
                             f"/object/{web.team.alice_image.object_id}/stamps?ra=150&dec=2"]:
        r = client.get(url)
        assert r.status_code == 401, url
        assert not _leaks(web, r.text), url
    oid = web.team.alice_public.object_id
    for url, data in [(f"/object/{oid}/update", {"is_valid": "0"}), (f"/object/{oid}/publish", {"project": "ALL"}),
                      ("/context", {"project": "ALL"}), ("/logout", {}), ("/jobs/1/cancel", {})]:
        assert client.post(url, data=data).status_code in (401, 403), url
    assert _state(web) == before


def test_another_users_private_objects_are_unreachable(web):
    t = web.team
    bob, alice = web.client("bob"), web.client("alice")
    before = _state(web)
    for url in _urls(web):
        r = bob.get(url)
        assert r.status_code == 404, (url, r.status_code)
        assert not _leaks(web, r.text), url
        assert alice.get(url).status_code in (200, 303), url  # the owner reaches every one of them
    # an overlay is only one of the object's own weight maps or masks (never another object's file)
    r = bob.get(f"/object/{t.alice_shared_image.object_id}/preview.png?overlay={t.alice_image.object_id}")
    assert r.status_code == 404 and not _leaks(web, r.text)
    assert bob.get(f"/object/{t.alice_shared_image.object_id}/preview.png").status_code == 200
    # stamps: by id, or by coordinates on her image (the PNGs are in the page: no other URL to guess)
    for oid in (t.alice_private.object_id, t.alice_image.object_id):
        r = bob.get(f"/object/{oid}/stamps?ra=150.0&dec=2.0&size=20")
        assert r.status_code == 404 and not _leaks(web, r.text), oid
    # a private object's page looks exactly like a page of an object that does not exist
    def scrubbed(text: str, oid: str) -> str:
        return re.sub(r'name="csrf" value="[^"]*"', "", text).replace(oid, "N")
    missing = scrubbed(bob.get("/object/999999").text, "999999")
    assert scrubbed(bob.get(f"/object/{t.alice_private.object_id}").text, str(t.alice_private.object_id)) == missing
    # lists, counts, downloads and lineage links from public objects show none of them
    for url in ["/classes", "/query/TeamProduct", "/query/TeamProduct/download?format=csv",
                "/query/TeamProduct/download?format=votable", "/query/ReferenceCatalog",
                f"/object/{t.raws[0].object_id}/lineage.svg", f"/object/{t.raws[0].object_id}",
                "/rows/ReferenceSource", "/rows/ReferenceSource/download?format=csv", "/validity"]:
        r = bob.get(url)
        assert r.status_code == 200, url
        assert not _leaks(web, r.text), url
    assert "alice-private.fits" in alice.get(f"/object/{t.raws[0].object_id}/lineage.svg").text
    assert "alice-public.fits" in bob.get("/query/TeamProduct").text
    # bob may not change alice's objects, private (404) or public (403); nothing changes
    token = csrf_of(bob)
    r = bob.post(f"/object/{t.alice_private.object_id}/update", data={"csrf": token, "is_valid": "0"})
    assert r.status_code == 404
    r = bob.post(f"/object/{t.alice_public.object_id}/update", data={"csrf": token, "is_valid": "0"})
    assert r.status_code == 403 and "not allowed" in r.text
    r = bob.post(f"/object/{t.alice_private.object_id}/publish", data={"csrf": token, "project": "ALL"})
    assert r.status_code == 404
    # nor choose her private project as his context
    r = bob.post("/context", data={"csrf": token, "project": "ALICE"})
    assert r.status_code == 403
    assert _state(web) == before


@pytest.mark.parametrize("url", [
    "/object/{img}/fits/../../../../etc/passwd", "/file/../../../../etc/passwd", "/file/..%2F..%2F..%2Fetc%2Fpasswd",
    "/file/%2e%2e/%2e%2e/etc/passwd", "/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e/auth.py",
    "/object/..%2F..%2Fetc%2Fpasswd/fits", "/file/alice-image.fits%00.txt", "/file//etc/passwd",
])
def test_path_traversal_is_refused(web, url):
    client = web.client("bob")
    r = client.get(url.format(img=web.team.alice_image.object_id))
    assert r.status_code in (400, 404), (url, r.status_code)
    assert "root:" not in r.text and "def create_app" not in r.text and "secret" not in r.text.lower()


INJECTIONS = ["' OR '1'='1", "1; DROP TABLE objects; --", '") OR 1=1 --', "<script>alert(1)</script>",
              "{{7*7}}", "${7*7}", "../../etc/passwd", "\x00", "1e999", "NaN", "-1", "99999999999999999999",
              "object_id) OR (1=1", "__class__.__mro__", "chip.__dict__", "%27%20OR%201%3D1"]


def test_injection_strings_in_every_query_field(web):
    client = web.client("bob")
    before = _state(web)
    cat = web.team.alice_catalog.object_id
    forms = {
        "/query/TeamProduct": {"a0": "filename", "o0": "==", "v0": "x", "sort": "object_id", "desc": "1", "per": "10",
                               "page": "1"},
        "/query/TeamProduct/download": {"a0": "filename", "o0": "like", "v0": "x", "format": "csv"},
        "/rows/ReferenceSource": {"parent": str(cat), "ra": "150", "dec": "2", "radius": "60", "mag_min": "10",
                                  "mag_max": "20", "a0": "name", "o0": "==", "v0": "S1", "sort": "mag",
                                  "page": "1"},
        "/rows/ReferenceSource/download": {"ra": "150", "dec": "2", "radius": "60", "format": "votable"},
    }
    for url, base in forms.items():
        for field in base:
            for text in INJECTIONS:
                params = dict(base, **{field: text})
                r = client.get(url, params=params)
                assert r.status_code in (200, 400, 404), (url, field, text, r.status_code)
                assert "<script>alert" not in r.text
                assert not _leaks(web, r.text), (url, field, text)
                assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower()
    # a value that is SQL is compared as a value: it matches nothing and changes nothing
    r = client.get("/query/TeamProduct", params={"a0": "filename", "o0": "==", "v0": "' OR '1'='1"})
    assert r.status_code == 200 and "0 found" in r.text
    assert "{{7*7}}" in client.get("/query/TeamProduct", params={"a0": "filename", "o0": "==", "v0": "{{7*7}}"}).text
    # the private catalogue's rows stay private however the cone is asked
    r = client.get("/rows/ReferenceSource", params={"ra": "150", "dec": "2", "radius": "3600"})
    assert r.status_code == 200 and "0 found" in r.text
    assert _state(web) == before


def _forms(web) -> list[tuple[str, dict]]:
    oid = web.team.alice_image.object_id
    return [(f"/object/{oid}/update", {"is_valid": "0"}), (f"/object/{oid}/update", {"timestamp_end": "2020-01-01"}),
            (f"/object/{oid}/publish", {"project": "ALL"}), ("/context", {"project": "ALL"}), ("/logout", {})]


def test_cross_site_request_forgery_on_every_form(web):
    alice = web.client("alice")
    token = csrf_of(alice)
    other = csrf_of(web.client("bob"))
    before = _state(web)
    for url, data in _forms(web):
        for forged in ({}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": other}):
            r = alice.post(url, data=dict(data, **forged))
            assert r.status_code == 403, (url, forged)
        r = alice.post(url, data=dict(data, csrf=token), headers={"origin": "http://evil.example"})
        assert r.status_code == 403, url
    assert _state(web) == before
    assert alice.get("/classes").status_code == 200  # still logged in: the forged logout did nothing
    # the same forms with the token work
    oid = web.team.alice_image.object_id
    assert alice.post(f"/object/{oid}/update", data={"csrf": token, "is_valid": "0"}).status_code == 303
    assert _state(web) != before
    assert web.client().post("/login", data={"username": "alice", "password": "pw-alice"},
                             headers={"origin": "http://evil.example"}).status_code == 403


def test_altered_or_expired_cookies_are_refused(web):
    from itsdangerous import TimestampSigner
    alice = web.client("alice")
    cookie = alice.cookies["awe_session"]
    payload, rest = cookie.split(".", 1)
    data = json.loads(base64.b64decode(payload + "=="))
    assert data["user"] == "alice"
    as_bob = base64.b64encode(json.dumps(dict(data, user="bob")).encode()).decode() + "." + rest
    wrong_key = TimestampSigner("not-the-secret").sign(
        base64.b64encode(json.dumps(dict(data, user="alice")).encode())).decode()
    flipped = cookie[:-3] + ("A" if cookie[-3] != "A" else "B") + cookie[-2:]
    for value in (as_bob, wrong_key, flipped, "", "garbage"):
        client = web.client()
        client.cookies.set("awe_session", value)
        r = client.get(f"/object/{web.team.alice_private.object_id}")
        assert r.status_code == 401, value
        assert not _leaks(web, r.text)
    # a login older than its lifetime is refused even with a valid signature
    old = TimestampSigner("test-secret-" + "x" * 40)
    stale = dict(data, issued=data["issued"] - 9 * 3600)
    client = web.client()
    client.cookies.set("awe_session", old.sign(base64.b64encode(json.dumps(stale).encode())).decode())
    assert client.get("/classes").status_code == 401


def test_error_pages_leak_nothing(web):
    client = web.client("bob")
    r = client.get("/query/TeamProduct", params={"a0": "no_such_column", "v0": "1"})
    assert r.status_code == 400 and "unknown attribute" in r.text
    r = client.get("/query/NoSuchClass")
    assert r.status_code == 404
    r = client.get("/rows/ReferenceSource", params={"ra": "10", "dec": "95", "radius": "5"})
    assert r.status_code == 400 and "Traceback" not in r.text
    for r in (client.get("/nothing-here"), client.get("/object/abc")):
        assert r.status_code == 404 and "Traceback" not in r.text


def test_fits_download_is_the_stored_file_with_its_checksum(web):
    img = web.team.alice_image
    alice = web.client("alice")
    r = alice.get(f"/object/{img.object_id}/fits")
    assert r.status_code == 200
    digest = hashlib.sha256(r.content).hexdigest()
    assert digest == img.checksum and r.headers["etag"] == f'"{digest}"'
    assert r.headers["digest"] == "sha-256=" + base64.b64encode(bytes.fromhex(digest)).decode()
    assert r.content[:6] == b"SIMPLE"
    assert alice.get(f"/object/{img.object_id}/fits", headers={"if-none-match": f'"{digest}"'}).status_code == 304
    assert r.headers["x-frame-options"] == "DENY" and "default-src 'self'" in r.headers["content-security-policy"]
