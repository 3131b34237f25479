"""The regridded and coadded 3C273 night, built on the shared reduced night (tests/astro/conftest.py).

:func:`build` runs, on a copy of the reduced night: per-frame astrometry (AstrometricParametersTask) of
the standards and of the six 3C273 frames, PhotcatTask + PhotomTask (the zero points of both chips),
GAstromSourceListTask + GAstromTask (the global solution of the 3C273 dithers), RegridTask (every 3C273
frame, PIXEL_SCALE :data:`PIXEL_SCALE`) and CoaddTask (weighted mean) -- all committed. Other test
modules can reuse it through :func:`coadd_night_root` (cached under AWE_TEST_NIGHT_CACHE like the astro
night, keyed by :data:`RECIPE` and the schema).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from awe import context
from awe.pars import Pars

#: the regrid pixel scale at test scale 0.125: WFI's 0.238" x 8 (the spec's "original WFI pixel scale")
PIXEL_SCALE = 0.238 / 0.125
FIELD = "3C273"
RECIPE = f"coadd v1 field={FIELD} scale={PIXEL_SCALE:.4f} kernel=LANCZOS3 combine=WEIGHTED"


def regrid_pars(**process: object) -> Pars:
    from awe.tasks import RegridTask
    pars = Pars(RegridTask)
    pars.RegriddedFrame.swarpconf.PIXEL_SCALE = PIXEL_SCALE
    for key, value in process.items():
        setattr(pars.RegriddedFrame.process_params, key, value)
    return pars


def build(root: Path, chips, standards, science, chip_file) -> None:
    """Run the chain on the (copied) reduced night in ``root`` (home/, storage/, work/)."""
    from awe.config import load_settings
    from awe.tasks import (AstrometricParametersTask, CoaddTask, GAstromSourceListTask, GAstromTask, PhotcatTask,
                           PhotomTask, RegridTask, TaskError)
    settings = load_settings(home=str(root / "home"), workdir=str(root / "work"), user="tester",
                             storage=str(root / "storage"))
    context.connect(settings)
    try:
        measured = []
        for chip in chips:
            for date in standards + science:
                name = chip_file(date, chip)
                try:
                    AstrometricParametersTask(raw_filenames=[name], commit=1).execute()
                except TaskError:
                    continue  # a frame without a solution: the others go on (as the demo does)
            for date in standards:
                name = chip_file(date, chip)
                try:
                    PhotcatTask(instrument="WFI", raw_filenames=[name], commit=1).execute()
                    measured.append(name)
                except TaskError:
                    pass
        PhotomTask(instrument="WFI", raw_filenames=measured, commit=1).execute()
        for chip in chips:
            GAstromSourceListTask(instrument="WFI", chip=chip, object=FIELD, commit=1).execute()
        GAstromTask(instrument="WFI", object=FIELD, filter="#844", commit=1).execute()
        RegridTask(instrument="WFI", object=FIELD, pars=regrid_pars(), commit=1).execute()
        CoaddTask(instrument="WFI", filter="#844", object=FIELD, commit=1).execute()
    finally:
        context.close()


def coadd_night_root(master: Path, tmp_factory, schema_key: str, chips, standards, science, chip_file) -> Path:
    """The folder of the built coadd night (cached under AWE_TEST_NIGHT_CACHE when set); never modified."""
    cache = os.environ.get("AWE_TEST_NIGHT_CACHE")
    import awe.tasks
    versions = Path(awe.tasks.__file__).parent / "algorithm_versions.toml"  # every algorithm module's hash
    code = hashlib.sha1(versions.read_bytes()).hexdigest()[:12]
    recipe = f"{RECIPE} astro={master.name} schema={schema_key} code={code}"
    if cache:
        root = Path(cache) / ("coadd-" + hashlib.sha1(recipe.encode()).hexdigest()[:12])
        if (root / "READY").is_file() and (root / "READY").read_text() == recipe:
            return root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = tmp_factory.mktemp("coadd-night")
    for part in ("home", "storage", "work"):
        shutil.copytree(master / part, root / part)
    build(root, chips, standards, science, chip_file)
    (root / "READY").write_text(recipe)
    return root
