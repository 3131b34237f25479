"""The source-list pages on the web team (SQLite and PostgreSQL): a SourceList of alice's image with rows inserted,
its sources table (cone, MAG_AUTO and FLAGS filters, sorted keyset pages, downloads, a stamps link per source);
bob reaches none of it. Real stamps through a reduced frame's lineage: tests/web/test_browser.py."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from astropy.table import Table

from awe.db.commit import commit

pytestmark = pytest.mark.postgres


@pytest.fixture
def sources(web):
    from awe.model import SourceList
    rng = np.random.default_rng(5)
    n = 120
    ra = 150.0 + rng.uniform(-0.003, 0.003, n)
    dec = 2.0 + rng.uniform(-0.002, 0.002, n)
    mag = np.round(rng.uniform(17, 23, n), 3)
    mag[::10] = 20.0  # ties: the keyset pages go on by row id
    flags = np.where(np.arange(n) % 4 == 0, 3, 0)
    sl = SourceList(filename="alice-sources", OBJECT="field", n_sources=n)
    sl.image = web.team.alice_image
    sl.__dict__["_pending_rows"] = Table({"SID": np.arange(1, n + 1), "RA": ra, "DEC": dec, "MAG_AUTO": mag,
                                          "FLAGS": flags})
    with web.team.alice.activate():
        commit([(sl, None)])
    return sl, ra, dec, mag, flags


def _sids(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"sid=(\d+)\"", text)]


def test_source_list_table_filters_pages_and_downloads(web, sources):
    sl, ra, dec, mag, flags = sources
    alice = web.client("alice")
    page = alice.get(f"/object/{sl.object_id}").text
    assert f'href="/rows/Source?parent={sl.object_id}"' in page and 'id="stamps-form"' in page
    base = {"parent": str(sl.object_id), "per": "25"}
    r = alice.get("/rows/Source", params=base)
    assert r.status_code == 200 and "120 found" in r.text
    from awe.model import Source
    with web.team.alice.activate():  # the query language's order: MAG_AUTO, ties by row id
        query = (Source.SLID == sl.SLID).using(web.team.alice)
        query.order_by("MAG_AUTO")
        want_order = [int(v) for v in query.table()["SID"]]
    assert sorted(want_order) == list(range(1, 121)) and list(mag[np.array(want_order) - 1]) == sorted(mag)
    shown = _sids(r.text)
    assert shown == want_order[:25]
    # walk every page by its keyset 'next' link: each row once, in order
    seen = list(shown)
    text = r.text
    for _ in range(10):
        m = re.search(r'href="([^"]+)" rel="next" id="next-page"', text)
        if not m:
            break
        assert "after=" in m.group(1)
        text = alice.get(m.group(1).replace("&amp;", "&")).text
        seen += _sids(text)
    assert seen == want_order
    # the stamps link of a source: its list, its position
    link = re.search(r'class="stamps-link" href="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    first = want_order[0] - 1
    assert link.startswith(f"/object/{sl.object_id}/stamps?")
    assert abs(float(re.search(r"ra=([\d.]+)", link).group(1)) - ra[first]) < 1e-9
    # cone, magnitudes and flags together, against numpy
    cone = {"ra": "150.0", "dec": "2.0", "radius": "7.2", "mag_min": "18", "mag_max": "22", "flags_max": "0"}
    r = alice.get("/rows/Source", params={**base, **cone, "per": "500"})
    sep = np.hypot((ra - 150.0) * np.cos(np.radians(dec)), dec - 2.0) * 3600
    want = np.flatnonzero((sep <= 7.2) & (mag >= 18) & (mag <= 22) & (flags <= 0)) + 1
    assert 0 < len(want) < 120 and sorted(_sids(r.text)) == sorted(want.tolist())
    import html
    python = html.unescape(re.search(r'id="python-query">(.*?)</pre>', r.text, re.S).group(1))
    assert "Source.cone(150.0, 2.0, 7.2)" in python and "Source.FLAGS <= 0" in python
    for fmt in ("csv", "fits", "votable"):
        d = alice.get("/rows/Source/download", params={**base, **cone, "format": fmt})
        assert d.status_code == 200
        table = Table.read(d.text.splitlines() if fmt == "csv" else io.BytesIO(d.content),
                           format={"csv": "ascii.csv", "fits": "fits", "votable": "votable"}[fmt])
        assert sorted(table["SID"]) == sorted(want.tolist()) and "MAG_AUTO" in table.colnames
    # the list's image is no sky image with a lineage: a clear refusal, not a crash
    r = alice.get(link)
    assert r.status_code == 400 and "image of the sky" in r.text


def test_another_users_source_list_and_stamps_are_unreachable(web, sources):
    sl, ra, dec, mag, flags = sources
    bob = web.client("bob")
    oid = sl.object_id
    for url in (f"/object/{oid}", f"/rows/Source?parent={oid}", f"/rows/Source/download?parent={oid}&format=csv",
                f"/object/{oid}/stamps?ra={ra[0]}&dec={dec[0]}",  # a source's stamps link, by id
                f"/object/{web.team.alice_image.object_id}/stamps?ra=150.0&dec=2.0&size=20"):  # by coordinates
        r = bob.get(url)
        assert r.status_code == 404, url
        assert "alice-" not in r.text, url
    # bob's own view of every source: none of alice's rows
    r = bob.get("/rows/Source", params={"ra": "150.0", "dec": "2.0", "radius": "60"})
    assert r.status_code == 200 and "0 found" in r.text
    d = bob.get("/rows/Source/download", params={"ra": "150.0", "dec": "2.0", "radius": "60", "format": "csv"})
    assert d.status_code == 200 and len(d.text.strip().splitlines()) <= 1  # a header at most
    # no session at all
    assert web.client().get(f"/object/{oid}/stamps?ra=150&dec=2").status_code == 401
    # bad stamp parameters: clear 400s for alice
    alice = web.client("alice")
    for q, msg in (("ra=x&dec=2", "not a number"), ("ra=150&dec=95", "dec between"), ("ra=150&dec=2&size=0", "size"),
                   ("ra=150&dec=2&size=1e6", "size"), ("ra=nan&dec=2", "finite")):
        r = alice.get(f"/object/{oid}/stamps?{q}")
        assert r.status_code == 400 and msg in r.text, (q, r.text[-400:])


def test_deep_pages_by_number_are_read_from_seek_points(web, sources, monkeypatch):
    """A page by its number beyond SEEK_FROM rows starts at a remembered seek point (a keyset range of the index):
    every page shows what OFFSET shows, ascending and descending, NULLs last, each row once; beyond the end
    none; another user's list stays a 404 however deep the page."""
    import awe.web.app as app_module
    from astropy.table import MaskedColumn

    from awe.model import Source, SourceList
    _, ra, dec, mag, flags = sources
    sl = SourceList(filename="alice-sources-nulls", OBJECT="field", n_sources=len(mag))
    sl.image = web.team.alice_image
    sl.__dict__["_pending_rows"] = Table({"SID": np.arange(1, len(mag) + 1), "RA": ra, "DEC": dec,
                                          "MAG_AUTO": MaskedColumn(mag, mask=np.arange(len(mag)) % 9 == 4),
                                          "FLAGS": flags})
    with web.team.alice.activate():
        commit([(sl, None)])
    alice = web.client("alice")
    for desc in (False, True):
        with web.team.alice.activate():
            query = (Source.SLID == sl.SLID).using(web.team.alice)
            query.order_by("MAG_AUTO", descending=desc)
            table = query.table()
            want_order = [int(v) for v in table["SID"]]
        assert np.isnan(table["MAG_AUTO"][-1])  # rows without a magnitude (NULL) last, either way
        params = {"parent": str(sl.object_id), "per": "7", "sort": "MAG_AUTO", "desc": "1" if desc else ""}
        pages = {}
        for seek_from, every in ((10**9, 5), (0, 5), (0, 3), (14, 4)):  # OFFSET only; seek points of 5, 3, 4 rows
            monkeypatch.setattr(app_module, "SEEK_FROM", seek_from)
            monkeypatch.setattr(app_module, "SEEK_EVERY", every)
            web.app.state.web._seeks.clear()
            seen = []
            for page in range(1, 20):
                r = alice.get("/rows/Source", params={**params, "page": str(page)})
                assert r.status_code == 200 and "120 found" in r.text
                seen += _sids(r.text)
            pages[(seek_from, every)] = seen
            assert seen == want_order, (desc, seek_from, every)
            # the same pages again, now from the remembered points (in another order)
            for page in (17, 3, 11):
                r = alice.get("/rows/Source", params={**params, "page": str(page)})
                assert _sids(r.text) == want_order[(page - 1) * 7:page * 7]
        bob = web.client("bob")
        r = bob.get("/rows/Source", params={**params, "page": "15"})
        assert r.status_code == 404 and "alice-" not in r.text
