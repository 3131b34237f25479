"""One chip of the detector: bias structure, defects, flat-field response, noise, digitisation.

All images are on the full raw grid of the (possibly shrunk) extension and in
float32.  Everything here is constant through the night except what
:func:`digitise` and friends add per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from awe.instruments import ChipSpec, RawGeometry
from awe.sim._optics import ChipOptics, dome_lamp, focal_plane, illumination, vignetting

__all__ = ["ChipModel", "Readout", "build_chip_model", "read_out", "BIAS_LEVELS", "add_cosmics", "apply_bleeding",
           "row_jitter", "PRESCAN_VARIANCE", "HOT_FRACTION", "COLD_FRACTION", "DEFECT_BITS",
           "AMPLIFIER_COLUMNS", "amplifier_columns"]

# Bias level of every chip on this night [ADU] (ccd50 ~181, the others a few ADU apart).
BIAS_LEVELS = {"ccd50": 181.5, "ccd51": 187.3, "ccd52": 176.9, "ccd53": 184.6,
               "ccd54": 179.2, "ccd55": 190.8, "ccd56": 185.1, "ccd57": 182.4}
# The prescan strip sits this much variance [ADU^2] away from the frame: it makes the
# raw imstat stdev of a bias ~28 ADU as in the course, whatever the scale.
PRESCAN_VARIANCE = 520.0
HOT_FRACTION = 5e-4
COLD_FRACTION = 5e-4
ROW_JITTER_ADU = 2.0
PIXEL_RMS = 0.012
COSMIC_RATE = 400.0 / (2048 * 4096 * 30.0)   # events per pixel per second
COSMIC_READ_S = 10.0                          # extra exposure of every frame during read-out
DEFECT_BITS = {"hot": 1, "hot_column": 2, "cold": 4, "bad_column": 8}
# Static bias structure next to the read-out amplifier (the prescan side, low x) [A]: over this many
# full-size columns (scaled with the chip, at least 8) the columns sit a few ADU above their neighbours.
AMPLIFIER_COLUMNS = 48


@dataclass
class ChipModel:
    """The night-constant truth of one chip.

    Attributes
    ----------
    chip : ChipSpec
    geometry : RawGeometry
    bias_level : float
        Bias of the illuminated area and overscan [ADU].
    prescan_offset : float
        How much lower the prescan columns sit [ADU].
    bias_pattern : ndarray
        Level + fixed 2-D pattern (+ prescan offset, + the columns next to the amplifier), without frame
        drift and row jitter.
    hot_excess : ndarray
        Extra ADU of hot pixels and hot columns (0 elsewhere), in every frame.
    defects : ndarray of uint8
        Bit mask (``DEFECT_BITS``).
    pixel : ndarray
        Pixel-to-pixel response (incl. cold pixels and dead columns).
    vignetting, illumination, lamp : ndarray
        Smooth optical terms.
    qe : float
        Relative sensitivity of the chip.
    norm : float
        Mosaic-wide normalisation of the response.
    hot_columns, bad_columns : list of dict
        ``{'x': column (0-based raw), 'y0', 'y1': rows (0-based, exclusive end), 'value'}``.
    """

    chip: ChipSpec
    geometry: RawGeometry
    optics: ChipOptics
    bias_level: float
    prescan_offset: float
    bias_pattern: np.ndarray
    hot_excess: np.ndarray
    defects: np.ndarray
    pixel: np.ndarray
    vignetting: np.ndarray
    illumination: np.ndarray
    lamp: np.ndarray
    qe: float
    norm: float
    hot_columns: list[dict] = field(default_factory=list)
    bad_columns: list[dict] = field(default_factory=list)

    @property
    def gain(self) -> float:
        return self.chip.gain

    @property
    def read_noise_adu(self) -> float:
        return self.chip.read_noise_e / self.chip.gain

    def point_response(self) -> np.ndarray:
        """Response to the light of point sources: pixel x vignetting x QE / norm, 0 where unlit."""
        response = np.zeros(self.geometry.shape, dtype=np.float32)
        ys, xs = self.geometry.data
        response[ys, xs] = (self.pixel[ys, xs] * self.vignetting[ys, xs]) * np.float32(self.qe / self.norm)
        return response

    def flat_response(self) -> np.ndarray:
        """Response to uniform light (sky, twilight): point response x illumination."""
        return self.point_response() * self.illumination

    def flat_median(self) -> float:
        """Median of the uniform-light response over the trim section (the chip's photometric offset)."""
        return float(np.median(self.flat_response()[self.geometry.trim]))


def amplifier_columns(geometry: RawGeometry, rng: np.random.Generator) -> np.ndarray:
    """Static offsets [ADU] of the illuminated columns next to the read-out amplifier (0 elsewhere).

    Real CCD biases (WFI's too) have it: over the first few tens of columns after the prescan
    the level decays from 3-6 ADU above the rest, with column-to-column steps of
    ~1 ADU and a few single columns 2-5 ADU above their neighbours.  It is the same
    in every frame and over the whole length of each column, so a master bias
    removes it; it is not a defect.
    """
    offsets = np.zeros(geometry.nx, dtype=np.float32)
    width = min(geometry.nx, max(8, round(AMPLIFIER_COLUMNS * geometry.nx / 2048)))
    k = np.arange(width, dtype=np.float64)
    decay = float(rng.uniform(3.0, 6.0)) * np.exp(-k / (width / 4.0))
    steps = rng.normal(0.0, 1.0, width) * np.exp(-k / (width / 2.0))
    spikes = np.zeros(width)
    picked = rng.choice(np.arange(1, width), size=max(2, width // 8), replace=False)
    spikes[picked] = rng.uniform(2.0, 5.0, picked.size)
    offsets[:width] = (decay + steps + spikes).astype(np.float32)
    return offsets


def _bias_pattern(geometry: RawGeometry, level: float, prescan_offset: float, rng: np.random.Generator,
                  readout_at_bottom: bool, amplifier: np.ndarray | None = None) -> np.ndarray:
    """Level plus a weak fixed 2-D pattern (~1-2 ADU) and the ``amplifier`` column offsets (one per
    illuminated column), identical in every frame."""
    ny, nx = geometry.shape
    x = (np.arange(nx, dtype=np.float32) / nx)[None, :]
    y = (np.arange(ny, dtype=np.float32) / ny)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=2).astype(np.float32)
    ripple = 0.8 * np.sin(2 * np.pi * x / 0.37 + phase[0]) * np.sin(2 * np.pi * y / 0.6 + phase[1])
    # a ramp near the read-out rows and a slow gradient along the columns
    from_readout = y if readout_at_bottom else 1.0 - y
    ramp = 2.0 * np.exp(-from_readout / 0.01) + 1.0 * (y - 0.5)
    columns = rng.normal(0.0, 0.3, size=(1, nx)).astype(np.float32)
    pattern = (ripple + ramp + columns).astype(np.float32)
    if amplifier is not None:
        pattern[:, geometry.data[1]] += amplifier[None, :]
    pattern -= np.float32(np.median(pattern[geometry.data]))
    pattern += np.float32(level)
    pattern[:, geometry.prescan_x] -= np.float32(prescan_offset)
    return pattern


def _prescan_offset(geometry: RawGeometry) -> float:
    frac = geometry.n_prescan_x / geometry.shape[1]
    return math.sqrt(PRESCAN_VARIANCE / (frac * (1.0 - frac))) if frac > 0 else 0.0


def _column_segment(rng: np.random.Generator, geometry: RawGeometry, to_bottom: bool) -> tuple[int, int, int]:
    """A column inside the trim section and the rows from a defect to one end of the chip."""
    (ys, _), (_, txs) = geometry.data, geometry.trim
    x = int(rng.integers(txs.start + 3, txs.stop - 3))
    y_defect = int(rng.integers(ys.start + (ys.stop - ys.start) // 4, ys.stop - (ys.stop - ys.start) // 4))
    return (x, ys.start, y_defect) if to_bottom else (x, y_defect, ys.stop)


def build_chip_model(chip: ChipSpec, geometry: RawGeometry, optics: ChipOptics, qe: float, norm: float,
                     n_hot_columns: int, n_bad_columns: int, seed: int, amplifier_structure: bool = True) -> ChipModel:
    """Draw the night-constant truth of one chip (``amplifier_structure``: the bias column structure next to
    the amplifier, see :func:`amplifier_columns`)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3, chip.index]))
    shape = geometry.shape
    ys, xs = geometry.data
    readout_at_bottom = geometry.n_prescan_y >= geometry.n_overscan_y
    level = BIAS_LEVELS.get(chip.name, 180.0 + 2.0 * chip.index % 9)
    prescan_offset = _prescan_offset(geometry)
    # its own random stream, so that switching it leaves every other draw of the chip unchanged
    amplifier = (amplifier_columns(geometry, np.random.default_rng(np.random.SeedSequence([seed, 3, chip.index, 1])))
                 if amplifier_structure else None)
    bias_pattern = _bias_pattern(geometry, level, prescan_offset, rng, readout_at_bottom, amplifier)

    defects = np.zeros(shape, dtype=np.uint8)
    hot_excess = np.zeros(shape, dtype=np.float32)
    n_lit = geometry.nx * geometry.ny
    n_hot = rng.poisson(HOT_FRACTION * n_lit)
    hy = rng.integers(ys.start, ys.stop, n_hot)
    hx = rng.integers(xs.start, xs.stop, n_hot)
    hot_excess[hy, hx] = np.clip(rng.lognormal(math.log(300.0), 0.8, n_hot), 80.0, 3000.0)
    defects[hy, hx] |= DEFECT_BITS["hot"]
    hot_columns = []
    for _ in range(n_hot_columns):
        x, y0, y1 = _column_segment(rng, geometry, to_bottom=readout_at_bottom)
        value = float(rng.uniform(25.0, 120.0))
        hot_excess[y0:y1, x] += np.float32(value)
        defects[y0:y1, x] |= DEFECT_BITS["hot_column"]
        hot_columns.append({"x": x, "y0": y0, "y1": y1, "value": value})

    pixel = np.ones(shape, dtype=np.float32)
    pixel[ys, xs] += rng.normal(0.0, PIXEL_RMS, size=(geometry.ny, geometry.nx)).astype(np.float32)
    n_cold = rng.poisson(COLD_FRACTION * n_lit)
    cy = rng.integers(ys.start, ys.stop, n_cold)
    cx = rng.integers(xs.start, xs.stop, n_cold)
    pixel[cy, cx] = rng.uniform(0.0, 0.5, n_cold).astype(np.float32)
    defects[cy, cx] |= DEFECT_BITS["cold"]
    bad_columns = []
    for _ in range(n_bad_columns):
        # a charge trap: nothing above (read-out at the bottom) or below it gets through
        x, y0, y1 = _column_segment(rng, geometry, to_bottom=not readout_at_bottom)
        value = float(rng.uniform(0.0, 0.08))
        pixel[y0:y1, x] = np.float32(value)
        defects[y0:y1, x] |= DEFECT_BITS["bad_column"]
        bad_columns.append({"x": x, "y0": y0, "y1": y1, "value": value})

    xi, eta = focal_plane(optics, shape)
    return ChipModel(chip=chip, geometry=geometry, optics=optics, bias_level=level, prescan_offset=prescan_offset,
                     bias_pattern=bias_pattern, hot_excess=hot_excess, defects=defects, pixel=pixel,
                     vignetting=vignetting(xi, eta), illumination=illumination(xi, eta), lamp=dome_lamp(xi, eta),
                     qe=qe, norm=norm, hot_columns=hot_columns, bad_columns=bad_columns)


def row_jitter(rng: np.random.Generator, n_rows: int) -> np.ndarray:
    """Per-row bias offsets of one frame (the same along a row, overscan included)."""
    return rng.normal(0.0, ROW_JITTER_ADU, size=n_rows).astype(np.float32)


_CR_STEPS = np.array([(0, 1), (1, 0), (1, 1), (1, -1)])


def add_cosmics(image: np.ndarray, geometry: RawGeometry, exptime: float, rng: np.random.Generator,
                mask: np.ndarray) -> int:
    """Add cosmic-ray hits (1-4 pixel footprints, hundreds to thousands of ADU) to the chip's pixels.

    Returns the number of events; their pixels are flagged in ``mask`` (bool).
    """
    (ys, xs) = geometry.data
    y_lo, y_hi = 0, geometry.shape[0]            # the unlit rows are real pixels too
    n_pix = (y_hi - y_lo) * geometry.nx
    n = int(rng.poisson(COSMIC_RATE * n_pix * (exptime + COSMIC_READ_S)))
    if n == 0:
        return 0
    y = rng.integers(y_lo, y_hi, n)
    x = rng.integers(xs.start, xs.stop, n)
    length = rng.choice([1, 2, 3, 4], size=n, p=[0.35, 0.35, 0.2, 0.1])
    step = _CR_STEPS[rng.integers(0, 4, n)] * rng.choice([-1, 1], size=(n, 1))
    peak = np.clip(rng.lognormal(math.log(600.0), 0.6, n), 150.0, 8000.0)
    for k in range(4):
        use = length > k
        yy = np.clip(y[use] + k * step[use, 0], y_lo, y_hi - 1)
        xx = np.clip(x[use] + k * step[use, 1], xs.start, xs.stop - 1)
        value = peak[use] * (1.0 if k == 0 else rng.uniform(0.3, 1.0, use.sum()))
        np.add.at(image, (yy, xx), value.astype(np.float32))
        mask[yy, xx] = True
    return n


def apply_bleeding(signal: np.ndarray, full_well: float) -> np.ndarray:
    """Clip pixels at ``full_well`` and let the excess charge bleed up and down their column.

    Works in place; returns the boolean mask of saturated and bled pixels.
    """
    over = signal > full_well
    mask = np.zeros(signal.shape, dtype=bool)
    if not over.any():
        return mask
    ny = signal.shape[0]
    for x in np.flatnonzero(over.any(axis=0)):
        col = signal[:, x].astype(np.float64)
        sat = col > full_well
        edges = np.flatnonzero(np.diff(np.concatenate(([0], sat.astype(np.int8), [0]))))
        for a, b in zip(edges[::2], edges[1::2]):
            excess = float(np.sum(col[a:b] - full_well))
            col[a:b] = full_well
            left = _spill(col, range(b, ny), excess / 2.0, full_well)
            left = _spill(col, range(a - 1, -1, -1), excess / 2.0 + left, full_well)
            _spill(col, range(b, ny), left, full_well)
        signal[:, x] = col
        mask[:, x] = col >= full_well
    return mask


def _spill(col: np.ndarray, rows: range, charge: float, full_well: float) -> float:
    """Fill ``rows`` of a column up to ``full_well`` with ``charge``; returns what is left over."""
    if charge <= 0 or len(rows) == 0:
        return max(charge, 0.0)
    idx = np.asarray(rows)
    room = np.maximum(full_well - col[idx], 0.0)
    filled = np.cumsum(room)
    k = int(np.searchsorted(filled, charge))
    if k >= len(idx):
        col[idx] = full_well
        return charge - float(filled[-1])
    col[idx[:k]] = full_well
    col[idx[k]] += charge - (float(filled[k - 1]) if k else 0.0)
    return 0.0


@dataclass
class Readout:
    """A digitised frame and what happened on the way.

    Attributes
    ----------
    raw : ndarray of uint16
    cosmic, saturated : ndarray of bool
        Cosmic-ray pixels; saturated and bled pixels (raw value at the ADC limit).
    n_cosmics : int
    jitter : ndarray
        Per-row bias offsets [ADU].
    """

    raw: np.ndarray
    cosmic: np.ndarray
    saturated: np.ndarray
    n_cosmics: int
    jitter: np.ndarray


def read_out(signal: np.ndarray, model: ChipModel, offset: float, exptime: float, adc_limit: int,
             rng: np.random.Generator) -> Readout:
    """Turn collected charge [ADU] into a raw frame: bleeding, shot and read noise, cosmic rays,
    bias (pattern, frame ``offset``, row jitter), rounding and the ADC limit.  ``signal`` is consumed."""
    geometry = model.geometry
    shape = geometry.shape
    saturated = apply_bleeding(signal, adc_limit - (model.bias_level + offset))
    np.maximum(signal, 0.0, out=signal)
    sigma = np.sqrt(signal / np.float32(model.gain) + np.float32(model.read_noise_adu ** 2))
    signal += rng.standard_normal(shape, dtype=np.float32) * sigma
    del sigma
    cosmic = np.zeros(shape, dtype=bool)
    n_cosmics = add_cosmics(signal, geometry, exptime, rng, cosmic)
    jitter = row_jitter(rng, shape[0])
    signal += model.bias_pattern
    signal += (jitter + np.float32(offset))[:, None]
    signal[saturated] = adc_limit
    np.rint(signal, out=signal)
    np.clip(signal, 0, adc_limit, out=signal)
    raw = signal.astype(np.uint16)
    saturated |= raw >= adc_limit
    return Readout(raw=raw, cosmic=cosmic, saturated=saturated, n_cosmics=n_cosmics, jitter=jitter)
