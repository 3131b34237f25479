"""The course of spec sections 5 to 10, end to end, on a simulated WFI night.

``awe demo`` runs it: simulate the night (once), ingest it into ``ALL`` with the
reference catalogues, then, in the user's private project, make the coadd of
3C273 by target processing (:func:`awe.dpu.make.make`): the chain is worked out
from the task contracts — calibrations, every science exposure of the night
reduced, astrometry per frame and global, the standard stars and the night's
zero points, regridding, coaddition — and run step by step through the DPU,
each step's units (chips, frames) in parallel; then the coadd's source list.
The steps report their progress through a :data:`ProgressFactory` (the CLI
draws bars), every detail goes to the log, and :class:`CourseReport` sums the
night up, with the accuracy against the simulator's truth.
:func:`prepare_prompt` then makes ``awe`` in the working folder open the
demo's database and says which command opens the prompt on it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["run_course", "CourseReport", "ChipSummary", "Progress", "ProgressFactory", "prepare_prompt"]

log = logging.getLogger(__name__)

STANDARD_EXPOSURE = "WFI.2003-03-04T04:42:29.496"
NIGHT = "2003-03-03"
FILTER = "#844"

#: Progress of one step: called as ``progress(done, total, name)`` (the protocol of ingest and the simulator).
Progress = Callable[[int, int, str], None]
#: Gives the :data:`Progress` callback of a named step (``"simulate"``, ``"ingest"``, then the DPU recipes of
#: the coadd's chain: ``"Bias"`` ... ``"Coadd"``).
ProgressFactory = Callable[[str], Progress]



@dataclass
class ChipSummary:
    """The quality figures of one chip's calibrations and reductions."""

    chip: str
    read_noise: float | None = None          # master bias, ADU
    n_hot: int | None = None
    n_cold: int | None = None
    gain_dome: float | None = None           # e-/ADU
    gain_twilight: float | None = None
    seeing_standard: float | None = None     # arcsec
    stars_standard: int | None = None
    seeing_science: list[float] = field(default_factory=list)
    tracks: int = 0
    astrometric_rms: list[float] = field(default_factory=list)  # per-axis rms of the 3C273 frames' solutions, arcsec
    zeropoint: float | None = None           # mag (PhotometricParameters)
    products: int = 0
    flagged: int = 0
    failures: list[str] = field(default_factory=list)  # "TaskName: the error", one per task that could not run

    def row(self) -> str:
        seeing = "-" if not self.seeing_science else \
            f"{min(self.seeing_science):.2f}-{max(self.seeing_science):.2f}\""
        std = "-" if self.seeing_standard is None else f"{self.seeing_standard:.2f}\" ({self.stars_standard or 0})"
        gains = f"{_fmt(self.gain_dome, '.2f')}/{_fmt(self.gain_twilight, '.2f')}"
        rms = _fmt(max(self.astrometric_rms) if self.astrometric_rms else None, '.3f')
        return (f"{self.chip:6s} {_fmt(self.read_noise, '.2f'):>10s} {_fmt(self.n_hot, 'd'):>7s} "
                f"{_fmt(self.n_cold, 'd'):>7s} {gains:>11s} {std:>13s} {seeing:>12s} {self.tracks:6d} "
                f"{rms:>7s} {_fmt(self.zeropoint, '.3f'):>7s} {self.products:8d} {self.flagged:7d}")


_HEADER = (f"{'chip':6s} {'bias rn':>10s} {'hot px':>7s} {'cold px':>7s} {'gain d/t':>11s} {'seeing std':>13s} "
           f"{'seeing 3C273':>12s} {'tracks':>6s} {'astrom':>7s} {'zp':>7s} {'products':>8s} {'flagged':>7s}")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


#: what each step of the coadd's chain makes (the DPU recipes, in the order target processing runs them)
_STEPS = {
    "Bias": "master bias", "HotPixels": "hot-pixel map", "DomeFlat": "dome flat", "ColdPixels": "cold-pixel map",
    "TwilightFlat": "twilight flat", "MasterFlat": "master flat",
    "Reduce": "every science exposure of the night reduced (9 standard fields, 6 of 3C273)",
    "Astrometry": "a solution per 3C273 frame", "GAstromSL": "source lists for the global solution",
    "GAstrom": "global astrometry", "Photcat": "standard stars measured", "Photom": "zero points and extinction",
    "Regrid": "3C273 frames onto the field's grid", "Coadd": "the coadd", "SourceList": "the coadd's source list",
}


@dataclass
class CourseReport:
    """What ``awe demo`` did: the steps with their times, one :class:`ChipSummary` per chip, the coadd and its
    source list, and (:meth:`compare_with_truth`) their accuracy against the simulator's truth."""

    outdir: Path
    scale: float
    seed: int
    project: str
    simulated: bool = False
    ingest_summary: str = ""
    ingest_failed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)  # the steps that ran, in order
    chips: list[ChipSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the jobs or tasks that could not run
    # the jobs whose task refused its unit with a TaskError saying why the data do not support it (a short
    # standard-field exposure with too few stars for an astrometric solution): the plan went on without them
    left_out: list[str] = field(default_factory=list)
    # the units target processing found cannot be made from what there is (e.g. a standard field without a
    # standard star on a chip): said, not failures
    not_made: list[str] = field(default_factory=list)
    products: int = 0
    flagged: int = 0                          # products of no chip (the mosaic's) with quality flags
    extinction: str = "-"                    # the night's extinction as PhotomTask found it
    global_astrometry: str = "-"             # GAstromTask's internal and external rms
    coadd: Any = None
    source_list: Any = None
    accuracy: list[str] = field(default_factory=list)  # against the simulator's truth

    def summary(self) -> str:
        """A screenful: the steps, the coadd, the accuracy against the truth, then one row per chip."""
        t = self.timings
        sim = "simulated" if self.simulated else "already simulated, reused"
        flagged = self.flagged + sum(c.flagged for c in self.chips)
        lines = [
            f"The course night (WFI {NIGHT}, scale {self.scale:g}, seed {self.seed}) in {self.outdir}:",
            f"  {'simulate':12s}{t.get('simulate', 0):6.1f} s  {sim}",
            f"  {'ingest':12s}{t.get('ingest', 0):6.1f} s  {self.ingest_summary} into ALL, with the reference "
            "catalogues",
            "  then make(CoaddedRegriddedFrame, object='3C273', filter='#844'): target processing through the DPU",
        ]
        lines += [f"  {name:12s}{t.get(name, 0):6.1f} s  {_STEPS.get(name, '')}" for name in self.steps]
        lines.append(f"{self.products} products committed to project {self.project}" + (
            f", {flagged} of them with quality flags (see the log)" if flagged else ", none flagged")
            + f"; photometry: extinction {self.extinction}; GAstrom: {self.global_astrometry}")
        if self.coadd is not None:
            c = self.coadd
            lines.append(f"coadd {c.filename}: {c.n_inputs} frames, zero point {_fmt(c.zeropoint, '.2f')}, seeing "
                         f"{_fmt(c.seeing, '.2f')}\", depth {_fmt(c.limiting_magnitude, '.2f')} mag (5 sigma)"
                         + (f", {self.source_list.n_sources} sources (SLID {self.source_list.SLID})"
                            if self.source_list is not None else ""))
        lines += [f"against the truth: {line}" for line in self.accuracy]
        lines += ["bias rn: read noise of the master bias [ADU]; gain d/t: dome/twilight flat [e-/ADU]; seeing std: "
                  "standard field (stars used); astrom: worst per-axis rms of the 3C273 frames' solutions [\"]; "
                  "zp: zero point [mag]", _HEADER]
        lines += [c.row() for c in self.chips]
        lines += [f"not made: {reason}" for reason in self.not_made]
        lines += [f"left out: {job}" for job in self.left_out]
        lines += [f"failed: {failure}" for failure in self.failures]
        return "\n".join(lines)

    def compare_with_truth(self) -> None:
        """The accuracy against the simulator's truth (``outdir``): zero points, the coadd's astrometry,
        photometry and completeness. The pipeline never saw the truth: this is only the report."""
        from awe.sim import Truth
        truth = Truth(self.outdir)
        offsets = {str(r["chip"]): float(r["zp_offset"]) for r in truth.chips()}
        errors = [c.zeropoint - (truth.zero_point + offsets[c.chip]) for c in self.chips if c.zeropoint is not None]
        if errors:
            self.accuracy.append(f"zero points {_signed(errors)} mag (PhotomTask against the true ones; "
                                 f"{len(errors)} chip(s))")
        if self.source_list is None:
            return
        import numpy as np
        from astropy.coordinates import SkyCoord
        import astropy.units as u
        table = self.source_list.table()
        stars = truth.stars(kind="star")
        found = SkyCoord(np.asarray(table["RA"], float) * u.deg, np.asarray(table["DEC"], float) * u.deg)
        true = SkyCoord(np.asarray(stars["ra"], float) * u.deg, np.asarray(stars["dec"], float) * u.deg)
        index, sep, _ = found.match_to_catalog_sky(true)
        mag = np.asarray(stars["mag_R"], float)[index]
        bright = (sep.arcsec < 1.0) & (mag < float(self.coadd.limiting_magnitude or 99) - 3.0) \
            & (np.asarray(table["FLAGS"]) == 0)
        if bright.sum() >= 3:
            d_ra, d_dec = found[bright].spherical_offsets_to(true[index[bright]])
            rms = float(np.sqrt(np.mean(np.concatenate([d_ra.arcsec, d_dec.arcsec]) ** 2)))
            dmag = np.asarray(table["MAG_AUTO"], float)[bright] - mag[bright]
            self.accuracy.append(f"coadd astrometry {rms:.3f}\" rms per axis, photometry MAG_AUTO - true R "
                                 f"{float(np.median(dmag)):+.3f} mag (median of {int(bright.sum())} unflagged stars "
                                 f"at S/N > 100)")
        # completeness: true stars inside the source list's footprint, found within 1"
        inside = _inside(true, found)
        if inside.sum() >= 20:
            back, sep_back, _ = true[inside].match_to_catalog_sky(found)
            got = sep_back.arcsec < 1.0
            m = np.asarray(stars["mag_R"], float)[inside]
            edges = np.arange(np.floor(m.min()), np.ceil(m.max()) + 0.5, 0.5)
            m50 = None
            for lo in edges:
                sel = (m >= lo) & (m < lo + 0.5)
                if sel.sum() >= 5 and lo > m.min() + 2 and got[sel].mean() < 0.5:
                    m50 = lo
                    break
            self.accuracy.append(f"coadd depth: 50 % of the true stars found at R = {_fmt(m50, '.1f')} "
                                 f"(coadd's 5-sigma limit {_fmt(self.coadd.limiting_magnitude, '.2f')})")

    @property
    def failed(self) -> bool:
        """Whether a file could not be ingested, a job failed unexpectedly, or the coadd or its source list was
        not made. Units that cannot be made from what there is (a standard field's frame without standards) and
        units a task refused for their data (``left_out``) are said, not failures: the night goes on without
        them, as it would at the telescope."""
        return bool(self.ingest_failed or self.failures or any(c.failures for c in self.chips)
                    or self.coadd is None or self.source_list is None)

    def __str__(self) -> str:
        return self.summary()


def _signed(values: list[float]) -> str:
    worst = max(values, key=abs)
    return f"within {abs(worst):.3f}" if len(values) > 1 else f"{worst:+.3f}"


def _inside(true: Any, found: Any) -> Any:
    """Which true positions lie within the detections' footprint (their RA/Dec box, shrunk by 30")."""
    import numpy as np
    margin = 30 / 3600.0
    dec = found.dec.deg
    ra = found.ra.wrap_at("180d").deg if np.ptp(found.ra.deg) > 180 else found.ra.deg
    tra = true.ra.wrap_at("180d").deg if np.ptp(found.ra.deg) > 180 else true.ra.deg
    cosd = np.cos(np.radians(np.median(dec)))
    return ((tra > ra.min() + margin / cosd) & (tra < ra.max() - margin / cosd)
            & (true.dec.deg > dec.min() + margin) & (true.dec.deg < dec.max() - margin))


def run_course(outdir: str | Path, scale: float = 0.125, seed: int = 1, chips: list[str] | None = None,
               progress: ProgressFactory | None = None, executor: str | None = None) -> CourseReport:
    """Simulate (if needed) and ingest the course night, then make the coadd of 3C273 and its source list by
    target processing.

    Parameters
    ----------
    outdir : str or Path
        Folder of the simulated raw night (made and filled on the first run, reused after).
    scale, seed : float, int
        Chip size factor and random seed of the simulated night.
    chips : list of str, optional
        One chip, or all eight (the default).
    progress : callable, optional
        ``progress(step)`` returns the ``(done, total, name)`` callback of that step.
    executor : str, optional
        The DPU's engine: None (in-process), 'pool', 'dask' or a scheduler address.

    Returns
    -------
    CourseReport

    Raises
    ------
    ValueError
        If a chip is not one of WFI's, or the chips are neither one nor all eight.
    """
    from awe import context
    from awe.instruments import get_instrument
    from awe.model.refcat import ReferenceCatalog, load_refcat
    from awe.sim import simulate_night
    from awe.tasks.ingest import ingest

    wfi = get_instrument("WFI")
    names = [c.name for c in wfi.chips]
    chips = list(chips or names)
    unknown = [c for c in chips if c not in names]
    if unknown:
        raise ValueError(f"chip(s) {unknown} are not WFI chips; give --chip with one of {names}")
    step = progress or (lambda name: None)
    outdir = Path(outdir)
    if not context.connected:
        context.connect()
    report = CourseReport(outdir=outdir, scale=scale, seed=seed, project=context.project.name)

    t0 = time.perf_counter()
    if not (outdir / "refcat").is_dir():
        log.info("simulating the course night into %s (scale %s, seed %d)", outdir, scale, seed)
        simulate_night(outdir, scale=scale, seed=seed, progress=step("simulate"))
        report.simulated = True
    else:
        log.info("reusing the simulated night in %s", outdir)
    report.timings["simulate"] = time.perf_counter() - t0

    private = context.project.name
    t0 = time.perf_counter()
    context.set_project("ALL")
    try:
        result = ingest(sorted(outdir.glob("WFI.*.fits*")), progress=step("ingest"))
        log.info("%s", result)
        for kind, name in (("astrometric", "astrometric.fits"), ("standard", "standards.fits")):
            if len(ReferenceCatalog.kind == kind) == 0:
                load_refcat(outdir / "refcat" / name, kind)
    finally:
        context.set_project(private)
    report.ingest_summary = result.summary()
    report.ingest_failed = len(result.failed)
    report.timings["ingest"] = time.perf_counter() - t0

    summaries = {chip: ChipSummary(chip) for chip in chips}
    report.chips = list(summaries.values())
    _target_processing(report, summaries, chips, names, step, executor)
    report.compare_with_truth()
    log.info("course reduction done:\n%s", report.summary())
    return report


def _target_processing(report: CourseReport, summaries: dict[str, ChipSummary], chips: list[str],
                       names: list[str], step: Any, executor: str | None) -> None:
    """The coadd of 3C273 by target processing (every step of its chain, per chip in parallel through the
    DPU), then its source list; the products' quality figures into the report."""
    from awe import context
    from awe.dpu.make import MakeError, make
    from awe.dpu.runner import DPU
    from awe.model import CoaddedRegriddedFrame
    from awe.tasks import SourceListTask, TaskError

    from awe.instruments import get_instrument
    selection: dict[str, Any] = dict(instrument="WFI", object="3C273", filter=FILTER)
    # the course keeps WFI's own pixel scale (spec section 6: PIXEL_SCALE = 0.238); a shrunk night's pixels
    # are larger by 1/scale
    pars: dict[str, Any] = {"RegriddedFrame": {"swarpconf": {
        "PIXEL_SCALE": round(get_instrument("WFI").pixel_scale / report.scale, 4)}}}
    if len(chips) == 1:
        selection["chip"] = chips[0]
        # one chip's standards alone fix its zero point to ~0.03 mag (the eight chips' joint fit: ~0.01)
        pars["PhotometricParameters"] = {"process_params": {"MAXIMUM_ZEROPOINT_ERROR": 0.05}}
    elif sorted(chips) != sorted(names):
        raise ValueError(f"the demo makes the coadd of one chip (--chip ccd50) or of all eight, not of {chips}")
    runner = DPU(executor, session=context.session, progress=False)
    started: dict[str, float] = {}

    def progress(name: str) -> Progress:
        started[name] = time.perf_counter()
        bar = step(name)

        def tick(done: int, total: int, states: str) -> None:
            if bar:
                bar(done, total, states)
            if done >= total:
                report.timings[name] = time.perf_counter() - started[name]
        return tick

    coadd = None
    try:
        plan = make(CoaddedRegriddedFrame, dpu=runner, pars=pars, quiet=True, progress=progress,
                    **selection)
        report.steps = [s for s in plan.steps if s in report.timings]
        jobs = plan.jobs
    except MakeError as exc:  # the failed jobs are listed below; what the others made stands
        jobs = exc.plan.jobs if exc.plan is not None else runner.jobs()
        report.steps = list(started)
        if exc.plan is None:
            report.failures.append(f"make CoaddedRegriddedFrame: {' '.join(str(exc).split())}")
        else:
            report.not_made += [f"{u.step} {u.label}: {u.reason}" for u in exc.plan.cannot]
    finally:
        runner.close()
    _record_jobs(jobs, summaries, report)
    coadd = (CoaddedRegriddedFrame.OBJECT == "3C273").max("creation_date")
    if coadd is None:
        return
    report.coadd = coadd
    t0 = time.perf_counter()
    try:
        lists = SourceListTask(filenames=[coadd.filename], commit=1).execute()
        report.source_list = lists[0] if lists else None
    except TaskError as exc:
        report.failures.append(f"SourceListTask: {' '.join(str(exc).split())}")
    report.timings["SourceList"] = time.perf_counter() - t0
    report.steps.append("SourceList")


def _record_jobs(jobs: list[Any], summaries: dict[str, ChipSummary], report: CourseReport) -> None:
    """Each job's products into its chip's summary (or the mosaic's), each failed job with its error (as left
    out when its task refused the unit, as a failure when anything else went wrong)."""
    from awe.db.schema import DBObject
    from awe.model import RawStandardFrame
    from awe.tasks import TaskError
    names = [r["filename"] for j in jobs for r in (j.result or []) if r.get("filename")]
    products = {o.filename: o for o in DBObject.filename.in_(names)} if names else {}
    report.products = len(names)
    for job in jobs:
        if job.state != "done":
            error = " ".join(str(job.error).split())
            refused = error.startswith(f"{TaskError.__name__}: ")  # the worker writes "ErrorClass: message"
            (report.left_out if refused else report.failures).append(f"{job.recipe} {job.label}: {error}")
            continue
        for entry in job.result or []:
            product = products.get(entry.get("filename"))
            if product is None:
                continue
            chip = getattr(product, "chip", None)
            summary = summaries.get(chip.name) if chip is not None else None
            kind = type(product).__name__
            if kind == "PhotometricParameters":
                report.extinction = (f"{product.extinction:.3f} +- {product.extinction_error:.3f} mag/airmass "
                                     f"({product.extinction_source}, {product.n_stars} stars on {chip.name})")
            if kind == "GAstrometric":
                report.global_astrometry = (f"rms {product.rms_internal:.3f}\" between exposures, "
                                            f"{product.rms_external:.3f}\" against the reference")
            if summary is None:
                report.flagged += 1 if getattr(product, "quality_flags", 0) else 0
                continue
            raw = getattr(product, "raw", None) if kind == "ReducedScienceFrame" else None
            _record(summary, [product], standard=isinstance(raw, RawStandardFrame),
                    science=kind == "AstrometricParameters")


def _record(summary: ChipSummary, products: Any, standard: bool = False, science: bool = False) -> None:
    """Take the quality figures of a task's products into the chip's summary (and the log)."""
    for product in products or ():
        kind = type(product).__name__
        log.info("%s", _describe(summary.chip, product))
        summary.products += 1
        if getattr(product, "quality_flags", 0):
            summary.flagged += 1
        if kind == "BiasFrame":
            summary.read_noise = getattr(product, "read_noise_adu", None)
        elif kind == "HotPixelMap":
            summary.n_hot = getattr(product, "n_bad_pixels", None)
        elif kind == "ColdPixelMap":
            summary.n_cold = getattr(product, "n_bad_pixels", None)
        elif kind == "DomeFlatFrame":
            summary.gain_dome = getattr(product, "gain", None)
        elif kind == "TwilightFlatFrame":
            summary.gain_twilight = getattr(product, "gain", None)
        elif kind == "SatelliteMap":
            summary.tracks += getattr(product, "n_tracks", 0) or 0
        elif kind == "ReducedScienceFrame":
            seeing = getattr(product, "seeing", None)
            if standard:
                if product.raw.filename.startswith(STANDARD_EXPOSURE):  # the course's standard field
                    summary.seeing_standard = seeing
                    summary.stars_standard = getattr(product, "n_stars_seeing", None)
            elif seeing is not None:
                summary.seeing_science.append(seeing)
        elif kind == "AstrometricParameters" and science and product.rms_ra is not None:
            summary.astrometric_rms.append(max(product.rms_ra, product.rms_dec))
        elif kind == "PhotometricParameters":
            summary.zeropoint = product.zeropoint


def _describe(chip: str, product: Any) -> str:
    stat = getattr(product, "imstat", None)
    extra = []
    for name in ("read_noise_adu", "read_noise", "gain", "n_bad_pixels", "seeing", "n_stars_seeing", "background",
                 "n_tracks", "rms_ra", "rms_dec", "n_ref", "zeropoint", "extinction", "n_stars", "n_measured",
                 "rms_internal", "rms_external"):
        value = getattr(product, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            extra.append(f"{name}={value:.4g}")
    if stat is not None and getattr(stat, "median", None) is not None:
        extra.append(f"median={stat.median:.4g} stdev={stat.stdev:.3g}")
    flags = f" quality_flags={product.quality_flags}" if getattr(product, "quality_flags", 0) else ""
    return f"{chip} {type(product).__name__:22s} {product.filename} {' '.join(extra)}{flags}"


# ============================================================================ after the demo: the prompt
def _as_the_prompt_sees_it(values: dict[str, Any]) -> tuple[str, str, str]:
    """(database URL, storage, user) that ``awe`` would use from these file settings alone."""
    from awe.config import default_user
    home = Path(values.get("home") or Path.home() / ".awe").expanduser()
    return (values.get("database_url") or f"sqlite:///{home / 'awe.sqlite'}",
            str(values.get("storage") or home / "storage"),
            values.get("user") or default_user())


def prepare_prompt(settings: Any, command: str | None = None) -> str:
    """Make ``awe`` in the working folder open the demo's database; return the command that opens the prompt.

    When the settings in force (e.g. ``AWE_HOME=./awe-home``) differ from what
    a plain ``awe`` would find there, an ``awe.toml`` recording them (never a
    password) is written into the working folder; an existing ``awe.toml`` is
    left alone, and the command then carries the settings as variables.

    Parameters
    ----------
    settings : awe.config.Settings
        The settings the demo ran with.
    command : str, optional
        The command to report instead of ``cd WORKDIR && awe`` (``bash run.sh prompt``).
    """
    from awe.config import SETTINGS_FILE, default_user, read_settings_file

    workdir = Path(settings.workdir).resolve()
    wanted: dict[str, str] = {"home": os.path.normpath(Path(settings.home).expanduser().resolve())}
    home = Path(wanted["home"])
    if settings.database_url != f"sqlite:///{Path(settings.home) / 'awe.sqlite'}":
        wanted["database_url"] = _without_password(settings.database_url)
    if settings.storage != str(Path(settings.home) / "storage"):
        wanted["storage"] = settings.storage
    if settings.user != default_user():
        wanted["user"] = settings.user
    target = (wanted.get("database_url") or f"sqlite:///{home / 'awe.sqlite'}",
              wanted.get("storage") or str(home / "storage"), settings.user)
    path = workdir / SETTINGS_FILE
    env_prefix = ""
    if path.is_file():
        if _as_the_prompt_sees_it(read_settings_file(path)) != target:
            log.warning("%s points elsewhere than the demo's database; left as it is", path)
            env_prefix = " ".join(f"AWE_{k.upper()}={shlex.quote(v)}" for k, v in wanted.items()) + " "
    elif _as_the_prompt_sees_it({}) != target:
        lines = ["# written by `awe demo`: `awe` started in this folder opens the demo's database", "[awe]"]
        lines += [f"{key} = {_toml_string(value)}" for key, value in wanted.items()]
        path.write_text("\n".join(lines) + "\n")
        log.info("wrote %s so that `awe` here opens %s", path, target[0])
    if command:
        return command
    exe = Path(sys.executable).with_name("awe")
    found = shutil.which("awe")
    program = "awe" if found and Path(found).resolve() == exe.resolve() else shlex.quote(str(exe))
    if workdir == Path.cwd().resolve() and not env_prefix:
        return program
    return f"cd {shlex.quote(str(workdir))} && {env_prefix}{program}"


def _without_password(url: str) -> str:
    """The URL without its password (AWE_PASSWORD gives it; files and screens never show it)."""
    import sqlalchemy as sa
    parsed = sa.engine.make_url(url)
    if not parsed.password:
        return url
    bare = sa.engine.URL.create(parsed.drivername, username=parsed.username, host=parsed.host, port=parsed.port,
                                database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
