"""Faults: a job that raises (its siblings go on, rerun_failed runs only it), a storage write that fails, a
worker killed mid-job (retried, no duplicate product), the scheduler gone (a clear error, the jobs marked)."""

from __future__ import annotations

import errno
import time

import pytest

from awe.dpu import DPU, SchedulerGone
from awe.dpu.executors import Dask, ProcessPool
from awe.model import HotPixelMap, ReducedScienceFrame
from awe.storage._backends import LocalBackend
from tests import _factory
from tests.dpu._cluster import Cluster, free_port
from tests.dpu._faulty import KillOnceHotPixelsTask, SleepTask
from tests.dpu.conftest import SCIENCE, chip_file


@pytest.fixture(scope="module")
def night(dpu_night):
    _factory.calibrate_chip("ccd50")
    return dpu_night


def _files(night) -> set[str]:
    return {p.name for p in (night.root / "storage").rglob("*.fits")}


def test_failing_job_siblings_go_on_and_rerun_failed(night, capsys):
    dpu = DPU()
    raws = [chip_file(d, "ccd50") for d in SCIENCE] + [chip_file(SCIENCE[0], "ccd51")]
    ids = dpu.run("Reduce", i="WFI", raw_filenames=raws, commit=1)
    jobs = dpu.wait_for_jobs()
    assert sorted(j.state for j in jobs) == ["done", "done", "failed"]
    [failed] = [j for j in jobs if j.state == "failed"]
    assert "_2.fits" in failed.label  # ccd51, not calibrated
    assert "MissingCalibrationError" in failed.error and "ccd51" in failed.error
    assert "failed" in failed.log and "no valid BiasFrame" in failed.log
    err = capsys.readouterr().err
    assert f"job {failed.id}" in err and "1 of 3 DPU job(s) failed" in err
    dpu.wait_for_jobs()  # nothing new: a failure is reported once
    assert "failed" not in capsys.readouterr().err
    assert "MissingCalibrationError" in dpu.get_logs(failed.id, quiet=True)
    assert {r.chip.name for r in ReducedScienceFrame.all()} == {"ccd50"}  # nothing of the failed job
    with pytest.raises(Exception, match="failed"):
        dpu.get_job_result(failed.id)
    _factory.calibrate_chip("ccd51")
    assert dpu.rerun_failed() == [failed.id]
    dpu.wait_for_jobs()
    assert [j.state for j in dpu.jobs(ids)] == ["done"] * 3
    assert len([r for r in ReducedScienceFrame.all() if r.chip.name == "ccd51"]) == 1


def test_storage_write_failing(night, monkeypatch):
    def full(self, key):
        raise OSError(errno.ENOSPC, "No space left on device")
    before_files, before = _files(night), len(list(ReducedScienceFrame.all()))
    monkeypatch.setattr(LocalBackend, "open_temp", full)
    dpu = DPU()
    ids = dpu.run("Reduce", i="WFI", raw_filenames=[chip_file(SCIENCE[1], "ccd51")], commit=1)
    [job] = dpu.wait_for_jobs(quiet=True)
    assert job.state == "failed" and "StorageError" in job.error and "space" in job.error.lower()
    assert len(list(ReducedScienceFrame.all())) == before and _files(night) == before_files
    monkeypatch.undo()
    assert dpu.rerun_failed() == ids
    assert [j.state for j in dpu.wait_for_jobs()] == ["done"]
    assert len(list(ReducedScienceFrame.all())) == before + 1


@pytest.mark.parametrize("engine", ["pool", "dask"])
def test_worker_killed_mid_job_is_retried(night, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("AWE_TEST_KILL_MARKER", str(tmp_path / "killed"))
    dpu = DPU(ProcessPool(2) if engine == "pool" else Dask(workers=1), attempts=3)
    try:
        task = KillOnceHotPixelsTask(instrument="WFI", chip="ccd50", date="2003-03-03", redo=1, commit=1)
        ids = dpu.submit("KillOnce", KillOnceHotPixelsTask, task.plan(), {"commit": 1})
        [job] = dpu.wait_for_jobs()
    finally:
        dpu.close()
    assert (tmp_path / "killed").exists(), "the first attempt's process was killed"
    assert job.id == ids[0] and job.state == "done" and job.attempts == 2, (job.state, job.attempts, job.error)
    [made] = job.result
    twins = [h for h in HotPixelMap.all() if h.filename == made["filename"]]
    assert len(twins) == 1
    same = [h for h in HotPixelMap.all() if h.provenance == twins[0].provenance and h.superseded_by is None]
    assert len(same) == 1, "one current product, no duplicate"


def test_worker_killed_every_time_fails_after_its_attempts(night, tmp_path, monkeypatch):
    monkeypatch.setenv("AWE_TEST_KILL_MARKER", str(tmp_path / "killed"))
    dpu = DPU(ProcessPool(1), attempts=1)
    try:
        task = KillOnceHotPixelsTask(instrument="WFI", chip="ccd50", date="2003-03-03", commit=1)
        dpu.submit("KillOnce", KillOnceHotPixelsTask, task.plan(), {"commit": 1})
        [job] = dpu.wait_for_jobs(quiet=True)
    finally:
        dpu.close()
    assert job.state == "failed" and "died" in job.error and "attempts=1" in job.error


def test_scheduler_gone(night, tmp_path, monkeypatch):
    with pytest.raises(SchedulerGone, match="cannot reach the Dask scheduler"):
        Dask(address=f"tcp://127.0.0.1:{free_port()}", timeout=2)
    monkeypatch.setenv("AWE_TEST_SLEEP", "60")
    cluster = Cluster(1, log_dir=tmp_path)
    try:
        engine = Dask(address=cluster.address, timeout=30)
        engine.client.wait_for_workers(1, timeout=120)
        dpu = DPU(engine)
        ids = dpu.submit("Sleep", SleepTask, SleepTask(chip="ccd50", instrument="WFI").plan())
        end = time.monotonic() + 120
        while dpu.jobs(ids)[0].state != "running" and time.monotonic() < end:
            time.sleep(0.2)
        assert dpu.jobs(ids)[0].state == "running"
        cluster.kill_scheduler()
        with pytest.raises(SchedulerGone, match="scheduler"):
            dpu.wait_for_jobs(timeout=120)
        [job] = dpu.jobs(ids)
        assert job.state == "failed" and "scheduler" in job.error and "rerun_failed" in job.error
        engine.client.close(timeout=5)
    finally:
        cluster.stop()


def test_cancel_job(night, monkeypatch):
    monkeypatch.setenv("AWE_TEST_SLEEP", "3")
    dpu = DPU(ProcessPool(1))
    try:
        units = SleepTask(chip="ccd50", instrument="WFI").plan() + SleepTask(chip="ccd51", instrument="WFI").plan()
        first, second = dpu.submit("Sleep", SleepTask, units)
        assert dpu.cancel_job(second) is True
        jobs = dpu.wait_for_jobs()
    finally:
        dpu.close()
    assert [j.state for j in jobs] == ["done", "cancelled"]
    assert jobs[1].attempts == 0 and jobs[1].error == "cancelled by the user"
    assert dpu.cancel_job(first) is False  # ended already
