"""Schema migrations: revisions build the declared schema; older databases upgrade in place, newer are refused."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import awe
from awe.config import load_settings
from awe.db import engine as db_engine
from awe.db.engine import (MIGRATIONS, DatabaseError, _migrating, ensure_schema, head_revision, known_revisions,
                           make_engine, schema_revision, upgrade)
from awe.db.migrations.autogen import schema_differences, write_revision

#: :func:`schema_fingerprint` of the tables ``metadata.create_all`` made in release 0.1.0 (git 1e5206c), on SQLite
RELEASE_0001_FINGERPRINT = "d46be7f465626e302d66d1da620db515f7bc116882c69b1ebeac404670d996e6"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request, tmp_path):
    """An engine on a fresh, empty database: SQLite file, then a throw-away PostgreSQL database."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    else:
        url = f"sqlite:///{tmp_path}/awe.sqlite"
    engine = make_engine(url)
    yield engine
    engine.dispose()


def schema_fingerprint(engine: sa.Engine) -> str:
    """A hash of the reflected tables, columns, keys and indexes (Alembic's own table left out)."""
    insp = sa.inspect(engine)
    desc = {}
    for t in sorted(insp.get_table_names()):
        if t == "alembic_version":
            continue
        desc[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            "pk": insp.get_pk_constraint(t),
            "fks": sorted((fk["name"], fk["constrained_columns"], fk["referred_table"], fk["referred_columns"],
                           fk.get("options", {}).get("ondelete")) for fk in insp.get_foreign_keys(t)),
            "indexes": sorted((ix["name"], ix["column_names"], bool(ix["unique"])) for ix in insp.get_indexes(t)),
            "unique": sorted((u["name"], u["column_names"]) for u in insp.get_unique_constraints(t)),
        }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------- 0001 as it was
# the tables and columns of revision 0001, written out here (not the live metadata) so the rows below
# are exactly what a database of the first release holds
_T = sa.DateTime
R0001 = {
    "users": sa.table("users", sa.column("id", sa.Integer), sa.column("name", sa.String),
                      sa.column("password_hash", sa.String), sa.column("created", _T)),
    "projects": sa.table("projects", sa.column("id", sa.Integer), sa.column("name", sa.String),
                         sa.column("description", sa.String), sa.column("kind", sa.String),
                         sa.column("owner_id", sa.Integer), sa.column("created", _T)),
    "memberships": sa.table("memberships", sa.column("project_id", sa.Integer), sa.column("user_id", sa.Integer)),
    "instruments": sa.table("instruments", sa.column("object_id", sa.Integer), sa.column("class_name", sa.String),
                            sa.column("name", sa.String), sa.column("pixel_scale", sa.Float)),
    "chips": sa.table("chips", sa.column("object_id", sa.Integer), sa.column("class_name", sa.String),
                      sa.column("name", sa.String), sa.column("index", sa.Integer),
                      sa.column("instrument_id", sa.Integer)),
    "objects": sa.table("objects", *(sa.column(n, t) for n, t in [
        ("object_id", sa.Integer), ("class_name", sa.String), ("filename", sa.String), ("project_id", sa.Integer),
        ("creator", sa.String), ("creation_date", _T), ("is_valid", sa.Integer), ("process_params", sa.JSON),
        ("provenance", sa.String), ("instrument_id", sa.Integer), ("chip_id", sa.Integer), ("DATE_OBS", _T),
        ("MJD_OBS", sa.Float), ("EXPTIME", sa.Float), ("imstat_median", sa.Float), ("read_noise", sa.Float),
        ("bad_columns", sa.JSON), ("timestamp_start", _T), ("timestamp_end", _T), ("name", sa.String),
        ("kind", sa.String), ("n_sources", sa.Integer)])),
    "links": sa.table("links", sa.column("child_id", sa.Integer), sa.column("role", sa.String),
                      sa.column("position", sa.Integer), sa.column("parent_id", sa.Integer)),
    "refcat_sources": sa.table("refcat_sources", sa.column("source_id", sa.Integer),
                               sa.column("catalog_id", sa.Integer), sa.column("ra", sa.Float),
                               sa.column("dec", sa.Float), sa.column("mag", sa.Float), sa.column("name", sa.String),
                               sa.column("extra", sa.JSON)),
}
_NIGHT = dt.datetime(2003, 3, 3, 19, 23, 24, 843000)
ROWS = {
    "users": [dict(id=1, name="observer", password_hash=None, created=_NIGHT),
              dict(id=2, name="alice", password_hash="$argon2id$v=19$m=65536,t=3,p=4$xyz", created=_NIGHT)],
    "projects": [dict(id=1, name="ALL", description="public", kind="public", owner_id=None, created=_NIGHT),
                 dict(id=2, name="OBSERVER", description=None, kind="private", owner_id=1, created=_NIGHT)],
    "memberships": [dict(project_id=2, user_id=1), dict(project_id=2, user_id=2)],
    "instruments": [dict(object_id=1, class_name="Instrument", name="WFI", pixel_scale=0.238)],
    "chips": [dict(object_id=1, class_name="Chip", name="ccd50", index=6, instrument_id=1)],
    "objects": [
        dict(object_id=1, class_name="RawBiasFrame", filename="WFI.2003-03-03T19:23:24.843_6.fits", project_id=1,
             creator="observer", creation_date=_NIGHT, is_valid=1, process_params=None, provenance=None,
             instrument_id=1, chip_id=1, DATE_OBS=_NIGHT, MJD_OBS=52701.80792642, EXPTIME=0.0,
             imstat_median=405.5, read_noise=None, bad_columns=None, timestamp_start=None, timestamp_end=None,
             name=None, kind=None, n_sources=None),
        dict(object_id=2, class_name="BiasFrame", filename="cal_bias_ccd50.fits", project_id=2, creator="observer",
             creation_date=_NIGHT + dt.timedelta(hours=14), is_valid=2,
             process_params={"SIGMA_CLIP": 3.0, "OVERSCAN_CORRECTION": 6}, provenance="ab" * 20,
             instrument_id=1, chip_id=1, DATE_OBS=_NIGHT, MJD_OBS=52701.80792642, EXPTIME=None,
             imstat_median=0.25, read_noise=5.41, bad_columns=None, timestamp_start=_NIGHT,
             timestamp_end=_NIGHT + dt.timedelta(days=7), name=None, kind=None, n_sources=None),
        dict(object_id=3, class_name="ReferenceCatalog", filename=None, project_id=1, creator="observer",
             creation_date=_NIGHT, is_valid=1, process_params=None, provenance=None, instrument_id=None,
             chip_id=None, DATE_OBS=None, MJD_OBS=None, EXPTIME=None, imstat_median=None, read_noise=None,
             bad_columns=None, timestamp_start=None, timestamp_end=None, name="landolt", kind="standard",
             n_sources=2),
        dict(object_id=4, class_name="HotPixelMap", filename="cal_hot_ccd50.fits", project_id=2, creator="observer",
             creation_date=_NIGHT + dt.timedelta(hours=15), is_valid=1, process_params={"MAXIMUM_FRACTION": 0.01},
             provenance="cd" * 20, instrument_id=1, chip_id=1, DATE_OBS=_NIGHT, MJD_OBS=52701.80792642,
             EXPTIME=None, imstat_median=0.0, read_noise=None, bad_columns=[12, 1040], timestamp_start=_NIGHT,
             timestamp_end=_NIGHT + dt.timedelta(days=7), name=None, kind=None, n_sources=None),
    ],
    "links": [dict(child_id=2, role="raw_bias_frames", position=0, parent_id=1)],
    "refcat_sources": [
        dict(source_id=1, catalog_id=3, ra=187.2779, dec=2.0524, mag=12.86, name="3C273", extra={"B-V": 0.21}),
        dict(source_id=2, catalog_id=3, ra=187.31, dec=2.01, mag=14.1, name="SA104-334", extra=None)],
}


def _fill_0001(engine: sa.Engine) -> None:
    """Insert :data:`ROWS` into those of 0001's tables the database has (``refcat_sources`` only up to 0001)."""
    present = set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        for name, rows in ROWS.items():
            if name in present:
                conn.execute(R0001[name].insert(), rows)


#: where 0003 (joined tables) moved 0001's ``objects`` columns: family table -> {its column: 0001's column}
MOVED_0003 = {
    "frames": {c: c for c in ("instrument_id", "chip_id", "DATE_OBS", "MJD_OBS", "EXPTIME", "imstat_median")},
    "bias_frames": {"read_noise_adu": "read_noise"},
    "pixel_maps": {"bad_columns": "bad_columns"},
    "reference_catalogs": {c: c for c in ("name", "kind", "n_sources")},
}


def _read_0001(engine: sa.Engine) -> dict[str, list[dict]]:
    """The rows of those of 0001's tables (and columns) the database has.

    After 0003 the product attributes of ``objects`` are read back from the family
    tables they moved to, so the rows compare with what 0001 held.
    """
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    result: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        for name, table in R0001.items():
            if name not in present:
                continue
            have = {c["name"] for c in inspector.get_columns(name)}
            columns = [c for c in table.c if c.name in have]
            result[name] = [dict(r._mapping) for r in conn.execute(sa.select(*columns).select_from(table).order_by(
                *(c for c in columns if not isinstance(c.type, sa.JSON))))]
        if "objects" in result and "frames" in present:
            by_id = {row["object_id"]: row for row in result["objects"]}
            for row in by_id.values():
                row.update({c.name: None for c in R0001["objects"].c if c.name not in row})
            for family, columns in MOVED_0003.items():
                fam = sa.table(family, sa.column("object_id", sa.Integer),
                               *(sa.column(new, R0001["objects"].c[old].type) for new, old in columns.items()))
                for found in conn.execute(sa.select(fam)).mappings():
                    by_id[found["object_id"]].update({old: found[new] for new, old in columns.items()})
    return result


def _reference_sources(engine: sa.Engine) -> list[dict]:
    """The reference sources as 0002 keeps them, in row order."""
    table = sa.table("reference_sources", *(sa.column(c, sa.Float) for c in ("ra", "dec", "mag", "cx", "cy", "cz")),
                     *(sa.column(c, sa.Integer) for c in ("row_id", "catalog_id", "healpix")),
                     sa.column("name", sa.String), sa.column("extra", sa.JSON))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.row_id))]


def _later_revisions() -> list[str]:
    return known_revisions()[1:]


# --------------------------------------------------------------------- tests
def test_revisions_are_a_frozen_chain_of_explicit_operations():
    revisions = known_revisions()
    assert revisions[0] == "0001" and revisions[-1] == head_revision()
    files = sorted((MIGRATIONS / "versions").glob("*.py"))
    assert len(files) == len(revisions), "one file per revision, one head"
    for path in files:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
        assert "awe" not in imported, (
            f"{path.name} imports awe: a revision is explicit operations (and, for a data copy, its own frozen "
            "computation), never the live metadata or code, which change with every release")
        assert {"alembic", "sqlalchemy"} <= imported


def test_0001_is_the_first_release_schema(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/r1.sqlite")
    upgrade(engine, "0001")
    assert schema_revision(engine) == "0001"
    assert schema_fingerprint(engine) == RELEASE_0001_FINGERPRINT, (
        "revision 0001 no longer builds the schema of release 0.1.0: never edit a released revision, "
        "write the next one (python -m awe.db.migrations.autogen)")
    engine.dispose()


def test_migrated_schema_matches_the_declared_tables(empty_engine):
    assert schema_revision(empty_engine) is None
    upgrade(empty_engine)
    assert schema_revision(empty_engine) == head_revision()
    differences = schema_differences(empty_engine)
    assert differences == [], (
        f"the declared tables differ from the migrated schema: {differences}; "
        "write a revision with `python -m awe.db.migrations.autogen \"message\"`")


def test_database_of_0001_upgrades_in_place_with_its_data(empty_engine):
    upgrade(empty_engine, "0001")
    _fill_0001(empty_engine)
    before = _read_0001(empty_engine)
    assert sum(map(len, before.values())) == sum(map(len, ROWS.values()))
    assert before["objects"][1]["process_params"] == {"SIGMA_CLIP": 3.0, "OVERSCAN_CORRECTION": 6}
    assert len(before["refcat_sources"]) == 2
    for revision in _later_revisions():  # one revision at a time, as successive releases would
        upgrade(empty_engine, revision)
        assert schema_revision(empty_engine) == revision
        after = _read_0001(empty_engine)
        assert after == {k: v for k, v in before.items() if k in after}, f"rows changed by revision {revision}"
    upgrade(empty_engine)
    assert schema_revision(empty_engine) == head_revision()
    assert schema_differences(empty_engine) == []
    after = _read_0001(empty_engine)
    assert after == {k: v for k, v in before.items() if k != "refcat_sources"}
    # 0002: the reference sources moved into the catalogue-row table, with the sky index a new insert computes
    from awe.db.rows import healpix_index
    moved = _reference_sources(empty_engine)
    assert [(r["catalog_id"], r["name"], r["mag"], r["extra"]) for r in sorted(moved, key=lambda r: r["name"])] == [
        (3, s["name"], s["mag"], s["extra"]) for s in sorted(ROWS["refcat_sources"], key=lambda s: s["name"])]
    ra, dec = np.array([r["ra"] for r in moved]), np.array([r["dec"] for r in moved])
    assert [r["healpix"] for r in moved] == healpix_index(ra, dec).tolist()
    assert [r["healpix"] for r in moved] == sorted(r["healpix"] for r in moved)  # sky order within the catalogue
    vectors = np.array([[r["cx"], r["cy"], r["cz"]] for r in moved])
    expected = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                         np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))], axis=1)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-15)
    with empty_engine.connect() as conn:  # the links still join
        pairs = conn.execute(sa.text("SELECT l.child_id, p.class_name FROM links l "
                                     "JOIN objects p ON p.object_id = l.parent_id")).all()
    assert [tuple(p) for p in pairs] == [(2, "RawBiasFrame")]


def test_database_of_a_newer_awe_is_refused_and_left_alone(empty_engine):
    upgrade(empty_engine, "0001")
    _fill_0001(empty_engine)
    upgrade(empty_engine)
    rows = _read_0001(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    for attempt in (lambda: upgrade(empty_engine), lambda: ensure_schema(empty_engine, auto_upgrade=True)):
        with pytest.raises(DatabaseError, match=r"schema revision '9999_future'.*newer awe") as raised:
            attempt()
        assert isinstance(raised.value, RuntimeError)
        assert schema_revision(empty_engine) == "9999_future"
    assert _read_0001(empty_engine) == rows


def test_ensure_schema_creates_an_empty_database_and_leaves_a_current_one(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/e.sqlite")
    assert ensure_schema(engine, auto_upgrade=False) == head_revision()  # an empty database gets the schema
    fingerprint = schema_fingerprint(engine)
    assert ensure_schema(engine, auto_upgrade=False) == head_revision()  # and then nothing happens
    assert schema_fingerprint(engine) == fingerprint
    engine.dispose()


def test_connect_upgrades_an_older_embedded_database_and_refuses_a_newer_one(probe_revision, tmp_path,
                                                                              monkeypatch):
    from awe import context
    old_head, _ = probe_revision
    monkeypatch.chdir(tmp_path)
    settings = load_settings(home=str(tmp_path / "home"), workdir=str(tmp_path), user="observer",
                             storage=str(tmp_path / "storage"))
    engine = make_engine(settings.database_url)
    upgrade(engine, "0001")
    _fill_0001(engine)
    upgrade(engine, old_head)
    before = _read_0001(engine)
    context.connect(settings, create_user=True)
    try:
        assert schema_revision(engine) == head_revision() != old_head
        after = _read_0001(engine)
        assert after["objects"] == before["objects"] and after["links"] == before["links"]
        assert after["users"] == before["users"]
    finally:
        context.close()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(DatabaseError, match="newer awe"):
        context.connect(settings, create_user=True)
    context.close()
    engine.dispose()


def test_awe_db_upgrade_on_a_current_database_changes_nothing(tmp_path):
    home = tmp_path / "home"
    engine = make_engine(f"sqlite:///{home}/awe.sqlite")
    upgrade(engine, "0001")
    _fill_0001(engine)
    upgrade(engine)
    with engine.connect() as conn:
        schema = sorted(conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all())
    rows = _read_0001(engine)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWE_")}
    env.update(AWE_HOME=str(home), AWE_USER="observer", HOME=str(tmp_path), PYTHONWARNINGS="ignore",
               PYTHONPATH=str(Path(awe.__file__).parents[1]))  # the awe under test, not the installed one
    out = subprocess.run([str(Path(sys.executable).with_name("awe")), "db", "upgrade"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert head_revision() in out.stdout
    with engine.connect() as conn:
        assert sorted(conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all()) == schema
    assert _read_0001(engine) == rows
    engine.dispose()


def test_upgrade_twice_is_a_noop(empty_engine):
    upgrade(empty_engine, "0001")
    _fill_0001(empty_engine)
    upgrade(empty_engine)
    fingerprint, rows = schema_fingerprint(empty_engine), _read_0001(empty_engine)
    upgrade(empty_engine)
    assert schema_fingerprint(empty_engine) == fingerprint and _read_0001(empty_engine) == rows
    assert schema_revision(empty_engine) == head_revision()


def test_sqlite_table_rebuild_keeps_links_and_a_failed_revision_changes_nothing(tmp_path):
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    engine = make_engine(f"sqlite:///{tmp_path}/rebuild.sqlite")
    upgrade(engine, "0001")
    _fill_0001(engine)
    before = _read_0001(engine)
    # rebuilding `objects` (how SQLite alters a table: copy, drop, rename) must not cascade into `links`
    with _migrating(engine) as conn:
        with Operations(MigrationContext.configure(conn)).batch_alter_table("objects", recreate="always") as op:
            op.add_column(sa.Column("rebuilt", sa.Integer, nullable=True))
    assert "rebuilt" in {c["name"] for c in sa.inspect(engine).get_columns("objects")}
    assert _read_0001(engine) == before
    # a revision that fails half-way leaves neither its DDL nor its data behind
    with pytest.raises(ZeroDivisionError):
        with _migrating(engine) as conn:
            conn.execute(sa.text("CREATE TABLE half_done (x INTEGER)"))
            conn.execute(sa.text("DELETE FROM links"))
            1 / 0
    assert "half_done" not in sa.inspect(engine).get_table_names()
    assert _read_0001(engine) == before
    # a change that leaves dangling references is refused before it commits
    with pytest.raises(DatabaseError, match=r"pointing at missing rows.*nothing was changed"):
        with _migrating(engine) as conn:
            conn.execute(sa.text("DELETE FROM objects WHERE object_id = 1"))
    assert _read_0001(engine) == before
    with engine.connect() as conn:  # the application's connections still enforce foreign keys
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def _probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str | None = None,
           comment: str | None = None) -> tuple[str, Path]:
    """Copy the migrations, change the metadata (a new column; optionally a new comment on
    ``objects.creator``) and let autogen write the next revision into the copy, comparing on ``url``.

    Gives (old head, the new revision's file); the copy and the changed metadata stay in force for the test.
    """
    import awe.model  # noqa: F401
    from awe.db import persistent
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(db_engine, "MIGRATIONS", migrations)
    old_head = head_revision()
    changed = sa.MetaData(naming_convention=persistent.metadata.naming_convention)
    for table in persistent.metadata.sorted_tables:
        table.to_metadata(changed)
    objects = changed.tables["objects"]
    objects.append_column(sa.Column("probe_seconds", sa.Float, nullable=True, comment="a probe [s]"))
    sa.Index("ix_objects_probe_seconds", objects.c.probe_seconds)
    if comment is not None:
        objects.c.creator.comment = comment
    monkeypatch.setattr(persistent, "metadata", changed)
    path = write_revision("probe seconds", url)
    assert path is not None and path.parent == migrations / "versions"
    return old_head, path


@pytest.fixture
def probe_revision(tmp_path, monkeypatch):
    """:func:`_probe` on SQLite: a copy of the migrations with one more revision (a new column)."""
    return _probe(tmp_path, monkeypatch)


def test_autogen_writes_the_next_revision_from_the_difference(probe_revision, tmp_path):
    old_head, path = probe_revision
    assert write_revision("nothing changed") is None  # in step again: a second run writes nothing
    assert len(list(path.parent.glob("*.py"))) == len(known_revisions())
    assert path.name == f"{int(old_head) + 1:04d}_probe_seconds.py"
    assert head_revision() == path.name[:4] and known_revisions()[-2] == old_head
    text = path.read_text()
    assert "add_column(sa.Column('probe_seconds'" in text and "ix_objects_probe_seconds" in text
    assert "awe" not in {n.module.split(".")[0] for n in ast.walk(ast.parse(text))
                         if isinstance(n, ast.ImportFrom) and n.module}
    engine = make_engine(f"sqlite:///{tmp_path}/probe.sqlite")
    upgrade(engine)
    assert schema_revision(engine) == head_revision()
    assert schema_differences(engine) == []
    engine.dispose()


def test_an_older_database_is_upgraded_on_request_with_its_data(probe_revision, tmp_path):
    old_head, _ = probe_revision
    engine = make_engine(f"sqlite:///{tmp_path}/old.sqlite")
    upgrade(engine, "0001")
    _fill_0001(engine)
    upgrade(engine, old_head)
    rows = _read_0001(engine)
    with pytest.raises(DatabaseError, match=rf"revision {old_head}, this awe needs {head_revision()}: "
                                            r"run `awe db upgrade`"):
        ensure_schema(engine, auto_upgrade=False)
    assert schema_revision(engine) == old_head
    assert ensure_schema(engine, auto_upgrade=True) == head_revision()
    assert schema_revision(engine) == head_revision() and _read_0001(engine) == rows
    assert schema_differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT object_id, probe_seconds FROM objects ORDER BY object_id")).all() == [
            (1, None), (2, None), (3, None), (4, None)]
    engine.dispose()


def test_downgrade_to_0001_gives_back_the_release_schema_and_rows(tmp_path):
    from alembic import command
    engine = make_engine(f"sqlite:///{tmp_path}/down.sqlite")
    upgrade(engine, "0001")
    _fill_0001(engine)
    before = _read_0001(engine)
    upgrade(engine)
    with _migrating(engine) as conn:
        command.downgrade(db_engine._alembic_config(conn), "0001")
    assert schema_revision(engine) == "0001"
    assert schema_fingerprint(engine) == RELEASE_0001_FINGERPRINT
    after = _read_0001(engine)

    def without_id(rows: list[dict]) -> list[dict]:  # the copy back numbers the sources anew, in sky order
        return sorted(({k: v for k, v in r.items() if k != "source_id"} for r in rows), key=lambda r: r["name"])
    assert without_id(after.pop("refcat_sources")) == without_id(before.pop("refcat_sources"))
    assert after == before
    engine.dispose()


def test_autogen_writes_comment_changes_apart_for_databases_that_keep_comments(postgres, tmp_path, monkeypatch):
    _, path = _probe(tmp_path, monkeypatch, url=postgres.new_database(), comment="probe: columns flagged [pix]")
    text = path.read_text()
    guarded = text.split("if op.get_context().dialect.supports_comments:")
    assert len(guarded) == 3, "the comment change, up and down, each under the guard"
    assert "op.alter_column('objects', 'creator'" in guarded[1] and "probe: columns flagged [pix]" in guarded[1]
    assert "batch_op.add_column(sa.Column('probe_seconds'" in guarded[0]
    assert "alter_column" not in guarded[0]  # not in a batch block: that would rebuild `objects` on SQLite
    for url in (f"sqlite:///{tmp_path}/c.sqlite", postgres.new_database()):
        engine = make_engine(url)
        upgrade(engine)
        assert schema_revision(engine) == head_revision() and schema_differences(engine) == []
        engine.dispose()


def test_0004_supersedes_duplicates_and_sqlite_ids_are_never_reused(empty_engine):
    """0004 on a database with data: older products of one (class, provenance, project) are marked
    superseded by the newest (then the database admits one current product per key), and SQLite
    tables get AUTOINCREMENT with their rows kept."""
    upgrade(empty_engine, "0001")
    _fill_0001(empty_engine)
    upgrade(empty_engine, "0003")
    objects = sa.table("objects", *(sa.column(n) for n in ("object_id", "class_name", "filename", "project_id",
                                                          "provenance", "is_valid", "quality_flags")))
    rows = [dict(object_id=100 + i, class_name="BiasFrame", filename=f"Cal-dup-{i}.fits", project_id=1,
                 provenance="a" * 40, is_valid=1, quality_flags=0) for i in range(3)]
    rows.append(dict(object_id=110, class_name="BiasFrame", filename="Cal-other.fits", project_id=1,
                     provenance="b" * 40, is_valid=1, quality_flags=0))
    rows.append(dict(object_id=111, class_name="BiasFrame", filename="Cal-gone.fits", project_id=1,
                     provenance="c" * 40, is_valid=1, quality_flags=0))
    with empty_engine.begin() as conn:
        conn.execute(objects.insert(), rows)
        conn.execute(sa.delete(objects).where(objects.c.object_id == 111))
    before = _read_0001(empty_engine)
    upgrade(empty_engine)
    assert schema_differences(empty_engine) == []
    assert _read_0001(empty_engine) == before  # the rows 0001 knew are unchanged
    with empty_engine.connect() as conn:
        superseded = dict(conn.execute(sa.text("SELECT object_id, superseded_by FROM objects WHERE object_id >= 100")
                                       ).all())
    assert superseded == {100: 102, 101: 102, 102: None, 110: None}
    copy = {k: v for k, v in rows[0].items() if k != "object_id"}
    copy["filename"] = "Cal-dup-again.fits"
    with pytest.raises(sa.exc.IntegrityError), empty_engine.begin() as conn:  # a second current product
        conn.execute(objects.insert().values(**copy))
    if empty_engine.dialect.name == "sqlite":
        with empty_engine.connect() as conn:
            sql = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())
        for table in ("objects", "instruments", "chips", "filters", "users", "projects"):
            assert "AUTOINCREMENT" in sql[table], table
    # an id deleted after the upgrade is never given out again
    with empty_engine.begin() as conn:
        if empty_engine.dialect.name == "postgresql":  # the rows above were inserted with explicit ids
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('objects', 'object_id'), "
                                 "(SELECT max(object_id) FROM objects))"))
        conn.execute(sa.delete(objects).where(objects.c.object_id == 110))
        conn.execute(objects.insert().values(class_name="BiasFrame", filename="Cal-new.fits", project_id=1))
        new_id = conn.execute(sa.select(objects.c.object_id).where(objects.c.filename == "Cal-new.fits")).scalar()
    assert new_id > 110
