"""Benchmark: awe's global astrometry of the six dithered 3C273 exposures x 8 chips against SExtractor + SCAMP.

The simulated night (``--scale``, default 1: full-size 2k x 4k chips; the six 3C273 exposures only) is
reduced here from the simulator's own bias and flat (``(raw - bias) / flat``, trimmed; weight = flat x
no cosmic ray, satellite, hot/cold or saturated pixel): both sides get the same reduced chips, weights,
header WCS (the raw header's: ~30" and 0.1 deg off) and reference catalogue (``refcat/astrometric.fits``).
Timed, single-threaded on both sides (``NTHREADS 1``; awe: sep and numpy in one process, the dense
normal equations of the solution only ~200 x 200):

* **awe**: :func:`awe.image.extract.extract` on every chip (GAstromSourceListTask's defaults: threshold
  5 sigma, minarea 5; S/N > 20, unflagged) and :func:`awe.image.gastrom.solve_global` (order 3,
  started from the header WCS);
* **peers**: ``source-extractor`` per exposure (MEF image + MEF weight, MAP_WEIGHT, the same DETECT_THRESH,
  DETECT_MINAREA 5, the default 3x3 convolution filter, FITS_LDAC) and one ``scamp`` run on the six
  catalogues (FILE reference catalogue in LDAC, DISTORT_DEGREES 3, STABILITY_TYPE INSTRUMENT: one
  distortion per chip for all exposures, as awe's; SN_THRESHOLDS 20,100; configuration below).

Accuracy: per-axis rms of each solution against the simulator's true WCS on a 20 x 20 grid over every
chip; awe's internal rms between exposures (and SCAMP's, from its log); and the per-chip solution of
each frame alone (AstrometricParametersTask's ``solve_astrometry`` on the same sources) for comparison.
Writing the FITS files for the peers is not timed (awe's inputs are already in memory).

Run::

    .venv/bin/python benchmarks/bench_gastrom.py [--scale 1.0] [--workdir /tmp/bench-gastrom] [--json]

The peers are installed with apt when missing (Debian packages ``source-extractor`` and ``scamp``).
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
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

SCIENCE = ["2003-03-04T04:43:52.117", "2003-03-04T04:48:39.640", "2003-03-04T04:53:26.208",
           "2003-03-04T04:58:13.771", "2003-03-04T05:03:00.339", "2003-03-04T05:07:47.902"]
CHIPS = [f"ccd{n}" for n in range(50, 58)]

SCAMP_CONFIG = """\
# SCAMP configuration of the benchmark (everything not set here: SCAMP's defaults)
FGROUP_RADIUS          1.0
REF_SERVER             none
ASTREF_CATALOG         FILE
ASTREFCAT_NAME         {refcat}
ASTREFCENT_KEYS        X_WORLD,Y_WORLD
ASTREFERR_KEYS         ERRA_WORLD,ERRB_WORLD,ERRTHETA_WORLD
ASTREFMAG_KEY          MAG
ASTREFMAGERR_KEY       MAGERR
ASTREF_WEIGHT          1.0
SAVE_REFCATALOG        N
MATCH                  Y
MATCH_NMAX             0
PIXSCALE_MAXERR        1.2
POSANGLE_MAXERR        2.0
POSITION_MAXERR        1.5
MATCH_RESOL            0
MATCH_FLIPPED          N
MOSAIC_TYPE            UNCHANGED
CROSSID_RADIUS         2.0
SOLVE_ASTROM           Y
PROJECTION_TYPE        TPV
ASTRINSTRU_KEY         FILTER
STABILITY_TYPE         INSTRUMENT
CENTROID_KEYS          XWIN_IMAGE,YWIN_IMAGE
CENTROIDERR_KEYS       ERRAWIN_IMAGE,ERRBWIN_IMAGE,ERRTHETAWIN_IMAGE
DISTORT_KEYS           XWIN_IMAGE,YWIN_IMAGE
DISTORT_GROUPS         1,1
DISTORT_DEGREES        3
FOCDISTORT_DEGREE      1
ASTREF_WEIGHT          1.0
SOLVE_PHOTOM           N
SN_THRESHOLDS          20.0,100.0
FWHM_THRESHOLDS        0.0,100.0
FLAGS_MASK             0x00ff
WEIGHTFLAGS_MASK       0x00ff
IMAFLAGS_MASK          0x0
HEADER_SUFFIX          .head
HEADER_TYPE            NORMAL
CHECKPLOT_DEV          NULL
CHECKPLOT_TYPE         NONE
CHECKIMAGE_TYPE        NONE
WRITE_XML              N
VERBOSE_TYPE           NORMAL
NTHREADS               {threads}
"""

SEX_PARAMS = """NUMBER
XWIN_IMAGE
YWIN_IMAGE
ERRAWIN_IMAGE
ERRBWIN_IMAGE
ERRTHETAWIN_IMAGE
X_WORLD
Y_WORLD
FLUX_AUTO
FLUXERR_AUTO
MAG_AUTO
MAGERR_AUTO
FLUX_RADIUS
FWHM_IMAGE
ELONGATION
FLAGS
FLAGS_WEIGHT
"""


# ---------------------------------------------------------------------------- set-up
def ensure_peers() -> None:
    """Install SExtractor and SCAMP with apt when missing."""
    missing = [pkg for exe, pkg in (("source-extractor", "source-extractor"), ("scamp", "scamp"))
               if shutil.which(exe) is None]
    if missing:
        print(f"installing {missing} with apt-get ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def simulate(root: Path, scale: float) -> Path:
    raw = root / f"night-{scale:g}"
    if not (raw / "refcat" / "astrometric.fits").is_file() or \
            not all((raw / f"WFI.{d}.fits").is_file() for d in SCIENCE):
        from awe.sim import simulate_night
        t = time.perf_counter()
        simulate_night(raw, scale=scale, seed=1, only=SCIENCE, overwrite=True)
        print(f"simulated the six 3C273 exposures at scale {scale:g} in {time.perf_counter() - t:.0f} s", flush=True)
    return raw


def reduce_frames(raw: Path, chips: list[str]) -> list[dict[str, Any]]:
    """The reduced chips with their weights and header WCS (from the simulator's bias and flat)."""
    from awe.sim import Truth
    truth = Truth(raw)
    frames = []
    flats = {}
    for date in SCIENCE:
        name = f"WFI.{date}.fits"
        with fits.open(raw / name) as hdul:
            for chip in chips:
                hdu = hdul[chip]
                g = truth.geometry(chip)
                ys, xs = g.trim
                if chip not in flats:
                    flats[chip] = truth.flat(chip)
                flat = flats[chip]
                data = (hdu.data.astype(np.float32) - truth.frame_bias(name, chip)) / np.where(flat > 0, flat, 1)
                bad = truth.cosmics(name, chip) | truth.saturated(name, chip) | truth.satellite_mask(name, chip) \
                    | truth.hot_pixels(chip) | truth.cold_pixels(chip)
                weight = np.where(bad, 0.0, flat).astype(np.float32)[ys, xs]
                header = fits.Header()
                for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1",
                            "CD2_2", "EQUINOX", "RADESYS", "EXPTIME", "DATE-OBS", "MJD-OBS", "FILTER", "GAIN",
                            "EXTNAME"):
                    if key in hdu.header:
                        header[key] = hdu.header[key]
                header["CRPIX1"] = hdu.header["CRPIX1"] - xs.start
                header["CRPIX2"] = hdu.header["CRPIX2"] - ys.start
                header["FILTER"] = "#844"
                header["EXTNAME"] = chip
                gain = float(hdu.header.get("GAIN", hdu.header.get("HIERARCH ESO DET OUT1 CONAD", 1.99)))
                frames.append(dict(date=date, raw=name, chip=chip, data=np.ascontiguousarray(data[ys, xs]),
                                   weight=np.ascontiguousarray(weight), header=header, gain=gain, trim=(ys, xs)))
    return frames


def header_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


# ---------------------------------------------------------------------------- accuracy
def truth_rms(truth: Any, frame: dict[str, Any], wcs: WCS) -> float:
    ys, xs = frame["trim"]
    ny, nx = frame["data"].shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 20), np.linspace(0, ny - 1, 20))
    tra, tdec = truth.pixel_to_sky(frame["raw"], frame["chip"], gx.ravel() + xs.start, gy.ravel() + ys.start)
    ra, dec = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    dra = (ra - tra) * np.cos(np.radians(tdec)) * 3600.0
    ddec = (dec - tdec) * 3600.0
    return float(np.sqrt(np.mean(dra ** 2 + ddec ** 2) / 2.0))


def rms(values: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


# ---------------------------------------------------------------------------- awe
def run_awe(frames: list[dict[str, Any]], ref: Table, order: int) -> dict[str, Any]:
    from awe.image.extract import extract
    from awe.image.gastrom import FrameSources, solve_global
    from awe.model.gastrom import GAstromSourceParams
    snr_min = float(GAstromSourceParams.SNR_MIN.default)
    if True:  # one thread: sep is single-threaded, the normal equations are ~200 x 200
        t0 = time.perf_counter()
        inputs = []
        fluxes = {}
        for f in frames:
            cat = extract(f["data"], f["weight"], threshold=float(GAstromSourceParams.DETECT_THRESHOLD.default),
                          minarea=int(GAstromSourceParams.MINAREA.default), gain=f["gain"])
            keep = (np.asarray(cat["snr"]) > snr_min) & (np.asarray(cat["flags"]) == 0)
            cat = cat[keep]
            fluxes[f"{f['date']}-{f['chip']}"] = np.asarray(cat["flux"], float)
            inputs.append(FrameSources(key=f"{f['date']}-{f['chip']}", exposure=f["date"], chip=f["chip"],
                                       x=np.asarray(cat["x"], float), y=np.asarray(cat["y"], float),
                                       err=np.maximum(np.asarray(cat["xerr"], float), np.asarray(cat["yerr"], float)),
                                       wcs=header_wcs(f["header"]), shape=f["data"].shape))
        t1 = time.perf_counter()
        solution = solve_global(inputs, ref["RA"], ref["DEC"], np.maximum(ref["RA_ERR"], ref["DEC_ERR"]),
                                order=order, header_start=True)
        t2 = time.perf_counter()
    return dict(extract_s=t1 - t0, solve_s=t2 - t1, total_s=t2 - t0, solution=solution, inputs=inputs,
                fluxes=fluxes)


def run_per_chip(inputs: list[Any], fluxes: dict[str, np.ndarray], ref: Table, order: int) -> dict[str, Any]:
    """The per-chip solution of each frame alone (AstrometricParametersTask's
    :func:`awe.image.astrometry.solve_astrometry`: pattern matching from the header WCS, TAN-SIP of degree
    up to ``order`` limited by the number of matches) on the same sources as the global solution."""
    from awe.image.astrometry import AstrometryError, solve_astrometry
    out = {}
    ref_err = np.hypot(np.asarray(ref["RA_ERR"], float), np.asarray(ref["DEC_ERR"], float)) / np.sqrt(2.0)
    bright = np.argsort(np.asarray(ref["MAG"], float))
    t0 = time.perf_counter()
    for fs in inputs:
        pixel = float(np.sqrt(abs(np.linalg.det(fs.wcs.pixel_scale_matrix)))) * 3600.0
        first = np.argsort(-fluxes[fs.key])
        try:
            out[fs.key] = solve_astrometry(fs.x[first], fs.y[first], np.maximum(fs.err[first] * pixel, 0.01),
                                           np.asarray(ref["RA"], float)[bright], np.asarray(ref["DEC"], float)[bright],
                                           ref_err[bright], fs.wcs, fs.shape, order=order).wcs
        except AstrometryError as exc:
            print(f"per-chip solution of {fs.key} failed: {exc}")
    return dict(wcs=out, solve_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------- SExtractor + SCAMP
def write_ldac_refcat(ref: Table, path: Path) -> None:
    """The reference catalogue as an LDAC FITS table (LDAC_IMHEAD + LDAC_OBJECTS) for SCAMP's FILE mode."""
    header = fits.Header()
    header["NAXIS"] = 0
    text = "".join(card.image for card in header.cards) + "END".ljust(80)
    imhead = fits.BinTableHDU.from_columns([fits.Column(name="Field Header Card", format=f"{len(text)}A",
                                                        array=np.array([text]))], name="LDAC_IMHEAD")
    err = np.maximum(np.asarray(ref["RA_ERR"], float), np.asarray(ref["DEC_ERR"], float)) / 3600.0
    cols = [fits.Column(name="X_WORLD", format="D", unit="deg", array=np.asarray(ref["RA"], float)),
            fits.Column(name="Y_WORLD", format="D", unit="deg", array=np.asarray(ref["DEC"], float)),
            fits.Column(name="ERRA_WORLD", format="E", unit="deg", array=err),
            fits.Column(name="ERRB_WORLD", format="E", unit="deg", array=err),
            fits.Column(name="ERRTHETA_WORLD", format="E", unit="deg", array=np.zeros(len(ref))),
            fits.Column(name="MAG", format="E", unit="mag", array=np.asarray(ref["MAG"], float)),
            fits.Column(name="MAGERR", format="E", unit="mag", array=np.full(len(ref), 0.02)),
            fits.Column(name="OBSDATE", format="D", unit="yr", array=np.full(len(ref), 2000.0))]
    objects = fits.BinTableHDU.from_columns(cols, name="LDAC_OBJECTS")
    fits.HDUList([fits.PrimaryHDU(), imhead, objects]).writeto(path, overwrite=True)


def write_peer_inputs(frames: list[dict[str, Any]], work: Path) -> list[tuple[Path, Path]]:
    files = []
    for date in SCIENCE:
        mine = [f for f in frames if f["date"] == date]
        image = work / f"{date}.fits"
        weight = work / f"{date}.weight.fits"
        fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(f["data"], f["header"]) for f in mine]).writeto(
            image, overwrite=True)
        fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(f["weight"], f["header"]) for f in mine]).writeto(
            weight, overwrite=True)
        files.append((image, weight))
    return files


def run_peers(frames: list[dict[str, Any]], ref: Table, work: Path, threads: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    files = write_peer_inputs(frames, work)
    write_ldac_refcat(ref, work / "ref.cat")
    (work / "awe.param").write_text(SEX_PARAMS)
    (work / "scamp.conf").write_text(SCAMP_CONFIG.format(refcat="ref.cat", threads=threads))
    conv = "/usr/share/source-extractor/default.conv"
    nnw = "/usr/share/source-extractor/default.nnw"
    gain = frames[0]["gain"]
    from awe.model.gastrom import GAstromSourceParams
    threshold = float(GAstromSourceParams.DETECT_THRESHOLD.default)
    t0 = time.perf_counter()
    cats = []
    for image, weight in files:
        cat = image.with_suffix(".cat")
        subprocess.run(["source-extractor", str(image), "-c", "/usr/share/source-extractor/default.sex",
                        "-CATALOG_TYPE", "FITS_LDAC", "-CATALOG_NAME", str(cat), "-PARAMETERS_NAME", "awe.param",
                        "-FILTER", "Y", "-FILTER_NAME", conv, "-STARNNW_NAME", nnw, "-WEIGHT_TYPE", "MAP_WEIGHT",
                        "-WEIGHT_IMAGE", str(weight), "-DETECT_THRESH", f"{threshold}",
                        "-ANALYSIS_THRESH", f"{threshold}",
                        "-DETECT_MINAREA", "5", "-GAIN", f"{gain}", "-SATUR_LEVEL", "60000", "-BACK_SIZE", "64",
                        "-PIXEL_SCALE", "0", "-NTHREADS", str(threads), "-VERBOSE_TYPE", "QUIET",
                        "-CHECKIMAGE_TYPE", "NONE"], check=True, cwd=work)
        cats.append(cat)
    t1 = time.perf_counter()
    proc = subprocess.run(["scamp", *[c.name for c in cats], "-c", "scamp.conf"], cwd=work, capture_output=True,
                          text=True)
    t2 = time.perf_counter()
    (work / "scamp.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"scamp failed ({proc.returncode}); see {work / 'scamp.log'}")
    wcs = {}
    for date, cat in zip(SCIENCE, cats):
        mine = [f for f in frames if f["date"] == date]
        blocks = cat.with_suffix(".head").read_text().split("END     ")
        for f, block in zip(mine, blocks):
            head = f["header"].copy()
            for line in block.splitlines():
                line = line.rstrip()
                if not line or line.startswith(("COMMENT", "HISTORY")) or "=" not in line[:10]:
                    continue
                card = fits.Card.fromstring(line.ljust(80))
                head[card.keyword] = card.value
            wcs[f"{date}-{f['chip']}"] = header_wcs(head)
    return dict(extract_s=t1 - t0, solve_s=t2 - t1, total_s=t2 - t0, wcs=wcs,
                stats=scamp_stats(proc.stdout + proc.stderr))


def scamp_stats(log: str) -> dict[str, list[float]]:
    """SCAMP's own astrometric dispersions (arcsec, per axis, all detections) from its log: ``internal``
    (between overlapping detections) and ``external`` (against the reference)."""
    import re
    out: dict[str, list[float]] = {}
    for what in ("internal", "external"):
        part = log.split(f"Astrometric stats ({what}")
        if len(part) < 2:
            continue
        found = re.search(r'Group\s+1:\s+([0-9.]+)"\s+([0-9.]+)"', part[1])
        if found:
            out[what] = [float(found.group(1)), float(found.group(2))]
    return out


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="chip scale of the simulated night (1: full size)")
    parser.add_argument("--workdir", default="/tmp/bench-gastrom", help="where the night and the peers' files go")
    parser.add_argument("--order", type=int, default=3, help="distortion degree (awe and SCAMP)")
    parser.add_argument("--chips", default=",".join(CHIPS), help="chips to solve (default: all 8)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    ensure_peers()
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    raw = simulate(root, args.scale)
    from awe.sim import Truth
    truth = Truth(raw)
    chips = args.chips.split(",")
    t = time.perf_counter()
    frames = reduce_frames(raw, chips)
    print(f"{len(frames)} frames of {frames[0]['data'].shape[1]} x {frames[0]['data'].shape[0]} pixels reduced "
          f"from the simulator's bias and flat in {time.perf_counter() - t:.0f} s", flush=True)
    ref = Table.read(raw / "refcat" / "astrometric.fits")
    awe = run_awe(frames, ref, args.order)
    sol = awe["solution"]
    per_chip = run_per_chip(awe["inputs"], awe["fluxes"], ref, args.order)
    single = per_chip["wcs"]
    peers = run_peers(frames, ref, root / f"peers-{args.scale:g}", threads=1)
    keys = [f"{f['date']}-{f['chip']}" for f in frames]
    by_key = dict(zip(keys, frames))
    awe_err = [truth_rms(truth, by_key[k], sol.frames[k].wcs) for k in keys]
    scamp_err = [truth_rms(truth, by_key[k], peers["wcs"][k]) for k in keys if k in peers["wcs"]]
    single_err = [truth_rms(truth, by_key[k], single[k]) for k in keys if k in single]
    header_err = [truth_rms(truth, by_key[k], header_wcs(by_key[k]["header"])) for k in keys]
    figures = {
        "scale": args.scale, "frames": len(frames), "order": args.order,
        "awe": {"extract_s": awe["extract_s"], "solve_s": awe["solve_s"], "total_s": awe["total_s"],
                "truth_rms_arcsec": rms(awe_err), "truth_rms_max_arcsec": max(awe_err),
                "internal_rms_arcsec": sol.rms_internal, "external_rms_arcsec": sol.rms_external,
                "n_pairs": sol.n_pairs, "n_ref": sol.n_ref, "n_stars": sol.n_stars,
                "sources_per_frame": float(np.mean([len(i.x) for i in awe["inputs"]]))},
        "per_chip": {"truth_rms_arcsec": rms(single_err), "truth_rms_max_arcsec": max(single_err),
                     "solve_s": per_chip["solve_s"], "frames_solved": len(single_err)},
        "scamp": {"extract_s": peers["extract_s"], "solve_s": peers["solve_s"], "total_s": peers["total_s"],
                  "truth_rms_arcsec": rms(scamp_err), "truth_rms_max_arcsec": max(scamp_err),
                  "frames_solved": len(scamp_err), "scamp_stats_arcsec": peers["stats"]},
        "header_truth_rms_arcsec": rms(header_err),
    }
    figures["ratios"] = {"time_awe_over_peers": awe["total_s"] / peers["total_s"],
                         "truth_rms_awe_over_scamp": rms(awe_err) / rms(scamp_err),
                         "truth_rms_awe_over_per_chip": rms(awe_err) / rms(single_err)}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    a, s, r = figures["awe"], figures["scamp"], figures["ratios"]
    print(f"scale {args.scale:g}: {len(frames)} frames (6 exposures x {len(chips)} chips), order {args.order}, "
          f"1 thread each; header WCS off by {figures['header_truth_rms_arcsec']:.1f}\" rms")
    print(f"  awe   : extraction {a['extract_s']:.1f} s + solution {a['solve_s']:.1f} s = {a['total_s']:.1f} s; "
          f"rms vs truth {a['truth_rms_arcsec']:.4f}\" (max {a['truth_rms_max_arcsec']:.4f}\"), internal "
          f"{a['internal_rms_arcsec']:.4f}\", external {a['external_rms_arcsec']:.4f}\", {a['n_pairs']} pairs, "
          f"{a['n_ref']} reference stars, {a['sources_per_frame']:.0f} sources/frame")
    c = figures["per_chip"]
    print(f"  per-chip (solve_astrometry, each frame alone, the same sources): rms vs truth "
          f"{c['truth_rms_arcsec']:.4f}\" (max {c['truth_rms_max_arcsec']:.4f}\"), {c['frames_solved']} frames, "
          f"{c['solve_s']:.1f} s")
    print(f"  SExtractor + SCAMP: extraction {s['extract_s']:.1f} s + solution {s['solve_s']:.1f} s = "
          f"{s['total_s']:.1f} s; rms vs truth {s['truth_rms_arcsec']:.4f}\" (max {s['truth_rms_max_arcsec']:.4f}\"); "
          f"SCAMP's own dispersions (dAXIS1, dAXIS2): {s['scamp_stats_arcsec']}")
    print(f"  ratios: time awe/peers {r['time_awe_over_peers']:.2f}, rms awe/SCAMP {r['truth_rms_awe_over_scamp']:.2f},"
          f" rms awe/per-chip {r['truth_rms_awe_over_per_chip']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
