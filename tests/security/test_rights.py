"""Who may change, delete and publish what: rights read from the database, never from the Python object.

On SQLite and PostgreSQL. Each refusal leaves the database as it was.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from awe.db.accounts import PrivilegeError
from awe.db.audit import history
from awe.db.publish import delete, migrate
from awe.db.query import Query
from awe.db.schema import DBObject
from awe.model import RawBiasFrame
from tests.security._team import TeamProduct, forged, make_team


@pytest.fixture
def team(db):
    t = make_team(db)
    yield t
    t.close()


def _row(session, object_id):
    t = DBObject.__table__
    with session.engine.connect() as conn:
        return conn.execute(sa.select(t.c.project_id, t.c.is_valid, t.c.quality_flags).where(
            t.c.object_id == object_id)).first()


def _raw(session, raw):
    return (RawBiasFrame.filename == raw.filename).using(session)[0]


def test_only_the_creator_or_the_managers_change_mutable_attributes(team):
    raw_as_bob = _raw(team.bob, team.raws[0])
    with pytest.raises(PrivilegeError, match="only its creator tester or the managers of ALL"):
        raw_as_bob.update(is_valid=0)
    public_as_bob = (TeamProduct.filename == "alice-public.fits").using(team.bob)[0]
    for change in ({"is_valid": 0}, {"quality_flags": 4}, {"timestamp_end": None}):
        with pytest.raises(PrivilegeError):
            public_as_bob.update(**change)
    assert tuple(_row(team.admin, team.raws[0].object_id))[1:] == (1, 0)
    assert history(team.bob) == []  # nothing was changed, nothing recorded
    # the creator may, and so may the administrators for ALL
    public_as_alice = (TeamProduct.filename == "alice-public.fits").using(team.alice)[0]
    public_as_alice.update(is_valid=0)
    _raw(team.admin, team.raws[0]).update(quality_flags=8)
    trail = history(team.bob)
    assert [(c.user, c.filename, c.attribute, c.old, c.new, c.project) for c in trail] == [
        ("alice", "alice-public.fits", "is_valid", 1, 0, "ALL"),
        ("tester", team.raws[0].filename, "quality_flags", 0, 8, "ALL")]
    assert history(team.bob, team.raws[0].object_id)[0].attribute == "quality_flags"


def test_a_forged_object_changes_deletes_and_publishes_nothing(team):
    private = team.alice_private
    bob_project = team.bob.project.id
    attempts = held = 0
    for project_id in (bob_project, team.admin.database.public_project_ids()[0]):
        fake = forged(private, team.bob, project_id=project_id)
        for attempt in (lambda: fake.update(is_valid=0), lambda: delete(team.bob, fake),
                        lambda: migrate(team.bob, fake, "ALL"), lambda: migrate(team.bob, fake, "BOB")):
            attempts += 1
            with pytest.raises(PrivilegeError):
                attempt()
            held += 1
    row = _row(team.alice, private.object_id)
    assert row is not None and row.is_valid == 1 and row.project_id == team.alice.project.id
    assert [o.filename for o in Query(TeamProduct, session=team.alice)] == ["alice-private.fits",
                                                                            "alice-public.fits"]
    # a forged copy of the shared raw frames cannot be deleted or flagged by someone who did not make them
    fake_raw = forged(team.raws[1], team.bob, project_id=bob_project)
    for attempt in (lambda: fake_raw.update(is_valid=0), lambda: delete(team.bob, fake_raw)):
        attempts += 1
        with pytest.raises(PrivilegeError):
            attempt()
        held += 1
    assert tuple(_row(team.admin, team.raws[1].object_id))[1:] == (1, 0)
    assert held == attempts == 10


def test_delete_by_the_creator_only_and_recorded(team):
    public_as_bob = (TeamProduct.filename == "alice-public.fits").using(team.bob)[0]
    with pytest.raises(PrivilegeError, match="only its creator alice"):
        delete(team.bob, public_as_bob)
    delete(team.alice, (TeamProduct.filename == "alice-public.fits").using(team.alice)[0])
    assert len(Query(TeamProduct, session=team.bob)) == 0
    assert [(c.user, c.attribute) for c in history(team.bob)][-1] == ("alice", "deleted")


def test_migrating_a_product_that_is_published_already_links_to_it(team):
    # bob made the same product as alice (same class and provenance) and something from it; alice published first
    from awe.db.commit import commit
    from awe.db.lineage import dependencies
    mine = TeamProduct(filename="alice-prov.fits", frames=[_raw(team.alice, r) for r in team.raws[2:]],
                       provenance="same-provenance")
    (mine,) = commit([(mine, None)], session=team.alice)
    migrate(team.alice, mine, "ALL")
    twin = TeamProduct(filename="bob-twin.fits", frames=[_raw(team.bob, r) for r in team.raws[2:]],
                       provenance="same-provenance")
    (twin,) = commit([(twin, None)], session=team.bob)
    (child,) = commit([(TeamProduct(filename="bob-child.fits", frames=[]), None)], session=team.bob)
    from awe.db.schema import links
    with team.bob.engine.begin() as conn:  # the child was made from bob's twin
        conn.execute(links.insert().values(child_id=child.object_id, role="frames", position=0,
                                           parent_id=twin.object_id))
    result = migrate(team.bob, child, "ALL")
    assert sorted(o.filename for o in result) == ["alice-prov.fits", "bob-child.fits"]
    public = team.admin.database.public_project_ids()
    in_all = {o.filename for o in Query(TeamProduct, session=team.admin).filter(TeamProduct.project_id.in_(public))}
    assert in_all == {"alice-public.fits", "alice-prov.fits", "bob-child.fits"}
    # the published child depends on the published twin, not on bob's private copy
    published_child = (TeamProduct.filename == "bob-child.fits").using(team.alice)[0]
    assert "alice-prov.fits" in {o.filename for o in dependencies(published_child, session=team.alice)}
    assert "bob-twin.fits" not in {o.filename for o in dependencies(published_child, session=team.bob)}


def test_exclusion_list_honoured_by_selections_and_logged(team, caplog):
    from awe.db.audit import exclude, excluded, include
    from awe.tasks.calibration import BiasTask
    raw = _raw(team.bob, team.raws[0])
    with pytest.raises(ValueError, match="reason"):
        exclude(team.bob, raw, "")
    exclude(team.bob, raw, "satellite trail")
    assert _row(team.admin, raw.object_id).is_valid == 1  # the frame itself is not touched
    assert set(excluded(team.bob)) == {raw.object_id} and excluded(team.alice) == {}
    with team.bob.activate():
        names = {f.filename for f in RawBiasFrame.select(instrument="WFI", chip="ccd50")}
        assert raw.filename not in names and len(names) == 3
    with team.alice.activate():
        assert len(RawBiasFrame.select(instrument="WFI", chip="ccd50")) == 4
    # someone else flags a frame: bob's selection says so
    _raw(team.admin, team.raws[1]).update(is_valid=0)
    with team.bob.activate(), caplog.at_level(logging.INFO, logger="awe"):
        frames = BiasTask(instrument="WFI", chip="ccd50")._raw_frames(RawBiasFrame, "raw biases", False)
    assert len(frames) == 2
    text = caplog.text
    assert f"{raw.filename}: on the exclusion list of project BOB (by bob: satellite trail)" in text
    assert f"{team.raws[1].filename}: flagged by tester" in text and "is_valid 1 -> 0" in text
    assert include(team.bob, raw) and excluded(team.bob) == {}
