"""Benchmark: a night's per-chip steps through the DPU on Dask LocalClusters of 1 and 2 workers (and in-process).

Simulates the calibration exposures of 2003-03-03 and ``--science`` 3C273 exposures at ``--scale``, ingests
them once into an embedded database, then for each executor on its own copy of that database runs the
course's recipes over all eight chips, each step one job per chip (``dpu.run('Bias', ...)`` ...
``dpu.run('MasterFlat', ...)``, then ``dpu.run('Reduce', instrument='WFI', object='3C273', ...)``, one job per
frame, followed by the mosaic satellite pass), committing everything: in-process, on a Dask ``LocalCluster``
of one worker and of ``--workers`` workers (one thread each). Prints each step's wall time for the three
and the speed-up Dask 1 worker / Dask ``--workers`` workers (2 cores: at most 2), and the same for the
total. No timing is asserted.

    .venv/bin/python benchmarks/bench_dpu.py [--scale 0.25] [--science 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

STEPS = [("Bias", {}), ("HotPixels", {}), ("DomeFlat", {"filter": "#844"}), ("ColdPixels", {"filter": "#844"}),
         ("TwilightFlat", {"filter": "#844"}), ("MasterFlat", {"filter": "#844"})]
BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680", "2003-03-03T19:20:11.815"]
DOMES = ["2003-03-03T19:45:17.277", "2003-03-03T19:46:58.069", "2003-03-03T19:48:27.232"]
TWILIGHTS = ["2003-03-03T23:46:15.975", "2003-03-03T23:48:12.051", "2003-03-03T23:50:42.573"]
SCIENCE = ["2003-03-04T04:43:52.117", "2003-03-04T04:48:39.640", "2003-03-04T04:53:26.208",
           "2003-03-04T04:58:13.771", "2003-03-04T05:03:00.339", "2003-03-04T05:07:47.902"]


def _settings(root: Path):
    from awe.config import load_settings
    return load_settings(home=str(root / "home"), workdir=str(root / "work"), user="bench",
                         storage=str(root / "storage"))


def _prepare(root: Path, scale: float, science: int) -> None:
    from awe import context
    from awe.sim import simulate_night
    from awe.tasks.ingest import ingest
    t = time.perf_counter()
    raw = simulate_night(root / "raw", scale=scale, only=BIASES + DOMES + TWILIGHTS + SCIENCE[:science])
    (root / "work").mkdir()
    context.connect(_settings(root), create_user=True)
    report = ingest([raw])
    assert not report.failed, str(report)
    context.close()
    print(f"simulated and ingested {len(BIASES + DOMES + TWILIGHTS) + science} exposures x 8 chips at scale "
          f"{scale} in {time.perf_counter() - t:.1f} s")


def _run(master: Path, root: Path, executor: str | None, workers: int) -> dict[str, float]:
    from awe import context
    from awe.dpu import DPU
    for part in ("home", "storage", "work"):
        shutil.copytree(master / part, root / part)
    context.connect(_settings(root))
    dpu = DPU(executor, workers=workers, threads=1) if executor else DPU()
    times: dict[str, float] = {}
    try:
        if executor:  # the cluster is started before the clock (as a running DPU would be)
            dpu.executor.client.wait_for_workers(workers)
        for recipe, extra in STEPS + [("Reduce", {"object": "3C273", "filter": "#844"})]:
            t = time.perf_counter()
            keywords = dict(extra, instrument="WFI", commit=1)
            if recipe != "Reduce":
                keywords["date"] = "2003-03-03"
            ids = dpu.run(recipe, **keywords)
            jobs = dpu.wait_for_jobs(quiet=True)
            failed = [j for j in jobs if j.state != "done"]
            assert not failed, [(j.label, j.error) for j in failed]
            times[f"{recipe} ({len(ids)} jobs)"] = time.perf_counter() - t
    finally:
        dpu.close()
        context.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--science", type=int, default=2, help="3C273 exposures (1..6)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="awe-bench-dpu-"))
    try:
        master = base / "master"
        master.mkdir()
        _prepare(master, args.scale, args.science)
        serial = _run(master, base / "in-process", None, 1)
        one = _run(master, base / "dask-1", "dask", 1)
        many = _run(master, base / "dask-n", "dask", args.workers)
        print(f"\n{'step':<24} {'in-process [s]':>15} {'Dask 1x1 [s]':>13} {f'Dask {args.workers}x1 [s]':>13} "
              f"{'speed-up':>9}")
        for step in serial:
            print(f"{step:<24} {serial[step]:15.2f} {one[step]:13.2f} {many[step]:13.2f} "
                  f"{one[step] / many[step]:9.2f}")
        totals = [sum(t.values()) for t in (serial, one, many)]
        print(f"{'total':<24} {totals[0]:15.2f} {totals[1]:13.2f} {totals[2]:13.2f} {totals[1] / totals[2]:9.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
