"""Benchmark: SourceListTask's measurement against SExtractor on the same reduced chip.

The chip of ``bench_extract.py`` (one simulated 3C273 exposure at ``--scale``, default 1: a full-size 2k x 4k
chip, reduced from the simulator's own bias and flat, with its weight map; the raw header's WCS), measured by

* **awe**: :func:`awe.tasks.sourcelist.measure_sources` -- what SourceListTask computes for a frame:
  extraction with the weight map (threshold ``--threshold``, minarea 5), the AUTO flux, three circular apertures
  (3", 6", 12"), shapes, flags, CLASS_STAR calibrated on the frame's stars, sky positions and magnitudes on a
  zero point (the row insert into the database is not timed);
* **SExtractor** (``source-extractor``, installed with apt-get when missing): the same image (float32) and weight
  map (MAP_WEIGHT, MASK_TYPE CORRECT), its own background (BACK_SIZE 64, BACK_FILTERSIZE 3, as awe's; the
  photometry on that map: BACKPHOTO_TYPE GLOBAL), DETECT_THRESH = ANALYSIS_THRESH, DETECT_MINAREA 5,
  ``default.conv``, deblending 32 / 0.005, the same apertures (PHOT_APERTURES: the diameters in pixels), the
  saturation level and gain; the columns of a SourceList row (``SEX_PARAMS``: windowed positions with their
  errors and sky coordinates, AUTO and aperture fluxes and magnitudes, sky, shape, FWHM, FLUX_RADIUS, FLAGS) and
  CLASS_STAR with the Debian ``default.nnw`` and the true seeing as SEEING_FWHM; one thread. Its time includes
  reading the two FITS files and writing its FITS catalogue; writing its inputs is not timed.

Against the truth (``bench_extract.truth_sources``/``score``): completeness of the clean stars at S/N >= 5,
5-10 and >= 30 (found within 1.5 pixels), position rms, spurious detections; and CLASS_STAR against the true
labels (stars at S/N >= 30 above 0.5, galaxies of r_eff > 2" below; neither saturated nor truncated). Times:
the best of ``--repeat`` runs, the two sides alternating, as CPU time (the figure compared: the machine may be
shared; awe's process time, SExtractor's from ``getrusage`` of the child, user + system, which includes its
reading the two FITS files and writing its catalogue) and as wall time.

Run::

    .venv/bin/python benchmarks/bench_sourcelist.py [--scale 1.0] [--chip ccd50] [--workdir /tmp/bench-sourcelist]

``--no-peer`` runs the awe side alone (the smoke test does when SExtractor is not installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

DIAMETERS = (3.0, 6.0, 12.0)
#: what a SourceList row holds (position and its errors, in pixels and on the sky, the apertures' and AUTO fluxes
#: and magnitudes, the sky, the shape, CLASS_STAR and the flags)
SEX_PARAMS = ["NUMBER", "XWIN_IMAGE", "YWIN_IMAGE", "ERRX2WIN_IMAGE", "ERRY2WIN_IMAGE", "ALPHAWIN_J2000",
              "DELTAWIN_J2000", "ERRAWIN_WORLD", "ERRBWIN_WORLD", "FLUX_AUTO", "FLUXERR_AUTO", "MAG_AUTO",
              "MAGERR_AUTO", "FLUX_APER(3)", "FLUXERR_APER(3)", "MAG_APER(3)", "MAGERR_APER(3)", "BACKGROUND",
              "A_IMAGE", "B_IMAGE", "THETA_IMAGE", "ELLIPTICITY", "FWHM_IMAGE", "FLUX_RADIUS", "CLASS_STAR", "FLAGS"]
NNW_PATHS = ("/usr/share/source-extractor/default.nnw", "/usr/share/sextractor/default.nnw")


def _bench_extract() -> Any:
    path = Path(__file__).resolve().parent / "bench_extract.py"
    spec = importlib.util.spec_from_file_location("bench_extract", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_extract"] = module
    spec.loader.exec_module(module)
    return module


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_awe(frame: dict[str, Any], threshold: float, zeropoint: float
            ) -> tuple[Table, float, float, dict[str, Any]]:
    """awe's measurement: (table, wall seconds, CPU seconds, info)."""
    from awe.tasks.sourcelist import measure_sources
    wcs = _bench_extract().header_wcs(frame["header"])
    t, c = time.perf_counter(), time.process_time()
    table, info = measure_sources(frame["data"], frame["weight"], wcs, zeropoint, threshold=threshold, minarea=5,
                                  diameters=DIAMETERS, saturation=frame["saturation"], gain=frame["gain"],
                                  fwhm_pix=frame["fwhm_pix"])
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    out = Table({"x": table["X"], "y": table["Y"], "flux": table["FLUX_AUTO"], "flags": table["FLAGS"],
                 "class_star": table["CLASS_STAR"], "snr": table["SNR"]})
    return out, elapsed, cpu, info


def run_sextractor(exe: str, frame: dict[str, Any], threshold: float, zeropoint: float, work: Path
                   ) -> tuple[Table, float, float]:
    """SExtractor on the frame: (table, wall seconds, CPU seconds of the child)."""
    bx = _bench_extract()
    work.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(frame["data"], header=frame["header"]).writeto(work / "image.fits", overwrite=True)
    fits.PrimaryHDU(frame["weight"]).writeto(work / "weight.fits", overwrite=True)
    (work / "sex.param").write_text("\n".join(SEX_PARAMS) + "\n")
    (work / "default.conv").write_text(bx.DEFAULT_CONV)
    nnw = next((p for p in NNW_PATHS if Path(p).is_file()), None)
    if nnw is None:
        raise RuntimeError(f"SExtractor's default.nnw (CLASS_STAR's network) is in none of {NNW_PATHS}")
    scale = frame["pixel_scale"]
    config = bx.SEX_CONFIG.format(threshold=threshold, saturation=frame["saturation"], gain=frame["gain"])
    config += (f"PHOT_APERTURES    {','.join(f'{d / scale:.4f}' for d in DIAMETERS)}\n"
               f"MAG_ZEROPOINT    {zeropoint}\nSTARNNW_NAME     {nnw}\n"
               f"SEEING_FWHM      {frame['fwhm_pix'] * scale:.4f}\n")
    config = config.replace("PIXEL_SCALE      0", f"PIXEL_SCALE      {scale:.5f}")
    (work / "sex.conf").write_text(config)
    t, c = time.perf_counter(), _children_cpu()
    proc = subprocess.run([exe, "image.fits", "-c", "sex.conf"], cwd=work, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - t, _children_cpu() - c
    if proc.returncode != 0:
        raise RuntimeError(f"SExtractor failed: {proc.stderr[-2000:]}")
    with fits.open(work / "sex.fits") as hdul:
        table = Table(hdul[2 if len(hdul) > 2 else 1].data)
    flux, err = np.asarray(table["FLUX_AUTO"], float), np.asarray(table["FLUXERR_AUTO"], float)
    out = Table({"x": np.asarray(table["XWIN_IMAGE"], float) - 1.0, "y": np.asarray(table["YWIN_IMAGE"], float) - 1.0,
                 "flux": flux, "flags": np.asarray(table["FLAGS"], int),
                 "class_star": np.asarray(table["CLASS_STAR"], float),
                 "snr": np.where(err > 0, flux / np.where(err > 0, err, 1.0), 0.0)})
    return out, elapsed, cpu


def stellarity_score(table: Table, frame: dict[str, Any]) -> dict[str, float]:
    """CLASS_STAR against the true labels: stars (S/N >= 30) above 0.5, galaxies of r_eff > 2" below 0.5."""
    truth, chip = frame["truth"], frame["chip"]
    src = truth.frame_sources(frame["raw"], chip)
    ys, xs = frame["trim"]
    tx, ty = np.asarray(src["x"]) - xs.start, np.asarray(src["y"]) - ys.start
    pos = np.column_stack([np.asarray(table["x"], float), np.asarray(table["y"], float)])
    dist, j = cKDTree(pos).query(np.column_stack([tx, ty]))
    # neither saturated nor truncated (the blending bits differ between the two: awe sets 1 on 10 % contamination)
    found = (dist < 1.5) & ((np.asarray(table["flags"])[j] & 12) == 0) & (np.asarray(table["snr"], float)[j] >= 30)
    cls = np.asarray(table["class_star"], float)[j]
    star = np.asarray(src["kind"]) == "star"
    galaxy = ~star & (np.nan_to_num(np.asarray(src["r_eff_arcsec"], float)) > 2.0)
    return {"n_star_class": float(np.sum(found & star)),
            "stars_class_gt_0.5": float(np.mean(cls[found & star] > 0.5)) if np.any(found & star) else math.nan,
            "n_galaxy_class": float(np.sum(found & galaxy)),
            "galaxies_class_lt_0.5": float(np.mean(cls[found & galaxy] < 0.5)) if np.any(found & galaxy)
            else math.nan}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--chip", default="ccd50")
    parser.add_argument("--threshold", type=float, default=1.5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-sourcelist"))
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side (the best counts)")
    parser.add_argument("--no-peer", action="store_true", help="awe alone (no SExtractor)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    bx = _bench_extract()
    exe = None if args.no_peer else bx.ensure_sextractor()
    raw = bx.simulate(args.workdir, args.scale)
    frame = bx.reduce_chip(raw, args.chip)
    # float32, as ReduceTask writes a reduced frame (both sides measure in float32 anyway)
    frame["data"] = np.ascontiguousarray(frame["data"], dtype=np.float32)
    ts = bx.truth_sources(frame)
    frame["fwhm_pix"] = float(ts["fwhm"][0])
    wcs = bx.header_wcs(frame["header"])
    frame["pixel_scale"] = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    exposure = frame["truth"].exposure(frame["raw"])
    zeropoint = float(frame["truth"].zero_point - frame["truth"].extinction * float(exposure["airmass"])
                      + 2.5 * math.log10(float(exposure["exptime"])))
    ny, nx = frame["data"].shape
    # the two sides alternate (the machine may be shared: the load then weighs on both alike); best of --repeat
    awe_runs: list[Any] = []
    sex_runs: list[Any] = []
    for _ in range(args.repeat):
        awe_runs.append(run_awe(frame, args.threshold, zeropoint))
        if exe is not None:
            sex_runs.append(run_sextractor(exe, frame, args.threshold, zeropoint, args.workdir / "sextractor"))
    awe_table, awe_time, awe_cpu = awe_runs[0][0], min(r[1] for r in awe_runs), min(r[2] for r in awe_runs)
    results: dict[str, Any] = {"scale": args.scale, "chip": args.chip, "shape": [ny, nx],
                               "fwhm_pix": frame["fwhm_pix"], "threshold": args.threshold,
                               "awe": dict(bx.score(awe_table, ts), **stellarity_score(awe_table, frame),
                                           seconds=awe_time, cpu_seconds=awe_cpu)}
    if exe is not None:
        sex_table, sex_time, sex_cpu = sex_runs[0][0], min(r[1] for r in sex_runs), min(r[2] for r in sex_runs)
        results["sextractor"] = dict(bx.score(sex_table, ts), **stellarity_score(sex_table, frame), seconds=sex_time,
                                     cpu_seconds=sex_cpu)
        results["time_ratio"] = awe_cpu / sex_cpu
        results["wall_time_ratio"] = awe_time / sex_time
    if args.json:
        print(json.dumps(results, indent=1))
        return results
    print(f"source lists on {args.chip} ({nx} x {ny} pixels, FWHM {frame['fwhm_pix']:.2f} pix, threshold "
          f"{args.threshold} sigma, apertures {DIAMETERS} arcsec):")
    sides = ["awe"] + (["sextractor"] if "sextractor" in results else [])
    print(f"{'':28s}" + "".join(f"{s:>12s}" for s in sides))
    for key in ("n_sources", "n_stars_snr5", "completeness_snr5", "completeness_snr5_10", "completeness_snr30",
                "position_rms_snr5", "spurious", "n_star_class", "stars_class_gt_0.5", "n_galaxy_class",
                "galaxies_class_lt_0.5", "cpu_seconds", "seconds"):
        print(f"{key:28s}" + "".join(f"{results[s][key]:12.4g}" for s in sides))
    if "time_ratio" in results:
        print(f"CPU-time ratio awe / SExtractor: {results['time_ratio']:.2f} (wall time: "
              f"{results['wall_time_ratio']:.2f})")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
