"""Concurrency on SQLite and PostgreSQL: identical tasks at once, supersession, first use, ids never reused.

Real processes (``multiprocessing``, spawn) with their own sessions, started
together at a barrier:

* two BiasTasks on the same chip commit ONE product: the database admits one
  current product per (class, provenance, project) (a partial unique index);
  the loser returns the winner's product and leaves no file behind;
* ``redo=1``, re-making after invalidation and re-making a product whose file
  is gone supersede the older product (``superseded_by``, kept, not deleted);
* several processes opening a new database and using a new instrument at once
  all succeed, and make each entity once;
* an object id is never given out again after a delete.
"""

from __future__ import annotations

import logging
import multiprocessing
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from awe import context
from awe.config import Settings, load_settings
from awe.db.commit import commit
from awe.db.publish import delete
from awe.db.schema import CURRENT_PRODUCT_INDEX, DBObject
from awe.db.session import Session
from awe.model import BiasFrame
from awe.sim import simulate_night
from awe.tasks import BiasTask
from tests.conftest import _connect

SCALE = 0.0625
BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680", "2003-03-03T19:20:11.815", "2003-03-03T19:21:15.723",
          "2003-03-03T19:22:22.821", "2003-03-03T19:23:24.843", "2003-03-03T19:24:24.163",
          "2003-03-03T19:25:31.810"]
#: processes racing in the first-use scenarios
RACERS = 5


def _spawn() -> Any:
    return multiprocessing.get_context("spawn")


# --------------------------------------------------------------------- child processes (module level: spawn)
def _bias_in_child(settings: Settings, barrier: Any, chip: str) -> dict[str, Any]:
    """Run BiasTask(commit=1) in this process with its own session, after the barrier."""
    session = Session.open(settings)
    barrier.wait(timeout=120)
    try:
        [bias] = BiasTask(instrument="WFI", chip=chip, overscan=6, commit=1, session=session).execute()
        return {"object_id": bias.object_id, "filename": bias.filename, "provenance": bias.provenance}
    finally:
        session.database.dispose()


def _first_use_in_child(settings: Settings, barrier: Any) -> str:
    """Open a (new) database and use the WFI instrument, after the barrier; 'ok' or the error."""
    try:
        barrier.wait(timeout=120)
        session = Session.open(settings, create_user=True)
        with session.activate():
            from awe.model.entities import ensure_instrument
            ensure_instrument("WFI")
        session.database.dispose()
        return "ok"
    except Exception as exc:  # reported by the test
        return f"{type(exc).__name__}: {exc}"


def _race(target: Any, args_of: Any, n: int) -> list[Any]:
    ctx = _spawn()
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            pending = [pool.apply_async(target, args_of(barrier)) for _ in range(n)]
            return [p.get(timeout=600) for p in pending]


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def raw_biases(tmp_path_factory):
    return simulate_night(tmp_path_factory.mktemp("raw"), scale=SCALE, seed=3, only=BIASES)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def night(request, raw_biases, tmp_path_factory):
    """Raw biases ingested into a fresh database (SQLite, then PostgreSQL)."""
    from awe.tasks.ingest import ingest
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    root = tmp_path_factory.mktemp(f"night-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _connect(root, None, postgres=server)
        report = ingest([raw_biases])
        assert not report.failed, str(report)
        yield SimpleNamespace(kind=request.param, root=root, settings=context.session.settings)
        context.close()


def _current(chip: str) -> list[BiasFrame]:
    return list((BiasFrame.chip.name == chip) & (BiasFrame.superseded_by == None))  # noqa: E711


def _all(chip: str) -> list[BiasFrame]:
    return sorted(BiasFrame.chip.name == chip, key=lambda b: b.object_id)


# --------------------------------------------------------------------- identical tasks at once
def test_two_identical_tasks_at_once_commit_one_product(night):
    results = _race(_bias_in_child, lambda barrier: (night.settings, barrier, "ccd50"), 2)
    ids = {r["object_id"] for r in results}
    assert len(ids) == 1, f"two products with the same provenance were committed: {results}"
    [current] = _current("ccd50")
    assert current.object_id in ids
    assert len(_all("ccd50")) == 1  # no superseded loser either: the loser adopted the winner's product
    stored = set(context.session.storage.list())
    loser_files = {r["filename"] for r in results} - {current.filename}
    assert current.filename in stored
    assert not loser_files & stored, f"the loser's file was left in the storage: {loser_files & stored}"
    workdir = night.settings.workdir
    assert not [f for f in loser_files if (workdir / f).exists()], "the loser's working file was left behind"


def test_the_database_itself_refuses_a_second_current_product(night):
    """The rule holds for any writer, not only for awe's commit: raw SQL gets a unique violation."""
    [current] = _current("ccd50")
    table = DBObject.__table__
    with context.engine.connect() as conn:
        row = dict(conn.execute(sa.select(table).where(table.c.object_id == current.object_id)).mappings().one())
    row.pop("object_id")
    row["filename"] = "Cal-FORGED-twin.fits"
    with pytest.raises(sa.exc.IntegrityError) as err, context.engine.begin() as conn:
        conn.execute(table.insert().values(**row))
    assert CURRENT_PRODUCT_INDEX in str(err.value) or "objects.provenance" in str(err.value)


def test_commit_of_an_identical_twin_adopts_the_committed_product(night, tmp_path):
    """A second commit of the same key (made before the first one was committed) returns the first product."""
    [current] = _current("ccd50")
    twin = BiasTask(instrument="WFI", chip="ccd50", overscan=6, redo=1)
    [made] = twin.execute()  # not committed (commit=0): the same provenance as the current one
    assert made.provenance == current.provenance and made.object_id is None
    made.__dict__["_replaces"] = None  # as if it had been made before ``current`` was committed
    path = night.settings.workdir / made.filename
    [result] = commit([(made, path)], session=context.session)
    assert result.object_id == current.object_id and result.filename == current.filename
    assert made.filename not in set(context.session.storage.list())
    assert len(_all("ccd50")) == 1


def test_many_identical_commits_at_once_insert_one_row(night, tmp_path):
    """Eight threads commit identical products (same key) at once, each with its own file: one row,
    every commit returns it, only its file stays in the storage (the in-transaction check on SQLite,
    the unique index and a retry on PostgreSQL)."""
    import threading

    import numpy as np

    from awe.model._io import write_image
    from awe.model import Chip
    [bias] = _current("ccd50")
    [chip] = Chip.name == "ccd57"  # a chip no other test here makes a bias of
    n = 8
    barrier = threading.Barrier(n)
    results: dict[int, Any] = {}
    provenance = f"race-{night.kind}".ljust(40, "0")

    def run(i: int) -> None:
        path = write_image(tmp_path / f"race-{i}.fits", np.full((4, 4), i, np.float32), {})
        obj = BiasFrame(filename=f"Cal-TESTER-race-{night.kind}-{i}.fits", provenance=provenance,
                        instrument=bias.instrument, chip=chip)
        obj.__dict__["_replaces"] = None  # each was made when no such product existed
        barrier.wait(timeout=60)
        try:
            results[i] = commit([(obj, path)], session=context.session)[0]
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    assert not errors, errors
    assert len({r.object_id for r in results.values()}) == 1
    rows = list(BiasFrame.provenance == provenance)
    assert len(rows) == 1
    stored = {f for f in context.session.storage.list() if f.startswith(f"Cal-TESTER-race-{night.kind}-")}
    assert stored == {rows[0].filename}


# --------------------------------------------------------------------- superseding
def test_redo_invalidation_and_a_lost_file_supersede_the_older_product(night, caplog):
    [first] = _current("ccd50")
    [second] = BiasTask(instrument="WFI", chip="ccd50", overscan=6, redo=1, commit=1).execute()
    assert second.object_id != first.object_id and second.provenance == first.provenance
    # invalidated: the next run makes it again and supersedes it
    second.update(is_valid=0)
    [third] = BiasTask(instrument="WFI", chip="ccd50", overscan=6, commit=1).execute()
    assert third.object_id not in (first.object_id, second.object_id)
    # the file of the current one is gone from the storage: made again, logged
    context.session.storage.delete(third.filename)
    with caplog.at_level(logging.WARNING, logger="awe"):
        [fourth] = BiasTask(instrument="WFI", chip="ccd50", overscan=6, commit=1).execute()
    assert "its file is gone from the data storage" in caplog.text and third.filename in caplog.text
    assert fourth.object_id != third.object_id
    # each older one is kept, marked superseded by the next; one current product
    chain = {b.object_id: b for b in _all("ccd50")}
    assert chain[first.object_id].superseded_by == second.object_id
    assert chain[second.object_id].superseded_by == third.object_id
    assert chain[third.object_id].superseded_by == fourth.object_id
    assert [b.object_id for b in _current("ccd50")] == [fourth.object_id]
    # lineage of a superseded product is intact
    assert len(chain[first.object_id].dependencies(raw_only=True)) == len(BIASES)
    # the current one is reused (no new product)
    [again] = BiasTask(instrument="WFI", chip="ccd50", overscan=6, commit=1).execute()
    assert again.object_id == fourth.object_id


def test_two_redo_tasks_at_once_leave_one_current_product(night):
    [before] = _current("ccd51") or BiasTask(instrument="WFI", chip="ccd51", overscan=6, commit=1).execute()
    results = _race(_bias_in_child_redo, lambda barrier: (night.settings, barrier, "ccd51"), 2)
    current = _current("ccd51")
    assert len(current) == 1, [b.object_id for b in current]
    assert current[0].object_id in {r["object_id"] for r in results}
    old = {b.object_id: b for b in _all("ccd51")}[before.object_id]
    assert old.superseded_by is not None  # kept, superseded


def _bias_in_child_redo(settings: Settings, barrier: Any, chip: str) -> dict[str, Any]:
    session = Session.open(settings)
    barrier.wait(timeout=120)
    try:
        [bias] = BiasTask(instrument="WFI", chip=chip, overscan=6, commit=1, redo=1, session=session).execute()
        return {"object_id": bias.object_id, "filename": bias.filename}
    finally:
        session.database.dispose()


# --------------------------------------------------------------------- ids
def test_object_ids_are_never_reused_after_a_delete(night):
    [bias] = BiasTask(instrument="WFI", chip="ccd52", overscan=6, commit=1).execute()
    deleted = bias.object_id
    delete(context.session, bias)
    [again] = BiasTask(instrument="WFI", chip="ccd52", overscan=6, commit=1).execute()
    assert again.object_id > deleted, f"object id {deleted} was given out again after its delete"


# --------------------------------------------------------------------- first use
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_first_use_races_on_a_new_database(kind, tmp_path, request):
    """RACERS processes open a new database at once and use a new instrument: every one succeeds and each
    entity (schema, ``ALL``, the administrator, the instrument with its chips and filters) is made once.

    SQLite: the embedded database of one user (its first user becomes its administrator). PostgreSQL:
    a new, empty database opened by its owner (the role that set up the server).
    """
    if kind == "postgresql":
        server = request.getfixturevalue("postgres")
        url, user, password = server.new_database(), "awe", server.password
    else:
        url, user, password = f"sqlite:///{tmp_path}/new/awe.sqlite", "racer", None
    counter = iter(range(RACERS))

    def settings(_barrier: Any) -> tuple[Settings, Any]:
        n = next(counter)
        return (load_settings(home=str(tmp_path / f"home{n}"), workdir=str(tmp_path / f"work{n}"), user=user,
                              password=password, database_url=url, storage=str(tmp_path / "storage")), _barrier)

    results = _race(_first_use_in_child, settings, RACERS)
    assert results == ["ok"] * RACERS, results
    engine = sa.create_engine(url)  # PostgreSQL: as the owner, who sees every row
    try:
        with engine.connect() as conn:
            count = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                     for t in ("instruments", "chips", "filters")}
            public = conn.execute(sa.text("SELECT count(*) FROM projects WHERE name = 'ALL'")).scalar()
            users = conn.execute(sa.text("SELECT count(*) FROM users WHERE name = :u"), {"u": user}).scalar()
    finally:
        engine.dispose()
    assert count["instruments"] == 1 and count["chips"] == 8 and count["filters"] > 0, count
    assert public == 1
    assert users == 1
