"""The regridded and coadded night (tests/_coadd_night.py) on the shared reduced night."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from awe import context
from awe.config import load_settings
from awe.sim import Truth
from tests import _coadd_night
from tests.astro.conftest import CHIPS, SCIENCE, chip_file


@pytest.fixture(scope="module")
def coadd_night(coadd_night_master, astro_night_master, tmp_path_factory):
    """A private copy of the coadd night, connected as the default context (user ``tester``)."""
    root = tmp_path_factory.mktemp("coadd")
    for part in ("home", "storage", "work"):
        shutil.copytree(coadd_night_master / part, root / part)
    context.connect(load_settings(home=str(root / "home"), workdir=str(root / "work"), user="tester",
                                  storage=str(root / "storage")))
    yield SimpleNamespace(root=root, raw=astro_night_master / "raw", truth=Truth(astro_night_master / "raw"),
                          workdir=root / "work", chips=CHIPS, science=SCIENCE, chip_file=chip_file,
                          field=_coadd_night.FIELD, pixel_scale=_coadd_night.PIXEL_SCALE)
    context.close()
