"""Query and lineage speed with 100,000 frames in the database, on SQLite and PostgreSQL.

Fills a fresh database with raw frames of 8 chips over many nights and derived
products linked to them (reduced frames made of raw + bias + flat, and one
"coadd" of 250 reduced frames), then times the spec's queries (count, select,
order_by, max) and the lineage walk of the coadd back to all its raw frames.
Goal: each query under 50 ms median; the 250-input lineage walk under 200 ms.

    python benchmarks/bench_query.py [--frames 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awe.config import load_settings  # noqa: E402
from awe import context  # noqa: E402
from awe.db.persistent import Inputs  # noqa: E402
from awe.db.schema import DBObject, links  # noqa: E402
from awe.model import BaseFrame, RawBiasFrame, RawDomeFlatFrame, RawScienceFrame  # noqa: E402


class BenchReduced(DBObject):
    """Stand-in for a derived frame (only lineage roles, no extra columns)."""

    raw = Inputs("RawScienceFrame")
    calibrations = Inputs("RawBiasFrame")


class BenchCoadd(DBObject):
    parts = Inputs("BenchReduced")


def fill(n_frames: int) -> int:
    """Insert ~n_frames objects with links; returns the coadd's object id."""
    from tests._factory import instrument
    inst = instrument()
    chips = {c.name: c for c in __import__("awe.model", fromlist=["Chip"]).Chip.all()}
    table = DBObject.__table__
    pid = context.project.id
    kinds = ["RawBiasFrame", "RawDomeFlatFrame", "RawScienceFrame"]
    rows = []
    start = dt.datetime(2003, 1, 1, 18)
    n_raw = int(n_frames * 0.7)
    for i in range(n_raw):
        chip = chips[f"ccd{50 + i % 8}"]
        kind = kinds[(i // 8) % 3]
        when = start + dt.timedelta(minutes=i // 8)
        rows.append(dict(class_name=kind, filename=f"WFI.{when.isoformat()}_{i % 8 + 1}-{i}.fits", project_id=pid,
                         creator="bench", creation_date=when, quality_flags=0, is_valid=1,
                         instrument_id=inst.object_id, chip_id=chip.object_id, DATE_OBS=when,
                         MJD_OBS=52640 + i / 11520, EXPTIME=0.0 if kind == "RawBiasFrame" else 30.0,
                         OBJECT="3C273" if kind == "RawScienceFrame" else "FLAT", imstat_median=180.0 + i % 7,
                         imstat_stdev=28.0 + (i % 13) / 10))
    with context.engine.begin() as conn:
        # each frame is a row in objects, frames and raw_frames (joined-table layout)
        tables = RawBiasFrame._tables
        for k in range(0, len(rows), 5000):
            chunk = rows[k:k + 5000]
            conn.execute(table.insert(), [{c: r[c] for c in r if c in table.c} for r in chunk])
        ids = dict(conn.execute(sa.select(table.c.filename, table.c.object_id)).all())
        for family in tables[1:]:
            family_rows = [{"object_id": ids[r["filename"]], **{c: r[c] for c in r if c in family.c}} for r in rows]
            for k in range(0, len(family_rows), 5000):
                conn.execute(family.insert(), family_rows[k:k + 5000])
        raw_ids = [ids[r["filename"]] for r in rows if r["class_name"] == "RawScienceFrame"]
        bias_ids = [ids[r["filename"]] for r in rows if r["class_name"] == "RawBiasFrame"]
        n_derived = n_frames - n_raw - 1
        derived = [dict(class_name="BenchReduced", filename=f"Sci-red-{i}.fits", project_id=pid, creator="bench",
                        creation_date=start + dt.timedelta(seconds=i), quality_flags=0, is_valid=1)
                   for i in range(n_derived)]
        for k in range(0, len(derived), 5000):
            conn.execute(table.insert(), derived[k:k + 5000])
        red_ids = list(conn.execute(sa.select(table.c.object_id).where(table.c.class_name == "BenchReduced")
                                    .order_by(table.c.object_id)).scalars())
        link_rows = []
        for j, rid in enumerate(red_ids):
            link_rows.append(dict(child_id=rid, role="raw", position=0, parent_id=raw_ids[j % len(raw_ids)]))
            for p in range(2):
                link_rows.append(dict(child_id=rid, role="calibrations", position=p,
                                      parent_id=bias_ids[(j * 2 + p) % len(bias_ids)]))
        for k in range(0, len(link_rows), 10000):
            conn.execute(links.insert(), link_rows[k:k + 10000])
        coadd = conn.execute(table.insert().values(class_name="BenchCoadd", filename="Coadd-bench.fits",
                                                   project_id=pid, creator="bench", quality_flags=0, is_valid=1,
                                                   creation_date=start)).inserted_primary_key[0]
        conn.execute(links.insert(), [dict(child_id=coadd, role="parts", position=p, parent_id=rid)
                                      for p, rid in enumerate(red_ids[:250])])
    with context.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    return coadd


def timed(fn, repeat: int) -> tuple[float, object]:
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def run(url: str | None, label: str, n_frames: int, repeat: int, tmp: Path) -> None:
    settings = load_settings(home=str(tmp / label), workdir=str(tmp), user="bench", database_url=url,
                             storage=str(tmp / label / "storage"))
    context.connect(settings, create_user=True)
    t0 = time.perf_counter()
    coadd_id = fill(n_frames)
    n_total = len(DBObject.object_id > 0)
    print(f"[{label}] filled {n_total} objects in {time.perf_counter() - t0:.1f} s")
    queries = {
        "count: len((RawBiasFrame.instrument.name=='WFI') & (RawBiasFrame.chip.name=='ccd50'))":
            lambda: len((RawBiasFrame.instrument.name == "WFI") & (RawBiasFrame.chip.name == "ccd50")),
        "select: list(RawDomeFlatFrame.select(instrument, chip, date))":
            lambda: len(list(RawDomeFlatFrame.select(instrument="WFI", chip="ccd53", date="2003-01-03"))),
        "order_by: (RawScienceFrame.chip.name=='ccd55').order_by('imstat.stdev')[:20]":
            lambda: len((RawScienceFrame.chip.name == "ccd55").order_by("imstat.stdev")[:20]),
        "polymorphic: (BaseFrame.chip.name=='ccd50').order_by('-MJD_OBS')[:50]":
            lambda: len({type(o).__name__ for o in (BaseFrame.chip.name == "ccd50").order_by("-MJD_OBS")[:50]}),
        "polymorphic count: len(BaseFrame.EXPTIME > 10)":
            lambda: len(BaseFrame.EXPTIME > 10),
        "max: (RawScienceFrame.OBJECT=='3C273').max('creation_date')":
            lambda: (RawScienceFrame.OBJECT == "3C273").max("creation_date").filename,
        "lineage: coadd of 250 inputs -> all raw frames":
            lambda: len(BenchCoadd.get(coadd_id).dependencies(raw_only=True)),
    }
    for name, fn in queries.items():
        median, result = timed(fn, repeat)
        goal = 200 if name.startswith("lineage") else 50
        print(f"[{label}] {median:8.1f} ms (goal < {goal} ms) {'ok ' if median < goal else 'SLOW'} {name} -> {result}")
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(None, "sqlite", args.frames, args.repeat, Path(tmp))
        if not args.no_postgres:
            from tests._postgres import PostgresServer
            server = PostgresServer()
            try:
                run(server.new_database(), "postgresql", args.frames, args.repeat, Path(tmp))
            finally:
                server.stop()


if __name__ == "__main__":
    main()
