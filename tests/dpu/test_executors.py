"""The executors give identical products: ccd50's two 3C273 frames reduced in-process, in a process pool, on a
Dask LocalCluster and on a real ``dask scheduler`` with two ``dask worker`` processes, each into its own copy of
one calibrated embedded database (same provenance, equal pixel arrays); many processes writing one SQLite file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from awe import context
from awe._threads import THREAD_VARIABLES
from awe.dpu import DPU
from awe.dpu.executors import Dask, ProcessPool
from awe.model import ReducedScienceFrame, WeightFrame
from tests import _factory
from tests.dpu._cluster import Cluster
from tests.dpu.conftest import SCIENCE, chip_file, copy_night

RAWS = [chip_file(d, "ccd50") for d in SCIENCE]


@pytest.fixture(scope="module")
def calibrated(dpu_night_master, tmp_path_factory) -> Path:
    """ccd50 calibrated (the course's chain, committed) in a copy of the night."""
    night = copy_night(dpu_night_master, tmp_path_factory.mktemp("calibrated"))
    context.connect(night.settings)
    try:
        _factory.calibrate_chip("ccd50")
    finally:
        context.close()
    return night.root


def _reduce(calibrated: Path, tmp_path: Path, executor) -> dict[str, tuple]:
    root = tmp_path / "night"
    root.mkdir()
    for part in ("home", "storage", "work"):
        shutil.copytree(calibrated / part, root / part)
    night = copy_night.__globals__["settings_of"](root)
    context.connect(night)
    dpu = DPU(executor)
    try:
        ids = dpu.run("Reduce", i="WFI", raw_filenames=RAWS, commit=1)
        jobs = dpu.wait_for_jobs()
        assert len(ids) == 2 and [j.state for j in jobs] == ["done", "done"], [(j.state, j.error) for j in jobs]
        assert {j.host for j in jobs} and all(j.attempts == 1 for j in jobs)
        out = {}
        for cls in (ReducedScienceFrame, WeightFrame):
            for obj in cls.all():
                raw = obj.raw if cls is ReducedScienceFrame else obj.reduced.raw
                out[f"{cls.__name__} {raw.filename}"] = (obj.provenance, obj.load(), obj.creator, obj.project)
        return {"products": out, "workers": {j.worker for j in jobs}}
    finally:
        dpu.close()
        context.close()


@pytest.fixture(scope="module")
def reference(calibrated, tmp_path_factory):
    return _reduce(calibrated, tmp_path_factory.mktemp("in-process"), None)


def _same(a: dict, b: dict) -> None:
    assert sorted(a["products"]) == sorted(b["products"]) and len(a["products"]) == 4
    for key, (prov, data, creator, project) in a["products"].items():
        prov_b, data_b, creator_b, project_b = b["products"][key]
        assert prov == prov_b, key
        assert (creator, project) == (creator_b, project_b) == ("tester", "TESTER")
        np.testing.assert_array_equal(data, data_b, err_msg=key)


def _thread_limits() -> tuple[str | None, ...]:
    """In a worker: its thread limits."""
    import os
    return tuple(os.environ.get(name) for name in THREAD_VARIABLES)


def test_process_pool(calibrated, reference, tmp_path):
    pool = ProcessPool(2)
    got = _reduce(calibrated, tmp_path, pool)
    _same(reference, got)
    assert all(w.startswith("pid ") for w in got["workers"])
    # each worker one thread (AWE_THREADS, BLAS, OpenMP): no oversubscription of the cores
    assert pool._executor().submit(_thread_limits).result(60) == ("1",) * len(THREAD_VARIABLES)
    pool.close()


def test_dask_local_cluster(calibrated, reference, tmp_path):
    got = _reduce(calibrated, tmp_path, Dask(workers=2))
    _same(reference, got)
    assert all(w.startswith("tcp://127.0.0.1") for w in got["workers"])


def test_dask_scheduler_and_two_workers(calibrated, reference, tmp_path):
    cluster = Cluster(2, log_dir=tmp_path)
    try:
        engine = Dask(address=cluster.address, timeout=30)
        engine.client.wait_for_workers(2, timeout=120)
        got = _reduce(calibrated, tmp_path, engine)
    finally:
        cluster.stop()
    _same(reference, got)
    assert len(got["workers"]) == 2, "both workers ran a job"


def _hammer(args):
    """One process: start and end its share of the jobs, one short write transaction each."""
    settings, ids = args
    from awe.db.database import Database
    from awe.db.session import Session
    from awe.dpu import jobs
    session = Session.open_as(Database(settings["database_url"]), "tester")
    for job_id in ids:
        assert jobs.mark_running(session, job_id, "host", f"pid {job_id}") == 1
        jobs.mark_ended(session, job_id, "done", f"log of {job_id}\n" * 20, result=[{"n": job_id}])
    return len(ids)


def test_sqlite_many_writers(calibrated, tmp_path):
    """Eight processes start and end 200 jobs in one SQLite file at once: no "database is locked", no lost write."""
    import concurrent.futures as cf
    import multiprocessing

    from awe.dpu import jobs
    from awe.tasks.base import Unit
    for part in ("home", "storage", "work"):
        shutil.copytree(calibrated / part, tmp_path / part)
    settings = copy_night.__globals__["settings_of"](tmp_path)
    context.connect(settings)
    try:
        unit = Unit("awe.tasks.calibration.BiasTask", {"chip": "ccd50"}, {}, {"commit": 0}, "tester", "TESTER", "x")
        ids = jobs.insert_jobs(context.session, "run", "Bias", [unit] * 200, {}, "test", 1)
        shares = [(settings.model_dump(), ids[i::8]) for i in range(8)]
        with cf.ProcessPoolExecutor(8, mp_context=multiprocessing.get_context("spawn")) as pool:
            assert sum(pool.map(_hammer, shares)) == 200
        found = jobs.jobs_of(context.session, ids)
        assert [j.state for j in found] == ["done"] * 200
        assert all(j.result == [{"n": j.id}] and j.log.count("log of") == 20 for j in found)
    finally:
        context.close()
