"""The reduced night shared by the astrometry and photometry tests.

One simulated night (scale 0.125, seed 1) with the calibration exposures, the 9 standard-field exposures
(SA98..SA110 at three airmasses) and the six dithered 3C273 exposures, ingested into an embedded database
with both reference catalogues loaded into ALL, calibrated and reduced (ReduceTask, commit=1) for
:data:`CHIPS`. It is built once per test session; every test module gets its own copy of the database and
the storage (``astro_night``), so modules do not see each other's products.

Set ``AWE_TEST_NIGHT_CACHE=/some/folder`` to keep the built night between pytest runs (for development:
the folder is reused when its ``READY`` marker names the same recipe; delete it after changing the
calibration or reduction code; a new schema revision makes a new one).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from awe import context
from awe.config import load_settings
from awe.db.accounts import private_project_name
from awe.db.engine import head_revision
from awe.sim import Truth, simulate_night
from tests import _factory

SCALE = 0.125
SEED = 1
#: chips calibrated and reduced: ccd50 (the spec's chip) and its neighbour in the mosaic's lower row
CHIPS = ("ccd50", "ccd51")
BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680", "2003-03-03T19:20:11.815"]
DOMES = ["2003-03-03T19:45:17.277", "2003-03-03T19:46:58.069", "2003-03-03T19:48:27.232"]
TWILIGHTS = ["2003-03-03T23:46:15.975", "2003-03-03T23:48:12.051", "2003-03-03T23:50:42.573"]
STANDARDS = ["2003-03-04T00:15:04.312", "2003-03-04T00:16:31.905", "2003-03-04T01:38:55.120",
             "2003-03-04T01:40:19.644", "2003-03-04T03:21:40.288", "2003-03-04T04:42:29.496",
             "2003-03-04T07:35:12.733", "2003-03-04T07:36:40.019", "2003-03-04T09:05:50.571"]
SCIENCE = ["2003-03-04T04:43:52.117", "2003-03-04T04:48:39.640", "2003-03-04T04:53:26.208",
           "2003-03-04T04:58:13.771", "2003-03-04T05:03:00.339", "2003-03-04T05:07:47.902"]
_RECIPE = f"scale={SCALE} seed={SEED} chips={CHIPS} n={len(BIASES + DOMES + TWILIGHTS + STANDARDS + SCIENCE)}"


def chip_file(date_obs: str, chip: str) -> str:
    """The per-chip raw file name of an exposure (``_1`` is ccd50)."""
    return f"WFI.{date_obs}_{int(chip[3:]) - 49}.fits"


def _settings(root: Path):
    return load_settings(home=str(root / "home"), workdir=str(root / "work"), user="tester",
                         storage=str(root / "storage"))


def _build(root: Path) -> None:
    """Simulate, ingest, load the reference catalogues, calibrate and reduce (into ``root``)."""
    from awe.model import load_refcat
    from awe.tasks import ReduceTask
    from awe.tasks.ingest import ingest

    raw = simulate_night(root / "raw", scale=SCALE, seed=SEED,
                         only=BIASES + DOMES + TWILIGHTS + STANDARDS + SCIENCE)
    (root / "work").mkdir(exist_ok=True)
    context.connect(_settings(root), create_user=True)
    try:
        report = ingest([raw])
        assert not report.failed, str(report)
        context.set_project("ALL")
        load_refcat(raw / "refcat" / "astrometric.fits", "astrometric")
        load_refcat(raw / "refcat" / "standards.fits", "standard")
        context.set_project(private_project_name("tester"))
        for chip in CHIPS:
            _factory.calibrate_chip(chip)
            ReduceTask(raw_filenames=[chip_file(d, chip) for d in STANDARDS + SCIENCE], commit=1).execute()
    finally:
        context.close()


def _schema_key() -> str:
    """The head revision, a hash of every revision file (two branches' revisions of one number differ) and of the
    recorded algorithm versions."""
    import awe.db.engine
    versions = Path(awe.db.engine.__file__).parent / "migrations" / "versions"
    digest = hashlib.sha1()
    for path in sorted(versions.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    # the reduction's algorithm versions and module hashes: changed code makes a new night
    digest.update((Path(awe.db.engine.__file__).parents[1] / "tasks" / "algorithm_versions.toml").read_bytes())
    return f"{head_revision()}:{digest.hexdigest()[:12]}"


def astro_night_root(tmp_path_factory) -> Path:
    """The built night's folder (raw/, home/, storage/, work/), never modified by the tests: the session
    fixture ``astro_night_master`` of tests/conftest.py (one definition, so one build per session)."""
    cache = os.environ.get("AWE_TEST_NIGHT_CACHE")
    if cache:
        recipe = f"{_RECIPE} schema={_schema_key()}"
        root = Path(cache) / hashlib.sha1(recipe.encode()).hexdigest()[:12]
        if (root / "READY").is_file() and (root / "READY").read_text() == recipe:
            return root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = tmp_path_factory.mktemp("astro-night")
    _build(root)
    (root / "READY").write_text(f"{_RECIPE} schema={_schema_key()}")
    return root


@pytest.fixture(scope="module")
def astro_night(astro_night_master, tmp_path_factory):
    """A private copy of the reduced night, connected as the default context (user ``tester``).

    Attributes: ``root``, ``raw`` (the raw files and ``refcat/``), ``truth`` (:class:`awe.sim.Truth`),
    ``workdir``, ``chips``, ``standards``, ``science`` (DATE-OBS lists), ``chip_file`` (a function).
    """
    root = tmp_path_factory.mktemp("astro")
    for part in ("home", "storage", "work"):
        shutil.copytree(astro_night_master / part, root / part)
    context.connect(_settings(root))
    yield SimpleNamespace(root=root, raw=astro_night_master / "raw", truth=Truth(astro_night_master / "raw"),
                          workdir=root / "work", chips=CHIPS, standards=STANDARDS, science=SCIENCE,
                          chip_file=chip_file)
    context.close()
