"""Source lists on a private copy of the shared coadd night (tests/_coadd_night.py, built once per session on
the shared reduced night of tests/astro/conftest.py): the six 3C273 exposures of ccd50 with their
astrometry (per chip and global) and the night's zero point of ccd50 (PhotcatTask on the standards of both
chips, PhotomTask)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.coadd.conftest import coadd_night  # noqa: F401  (the module's copy of the shared night)

CHIP = "ccd50"


@pytest.fixture(scope="module")
def sources_night(coadd_night):  # noqa: F811
    """The night's 3C273 frames of ccd50 (DATE_OBS order), their AstrometricParameters, ccd50's
    PhotometricParameters."""
    from awe.model import AstrometricParameters, PhotometricParameters, ReducedScienceFrame

    science = [coadd_night.chip_file(d, CHIP) for d in coadd_night.science]
    frames = sorted(ReducedScienceFrame.select(raw_filenames=science), key=lambda f: f.DATE_OBS)
    astrometry = [AstrometricParameters.for_frame(f) for f in frames]
    photometry = [(PhotometricParameters.chip.name == CHIP).max("creation_date")]
    assert all(a is not None for a in astrometry) and photometry[0] is not None
    return SimpleNamespace(night=coadd_night, truth=coadd_night.truth, chip=CHIP, frames=frames,
                           science=science, astrometry=astrometry, photometry=photometry)
