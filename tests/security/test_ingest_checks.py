# ruff: noqa: F811  (the pytest fixture imported from tests.security._raw is a parameter)
"""Ingest refuses impossible headers and flags suspicious ones, one line per file; the raw-data squat is gone.

Bad files are made by editing real simulated raw files (awe/sim/_rawfile.py writes the headers), a card at a
time. On SQLite and PostgreSQL; on PostgreSQL the privileged functions are also called through raw SQL as
each user's own role.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid

import sqlalchemy as sa
from astropy.time import Time

from awe import context
from awe.db import privileged
from awe.db.session import Session
from awe.instruments import get_instrument
from awe.model import QualityFlags, RawFrame
from awe.tasks.ingest import ingest

from tests.security._raw import BIAS, DOME, SCIENCE, STANDARD, edited, make_user, raw_files  # noqa: F401

CONAD = "HIERARCH ESO DET OUT1 CONAD"


def _mjd(date_obs: str) -> float:
    return round(float(Time(date_obs, scale="utc").mjd), 8)


def _moved(date_obs: str) -> dict:
    """Cards giving an exposure a new, self-consistent time (so it is a new exposure)."""
    return {"DATE-OBS": date_obs, "MJD-OBS": _mjd(date_obs)}


# ====================================================================== refused and flagged
def test_bad_headers_fail_alone_and_suspicious_ones_are_flagged(db, raw_files, tmp_path):
    src = raw_files[SCIENCE]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(raw_files[BIAS], inbox)  # a good file among them
    bad = {
        "nan-exptime.fits": dict(raw_cards={"EXPTIME": "EXPTIME =                  NaN / Total integration time"}),
        "nan-object.fits": dict(raw_cards={"OBJECT": "OBJECT  = NaN"}),
        "negative-exptime.fits": dict(cards={"EXPTIME": -5.0}),
        "dec-95.fits": dict(cards={"DEC": 95.0}),
        "dec-minus-91.fits": dict(cards={"DEC": -91.0}),
        "ra-400.fits": dict(cards={"RA": 400.0}),
        "mjd-2s-off.fits": dict(cards={"MJD-OBS": _mjd("2003-03-04T04:43:52.117") + 2.0 / 86400}),
        "negative-airmass.fits": dict(cards={"HIERARCH ESO TEL AIRM START": -1.2}),
        "inf-airmass.fits": dict(raw_cards={"HIERARCH ESO TEL AIRM START":
                                            "HIERARCH ESO TEL AIRM START = 1e999 / Airmass at start"}),
    }
    for name, edits in bad.items():
        edited(src, inbox / name, **edits)
    truncated = inbox / "truncated.fits"
    truncated.write_bytes(src.read_bytes()[:200_000])
    # suspicious but usable: each a new exposure (its own time stamp)
    edited(src, inbox / "zero-exptime.fits", cards={"EXPTIME": 0.0, **_moved("2003-03-04T05:00:00.000")})
    edited(raw_files[STANDARD], inbox / "no-gain.fits", extension_cards={CONAD: None})
    edited(raw_files[DOME], inbox / "zero-gain.fits", cards=_moved("2003-03-03T20:10:00.000"),
           extension_cards={CONAD: 0.0})

    report = ingest(inbox)
    text = str(report)
    failed = {r.path.name: r.message for r in report.failed}
    assert set(failed) == set(bad) | {"truncated.fits"}, text
    expected = {
        "nan-exptime.fits": "cannot be parsed", "nan-object.fits": "cannot be parsed",
        "negative-exptime.fits": "EXPTIME = -5.0 s is negative", "dec-95.fits": "DEC = 95.0 deg is outside -90..+90",
        "dec-minus-91.fits": "outside -90..+90", "ra-400.fits": "RA = 400.0 deg is outside 0..360",
        "mjd-2s-off.fits": "differs from DATE-OBS", "negative-airmass.fits": "is negative",
        "inf-airmass.fits": "not a finite number", "truncated.fits": "truncated",
    }
    for name, words in expected.items():
        assert words in failed[name], (name, failed[name])
    lines = text.splitlines()
    for name in failed:  # exactly one FAILED line each, naming the file; no traceback
        assert sum(line.startswith("FAILED") and name in line for line in lines) == 1
    assert "Traceback" not in text
    # the good file and the three suspicious ones went in; the suspicious ones flagged, with a WARNING line
    ingested = {r.path.name: r for r in report.ingested}
    assert set(ingested) == {BIAS, "zero-exptime.fits", "no-gain.fits", "zero-gain.fits"}, text
    assert {f.quality_flags for f in ingested[BIAS].frames} == {0}
    assert {f.quality_flags & QualityFlags.ZERO_EXPTIME for f in ingested["zero-exptime.fits"].frames} == \
        {QualityFlags.ZERO_EXPTIME}
    for name in ("no-gain.fits", "zero-gain.fits"):
        frames = ingested[name].frames
        assert all(f.quality_flags & QualityFlags.GAIN_ASSUMED for f in frames)
        assert {f.chip.name: f.gain for f in frames} == {c.name: c.gain for c in get_instrument("WFI").chips}
    warning = {name: [line for line in lines if line.startswith("WARNING") and name in line]
               for name in ("zero-exptime.fits", "no-gain.fits", "zero-gain.fits")}
    assert "EXPTIME = 0 s" in warning["zero-exptime.fits"][0]
    assert "is missing; used the instrument's gain" in warning["no-gain.fits"][0]
    assert "0, not positive" in warning["zero-gain.fits"][0]
    # nothing of the refused files is in the database or the storage
    names = sorted(f.filename for f in RawFrame.all())
    assert len(names) == 32 and sorted(context.storage.list()) == names
    # select() leaves the flagged frames out
    assert {f.raw_file for f in RawFrame.select(chip="ccd50")} == {BIAS}


# ====================================================================== the raw-data squat
def test_raw_squat(db, raw_files, make_user):
    tag = uuid.uuid4().hex[:6]
    alice, bob = make_user(f"alice{tag}"), make_user(f"bob{tag}")
    private_a, private_b = alice.project.name, bob.project.name
    # alice keeps a raw file in her private project: bob can still ingest it into ALL
    with alice.activate():
        assert ingest([raw_files[DOME]]).results[0].status == "ingested"
    bob.set_project("ALL")
    with bob.activate():
        result = ingest([raw_files[DOME]]).results[0]
    assert result.status == "ingested", str(result)
    assert "now published in ALL" in result.message and private_a not in result.message
    with bob.activate():
        assert len(RawFrame.raw_file == DOME) == 8  # bob sees them in ALL
    # bob keeps another one private: alice is told only "another project you cannot see"
    with bob.activate():
        bob.set_project(private_b)
        assert ingest([raw_files[BIAS]]).results[0].status == "ingested"
    with alice.activate():
        told = ingest([raw_files[BIAS]]).results[0]
    assert told.status == "skipped" and "another project you cannot see" in told.message
    assert private_b not in told.message and "--project ALL" in told.message
    # ... and ingesting it into ALL publishes it
    alice.set_project("ALL")
    with alice.activate():
        public = ingest([raw_files[BIAS]]).results[0]
        assert public.status == "ingested" and len(RawFrame.raw_file == BIAS) == 8
    # in her own private project: named, and she is offered to publish it
    alice.set_project(private_a)
    with alice.activate():
        assert ingest([raw_files[SCIENCE]]).results[0].status == "ingested"
    alice.set_project("ALL")
    with alice.activate():
        own = ingest([raw_files[SCIENCE]]).results[0]
    assert own.status == "skipped" and f"project {private_a}" in own.message
    assert "context.migrate(f, 'ALL')" in own.message and f"context.set_project('{private_a}')" in own.message
    # what stays private stays invisible
    with bob.activate():
        bob.set_project(private_b)
        frames = RawFrame.raw_file == SCIENCE
        assert len(frames) == 0  # alice's private frames stay invisible to bob


def test_privileged_functions_as_each_users_role(db, raw_files, make_user):
    """PostgreSQL: the SECURITY DEFINER functions, called through raw SQL as the users' own roles."""
    if context.engine.dialect.name != "postgresql":
        with context.engine.connect() as conn:
            assert not privileged.installed(conn)  # SQLite: the same statements run as plain SQL
        return
    tag = uuid.uuid4().hex[:6]
    alice, bob = make_user(f"alice{tag}"), make_user(f"bob{tag}")
    with alice.activate():
        ingest([raw_files[DOME]])
    chip = f"{DOME[:-5]}_1.fits"
    with alice.activate():
        checksum = (RawFrame.filename == chip)[0].checksum
    with context.engine.begin() as conn:
        all_id = _all_id(conn)
        forced = conn.execute(sa.text("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'objects'")).scalar()
        if not forced:  # no row-level security set up here: bind every non-superuser to his own rows, as it would
            conn.execute(sa.text("ALTER TABLE objects ENABLE ROW LEVEL SECURITY"))
            conn.execute(sa.text("ALTER TABLE objects FORCE ROW LEVEL SECURITY"))
            conn.execute(sa.text("CREATE POLICY test_own ON objects USING (creator = current_user)"))
        if not privileged.installed(conn):
            privileged.install(conn)
    with _as(bob) as conn:
        row = conn.execute(sa.text("SELECT * FROM awe_file_status(:n, :c)"),
                           {"n": [chip, "nothing.fits"], "c": [checksum, checksum]}).all()
        # taken, same content, and nothing else: neither the checksum nor the project
        assert [tuple(r) for r in row] == [(chip, True, None, None, None)]
        wrong = conn.execute(sa.text("SELECT * FROM awe_publish_raw(:n, :c, :t)"),
                             {"n": [chip], "c": ["0" * 64], "t": all_id}).all()
        assert wrong == []  # without the same content nothing moves
    with _as(alice) as conn:
        (r,) = conn.execute(sa.text("SELECT * FROM awe_file_status(:n, :c)"), {"n": [chip], "c": ["0" * 64]}).all()
        assert not r.same and r.checksum == checksum and r.project_name == alice.project.name  # hers: named
        assert chip in set(conn.execute(sa.text("SELECT * FROM awe_referenced_files()")).scalars())
    with _as(bob) as conn:
        moved = conn.execute(sa.text("SELECT * FROM awe_publish_raw(:n, :c, :t)"),
                             {"n": [chip], "c": [checksum], "t": all_id}).scalars().all()
        assert moved == [chip]


@contextlib.contextmanager
def _as(session: Session):
    """A transaction acting as the session's database role: its own login where row-level security is set up,
    else ``SET LOCAL ROLE`` to a role of that name from the test's (superuser) connection."""
    if session.engine.url.username == session.user:
        with session.engine.begin() as conn:
            yield conn
        return
    with context.engine.begin() as conn:
        if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": session.user}).first() is None:
            conn.execute(sa.text(f'CREATE ROLE "{session.user}" NOLOGIN'))
        conn.execute(sa.text(f'SET LOCAL ROLE "{session.user}"'))
        yield conn


def _all_id(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT id FROM projects WHERE name = 'ALL'")).scalar())
