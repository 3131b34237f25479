"""The course reduction of spec sections 5 and 6, end to end, on a simulated WFI night.

``awe demo`` runs it: simulate the night (once), ingest it into ``ALL`` with the
reference catalogues, then, in the user's private project, make the
calibrations and reduce the standard field and the six 3C273 exposures chip
by chip exactly as the course does at the prompt.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

__all__ = ["run_course"]

log = logging.getLogger(__name__)

STANDARD_EXPOSURE = "WFI.2003-03-04T04:42:29.496"
NIGHT = "2003-03-03"
FILTER = "#844"


def run_course(outdir: str | Path, scale: float = 0.125, seed: int = 1, chips: list[str] | None = None,
               progress: Callable | None = None) -> str:
    """Simulate (if needed), ingest and reduce; returns a text summary."""
    from awe import context
    from awe.instruments import get_instrument
    from awe.model import RawBiasFrame, RawDomeFlatFrame, RawTwilightFlatFrame
    from awe.model.refcat import load_refcat
    from awe.sim import simulate_night
    from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask, ReduceTask,
                           TwilightFlatTask)
    from awe.tasks.ingest import ingest

    outdir = Path(outdir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (outdir / "refcat").is_dir():
        log.info("simulating the course night into %s (scale %s, seed %d)", outdir, scale, seed)
        simulate_night(outdir, scale=scale, seed=seed)
    timings["simulate"] = time.perf_counter() - t0

    if not context.connected:
        context.connect()
    private = context.project.name
    t0 = time.perf_counter()
    context.set_project("ALL")
    report = ingest(sorted(outdir.glob("WFI.*.fits*")), progress=progress)
    log.info("%s", report)
    from awe.model.refcat import ReferenceCatalog
    for kind, name in (("astrometric", "astrometric.fits"), ("standard", "standards.fits")):
        if len(ReferenceCatalog.kind == kind) == 0:
            load_refcat(outdir / "refcat" / name, kind)
    context.set_project(private)
    timings["ingest"] = time.perf_counter() - t0

    lines = [f"course night {outdir} ingested into ALL: {report.summary() if hasattr(report, 'summary') else ''}"]
    chips = chips or [c.name for c in get_instrument("WFI").chips]
    q = (RawBiasFrame.instrument.name == "WFI") & (RawBiasFrame.chip.name == chips[0])
    lines.append(f"raw biases of {chips[0]}: {len(q)}")
    for b in q:
        lines.append(f"  {b.filename} {b.imstat.median:.1f} {b.imstat.stdev:.2f}")
    for cls in (RawDomeFlatFrame, RawTwilightFlatFrame):
        sel = cls.select(instrument="WFI", chip=chips[0], filter=FILTER)
        lines.append(f"{cls.__name__} {chips[0]} {FILTER}: {len(sel)}")
        for f in sel:
            lines.append(f"  {f.filename} {f.imstat.median:.1f} {f.imstat.stdev:.2f}")

    t0 = time.perf_counter()
    for chip in chips:
        index = get_instrument("WFI").chip(chip).index
        common = dict(instrument="WFI", chip=chip)
        steps = [
            BiasTask(overscan=6, commit=1, **common),
            HotPixelsTask(date=NIGHT, commit=1, **common),
            DomeFlatTask(date=NIGHT, filter=FILTER, commit=1, **common),
            ColdPixelsTask(date=NIGHT, filter=FILTER, commit=1, **common),
            TwilightFlatTask(date=NIGHT, filter=FILTER, commit=1, **common),
            MasterFlatTask(date=NIGHT, filter=FILTER, commit=1, **common),
            ReduceTask(raw_filenames=[f"{STANDARD_EXPOSURE}_{index}.fits"], commit=1),
            ReduceTask(object="3C*", commit=1, **common),
        ]
        for task in steps:
            for product in task.execute():
                lines.append(_describe(chip, product))
    timings["reduce"] = time.perf_counter() - t0
    lines.append("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return "\n".join(lines)


def _describe(chip: str, product) -> str:
    stat = getattr(product, "imstat", None)
    extra = []
    for name in ("read_noise", "psf_radius", "background", "n_hot", "n_cold"):
        value = getattr(product, name, None)
        if value is not None:
            extra.append(f"{name}={value:.3g}")
    if stat is not None and stat.median is not None:
        extra.append(f"median={stat.median:.4g} stdev={stat.stdev:.3g}")
    flags = f" quality_flags={product.quality_flags}" if product.quality_flags else ""
    return f"{chip} {type(product).__name__:22s} {product.filename} {' '.join(extra)}{flags}"
