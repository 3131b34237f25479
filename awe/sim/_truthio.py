"""Writing the simulator's truth (``OUTDIR/truth/``); :class:`awe.sim.Truth` reads it.

Layout::

    truth/night.fits          primary header: SCALE, SEED, ZP, ZP_NOM, EXTINCT, NORM, ...
                              EXPOSURES, CHIPS, FRAMES, OPTICS, SATELLITE binary tables
    truth/sources.fits        every true source (stars, galaxies, standards, 3C273)
    truth/chips/<chip>.fits   night-constant images on the full raw grid: BIAS, PIXEL,
                              VIGNETTING, ILLUMINATION, DOME_LAMP, HOT_EXCESS, DEFECTS
                              and HOT_COLUMNS, BAD_COLUMNS tables
    truth/frames/<stem>.fits  per exposure, one table per chip (EXTNAME = chip) of the
                              flagged pixels: y, x (0-based), bits = 1 cosmic ray,
                              2 saturated or bled, 4 satellite track
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from awe.instruments import InstrumentSpec
from awe.sim._detector import DEFECT_BITS, ChipModel
from awe.sim._optics import DISTORTION_ARCSEC, ChipOptics
from awe.sim._plan import EXTINCTION, ZP_NOMINAL, Exposure, NightPlan

__all__ = ["TruthWriter", "TRUTH_VERSION", "CHIP_IMAGES", "MASK_BITS"]

TRUTH_VERSION = 1
#: Bits of the per-frame truth masks.
MASK_BITS = {"cosmic": 1, "saturated": 2, "satellite": 4}
# extension -> (compression keywords) ; the quantisation steps keep the truth far below the noise
CHIP_IMAGES = {
    "BIAS": dict(compression_type="RICE_1", quantize_level=-1e-3, quantize_method=2, dither_seed=1),
    "PIXEL": dict(compression_type="RICE_1", quantize_level=-1e-5, quantize_method=2, dither_seed=2),
    "VIGNETTING": dict(compression_type="RICE_1", quantize_level=-1e-6, quantize_method=2, dither_seed=3),
    "ILLUMINATION": dict(compression_type="RICE_1", quantize_level=-1e-6, quantize_method=2, dither_seed=4),
    "DOME_LAMP": dict(compression_type="RICE_1", quantize_level=-1e-6, quantize_method=2, dither_seed=5),
    "HOT_EXCESS": dict(compression_type="RICE_1", quantize_level=-1e-2, quantize_method=2, dither_seed=6),
    "DEFECTS": dict(compression_type="RICE_1"),
}


class TruthWriter:
    """Writes ``OUTDIR/truth`` while the night is simulated."""

    def __init__(self, outdir: Path, plan: NightPlan, instrument: InstrumentSpec):
        self.root = Path(outdir) / "truth"
        self.plan, self.instrument = plan, instrument
        (self.root / "chips").mkdir(parents=True, exist_ok=True)
        (self.root / "frames").mkdir(parents=True, exist_ok=True)

    def frame_path(self, exp: Exposure) -> Path:
        return self.root / "frames" / f"{exp.stem}.fits"

    def start_frames(self, exposures: list[Exposure]) -> None:
        """Create the per-exposure mask files (primary HDU only)."""
        for exp in exposures:
            header = fits.Header()
            header["FILENAME"] = (exp.filename, "raw file these masks belong to")
            header["BIT_CR"] = (MASK_BITS["cosmic"], "mask bit: cosmic ray")
            header["BIT_SAT"] = (MASK_BITS["saturated"], "mask bit: saturated or bleeding")
            header["BIT_SATL"] = (MASK_BITS["satellite"], "mask bit: satellite track")
            fits.PrimaryHDU(header=header).writeto(self.frame_path(exp), overwrite=True)

    def append_frame_mask(self, exp: Exposure, chip: str, bits: np.ndarray) -> None:
        """Append the flagged pixels of one chip (sparse: y, x, bits)."""
        y, x = np.nonzero(bits)
        table = np.rec.fromarrays([y.astype(np.int32), x.astype(np.int32), bits[y, x].astype(np.uint8)],
                                  names=("y", "x", "bits"))
        header = fits.Header()
        header["EXTNAME"] = chip
        header["NAXIS1_R"] = (bits.shape[1], "columns of the raw extension")
        header["NAXIS2_R"] = (bits.shape[0], "rows of the raw extension")
        fits.append(self.frame_path(exp), table, header=header, verify=False)

    def write_chip(self, model: ChipModel, drift_gain: float) -> dict:
        """Write ``truth/chips/<chip>.fits``; returns the chip's row of the CHIPS table."""
        flat_median = model.flat_median()
        ys, xs = model.geometry.trim
        illum_median = float(np.median(model.illumination[ys, xs]))
        row = {
            "chip": model.chip.name, "index": model.chip.index, "gain": model.chip.gain,
            "read_noise_e": model.chip.read_noise_e, "read_noise_adu": model.read_noise_adu,
            "bias_level": model.bias_level, "prescan_offset": model.prescan_offset, "qe": model.qe,
            "flat_median": flat_median, "zp_offset": 2.5 * math.log10(flat_median / illum_median),
            "drift_gain": drift_gain,
            "n_hot": int(np.count_nonzero(model.defects & DEFECT_BITS["hot"])),
            "n_cold": int(np.count_nonzero(model.defects & DEFECT_BITS["cold"])),
            "n_hot_columns": len(model.hot_columns), "n_bad_columns": len(model.bad_columns),
        }
        header = fits.Header()
        for key, fits_key in (("chip", "CHIP"), ("index", "INDEX"), ("gain", "GAIN"), ("read_noise_e", "RON_E"),
                              ("read_noise_adu", "RON_ADU"), ("bias_level", "BIASLEV"), ("prescan_offset", "PRESCOFF"),
                              ("qe", "QE"), ("flat_median", "FLATMED"), ("zp_offset", "ZPOFF")):
            header[fits_key] = row[key]
        header["NORM"] = (model.norm, "mosaic normalisation of the response")
        header["SCALE"] = self.plan.scale
        images = {"BIAS": model.bias_pattern, "PIXEL": model.pixel, "VIGNETTING": model.vignetting,
                  "ILLUMINATION": model.illumination, "DOME_LAMP": model.lamp, "HOT_EXCESS": model.hot_excess,
                  "DEFECTS": model.defects}
        hdus: list = [fits.PrimaryHDU(header=header)]
        for name, data in images.items():
            tile = (min(64, data.shape[0]), data.shape[1])
            hdus.append(fits.CompImageHDU(data, name=name, tile_shape=tile, **CHIP_IMAGES[name]))
        for name, columns in (("HOT_COLUMNS", model.hot_columns), ("BAD_COLUMNS", model.bad_columns)):
            table = Table(rows=[(c["x"], c["y0"], c["y1"], c["value"]) for c in columns],
                          names=("x", "y0", "y1", "value"), dtype=(np.int32, np.int32, np.int32, np.float64))
            hdus.append(fits.table_to_hdu(table))
            hdus[-1].name = name
        fits.HDUList(hdus).writeto(self.root / "chips" / f"{model.chip.name}.fits", overwrite=True)
        return row

    def write_night(self, chip_rows: list[dict], frame_rows: list[dict], tracks: list[dict], satellite,
                    optics: dict[str, ChipOptics], levels: dict[int, float]) -> None:
        plan = self.plan
        offsets = {(r["filename"], r["chip"]): r["bias_offset"] for r in frame_rows}
        exposures = Table(rows=[_exposure_row(e, plan, levels) for e in plan.exposures])
        for chip in self.instrument.chips:
            exposures[f"bias_offset_{chip.name}"] = [offsets.get((e.filename, chip.name), np.nan)
                                                     for e in plan.exposures]
        chips = Table(rows=chip_rows)
        if frame_rows:
            frames = Table({key: [r[key] for r in frame_rows] for key in frame_rows[0]})
        else:
            frames = Table(names=("filename", "chip", "bias_offset", "n_cosmics", "n_saturated", "satellite"),
                           dtype=("U40", "U8", float, int, int, bool))
        opt = Table(rows=[(o.chip, *o.crpix_header, *o.cd_header.ravel(), *o.crpix_true, *o.cd_true.ravel(), o.sip_c)
                          for o in optics.values()],
                    names=("chip", "crpix1_header", "crpix2_header", "cd1_1_header", "cd1_2_header", "cd2_1_header",
                           "cd2_2_header", "crpix1_true", "crpix2_true", "cd1_1_true", "cd1_2_true", "cd2_1_true",
                           "cd2_2_true", "sip_c"))
        sat = Table(rows=[(t["filename"], t["chip"], t["x0"], t["y0"], t["x1"], t["y1"], t["fwhm_px"], t["peak_adu"])
                          for t in tracks],
                    names=("filename", "chip", "x0", "y0", "x1", "y1", "fwhm_px", "peak_adu"),
                    dtype=("U40", "U8", float, float, float, float, float, float))
        header = fits.Header()
        header["INSTRUME"] = self.instrument.name
        header["TRUTHVER"] = (TRUTH_VERSION, "layout version of truth/")
        header["SCALE"] = (plan.scale, "chip size factor of the simulation")
        header["SEED"] = (plan.seed, "random seed")
        header["ZP"] = (plan.zero_point, "zero point at this scale [mag, ADU/s]")
        header["ZP_NOM"] = (ZP_NOMINAL, "zero point of full-size frames")
        header["EXTINCT"] = (EXTINCTION, "extinction [mag/airmass]")
        header["PIXSCALE"] = (self.instrument.pixel_scale / plan.scale, "pixel scale at this scale [arcsec]")
        header["DISTORT"] = (DISTORTION_ARCSEC, "radial distortion at 0.4 deg [arcsec]")
        if satellite is not None:
            sat.meta.update({"FILENAME": satellite.filename, "RA0": satellite.ra0, "DEC0": satellite.dec0,
                             "RA1": satellite.ra1, "DEC1": satellite.dec1})
        hdus = [fits.PrimaryHDU(header=header)]
        for name, table in (("EXPOSURES", exposures), ("CHIPS", chips), ("FRAMES", frames), ("OPTICS", opt),
                            ("SATELLITE", sat)):
            hdu = fits.table_to_hdu(table)
            hdu.name = name
            hdus.append(hdu)
        fits.HDUList(hdus).writeto(self.root / "night.fits", overwrite=True)

    def write_sources(self, sources: Table) -> None:
        sources.write(self.root / "sources.fits", overwrite=True)


def _exposure_row(exp: Exposure, plan: NightPlan, levels: dict[int, float]) -> dict:
    return {
        "filename": exp.filename, "index": exp.index, "type": exp.kind, "dpr_type": exp.dpr[1],
        "object": exp.object, "field": exp.field or "", "date_obs": exp.date_obs, "mjd": exp.mjd,
        "exptime": exp.exptime, "airmass": exp.airmass, "airmass_start": exp.airmass_start,
        "airmass_end": exp.airmass_end, "seeing_arcsec": exp.seeing, "beta": exp.beta, "zp": plan.zero_point,
        "zp_nominal": ZP_NOMINAL, "extinction": EXTINCTION, "sky_adu_per_s": exp.sky_rate,
        "flat_level": levels.get(exp.index, 0.0), "ra": exp.ra, "dec": exp.dec, "ra_true": exp.ra_true,
        "dec_true": exp.dec_true, "rotation_deg": exp.rotation_deg, "bias_drift": exp.bias_drift,
        "satellite": exp.satellite, "exp_no": exp.exp_no,
    }
