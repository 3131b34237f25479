"""The Task contract: declared inputs and unit of work, plan(), units run elsewhere, the registry.

One module-scoped night (scale 0.125): four raw biases and one 3C273 exposure
of the course, all eight chips, ingested into a fresh SQLite context.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from types import SimpleNamespace

import pytest

import numpy as np

from awe import context
from awe.config import load_settings
from awe.db.commit import commit
from awe.db.session import Session
from awe.model import BiasFrame, HotPixelMap, RawBiasFrame, RawScienceFrame
from awe.model._io import write_image
from awe.model.frames import QualityFlags
from awe.model.calibration import ColdPixelMap, DomeFlatFrame, MasterFlatFrame, TwilightFlatFrame
from awe.model.science import ReducedScienceFrame, SatelliteMap, WeightFrame
from awe.sim import simulate_night
from awe.tasks import BiasTask, FollowSatellitesTask, HotPixelsTask, MissingCalibrationError, ReduceTask, TaskError
from awe.tasks.base import UNITS, Task, Unit
from awe.tasks.registry import RegistryError, task_class, task_for, tasks
from tests import _factory

BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680"]
SCIENCE = "2003-03-04T04:43:52.117"
CHIPS = [f"ccd{n}" for n in range(50, 58)]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    raw = simulate_night(root / "raw", scale=0.125, seed=3, only=BIASES + [SCIENCE])
    storage = _factory.ingest_into_fresh_context(root, raw)
    settings = load_settings(home=str(root / "home"), workdir=str(root / "work"), user="tester",
                             storage=str(root / "storage"))
    yield SimpleNamespace(root=root, storage=storage, settings=settings)
    context.close()


def _plain(value) -> bool:
    """Only plain values (what a unit may hold): no session, engine or ORM object."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _committed_biases() -> list:
    return [b for b in BiasFrame.all() if b.chip.name != "ccd56"]


def test_bias_without_chip_plans_one_independent_unit_per_chip(night):
    units = BiasTask(instrument="WFI", overscan=6).plan()
    assert [u.selection["chip"] for u in units] == CHIPS
    for unit in units:
        assert unit.task == "awe.tasks.calibration.BiasTask"
        assert unit.user == "tester" and unit.project == context.get_current_project().name
        assert unit.pars["BiasFrame"]["process_params"]["OVERSCAN_CORRECTION"] == 6
        for part in (unit.selection, unit.pars, unit.options):
            assert _plain(part), part
        assert pickle.loads(pickle.dumps(unit)) == unit
    # planning selects only: nothing made (ccd56's is committed by another test)
    assert not _committed_biases()
    # a chip given: one unit
    assert len(BiasTask(instrument="WFI", chip="ccd53").plan()) == 1


def test_units_run_in_any_order_with_their_own_session_give_execute_s_products(night):
    task = BiasTask(instrument="WFI", overscan=6, commit=0)
    executed = {p.chip.name: p.provenance for p in task.execute()}
    assert sorted(executed) == CHIPS
    session = Session.open(night.settings)  # another session of the same user, as a worker opens one
    units = task.plan()
    ran = {}
    for unit in reversed(units):
        (product,) = Task.run_unit(pickle.loads(pickle.dumps(unit)), session)
        ran[product.chip.name] = product.provenance
        assert (night.root / "work" / product.filename).is_file()
    assert ran == executed
    assert not _committed_biases()  # commit=0 in the units too


def test_a_unit_runs_in_another_process_and_commits_there(night):
    (unit,) = BiasTask(instrument="WFI", chip="ccd56", overscan=6, commit=1).plan()
    script = (
        "import pickle, sys, json\n"
        "from awe.config import load_settings\n"
        "from awe.db.session import Session\n"
        "from awe.tasks.base import Task\n"
        "unit = pickle.loads(sys.stdin.buffer.read())\n"
        f"settings = load_settings(**{json.dumps(dict(home=str(night.root / 'home'), workdir=str(night.root / 'work'), user='tester', storage=str(night.root / 'storage')))})\n"  # noqa: E501
        "(product,) = Task.run_unit(unit, Session.open(settings))\n"
        "print(json.dumps([product.object_id, product.provenance]))\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], input=pickle.dumps(unit),
                          capture_output=True, timeout=300, cwd=night.root)
    assert done.returncode == 0, done.stderr.decode()
    object_id, provenance = json.loads(done.stdout.decode().strip().splitlines()[-1])
    committed = (BiasFrame.chip.name == "ccd56").max("creation_date")
    assert committed is not None and committed.object_id == object_id and committed.provenance == provenance
    # the same task here finds it: identical provenance, reused, not made again
    (again,) = BiasTask(instrument="WFI", chip="ccd56", overscan=6, commit=1).execute()
    assert again.object_id == object_id


def test_run_unit_refuses_a_session_of_another_user_or_project(night):
    (unit,) = BiasTask(instrument="WFI", chip="ccd50").plan()
    other = Unit(**{**unit.__dict__, "user": "someone"})
    with pytest.raises(TaskError, match="planned for user someone"):
        Task.run_unit(other, Session.open(night.settings))
    elsewhere = Unit(**{**unit.__dict__, "project": "ALL"})
    with pytest.raises(TaskError, match="planned in project ALL"):
        Task.run_unit(elsewhere, Session.open(night.settings))


def test_reduce_plans_one_unit_per_raw_chip_frame_without_calibrations(night):
    units = ReduceTask(instrument="WFI", object="3C*", commit=1).plan()
    assert len(units) == len(CHIPS)
    names = [u.selection["raw_filenames"] for u in units]
    assert all(len(n) == 1 for n in names) and len({n[0] for n in names}) == len(CHIPS)
    assert all(_plain(u.selection) for u in units)
    # running a unit needs the calibrations: the error names the task that makes the missing one
    with pytest.raises(TaskError, match=r"BiasTask\(instrument='WFI', chip="):
        Task.run_unit(units[0], Session.open(night.settings))
    with pytest.raises(TaskError, match="none of the selected frames is reduced"):
        FollowSatellitesTask(instrument="WFI", object="3C*").plan()



def test_a_calibration_refused_by_its_qc_is_not_made_again_by_the_advice(night):
    """A master bias refused by a quality check: the error names the check and the parameter to relax, and does
    not advise running BiasTask again (with the same parameters it makes the same refused bias)."""
    raw = RawScienceFrame.select(instrument="WFI", chip="ccd53")[0]
    record = {"check": "clipped stdev", "value": 9.5, "limit": 5.0,
              "parameter": "BiasFrame.process_params.MAXIMUM_STDEV", "relation": ">", "failed": True,
              "flag": "TOO_NOISY"}
    refused = BiasFrame(instrument=raw.instrument, chip=raw.chip, OBJECT="MASTER BIAS", DATE_OBS=raw.DATE_OBS,
                        overscan_correction=6, quality_flags=QualityFlags.TOO_NOISY, qc_report=[record],
                        filename="Cal-TESTER-WFI----------ccd53-Bias--Cal-refused.fits")
    path = write_image(night.root / "work" / refused.filename, np.zeros((10, 10), np.float32))
    commit([(refused, path)])
    try:
        with pytest.raises(MissingCalibrationError) as info:
            ReduceTask(raw_filenames=[raw.filename]).execute()
    finally:
        context.delete(refused)
    message = str(info.value)
    for words in (refused.filename, "clipped stdev = 9.5 > 5", "raise BiasFrame.process_params.MAXIMUM_STDEV",
                  "pars = Pars(BiasTask)", "redo=1"):
        assert words in message, (words, message)
    assert ": run BiasTask(" not in message and "Make one first" not in message
    assert info.value.qc_failures == [(refused.filename, record)]
    assert not _committed_biases()

def test_declarations_match_the_products_lineage():
    for task in tasks() + [FollowSatellitesTask]:
        assert task.unit in UNITS
        assert task.inputs, task
        assert task.algorithm_modules, task
        roles = {role for product in task.products for role in product._inputs}
        for decl in task.inputs:
            assert decl.role in roles, (task.__name__, decl.role)
    assert ReduceTask.unit == "per_frame" and BiasTask.unit == "per_chip"
    assert FollowSatellitesTask.unit == "per_exposure"


def test_registry_says_which_task_makes_which_class():
    expected = {BiasFrame: "BiasTask", HotPixelMap: "HotPixelsTask", DomeFlatFrame: "DomeFlatTask",
                ColdPixelMap: "ColdPixelsTask", TwilightFlatFrame: "TwilightFlatTask",
                MasterFlatFrame: "MasterFlatTask", ReducedScienceFrame: "ReduceTask", SatelliteMap: "ReduceTask",
                WeightFrame: "ReduceTask"}
    assert {cls: task_for(cls).__name__ for cls in expected} == expected
    assert task_for(RawBiasFrame) is None
    assert task_class("HotPixelsTask") is HotPixelsTask
    assert task_class("awe.tasks.reduce.FollowSatellitesTask") is FollowSatellitesTask
    with pytest.raises(RegistryError, match="no task named 'NoSuchTask'"):
        task_class("NoSuchTask")
    with pytest.raises(LookupError):
        task_class("NoSuchTask")
