"""SourceList rows and AssociateListTask on both databases (SQLite and PostgreSQL with row-level security):
lists committed with their rows, the spec's queries, a cone, an association (no images needed)."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from awe.db.commit import commit
from awe.model import AssociateList, Association, Source, SourceList
from awe.tasks import AssociateListTask


def _list(name: str, ra: np.ndarray, dec: np.ndarray, mag: np.ndarray) -> SourceList:
    sl = SourceList(filename=name, OBJECT="3C273", n_sources=len(ra))
    sl.__dict__["_pending_rows"] = Table({"SID": np.arange(1, len(ra) + 1), "RA": ra, "DEC": dec, "MAG_AUTO": mag,
                                          "FLAGS": np.zeros(len(ra), dtype=np.int64)})
    commit([(sl, None)])
    return sl


def test_source_rows_queries_and_association_on_both_databases(db):
    rng = np.random.default_rng(2)
    k = np.arange(300)
    dec = 2.0 + ((k // 20) * 8.0 + rng.uniform(-1, 1, 300)) / 3600
    ra = 187.2 + ((k % 20) * 8.0 + rng.uniform(-1, 1, 300)) / 3600 / np.cos(np.radians(dec))
    mag = rng.uniform(18, 24, 300)
    one = _list("sl-one", ra, dec, mag)
    keep = k % 3 != 0  # the second list has two thirds of the sources, moved by 0.2"
    two = _list("sl-two", ra[keep] + 0.2 / 3600, dec[keep], mag[keep])
    assert one.SLID == one.object_id and (SourceList.SLID == two.SLID).first().filename == "sl-two"
    assert len((SourceList.OBJECT == "3C273")) == 2
    bright = (Source.SLID == one.SLID) & (Source.MAG_AUTO < 22)
    assert len(bright) == int(np.sum(mag < 22))
    cone = one.cone(float(ra[0]), float(dec[0]), 5.0).table()
    assert list(cone["SID"]) == [1]
    al = AssociateListTask(ids=[(one.SLID, "s"), (two.SLID, "s")], radius=1.0, commit=1).execute()[0]
    assert al.n_matched == int(keep.sum()) and al.n_single == int((~keep).sum())
    pairs = al.pairs(one.SLID, two.SLID)
    kept = np.flatnonzero(keep) + 1  # the first list's SID of each source of the second
    assert np.all(kept[np.asarray(pairs["SID_2"]) - 1] == np.asarray(pairs["SID_1"]))
    moved = 0.2 * np.cos(np.radians(dec[np.asarray(pairs["SID_1"]) - 1]))  # 0.2" in RA
    assert np.allclose(pairs["distance"], moved, atol=0.01)
    assert len(Association.associatelist == al) == 300 + int(keep.sum())
    assert (AssociateList.ALID == al.ALID).first().n_lists == 2
