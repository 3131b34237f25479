"""Benchmark: the web application's catalogue-rows page on a 1,000,000-row source list, 20 concurrent clients.

One source list (a stand-in parent object) with 1,000,000 SExtractor-like rows (a 1 x 1 deg field) is served
by ``awe serve``'s application (uvicorn, in a child process, on 127.0.0.1). 20 clients, each logged in as the
list's owner, ask in a loop for:

* the first page sorted by MAG_AUTO (``/rows/BenchWebSource?parent=ID&sort=MAG_AUTO``),
* a deep page (page 10,000 of 20,000: rows 499,951..500,000 by MAG_AUTO) as its "next" link asks for it (a
  keyset cursor: the rows after the previous page's last (MAG_AUTO, row_id)), and the same page by its number
  (``page=10000``: the server reads it from its seek point, the row every 250 before it that it found once by
  walking the index from the nearest point it knew; the first request walks, in the warm-up),
* a 1-arcmin cone (``ra=..&dec=..&radius=60``, random centres in the field), sorted by MAG_AUTO;

one kind at a time (each for ``--seconds``), and the p50/p95 page times are reported per kind (goal: p95 <
300 ms). The server runs as ``awe serve --workers N`` (``--workers``, default one per core). Run on the
embedded SQLite database and on a throw-away PostgreSQL server, where the server logs in as an authenticator
and every request runs ``SET LOCAL ROLE`` to the user: row-level security on (the row table gets the policy
``rls.install`` gives catalogue row tables: a row is seen when its parent object is). After the insert the
tables are analysed (on PostgreSQL ``VACUUM ANALYZE`` by their owner, as autovacuum does after a large insert:
it sets the visibility map, so index-only scans need not visit the table).

The rows' table has an index on (parent, MAG_AUTO, row_id), the one a source list sorted by magnitude needs.

    python benchmarks/bench_web.py [--rows 1000000] [--clients 20] [--seconds 10] [--workers N] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awe.db.persistent import Field, Float, Integer  # noqa: E402
from awe.db.rows import Parent, Rows  # noqa: E402
from awe.db.schema import DBObject  # noqa: E402

FIELD = (150.0, 2.0, 1.0)  # centre RA, Dec and side [deg]
PASSWORD = "pw-bench"
BENCH_METADATA = sa.MetaData()


class BenchWebSourceList(DBObject):
    """Stand-in for a SourceList (no columns of its own)."""


class BenchWebSource(Rows):
    """A SExtractor-like source of the web benchmark."""

    __tablename__ = "bench_web_sources"
    __metadata__ = BENCH_METADATA

    sourcelist = Parent("BenchWebSourceList", "the source list")
    ra = Field(Float, "right ascension", unit="deg")
    dec = Field(Float, "declination", unit="deg")
    NUMBER = Field(Integer, "running number in the source list")
    MAG_AUTO = Field(Float, "Kron magnitude", unit="mag")
    MAGERR_AUTO = Field(Float, "error of MAG_AUTO", unit="mag")
    FLUX_RADIUS = Field(Float, "half-light radius", unit="arcsec")
    CLASS_STAR = Field(Float, "star/galaxy classifier")
    FLAGS = Field(Integer, "SExtractor flags")


_t = BenchWebSource.__table__
sa.Index("ix_bench_web_sources_mag", _t.c.sourcelist_id, _t.c.MAG_AUTO, _t.c.row_id)


KINDS = ("first page", "deep (next link)", "deep (offset)", "cone 1'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_sources(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ra0, dec0, side = FIELD
    mag = rng.uniform(16, 25, n)
    return {"ra": ra0 + rng.uniform(-0.5, 0.5, n) * side / np.cos(np.radians(dec0)),
            "dec": dec0 + rng.uniform(-0.5, 0.5, n) * side, "NUMBER": np.arange(1, n + 1), "MAG_AUTO": mag,
            "MAGERR_AUTO": 0.01 * 10 ** (0.2 * (mag - 20)), "FLUX_RADIUS": rng.uniform(0.3, 3.0, n),
            "CLASS_STAR": rng.uniform(0, 1, n), "FLAGS": rng.integers(0, 8, n)}


def _protect(conn: sa.Connection) -> None:
    """The policies ``rls.install`` gives a catalogue row table (its rows follow their parent object)."""
    from awe.db.rls import _may_change, group_role, quote
    t, key = "bench_web_sources", "bench_web_sources.sourcelist_id"
    group = quote(group_role(conn))
    conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {group}"))
    conn.execute(sa.text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {group}"))
    conn.execute(sa.text(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"))
    conn.execute(sa.text(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY"))
    conn.execute(sa.text(f"CREATE POLICY awe_read ON {t} FOR SELECT TO {group} USING "
                         f"(EXISTS (SELECT 1 FROM objects o WHERE o.object_id = {key}))"))
    conn.execute(sa.text(f"CREATE POLICY awe_insert ON {t} FOR INSERT TO {group} WITH CHECK "
                         f"(EXISTS (SELECT 1 FROM objects o WHERE o.object_id = {key} AND {_may_change('o')}))"))


def prepare(label: str, tmp: Path, n_rows: int, postgres: object = None) -> dict[str, str]:
    """A database with the source list and its rows; returns what the server process needs."""
    from awe import context
    from awe.config import load_settings
    from awe.db.commit import commit
    settings = load_settings(home=str(tmp / label), workdir=str(tmp), user="bench", password=PASSWORD,
                             storage=str(tmp / label / "storage"))
    env = {"AWE_HOME": str(tmp / label), "AWE_STORAGE": str(tmp / label / "storage")}
    if postgres is not None:
        url = postgres.new_awe_database(settings, "bench", PASSWORD)  # type: ignore[attr-defined]
        settings = settings.with_(database_url=url)
        owner = sa.create_engine(url)
        with owner.begin() as conn:
            BENCH_METADATA.create_all(conn)
            _protect(conn)
            from awe.db.rls import create_authenticator
            create_authenticator(conn, "awe_web", "pw-web")
        owner.dispose()
        env.update(AWE_DATABASE_URL=url, AWE_USER="awe_web", AWE_PASSWORD="pw-web")
    context.connect(settings, create_user=True)
    if postgres is None:
        BENCH_METADATA.create_all(context.engine)
    sl = BenchWebSourceList(filename=f"bench-web-sourcelist-{label}.fits")
    commit([(sl, None)])
    t0 = time.perf_counter()
    BenchWebSource.insert(sl, make_sources(n_rows))
    if postgres is not None:  # by the tables' owner (PostgreSQL skips the tables of others); VACUUM sets the
        # visibility map autovacuum sets after a large insert (index-only scans need not visit the table)
        analyse = sa.create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
        with analyse.connect() as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        analyse.dispose()
    else:
        with context.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    print(f"[{label}] {n_rows:,} rows inserted and analysed in {time.perf_counter() - t0:.1f} s", flush=True)
    env["BENCH_PARENT"] = str(sl.object_id)
    with context.engine.connect() as conn:  # the "next" link of page 9,999: the last row of rows 1..499,950
        mag, rid = conn.execute(sa.text('SELECT "MAG_AUTO", row_id FROM bench_web_sources WHERE sourcelist_id = :p '
                                        'ORDER BY "MAG_AUTO", row_id LIMIT 1 OFFSET :k'),
                                {"p": sl.object_id, "k": n_rows // 2 - 51}).one()
    env["BENCH_CURSOR"] = f"{float(mag)!r}:{int(rid)}"
    context.close()
    return env


def serve(port: int, workers: int) -> None:
    """The child process: the web application on 127.0.0.1:port, as ``awe serve --workers N`` runs it."""
    from awe.web.app import serve as run
    run("127.0.0.1", port, workers=workers, log_level="warning", access_log=False)


def logged_in(base: str, n_clients: int) -> list:
    """``n_clients`` HTTP clients logged in as the list's owner (before the clock starts: argon2 is slow on purpose)."""
    import httpx2 as httpx
    out = []
    for _ in range(n_clients):
        client = httpx.Client(base_url=base, timeout=120)
        r = client.post("/login", data={"username": "bench", "password": PASSWORD})
        if r.status_code != 303:
            raise RuntimeError(f"login: {r.status_code} {r.text[:200]}")
        out.append(client)
    return out


def clients(base: str, parent: int, cursor: str, pool: list, seconds: float,
            only: str | None = None) -> dict[str, list[float]]:
    """The clients of ``pool`` for ``seconds``, each asking for pages of every kind in turn (or only of ``only``)."""
    rng = np.random.default_rng(3)
    ra0, dec0, side = FIELD
    kinds = {
        "first page": lambda: f"/rows/BenchWebSource?parent={parent}&sort=MAG_AUTO",
        "deep (next link)": lambda: f"/rows/BenchWebSource?parent={parent}&sort=MAG_AUTO&page=10000&after={cursor}",
        "deep (offset)": lambda: f"/rows/BenchWebSource?parent={parent}&sort=MAG_AUTO&page=10000",
        "cone 1'": lambda: (f"/rows/BenchWebSource?parent={parent}&sort=MAG_AUTO"
                            f"&ra={ra0 + rng.uniform(-0.45, 0.45) * side / np.cos(np.radians(dec0)):.5f}"
                            f"&dec={dec0 + rng.uniform(-0.45, 0.45) * side:.5f}&radius=60"),
    }
    times: dict[str, list[float]] = {k: [] for k in ([only] if only else kinds)}
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        client = pool[i]
        names = [only] if only else list(kinds)
        k = i
        try:
            while time.monotonic() < stop:
                kind = names[k % len(names)]
                k += 1
                with lock:
                    url = kinds[kind]()
                t0 = time.perf_counter()
                r = client.get(url)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code != 200 or "found" not in r.text:
                    errors.append(f"{url}: {r.status_code}")
                    return
                with lock:
                    times[kind].append(elapsed)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pool))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"requests failed: {errors[:5]}")
    return times


def run(label: str, tmp: Path, n_rows: int, n_clients: int, seconds: float, postgres: object = None,
        workers: int = 1) -> None:
    env = prepare(label, tmp, n_rows, postgres)
    port = _free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--workers", str(workers)],
                             env={**os.environ, **env})
    try:
        import httpx2 as httpx
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        args = (base, int(env["BENCH_PARENT"]), env["BENCH_CURSOR"])
        pool = logged_in(base, n_clients)
        clients(*args, pool[:2], 3)  # warm up (caches, the count of each query)
        times = {}
        for kind in KINDS:  # one kind at a time: a slow kind does not queue the others behind it
            times.update(clients(*args, pool, seconds, only=kind))
        for client in pool:
            client.close()
    finally:
        child.terminate()
        child.wait(10)
    print(f"[{label}] {n_clients} concurrent clients, {workers} server worker(s), {seconds:.0f} s per kind of page "
          f"(load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):", flush=True)
    summary = {}
    for kind, values in times.items():
        if not values:
            print(f"[{label}]   {kind:16s}: no page finished in {seconds:.0f} s", flush=True)
            continue
        p50 = statistics.median(values)
        p95 = float(np.percentile(values, 95))
        summary[kind] = round(p95, 1)
        print(f"[{label}]   {kind:16s}: {len(values):5d} pages = {len(values) / seconds:5.1f}/s, "
              f"p50 {p50:6.0f} ms, p95 {p95:6.0f} ms "
              f"({'ok' if p95 < 300 else 'SLOW'}: goal p95 < 300 ms)", flush=True)
    print(json.dumps({label: summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="per kind of page")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="server processes (awe serve --workers; default: one per core)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workers)
        return
    with tempfile.TemporaryDirectory(prefix="awe-bench-web-") as tmp:
        if not args.no_sqlite:
            run("sqlite", Path(tmp), args.rows, args.clients, args.seconds, workers=args.workers)
        if not args.no_postgres:
            from tests._postgres import PostgresServer
            server = PostgresServer()
            try:
                run("postgresql", Path(tmp), args.rows, args.clients, args.seconds, server, args.workers)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
