"""The Astro-WISE query language (spec sections 5 and 6), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from awe.db.query import QueryError, night_of, observing_night
from awe.model import RawBiasFrame, RawDomeFlatFrame, RawFrame
from tests import _factory


@pytest.fixture
def night(db):
    _factory.biases(10, "ccd50")
    _factory.biases(4, "ccd51", start=dt.datetime(2003, 3, 5, 18, 0))
    return db


def test_spec_bias_query(night):
    q = (RawBiasFrame.instrument.name == "WFI") & (RawBiasFrame.chip.name == "ccd50")
    assert len(q) == 10
    rows = [(b.filename, b.imstat.median, b.imstat.stdev) for b in q]
    assert len(rows) == 10
    assert all(name.endswith("_1.fits") for name, _, _ in rows)
    assert {m for _, m, _ in rows} == {180.0, 181.0, 182.0, 183.0}
    assert list(q)[0].filename == q[0].filename
    assert q[-1].filename == rows[-1][0]
    assert [o.filename for o in q[2:4]] == [r[0] for r in rows[2:4]]
    with pytest.raises(IndexError):
        q[10]


def test_python_and_is_refused(night):
    a = RawBiasFrame.instrument.name == "WFI"
    b = RawBiasFrame.chip.name == "ccd50"
    with pytest.raises(TypeError, match="&"):
        a and b  # noqa: B018  (the spec's section 6 mistake)
    with pytest.raises(TypeError):
        if RawBiasFrame.chip:
            pass


def test_operators(night):
    assert len(RawBiasFrame.chip.name != "ccd50") == 4
    assert len((RawBiasFrame.chip.name == "ccd50") | (RawBiasFrame.chip.name == "ccd51")) == 14
    assert len(~(RawBiasFrame.chip.name == "ccd50")) == 4
    assert len(RawBiasFrame.imstat.median >= 182) == len([b for b in RawBiasFrame.all() if b.imstat.median >= 182])
    assert len(RawBiasFrame.imstat.median < 181) + len(RawBiasFrame.imstat.median >= 181) == 14
    assert len(RawBiasFrame.imstat.stdev <= 28.0) == 2  # 28.0 on both chips' first frame
    assert len(RawBiasFrame.imstat.stdev > 28.0) == 12
    assert len(RawBiasFrame.filename.like("WFI.2003-03-03*_1.fits")) == 10
    assert len(RawBiasFrame.filename.like("WFI.2003-03-0?T18:02*")) == 1
    assert len(RawBiasFrame.OBJECT.like("BIAS")) == 14
    assert len(RawBiasFrame.filename.like("%")) == 0  # SQL wildcards are literal


def test_header_attributes_and_subclasses(night):
    assert len(RawBiasFrame.EXPTIME == 0.0) == 14
    assert len(RawBiasFrame.DATE_OBS > dt.datetime(2003, 3, 4)) == 4
    # a query on a base class sees its subclasses; another raw class sees none of them
    assert len(RawFrame.filename != "") == 14
    assert len(RawDomeFlatFrame.filename != "") == 0


def test_order_by_in_place_and_max(night):
    q = RawBiasFrame.filename != ""
    q.order_by("imstat.stdev")  # as in the spec: no reassignment
    values = [f.imstat.stdev for f in q]
    assert values == sorted(values)
    q.order_by("-imstat.stdev")
    assert [f.imstat.stdev for f in q] == sorted(values, reverse=True)
    assert q.values("imstat.stdev") == sorted(values, reverse=True)
    newest = (RawBiasFrame.chip.name == "ccd50").max("DATE_OBS")
    assert newest.DATE_OBS == max(b.DATE_OBS for b in RawBiasFrame.chip.name == "ccd50")
    oldest = (RawBiasFrame.chip.name == "ccd51").min("DATE_OBS")
    assert oldest.DATE_OBS == dt.datetime(2003, 3, 5, 18, 0)
    assert (RawBiasFrame.chip.name == "nope").max("DATE_OBS") is None
    latest = (RawBiasFrame.filename != "").max("creation_date")
    assert latest is not None


def test_select_by_night(night):
    assert len(RawBiasFrame.select(instrument="WFI", chip="ccd50", date="2003-03-03")) == 10
    assert len(RawBiasFrame.select(instrument="WFI", chip="ccd50", date="2003-03-04")) == 0
    assert len(RawBiasFrame.select(instrument="WFI", date="2003-03-05")) == 4


def test_select_ignores_flagged_and_invalid(night):
    q = RawBiasFrame.select(instrument="WFI", chip="ccd50")
    first, second = q[0], q[1]
    first.update(quality_flags=1)  # written at once
    second.update(is_valid=0)
    assert len(RawBiasFrame.select(instrument="WFI", chip="ccd50")) == 8
    assert len((RawBiasFrame.chip.name == "ccd50")) == 10
    assert (RawBiasFrame.filename == first.filename)[0].quality_flags == 1


def test_unknown_attribute_errors_name_the_valid_ones(night):
    with pytest.raises(QueryError, match="valid attributes"):
        RawBiasFrame.seeing
    with pytest.raises(QueryError, match="imstat"):
        RawBiasFrame.imstat.mode
    with pytest.raises(QueryError, match="chip"):
        RawBiasFrame.chip.colour
    with pytest.raises(QueryError):
        (RawBiasFrame.filename != "").order_by("nonsense")


def test_query_runs_in_sql_with_joins(night):
    q = (RawBiasFrame.instrument.name == "WFI") & (RawBiasFrame.chip.name == "ccd50")
    sql = q.sql().upper()
    assert "JOIN" in sql and "CLASS_NAME IN" in sql and "PROJECT_ID IN" in sql


def test_observing_night():
    start, end = observing_night("2003-03-03", -70.7346)
    assert start == dt.datetime(2003, 3, 3, 16, 42, 56, 304000) or abs(
        (start - dt.datetime(2003, 3, 3, 16, 43)).total_seconds()) < 60
    assert end - start == dt.timedelta(days=1)
    assert night_of(dt.datetime(2003, 3, 4, 4, 42, 29), -70.7346) == dt.date(2003, 3, 3)
    assert night_of(dt.datetime(2003, 3, 3, 18, 2), -70.7346) == dt.date(2003, 3, 3)
    with pytest.raises(ValueError, match="ISO date"):
        observing_night("3 March", 0.0)
