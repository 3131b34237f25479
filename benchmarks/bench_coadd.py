"""Benchmark: awe's regridding + coaddition against SWarp and ``reproject.reproject_and_coadd``.

The six dithered 3C273 exposures of the simulated night (``--scale``, default 1: full-size 2k x 4k chips;
``--chips``, default all 8: 48 chips) are reduced from the simulator's own bias and flat (as in
``bench_gastrom.py``) and written as FITS files with their weight maps: that is every side's input. Every
side gets the same astrometry -- per chip a TAN WCS fitted to the simulator's true mapping (SWarp reads no
SIP; the TAN fit's own error, the same for all, is printed) -- and the same photometric scale (header
``FLXSCALE``: the true zero point, extinction and exposure time brought to zero point 30). All resample with
LANCZOS3 (reproject: bilinear ``reproject_interp``, it has no Lanczos) onto the same tangent-plane grid at
the input pixel scale and combine by the weighted mean, with the same number of threads (``--threads``, default 1),
each in its own process (wall and CPU time, peak memory of that process and of the program it runs):

* **awe**: :func:`awe.image.regrid.regrid_stream` per chip (numba kernel, coarse mapping every 16 pixels;
  ``threads``), the chip's rows read through ``.section`` and the regridded bands written in place into its FITS
  file (:class:`awe.image.fitsbands.ImageBandWriter`), :func:`awe.image.coadd.coadd` streamed from them
  into the output file;
* **SWarp** (Debian ``swarp``, installed with apt when missing): ``RESAMPLING_TYPE LANCZOS3``,
  ``COMBINE_TYPE WEIGHTED``, ``WEIGHT_TYPE MAP_WEIGHT``, ``SUBTRACT_BACK N``, ``NTHREADS`` = ``--threads``;
* **reproject** ``reproject_and_coadd`` with ``input_weights`` and ``reproject_interp``.

Accuracy on each coadd: magnitudes of isolated unsaturated true stars (S/N > 50, 8" apertures) against
truth (median offset, robust scatter) and the rms of their centroids against the true positions.

Run::

    .venv/bin/python benchmarks/bench_coadd.py [--scale 1.0] [--chips 8] [--peers swarp,reproject] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_gastrom import CHIPS, reduce_frames, simulate  # noqa: E402

ZEROPOINT = 30.0


def swarp_executable() -> str | None:
    """Debian installs SWarp as ``SWarp`` (other builds: ``swarp``)."""
    return shutil.which("SWarp") or shutil.which("swarp")


def ensure_swarp() -> bool:
    if swarp_executable() is None:
        print("installing swarp with apt-get ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "swarp"], check=False, env=env)
    return swarp_executable() is not None


# ---------------------------------------------------------------------------- inputs
def tan_fit(truth: Any, frame: dict[str, Any]) -> tuple[Any, float]:
    """A TAN WCS (reduced pixels) fitted to the true mapping, and its rms error [arcsec]."""
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import fit_wcs_from_points
    ys, xs = frame["trim"]
    ny, nx = frame["data"].shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 25), np.linspace(0, ny - 1, 25))
    ra, dec = truth.pixel_to_sky(frame["raw"], frame["chip"], gx.ravel() + xs.start, gy.ravel() + ys.start)
    sky = SkyCoord(ra, dec, unit="deg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = fit_wcs_from_points((gx.ravel(), gy.ravel()), sky, projection="TAN")
    fra, fdec = w.all_pix2world(gx.ravel(), gy.ravel(), 0)
    err = np.hypot((fra - ra) * np.cos(np.radians(dec)), fdec - dec) * 3600.0
    return w, float(np.sqrt(np.mean(err ** 2) / 2.0))


def write_inputs(raw: Path, work: Path, chips: list[str]) -> dict[str, Any]:
    """Reduce, fit the TAN WCS, and write every chip (data + weight FITS); returns the plan (paths, grid)."""
    from awe.image.stats import robust_sigma
    from awe.sim import Truth
    truth = Truth(raw)
    frames = reduce_frames(raw, chips)
    work.mkdir(parents=True, exist_ok=True)
    items = []
    tan_errors = []
    for i, f in enumerate(frames):
        w, err = tan_fit(truth, f)
        tan_errors.append(err)
        exp = truth.exposure(f["raw"])
        cx, cy = (f["data"].shape[1] - 1) / 2.0, (f["data"].shape[0] - 1) / 2.0
        zp = float(truth.zeropoint(f["chip"], cx + f["trim"][1].start, cy + f["trim"][0].start))
        scale = 10 ** (0.4 * (ZEROPOINT - zp + truth.extinction * float(exp["airmass"]))) / float(exp["exptime"])
        good = f["weight"] > 0
        sigma = float(robust_sigma(f["data"][good][::7]))
        header = w.to_header()
        header["FLXSCALE"] = scale
        header["EXPTIME"] = float(exp["exptime"])
        data_path = work / f"in{i:02d}.fits"
        weight_path = work / f"in{i:02d}.weight.fits"
        fits.PrimaryHDU(f["data"].astype(np.float32), header=header).writeto(data_path, overwrite=True)
        fits.PrimaryHDU((f["weight"] / np.median(f["weight"][good]) / sigma ** 2).astype(np.float32),
                        header=header).writeto(weight_path, overwrite=True)
        items.append({"data": str(data_path), "weight": str(weight_path), "scale": scale, "raw": f["raw"],
                      "chip": f["chip"]})
    # the grid: the mean of the chip centres, at the input pixel scale, covering every chip
    from awe.image.regrid import TangentGrid, footprint
    ra = np.array([fits.getheader(i["data"])["CRVAL1"] for i in items])
    dec = np.array([fits.getheader(i["data"])["CRVAL2"] for i in items])
    pixel = 0.238 / truth.scale
    big = TangentGrid(float(np.mean(ra)), float(np.mean(dec)), pixel, 200_001, 200_001)
    boxes = []
    for item in items:
        from astropy.wcs import WCS
        hdr = fits.getheader(item["data"])
        boxes.append(footprint(WCS(hdr), (hdr["NAXIS2"], hdr["NAXIS1"]), big, margin=0))
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    ra0, dec0 = big.to_sky(np.array([(x0 + x1 - 1) / 2.0]), np.array([(y0 + y1 - 1) / 2.0]))
    nx, ny = (x1 - x0) | 1, (y1 - y0) | 1  # odd: the tangent point is a pixel centre on every side
    plan = {"items": items, "ra0": float(ra0[0]), "dec0": float(dec0[0]), "pixel": pixel, "nx": int(nx),
            "ny": int(ny), "tan_rms": float(np.sqrt(np.mean(np.square(tan_errors)))), "raw": str(raw)}
    (work / "plan.json").write_text(json.dumps(plan))
    return plan


# ---------------------------------------------------------------------------- the three sides
def run_awe(plan: dict[str, Any], out: Path) -> None:
    from astropy.wcs import WCS

    from awe.image.coadd import CoaddInput, coadd
    from awe.image.fitsbands import ImageBandWriter
    from awe.image.regrid import TangentGrid, footprint, regrid_stream
    grid = TangentGrid(plan["ra0"], plan["dec0"], plan["pixel"], plan["nx"], plan["ny"])
    inputs, opened = [], []
    planes = ((None, np.float32), ("WEIGHT", np.float32), ("FLAGS", np.uint8))
    for k, item in enumerate(plan["items"]):
        path = out.parent / f"awe-regrid{k:02d}.fits"
        # the chip's rows read through .section as the bands need them, the regridded bands written in place:
        # neither the input nor the output is ever held whole (nothing memory-mapped either)
        with fits.open(item["data"], memmap=False) as hd, fits.open(item["weight"], memmap=False) as hw:
            data, weight, wcs = hd[0].section, hw[0].section, WCS(hd[0].header)
            x0, y0, nx, ny = footprint(wcs, data.shape, grid)
            with ImageBandWriter(path, ny, nx, planes=planes, fsync=False) as writer:  # scratch, as before
                r = regrid_stream(data, weight, wcs, grid, lambda r0, r1, v, w, f: writer.write(r0, v, w, f),
                                  kernel="LANCZOS3", flux_scale=item["scale"], box=(x0, y0, nx, ny),
                                  threads=int(plan.get("threads", 1)))
        hdul = fits.open(path, memmap=False)  # rows read through .section (as CoaddTask does): nothing mapped
        opened.append(hdul)
        d, w, f = hdul[0].section, hdul["WEIGHT"].section, hdul["FLAGS"].section
        inputs.append(CoaddInput(r.x0, r.y0, r.nx, r.ny,
                                 lambda a, b, d=d, w=w, f=f: (np.asarray(d[a:b]), np.asarray(w[a:b]),
                                                              np.asarray(f[a:b]))))
    header = grid.wcs().to_header()
    header["MAGZERO"] = ZEROPOINT
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", grid.nx), ("NAXIS2", grid.ny),
                       ("EXTEND", True)])
    hdr.update(header)
    stream = fits.StreamingHDU(str(out), hdr)
    # the weight streamed into its own file too (a whole-grid array here would be the side's peak memory)
    weights = fits.StreamingHDU(str(out).replace(".fits", ".weight.fits"), hdr)

    def sink(r0: int, r1: int, data: np.ndarray, weight: np.ndarray, flags: np.ndarray) -> None:
        stream.write(np.ascontiguousarray(data, dtype=">f4"))
        weights.write(np.ascontiguousarray(weight, dtype=">f4"))
    coadd(inputs, sink, box=(0, 0, grid.nx, grid.ny))
    stream.close()
    weights.close()
    for hdul in opened:
        hdul.close()


def run_swarp(plan: dict[str, Any], out: Path) -> None:
    conf = {"IMAGEOUT_NAME": str(out), "WEIGHTOUT_NAME": str(out).replace(".fits", ".weight.fits"),
            "WEIGHT_TYPE": "MAP_WEIGHT", "WEIGHT_IMAGE": ",".join(i["weight"] for i in plan["items"]),
            "COMBINE_TYPE": "WEIGHTED", "RESAMPLING_TYPE": "LANCZOS3", "SUBTRACT_BACK": "N",
            "CENTER_TYPE": "MANUAL", "CENTER": f"{plan['ra0']:.8f},{plan['dec0']:.8f}",
            "PIXELSCALE_TYPE": "MANUAL", "PIXEL_SCALE": f"{plan['pixel']:.6f}",
            "IMAGE_SIZE": f"{plan['nx']},{plan['ny']}", "FSCALE_KEYWORD": "FLXSCALE", "FSCALASTRO_TYPE": "NONE",
            "NTHREADS": str(int(plan.get("threads", 1))), "RESAMPLE_DIR": str(out.parent), "VERBOSE_TYPE": "QUIET",
            "WRITE_XML": "N",
            "PROJECTION_TYPE": "TAN", "CELESTIAL_TYPE": "EQUATORIAL", "COPY_KEYWORDS": "EXPTIME"}
    args = [swarp_executable() or "swarp", *[i["data"] for i in plan["items"]]]
    for key, value in conf.items():
        args += [f"-{key}", value]
    proc = subprocess.Popen(args, cwd=out.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"SWarp failed (status {status})")
    _SUB_PEAK_MB.append(usage.ru_maxrss / 1024.0)


def run_reproject(plan: dict[str, Any], out: Path) -> None:
    from astropy.wcs import WCS
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    from awe.image.regrid import TangentGrid
    grid = TangentGrid(plan["ra0"], plan["dec0"], plan["pixel"], plan["nx"], plan["ny"])
    data, weights = [], []
    for item in plan["items"]:
        with fits.open(item["data"]) as hd, fits.open(item["weight"]) as hw:
            data.append((hd[0].data * np.float32(item["scale"]), WCS(hd[0].header)))
            weights.append(hw[0].data / item["scale"] ** 2)
    result, footprint = reproject_and_coadd(data, grid.wcs(), shape_out=(grid.ny, grid.nx), input_weights=weights,
                                            reproject_function=reproject_interp, combine_function="mean")
    fits.PrimaryHDU(np.nan_to_num(result).astype(np.float32), header=grid.wcs().to_header()).writeto(out,
                                                                                                    overwrite=True)
    fits.PrimaryHDU(footprint.astype(np.float32), header=grid.wcs().to_header()).writeto(
        str(out).replace(".fits", ".weight.fits"), overwrite=True)


#: peak memory of the programs a side ran (SWarp), MB
_SUB_PEAK_MB: list[float] = []


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM of its own address space, not the parent's it was forked
    from) and that of the programs it ran, MB."""
    hwm = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = float(line.split()[1]) / 1024.0
    return max([hwm, *_SUB_PEAK_MB])


SIDES = {"awe": run_awe, "swarp": run_swarp, "reproject": run_reproject}


# ---------------------------------------------------------------------------- accuracy
def accuracy(plan: dict[str, Any], path: Path) -> dict[str, float]:
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS
    from scipy.spatial import cKDTree

    from awe.image.extract import aperture_flux, extract
    from awe.sim import Truth
    truth = Truth(plan["raw"])
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(hdul[0].header).celestial
    with fits.open(str(path).replace(".fits", ".weight.fits")) as hdul:
        weight = np.asarray(hdul[0].data, dtype=np.float32)
    stars = truth.stars(field="3C273")
    x, y = wcs.all_world2pix(np.asarray(stars["ra"]), np.asarray(stars["dec"]), 0)
    mags = np.asarray(stars["mag_R"])
    tree = cKDTree(np.c_[x, y])
    radius = 8.0 / plan["pixel"]
    half = int(np.ceil(radius)) + 1
    ny, nx = data.shape
    inside = (x > half) & (x < nx - half) & (y > half) & (y < ny - half)
    iso = np.array([sum(mags[j] < m + 5 for j in tree.query_ball_point([a, b], 15.0 / plan["pixel"])) == 1
                    for a, b, m in zip(x, y, mags)])
    sel = inside & iso & (np.asarray(stars["kind"]) == "star")
    covered = np.array([bool(np.all(weight[int(b) - half:int(b) + half + 1, int(a) - half:int(a) + half + 1] > 0))
                        if s else False for a, b, s in zip(x, y, sel)])
    sel &= covered
    flux, err, flags = aperture_flux(data, weight, x[sel], y[sel], radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = -2.5 * np.log10(flux) + ZEROPOINT
    ok = (flux / err > 50) & (flags == 0) & (mags[sel] > 16.0)  # 16: WFI saturates brighter in 5 minutes
    d = mag[ok] - mags[sel][ok]
    table = extract(data, weight, threshold=3.0, minarea=3)
    good = (np.asarray(table["snr"]) > 50) & (np.asarray(table["flags"]) == 0)
    ra, dec = wcs.all_pix2world(np.asarray(table["x"])[good], np.asarray(table["y"])[good], 0)
    found = SkyCoord(ra, dec, unit="deg")
    true = SkyCoord(np.asarray(stars["ra"])[sel][ok], np.asarray(stars["dec"])[sel][ok], unit="deg")
    idx, sep, _ = true.match_to_catalog_sky(found)
    m = sep.arcsec < 2.0
    dra = (found[idx].ra.deg - true.ra.deg) * np.cos(true.dec.radian) * 3600.0
    ddec = (found[idx].dec.deg - true.dec.deg) * 3600.0
    return {"n_stars": int(ok.sum()), "phot_offset": float(np.median(d)) if d.size else float("nan"),
            "phot_scatter": float(1.4826 * np.median(np.abs(d - np.median(d)))) if d.size else float("nan"),
            "pos_rms": float(np.sqrt(np.mean(np.r_[dra[m], ddec[m]] ** 2))) if m.any() else float("nan")}


def timed(side: str, work: Path, threads: int = 1) -> dict[str, Any]:
    """Run one side in a child process: wall time and peak memory of that process."""
    out = work / f"{side}.fits"
    code = (f"import sys, json; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_coadd as b; from pathlib import Path; "
            f"plan=json.loads(Path({str(work / 'plan.json')!r}).read_text()); "
            f"b.SIDES[{side!r}](plan, Path({str(out)!r})); "
            f"Path({str(out) + '.peak'!r}).write_text(str(b.peak_mb()))")
    n = str(max(1, threads))
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, NUMBA_NUM_THREADS=n)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(f"{side} failed (status {status})")
    return {"wall_s": wall, "peak_mb": float(Path(str(out) + ".peak").read_text()),
            "cpu_s": usage.ru_utime + usage.ru_stime, "path": str(out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="chip size factor of the simulation (1: full size)")
    ap.add_argument("--chips", type=int, default=8, help="chips per exposure (ccd50 ...)")
    ap.add_argument("--peers", default="swarp,reproject", help="peers to run: swarp,reproject or none")
    ap.add_argument("--workdir", default="/tmp/bench-coadd")
    ap.add_argument("--threads", type=int, default=1, help="threads of every side (awe's regrid, SWarp's NTHREADS)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    root = Path(args.workdir)
    raw = simulate(root, args.scale)
    work = root / f"work-{args.scale:g}-{args.chips}"
    t = time.perf_counter()
    plan = write_inputs(raw, work, CHIPS[:args.chips])
    plan["threads"] = max(1, args.threads)
    (work / "plan.json").write_text(json.dumps(plan))
    print(f"{len(plan['items'])} reduced chips written in {time.perf_counter() - t:.0f} s; grid {plan['nx']} x "
          f"{plan['ny']} of {plan['pixel']:.3f}\"; TAN fit of the true WCS: {plan['tan_rms']:.3f}\" rms", flush=True)
    sides = ["awe"] + [p for p in args.peers.split(",") if p and p != "none"]
    if "swarp" in sides and not ensure_swarp():
        print("swarp is not available: skipped")
        sides.remove("swarp")
    results = {}
    for side in sides:
        results[side] = timed(side, work, plan["threads"])
        results[side].update(accuracy(plan, Path(results[side]["path"])))
        r = results[side]
        print(f"{side:10s} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  peak {r['peak_mb']:7.0f} MB  "
              f"phot {r['phot_offset']:+.4f} +- {r['phot_scatter']:.4f} mag ({r['n_stars']} stars)  "
              f"pos {r['pos_rms']:.3f}\" rms", flush=True)
    for peer in sides[1:]:
        print(f"awe / {peer}: wall {results['awe']['wall_s'] / results[peer]['wall_s']:.2f}x, peak memory "
              f"{results['awe']['peak_mb'] / results[peer]['peak_mb']:.2f}x")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
