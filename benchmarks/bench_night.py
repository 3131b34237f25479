"""Benchmark: the whole simulated WFI night through awe, from ingest to the coadd, against a peer chain, step by step.

Simulates the course night (31 exposures, :func:`awe.sim.simulate_night` at
``--scale``, default 1 = full size, ~4.4 GB), then in one process and one
sequence, each awe step followed by its peer on the same raw files (the
calibration: a plain numpy "floor"):

* ingest of every raw file into an embedded SQLite database with local
  storage | floor: astropy read of every extension, written as its own FITS file;
* per chip (``--chips``, default all eight) the six calibration tasks, BiasTask
  ... MasterFlatTask | floor: per-row overscan median, trim, median-combined
  master bias, median-combined normalised dome and twilight flats, a master
  flat (dome times the twilight/dome ratio smoothed on large scales);
  HotPixelsTask and ColdPixelsTask have no peer;
* per chip ReduceTask of the 9 standard-field and 6 science exposures |
  floor: overscan, trim, bias-subtract, flat-field and an inverse-variance
  weight from gain and read noise, both written as FITS (with the raw chip
  header's WCS, reference pixel moved by the trim: SCAMP starts from it).

Then (``--until coadd``, the default; ``--until reduce`` stops here) the chain
to the coadd of 3C273 (filter #844), awe's as ``tests/_coadd_night.py`` and the
demo's target processing run it, against the AstrOmatic tools (Debian
``source-extractor``, ``scamp``, ``swarp``, installed with apt when missing,
outside any timing):

* the reference catalogues loaded into the database | the astrometric one
  (``raw/refcat/astrometric.fits``) written as an LDAC file for SCAMP;
* per chip AstrometricParametersTask of every standard and 3C273 frame, then
  PhotcatTask of the standard frames (a frame whose astrometry or catalogue
  fails with a TaskError -- few stars, no standard on the chip -- is left out
  and counted) and PhotomTask per chip (``chip=``, the night, the filter: the
  night's extinction) | no peer (the peer coadd is not photometrically
  calibrated: SCAMP's FLXSCALE 1);
* per chip GAstromSourceListTask | SExtractor on each floor-reduced 3C273 frame
  (MAP_WEIGHT with its weight, FITS_LDAC, GAstromSourceListTask's threshold,
  bench_gastrom's parameters);
* GAstromTask | one SCAMP run on all those catalogues against the LDAC
  reference (bench_gastrom's configuration, with ASTRINSTRU_KEY FILTER,CHIPNAME:
  one distortion of degree 3 per chip for all exposures, as awe's);
* RegridTask (PIXEL_SCALE WFI's 0.238"/pixel divided by ``--scale``) | SWarp
  resampling every frame (``-COMBINE N``, LANCZOS3, SCAMP's ``.head``, its
  weight, the same pixel scale);
* CoaddTask | SWarp combining the resampled frames (``-RESAMPLE N``,
  ``COMBINE_TYPE WEIGHTED``).

Then (``--until coadd``; ``--no-assoc`` leaves it out) awe's association of dithers, measured against the
simulator's truth (:class:`awe.sim.Truth`), on the first chip of ``--chips``: SourceListTask of the
RegriddedFrames of :data:`FIELD` (by DATE-OBS) and AssociateListTask (radius 1") of two of their lists --
every consecutive pair (``--pairs consecutive``, the default: at full size on one chip 19-24 s for the
six lists, under 1 s for the five associations) or the first two dithers only (``--pairs first``).
The true pairs are those of ``tests/coadd/test_coadd_sources.py`` (``tests/_truth.py``: :func:`true_pairs`,
:func:`grid_truth`): true sources of the field on both frames, found (a detection within 1.5 pixels) and
counted (not at bad or saturated pixels, no brighter true source within 2.5 pixels) on both; matched when
their two detections share an association id. Printed per pair: the associations matched and single, the
true pairs matched at true S/N >= 10 and >= 20 (count, fraction, against the issue's 99 %), the rms of the
RA (times cos Dec) and Dec differences between the two detections of matched true stars at S/N >= 20,
isolated (no true source less than 5 mag fainter within :data:`ISOLATION_ARCSEC`) and unflagged (per axis
and total, against the issue's 0.05"; with the mean offset and each list's rms against the truth), and the
unmatched true pairs at S/N >= 10 (their detections' separation and offsets from the truth). Those two
tasks' wall and CPU times are extra rows of the table, not counted in awe's total. With the peers, the
same figures from SExtractor's catalogues of the same regridded frames (their WEIGHT as MAP_WEIGHT,
SourceListTask's threshold and deblending, XWIN/YWIN positions through the frame's WCS), paired by awe's own
one-to-one matching (SExtractor has no association): SourceListTask's peer row, not in the peer chain's total.

At scale 1/8 the coadd chain needs two chips (``--chips ccd50 ccd51``): one chip's standards give its
PhotometricParameters a zero-point error just above their 0.02 mag QC limit, and RegridTask refuses the
frames (at full size one chip is enough).

``--no-peer`` runs no AstrOmatic tool (the numpy floor of the calibration still runs): the coadd chain's
peer rows stay empty and no budget or goal is printed.

Threads: both sides get ``--threads`` (default 2, the machine's two cores):
NTHREADS of SExtractor, SCAMP and SWarp, and ``AWE_THREADS`` for awe's
combinations and RegridTask's resampling (NTHREADS); the rest of awe runs in
this one Python process. With ``--workers N`` (N > 1) awe's steps run instead
as the DPU runs them: each step's units (chips, frames) as jobs on a process
pool of N one-thread workers (``dpu.run`` per chip, then ``dpu.wait_for_jobs``),
so that awe, too, uses the cores the tools' threads use; CPU time and memory
then include the workers'.

Each step's wall time, CPU time (process and children, ``resource.getrusage``),
share of the total and peak resident memory (sampled from /proc every 20 ms;
for an AstrOmatic program its own VmHWM) is printed with the ratio awe / peer,
and a per-step **budget**: the peer chain's total split in proportion to awe's
shares, i.e. what each awe step may take for awe's total to equal the peer
chain's (its wall time times peer total / awe total). The last lines give both
coadds' sizes and whether the goal, awe's total at most the peer chain's, is
met. No timing is asserted anywhere.

    .venv/bin/python benchmarks/bench_night.py [--scale 1] [--chips ccd50 ccd51] [--seed 1] [--raw DIR]
        [--until reduce|coadd] [--no-peer] [--no-assoc] [--pairs first|consecutive] [--threads 2]
        [--workers 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks, imported as modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awe import context  # noqa: E402
from awe.config import load_settings  # noqa: E402
from awe.instruments import RawGeometry, get_instrument  # noqa: E402
from awe.model import ReducedScienceFrame  # noqa: E402
from awe.sim import simulate_night  # noqa: E402
from awe.tasks.ingest import ingest  # noqa: E402

FIELD = "3C273"

NIGHT = "2003-03-03"
FILTER = "#844"
WFI = get_instrument("WFI")
#: the rows of the table: (awe step, its floor peer or None)
STEPS = [
    ("simulate", None),
    ("ingest", "read + write"),
    ("BiasTask", "master bias"),
    ("HotPixelsTask", None),
    ("DomeFlatTask", "dome master"),
    ("ColdPixelsTask", None),
    ("TwilightFlatTask", "twilight master"),
    ("MasterFlatTask", "master flat"),
    ("ReduceTask", "reduce + weight"),
]
#: the rows after ReduceTask (``--until coadd``): the chain to the coadd of :data:`FIELD`
COADD_STEPS = [
    ("refcats", "LDAC refcat"),
    ("AstrometricParametersTask", None),
    ("PhotcatTask", None),
    ("PhotomTask", None),
    ("GAstromSourceListTask", "SExtractor"),
    ("GAstromTask", "SCAMP"),
    ("RegridTask", "SWarp resample"),
    ("CoaddTask", "SWarp combine"),
]
#: SourceListTask's peer (not in the peer chain's total): SExtractor on the same regridded frames
ASSOC_PEER = "SExtractor regr."
#: ... and on the coadd: SourceListTask of awe's coadd against SExtractor on the same file
COADD_LIST, COADD_PEER = "SourceListTask coadd", "SExtractor coadd"
#: the extra rows after the coadd (not in the totals), with their peers: the source list of the coadd and the
#: association of dithers of the first chip
EXTRA_STEPS = [(COADD_LIST, COADD_PEER), ("SourceListTask", ASSOC_PEER), ("AssociateListTask", None)]
#: the association's goals (the issue): true pairs matched within 1", positions between dithers consistent
ASSOC_RADIUS = 1.0
GOAL_PAIRS = 0.99
GOAL_POSITION_RMS = 0.05
#: a true star is isolated when no true source less than 5 mag fainter lies within this [arcsec]
ISOLATION_ARCSEC = 5.0


# ============================================================================ measuring
@dataclass
class Measure:
    """What one step cost, summed over its runs (peak: the largest resident size seen during any run)."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_mib: float = 0.0
    runs: int = 0


def _live_children() -> list:
    """The running child processes (the DPU pool's workers), whose time ``RUSAGE_CHILDREN`` counts only once
    they have ended."""
    import psutil
    return psutil.Process().children(recursive=True)


def _cpu_seconds() -> float:
    """CPU time of this process, of its ended children and of its running ones."""
    import psutil
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in _live_children():
        try:
            t = child.cpu_times()
            live += t.user + t.system
        except psutil.Error:  # ended meanwhile: in RUSAGE_CHILDREN once reaped
            pass
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + live


def _rss_mib() -> float:
    """Resident size of this process and its running children."""
    import psutil
    with open("/proc/self/statm") as f:
        own = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    for child in _live_children():
        try:
            own += child.memory_info().rss
        except psutil.Error:
            pass
    return own / 2**20


class _PeakSampler(threading.Thread):
    """Samples the resident size every ``interval`` seconds until stopped; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, _rss_mib(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, _rss_mib())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_mib())


@contextmanager
def measure(into: dict[str, Measure], step: str):
    """Add the wall time, CPU time and peak memory of the ``with`` block to ``into[step]``."""
    sampler = _PeakSampler()
    sampler.start()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    try:
        yield
    finally:
        m = into.setdefault(step, Measure())
        m.wall += time.perf_counter() - wall
        m.cpu += _cpu_seconds() - cpu
        m.peak_mib = max(m.peak_mib, sampler.stop())
        m.runs += 1


# ============================================================================ awe's steps: here or on the DPU
class AweSteps:
    """Runs each awe step over all its selections: in this process one task after the other (``workers`` 1), or
    as DPU jobs on a process pool of ``workers`` processes of one thread (:class:`awe.dpu.DPU`), all chips at
    once, as ``dpu.run`` runs them."""

    def __init__(self, measures: dict[str, Measure], workers: int = 1):
        self.measures, self.workers = measures, int(workers)
        self.dpu = None
        if self.workers > 1:
            from awe.dpu import DPU
            self.dpu = DPU("pool", workers=self.workers, threads=1, progress=False)

    def close(self) -> None:
        if self.dpu is not None:
            self.dpu.close()

    def run(self, step: str, recipe: str, selections: list[dict], refused: bool = False) -> list[dict]:
        """The task of ``recipe`` for each selection (its keywords), timed as ``step``; returns the selections it
        refused (a TaskError: too few stars, no standard on the chip, ...) when ``refused``, else raises."""
        from awe.dpu.runner import recipe_task
        from awe.tasks import TaskError
        left_out = []
        with measure(self.measures, step):
            if self.dpu is None:
                task = recipe_task(recipe)
                for keywords in selections:
                    try:
                        task(**keywords).execute()
                    except TaskError:
                        if not refused:
                            raise
                        left_out.append(keywords)
            else:
                ids = [self.dpu.run(recipe, **keywords) for keywords in selections]
                state = {j.id: j for j in self.dpu.wait_for_jobs(quiet=True)}
                for keywords, jobs in zip(selections, ids):
                    failed = [state[i] for i in jobs if state[i].state != "done"]
                    if any(not (refused and (j.error or "").startswith("TaskError")) for j in failed):
                        raise RuntimeError(f"{step}: job(s) failed: "
                                           + "; ".join(f"{j.label}: {j.error}" for j in failed[:3]))
                    if failed:
                        left_out.append(keywords)
        return left_out


# ============================================================================ the numpy floor
def _kind(path: Path) -> str:
    return fits.getval(path, "HIERARCH ESO DPR TYPE").strip()


def _raw_chip(path: Path, chip: str) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        hdu = hdul[chip]
        return np.asarray(hdu.data), hdu.header.copy()


def _overscan_trim(raw: np.ndarray, header: fits.Header, chip: str) -> np.ndarray:
    """Subtract each row's overscan median and cut out the trim section (float32)."""
    geometry = RawGeometry.from_header(header, WFI.chip(chip))
    rows, columns = geometry.trim
    levels = np.median(raw[rows, geometry.overscan_x], axis=1).astype(np.float32)
    return raw[rows, columns].astype(np.float32) - levels[:, None]


def _write(path: Path, data: np.ndarray, header: fits.Header | None = None) -> None:
    fits.PrimaryHDU(np.asarray(data, np.float32), header).writeto(path, overwrite=True)


#: the raw chip header's WCS keywords, copied into the floor's reduced frames (SCAMP starts from them)
WCS_KEYS = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
            "EQUINOX", "RADESYS")


def _reduced_header(header: fits.Header, chip: str, exptime: float, gain: float) -> fits.Header:
    """The raw chip header's WCS (reference pixel moved by the trim), exposure time, gain, filter and chip."""
    rows, columns = RawGeometry.from_header(header, WFI.chip(chip)).trim
    out = fits.Header()
    for key in WCS_KEYS:
        if key in header:
            out[key] = header[key]
    out["CRPIX1"] = float(header["CRPIX1"]) - (columns.start or 0)
    out["CRPIX2"] = float(header["CRPIX2"]) - (rows.start or 0)
    out["EXPTIME"] = exptime
    out["GAIN"] = gain
    out["FILTER"] = FILTER
    out["CHIPNAME"] = chip  # SCAMP: one distortion per chip (ASTRINSTRU_KEY FILTER,CHIPNAME)
    return out


def floor_ingest(raw_files: list[Path], outdir: Path) -> None:
    """astropy read of every extension of every file, each written as a FITS file of its own."""
    outdir.mkdir(parents=True, exist_ok=True)
    for path in raw_files:
        with fits.open(path) as hdul:
            for index, hdu in enumerate(hdul[1:], start=1):
                fits.PrimaryHDU(hdu.data, hdu.header).writeto(outdir / f"{path.stem}_{index}.fits", overwrite=True)


def floor_bias(biases: list[Path], chip: str, outdir: Path) -> np.ndarray:
    frames = [_overscan_trim(*_raw_chip(p, chip), chip) for p in biases]
    master = np.median(frames, axis=0).astype(np.float32)
    _write(outdir / f"bias_{chip}.fits", master)
    return master


def floor_flat(flats: list[Path], chip: str, bias: np.ndarray, outdir: Path, name: str) -> np.ndarray:
    frames = []
    for path in flats:
        image = _overscan_trim(*_raw_chip(path, chip), chip) - bias
        frames.append(image / np.median(image))
    master = np.median(frames, axis=0).astype(np.float32)
    _write(outdir / f"{name}_{chip}.fits", master)
    return master


def floor_master_flat(dome: np.ndarray, twilight: np.ndarray, chip: str, outdir: Path) -> np.ndarray:
    """The dome flat's pixel scale with the twilight flat's large scale (ratio smoothed over 1/32 of the chip)."""
    size = max(5, dome.shape[1] // 32)
    master = dome * ndi.uniform_filter(twilight / dome, size=size, mode="nearest")
    master = (master / np.median(master)).astype(np.float32)
    _write(outdir / f"flat_{chip}.fits", master)
    return master


def floor_reduce(science: list[Path], chip: str, bias: np.ndarray, flat: np.ndarray, outdir: Path) -> dict[str, Path]:
    """Reduced frame and weight of every science/standard exposure of a chip; {raw chip file name: reduced file}."""
    index = WFI.chip(chip).index
    written = {}
    for path in science:
        with fits.open(path) as hdul:
            raw, header, exptime = np.asarray(hdul[chip].data), hdul[chip].header.copy(), hdul[0].header["EXPTIME"]
        gain = float(header["HIERARCH ESO DET OUT1 CONAD"])        # e-/ADU
        read_noise = float(header["HIERARCH ESO DET OUT1 RON"]) / gain  # ADU
        signal = _overscan_trim(raw, header, chip) - bias
        image = signal / flat
        weight = flat**2 / (np.clip(signal, 0, None) / gain + read_noise**2)
        name = f"{path.stem}_{index}.fits"
        _write(outdir / f"red_{name}", image, _reduced_header(header, chip, float(exptime), gain))
        _write(outdir / f"weight_{name}", weight)
        written[name] = outdir / f"red_{name}"
    return written


# ============================================================================ to the coadd: awe
def awe_coadd_chain(steps: AweSteps, raw_dir: Path, chips: list[str], standards: list[Path],
                    science: list[Path], scale: float) -> tuple[object, dict[str, int]]:
    """The chain from the reduced frames to the coadd of :data:`FIELD`, each task its own step; returns the
    CoaddedRegriddedFrame and how many units each step left out (a TaskError, as the demo leaves them out)."""
    from awe.model import CoaddedRegriddedFrame
    from awe.model.refcat import load_refcat
    from awe.pars import Pars
    from awe.tasks import RegridTask
    private = context.project.name
    with measure(steps.measures, "refcats"):
        context.set_project("ALL")
        try:
            load_refcat(raw_dir / "refcat" / "astrometric.fits", "astrometric")
            load_refcat(raw_dir / "refcat" / "standards.fits", "standard")
        finally:
            context.set_project(private)
    names = [f"{p.stem}_{WFI.chip(c).index}.fits" for c in chips for p in standards + science]
    unsolved = steps.run("AstrometricParametersTask", "Astrometry",
                         [dict(raw_filenames=[n], commit=1) for n in names], refused=True)  # few stars
    standard_names = {f"{p.stem}_{WFI.chip(c).index}.fits" for c in chips for p in standards}
    solved = [n for n in names if n in standard_names and [n] not in [k["raw_filenames"] for k in unsolved]]
    no_standard = steps.run("PhotcatTask", "Photcat",
                            [dict(instrument="WFI", raw_filenames=[n], commit=1) for n in solved], refused=True)
    # per chip, the night's extinction (fitted on every chip's standards), as target processing
    no_photom = steps.run("PhotomTask", "Photom", [dict(instrument="WFI", chip=c, date=NIGHT, filter=FILTER,
                                                         commit=1) for c in chips], refused=True)
    steps.run("GAstromSourceListTask", "GAstromSL",
              [dict(instrument="WFI", chip=c, object=FIELD, commit=1) for c in chips])
    steps.run("GAstromTask", "GAstrom", [dict(instrument="WFI", object=FIELD, filter=FILTER, commit=1)])
    pars = Pars(RegridTask)
    pars.RegriddedFrame.swarpconf.PIXEL_SCALE = WFI.pixel_scale / scale
    # the resampling of a frame on the tools' threads here; one thread in each DPU worker
    pars.RegriddedFrame.swarpconf.NTHREADS = 1 if steps.dpu is not None else int(os.environ["AWE_THREADS"])
    steps.run("RegridTask", "Regrid", [dict(instrument="WFI", object=FIELD, pars=pars.get(), commit=1)])
    steps.run("CoaddTask", "Coadd", [dict(instrument="WFI", filter=FILTER, object=FIELD, commit=1)])
    coadd = (CoaddedRegriddedFrame.OBJECT == FIELD).max("creation_date")
    return coadd, {"astrometry": len(unsolved), "photcat": len(no_standard), "photom": len(no_photom)}


# ============================================================================ association of dithers: awe
@dataclass
class PairFigures:
    """The association of two dithers' source lists against the truth."""

    frames: tuple[str, str]                  # the two RegriddedFrames' DATE-OBS
    n_matched: int                           # associations with a member of each list
    n_single: int                            # associations of one source
    pairs: dict[int, tuple[int, int]]        # S/N cut -> (true pairs matched, true pairs)
    n_position: int                          # isolated unflagged true stars at S/N >= 20 matched: the rms's
    offset: tuple[float, float]              # mean RA cos Dec, Dec difference (2 - 1) [arcsec]
    rms: tuple[float, float, float]          # rms of the RA cos Dec, Dec, total difference [arcsec]
    truth_rms: tuple[float, float]           # each list's total rms against the true positions, same stars
    unmatched: list[dict]                    # the true pairs at S/N >= 10 not matched


def _sky_offsets(ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RA - RA0) cos Dec0 and Dec - Dec0 [arcsec] (RA wrapped to +-180 degrees)."""
    dra = (np.asarray(ra, float) - np.asarray(ra0, float) + 180.0) % 360.0 - 180.0
    return dra * np.cos(np.radians(dec0)) * 3600.0, (np.asarray(dec, float) - np.asarray(dec0, float)) * 3600.0


def _isolated(stars, radius_arcsec: float) -> np.ndarray:
    """True sources with no other true source less than 5 mag fainter within ``radius_arcsec``."""
    from scipy.spatial import cKDTree
    mags = np.asarray(stars["mag_R"], float)
    dec0 = float(np.median(np.asarray(stars["dec"], float)))
    xy = np.column_stack([np.asarray(stars["ra"], float) * np.cos(np.radians(dec0)),
                          np.asarray(stars["dec"], float)]) * 3600.0
    near = cKDTree(xy).query_ball_point(xy, radius_arcsec)
    return np.array([sum(mags[k] < mags[i] + 5.0 for k in ks if k != i) == 0 for i, ks in enumerate(near)], bool)


def pair_figures(truth, frames, lists, members, n_matched: int, n_single: int) -> PairFigures:
    """Compare the association of the source lists (``table()``: SID, X, Y, RA, DEC, FLAGS; ``SLID``) of two
    RegriddedFrames with the truth; ``members``: its AID, SLID, SID table."""
    from tests._truth import true_pairs
    p = true_pairs(truth, frames, lists, members, FIELD)
    m1, m2, i1 = p["m1"], p["m2"], p["i1"]
    t1, t2 = m1["table"], m2["table"]
    r1, r2 = p["rows1"], p["rows2"]
    both, same, snr = p["both"], p["same"], p["snr"]
    pairs = {cut: (int((both & same & (snr >= cut)).sum()), int((both & (snr >= cut)).sum())) for cut in (10, 20)}
    stars = m1["stars"][i1]
    star = np.asarray(stars["kind"]) == "star"
    flags = (np.asarray(t1["FLAGS"], int)[r1] == 0) & (np.asarray(t2["FLAGS"], int)[r2] == 0)
    use = both & same & (snr >= 20) & star & flags & _isolated(m1["stars"], ISOLATION_ARCSEC)[i1]
    ra1, dec1 = np.asarray(t1["RA"], float)[r1], np.asarray(t1["DEC"], float)[r1]
    ra2, dec2 = np.asarray(t2["RA"], float)[r2], np.asarray(t2["DEC"], float)[r2]
    tra, tdec = np.asarray(stars["ra"], float), np.asarray(stars["dec"], float)
    dra, ddec = _sky_offsets(ra2, dec2, ra1, dec1)
    e1 = np.hypot(*_sky_offsets(ra1, dec1, tra, tdec))
    e2 = np.hypot(*_sky_offsets(ra2, dec2, tra, tdec))

    def rms(v: np.ndarray) -> float:
        return float(np.sqrt(np.mean(v ** 2))) if v.size else float("nan")

    unmatched = [dict(id=int(stars["id"][k]), kind=str(stars["kind"][k]), mag=float(stars["mag_R"][k]),
                      snr=float(snr[k]), separation=float(np.hypot(dra[k], ddec[k])), err1=float(e1[k]),
                      err2=float(e2[k]), flags1=int(t1["FLAGS"][r1[k]]), flags2=int(t2["FLAGS"][r2[k]]))
                 for k in np.flatnonzero(both & ~same & (snr >= 10))]
    return PairFigures(
        frames=(str(frames[0].DATE_OBS), str(frames[1].DATE_OBS)), n_matched=int(n_matched),
        n_single=int(n_single), pairs=pairs, n_position=int(use.sum()),
        offset=(float(np.mean(dra[use])) if use.any() else float("nan"),
                float(np.mean(ddec[use])) if use.any() else float("nan")),
        rms=(rms(dra[use]), rms(ddec[use]), rms(np.hypot(dra[use], ddec[use]))),
        truth_rms=(rms(e1[use]), rms(e2[use])), unmatched=unmatched)


def associated_frames(chip: str, pairs: str = "consecutive") -> list:
    """The RegriddedFrames of :data:`FIELD` on ``chip`` by DATE-OBS: the first two (``pairs='first'``) or all."""
    from awe.model import RegriddedFrame
    frames = sorted((f for f in RegriddedFrame.OBJECT == FIELD if f.chip.name == chip), key=lambda f: f.DATE_OBS)
    if len(frames) < 2:
        raise RuntimeError(f"the association: {len(frames)} RegriddedFrame(s) of {FIELD} on {chip}, not two")
    return frames[:2] if pairs == "first" else frames


def awe_association(awe: dict[str, Measure], raw_dir: Path, chip: str, pairs: str = "first") -> list[PairFigures]:
    """SourceListTask of the RegriddedFrames of :data:`FIELD` on ``chip`` and AssociateListTask of the first two
    (``pairs='first'``) or of every consecutive two (``'consecutive'``), each its step in ``awe``; then,
    outside the timing, each association against the truth."""
    from awe.model import Association
    from awe.sim import Truth
    from awe.tasks import AssociateListTask, SourceListTask
    frames = associated_frames(chip, pairs)
    lists = []
    for frame in frames:
        with measure(awe, "SourceListTask"):
            (sl,) = SourceListTask(filenames=[frame.filename], commit=1).execute()
        lists.append(sl)
    truth, figures = Truth(raw_dir), []
    for k in range(len(frames) - 1):
        two = lists[k:k + 2]
        with measure(awe, "AssociateListTask"):
            (al,) = AssociateListTask(ids=[(two[0].SLID, "s"), (two[1].SLID, "s")], radius=ASSOC_RADIUS,
                                      commit=1).execute()
        figures.append(pair_figures(truth, frames[k:k + 2], two, Association.of(al).table(), al.n_matched,
                                    al.n_single))
    return figures


class _Catalogue:
    """A SExtractor catalogue of a RegriddedFrame as :func:`pair_figures` reads a source list."""

    def __init__(self, slid: int, table) -> None:
        self.SLID, self._table = slid, table

    def table(self):
        return self._table


def _sextractor(image: Path, weight: Path, catalogue: Path, outdir: Path, threads: int) -> float:
    """SExtractor on a grid image (regridded frame, coadd) as SourceListTask measures it: the weight as
    MAP_WEIGHT, SourceListTask's threshold and deblending, minarea 5, a 64-pixel background; its peak memory."""
    from bench_gastrom import SEX_PARAMS

    from awe.model.sourcelist import SourceListParams
    share = Path("/usr/share/source-extractor")
    (outdir / "awe.param").write_text(SEX_PARAMS)
    threshold = float(SourceListParams.DETECT_THRESHOLD.default)
    mincont = float(SourceListParams.DEBLEND_MINCONT.default)
    return _tool(["source-extractor", str(image), "-c", str(share / "default.sex"), "-CATALOG_TYPE", "FITS_1.0",
                  "-CATALOG_NAME", str(catalogue), "-PARAMETERS_NAME", "awe.param", "-FILTER", "Y",
                  "-FILTER_NAME", str(share / "default.conv"), "-STARNNW_NAME", str(share / "default.nnw"),
                  "-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", str(weight),
                  "-DETECT_THRESH", f"{threshold}", "-ANALYSIS_THRESH", f"{threshold}", "-DETECT_MINAREA", "5",
                  "-DEBLEND_MINCONT", f"{mincont}", "-BACK_SIZE", "64", "-PIXEL_SCALE", "0",
                  "-NTHREADS", str(threads), "-VERBOSE_TYPE", "QUIET", "-CHECKIMAGE_TYPE", "NONE"], outdir)


def _catalogue(slid: int, frame: Any, path: Path) -> "_Catalogue":
    """A SExtractor catalogue of a grid image as the truth matching reads a source list (0-based X, Y)."""
    from astropy.table import Table
    t = Table.read(path, hdu=1)
    x, y = np.asarray(t["XWIN_IMAGE"], float) - 1.0, np.asarray(t["YWIN_IMAGE"], float) - 1.0
    ra, dec = frame.wcs().all_pix2world(x, y, 0)
    flux, err = np.asarray(t["FLUX_AUTO"], float), np.asarray(t["FLUXERR_AUTO"], float)
    return _Catalogue(slid, Table({"SID": np.asarray(t["NUMBER"], np.int64), "X": x, "Y": y, "RA": ra, "DEC": dec,
                                   "FLAGS": np.asarray(t["FLAGS"], int),
                                   "SNR": np.where(err > 0, flux / np.where(err > 0, err, 1.0), 0.0)}))


@dataclass
class ListFigures:
    """A source list of the coadd against the truth (``tests/_truth.py`` :func:`grid_truth`, as
    ``tests/coadd/test_coadd_sources.py`` scores it)."""

    n_sources: int
    n_true: int            # counted true sources at true S/N >= 10
    n_found: int           # of those, found (a detection within 1.5 pixels)
    spurious: int          # detections at S/N >= 10 (not on masked pixels) more than 2 pixels from any true source
    n_bright: int          # detections at S/N >= 10 not on masked pixels
    m50: float             # R where the completeness of the counted true sources falls below 50 %


def list_figures(truth: Any, coadd: Any, sl: Any) -> ListFigures:
    from tests._truth import grid_truth
    m = grid_truth(truth, coadd, sl, float(coadd.seeing), FIELD)
    sel = m["counted"] & (m["snr"] >= 10)
    snr = np.asarray(m["table"]["SNR"], float)
    bright = (snr >= 10) & ~m["det_masked"]
    mag, hit = np.asarray(m["stars"]["mag_R"], float)[m["counted"]], m["found"][m["counted"]]
    edges = np.arange(16.0, 27.0, 0.25)
    rate = np.array([hit[(mag >= a) & (mag < a + 0.25)].mean() if np.any((mag >= a) & (mag < a + 0.25)) else 0.0
                     for a in edges])
    return ListFigures(len(m["table"]), int(sel.sum()), int(np.sum(m["found"][sel])),
                       int(np.sum(bright & (m["d_det"] > 2.0))), int(bright.sum()),
                       float(edges[np.argmax(rate < 0.5)] + 0.125))


def coadd_sources(awe: dict[str, Measure], floor: dict[str, Measure] | None, raw_dir: Path, coadd: Any,
                  outdir: Path, threads: int) -> tuple[ListFigures, ListFigures | None]:
    """SourceListTask (commit=1) of awe's coadd, and (``floor`` given) SExtractor on the same coadd and weight
    (written out as plain FITS before the timing), both against the truth."""
    from awe.sim import Truth
    from awe.tasks import SourceListTask
    truth = Truth(raw_dir)
    with measure(awe, COADD_LIST):
        (sl,) = SourceListTask(filenames=[coadd.filename], commit=1).execute()
    ours = list_figures(truth, coadd, sl)
    if floor is None:
        return ours, None
    outdir.mkdir(parents=True, exist_ok=True)
    image, weight, cat = outdir / "coadd.fits", outdir / "coadd.weight.fits", outdir / "coadd.cat"
    _write(image, coadd.load(), coadd.wcs().to_header())
    _write(weight, coadd.weight_map())
    with measure(floor, COADD_PEER):
        peak = _sextractor(image, weight, cat, outdir, threads)
    _tool_peak(floor, COADD_PEER, peak)
    return ours, list_figures(truth, coadd, _catalogue(0, coadd, cat))


def peer_association(floor: dict[str, Measure], raw_dir: Path, frames: list, outdir: Path,
                     threads: int) -> list[PairFigures]:
    """SExtractor on the same RegriddedFrames (their WEIGHT as MAP_WEIGHT, SourceListTask's threshold and
    deblending; positions XWIN/YWIN through the frame's grid WCS), its step in ``floor``; the catalogues of
    consecutive frames paired by awe's own one-to-one nearest-first matching (:func:`awe.tasks.sourcelist.
    associate`, within :data:`ASSOC_RADIUS`: SExtractor has no association) outside the timing, then against
    the truth as awe's lists. The frames and weights are written out as plain FITS before the timing."""
    from awe.sim import Truth
    from awe.tasks.sourcelist import associate
    outdir.mkdir(parents=True, exist_ok=True)
    inputs = []
    for k, frame in enumerate(frames):
        image, weight = outdir / f"regridded_{k}.fits", outdir / f"regridded_{k}.weight.fits"
        _write(image, frame.load(), frame.wcs().to_header())
        _write(weight, frame.weight_map())
        inputs.append((image, weight))
    catalogues, peak = [], 0.0
    with measure(floor, ASSOC_PEER):
        for image, weight in inputs:
            catalogues.append(image.with_suffix(".cat"))
            peak = max(peak, _sextractor(image, weight, catalogues[-1], outdir, threads))
    _tool_peak(floor, ASSOC_PEER, peak)
    lists = [_catalogue(slid, frame, cat) for slid, (frame, cat) in enumerate(zip(frames, catalogues), start=1)]
    truth, figures = Truth(raw_dir), []
    for k in range(len(frames) - 1):
        groups = [[{"SLID": np.array([sl.SLID]), "SID": np.array([sid]), "RA": np.array([r]), "DEC": np.array([d]),
                    "distance": np.array([0.0])} for sid, r, d in zip(*(sl.table()[c] for c in ("SID", "RA", "DEC")))]
                  for sl in lists[k:k + 2]]
        rows = associate(groups, ASSOC_RADIUS)
        sizes = np.bincount(rows["AID"])[1:]
        figures.append(pair_figures(truth, frames[k:k + 2], lists[k:k + 2], rows, int(np.sum(sizes >= 2)),
                                    int(np.sum(sizes == 1))))
    return figures


# ============================================================================ to the coadd: the AstrOmatic peers
def _vmhwm_mib(pid: int, program: str) -> float:
    """The peak resident size of process ``pid`` once it runs ``program`` (0 before its exec or after its exit)."""
    try:
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() != program:
            return 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, UnicodeDecodeError, IndexError):
        pass
    return 0.0


def _tool(args: list[str], cwd: Path) -> float:
    """Run one AstrOmatic program (its output into ``cwd/<program>.log``); its own peak resident memory
    [MiB], its VmHWM sampled every 20 ms (wait4's ru_maxrss would count the forked Python)."""
    log = cwd / f"{Path(args[0]).name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _vmhwm_mib(proc.pid, args[0]))
            time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed (status {proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
    return peak


def _tool_peak(into: dict[str, Measure], step: str, peak: float) -> None:
    """A tool's step (run once): its peak is the program's own, not this Python process's."""
    into[step].peak_mib = peak


def peer_coadd_chain(floor: dict[str, Measure], raw_dir: Path, frames: list[Path], outdir: Path, scale: float,
                     threads: int) -> Path:
    """SExtractor on each floor-reduced frame of :data:`FIELD` (its weight, LDAC), one SCAMP run on all of
    them against the night's astrometric reference catalogue, SWarp (LANCZOS3, the pixel scale of awe's coadd)
    resampling every frame with SCAMP's .head and its weight, then SWarp combining them (weighted mean)."""
    from astropy.table import Table

    from bench_coadd import ensure_swarp, swarp_executable
    from bench_gastrom import SCAMP_CONFIG, SEX_PARAMS, ensure_peers, write_ldac_refcat
    ensure_peers()  # outside any timing: installs the tools with apt when missing
    if not ensure_swarp():
        raise SystemExit("SWarp is not available (apt-get install swarp)")
    outdir.mkdir(parents=True, exist_ok=True)
    with measure(floor, "LDAC refcat"):
        write_ldac_refcat(Table.read(raw_dir / "refcat" / "astrometric.fits"), outdir / "astrometric.cat")
    (outdir / "awe.param").write_text(SEX_PARAMS)
    # the frames are single chips: one distortion per chip for all exposures, as awe's GAstromTask
    config = SCAMP_CONFIG.format(refcat="astrometric.cat", threads=threads)
    config = config.replace("ASTRINSTRU_KEY         FILTER\n", "ASTRINSTRU_KEY         FILTER,CHIPNAME\n")
    (outdir / "scamp.conf").write_text(config)
    from awe.model.gastrom import GAstromSourceParams
    threshold = float(GAstromSourceParams.DETECT_THRESHOLD.default)
    share = Path("/usr/share/source-extractor")
    cats, peak = [], 0.0
    with measure(floor, "SExtractor"):
        for image in frames:
            cat = outdir / image.with_suffix(".cat").name
            weight = image.with_name(image.name.replace("red_", "weight_", 1))
            peak = max(peak, _tool(
                ["source-extractor", str(image), "-c", str(share / "default.sex"), "-CATALOG_TYPE", "FITS_LDAC",
                 "-CATALOG_NAME", str(cat), "-PARAMETERS_NAME", "awe.param", "-FILTER", "Y",
                 "-FILTER_NAME", str(share / "default.conv"), "-STARNNW_NAME", str(share / "default.nnw"),
                 "-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", str(weight), "-DETECT_THRESH", f"{threshold}",
                 "-ANALYSIS_THRESH", f"{threshold}", "-DETECT_MINAREA", "5",
                 "-GAIN", f"{fits.getval(image, 'GAIN')}", "-SATUR_LEVEL", "60000", "-BACK_SIZE", "64",
                 "-PIXEL_SCALE", "0", "-NTHREADS", str(threads), "-VERBOSE_TYPE", "QUIET",
                 "-CHECKIMAGE_TYPE", "NONE"], outdir))
            cats.append(cat)
    _tool_peak(floor, "SExtractor", peak)
    with measure(floor, "SCAMP"):
        peak = _tool(["scamp", *[c.name for c in cats], "-c", "scamp.conf"], outdir)
    _tool_peak(floor, "SCAMP", peak)
    for cat, image in zip(cats, frames):  # SWarp reads <image>.head next to the image
        cat.with_suffix(".head").replace(image.with_suffix(".head"))
    resampled = outdir / "resampled"
    resampled.mkdir(exist_ok=True)
    out = outdir / "coadd.fits"
    common = ["-SUBTRACT_BACK", "N", "-CENTER_TYPE", "ALL", "-PIXELSCALE_TYPE", "MANUAL",
              "-PIXEL_SCALE", f"{WFI.pixel_scale / scale:.6f}", "-IMAGE_SIZE", "0", "-PROJECTION_TYPE", "TAN",
              "-CELESTIAL_TYPE", "EQUATORIAL", "-WEIGHT_TYPE", "MAP_WEIGHT", "-NTHREADS", str(threads),
              "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N", "-IMAGEOUT_NAME", str(out),
              "-WEIGHTOUT_NAME", str(out.with_suffix(".weight.fits")), "-COPY_KEYWORDS", "EXPTIME"]
    weights = [str(f.with_name(f.name.replace("red_", "weight_", 1))) for f in frames]
    with measure(floor, "SWarp resample"):
        peak = _tool([swarp_executable(), *map(str, frames), *common, "-WEIGHT_IMAGE", ",".join(weights),
                      "-RESAMPLE", "Y", "-COMBINE", "N", "-RESAMPLING_TYPE", "LANCZOS3",
                      "-RESAMPLE_DIR", str(resampled)], outdir)
    _tool_peak(floor, "SWarp resample", peak)
    images = [resampled / f.with_suffix(".resamp.fits").name for f in frames]
    with measure(floor, "SWarp combine"):
        peak = _tool([swarp_executable(), *map(str, images), *common, "-WEIGHT_SUFFIX", ".weight.fits",
                      "-RESAMPLE", "N", "-COMBINE", "Y", "-COMBINE_TYPE", "WEIGHTED"], outdir)
    _tool_peak(floor, "SWarp combine", peak)
    return out


# ============================================================================ the run
@dataclass
class NightResult:
    """The measures of both sides, and what to compare their reductions by."""

    awe: dict[str, Measure]
    floor: dict[str, Measure]
    awe_reduced: dict[str, tuple[tuple[int, int], float]]  # raw chip file -> (shape, median) of awe's reduced frame
    floor_reduced: dict[str, Path]                         # raw chip file -> the floor's reduced frame
    floor_medians: dict[str, float]                        # raw chip file -> median of the floor's reduced frame
    raw_bytes: int
    until: str = "coadd"
    threads: int = 2
    awe_coadd: tuple[tuple[int, int], int] | None = None   # (shape, number of input frames) of awe's coadd
    peer_coadd: Path | None = None                         # the peer chain's coadd (SWarp)
    peer_frames: int = 0                                   # frames the peer chain coadded
    skipped: dict[str, int] | None = None                  # frames awe's chain left out (TaskError), per step
    peer: bool = True                                      # the AstrOmatic chain run (``--no-peer``: not)
    association: list[PairFigures] | None = None           # the association of dithers against the truth
    association_chip: str | None = None
    peer_association: list[PairFigures] | None = None      # the same with SExtractor's catalogues (``peer``)
    workers: int = 1                                       # awe's steps: here (1) or on a DPU pool of this many
    coadd_lists: tuple[ListFigures, ListFigures | None] | None = None  # the coadd's source lists: awe's, SExtractor's


def run_night(root: Path, scale: float = 1.0, chips: list[str] | None = None, seed: int = 1,
              raw: Path | None = None, until: str = "coadd", threads: int = 2, peer: bool = True,
              assoc: str | None = "consecutive", workers: int = 1) -> NightResult:
    """Simulate the night into ``root`` (or take the one in ``raw``), put it through awe and through the floor,
    to ReduceTask (``until='reduce'``) or to the coadd of :data:`FIELD` (then, unless ``peer`` is false, the
    peers: AstrOmatic tools with ``threads`` threads; and unless ``assoc`` is None, the association of the
    dithers of the first chip, ``assoc`` the pairs: 'first' or 'consecutive')."""
    chips = list(chips or [c.name for c in WFI.chips])
    before = os.environ.get("AWE_THREADS")
    os.environ["AWE_THREADS"] = str(threads)  # awe's combinations: the AstrOmatic tools' NTHREADS
    try:
        return _run_night(root, scale, chips, seed, raw, until, threads, peer, assoc, workers)
    finally:  # the caller's environment as it was (the smoke test runs inside the test suite)
        if before is None:
            os.environ.pop("AWE_THREADS", None)
        else:
            os.environ["AWE_THREADS"] = before


def _run_night(root: Path, scale: float, chips: list[str], seed: int, raw: Path | None, until: str,
               threads: int, peer: bool, assoc: str | None, workers: int) -> NightResult:
    awe, floor = {}, {}
    with measure(awe, "simulate"):
        if raw is None:
            raw_dir = simulate_night(root / "raw", scale=scale, seed=seed)
        else:
            raw_dir = Path(raw)
            if not any(raw_dir.glob("WFI.*.fits")):
                raise SystemExit(f"--raw {raw_dir}: no WFI.*.fits files there; simulate a night into it first "
                                 "(awe.sim.simulate_night)")
    raw_files = sorted(raw_dir.glob("WFI.*.fits"))
    kinds = {p: _kind(p) for p in raw_files}
    biases = [p for p in raw_files if kinds[p] == "BIAS"]
    domes = [p for p in raw_files if kinds[p] == "FLAT,DOME"]
    twilights = [p for p in raw_files if kinds[p] == "FLAT,SKY"]
    science = [p for p in raw_files if kinds[p] in ("STD", "OBJECT")]
    floor_dir = root / "floor"
    floor_dir.mkdir()
    (root / "work").mkdir()
    context.connect(load_settings(home=str(root / "home"), workdir=str(root / "work"), user="bench",
                                  storage=str(root / "storage")), create_user=True)
    awe_reduced, floor_reduced, floor_medians = {}, {}, {}
    steps = AweSteps(awe, workers)
    try:
        with measure(awe, "ingest"):
            report = ingest(raw_files)
        assert not report.failed, str(report)
        with measure(floor, "read + write"):
            floor_ingest(raw_files, floor_dir / "ingest")
        per_chip = [dict(instrument="WFI", chip=chip, commit=1) for chip in chips]
        flats = [dict(k, date=NIGHT, filter=FILTER) for k in per_chip]
        steps.run("BiasTask", "Bias", [dict(k, overscan=6) for k in per_chip])
        steps.run("HotPixelsTask", "HotPixels", [dict(k, date=NIGHT) for k in per_chip])
        steps.run("DomeFlatTask", "DomeFlat", flats)
        steps.run("ColdPixelsTask", "ColdPixels", flats)
        steps.run("TwilightFlatTask", "TwilightFlat", flats)
        steps.run("MasterFlatTask", "MasterFlat", flats)
        steps.run("ReduceTask", "Reduce", per_chip)
        for chip in chips:
            with measure(floor, "master bias"):
                bias = floor_bias(biases, chip, floor_dir)
            with measure(floor, "dome master"):
                dome = floor_flat(domes, chip, bias, floor_dir, "dome")
            with measure(floor, "twilight master"):
                twilight = floor_flat(twilights, chip, bias, floor_dir, "twilight")
            with measure(floor, "master flat"):
                master = floor_master_flat(dome, twilight, chip, floor_dir)
            with measure(floor, "reduce + weight"):
                floor_reduced.update(floor_reduce(science, chip, bias, master, floor_dir))
        for chip in chips:  # outside the timing: what the smoke test compares
            for product in ReducedScienceFrame.chip.name == chip:
                data = product.load()
                awe_reduced[product.raw.filename] = (data.shape, float(np.median(data)))
        floor_medians = {name: float(np.median(fits.getdata(path))) for name, path in floor_reduced.items()}
        result = NightResult(awe, floor, awe_reduced, floor_reduced, floor_medians,
                             sum(p.stat().st_size for p in raw_files), until, threads, peer=peer,
                             workers=workers)
        if until == "coadd":
            field = [p for p in science if kinds[p] == "OBJECT" and fits.getval(p, "OBJECT").strip() == FIELD]
            standards = [p for p in science if kinds[p] == "STD"]
            coadd, result.skipped = awe_coadd_chain(steps, raw_dir, chips, standards, field, scale)
            data = coadd.load()  # outside the timing: what the table reports of it
            result.awe_coadd = (data.shape, int(coadd.n_inputs))
            result.coadd_lists = coadd_sources(awe, floor if peer else None, raw_dir, coadd,
                                               floor_dir / "peer" / "coadd-sources", threads)
            if assoc is not None:
                result.association = awe_association(awe, raw_dir, chips[0], assoc)
                result.association_chip = chips[0]
            if peer:
                frames = [floor_reduced[f"{p.stem}_{WFI.chip(c).index}.fits"] for c in chips for p in field]
                result.peer_coadd = peer_coadd_chain(floor, raw_dir, frames, floor_dir / "peer", scale, threads)
                result.peer_frames = len(frames)
                if assoc is not None:
                    result.peer_association = peer_association(floor, raw_dir, associated_frames(chips[0], assoc),
                                                               floor_dir / "peer" / "association", threads)
    finally:
        steps.close()
        context.close()
    return result


# ============================================================================ the table
def _share(m: Measure | None, total: float) -> str:
    return "" if m is None else f"{100 * m.wall / total:5.1f} %"


def _cells(m: Measure | None) -> str:
    if m is None:
        return f"{'–':>9s} {'':>9s} {'':>8s}"
    return f"{m.wall:8.2f}s {m.cpu:8.2f}s {m.peak_mib:7.0f}M"


def _ratio(a: float, b: float) -> str:
    return "" if b <= 0 else f"{a / b:6.1f}x" if a >= b else f"{a / b:6.2f}x"


def print_table(result: NightResult, scale: float, chips: list[str]) -> None:
    awe, floor = result.awe, result.floor
    steps = STEPS + (COADD_STEPS if result.until == "coadd" else [])
    counted = [name for name, _ in steps if name != "simulate"]
    awe_wall = sum(awe[s].wall for s in counted)
    awe_cpu = sum(awe[s].cpu for s in counted)
    chain = [m for name, m in floor.items() if name != ASSOC_PEER]  # the peers of the steps in awe's total
    floor_wall = sum(m.wall for m in chain)
    floor_cpu = sum(m.cpu for m in chain)
    peer = "peer" if result.until == "coadd" else "floor"
    compared = result.until == "reduce" or result.peer  # the peer chain ran: a budget and a goal
    what = "calibrated and reduced" if result.until == "reduce" else f"calibrated, reduced and coadded ({FIELD})"
    print(f"the course night at scale {scale:g}: {len(chips)} chip(s) {what} ({', '.join(chips)}), "
          f"raw {result.raw_bytes / 1e9:.2f} GB, {len(result.awe_reduced)} frames reduced; {os.cpu_count()} cores"
          + (f"; AstrOmatic tools NTHREADS {result.threads}" if result.until == "coadd" and result.peer else "")
          + ("; no AstrOmatic peers (--no-peer)" if not compared else "")
          + (f"; awe's steps as DPU jobs on {result.workers} one-thread worker processes" if result.workers > 1
             else "; awe's steps in this process"))
    print(f"{'step':25s} {'awe wall':>9s} {'CPU':>9s} {'peak':>8s} {'share':>7s} {'budget':>8s} | {peer:15s} "
          f"{'wall':>9s} {'CPU':>9s} {'peak':>8s} {'share':>7s} | {'wall':>7s} {'CPU':>7s}")
    for name, other in steps:
        a, f = awe[name], floor.get(other) if other else None
        share = "" if name == "simulate" else _share(a, awe_wall)
        # the budget: the peer chain's total split in proportion to awe's shares
        budget = "" if name == "simulate" or not compared else f"{floor_wall * a.wall / awe_wall:7.2f}s"
        ratios = f"{_ratio(a.wall, f.wall):>7s} {_ratio(a.cpu, f.cpu):>7s}" if f else ""
        print(f"{name:25s} {_cells(a)} {share:>7s} {budget:>8s} | {(other or '–'):15s} {_cells(f)} "
              f"{_share(f, floor_wall):>7s} | {ratios}")
    budget = f"{floor_wall:7.2f}s" if compared else ""
    ratios = f"{_ratio(awe_wall, floor_wall):>7s} {_ratio(awe_cpu, floor_cpu):>7s}" if compared else ""
    print(f"{'total (no sim.)':25s} {awe_wall:8.2f}s {awe_cpu:8.2f}s {max(awe[s].peak_mib for s in counted):7.0f}M "
          f"{'':7s} {budget:>8s} | {'':15s} {floor_wall:8.2f}s {floor_cpu:8.2f}s "
          f"{max(m.peak_mib for m in chain):7.0f}M {'':7s} | {ratios}")
    for name, peer_step in EXTRA_STEPS:  # extra rows, not in the totals
        if name in awe:
            f = floor.get(peer_step) if peer_step else None
            other = peer_step if f else "(not in total)"
            ratios = f"{_ratio(awe[name].wall, f.wall):>7s} {_ratio(awe[name].cpu, f.cpu):>7s}" if f else ""
            print(f"{name:25s} {_cells(awe[name])} {'':7s} {'':>8s} | {other:15s} {_cells(f) if f else '':28s} "
                  f"{'':7s} | {ratios}")
    offsets = [result.floor_medians[name] / median - 1 for name, (_, median) in result.awe_reduced.items()]
    if offsets:
        print(f"reduced sky level (median), floor / awe - 1: {100 * min(offsets):+.2f} % to "
              f"{100 * max(offsets):+.2f} %")
    if result.until == "coadd":
        if result.awe_coadd is not None:
            (ny, nx), n = result.awe_coadd
            skipped = ", ".join(f"{k} {v}" for k, v in (result.skipped or {}).items())
            print(f"awe's coadd: {nx} x {ny} pixels of {WFI.pixel_scale / scale:.3f}\", {n} frames "
                  f"(frames left out: {skipped or 'none'})")
        if result.peer_coadd is not None and result.peer_coadd.is_file():
            ny, nx = fits.getdata(result.peer_coadd).shape
            print(f"the peers' coadd (SWarp): {nx} x {ny} pixels, {result.peer_frames} frames")
        if result.coadd_lists:
            for who, f in zip(("SourceListTask", "SExtractor"), result.coadd_lists):
                if f is not None:
                    print(f"{who} on awe's coadd: {f.n_sources} sources; {_fraction(f.n_found, f.n_true)} of the "
                          f"counted true sources at S/N >= 10 found; spurious at S/N >= 10: {f.spurious} of "
                          f"{f.n_bright}; 50 %-completeness R = {f.m50:.2f}")
        if result.association:
            print_association(result.association, result.association_chip, awe)
        if result.peer_association:
            print_association(result.peer_association, result.association_chip, None)
        if result.peer:
            met = "met" if awe_wall <= floor_wall else "not met"
            print(f"goal awe total <= peer chain total: {met} ({awe_wall:.2f} s against {floor_wall:.2f} s, "
                  f"awe / peer {awe_wall / floor_wall:.2f})")
        else:
            print("the AstrOmatic peer chain was not run (--no-peer): no budget, no goal")
    print(f"process peak resident memory (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
          f"MiB; CPU includes children")


def _fraction(good: int, total: int) -> str:
    return f"{good}/{total} = {100 * good / total:.1f} %" if total else "0/0"


def print_association(figures: list[PairFigures], chip: str | None, awe: dict[str, Measure] | None) -> None:
    """Per pair of dithers: the counts, the true pairs matched and the position differences, against the goals
    (``awe`` None: SExtractor's catalogues)."""
    if awe is None:
        print(f"the same with SExtractor's catalogues of the regridded frames, paired by awe's matching within "
              f"{ASSOC_RADIUS:g}\" ({len(figures)} pair(s)):")
    else:
        sl, al = awe.get("SourceListTask"), awe.get("AssociateListTask")
        print(f"association of the dithers of {FIELD} on {chip} within {ASSOC_RADIUS:g}\" ({len(figures)} pair(s); "
              f"SourceListTask {sl.runs if sl else 0} lists, AssociateListTask {al.runs if al else 0} runs):")
    for f in figures:
        print(f"  {f.frames[0]} + {f.frames[1]}: {f.n_matched} matched, {f.n_single} single")
        for cut, (good, total) in f.pairs.items():
            met = "met" if total and good / total >= GOAL_PAIRS else "not met"
            print(f"    true pairs matched at S/N >= {cut}: {_fraction(good, total)} "
                  f"(goal >= {100 * GOAL_PAIRS:.0f} %: {met})")
        met = "met" if f.rms[2] < GOAL_POSITION_RMS else "not met"
        print(f"    positions between the dithers, {f.n_position} isolated unflagged true stars at S/N >= 20: rms "
              f"RA cos Dec {f.rms[0]:.4f}\", Dec {f.rms[1]:.4f}\", total {f.rms[2]:.4f}\" (goal < "
              f"{GOAL_POSITION_RMS:g}\": {met}); mean offset {f.offset[0]:+.4f}\", {f.offset[1]:+.4f}\"; "
              f"against the truth {f.truth_rms[0]:.4f}\" and {f.truth_rms[1]:.4f}\" total rms")
        for u in f.unmatched[:10]:
            print(f"    unmatched true pair: {u['kind']} {u['id']} R {u['mag']:.2f} S/N {u['snr']:.1f}: detections "
                  f"{u['separation']:.2f}\" apart, {u['err1']:.2f}\" and {u['err2']:.2f}\" from the truth, FLAGS "
                  f"{u['flags1']} {u['flags2']}")
    if len(figures) > 1:
        for cut in (10, 20):
            good, total = (sum(f.pairs[cut][i] for f in figures) for i in (0, 1))
            print(f"  all pairs: true pairs matched at S/N >= {cut}: {_fraction(good, total)}")
        worst = max(f.rms[2] for f in figures)
        print(f"  all pairs: position rms (total) {min(f.rms[2] for f in figures):.4f}\" to {worst:.4f}\"")


def main(argv: list[str] | None = None, workdir: str | Path | None = None) -> NightResult:
    """Run the benchmark (in ``workdir`` when given and kept, else a temporary folder) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="chip size factor (1: full size)")
    parser.add_argument("--chips", nargs="+", default=[c.name for c in WFI.chips], help="chips to calibrate and "
                        "reduce (default: all eight)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--raw", type=Path, default=None, help="a night simulated before (its raw folder, at "
                        "--scale): not simulated again")
    parser.add_argument("--until", choices=("reduce", "coadd"), default="coadd", help="the last step: ReduceTask "
                        "(no AstrOmatic tools needed) or the coadd of 3C273 (default)")
    parser.add_argument("--no-peer", action="store_true", help="run no AstrOmatic tool (the coadd chain's peers; "
                        "the calibration's numpy floor still runs)")
    parser.add_argument("--no-assoc", action="store_true", help="no association of dithers after the coadd")
    parser.add_argument("--pairs", choices=("first", "consecutive"), default="consecutive", help="the dithers "
                        "associated (first chip): every consecutive two (default) or the first two")
    parser.add_argument("--threads", type=int, default=2, help="NTHREADS of SExtractor, SCAMP and SWarp "
                        "(default 2: the machine's two cores, as awe's libraries use)")
    parser.add_argument("--workers", type=int, default=1, help="awe's steps in this process (1, default) or as DPU "
                        "jobs on a process pool of this many one-thread workers (2: the cores the tools' threads use)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temporary "
                        "folder, removed)")
    args = parser.parse_args(argv)
    workdir = workdir if workdir is not None else args.workdir
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        result = run_night(Path(workdir), args.scale, args.chips, args.seed, args.raw, args.until, args.threads,
                           not args.no_peer, None if args.no_assoc else args.pairs, args.workers)
        print_table(result, args.scale, args.chips)
    else:
        with tempfile.TemporaryDirectory(prefix="awe-bench-night-") as tmp:
            result = run_night(Path(tmp), args.scale, args.chips, args.seed, args.raw, args.until, args.threads,
                               not args.no_peer, None if args.no_assoc else args.pairs, args.workers)
            print_table(result, args.scale, args.chips)  # the coadds still there
    return result


if __name__ == "__main__":
    main()
