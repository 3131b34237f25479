"""Benchmark: the master bias of BiasTask against ccdproc on 10 full-size WFI raw biases.

Writes ``--nframes`` synthetic full-size raw WFI ccd50 biases (2142 x 4128,
16-bit with BZERO 32768 like the ESO files: bias ~181 ADU, a weak fixed
pattern, per-row jitter that the overscan shares, 2.4 ADU read noise, cosmic
rays) and makes the master bias twice, each in its own subprocess so that the
peak memory is clean:

* ours: exactly BiasTask's path, :func:`awe.tasks.calibration.combine_biases`:
  each raw file is overscan-corrected (method 6, per-row overscan median) and
  trimmed into a float32 file, then a streaming sigma-clipped mean (3 sigma
  around the median) combines them in blocks of rows;
* ccdproc: ``CCDData.read``, ``subtract_overscan(median=True, overscan_axis=1)``
  (the same per-row correction), ``trim_image`` to the same section, then
  ``ccdproc.combine(method='average', sigma_clip=True)`` with 3-sigma clipping
  around the median with ``mad_std`` as width (the robust variant, like ours);
  ``--peer-defaults`` runs ccdproc's default clipping (mean, std) instead.

Reported: wall time, the peak resident memory of the child (``VmHWM``) above
its resident memory after the imports, and ours/peer ratios; plus how much the
two master biases differ. Run::

    .venv/bin/python benchmarks/bench_bias.py [--workdir DIR] [--nframes 10] [--peer-defaults]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHIP = "ccd50"
MODE = 6
SIGMA = 3.0


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def geometry():
    from awe.instruments import RawGeometry, get_instrument
    return RawGeometry.from_chip(get_instrument("WFI").chip(CHIP))


def make_raw_biases(workdir: Path, nframes: int, seed: int = 2003) -> list[Path]:
    """Full-size raw biases of ccd50 as 16-bit FITS files (reused when present)."""
    from astropy.io import fits

    g = geometry()
    ny, nx = g.shape
    rng = np.random.default_rng(seed)
    x = np.arange(nx, dtype=np.float32)[None, :] / nx
    y = np.arange(ny, dtype=np.float32)[:, None] / ny
    pattern = (181.5 + 0.8 * np.sin(2 * np.pi * x / 0.37) * np.sin(2 * np.pi * y / 0.6)
               + rng.normal(0, 0.3, (1, nx))).astype(np.float32)
    pattern[:, g.prescan_x] -= 25.0
    paths = []
    for k in range(nframes):
        path = workdir / f"WFI.bench.{k:03d}_1.fits"
        paths.append(path)
        if path.exists():
            continue
        frame = pattern + rng.normal(0, 2.4, (ny, nx)).astype(np.float32)
        frame += rng.normal(0, 2.0, (ny, 1)).astype(np.float32)           # row jitter, overscan included
        n_cr = ny * nx // 20000
        frame[rng.integers(0, ny, n_cr), rng.integers(g.n_prescan_x, nx, n_cr)] += \
            rng.uniform(150, 5000, n_cr).astype(np.float32)
        hdu = fits.PrimaryHDU(np.clip(np.rint(frame), 0, 65535).astype(np.uint16))  # BITPIX 16, BZERO 32768
        for key, (value, comment) in g.header_cards().items():
            hdu.header[key] = (value, comment)
        hdu.writeto(path, overwrite=True)
    return paths


# ------------------------------------------------------------------ the two contenders (run in a child process)
def run_ours(paths: list[Path], workdir: Path) -> np.ndarray:
    from awe.tasks.calibration import RawFile, combine_biases

    g = geometry()
    raws = [RawFile(p, g, p.name) for p in paths]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        result, _ = combine_biases(raws, MODE, SIGMA, tmp)
    return result.data


def run_ccdproc(paths: list[Path], workdir: Path, robust: bool = True) -> np.ndarray:
    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import mad_std

    g = geometry()
    ys, xs = g.trim
    frames = []
    for p in paths:
        ccd = CCDData.read(p, unit="adu")
        ccd = ccdproc.subtract_overscan(ccd, overscan=ccd[:, g.overscan_x], overscan_axis=1, median=True)
        frames.append(ccdproc.trim_image(ccd[ys, xs]))
    options = dict(sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std) if robust else {}
    combined = ccdproc.combine(frames, method="average", sigma_clip=True, sigma_clip_low_thresh=SIGMA,
                               sigma_clip_high_thresh=SIGMA, **options)
    return np.asarray(combined.data, dtype=np.float32)


def child(which: str, workdir: Path, nframes: int, out: Path) -> None:
    import warnings

    import awe.tasks.calibration  # noqa: F401  (imports counted in the baseline)
    import ccdproc  # noqa: F401

    paths = make_raw_biases(workdir, nframes)
    baseline = _status_kib("VmRSS")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ccdproc/astropy chatter about units and masked values
        if which == "ours":
            data = run_ours(paths, workdir)
        else:
            data = run_ccdproc(paths, workdir, robust=(which == "ccdproc"))
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    np.save(out, data)
    print(json.dumps({"which": which, "seconds": seconds, "peak_mib": peak / 1024,
                      "baseline_mib": baseline / 1024, "extra_mib": (peak - baseline) / 1024}))


# ------------------------------------------------------------------ driver
def measure(which: str, workdir: Path, nframes: int) -> dict:
    out = workdir / f"master-{which}.npy"
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--workdir", str(workdir),
                           "--nframes", str(nframes), "--out", str(out)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{which} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["data"] = np.load(out)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the frames (default: a temp folder)")
    parser.add_argument("--nframes", type=int, default=10)
    parser.add_argument("--peer-defaults", action="store_true", help="also run ccdproc's default clipping")
    parser.add_argument("--child", choices=["ours", "ccdproc", "ccdproc-defaults"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.workdir, args.nframes, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="awe-bench-bias-") as default:
        workdir = args.workdir or Path(default)
        workdir.mkdir(parents=True, exist_ok=True)
        make_raw_biases(workdir, args.nframes)
        g = geometry()
        print(f"master bias of {args.nframes} raw WFI {CHIP} biases {g.shape[1]} x {g.shape[0]} "
              f"(trimmed {g.trim_shape[1]} x {g.trim_shape[0]}), overscan method {MODE}, {SIGMA:g}-sigma clipping")
        peers = ["ccdproc"] + (["ccdproc-defaults"] if args.peer_defaults else [])
        results = {which: measure(which, workdir, args.nframes) for which in ["ours"] + peers}
        ours = results["ours"]
        print(f"{'':18s} {'time [s]':>9s} {'peak RSS [MiB]':>15s} {'above baseline [MiB]':>21s}")
        for which, r in results.items():
            print(f"{which:18s} {r['seconds']:9.2f} {r['peak_mib']:15.0f} {r['extra_mib']:21.0f}")
        for which in peers:
            peer = results[which]
            diff = ours["data"] - peer["data"]
            print(f"ours vs {which}: {peer['seconds'] / ours['seconds']:.1f}x faster, memory above baseline "
                  f"{ours['extra_mib'] / peer['extra_mib']:.2f}x "
                  f"(peak RSS {ours['peak_mib'] / peer['peak_mib']:.2f}x); "
                  f"masters differ by {np.mean(diff):+.3f} ADU mean, {np.std(diff):.3f} ADU rms")


if __name__ == "__main__":
    main()
