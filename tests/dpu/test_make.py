"""Target processing: make(ReducedScienceFrame, object='3C273', chip='ccd50') from raw frames; a re-run does
nothing; a newer master bias, a changed output-affecting parameter and an invalidated calibration re-make exactly
what used them; --stale re-makes what derives from an invalid product."""

from __future__ import annotations

import sqlalchemy as sa

from awe import context
from awe.dpu.make import chain, invalidate, make, stale_products
from awe.model import (BiasFrame, ColdPixelMap, DomeFlatFrame, HotPixelMap, MasterFlatFrame, ReducedScienceFrame,
                       TwilightFlatFrame)
from awe.tasks import BiasTask
from tests.dpu.conftest import BIASES

TARGET = dict(object="3C273", chip="ccd50")


def _count(cls) -> int:
    return len(list((cls.chip.name == "ccd50") & (cls.superseded_by == None)))  # noqa: E711


def _objects() -> int:
    with context.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM objects")).scalar())


def _steps(plan, action="make"):
    return sorted({u.step for u in plan.units if u.action == action})


def test_chain_from_task_contracts():
    names = [t.__name__ for t in chain(ReducedScienceFrame)]
    assert names == ["BiasTask", "HotPixelsTask", "DomeFlatTask", "ColdPixelsTask", "TwilightFlatTask",
                     "MasterFlatTask", "ReduceTask"]
    # the illumination correction is optional for ReduceTask: its chain is not pulled in
    assert "PhotcatTask" not in names


def test_plan_run_nothing_to_do_newer_bias_parameter_and_stale(dpu_night, capsys):
    before = _objects()
    plan = make(ReducedScienceFrame, plan=True, **TARGET)
    assert _objects() == before, "planning commits nothing"
    assert [u.action for u in plan.units if u.step == "Bias"] == ["make"]
    assert "missing" in plan.units[0].reason
    # the later steps wait for the first: their inputs do not exist yet
    assert {u.action for u in plan.units if u.step != "Bias"} == {"waits"}
    assert len([u for u in plan.units if u.step == "Reduce"]) == 2  # the two 3C273 exposures
    assert "Reduce: 2 of 2 unit(s) to make" in capsys.readouterr().out

    made = make(ReducedScienceFrame, **TARGET)
    assert made.ran and all(j.state == "done" for j in made.jobs)
    for cls in (BiasFrame, HotPixelMap, DomeFlatFrame, ColdPixelMap, TwilightFlatFrame, MasterFlatFrame):
        assert _count(cls) == 1, cls
    reds = list((ReducedScienceFrame.chip.name == "ccd50"))
    assert len(reds) == 2 and all(r.OBJECT == "3C273" for r in reds)

    # nothing changed: nothing to do, and it says so
    objects = _objects()
    again = make(ReducedScienceFrame, **TARGET)
    assert again.nothing_to_do and not again.ran and _objects() == objects
    assert "nothing to do" in capsys.readouterr().out

    # a newer master bias (four of the five bias exposures): everything that used the old one is stale
    BiasTask(instrument="WFI", chip="ccd50", raw_filenames=[f"WFI.{d}_1.fits" for d in BIASES[:4]], overscan=6,
             commit=1).execute()
    newer = (BiasFrame.chip.name == "ccd50").max("creation_date")
    plan = make(ReducedScienceFrame, plan=True, **TARGET)
    assert _steps(plan, "current") == ["Bias"]  # the unit of the whole night's biases exists
    hot = next(u for u in plan.units if u.step == "HotPixels")
    assert hot.action == "make" and "bias:" in hot.reason and "a newer BiasFrame" in hot.reason, hot.reason
    assert newer.filename in hot.reason
    assert {u.action for u in plan.units if u.step == "Reduce"} == {"waits"}
    old_reds = {r.object_id for r in reds}
    made = make(ReducedScienceFrame, **TARGET)
    assert sorted({j.recipe for j in made.jobs}) == ["ColdPixels", "DomeFlat", "HotPixels", "MasterFlat", "Reduce",
                                                     "TwilightFlat"]
    new_reds = [r for r in ReducedScienceFrame.chip.name == "ccd50" if r.object_id not in old_reds]
    assert len(new_reds) == 2 and all(r.bias.object_id == newer.object_id for r in new_reds)
    assert make(ReducedScienceFrame, **TARGET).nothing_to_do

    # a changed output-affecting parameter: only the reduction is stale, with the parameter named
    pars = {"ReducedScienceFrame": {"process_params": {"COSMIC_NITER": 3}}}
    plan = make(ReducedScienceFrame, plan=True, pars=pars, **TARGET)
    assert _steps(plan) == ["Reduce"]
    assert all("COSMIC_NITER 2 -> 3" in u.reason for u in plan.units if u.step == "Reduce"), plan.format()

    # invalidating the newer bias lists what is derived from it; the products made from it are stale: the
    # dome flat would now combine the old bias with the hot-pixel map of the invalid one
    derived = invalidate(newer, quiet=True)
    assert {type(d).__name__ for d in derived} >= {"HotPixelMap", "MasterFlatFrame", "ReducedScienceFrame"}
    stale = {p.object_id for p, _ in stale_products()}
    assert stale >= {r.object_id for r in new_reds}
    plan = make(ReducedScienceFrame, plan=True, **TARGET)
    dome = next(u for u in plan.units if u.step == "DomeFlat")
    assert dome.action == "make" and "is marked invalid" in dome.reason, plan.format()
    # stale=True marks them invalid too: the first chain's products are current again, nothing is made
    objects = _objects()
    again = make(ReducedScienceFrame, stale=True, **TARGET)
    assert again.nothing_to_do and _objects() == objects, again.format()
    assert stale_products() == []
    chosen = [r for r in ReducedScienceFrame.chip.name == "ccd50" if r.is_valid != 0]
    assert {r.object_id for r in chosen} == old_reds
