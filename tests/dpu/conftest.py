"""The raw night shared by the DPU tests: simulated and ingested once per test session.

Scale 0.125, seed 1: the calibration exposures of 2003-03-03, the standard field of the spec's
``dpu.run('Reduce', raw_filenames=...)`` (04:42:29.496) and two dithered 3C273 exposures, ingested into an
embedded database (user ``tester``) with the astrometric and standard reference catalogues in ALL. Nothing
is calibrated: the DPU tests make everything through ``dpu.run``. Each module gets its own copy
(``dpu_night``). ``AWE_TEST_NIGHT_CACHE`` keeps the built night between runs (as tests/astro does).
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
from awe.sim import simulate_night

SCALE = 0.125
SEED = 1
BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680", "2003-03-03T19:20:11.815"]
DOMES = ["2003-03-03T19:45:17.277", "2003-03-03T19:46:58.069", "2003-03-03T19:48:27.232"]
TWILIGHTS = ["2003-03-03T23:46:15.975", "2003-03-03T23:48:12.051", "2003-03-03T23:50:42.573"]
STANDARD = "2003-03-04T04:42:29.496"
SCIENCE = ["2003-03-04T04:43:52.117", "2003-03-04T04:48:39.640"]
_RECIPE = f"dpu scale={SCALE} seed={SEED} {BIASES + DOMES + TWILIGHTS + [STANDARD] + SCIENCE}"


def chip_file(date_obs: str, chip: str) -> str:
    """The per-chip raw file name of an exposure (``_1`` is ccd50)."""
    return f"WFI.{date_obs}_{int(chip[3:]) - 49}.fits"


def settings_of(root: Path, user: str = "tester"):
    return load_settings(home=str(root / "home"), workdir=str(root / "work"), user=user,
                         storage=str(root / "storage"))


def _build(root: Path) -> None:
    from awe.db.accounts import private_project_name
    from awe.model import load_refcat
    from awe.tasks.ingest import ingest
    raw = simulate_night(root / "raw", scale=SCALE, seed=SEED, only=BIASES + DOMES + TWILIGHTS + [STANDARD] + SCIENCE)
    (root / "work").mkdir(exist_ok=True)
    context.connect(settings_of(root), create_user=True)
    try:
        report = ingest([raw])
        assert not report.failed, str(report)
        context.set_project("ALL")
        load_refcat(raw / "refcat" / "astrometric.fits", "astrometric")
        load_refcat(raw / "refcat" / "standards.fits", "standard")
        context.set_project(private_project_name("tester"))
    finally:
        context.close()


def _key() -> str:
    import awe.db.engine
    versions = Path(awe.db.engine.__file__).parent / "migrations" / "versions"
    digest = hashlib.sha1(_RECIPE.encode())
    for path in sorted(versions.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def dpu_night_master(tmp_path_factory) -> Path:
    """The ingested night's folder (raw/, home/, storage/, work/), never modified by the tests."""
    cache = os.environ.get("AWE_TEST_NIGHT_CACHE")
    if cache:
        root = Path(cache) / f"dpu-{_key()}"
        if (root / "READY").is_file():
            return root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = tmp_path_factory.mktemp("dpu-night")
    _build(root)
    (root / "READY").write_text(_RECIPE)
    return root


def copy_night(master: Path, root: Path) -> SimpleNamespace:
    for part in ("home", "storage", "work"):
        shutil.copytree(master / part, root / part)
    return SimpleNamespace(root=root, raw=master / "raw", workdir=root / "work", settings=settings_of(root),
                           standard=STANDARD, science=SCIENCE, chip_file=chip_file)


@pytest.fixture(scope="module")
def dpu_night(dpu_night_master, tmp_path_factory):
    """A private copy of the ingested night, connected as the default context (user ``tester``)."""
    night = copy_night(dpu_night_master, tmp_path_factory.mktemp("dpu"))
    context.connect(night.settings)
    yield night
    context.close()
