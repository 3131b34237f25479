"""The course reduction of spec sections 5 and 6, end to end, on a simulated WFI night.

``awe demo`` runs it: simulate the night (once), ingest it into ``ALL`` with the
reference catalogues, then, in the user's private project, make the
calibrations, reduce the nine standard-field exposures, solve their astrometry
and the night's photometry (standard-star catalogues, the illumination
correction, zero points and extinction), reduce the six 3C273 exposures (the
illumination correction applied) and solve their astrometry chip by chip and
globally, with the tasks the course runs at the prompt. The steps report their
progress through a :data:`ProgressFactory` (the CLI draws bars), every detail
goes to the log, and :class:`CourseReport` sums the night up per chip.
:func:`prepare_prompt` then makes ``awe`` in the working folder open the
demo's database and says which command opens the prompt on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["run_course", "CourseReport", "ChipSummary", "Progress", "ProgressFactory", "prepare_prompt"]

log = logging.getLogger(__name__)

STANDARD_EXPOSURE = "WFI.2003-03-04T04:42:29.496"
NIGHT = "2003-03-03"
FILTER = "#844"

#: Progress of one step: called as ``progress(done, total, name)`` (the protocol of ingest and the simulator).
Progress = Callable[[int, int, str], None]
#: Gives the :data:`Progress` callback of a named step (``"simulate"``, ``"ingest"``, ``"calibrate"``,
#: ``"standards"``, ``"photometry"``, ``"reduce"``, ``"astrometry"``).
ProgressFactory = Callable[[str], Progress]

_CALIBRATIONS = ("BiasTask", "HotPixelsTask", "DomeFlatTask", "ColdPixelsTask", "TwilightFlatTask", "MasterFlatTask")


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


@dataclass
class CourseReport:
    """What ``awe demo`` did: the steps with their times and one :class:`ChipSummary` per chip."""

    outdir: Path
    scale: float
    seed: int
    project: str
    simulated: bool = False
    ingest_summary: str = ""
    ingest_failed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    chips: list[ChipSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the tasks over all chips that could not run
    extinction: str = "-"                    # the night's extinction as PhotomTask found it
    global_astrometry: str = "-"             # GAstromTask's internal and external rms

    def summary(self) -> str:
        """A dozen lines: the steps, then one row of quality figures per chip."""
        t = self.timings
        sim = "simulated" if self.simulated else "already simulated, reused"
        products = sum(c.products for c in self.chips)
        flagged = sum(c.flagged for c in self.chips)
        lines = [
            f"The course night (WFI {NIGHT}, scale {self.scale:g}, seed {self.seed}) in {self.outdir}:",
            f"  simulate  {t.get('simulate', 0):6.1f} s  {sim}",
            f"  ingest    {t.get('ingest', 0):6.1f} s  {self.ingest_summary} into ALL, with the reference catalogues",
            f"  calibrate {t.get('calibrate', 0):6.1f} s  {', '.join(_CALIBRATIONS)} per chip",
            f"  standards {t.get('standards', 0):6.1f} s  ReduceTask, AstrometricParametersTask: the 9 standard fields",
            f"  photometry{t.get('photometry', 0):6.1f} s  PhotcatTask, IlluminationCorrectionTask, PhotomTask: "
            f"extinction {self.extinction}",
            f"  reduce    {t.get('reduce', 0):6.1f} s  ReduceTask: the six 3C273 exposures",
            f"  astrometry{t.get('astrometry', 0):6.1f} s  AstrometricParametersTask, GAstromSourceListTask, "
            f"GAstromTask: {self.global_astrometry}",
            f"{products} products committed to project {self.project}" + (
                f", {flagged} of them with quality flags (see the log)" if flagged else ", none flagged"),
            "bias rn: read noise of the master bias [ADU]; gain d/t: dome/twilight flat [e-/ADU]; seeing std: "
            "standard field (stars used); astrom: worst per-axis rms of the 3C273 frames' solutions [\"]; "
            "zp: zero point [mag]",
            _HEADER,
        ]
        lines += [c.row() for c in self.chips]
        lines += [f"{c.chip} {failure}" for c in self.chips for failure in c.failures]
        lines += [f"mosaic {failure}" for failure in self.failures]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        """Whether a file could not be ingested or a task could not run."""
        return bool(self.ingest_failed or self.failures or any(c.failures for c in self.chips))

    def __str__(self) -> str:
        return self.summary()


def run_course(outdir: str | Path, scale: float = 0.125, seed: int = 1, chips: list[str] | None = None,
               progress: ProgressFactory | None = None) -> CourseReport:
    """Simulate (if needed), ingest, calibrate, reduce and solve the course night.

    Parameters
    ----------
    outdir : str or Path
        Folder of the simulated raw night (made and filled on the first run, reused after).
    scale, seed : float, int
        Chip size factor and random seed of the simulated night.
    chips : list of str, optional
        Chips to calibrate and reduce (default: all eight).
    progress : callable, optional
        ``progress(step)`` returns the ``(done, total, name)`` callback of that step.

    Returns
    -------
    CourseReport

    Raises
    ------
    ValueError
        If a chip is not one of WFI's.
    """
    from awe import context
    from awe.instruments import get_instrument
    from awe.model.refcat import ReferenceCatalog, load_refcat
    from awe.sim import simulate_night
    from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask, ReduceTask,
                           TwilightFlatTask)
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
    calibrate = step("calibrate")
    t0 = time.perf_counter()
    total = len(chips) * len(_CALIBRATIONS)
    done = 0
    for chip in chips:
        common = dict(instrument="WFI", chip=chip)
        tasks = [
            BiasTask(overscan=6, commit=1, **common),
            HotPixelsTask(date=NIGHT, commit=1, **common),
            DomeFlatTask(date=NIGHT, filter=FILTER, commit=1, **common),
            ColdPixelsTask(date=NIGHT, filter=FILTER, commit=1, **common),
            TwilightFlatTask(date=NIGHT, filter=FILTER, commit=1, **common),
            MasterFlatTask(date=NIGHT, filter=FILTER, commit=1, **common),
        ]
        for task in tasks:
            if calibrate:
                calibrate(done, total, f"{chip} {type(task).__name__}")
            _run(task, summaries[chip])
            done += 1
    if calibrate:
        calibrate(total, total, "")
    report.timings["calibrate"] = time.perf_counter() - t0

    # the standard fields: reduce, astrometry, then the night's photometry (spec section 6's order)
    timer = _Timer(report.timings)
    with timer("standards"):
        standards = _standard_fields(step("standards"), chips, summaries)
    with timer("photometry"):
        _photometry(step("photometry"), summaries, report, standards)
    # the 3C273 exposures (the illumination correction applied): reduce, astrometry per chip and global
    reduce = step("reduce")
    with timer("reduce"):
        for done, chip in enumerate(chips):
            _tick(reduce, done, len(chips), f"{chip} 3C273")
            _run(ReduceTask(instrument="WFI", chip=chip, object="3C*", commit=1), summaries[chip])
        if len(chips) > 1:  # the mosaic pass: tracks found on one chip followed onto the others
            _follow_satellites(summaries)
        _tick(reduce, len(chips), len(chips), "")
    with timer("astrometry"):
        _science_astrometry(step("astrometry"), chips, summaries, report)
    log.info("course reduction done:\n%s", report.summary())
    return report


class _Timer:
    """Adds the wall time of ``with timer(step):`` blocks to ``timings[step]``."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def _tick(progress: Progress | None, done: int, total: int, name: str) -> None:
    if progress:
        progress(done, total, name)


def _raw_names(chip: str, pattern: str) -> list[str]:
    """The raw chip files of a chip whose OBJECT matches ``pattern`` that were reduced (by DATE-OBS)."""
    from awe.model import ReducedScienceFrame, RawScienceFrame
    raws = RawScienceFrame.select(instrument="WFI", chip=chip, object=pattern)
    reduced = {red.raw.filename for red in ReducedScienceFrame.chip.name == chip}
    return [raw.filename for raw in sorted(raws, key=lambda r: r.DATE_OBS) if raw.filename in reduced]


def _photometry(progress: Progress | None, summaries: dict[str, ChipSummary], report: CourseReport,
                standards: dict[str, list[str]]) -> None:
    """Standard-star catalogues, the illumination correction and the zero points of the reduced standards."""
    from awe.tasks import IlluminationCorrectionTask, PhotcatTask, PhotomTask
    frames = [(chip, name) for chip, names in standards.items() for name in names]
    total = len(frames) + 2
    measured = []  # the frames with a standard-star catalogue (a frame whose standards are all lost has none)
    for done, (chip, name) in enumerate(frames):
        _tick(progress, done, total, name)
        if _run(PhotcatTask(instrument="WFI", raw_filenames=[name], commit=1), summaries[chip]):
            measured.append(name)
    _tick(progress, total - 2, total, "IlluminationCorrectionTask")
    _run_mosaic(IlluminationCorrectionTask(instrument="WFI", raw_filenames=measured, commit=1), summaries, report)
    _tick(progress, total - 1, total, "PhotomTask")
    params = _run_mosaic(PhotomTask(instrument="WFI", raw_filenames=measured, commit=1), summaries, report)
    for p in params:
        report.extinction = (f"{p.extinction:.3f} +- {p.extinction_error:.3f} mag/airmass "
                             f"({p.extinction_source}, {p.n_stars} stars on {p.chip.name})")
    _tick(progress, total, total, "")


def _standard_fields(progress: Progress | None, chips: list[str],
                     summaries: dict[str, ChipSummary]) -> dict[str, list[str]]:
    """Reduce the standard-field exposures of each chip and solve their astrometry; returns each chip's raw files."""
    from awe.tasks import AstrometricParametersTask, ReduceTask
    total, done = 2 * len(chips), 0
    solved: dict[str, list[str]] = {}
    for chip in chips:
        _tick(progress, done, total, f"{chip} ReduceTask")
        _run(ReduceTask(instrument="WFI", chip=chip, object="SA*", commit=1), summaries[chip], standard=True)
        _tick(progress, done + 1, total, f"{chip} AstrometricParametersTask")
        solved[chip] = _raw_names(chip, "SA*")
        for name in solved[chip]:  # frame by frame: a frame without a solution does not stop the others
            _run(AstrometricParametersTask(raw_filenames=[name], commit=1), summaries[chip])
        done += 2
    _tick(progress, total, total, "")
    return solved


def _science_astrometry(progress: Progress | None, chips: list[str], summaries: dict[str, ChipSummary],
                        report: CourseReport) -> None:
    """The 3C273 frames: a solution per frame, the source lists, then one global solution of every dither."""
    from awe.tasks import AstrometricParametersTask, GAstromSourceListTask, GAstromTask
    total = 2 * len(chips) + 1
    for i, chip in enumerate(chips):
        _tick(progress, 2 * i, total, f"{chip} AstrometricParametersTask")
        for name in _raw_names(chip, "3C*"):
            _run(AstrometricParametersTask(raw_filenames=[name], commit=1), summaries[chip], science=True)
        _tick(progress, 2 * i + 1, total, f"{chip} GAstromSourceListTask")
        _run(GAstromSourceListTask(instrument="WFI", chip=chip, object="3C*", commit=1), summaries[chip])
    _tick(progress, total - 1, total, "GAstromTask")
    solutions = _run_mosaic(GAstromTask(instrument="WFI", object="3C*", filter=FILTER, commit=1), summaries, report)
    if solutions:
        first = solutions[0]
        report.global_astrometry = (f"{len(solutions)} frames, rms {first.rms_internal:.3f}\" between exposures, "
                                    f"{first.rms_external:.3f}\" against the reference")
    _tick(progress, total, total, "")


def _run_mosaic(task: Any, summaries: dict[str, ChipSummary], report: CourseReport) -> list[Any]:
    """Execute a task over all chips; each product is recorded with its chip, a failure with the report."""
    from awe.tasks import TaskError
    try:
        products = list(task.execute() or ())
    except TaskError as exc:
        message = " ".join(str(exc).split())
        log.warning("%s could not run: %s", type(task).__name__, message)
        report.failures.append(f"{type(task).__name__}: {type(exc).__name__}: {message}")
        return []
    for product in products:
        summary = summaries.get(product.chip.name)
        if summary is not None:
            _record(summary, [product])
    return products


def _follow_satellites(summaries: dict[str, ChipSummary]) -> None:
    """Follow the satellite tracks of the 3C273 exposures across the chips; new maps go to their chips' summary."""
    from awe.tasks import FollowSatellitesTask, TaskError
    try:
        products = FollowSatellitesTask(instrument="WFI", object="3C*", commit=1).execute()
    except TaskError as exc:
        log.warning("FollowSatellitesTask could not run: %s", " ".join(str(exc).split()))
        return
    for product in products:
        summary = summaries.get(product.chip.name)
        if summary is None:
            continue
        log.info("%s", _describe(summary.chip, product))
        summary.products += 1
        if type(product).__name__ == "SatelliteMap":  # a chip's new map: only the followed tracks are new
            summary.tracks += product.n_followed_tracks or 0


def _run(task: Any, summary: ChipSummary, standard: bool = False, science: bool = False) -> list[Any]:
    """Execute one task and return its products; a task that cannot run (e.g. a refused calibration) is noted
    and the demo goes on (no products)."""
    from awe.tasks import TaskError
    try:
        products = list(task.execute() or ())
    except TaskError as exc:
        message = " ".join(str(exc).split())
        log.warning("%s %s could not run: %s", summary.chip, type(task).__name__, message)
        summary.failures.append(f"{type(task).__name__}: {type(exc).__name__}: {message}")
        return []
    _record(summary, products, standard=standard, science=science)
    return products


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
