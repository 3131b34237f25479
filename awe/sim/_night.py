"""Simulate the course night: raw files, reference catalogues and truth.

Chips are the outer loop: the night-constant model of one chip (bias
structure, defects, flat-field response) is built once, then every exposure's
extension of that chip is simulated and appended to its raw file.  Memory stays
at a few full-chip float32 images whatever the scale; every (exposure, chip)
draws its random numbers from its own seed, so any subset of the night is
reproduced bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from astropy.table import Table

from awe.instruments import InstrumentSpec, RawGeometry, get_instrument
from awe.sim import _truthio
from awe.sim._detector import ChipModel, build_chip_model, read_out
from awe.sim._optics import ChipOptics, chip_optics, focal_plane, true_wcs, vignetting
from awe.sim._plan import EXTINCTION, Exposure, NightPlan, plan_night
from awe.sim._rawfile import (DEFAULT_DETECTOR_ID_KEY, append_extension, check_conventions, extension_header,
                              primary_header, reorder_extensions, start_raw_file)
from awe.sim._render import add_galaxies, add_stars, add_track
from awe.sim._sky import astrometric_refcat, make_sources, standard_refcat
from awe.sim._truthio import MASK_BITS

__all__ = ["simulate_night", "main_sim"]

log = logging.getLogger(__name__)

SATELLITE_FWHM_PX = 2.5
SATELLITE_PEAK_ADU = 350.0

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class _Satellite:
    """A satellite's great circle through two sky points."""

    filename: str
    ra0: float
    dec0: float
    ra1: float
    dec1: float

    def points(self, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """Sky positions along the track (spherical interpolation)."""
        a = _unit(self.ra0, self.dec0)
        b = _unit(self.ra1, self.dec1)
        omega = math.acos(float(np.clip(a @ b, -1, 1)))
        t = np.linspace(0, 1, n)[:, None]
        p = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)
        return np.degrees(np.arctan2(p[:, 1], p[:, 0])) % 360.0, np.degrees(np.arcsin(p[:, 2]))


def _unit(ra: float, dec: float) -> np.ndarray:
    r, d = math.radians(ra), math.radians(dec)
    return np.array([math.cos(d) * math.cos(r), math.cos(d) * math.sin(r), math.sin(d)])


def _satellite(plan: NightPlan) -> _Satellite | None:
    """Two sky points 0.6 deg either side of the mosaic centre, at a random angle."""
    exposures = [e for e in plan.exposures if e.satellite]
    if not exposures:
        return None
    exp = exposures[0]
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 10]))
    angle = math.radians(rng.uniform(15.0, 40.0))
    offset = rng.uniform(-0.05, 0.05)
    cosd = math.cos(math.radians(exp.dec_true))
    ends = []
    for sign in (-1, 1):
        east, north = sign * 0.6 * math.cos(angle), sign * 0.6 * math.sin(angle) + offset
        ends.append((exp.ra_true + east / cosd, exp.dec_true + north))
    return _Satellite(exp.filename, ends[0][0], ends[0][1], ends[1][0], ends[1][1])


def _response_norm(instrument: InstrumentSpec, plan: NightPlan, optics: dict[str, ChipOptics]) -> float:
    """Mosaic-wide median of vignetting x QE, so that point sources see a median response of 1."""
    values = []
    for chip in instrument.chips:
        geometry = RawGeometry.scaled(chip, plan.scale)
        xi, eta = focal_plane(optics[chip.name], geometry.shape)
        ys, xs = geometry.trim
        xi, eta = xi[ys, xs][::4, ::4], eta[ys, xs][::4, ::4]
        values.append((vignetting(xi, eta) * plan.qe[chip.name]).ravel())
    return float(np.median(np.concatenate(values)))


def _flat_levels(plan: NightPlan, model: ChipModel) -> dict[int, float]:
    """Light level of each flat [ADU at unit response] giving the course's raw median on ccd50."""
    levels = {}
    uniform = model.flat_response()
    for exp in plan.exposures:
        if exp.flat_target is None:
            continue
        response = uniform * model.lamp if exp.kind == "domeflat" else uniform
        bias = model.bias_level + exp.bias_drift
        levels[exp.index] = (exp.flat_target - bias) / float(np.median(response))
    return levels


def _bias_offset(exp: Exposure, model: ChipModel, rng: np.random.Generator, drift_gain: float) -> float:
    """Frame bias offset of one chip: the exposure's drift, a chip-dependent fraction of it, and a bit more."""
    if model.chip.index == 1:
        return exp.bias_drift       # ccd50 follows the course's bias medians
    return exp.bias_drift * drift_gain + float(rng.normal(0.0, 0.15))


class _FrameSimulator:
    """Simulates the extensions of one chip for every exposure."""

    def __init__(self, plan: NightPlan, instrument: InstrumentSpec, model: ChipModel, sources: Table,
                 levels: dict[int, float], satellite: _Satellite | None, drift_gain: float):
        self.plan, self.instrument, self.model = plan, instrument, model
        self.sources, self.levels, self.satellite = sources, levels, satellite
        self.drift_gain = drift_gain
        self.uniform = model.flat_response()
        self.point = model.point_response()
        self.pixel_arcsec = instrument.pixel_scale / plan.scale

    def _light(self, exp: Exposure, mask: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """Sources (and a satellite) in ADU per pixel at unit response."""
        shape = self.model.geometry.shape
        light = np.zeros(shape, dtype=np.float32)
        wcs = true_wcs(self.model.optics, exp.ra_true, exp.dec_true, exp.rotation_deg)
        src = self.sources[self.sources["field"] == exp.field]
        x, y = wcs.all_world2pix(np.asarray(src["ra"]), np.asarray(src["dec"]), 0, tolerance=1e-6, maxiter=50)
        margin = 600
        near = (x > -margin) & (x < shape[1] + margin) & (y > -margin) & (y < shape[0] + margin)
        src, x, y = src[near], x[near], y[near]
        zp = self.plan.zero_point
        flux = exp.exptime * 10 ** (-0.4 * (np.asarray(src["mag_R"]) - zp + EXTINCTION * exp.airmass))
        fwhm = exp.seeing / self.pixel_arcsec
        star = np.asarray(src["kind"]) == "star"
        add_stars(light, x[star], y[star], flux[star], fwhm, exp.beta)
        gal = ~star
        if gal.any():
            add_galaxies(light, x[gal], y[gal], flux[gal], np.asarray(src["r_eff_arcsec"])[gal] / self.pixel_arcsec,
                         np.asarray(src["sersic_n"])[gal], np.asarray(src["axis_ratio"])[gal],
                         np.asarray(src["pa_deg"])[gal], fwhm)
        tracks = []
        if self.satellite is not None and exp.filename == self.satellite.filename:
            ra, dec = self.satellite.points()
            tx, ty = wcs.all_world2pix(ra, dec, 0, tolerance=1e-6, maxiter=50)
            on = (tx > -5) & (tx < shape[1] + 5) & (ty > -5) & (ty < shape[0] + 5)
            if on.sum() >= 2:
                first, last = np.flatnonzero(on)[[0, -1]]
                p0, p1 = (float(tx[first]), float(ty[first])), (float(tx[last]), float(ty[last]))
                if add_track(light, mask, p0, p1, SATELLITE_FWHM_PX, SATELLITE_PEAK_ADU):
                    tracks.append({"filename": exp.filename, "chip": self.model.chip.name, "x0": p0[0], "y0": p0[1],
                                   "x1": p1[0], "y1": p1[1], "fwhm_px": SATELLITE_FWHM_PX,
                                   "peak_adu": SATELLITE_PEAK_ADU})
        return light, tracks

    def _signal(self, exp: Exposure, track_mask: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """Charge collected during the exposure [ADU above bias], before any noise."""
        model = self.model
        shape = model.geometry.shape
        tracks: list[dict] = []
        if exp.kind == "bias":
            signal = np.zeros(shape, dtype=np.float32)
        elif exp.kind == "domeflat":
            signal = self.uniform * model.lamp * np.float32(self.levels[exp.index])
        elif exp.kind == "twilightflat":
            signal = self.uniform * np.float32(self.levels[exp.index])
        else:
            signal = self.uniform * np.float32(exp.sky_rate * exp.exptime)
        if exp.field is not None:
            light, tracks = self._light(exp, track_mask)
            signal += light * self.point
            track_mask &= self.point > 0          # light is recorded on the illuminated area only
        signal += model.hot_excess
        return signal, tracks

    def frame(self, exp: Exposure) -> tuple[np.ndarray, np.ndarray, dict, list[dict]]:
        """The raw uint16 extension, its truth bit mask, a truth row and satellite segments."""
        model = self.model
        rng = np.random.default_rng(np.random.SeedSequence([self.plan.seed, 7, exp.index, model.chip.index]))
        track_mask = np.zeros(model.geometry.shape, dtype=bool)
        signal, tracks = self._signal(exp, track_mask)
        offset = _bias_offset(exp, model, rng, self.drift_gain)
        out = read_out(signal, model, offset, exp.exptime, self.instrument.adc_limit, rng)
        bits = (out.cosmic * np.uint8(MASK_BITS["cosmic"]) | out.saturated * np.uint8(MASK_BITS["saturated"])
                | track_mask * np.uint8(MASK_BITS["satellite"])).astype(np.uint8)
        row = {"filename": exp.filename, "chip": model.chip.name, "bias_offset": offset,
               "n_cosmics": out.n_cosmics, "n_saturated": int(out.saturated.sum()),
               "satellite": bool(tracks), "row_jitter": out.jitter}
        return out.raw, bits, row, tracks


def _select(plan: NightPlan, only: Iterable[str] | None) -> list[Exposure]:
    """The exposures to write (all of the night by default)."""
    if only is None:
        return list(plan.exposures)
    return [plan.exposure(name) for name in only]


def _fixed_order(instrument: InstrumentSpec, shuffle: bool | Sequence[str | int]) -> list[int] | None:
    """The chip indices in extension order that ``shuffle_extensions`` names (None for True/False)."""
    if isinstance(shuffle, bool):
        return None
    n = len(instrument.chips)
    if isinstance(shuffle, (str, bytes)) or not isinstance(shuffle, Sequence):
        raise ValueError(f"shuffle_extensions must be True, False or a sequence of the {n} chips (names or "
                         f"indices) in extension order, got {shuffle!r}")
    try:
        order = [instrument.chip(c).index for c in shuffle]
    except LookupError as exc:
        raise ValueError(f"shuffle_extensions: {exc}") from None
    if sorted(order) != list(range(1, n + 1)):
        raise ValueError(f"shuffle_extensions must name each of the {n} chips once, got {list(shuffle)!r}")
    return order


def _extension_orders(plan: NightPlan, instrument: InstrumentSpec, selected: list[Exposure],
                      shuffle: bool | Sequence[str | int]) -> dict[str, list[int]]:
    """Chip indices in extension order for every file whose order is not the instrument's."""
    fixed = _fixed_order(instrument, shuffle)
    if fixed is not None:
        return {exp.filename: fixed for exp in selected}
    if not shuffle:
        return {}
    orders = {}
    n = len(instrument.chips)
    for exp in selected:
        rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 11, exp.index]))
        order = [int(i) + 1 for i in rng.permutation(n)]
        if order == list(range(1, n + 1)):
            order.reverse()
        orders[exp.filename] = order
    return orders


def simulate_night(outdir: str | Path, scale: float = 0.125, seed: int = 1, progress: Progress | None = None, *,
                   only: Iterable[str] | None = None, overwrite: bool = False, extname_style: str = "name",
                   detector_id_key: str | None = DEFAULT_DETECTOR_ID_KEY, primary_detector_ids: bool = True,
                   shuffle_extensions: bool | Sequence[str | int] = False) -> Path:
    """Simulate the course night of 2003-03-03 with WFI, with its truth.

    Parameters
    ----------
    outdir : str or Path
        Folder to write into (created if needed): the raw files
        ``WFI.<DATE-OBS>.fits``, ``refcat/`` and ``truth/`` (read it with :class:`awe.sim.Truth`).
    scale : float
        Chip size factor in (0, 1]: 1 is full size (~4.4 GB), 0.125 makes
        ~288 x 516 pixel chips.  Fluxes in ADU scale with the pixel area, so the
        zero point is ``24.47 + 5 log10(scale)``.
    seed : int
        The night is identical for the same seed (and scale).
    progress : callable, optional
        Called as ``progress(done, total, name)`` after every chip of every file.
    only : iterable of str, optional
        Write only these exposures (file names or DATE-OBS); the truth tables
        still describe the whole night.
    overwrite : bool
        Replace raw files already in ``outdir`` (otherwise refuse).
    extname_style : str
        ``EXTNAME`` of the extensions: ``'name'`` (``ccd50``), ``'upper'``
        (``CCD50``), ``'chip'`` (``CHIP1`` .. ``CHIP8``) or ``'none'``.
    detector_id_key : str or None
        Extension keyword carrying the detector id: ``'HIERARCH ESO DET CHIP1
        ID'`` (default) or ``'HIERARCH ESO DET CHIP ID'``; None writes none.
    primary_detector_ids : bool
        List the detector id of the n-th extension as ``HIERARCH ESO DET CHIPn
        ID`` in the primary header.
    shuffle_extensions : bool or sequence
        Extension order: the instrument's (False), a random order per file
        drawn from the seed (True), or these chips (names or indices) in
        extension order for every file. The pixels do not change.

    Returns
    -------
    Path
        ``outdir``.

    Raises
    ------
    ValueError
        If ``scale`` is not in (0, 1], ``seed`` is negative or a file
        convention option is unknown.
    FileExistsError
        If ``outdir`` already holds raw WFI files and ``overwrite`` is false.
    """
    if not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"scale must be a number in (0, 1] (1 = full size), got {scale!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    check_conventions(extname_style, detector_id_key)
    _fixed_order(get_instrument("WFI"), shuffle_extensions)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    existing = sorted(outdir.glob("WFI.*.fits"))
    if existing and not overwrite:
        raise FileExistsError(f"{outdir} already holds {len(existing)} raw WFI files (e.g. {existing[0].name}); "
                              f"choose an empty folder or pass overwrite=True")
    t_start = time.perf_counter()
    instrument = get_instrument("WFI")
    plan = plan_night(instrument, int(seed), float(scale))
    optics = chip_optics(instrument, plan.scale, plan.seed)
    sources = make_sources(plan.seed)
    selected = _select(plan, only)
    orders = _extension_orders(plan, instrument, selected, shuffle_extensions)
    satellite = _satellite(plan)
    norm = _response_norm(instrument, plan, optics)
    drift_rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 9]))
    drift_gains = {chip.name: (1.0 if chip.index == 1 else float(drift_rng.uniform(0.7, 1.3)))
                   for chip in instrument.chips}
    log.info("simulating %d exposures of the WFI course night at scale %s (seed %d) into %s",
             len(selected), plan.scale, plan.seed, outdir)

    (outdir / "refcat").mkdir(exist_ok=True)
    astrometric_refcat(sources, plan.seed).write(outdir / "refcat" / "astrometric.fits", overwrite=True)
    standard_refcat(sources, plan.seed).write(outdir / "refcat" / "standards.fits", overwrite=True)
    writer = _truthio.TruthWriter(outdir, plan, instrument)
    writer.start_frames(selected)
    for exp in selected:
        start_raw_file(outdir / exp.filename,
                       primary_header(exp, instrument, instrument.chips if primary_detector_ids else None))

    total, done = len(selected) * len(instrument.chips), 0
    frame_rows: list[dict] = []
    chip_rows: list[dict] = []
    tracks: list[dict] = []
    levels: dict[int, float] = {}
    for chip in instrument.chips:
        geometry = RawGeometry.scaled(chip, plan.scale)
        model = build_chip_model(chip, geometry, optics[chip.name], plan.qe[chip.name], norm,
                                 plan.hot_column_chips.get(chip.name, 0), plan.bad_column_chips.get(chip.name, 0),
                                 plan.seed)
        if chip.index == 1:
            levels = _flat_levels(plan, model)
        chip_rows.append(writer.write_chip(model, drift_gains[chip.name]))
        simulator = _FrameSimulator(plan, instrument, model, sources, levels, satellite, drift_gains[chip.name])
        for exp in selected:
            raw, bits, row, segs = simulator.frame(exp)
            header = extension_header(chip, geometry, optics[chip.name], exp, extname_style=extname_style,
                                      detector_id_key=detector_id_key)
            append_extension(outdir / exp.filename, raw, header)
            writer.append_frame_mask(exp, chip.name, bits)
            frame_rows.append(row)
            tracks.extend(segs)
            done += 1
            if progress is not None:
                progress(done, total, f"{exp.filename}[{chip.name}]")
        del model, simulator
    for filename, order in orders.items():  # chips are written in instrument order, then put in the file's order
        reorder_extensions(outdir / filename, order, instrument)
    writer.write_night(chip_rows, frame_rows, tracks, satellite, optics, levels)
    writer.write_sources(sources)
    log.info("simulated night written to %s in %.1f s", outdir, time.perf_counter() - t_start)
    return outdir


def main_sim(outdir: str | Path, scale: float = 0.125, seed: int = 1, progress: Progress | None = None) -> Path:
    """Entry point of ``awe sim OUTDIR [--scale S] [--seed N]``: simulate the night into ``outdir``."""
    return simulate_night(outdir, scale=scale, seed=seed, progress=progress)
