"""Benchmark: awe.image.combine (streaming, sigma-clipped) against ccdproc.combine.

Makes ``--nframes`` synthetic ``--ny`` x ``--nx`` float32 FITS frames (bias-like:
level 200 ADU, a column pattern, 3 ADU noise, cosmic rays) in a work folder,
then combines them, each in its own subprocess so that peak memory is
measured cleanly:

* ours: ``combine(frames, method='clipped_mean', sigma=3)``, streaming the
  frames from ``astropy.io.fits`` memory maps;
* peer: ``ccdproc.combine(files, method='average', sigma_clip=True)`` with its
  defaults (one pass of 3-sigma clipping around the mean with the standard
  deviation as width, ``mem_limit=16e9``); with ``--robust-peer`` also with
  ``sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std``.

Peak memory is sampled (every 2 ms) as the resident set size and as the
private (anonymous) part of it (RSS minus file-backed shared pages: the
memory-mapped input pages a streaming reader touches are page cache, not
allocations), both above the process's baseline after imports.  With
``--tracemalloc`` a second run per method reports the peak of Python/numpy
heap allocations.  Run::

    .venv/bin/python benchmarks/bench_combine.py [--workdir DIR] [--tracemalloc] [--robust-peer]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TRUE_LEVEL = 200.0
NOISE = 3.0


def column_pattern(rng: np.random.Generator, nx: int) -> np.ndarray:
    """The fixed column-to-column bias pattern (the first draw of the frame generator)."""
    return rng.normal(0.0, 1.0, nx).astype(np.float32)


def make_frames(workdir: Path, nframes: int, ny: int, nx: int, seed: int = 2008) -> list[Path]:
    """Write the synthetic frames (reused if already there with the right shape)."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    columns = column_pattern(rng, nx)
    paths = []
    for k in range(nframes):
        path = workdir / f"frame_{k:03d}_{ny}x{nx}.fits"
        paths.append(path)
        if path.exists():
            continue
        data = rng.normal(TRUE_LEVEL, NOISE, (ny, nx)).astype(np.float32)
        data += columns[None, :]
        ncosmic = ny * nx // 5000
        yy, xx = rng.integers(0, ny, ncosmic), rng.integers(0, nx, ncosmic)
        data[yy, xx] += rng.uniform(50, 5000, ncosmic).astype(np.float32)
        fits.PrimaryHDU(data, header=fits.Header({"BUNIT": "adu"})).writeto(path, overwrite=True)
    return paths


class PeakSampler:
    """Samples the process's RSS and private RSS in a background thread."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak_rss = self.peak_private = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        info = self.proc.memory_info()
        return info.rss, info.rss - info.shared

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, private = self.sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_private = max(self.peak_private, private)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        rss, private = self.sample()
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_private = max(self.peak_private, private)


def run_ours(paths: list[str]) -> np.ndarray:
    from astropy.io import fits

    from awe.image.combine import combine

    hdulists = [fits.open(p, memmap=True) for p in paths]
    try:
        result = combine([h[0].data for h in hdulists], method="clipped_mean", sigma=3.0)
    finally:
        for h in hdulists:
            h.close()
    return result.data


def run_ccdproc(paths: list[str]) -> np.ndarray:
    import ccdproc

    ccd = ccdproc.combine(paths, method="average", sigma_clip=True, sigma_clip_low_thresh=3,
                          sigma_clip_high_thresh=3, unit="adu")
    return np.asarray(ccd.data, dtype=np.float32)


def run_ccdproc_mad(paths: list[str]) -> np.ndarray:
    import ccdproc
    from astropy.stats import mad_std

    ccd = ccdproc.combine(paths, method="average", sigma_clip=True, sigma_clip_low_thresh=3,
                          sigma_clip_high_thresh=3, sigma_clip_func=np.ma.median,
                          sigma_clip_dev_func=mad_std, unit="adu")
    return np.asarray(ccd.data, dtype=np.float32)


def child(which: str, paths: list[str], output: str, use_tracemalloc: bool) -> None:
    """Run one method and print a JSON line with its time and memory figures."""
    import warnings

    import astropy.io.fits  # noqa: F401  (imports count in the baseline, not the peak)
    import ccdproc  # noqa: F401

    import awe.image.combine  # noqa: F401

    warnings.simplefilter("ignore")
    func = {"ours": run_ours, "ccdproc": run_ccdproc, "ccdproc_mad": run_ccdproc_mad}[which]
    sampler = PeakSampler()
    base_rss, base_private = sampler.sample()
    report: dict[str, float] = {}
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
        t0 = time.perf_counter()
        data = func(paths)
        report["seconds"] = time.perf_counter() - t0
        report["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    else:
        with sampler:
            t0 = time.perf_counter()
            data = func(paths)
            report["seconds"] = time.perf_counter() - t0
        report["rss_peak_mb"] = (sampler.peak_rss - base_rss) / 1e6
        report["private_peak_mb"] = (sampler.peak_private - base_private) / 1e6
    np.save(output, data)
    print(json.dumps(report))


def spawn(which: str, paths: list[Path], output: Path, use_tracemalloc: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", which, "--output", str(output)]
    cmd += ["--tracemalloc"] if use_tracemalloc else []
    cmd += ["--"] + [str(p) for p in paths]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the frames (default: a temp dir)")
    parser.add_argument("--nframes", type=int, default=10)
    parser.add_argument("--ny", type=int, default=4096)
    parser.add_argument("--nx", type=int, default=2048)
    parser.add_argument("--tracemalloc", action="store_true", help="also measure heap peaks with tracemalloc")
    parser.add_argument("--robust-peer", action="store_true",
                        help="also run ccdproc with a median centre and mad_std width (closer to ours, slower)")
    parser.add_argument("--child", choices=["ours", "ccdproc", "ccdproc_mad"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.paths, args.output, args.tracemalloc)
        return

    with tempfile.TemporaryDirectory(prefix="bench_combine_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = make_frames(workdir, args.nframes, args.ny, args.nx)
        print(f"{args.nframes} frames of {args.ny}x{args.nx} float32 in {workdir} "
              f"({time.perf_counter() - t0:.1f} s to make)")
        results, images = {}, {}
        for which in ("ours", "ccdproc") + (("ccdproc_mad",) if args.robust_peer else ()):
            out = Path(tmp) / f"{which}.npy"
            results[which] = spawn(which, paths, out, False)
            if args.tracemalloc:
                results[which].update({k: v for k, v in spawn(which, paths, out, True).items() if k != "seconds"})
            images[which] = np.load(out)
        print(f"{'':10s} {'time s':>8s} {'RSS peak MB':>12s} {'private MB':>11s} {'tracemalloc MB':>15s}")
        for which, rep in results.items():
            print(f"{which:10s} {rep['seconds']:8.2f} {rep['rss_peak_mb']:12.1f} {rep['private_peak_mb']:11.1f} "
                  f"{rep.get('tracemalloc_peak_mb', float('nan')):15.1f}")
        ours, peer = results["ours"], results["ccdproc"]
        print(f"speed-up (ccdproc time / ours): {peer['seconds'] / ours['seconds']:.2f}x")
        if "ccdproc_mad" in results:
            print(f"speed-up (ccdproc median/mad_std time / ours): "
                  f"{results['ccdproc_mad']['seconds'] / ours['seconds']:.2f}x")
        print(f"memory ratio (ours / ccdproc), RSS: {ours['rss_peak_mb'] / peer['rss_peak_mb']:.3f}, "
              f"private: {ours['private_peak_mb'] / peer['private_peak_mb']:.3f}")
        if args.tracemalloc:
            print(f"memory ratio (ours / ccdproc), tracemalloc: "
                  f"{ours['tracemalloc_peak_mb'] / peer['tracemalloc_peak_mb']:.3f}")
        truth = TRUE_LEVEL + column_pattern(np.random.default_rng(2008), args.nx)[None, :]
        for which, img in images.items():
            err = img - truth
            ideal = NOISE / np.sqrt(args.nframes)
            print(f"{which:10s} result - truth: rms {np.nanstd(err):.3f} ADU (ideal {ideal:.3f}),"
                  f" max |error| {np.nanmax(np.abs(err)):.1f} ADU")

if __name__ == "__main__":
    main()
