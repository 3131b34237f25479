# ruff: noqa: E702  (the spec's lines as written: several statements per line)
"""The rest of spec section 7's recipes through the DPU, in-process, on the shared reduced night (chips ccd50 and
ccd51, tests/astro/conftest.py): per-chip astrometry, 'Photcat', 'Illumination', 'Photom' (which the spec
mentions and awe has), the global astrometry, 'Regrid' with the spec's Pars and 'Coadd' as written, then
'SourceList' and 'Associate' on the products. Each dry run (commit=0) keeps nothing; each commit=1 commits."""

from __future__ import annotations

import sqlalchemy as sa

from awe import context, dpu
from awe.model import (AssociateList, CoaddedRegriddedFrame, IlluminationCorrection, PhotometricParameters,
                       PhotSrcCatalog, RegriddedFrame, SourceList)
from awe.pars import Pars
from awe.tasks import RegridTask
from tests.astro.conftest import astro_night  # noqa: F401  (the module's copy of the shared night)


def _objects() -> int:
    with context.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM objects")).scalar())


def _done(ids: list[int]) -> bool:
    return all(j.state == "done" for j in dpu.default.jobs(ids))


def test_section_7_from_the_reduced_night_to_the_coadd(astro_night):  # noqa: F811
    truth = astro_night.truth
    standards = [astro_night.chip_file(d, c) for d in astro_night.standards for c in astro_night.chips]

    # per-chip astrometry of the standard fields and of 3C273
    ids = dpu.run('Astrometry', i='WFI', raw_filenames=standards, commit=1); dpu.wait_for_jobs()
    assert len(ids) == len(standards)
    ids = dpu.run('Astrometry', instrument='WFI', object='3C273', commit=1); dpu.wait_for_jobs()
    assert len(ids) == 12 and _done(ids)

    # the standard stars: one job per frame; a dry run first
    before = _objects()
    ids = dpu.run('Photcat', i='WFI', raw_filenames=standards, commit=0); dpu.wait_for_jobs()
    assert len(ids) == len(standards) and _objects() == before
    ids = dpu.run('Photcat', i='WFI', raw_filenames=standards, commit=1); dpu.wait_for_jobs()
    jobs = dpu.default.jobs(ids)
    measured = [j for j in jobs if j.state == "done"]
    assert len(measured) >= len(standards) - 2, [j.error for j in jobs if j.state != "done"]
    assert all("standard star" in (j.error or "") for j in jobs if j.state != "done")
    assert len(list(PhotSrcCatalog.all())) == len(measured)

    # the illumination correction of each chip from all the night's standards, then the zero points
    ids = dpu.run('Illumination', instrument='WFI', date='2003-03-03', filter='#844', commit=1); dpu.wait_for_jobs()
    assert len(ids) == 2 and _done(ids)  # one job per chip
    assert sorted(i.chip.name for i in IlluminationCorrection.all()) == ["ccd50", "ccd51"]
    ids = dpu.run('Photom', instrument='WFI', date='2003-03-03', filter='#844', commit=1); dpu.wait_for_jobs()
    assert _done(ids)
    for chip in astro_night.chips:
        p = (PhotometricParameters.chip.name == chip).max("creation_date")
        row = next(r for r in truth.chips() if r["chip"] == chip)
        # the night's joint fit; tests/astro/test_photometry.py: within 0.006 mag of the truth
        assert p.quality_flags == 0 and abs(p.zeropoint - (truth.zero_point + row["zp_offset"])) < 0.02

    # the global astrometry (committed: the regrid's prerequisite)
    dpu.run('GAstromSL', instrument='WFI', object='3C273', commit=1); dpu.wait_for_jobs()
    ids = dpu.run('GAstrom', instrument='WFI', filter='#844', object='3C273', commit=1); dpu.wait_for_jobs()
    assert _done(ids)

    # apply regridding after having changed parameters (the test night's pixels are 8 times WFI's 0.238")
    pars = Pars(RegridTask)
    pars.RegriddedFrame.process_params.BACKGROUND_SUBTRACTION_TYPE = 1
    pars.RegriddedFrame.swarpconf.PIXEL_SCALE = 0.238 / 0.125
    before = _objects()
    ids = dpu.run('Regrid', instrument='WFI', filter='#844', object='3C273', pars=pars.get(), commit=0)
    dpu.wait_for_jobs()
    assert len(ids) == 12 and _done(ids) and _objects() == before
    ids = dpu.run('Regrid', instrument='WFI', filter='#844', object='3C273', \
                  pars=pars.get(), commit=1)
    dpu.wait_for_jobs()
    regridded = list(RegriddedFrame.all())
    assert len(regridded) == 12
    assert all(r.process_params["process_params"]["BACKGROUND_SUBTRACTION_TYPE"] == 1
               and r.process_params["swarpconf"]["PIXEL_SCALE"] == 0.238 / 0.125 for r in regridded)

    # coaddition: creation of the coadded mosaic + weight map
    ids = dpu.run('Coadd', instrument='WFI', filter='#844', object='3C273', commit=1)
    dpu.wait_for_jobs()
    assert len(ids) == 1 and _done(ids)
    (coadd,) = CoaddedRegriddedFrame.all()
    assert coadd.n_inputs == 12 and {r.object_id for r in coadd.regridded} == {r.object_id for r in regridded}

    # source lists of the coadd and of two dithers of ccd50, and the association of the dithers' lists
    first, second = sorted((r for r in regridded if r.chip.name == "ccd50"), key=lambda r: r.DATE_OBS)[:2]
    ids = dpu.run('SourceList', filenames=[coadd.filename, first.filename, second.filename], commit=1)
    dpu.wait_for_jobs()
    assert len(ids) == 3 and _done(ids)  # one job per image
    lists = {sl.image.filename: sl for sl in SourceList.all()}
    assert lists[coadd.filename].n_sources > 100
    ids = dpu.run('Associate', ids=[(lists[first.filename].SLID, 's'), (lists[second.filename].SLID, 's')],
                  commit=1)
    dpu.wait_for_jobs()
    assert len(ids) == 1 and _done(ids)
    (assoc,) = AssociateList.all()
    # two dithers of one chip overlap almost entirely: most sources pair up
    assert assoc.n_matched > 0.6 * min(lists[first.filename].n_sources, lists[second.filename].n_sources)
