"""What the pages show and do: query form vs the query language, catalogue rows with cone and magnitude filters,
validity edits with the audit trail, publishing with its confirmation, downloads."""

from __future__ import annotations

import datetime as dt
import html
import io
import re

import pytest
from astropy.table import Table

from awe.db.query import Query
from awe.model import ReferenceSource
from tests.security._team import TeamProduct
from tests.web.conftest import csrf_of

pytestmark = pytest.mark.postgres


def _python(text: str) -> str:
    return html.unescape(re.search(r'<pre class="python" id="python-query">(.*?)</pre>', text, re.S).group(1))


def test_query_form_is_the_query_language(web):
    alice = web.client("alice")
    r = alice.get("/query/TeamProduct", params={"a0": "filename", "o0": "like", "v0": "alice-*", "sort": "filename",
                                                "desc": "1"})
    assert r.status_code == 200
    text = _python(r.text)
    assert text == "(TeamProduct.filename.like('alice-*')).order_by('-filename')"
    expected = [o.filename for o in eval(text, {"TeamProduct": TeamProduct}).using(web.team.alice)]  # noqa: S307
    shown = re.findall(r'<a href="/object/\d+">(alice-[^<]+)</a>', r.text)
    assert shown == expected and len(shown) == 4 and "4 found" in r.text
    # pages of 3: the second page has the fourth; the URL is the shareable query
    r2 = alice.get("/query/TeamProduct", params={"a0": "filename", "o0": "like", "v0": "alice-*", "sort": "filename",
                                                 "desc": "1", "per": "3", "page": "2"})
    assert re.findall(r'<a href="/object/\d+">(alice-[^<]+)</a>', r2.text) == expected[3:]
    csv = alice.get("/query/TeamProduct/download", params={"a0": "filename", "o0": "like", "v0": "alice-*",
                                                           "format": "csv"})
    table = Table.read(csv.text.splitlines(), format="ascii.csv")
    assert sorted(table["filename"]) == sorted(expected)
    fits = alice.get("/query/TeamProduct/download", params={"format": "fits"})
    assert fits.content[:6] == b"SIMPLE" and len(Table.read(io.BytesIO(fits.content))) == len(
        Query(TeamProduct, session=web.team.alice))
    r = alice.get("/query/RawBiasFrame", params={"a0": "imstat.median", "o0": ">=", "v0": "181", "a1": "chip.name",
                                                 "o1": "==", "v1": "ccd50"})
    assert _python(r.text) == "(RawBiasFrame.imstat.median >= 181.0) & (RawBiasFrame.chip.name == 'ccd50')"
    from awe.model import RawBiasFrame
    n = len(((RawBiasFrame.imstat.median >= 181.0) & (RawBiasFrame.chip.name == "ccd50")).using(web.team.alice))
    assert n == 3 and f"{n} found" in r.text  # medians 180..183 of the four biases


def test_rows_cone_magnitude_and_sort(web):
    alice = web.client("alice")
    cat = web.team.alice_catalog.object_id
    params = {"parent": str(cat), "ra": "150.02", "dec": "2.02", "radius": "60", "mag_max": "16", "sort": "mag"}
    r = alice.get("/rows/ReferenceSource", params=params)
    assert r.status_code == 200
    assert r.headers.get("connection") != "close"  # one server process: connections are kept alive
    text = _python(r.text)
    assert text == (f"((ReferenceSource.catalog == {cat}) & ReferenceSource.cone(150.02, 2.02, 60.0) & "
                    "(ReferenceSource.mag <= 16.0)).order_by('mag')")
    with web.team.alice.activate():
        expected = (ReferenceSource.of(cat) & ReferenceSource.cone(150.02, 2.02, 60.0)
                    & (ReferenceSource.mag <= 16.0)).order_by("mag").table()
    names = re.findall(r"<td>(S\d+)</td>", r.text)
    assert names == list(expected["name"]) and 0 < len(names) < 60
    # the "next" link is a keyset cursor: the same rows as the page by offset, both ways of sorting
    # (mag: distinct values; mag_err: equal values (the row id decides) and NULLs; pmra: NULLs only)
    rows_of = re.compile(r"<td>(S\d+)</td>")
    for sort in ("mag", "mag_err", "pmra"):
        for desc in ("", "1"):
            page = alice.get("/rows/ReferenceSource", params={"parent": str(cat), "sort": sort, "desc": desc,
                                                              "per": "7"}).text
            for number in range(2, 10):
                by_offset = alice.get("/rows/ReferenceSource", params={"parent": str(cat), "sort": sort,
                                                                       "desc": desc, "per": "7", "page": number}).text
                nxt = html.unescape(re.search(r'href="([^"]+)" rel="next"', page).group(1))
                assert "after=" in nxt
                page = alice.get(nxt).text
                assert rows_of.findall(page) == rows_of.findall(by_offset), (sort, desc, number)
                assert len(rows_of.findall(page)) == min(7, 60 - 7 * (number - 1))
    assert alice.get("/rows/ReferenceSource", params={"parent": str(cat), "after": "1 OR 1=1:3"}).status_code == 400
    vot = alice.get("/rows/ReferenceSource/download", params=dict(params, format="votable"))
    from astropy.io.votable import parse_single_table
    assert sorted(parse_single_table(io.BytesIO(vot.content)).to_table()["name"]) == sorted(expected["name"])
    assert web.client("bob").get("/rows/ReferenceSource", params={k: v for k, v in params.items()
                                                                  if k != "parent"}).text.count("<td>S") == 0


def test_validity_edit_audit_trail_and_publish(web):
    t = web.team
    alice = web.client("alice")
    token = csrf_of(alice)
    img = t.alice_image
    start, end = dt.datetime(2003, 3, 3, 12), dt.datetime(2003, 3, 4, 12)
    r = alice.post(f"/object/{img.object_id}/update", data={"csrf": token, "timestamp_start": start.isoformat(),
                                                           "timestamp_end": end.isoformat(), "is_valid": "2"})
    assert r.status_code == 303
    fresh = Query(TeamProduct, session=t.alice).filter((TeamProduct.object_id == img.object_id).using(t.alice))[0]
    assert (fresh.timestamp_start, fresh.timestamp_end, fresh.is_valid) == (start, end, 2)
    page = alice.get(f"/object/{img.object_id}").text
    assert re.search(r"<td>alice</td><td>timestamp_end</td><td>None</td><td>2003-03-04", page)
    bad = alice.post(f"/object/{img.object_id}/update", data={"csrf": token, "timestamp_end": "2003-03-01T00:00"})
    assert bad.status_code == 400 and "before timestamp_start" in bad.text
    chart = alice.get("/validity", params={"cls": "TeamProduct"})
    assert chart.status_code == 200 and 'class="bar chosen"' in chart.text and "alice-image.fits" in chart.text
    # publish: the confirmation lists what moves (the object; its raw inputs are public already), then it moves
    confirm = alice.get(f"/object/{t.alice_private.object_id}/publish", params={"project": "ALL"})
    assert confirm.status_code == 200
    assert re.findall(r'<li><a href="/object/(\d+)">', confirm.text) == [str(t.alice_private.object_id)]
    assert web.client("bob").get(f"/object/{t.alice_private.object_id}").status_code == 404
    r = alice.post(f"/object/{t.alice_private.object_id}/publish", data={"csrf": token, "project": "ALL"})
    assert r.status_code == 303
    assert web.client("bob").get(f"/object/{t.alice_private.object_id}").status_code == 200


def test_eclipsed_parts():
    from awe.web.render import ValidityBar, eclipsed_parts, validity_svg
    d = dt.datetime
    old = ValidityBar(1, "old", d(2003, 3, 1), d(2003, 3, 1), d(2003, 3, 10), 1)
    new = ValidityBar(2, "new", d(2003, 3, 5), d(2003, 3, 3), d(2003, 3, 5), 1)
    bad = ValidityBar(3, "bad", d(2003, 3, 6), d(2003, 3, 4), d(2003, 3, 9), 0)
    newest = ValidityBar(4, "newest", d(2003, 3, 7), d(2003, 3, 2), d(2003, 3, 11), 1)
    parts = eclipsed_parts([old, new, bad, newest])
    assert parts[1] == [(d(2003, 3, 2), d(2003, 3, 10))]  # the invalid one eclipses nothing
    assert parts[2] == [(d(2003, 3, 3), d(2003, 3, 5))] and parts[4] == []
    svg = validity_svg([old, new, bad, newest])
    assert svg.count('class="bar eclipsed"') == 1 and svg.count('class="bar invalid"') == 1
    assert svg.count('class="bar chosen"') == 2


def test_awe_serve_starts_on_the_prompts_settings(tmp_path):
    """`awe serve` in a child process: the embedded database of AWE_HOME, the login page on 127.0.0.1; with two
    server processes every response ends its connection (the next request goes to whichever is free)."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx2 as httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, AWE_HOME=str(tmp_path / "home"))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        child = subprocess.Popen([sys.executable, "-m", "awe.cli", "serve", "--port", str(port), "--workers", "2",
                                  "--threads", "3"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.HTTPError:
                assert child.poll() is None, log.read_text()
                time.sleep(0.1)
        assert r.status_code == 200 and 'name="username"' in r.text
        assert r.headers["connection"] == "close"
        assert httpx.get(f"http://127.0.0.1:{port}/classes").status_code == 401
        assert "2 worker(s) of 3 thread(s)" in log.read_text()
        assert (tmp_path / "home" / "web-secret").stat().st_mode & 0o077 == 0  # the cookie key: owner only
    finally:
        child.terminate()
        child.wait(10)


def test_server_engine_pings_only_connections_idle_for_a_while(postgres):
    """The server's PostgreSQL pool: no ping on a connection used a moment ago; one idle for longer is pinged and,
    dropped by the server meanwhile, replaced (the request gets a working connection); JIT is off."""
    import time

    import sqlalchemy as sa

    from awe.web.app import server_engine
    engine = server_engine(sa.make_url(postgres.new_database()), ping_idle_s=0.3)
    pings = []
    ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda dbapi_connection: pings.append(1) or ping(dbapi_connection)  # type: ignore
    try:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            assert conn.execute(sa.text("SHOW jit")).scalar() == "off"
        with engine.connect() as conn:  # at once: the same connection, not pinged
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() == pid
        assert pings == []
        with postgres._admin.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        time.sleep(0.5)
        with engine.connect() as conn:  # idle for longer: pinged, found dropped, replaced
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
        assert pings == [1]
    finally:
        engine.dispose()
