# ruff: noqa: E702, E501  (the spec's lines as written: several statements per line)
"""Every dpu.run call of spec section 7, as written (Python 3; the missing comma of its Astrometry line
corrected), in-process on the ingested night (all eight chips). Where the spec runs a step with commit=0 before
a step that needs its product, the prerequisite is committed too."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from awe import context
from awe import dpu
from awe.model import (AstrometricParameters, BiasFrame, GAstrometric, GAstromSourceList, HotPixelMap,
                       MasterFlatFrame, ReducedScienceFrame)
from awe.pars import Pars
from awe.tasks import ReduceTask


def _objects() -> int:
    with context.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM objects")).scalar())


def _states(ids):
    return [j.state for j in dpu.default.jobs(ids)]


def test_section_7(dpu_night, capsys):
    # in order to see the various tasks:
    assert dpu.run('aaaaaa', instrument='WFI', date='2003-03-03') == []
    listing = capsys.readouterr().out
    for recipe in ("Bias", "HotPixels", "DomeFlat", "ColdPixels", "TwilightFlat", "MasterFlat", "Reduce",
                   "Astrometry", "Photcat", "Illumination", "Photom", "GAstromSL", "GAstrom"):
        assert f"  {recipe} " in listing, recipe
    assert "makes BiasFrame" in listing and "raw_filenames" in listing

    # create a master Bias, without saving it in the DB and produce a log file
    objects = _objects()
    ids = dpu.run('Bias', instrument='WFI', date='2003-03-03', commit=0); logs = dpu.get_logs()
    assert len(ids) == 8 and _states(ids) == ["done"] * 8  # one job per chip
    assert _objects() == objects  # a dry run keeps nothing but its logs (and the files in the working folder)
    assert logs.count("=== job") == 8 and "master bias" in logs
    result = dpu.get_job_result(ids[0])
    assert result[0]["object_id"] is None and Path(result[0]["local_path"]).is_file()

    # create a master Bias and save it in the DB
    ids = dpu.run('Bias', instrument='WFI', date='2003-03-03', commit=1); jobs = dpu.wait_for_jobs()
    assert all(j.state == "done" for j in jobs)
    assert len(list(BiasFrame.all())) == 8
    assert {r["filename"] for i in ids for r in dpu.get_job_result(i)} == {b.filename for b in BiasFrame.all()}

    # create a Hot Pixels Map
    ids = dpu.run('HotPixels', instrument='WFI', date='2003-03-03', commit=0)
    assert _states(ids) == ["done"] * 8 and len(list(HotPixelMap.all())) == 0
    dpu.run('HotPixels', instrument='WFI', date='2003-03-03', commit=1)  # the prerequisite of the flats

    # create a Dome Flat Field
    dpu.run('DomeFlat', instrument='WFI', date='2003-03-03', filter='#844', commit=0); \
        dpu.wait_for_jobs()
    dpu.run('DomeFlat', instrument='WFI', date='2003-03-03', filter='#844', commit=1)
    # create a Cold Pixels Map
    dpu.run('ColdPixels', instrument='WFI', date='2003-03-03', filter='#844', commit=0)
    dpu.run('ColdPixels', instrument='WFI', date='2003-03-03', filter='#844', commit=1)
    # create a Twilight Flat Field
    dpu.run('TwilightFlat', instrument='WFI', date='2003-03-03', filter='#844', commit=0); \
        dpu.wait_for_jobs()
    dpu.run('TwilightFlat', instrument='WFI', date='2003-03-03', filter='#844', commit=1)
    # create a Master Flat Field (combination of Dome and Twilight)
    dpu.run('MasterFlat', instrument='WFI', date='2003-03-03', filter='#844', \
            commit=1); dpu.wait_for_jobs(); dpu.get_logs()
    assert len(list(MasterFlatFrame.all())) == 8

    # reduce one raw science frame (standard field)
    ids = dpu.run('Reduce', i='WFI', raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits',
                  'WFI.2003-03-04T04:42:29.496_2.fits', 'WFI.2003-03-04T04:42:29.496_3.fits',
                  'WFI.2003-03-04T04:42:29.496_4.fits', 'WFI.2003-03-04T04:42:29.496_5.fits',
                  'WFI.2003-03-04T04:42:29.496_6.fits', 'WFI.2003-03-04T04:42:29.496_7.fits',
                  'WFI.2003-03-04T04:42:29.496_8.fits'], commit=0)
    assert _states(ids) == ["done"] * 8 and len(list(ReducedScienceFrame.all())) == 0
    # or (note that "for i in range(1,9)" means i=1,2,3,4,5,6,7,8 !!)
    ids = dpu.run('Reduce', i='WFI', raw_filenames=
                  ['WFI.2003-03-04T04:42:29.496_' + str(i) + '.fits' for i in range(1, 9)], commit=1)
    dpu.wait_for_jobs()
    assert _states(ids) == ["done"] * 8 and len(list(ReducedScienceFrame.all())) == 8
    # the mosaic satellite pass ran after the units (one exposure of eight chips: one job)
    assert any(r.recipe == "Reduce:FollowSatellitesTask" for r in dpu.default.runs)

    # calculate astrometric solution (each CCD independently)
    ids = dpu.run('Astrometry', i='WFI', raw_filenames=
                  ['WFI.2003-03-04T04:42:29.496_' + str(i) + '.fits' for i in range(1, 9)],
                  commit=1)
    assert _states(ids) == ["done"] * 8 and len(list(AstrometricParameters.all())) == 8

    # reduce all the science frames (scientific fields)
    pars = Pars(ReduceTask)
    ids = dpu.run('Reduce', instrument='WFI', filter='#844', object='3C273',
                  pars=pars.get(), commit=1)
    assert len(ids) == 16 and _states(ids) == ["done"] * 16
    # calculate astrometric solution (each CCD independently)
    ids = dpu.run('Astrometry', instrument='WFI', object='3C273', commit=1)
    assert len(ids) == 16
    text = dpu.get_logs()
    assert text.count("=== job") == 16
    assert len(list(AstrometricParameters.all())) == 24

    # global astrometry
    dpu.run('GAstromSL', instrument='WFI', object='3C273', commit=0); dpu.wait_for_jobs()
    dpu.run('GAstromSL', instrument='WFI', object='3C273', commit=1)  # the prerequisite of GAstrom
    assert len(list(GAstromSourceList.all())) == 16
    ids = dpu.run('GAstrom', instrument='WFI', filter='#844', object='3C273', commit=0); dpu.wait_for_jobs()
    assert len(ids) == 1 and _states(ids) == ["done"]  # one field: one job
    assert len(list(GAstrometric.all())) == 0
    assert sum(1 for r in dpu.get_job_result(ids[0]) if r["class"] == "GAstrometric") == 16
    assert all(j.state == "done" for j in dpu.default.jobs())
    assert dpu.status() == {"done": len(dpu.get_jobids())}
