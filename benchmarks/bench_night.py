"""Benchmark: the whole simulated WFI night through awe against a plain numpy floor, step by step.

Simulates the course night (31 exposures, :func:`awe.sim.simulate_night` at
``--scale``, default 1 = full size, ~4.4 GB), then in one process and one
sequence, each awe step followed by its floor peer on the same raw files:

* ingest of every raw file into an embedded SQLite database with local
  storage | floor: astropy read of every extension, written as its own FITS file;
* per chip (``--chips``, default all eight) the six calibration tasks, BiasTask
  ... MasterFlatTask | floor: per-row overscan median, trim, median-combined
  master bias, median-combined normalised dome and twilight flats, a master
  flat (dome times the twilight/dome ratio smoothed on large scales);
  HotPixelsTask and ColdPixelsTask have no peer;
* per chip ReduceTask of the 9 standard-field and 6 science exposures |
  floor: overscan, trim, bias-subtract, flat-field and an inverse-variance
  weight from gain and read noise, both written as FITS.

Each step's wall time, CPU time (process and children, ``resource.getrusage``),
share of the total and peak resident memory (sampled from /proc every 20 ms)
is printed with the ratio awe / floor. No timing is asserted anywhere.

    .venv/bin/python benchmarks/bench_night.py [--scale 1] [--chips ccd50 ccd51] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awe import context  # noqa: E402
from awe.config import load_settings  # noqa: E402
from awe.instruments import RawGeometry, get_instrument  # noqa: E402
from awe.sim import simulate_night  # noqa: E402
from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,  # noqa: E402
                       ReduceTask, TwilightFlatTask)
from awe.tasks.ingest import ingest  # noqa: E402

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


# ============================================================================ measuring
@dataclass
class Measure:
    """What one step cost, summed over its runs (peak: the largest resident size seen during any run)."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_mib: float = 0.0
    runs: int = 0


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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


def _write(path: Path, data: np.ndarray) -> None:
    fits.PrimaryHDU(np.asarray(data, np.float32)).writeto(path, overwrite=True)


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
        raw, header = _raw_chip(path, chip)
        gain = float(header["HIERARCH ESO DET OUT1 CONAD"])        # e-/ADU
        read_noise = float(header["HIERARCH ESO DET OUT1 RON"]) / gain  # ADU
        signal = _overscan_trim(raw, header, chip) - bias
        image = signal / flat
        weight = flat**2 / (np.clip(signal, 0, None) / gain + read_noise**2)
        name = f"{path.stem}_{index}.fits"
        _write(outdir / f"red_{name}", image)
        _write(outdir / f"weight_{name}", weight)
        written[name] = outdir / f"red_{name}"
    return written


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


def run_night(root: Path, scale: float = 1.0, chips: list[str] | None = None, seed: int = 1,
              raw: Path | None = None) -> NightResult:
    """Simulate the night into ``root`` (or take the one in ``raw``), put it through awe and through the floor."""
    chips = list(chips or [c.name for c in WFI.chips])
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
    try:
        with measure(awe, "ingest"):
            report = ingest(raw_files)
        assert not report.failed, str(report)
        with measure(floor, "read + write"):
            floor_ingest(raw_files, floor_dir / "ingest")
        for chip in chips:
            common = dict(instrument="WFI", chip=chip, commit=1)
            flat = dict(date=NIGHT, filter=FILTER, **common)
            with measure(awe, "BiasTask"):
                BiasTask(overscan=6, **common).execute()
            with measure(floor, "master bias"):
                bias = floor_bias(biases, chip, floor_dir)
            with measure(awe, "HotPixelsTask"):
                HotPixelsTask(date=NIGHT, **common).execute()
            with measure(awe, "DomeFlatTask"):
                DomeFlatTask(**flat).execute()
            with measure(floor, "dome master"):
                dome = floor_flat(domes, chip, bias, floor_dir, "dome")
            with measure(awe, "ColdPixelsTask"):
                ColdPixelsTask(**flat).execute()
            with measure(awe, "TwilightFlatTask"):
                TwilightFlatTask(**flat).execute()
            with measure(floor, "twilight master"):
                twilight = floor_flat(twilights, chip, bias, floor_dir, "twilight")
            with measure(awe, "MasterFlatTask"):
                MasterFlatTask(**flat).execute()
            with measure(floor, "master flat"):
                master = floor_master_flat(dome, twilight, chip, floor_dir)
            with measure(awe, "ReduceTask"):
                products = ReduceTask(**common).execute()
            with measure(floor, "reduce + weight"):
                floor_reduced.update(floor_reduce(science, chip, bias, master, floor_dir))
            for product in products:  # outside the timing: what the smoke test compares
                if type(product).__name__ == "ReducedScienceFrame":
                    data = product.load()
                    awe_reduced[product.raw.filename] = (data.shape, float(np.median(data)))
            floor_medians = {name: float(np.median(fits.getdata(path))) for name, path in floor_reduced.items()}
    finally:
        context.close()
    return NightResult(awe, floor, awe_reduced, floor_reduced, floor_medians, sum(p.stat().st_size for p in raw_files))


# ============================================================================ the table
def _share(m: Measure | None, total: float) -> str:
    return "" if m is None else f"{100 * m.wall / total:5.1f} %"


def _cells(m: Measure | None) -> str:
    if m is None:
        return f"{'–':>9s} {'':>9s} {'':>8s}"
    return f"{m.wall:8.2f}s {m.cpu:8.2f}s {m.peak_mib:7.0f}M"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:6.1f}x" if b > 0 else ""


def print_table(result: NightResult, scale: float, chips: list[str]) -> None:
    awe, floor = result.awe, result.floor
    counted = [name for name, _ in STEPS if name != "simulate"]
    awe_wall = sum(awe[s].wall for s in counted)
    awe_cpu = sum(awe[s].cpu for s in counted)
    floor_wall = sum(m.wall for m in floor.values())
    floor_cpu = sum(m.cpu for m in floor.values())
    print(f"the course night at scale {scale:g}: {len(chips)} chip(s) calibrated and reduced ({', '.join(chips)}), "
          f"raw {result.raw_bytes / 1e9:.2f} GB, {len(result.awe_reduced)} frames reduced; {os.cpu_count()} cores")
    print(f"{'step':17s} {'awe wall':>9s} {'CPU':>9s} {'peak':>8s} {'share':>7s} | {'floor':15s} {'wall':>9s} "
          f"{'CPU':>9s} {'peak':>8s} {'share':>7s} | {'wall':>7s} {'CPU':>7s}")
    for name, peer in STEPS:
        a, f = awe[name], floor.get(peer) if peer else None
        share = "" if name == "simulate" else _share(a, awe_wall)
        ratios = f"{_ratio(a.wall, f.wall):>7s} {_ratio(a.cpu, f.cpu):>7s}" if f else ""
        print(f"{name:17s} {_cells(a)} {share:>7s} | {(peer or '–'):15s} {_cells(f)} {_share(f, floor_wall):>7s} | "
              f"{ratios}")
    print(f"{'total (no sim.)':17s} {awe_wall:8.2f}s {awe_cpu:8.2f}s {max(awe[s].peak_mib for s in counted):7.0f}M "
          f"{'':7s} | {'':15s} {floor_wall:8.2f}s {floor_cpu:8.2f}s "
          f"{max(m.peak_mib for m in floor.values()):7.0f}M {'':7s} | {_ratio(awe_wall, floor_wall):>7s} "
          f"{_ratio(awe_cpu, floor_cpu):>7s}")
    offsets = [result.floor_medians[name] / median - 1 for name, (_, median) in result.awe_reduced.items()]
    if offsets:
        print(f"reduced sky level (median), floor / awe - 1: {100 * min(offsets):+.2f} % to "
              f"{100 * max(offsets):+.2f} %")
    print(f"process peak resident memory (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
          f"MiB; CPU includes children")


def main(argv: list[str] | None = None, workdir: str | Path | None = None) -> NightResult:
    """Run the benchmark (in ``workdir`` when given and kept, else a temporary folder) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="chip size factor (1: full size)")
    parser.add_argument("--chips", nargs="+", default=[c.name for c in WFI.chips], help="chips to calibrate and "
                        "reduce (default: all eight)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--raw", type=Path, default=None, help="a night simulated before (its raw folder, at "
                        "--scale): not simulated again")
    args = parser.parse_args(argv)
    if workdir is not None:
        result = run_night(Path(workdir), args.scale, args.chips, args.seed, args.raw)
    else:
        with tempfile.TemporaryDirectory(prefix="awe-bench-night-") as tmp:
            result = run_night(Path(tmp), args.scale, args.chips, args.seed, args.raw)
    print_table(result, args.scale, args.chips)
    return result


if __name__ == "__main__":
    main()
