"""Catalogue rows at scale: bulk insert, cone queries and columnar fetch, on SQLite and PostgreSQL.

One source list of 1,000,000 SExtractor-like rows (a 10 x 10 deg field,
~10,000 sources per square degree) is inserted with the declared row type
(:mod:`awe.db.rows`: HEALPix index computed, rows sorted, executemany on SQLite,
binary COPY on PostgreSQL; the indexes exist during the insert, the commit is
timed), then 1-arcmin cones are queried (every result checked against a
brute-force numpy great-circle cut) and 100,000 rows are fetched into an
astropy Table. Each is compared, in the same run, with a plain peer:

* insert: the same rows, already as Python tuples, into an identical table by
  raw ``sqlite3`` ``executemany`` / psycopg ``copy.write_row`` (the driver's floor,
  without the sky index computation);
* cone: numpy on the 1,000,000 positions in memory (no database);
* fetch: ``astropy.table.Table.read`` of the same 100,000 rows from a FITS file,
  and the row-by-row way (``[dict(row) for row in result.mappings()]``, then a Table).

Goals: insert >= 50,000 rows/s (SQLite), >= 200,000 rows/s (PostgreSQL).

    python benchmarks/bench_rows.py [--rows 1000000] [--cones 100] [--fetch 100000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awe.config import load_settings  # noqa: E402
from awe.db.commit import commit  # noqa: E402
from awe import context  # noqa: E402
from awe.db.persistent import Field, Float, Integer, String  # noqa: E402
from awe.db.rows import Parent, Rows, _separation_deg  # noqa: E402
from awe.db.schema import DBObject  # noqa: E402

FIELD = (150.0, 2.0, 10.0)  # centre RA, Dec and side [deg]


class BenchSourceList(DBObject):
    """Stand-in for a SourceList (no columns of its own)."""


#: the benchmark's tables stay out of awe's schema
BENCH_METADATA = sa.MetaData()


class BenchSource(Rows):
    """A SExtractor-like source."""

    __tablename__ = "bench_sources"
    __metadata__ = BENCH_METADATA

    sourcelist = Parent("BenchSourceList", "the source list")
    ra = Field(Float, "right ascension", unit="deg")
    dec = Field(Float, "declination", unit="deg")
    NUMBER = Field(Integer, "running number in the source list")
    MAG_AUTO = Field(Float, "Kron magnitude", unit="mag")
    MAGERR_AUTO = Field(Float, "error of MAG_AUTO", unit="mag")
    FLUX_RADIUS = Field(Float, "half-light radius", unit="arcsec")
    FWHM = Field(Float, "full width at half maximum", unit="arcsec")
    CLASS_STAR = Field(Float, "star/galaxy classifier")
    FLAGS = Field(Integer, "SExtractor flags")
    NAME = Field(String(24), "source name")


class PeerSource(BenchSource):
    """The twin table of the peer insert."""

    __tablename__ = "bench_sources_peer"


def make_sources(n: int, seed: int = 1) -> Table:
    rng = np.random.default_rng(seed)
    ra0, dec0, side = FIELD
    t = Table()
    t["ra"] = ra0 + (rng.uniform(-0.5, 0.5, n) * side) / np.cos(np.radians(dec0))
    t["dec"] = dec0 + rng.uniform(-0.5, 0.5, n) * side
    t["NUMBER"] = np.arange(1, n + 1)
    t["MAG_AUTO"] = rng.uniform(16, 25, n)
    t["MAGERR_AUTO"] = 0.01 * 10 ** (0.2 * (t["MAG_AUTO"] - 20))
    t["FLUX_RADIUS"] = rng.uniform(0.3, 3.0, n)
    t["FWHM"] = rng.uniform(0.6, 2.5, n)
    t["CLASS_STAR"] = rng.uniform(0, 1, n)
    t["FLAGS"] = rng.integers(0, 8, n)
    t["NAME"] = np.char.add("S", t["NUMBER"].astype(str))
    return t


def _median_ms(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def peer_insert(sources: Table, label: str, parent_id: int) -> float:
    """Rows/s of the driver's plain bulk path into a twin table (same columns, keys and indexes)."""
    twin = PeerSource.__table__
    names = [c.name for c in twin.columns if c.name != "row_id"]
    from awe.db.rows import _unit_vectors, healpix_index
    columns = {"sourcelist_id": np.full(len(sources), parent_id),
               "healpix": healpix_index(sources["ra"], sources["dec"])}
    columns.update(zip(("cx", "cy", "cz"), _unit_vectors(np.asarray(sources["ra"]), np.asarray(sources["dec"]))))
    tuples = list(zip(*[(columns[c] if c in columns else np.asarray(sources[c])).tolist() for c in names]))
    with context.engine.begin() as conn:
        twin.drop(conn, checkfirst=True)
        twin.create(conn)
    t0 = time.perf_counter()
    with context.engine.begin() as conn:
        driver = conn.connection.driver_connection
        quoted = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in names)
        if label == "sqlite":
            cur = driver.cursor()
            for k in range(0, len(tuples), 50_000):
                cur.executemany(f"INSERT INTO bench_sources_peer ({quoted}) VALUES ({', '.join('?' * len(names))})",
                                tuples[k:k + 50_000])
            cur.close()
        else:
            with driver.cursor() as cur, cur.copy(f"COPY bench_sources_peer ({quoted}) FROM STDIN") as copy:
                for row in tuples:
                    copy.write_row(row)
    rate = len(tuples) / (time.perf_counter() - t0)
    with context.engine.begin() as conn:
        twin.drop(conn)
    return rate


def run(url: str | None, label: str, n_rows: int, n_cones: int, n_fetch: int, tmp: Path) -> None:
    settings = load_settings(home=str(tmp / label), workdir=str(tmp), user="bench", database_url=url,
                             storage=str(tmp / label / "storage"))
    context.connect(settings, create_user=True)
    BENCH_METADATA.create_all(context.engine, tables=[BenchSource.__table__], checkfirst=True)
    sources = make_sources(n_rows)
    sl = BenchSourceList(filename=f"bench-sourcelist-{label}.fits")
    commit([(sl, None)])

    peer_rate = peer_insert(sources, label, sl.object_id)
    t0 = time.perf_counter()
    BenchSource.insert(sl, sources)
    seconds = time.perf_counter() - t0
    rate = n_rows / seconds
    goal = 50_000 if label == "sqlite" else 200_000
    print(f"[{label}] insert {n_rows:,} rows: {seconds:.2f} s = {rate:,.0f} rows/s (goal >= {goal:,}) "
          f"{'ok' if rate >= goal else 'SLOW'}; peer {'executemany' if label == 'sqlite' else 'copy.write_row'} "
          f"{peer_rate:,.0f} rows/s: ratio {rate / peer_rate:.2f}")
    t0 = time.perf_counter()
    with context.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    print(f"[{label}] ANALYZE {time.perf_counter() - t0:.2f} s")

    # cones of 1 arcmin at random places of the field, each checked against numpy
    rng = np.random.default_rng(7)
    ra0, dec0, side = FIELD
    ra_all, dec_all = np.asarray(sources["ra"]), np.asarray(sources["dec"])
    times, found, numpy_times = [], [], []
    for _ in range(n_cones):
        ra = ra0 + rng.uniform(-0.45, 0.45) * side / np.cos(np.radians(dec0))
        dec = dec0 + rng.uniform(-0.45, 0.45) * side
        t0 = time.perf_counter()
        table = BenchSource.cone(ra, dec, 60.0).table()
        times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        inside = _separation_deg(ra, dec, ra_all, dec_all) <= 60.0 / 3600
        numpy_times.append((time.perf_counter() - t0) * 1000)
        if sorted(table["NUMBER"]) != sorted(sources["NUMBER"][inside]):
            raise AssertionError(f"cone at ({ra}, {dec}) found {len(table)} rows, numpy {int(inside.sum())}")
        found.append(len(table))
    ours, peer = statistics.median(times), statistics.median(numpy_times)
    print(f"[{label}] cone 1 arcmin: {ours:.1f} ms median over {n_cones} cones, {np.mean(found):.1f} rows found "
          f"(all equal to numpy's); numpy over {n_rows:,} positions in memory {peer:.1f} ms: ratio {peer / ours:.1f}x")

    # fetch 100,000 rows into a Table; peers: FITS file into a Table, row-by-row from the database
    query = BenchSource.sourcelist == sl
    ours, table = _median_ms(lambda: query[:n_fetch], 3)
    path = tmp / f"fetch-{label}.fits"
    table.write(path, overwrite=True)
    fits_ms, _ = _median_ms(lambda: Table.read(path), 3)

    def row_by_row() -> Table:
        stmt, _ = query._select()
        with context.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt.limit(n_fetch)).mappings()]
        return Table(rows=rows)
    rows_ms, _ = _median_ms(row_by_row, 3)
    print(f"[{label}] fetch {len(table):,} rows x {len(table.colnames)} columns into a Table: {ours:.0f} ms "
          f"= {len(table) / ours * 1000:,.0f} rows/s; Table.read(FITS) {fits_ms:.0f} ms: ratio {ours / fits_ms:.1f}x "
          f"slower; row by row {rows_ms:.0f} ms: ratio {rows_ms / ours:.1f}x faster")
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cones", type=int, default=100)
    parser.add_argument("--fetch", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(None, "sqlite", args.rows, args.cones, args.fetch, Path(tmp))
        if not args.no_postgres:
            from tests._postgres import PostgresServer
            server = PostgresServer()
            try:
                run(server.new_database(), "postgresql", args.rows, args.cones, args.fetch, Path(tmp))
            finally:
                server.stop()


if __name__ == "__main__":
    main()
