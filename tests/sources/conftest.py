"""Source lists on the shared reduced night (tests/astro/conftest.py): per-frame astrometry of the six 3C273
exposures of ccd50 and the night's photometry of ccd50 (PhotcatTask on the standards, PhotomTask), once per
module."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.astro.conftest import astro_night, astro_night_master  # noqa: F401  (the shared fixtures)

CHIP = "ccd50"


@pytest.fixture(scope="module")
def sources_night(astro_night):  # noqa: F811
    """The night with AstrometricParameters for the 3C273 frames of ccd50 and PhotometricParameters of ccd50."""
    from awe.model import ReducedScienceFrame
    from awe.pars import Pars
    from awe.tasks import AstrometricParametersTask, PhotcatTask, PhotomTask

    standards = [astro_night.chip_file(d, CHIP) for d in astro_night.standards]
    PhotcatTask(instrument="WFI", raw_filenames=standards, commit=1).execute()
    # one chip's standards alone give a zero point good to 0.027 mag, above the QC's 0.02 (the photometry
    # tests pool both chips with the illumination correction): accepted here, the tests allow for its error
    pars = Pars(PhotomTask)
    pars.PhotometricParameters.process_params.MAXIMUM_ZEROPOINT_ERROR = 0.05
    photometry = PhotomTask(instrument="WFI", raw_filenames=standards, pars=pars, commit=1).execute()
    science = [astro_night.chip_file(d, CHIP) for d in astro_night.science]
    astrometry = AstrometricParametersTask(raw_filenames=science, commit=1).execute()
    frames = sorted(ReducedScienceFrame.select(raw_filenames=science), key=lambda f: f.DATE_OBS)
    return SimpleNamespace(night=astro_night, truth=astro_night.truth, chip=CHIP, frames=frames,
                           science=science, astrometry=astrometry, photometry=photometry)
