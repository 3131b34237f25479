"""Read the truth of a simulated night (``OUTDIR/truth/``, written by :func:`awe.sim.simulate_night`).

Conventions
-----------
* ``chip`` arguments accept a chip name (``'ccd50'``) or extension index (``1``).
* ``filename`` arguments accept ``'WFI.2003-03-04T04:42:29.496.fits'``, the
  stem, the DATE-OBS, or a per-chip name (``..._1.fits``).
* Images are on the full raw extension grid (prescan, overscan and unlit rows
  included); slice them with ``truth.geometry(chip).trim``.
* Pixel coordinates are 0-based numpy ``(x, y)``: ``image[int(y), int(x)]``.
* Fluxes in ADU scale with the pixel area: the zero point of a night simulated
  at ``scale`` is ``24.47 + 5 log10(scale)`` (:attr:`Truth.zero_point`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from awe.instruments import RawGeometry, get_instrument
from awe.sim._detector import DEFECT_BITS
from awe.sim._optics import ChipOptics, header_wcs, true_wcs
from awe.sim._truthio import MASK_BITS

__all__ = ["Truth"]

_CHIP_SUFFIX = re.compile(r"_\d+$")


class Truth:
    """The true night behind a simulated set of raw files.

    Parameters
    ----------
    outdir : str or Path
        The folder given to :func:`awe.sim.simulate_night`.

    Raises
    ------
    FileNotFoundError
        If ``outdir/truth/night.fits`` does not exist.
    """

    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.root = self.outdir / "truth"
        night = self.root / "night.fits"
        if not night.is_file():
            raise FileNotFoundError(f"no simulator truth in {self.outdir} ({night} is missing); "
                                    f"simulate the night there first (awe sim {self.outdir})")
        with fits.open(night) as hdul:
            self.header = hdul[0].header.copy()
            self._tables = {name: Table(hdul[name].data) for name in ("EXPOSURES", "CHIPS", "FRAMES", "OPTICS",
                                                                       "SATELLITE")}
            self._satellite_meta = dict(hdul["SATELLITE"].header)
        for table in self._tables.values():
            for col in table.colnames:
                if table[col].dtype.kind == "S":
                    table[col] = np.char.decode(table[col])
        self.instrument = get_instrument(self.header["INSTRUME"])

    # ------------------------------------------------------------------ night
    @property
    def scale(self) -> float:
        """Chip size factor of the simulation."""
        return float(self.header["SCALE"])

    @property
    def seed(self) -> int:
        return int(self.header["SEED"])

    @property
    def zero_point(self) -> float:
        """Zero point at this scale: ``R = -2.5 log10(ADU/s) + zero_point - extinction * airmass``."""
        return float(self.header["ZP"])

    @property
    def extinction(self) -> float:
        """Extinction coefficient [mag/airmass]."""
        return float(self.header["EXTINCT"])

    @property
    def pixel_scale(self) -> float:
        """Pixel scale of the simulated frames [arcsec/pixel]."""
        return float(self.header["PIXSCALE"])

    def exposures(self) -> Table:
        """One row per exposure of the night.

        Columns: ``filename, index, type ('bias'|'domeflat'|'twilightflat'|'standard'|'science'),
        dpr_type, object, field, date_obs, mjd, exptime, airmass (mean), airmass_start, airmass_end,
        seeing_arcsec (FWHM), beta (Moffat), zp (at this scale), zp_nominal, extinction,
        sky_adu_per_s (per pixel, before the flat-field response), flat_level (flats: ADU at unit
        response), ra, dec (header pointing), ra_true, dec_true, rotation_deg (true minus header),
        bias_drift, satellite, exp_no, bias_offset_<chip> (frame bias offset of every chip)``.
        """
        return self._tables["EXPOSURES"].copy()

    def exposure(self, filename: str) -> dict:
        """The :meth:`exposures` row of one file, as a dict."""
        key = self._filename(filename)
        table = self._tables["EXPOSURES"]
        return {col: table[col][self._row(key)] for col in table.colnames}

    def chips(self) -> Table:
        """One row per chip.

        Columns: ``chip, index, gain [e-/ADU], read_noise_e, read_noise_adu, bias_level [ADU],
        prescan_offset [ADU below bias_level], qe, flat_median (median over the trim section of the
        uniform-light response, mosaic-normalised), zp_offset (2.5 log10 of flat_median over the
        chip's median illumination: the chip's zero-point offset), drift_gain, n_hot, n_cold,
        n_hot_columns, n_bad_columns``.
        """
        return self._tables["CHIPS"].copy()

    def frames(self) -> Table:
        """One row per simulated (file, chip): ``filename, chip, bias_offset, n_cosmics, n_saturated,
        satellite, row_jitter`` (vector of per-row bias offsets)."""
        return self._tables["FRAMES"].copy()

    # ------------------------------------------------------------------ chips
    def geometry(self, chip: str | int) -> RawGeometry:
        """The raw geometry (sections) of the simulated chip."""
        return RawGeometry.scaled(self.instrument.chip(chip), self.scale)

    def bias_level(self, chip: str | int) -> float:
        """Bias level of the illuminated area and overscan [ADU] (without frame drift)."""
        return float(self._chip_row(chip)["bias_level"])

    def bias_pattern(self, chip: str | int) -> np.ndarray:
        """Bias level + fixed 2-D pattern (prescan offset and the column structure next to the amplifier
        included), without frame drift and row jitter."""
        return self._chip_image(chip, "BIAS")

    def bias_offset(self, filename: str, chip: str | int) -> float:
        """Bias offset (drift) of one frame and chip [ADU]."""
        return float(self._frame_row(filename, chip)["bias_offset"])

    def row_jitter(self, filename: str, chip: str | int) -> np.ndarray:
        """Per-row bias offsets of one frame and chip [ADU], present in the overscan too."""
        return np.asarray(self._frame_row(filename, chip)["row_jitter"], dtype=np.float64)

    def frame_bias(self, filename: str, chip: str | int) -> np.ndarray:
        """The noiseless bias of one frame: pattern + frame offset + row jitter."""
        return (self.bias_pattern(chip) + self.bias_offset(filename, chip)
                + self.row_jitter(filename, chip)[:, None])

    def flat_components(self, chip: str | int) -> dict:
        """The flat-field components: ``pixel``, ``vignetting``, ``illumination``, ``dome_lamp`` (images)
        and ``qe`` (float).

        Point sources see ``pixel * vignetting * qe / norm``; uniform light (sky,
        twilight) also ``illumination``; dome flats also ``dome_lamp``.
        """
        return {"pixel": self._chip_image(chip, "PIXEL"), "vignetting": self._chip_image(chip, "VIGNETTING"),
                "qe": float(self._chip_header(chip)["QE"]), "illumination": self._chip_image(chip, "ILLUMINATION"),
                "dome_lamp": self._chip_image(chip, "DOME_LAMP")}

    def flat(self, chip: str | int) -> np.ndarray:
        """The true flat field (response to uniform light, illumination included), median 1 over the
        trim section; 0 outside the illuminated area."""
        geometry = self.geometry(chip)
        c = self.flat_components(chip)
        flat = np.zeros(geometry.shape, dtype=np.float64)
        ys, xs = geometry.data
        flat[ys, xs] = (c["pixel"] * c["vignetting"] * c["illumination"])[ys, xs]
        return flat / np.median(flat[geometry.trim])

    def point_response(self, chip: str | int) -> np.ndarray:
        """Raw ADU recorded per ADU of point-source light (pixel x vignetting x qe / norm); 0 where unlit."""
        geometry = self.geometry(chip)
        c = self.flat_components(chip)
        response = np.zeros(geometry.shape, dtype=np.float64)
        ys, xs = geometry.data
        response[ys, xs] = (c["pixel"] * c["vignetting"])[ys, xs] * c["qe"] / float(self._chip_header(chip)["NORM"])
        return response

    def zeropoint(self, chip: str | int, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        """Zero point at pixel ``(x, y)`` of a frame divided by :meth:`flat` (no illumination correction).

        ``R = -2.5 log10(ADU/s) + zeropoint - extinction * airmass``; it varies
        across the mosaic with the illumination term.
        """
        illum = self._chip_image(chip, "ILLUMINATION")
        ix = np.clip(np.rint(x).astype(int), 0, illum.shape[1] - 1)
        iy = np.clip(np.rint(y).astype(int), 0, illum.shape[0] - 1)
        flat_median = float(self._chip_row(chip)["flat_median"])
        return self.zero_point + 2.5 * np.log10(flat_median / illum[iy, ix])

    def hot_pixels(self, chip: str | int, include_columns: bool = True) -> np.ndarray:
        """Boolean mask of hot pixels (and, by default, hot-column pixels)."""
        bits = DEFECT_BITS["hot"] | (DEFECT_BITS["hot_column"] if include_columns else 0)
        return (self._chip_image(chip, "DEFECTS") & bits) > 0

    def hot_excess(self, chip: str | int) -> np.ndarray:
        """Extra ADU of the hot pixels and columns, the same in every frame (biases too)."""
        return self._chip_image(chip, "HOT_EXCESS")

    def cold_pixels(self, chip: str | int, include_columns: bool = True) -> np.ndarray:
        """Boolean mask of cold/dead pixels (response 0-50 %) and, by default, dead-column pixels."""
        bits = DEFECT_BITS["cold"] | (DEFECT_BITS["bad_column"] if include_columns else 0)
        return (self._chip_image(chip, "DEFECTS") & bits) > 0

    def hot_columns(self, chip: str | int) -> Table:
        """Hot columns: ``x`` (0-based raw column), rows ``y0:y1`` and the extra ``value`` [ADU]."""
        return self._chip_table(chip, "HOT_COLUMNS")

    def bad_columns(self, chip: str | int) -> Table:
        """Dead columns: ``x`` (0-based raw column), rows ``y0:y1`` and their response ``value``."""
        return self._chip_table(chip, "BAD_COLUMNS")

    # ------------------------------------------------------------------ frames
    def cosmics(self, filename: str, chip: str | int) -> np.ndarray:
        """Boolean mask of the cosmic-ray pixels of one frame."""
        return self._frame_bits(filename, chip, "cosmic")

    def saturated(self, filename: str, chip: str | int) -> np.ndarray:
        """Boolean mask of saturated pixels and bleed trails (raw value 65535)."""
        return self._frame_bits(filename, chip, "saturated")

    def satellite_mask(self, filename: str, chip: str | int) -> np.ndarray:
        """Boolean mask of the satellite track (within one FWHM of its centre line)."""
        return self._frame_bits(filename, chip, "satellite")

    def satellite(self) -> dict:
        """The satellite: ``filename``, ``chips`` (names), the sky end points ``ra0, dec0, ra1, dec1``
        and ``segments`` (Table: chip, x0, y0, x1, y1 [0-based pixels], fwhm_px, peak_adu)."""
        meta = self._satellite_meta
        segments = self._tables["SATELLITE"]
        return {"filename": meta.get("FILENAME", ""), "chips": [str(c) for c in segments["chip"]],
                "ra0": meta.get("RA0"), "dec0": meta.get("DEC0"), "ra1": meta.get("RA1"), "dec1": meta.get("DEC1"),
                "segments": segments.copy()}

    # ------------------------------------------------------------------ sky
    @functools.cached_property
    def _sources(self) -> Table:
        table = Table.read(self.root / "sources.fits")
        for col in ("field", "name", "kind"):
            if table[col].dtype.kind == "S":
                table[col] = np.char.decode(table[col])
        return table

    def stars(self, field: str | None = None, kind: str | None = None) -> Table:
        """The true sources: ``id, field, name, kind ('star'|'galaxy'), ra, dec, mag_R, v_minus_r,
        r_eff_arcsec, sersic_n, axis_ratio, pa_deg`` (galaxies included unless ``kind='star'``)."""
        table = self._sources
        keep = np.ones(len(table), dtype=bool)
        if field is not None:
            keep &= table["field"] == field
        if kind is not None:
            keep &= table["kind"] == kind
        return table[keep]

    def _optics(self, chip: str | int) -> ChipOptics:
        name = self.instrument.chip(chip).name
        row = self._tables["OPTICS"][list(self._tables["OPTICS"]["chip"]).index(name)]
        return ChipOptics(
            chip=name, crpix_header=(row["crpix1_header"], row["crpix2_header"]),
            cd_header=np.array([[row["cd1_1_header"], row["cd1_2_header"]],
                                [row["cd2_1_header"], row["cd2_2_header"]]]),
            crpix_true=(row["crpix1_true"], row["crpix2_true"]),
            cd_true=np.array([[row["cd1_1_true"], row["cd1_2_true"]], [row["cd2_1_true"], row["cd2_2_true"]]]),
            sip_c=float(row["sip_c"]))

    def wcs(self, filename: str, chip: str | int) -> WCS:
        """The true mapping of a chip in one exposure (TAN-SIP, raw pixel coordinates)."""
        exp = self.exposure(filename)
        return true_wcs(self._optics(chip), float(exp["ra_true"]), float(exp["dec_true"]), float(exp["rotation_deg"]))

    def header_wcs(self, filename: str, chip: str | int) -> WCS:
        """The rough WCS written in the raw header (nominal pointing, instrument CRPIX/CD)."""
        exp = self.exposure(filename)
        return header_wcs(self._optics(chip), float(exp["ra"]), float(exp["dec"]))

    def sky_to_pixel(self, filename: str, chip: str | int, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """True 0-based pixel positions ``(x, y)`` of sky positions [deg] in one frame and chip."""
        x, y = self.wcs(filename, chip).all_world2pix(np.atleast_1d(ra), np.atleast_1d(dec), 0,
                                                      tolerance=1e-6, maxiter=50)
        return x, y

    def pixel_to_sky(self, filename: str, chip: str | int, x, y) -> tuple[np.ndarray, np.ndarray]:
        """True sky positions [deg] of 0-based pixel positions."""
        return self.wcs(filename, chip).all_pix2world(np.atleast_1d(x), np.atleast_1d(y), 0)

    def frame_sources(self, filename: str, chip: str | int) -> Table:
        """The true sources falling on the illuminated area of one frame and chip.

        Columns: those of :meth:`stars` plus ``x, y`` (0-based pixels),
        ``flux_adu`` (total ADU at unit response, airmass applied),
        ``flux_raw`` (ADU recorded in the raw frame above bias) and
        ``flux_flatfielded`` (ADU in the frame divided by :meth:`flat`).
        """
        exp = self.exposure(filename)
        table = self.stars(field=exp["field"]) if exp["field"] else self.stars()[:0]
        x, y = self.sky_to_pixel(filename, chip, np.asarray(table["ra"]), np.asarray(table["dec"]))
        geometry = self.geometry(chip)
        ys, xs = geometry.data
        inside = (x >= xs.start - 0.5) & (x < xs.stop - 0.5) & (y >= ys.start - 0.5) & (y < ys.stop - 0.5)
        table, x, y = table[inside], x[inside], y[inside]
        table["x"], table["y"] = x, y
        flux = float(exp["exptime"]) * 10 ** (-0.4 * (np.asarray(table["mag_R"]) - self.zero_point
                                                      + self.extinction * float(exp["airmass"])))
        ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
        table["flux_adu"] = flux
        table["flux_raw"] = flux * self.point_response(chip)[iy, ix]
        table["flux_flatfielded"] = flux * 10 ** (0.4 * (self.zeropoint(chip, x, y) - self.zero_point))
        return table

    # ------------------------------------------------------------------ helpers
    def _filename(self, filename: str) -> str:
        name = Path(str(filename)).name
        for suffix in (".gz", ".Z", ".fz", ".fits"):
            name = name.removesuffix(suffix)
        name = _CHIP_SUFFIX.sub("", name)
        if not name.startswith("WFI."):
            name = "WFI." + name
        return name + ".fits"

    def _row(self, filename: str) -> int:
        names = list(self._tables["EXPOSURES"]["filename"])
        if filename not in names:
            raise LookupError(f"the simulated night has no exposure {filename!r}")
        return names.index(filename)

    def _chip_row(self, chip: str | int):
        name = self.instrument.chip(chip).name
        table = self._tables["CHIPS"]
        return table[list(table["chip"]).index(name)]

    def _frame_row(self, filename: str, chip: str | int):
        key, name = self._filename(filename), self.instrument.chip(chip).name
        table = self._tables["FRAMES"]
        hit = np.flatnonzero((table["filename"] == key) & (table["chip"] == name))
        if len(hit) == 0:
            raise LookupError(f"{key} chip {name} was not simulated (see Truth.frames())")
        return table[hit[0]]

    def _chip_path(self, chip: str | int) -> Path:
        return self.root / "chips" / f"{self.instrument.chip(chip).name}.fits"

    def _chip_header(self, chip: str | int) -> fits.Header:
        return fits.getheader(self._chip_path(chip), 0)

    def _chip_image(self, chip: str | int, extname: str) -> np.ndarray:
        with fits.open(self._chip_path(chip)) as hdul:
            return np.array(hdul[extname].data)

    def _chip_table(self, chip: str | int, extname: str) -> Table:
        with fits.open(self._chip_path(chip)) as hdul:
            return Table(hdul[extname].data)

    def _frame_bits(self, filename: str, chip: str | int, what: str) -> np.ndarray:
        key = self._filename(filename)
        path = self.root / "frames" / key
        if not path.is_file():
            raise LookupError(f"{key} was not simulated (no {path})")
        with fits.open(path) as hdul:
            hdu = hdul[self.instrument.chip(chip).name]
            shape = (hdu.header["NAXIS2_R"], hdu.header["NAXIS1_R"])
            y, x, bits = (np.asarray(hdu.data[c]) for c in ("y", "x", "bits"))
        mask = np.zeros(shape, dtype=bool)
        hit = (bits & MASK_BITS[what]) > 0
        mask[y[hit], x[hit]] = True
        return mask
