"""Calibration tasks (spec sections 6-8): master bias, hot pixels, dome flat, cold pixels, twilight flat, master flat.

::

    BiasTask(instrument='WFI', chip='ccd50', overscan=6, commit=1).execute()
    HotPixelsTask(instrument='WFI', chip='ccd50', date='2003-03-03', commit=1).execute()
    DomeFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1).execute()
    ColdPixelsTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1).execute()
    TwilightFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1).execute()
    MasterFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1).execute()

Each task selects its raw frames through the query language
(``RawBiasFrame.select(...)`` or ``raw_filenames=``) and its calibrations with
:func:`~awe.tasks.base.select_calibration` (valid, good quality, validity
covering the frames, the newest wins; the log says which was chosen and why the
others were not), runs the pure algorithms of :mod:`awe.image`, builds the
product with its lineage and parameters, runs its quality checks (setting
``quality_flags``, and recording every check with its value, limit and
parameter in ``qc_report``: a refused calibration's error names them),
writes the file to the working folder and returns ``[(product, path)]``;
``execute()`` commits it when ``commit=1``.

Raw frames are overscan-corrected and trimmed one at a time into float32
files in a temporary folder and combined from there in blocks of rows, so the
memory used does not grow with the number of frames.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from awe.db.query import night_of, observing_night
from awe.db.schema import DBObject
from awe.db.session import current_session
from awe.image.combine import CombineResult, Combiner
from awe.image.flat import BiasPair, central_section, combine_flats, flat_level, flat_qc, gain_from_pairs, \
    master_flat, normalise_flat_qc, read_noise_from_pairs
from awe.image.overscan import OverscanCorrector
from awe.image.pixels import cold_pixels, hot_pixels
from awe.image.stats import difference_stdev, imstat, sigma_clipped_stats, subwin_stats
from awe.instruments import RawGeometry, get_instrument
from awe.model._io import read_header, read_image
from awe.model.calibration import (BiasFrame, CalibrationFrame, ColdPixelMap, DomeFlatFrame, FlatFrame,
                                   HotPixelMap, MasterFlatFrame, PixelMap, TwilightFlatFrame)
from awe.model.entities import Chip, Filter, Instrument, lookup_entity
from awe.model.frames import (BaseFrame, QualityFlags, RawBiasFrame, RawDomeFlatFrame, RawFrame,
                              RawTwilightFlatFrame)
from awe.pars import ParameterError
from awe.tasks.base import Check, Input, Task, TaskError, apply_checks, as_list

__all__ = ["BiasTask", "HotPixelsTask", "DomeFlatTask", "ColdPixelsTask", "TwilightFlatTask", "MasterFlatTask",
           "overscan_corrected", "raw_geometry", "RawFile", "RowFile", "stage_corrected", "combine_biases",
           "bias_read_noise", "Check", "apply_checks"]  # Check, apply_checks: of awe.tasks.base

#: Sub-window grid (y, x) of the flatness QC figures.
SUBWIN_GRID = (4, 4)
#: Fewest raw biases a master bias is made of (BiasFrame's parameters are fixed by the spec's Pars tree).
MINIMUM_BIAS_FRAMES = 3


# ============================================================================ pixels of raw frames
def raw_geometry(frame: RawFrame, header: Any) -> RawGeometry:
    """The sections (prescan, overscan, trim) of a raw chip frame, from its header and instrument."""
    chip = get_instrument(frame.instrument.name).chip(frame.chip.name)
    try:
        return RawGeometry.from_header(header, chip)
    except ValueError as exc:
        raise TaskError(f"{frame.filename}: {exc}") from None


@dataclass(frozen=True)
class RawFile:
    """A raw chip file on disk with its geometry: what the overscan correction needs."""

    path: Path
    geometry: RawGeometry
    name: str

    @classmethod
    def of(cls, frame: RawFrame) -> "RawFile":
        """The local copy of a raw frame's file (fetched from the data storage) and its geometry."""
        path = frame.local_path()
        return cls(Path(path), raw_geometry(frame, read_header(path)), frame.filename)

    @property
    def trimmed_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the trimmed frame."""
        rows, columns = self.geometry.trim
        ny, nx = self.geometry.shape
        return len(range(*rows.indices(ny))), len(range(*columns.indices(nx)))

    def corrected(self, mode: int, rows: slice | None = None) -> np.ndarray:
        """The overscan-corrected (OVERSCAN_CORRECTION ``mode``), trimmed float32 pixels (``rows``: only those rows
        of the trimmed frame)."""
        g = self.geometry
        raw = read_image(self.path)
        if raw.shape != g.shape:
            raise TaskError(f"{self.name}: the image is {raw.shape[1]} x {raw.shape[0]} pixels, its header "
                            f"describes {g.shape[1]} x {g.shape[0]}; re-ingest the raw file")
        try:
            corrector = OverscanCorrector(g.overscan_x if g.n_overscan_x else None, g.trim, mode,
                                          prescan_cols=g.prescan_x if g.n_prescan_x else None)
            return corrector(raw, rows=rows)
        except ValueError as exc:
            raise TaskError(f"{self.name}: overscan correction {mode} failed: {exc}") from None


def overscan_corrected(frame: RawFrame, mode: int) -> np.ndarray:
    """The overscan-corrected, trimmed float32 pixels of a raw chip frame.

    Parameters
    ----------
    frame : RawFrame
        A raw frame (its file is fetched from the data storage).
    mode : int
        OVERSCAN_CORRECTION method (see :class:`awe.image.overscan.OverscanMode`).
    """
    return RawFile.of(frame).corrected(mode)


class RowFile:
    """A float32 image kept in a plain binary file and read back in blocks of rows.

    A row reader for :func:`awe.image.combine.combine`: calling it with a
    ``slice`` of rows returns those rows. Plain reads (no memory map), so the
    pages read do not stay in the process's memory.
    """

    def __init__(self, path: str | Path, image_shape: tuple[int, int]) -> None:
        self.path = Path(path)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))

    @classmethod
    def write(cls, path: str | Path, image: np.ndarray) -> "RowFile":
        """Store ``image`` (as float32) in ``path``."""
        np.ascontiguousarray(image, dtype=np.float32).tofile(path)
        return cls(path, image.shape)

    def __call__(self, rows: slice) -> np.ndarray:
        ny, nx = self.image_shape
        start, stop, step = rows.indices(ny)
        if step != 1:
            raise ValueError(f"RowFile reads contiguous rows only, not {rows}")
        count = max(stop - start, 0)
        with open(self.path, "rb") as fh:
            fh.seek(start * nx * 4)
            block = np.fromfile(fh, dtype=np.float32, count=count * nx)
        return block.reshape(count, nx)

    def read(self) -> np.ndarray:
        """The whole image."""
        return self(slice(None))


def stage_corrected(raws: Sequence[RawFile], mode: int, folder: str | Path,
                    measure: Callable[[int, np.ndarray], Any] | None = None) -> list[RowFile]:
    """Overscan-correct and trim each raw file into a float32 file in ``folder``, one frame in memory at a time.

    ``measure(k, pixels)``, when given, is called with each corrected frame while it is in memory.

    Raises
    ------
    TaskError
        If the frames do not all have the same trimmed shape.
    """
    staged: list[RowFile] = []
    for k, raw in enumerate(raws):
        data = raw.corrected(mode)
        if staged and data.shape != staged[0].image_shape:
            raise TaskError(f"{raw.name} is {data.shape[1]} x {data.shape[0]} pixels after trimming, "
                            f"{raws[0].name} {staged[0].image_shape[1]} x {staged[0].image_shape[0]}: "
                            "frames of different binning or window cannot be combined")
        staged.append(RowFile.write(Path(folder) / f"frame{k:04d}.f32", data))
        if measure is not None:
            measure(k, data)
        del data
    return staged


def combine_biases(raws: Sequence[RawFile], mode: int, sigma: float,
                   folder: str | Path) -> tuple[CombineResult, list[RowFile]]:
    """The master bias of raw bias files: overscan-correct each into ``folder``, then a streaming
    sigma-clipped mean (``sigma`` around the median, 'pooled' width) in blocks of rows.

    Returns the combination and the staged corrected frames (for the read noise).
    """
    staged = stage_corrected(raws, mode, folder)
    result = Combiner(method="clipped_mean", sigma=sigma)(staged, shape=staged[0].image_shape)
    return result, staged


#: full-size detector pixels (x, y) at the centre of the chip whose bias pairs give the read noise: 2 million
#: differences measure it to 0.05 % (a chip shrunk 8 times, whose section would be too small, uses the whole frame)
READ_NOISE_SECTION = (2048, 1024)


def bias_read_noise(frames: Sequence[Any], section: tuple[slice, slice] | None = None) -> float:
    """Read noise [ADU] from differences of pairs of (overscan-corrected) biases: the median over pairs.

    Each difference has its row medians removed first, so row-to-row bias
    jitter and the noise of a per-row overscan correction do not count.
    ``section``: the part of the frames to use (default: all).
    """
    estimates = []
    for a, b in zip(frames[0::2], frames[1::2]):
        first, second = _image(a), _image(b)
        if section is not None:
            first, second = first[section], second[section]
        rows = np.median(first - second, axis=1)
        estimates.append(read_noise_from_pairs(first - rows[:, None].astype(np.float32), second))
    if not estimates:
        raise ValueError("the read noise needs at least two bias frames")
    return float(np.median(estimates))


def _image(frame: Any) -> np.ndarray:
    return frame.read() if isinstance(frame, RowFile) else np.asarray(frame, dtype=np.float32)


# ============================================================================ the shared shell
@dataclass
class _Target:
    """What a calibration is chosen for when there is no raw frame: a chip (and filter) on a night."""

    instrument: Instrument
    chip: Chip
    filter: Filter | None
    DATE_OBS: _dt.datetime | None
    filename: str


_COMMON_SELECTION = {
    "instrument": "instrument name ('WFI'); optional when the database knows only one",
    "chip": "chip name ('ccd50')",
    "date": "observing night ('2003-03-03': from local noon that day to local noon the next)",
}
_RAW_SELECTION = {
    "raw_filenames": "raw chip files to use instead of selecting by instrument/chip/date",
    "valid_before": "nights the validity range extends before the observing nights of the raw frames (default 0)",
    "valid_after": "nights the validity range extends after the observing nights of the raw frames (default 0)",
}


class _CalibrationTask(Task):
    """Selection, validity, scaling and output helpers shared by the calibration tasks (one chip of one night)."""

    unit = "per_chip"

    product: ClassVar[type[CalibrationFrame]]
    #: the step in the product's file name and the product's OBJECT
    step: ClassVar[str] = ""
    object_name: ClassVar[str] = ""

    # ------------------------------------------------------------ entities and nights
    def _instrument(self) -> Instrument:
        name = self.selection_values.get("instrument")
        found = list(Instrument.name == name) if name else list(Instrument.all())
        if name and not found:
            raise TaskError(f"no instrument {name!r} in the database: ingest its raw files first (awe ingest FILES)")
        if len(found) != 1:
            raise TypeError(f"{type(self).__name__} needs instrument= (the database knows "
                            f"{sorted(i.name for i in found)})")
        return found[0]

    def _target(self, use_filter: bool = False) -> _Target:
        """The chip (and filter) and the middle of the night the task is about."""
        self.require("chip")
        instrument = self._instrument()
        try:
            chip: Any = lookup_entity(Chip, instrument, self.selection_values["chip"])
            filt: Any = lookup_entity(Filter, instrument, self.filter) if use_filter and self.filter else None
        except LookupError as exc:
            raise TaskError(str(exc)) from None
        when = None
        if self.date is not None:
            start, end = observing_night(self.date, instrument.longitude)
            when = start + (end - start) / 2
        label = f"{instrument.name} {chip.name}" + (f" {filt.name}" if filt else "") + \
            (f" night {self.date}" if self.date else "")
        return _Target(instrument, chip, filt, when, label)

    # ------------------------------------------------------------ raw frames
    def _raw_frames(self, cls: type[RawFrame], what: str, use_filter: bool) -> list[RawFrame]:
        """The valid raw frames of one chip (and filter) on one night, or those named by ``raw_filenames``."""
        names = as_list(self.selection_values.get("raw_filenames"))
        frames = self._raws_by_name(cls, names, what) if names else self._raws_by_selection(cls, what, use_filter)
        self._check_consistent(frames, what, use_filter)
        return sorted(frames, key=lambda f: (f.DATE_OBS or _dt.datetime.min, f.filename))

    def _raws_by_name(self, cls: type[RawFrame], names: list[str], what: str) -> list[RawFrame]:
        found = {f.filename: f for f in cls.filename.in_(names)}
        missing = [n for n in names if n not in found]
        if missing:
            others = {o.filename: type(o).__name__ for o in DBObject.filename.in_(missing)}
            detail = "; ".join(f"{n} is a {others[n]}, not a {cls.__name__}" if n in others else
                               f"{n} is not in the database (ingest it first: awe ingest FILE)" for n in missing)
            raise TaskError(f"{type(self).__name__}: cannot use raw_filenames: {detail}")
        frames = [found[n] for n in dict.fromkeys(names)]
        flagged = [f for f in frames if f.quality_flags or f.is_valid == 0]
        for f in flagged:
            self.log.warning("skipping %s: %s", f.filename, _flag_text(f))
        good = [f for f in frames if f not in flagged]
        if not good:
            raise TaskError(f"{type(self).__name__}: all {len(frames)} {what} given are flagged bad ("
                            + "; ".join(f"{f.filename}: {_flag_text(f)}" for f in frames)
                            + "); choose other frames, or set is_valid=1 and quality_flags=0 on those you trust")
        return good

    def _raws_by_selection(self, cls: type[RawFrame], what: str, use_filter: bool) -> list[RawFrame]:
        if self.selection_values.get("chip") is None:
            raise TypeError(f"{type(self).__name__} needs chip= (or raw_filenames=); see help({type(self).__name__})")
        if use_filter and self.filter is None:
            raise TypeError(f"{type(self).__name__} needs filter= (e.g. filter='#844') or raw_filenames=")
        target = self._target(use_filter)  # checks the names
        instrument, filt = target.instrument, self.filter if use_filter else None
        frames = list(cls.select(instrument=instrument.name, chip=self.chip, filter=filt, date=self.date))
        if not frames:
            where = (f"{instrument.name} {self.chip}" + (f" in filter {filt}" if filt else "")
                     + (f" on the night of {self.date}" if self.date else ""))
            raise TaskError(f"{type(self).__name__}: no valid {what} of {where}: "
                            f"{self._why_none(cls, instrument, what, filt)}")
        if self.date is None:
            frames = self._latest_night(frames, instrument, what)
        from awe.db.audit import left_out_notes  # frames flagged by someone else, or on the exclusion list
        every = (cls.instrument.name == instrument.name) & (cls.chip.name == self.chip)
        if filt is not None:
            every &= (cls.filter.name == filt) | (cls.filter.eso_name == filt)
        nights = {night_of(f.DATE_OBS, instrument.longitude) for f in frames if f.DATE_OBS}
        others = [f for f in every if f.DATE_OBS and night_of(f.DATE_OBS, instrument.longitude) in nights]
        for note in left_out_notes(current_session(), others, frames):
            self.log.warning("%s: left out %s", type(self).__name__, note)
        return frames

    def _why_none(self, cls: type[RawFrame], instrument: Instrument, what: str, filt: str | None) -> str:
        """Why a selection found nothing: no frames at all, other filters, other nights, or all flagged."""
        every = list((cls.instrument.name == instrument.name) & (cls.chip.name == self.chip))
        if not every:
            return "there are none at all; ingest the raw files first (awe ingest FILES)"
        if filt is not None:
            matching = [f for f in every if f.filter is not None and filt in (f.filter.name, f.filter.eso_name)]
            if not matching:
                filters = sorted({f.filter.name for f in every if f.filter is not None})
                return f"there are {what} in filter(s) {filters} only; give one of those as filter="
            every = matching
        if self.date is not None:
            start, end = observing_night(self.date, instrument.longitude)
            nights = sorted({str(night_of(f.DATE_OBS, instrument.longitude)) for f in every if f.DATE_OBS})
            every = [f for f in every if f.DATE_OBS and start <= f.DATE_OBS < end]
            if not every:
                return f"there are {what} on the night(s) {nights} only; give one of those as date="
        return (f"all {len(every)} are flagged bad (" + "; ".join(f"{f.filename}: {_flag_text(f)}" for f in every)
                + "); set is_valid=1 and quality_flags=0 on those you trust, or ingest better frames")

    def _latest_night(self, frames: list[RawFrame], instrument: Instrument, what: str) -> list[RawFrame]:
        nights: dict[_dt.date, list[RawFrame]] = {}
        for f in frames:
            nights.setdefault(night_of(f.DATE_OBS, instrument.longitude), []).append(f)
        latest = max(nights)
        if len(nights) > 1:
            self.log.info("no date= given: using the %d %s of the night of %s, the latest of the nights %s "
                          "(give date= for another)", len(nights[latest]), what, latest,
                          [str(n) for n in sorted(nights)])
        return nights[latest]

    def _check_consistent(self, frames: list[RawFrame], what: str, use_filter: bool) -> None:
        """One instrument and chip (and filter) for all frames, matching the keywords given."""
        def names(attr: str) -> set:
            return {getattr(getattr(f, attr), "name", None) for f in frames}

        wanted = {"instrument": self.selection_values.get("instrument"), "chip": self.selection_values.get("chip")}
        if use_filter:
            wanted["filter"] = self.filter
        for attr, want in wanted.items():
            have = names(attr)
            if len(have) > 1:
                raise TaskError(f"{type(self).__name__}: the {what} belong to different {attr}s "
                                f"{sorted(map(str, have))}; give frames of one {attr}")
            if want is not None and have and next(iter(have)) != want:
                if attr == "filter" and any(f.filter is not None and f.filter.eso_name == want for f in frames):
                    continue
                raise TaskError(f"{type(self).__name__}: {attr}={want!r} was asked for but the {what} are of "
                                f"{attr} {next(iter(have))!r}")

    def _require_frames(self, frames: list[RawFrame], minimum: int, what: str, parameter: str) -> None:
        if len(frames) < minimum:
            raise TaskError(f"{type(self).__name__}: {len(frames)} {what} ({[f.filename for f in frames]}) are too "
                            f"few; at least {minimum} are needed ({parameter}); ingest more or give raw_filenames=")

    # ------------------------------------------------------------ validity, sizes, output
    def _validity(self, frames: Sequence[BaseFrame]) -> tuple[_dt.datetime, _dt.datetime]:
        """From local noon before the first observing night of the frames to local noon after the last,
        extended by ``valid_before``/``valid_after`` nights."""
        longitude = frames[0].instrument.longitude
        nights = sorted({night_of(f.DATE_OBS, longitude) for f in frames})
        before = float(self.selection_values.get("valid_before") or 0)
        after = float(self.selection_values.get("valid_after") or 0)
        if before < 0 or after < 0:
            raise ValueError(f"valid_before and valid_after are numbers of nights >= 0, not {before}, {after}")
        start = observing_night(nights[0], longitude)[0] - _dt.timedelta(days=before)
        end = observing_night(nights[-1], longitude)[1] + _dt.timedelta(days=after)
        return start, end

    @staticmethod
    def _span(*products: CalibrationFrame) -> dict[str, _dt.datetime | None]:
        """The validity of a product made from calibrations: from the earliest start to the latest end."""
        starts = [p.timestamp_start for p in products if p.timestamp_start is not None]
        ends = [p.timestamp_end for p in products if p.timestamp_end is not None]
        return {"timestamp_start": min(starts) if starts else None, "timestamp_end": max(ends) if ends else None}

    @staticmethod
    def _scaled(pixels: int, frame: BaseFrame, shape: tuple[int, int]) -> int:
        """A length in full-size pixels converted to pixels of a trimmed image of ``shape``."""
        chip = get_instrument(frame.instrument.name).chip(frame.chip.name)
        factor = shape[1] / (chip.trim[1] - chip.trim[0] + 1)
        return max(1, int(round(pixels * factor)))

    def _temporary(self) -> tempfile.TemporaryDirectory:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=f".awe-{type(self).__name__}-", dir=self.workdir)

    def _new(self, inputs: dict[str, Any], template: BaseFrame, **attributes: Any) -> Any:
        """A new product of this task's class (typed Any: each subclass makes its own class)."""
        return self.new_product(self.product, inputs, template=template, step=self.step, OBJECT=self.object_name,
                                **attributes)

    def _finish(self, product: CalibrationFrame, data: np.ndarray, checks: Sequence[Check],
                header: dict[str, Any], dtype: Any = np.float32,
                stats: Any = None) -> list[tuple[DBObject, Path | None]]:
        """Statistics (``stats``: the ``imstat`` of ``data`` measured already), QC, the file in the working folder
        and the QA figure."""
        product.imstat = stats if stats is not None else imstat(data)
        apply_checks(product, checks, self.log)
        cards = {
            "OBJECT": (product.OBJECT or "", "what this calibration is"),
            "INSTRUME": (product.instrument.name, "instrument"),
            "CHIPID": (product.chip.name, "chip"),
            "FILTER": (product.filter.name if product.filter else "", "filter (Astro-WISE id)"),
            "DATE-OBS": (product.DATE_OBS.isoformat() if product.DATE_OBS else "", "start of the first raw frame"),
            "NCOMBINE": (product.nframes or 0, "raw frames combined"),
            "OVSCCORR": (product.overscan_correction if product.overscan_correction is not None else -1,
                         "OVERSCAN_CORRECTION method"),
            "QUALFLAG": (product.quality_flags, "quality flags (0 = fine)"),
        }
        cards.update(header)
        path = self.write_product(product, data, cards, dtype=dtype)
        self._figure(product)
        return [(product, path)]

    def _reuse(self, product: CalibrationFrame) -> list[tuple[DBObject, Path | None]] | None:
        found = self.existing(product)
        if found is None:
            return None
        self._figure(found)
        return [(found, None)]

    def _figure(self, product: CalibrationFrame) -> None:
        self.save_figure(product, lambda path: product.inspect(path=path))

    def _flat_checks(self, product: FlatFrame, flat: np.ndarray, bad: np.ndarray | None, p: Any,
                     normalise: bool = False) -> tuple[np.ndarray, list[Check], Any]:
        """Flatness figures of a normalised flat (stored on the product) and their checks; with ``normalise``
        the flat is normalised first (:func:`~awe.image.flat.normalise_flat_qc`: one pass over the good pixels).

        Returns the (normalised) flat, the checks and its ``imstat`` when measured with the figures (else None).
        """
        scale = self._scaled(256, product, flat.shape)
        if normalise:
            flat, qc = normalise_flat_qc(flat, mask=bad, grid=SUBWIN_GRID, scale_px=scale)
        else:
            qc = flat_qc(flat, mask=bad, grid=SUBWIN_GRID, scale_px=scale)
        product.flat_stdev, product.flatness, product.large_scale_rms = qc.stdev, qc.flatness, qc.large_scale_rms
        return flat, [Check("stdev", qc.stdev, p.MAXIMUM_STDEV, "MAXIMUM_STDEV", QualityFlags.TOO_NOISY),
                      Check("sub-window flatness", qc.flatness, p.MAXIMUM_SUBWIN_FLATNESS,
                            "MAXIMUM_SUBWIN_FLATNESS", QualityFlags.NOT_FLAT)], qc.imstat

    def _overscan_check(self, mode: int) -> Callable[[Any], str | None]:
        def check(bias: Any) -> str | None:
            if bias.overscan_correction != mode:
                return (f"made with OVERSCAN_CORRECTION={bias.overscan_correction}, but this task uses {mode}: a "
                        f"master bias must be overscan-corrected like the frames it is subtracted from; make one "
                        f"with BiasTask(..., overscan={mode}) or use overscan={bias.overscan_correction} here")
            return None
        return check


def _flag_text(frame: DBObject) -> str:
    parts = []
    if frame.quality_flags:
        parts.append(f"quality_flags={frame.quality_flags} {QualityFlags.describe(frame.quality_flags)}")
    if frame.is_valid == 0:
        parts.append("is_valid=0")
    return ", ".join(parts) or "fine"


# ============================================================================ bias
class BiasTask(_CalibrationTask):
    """Make a master bias: overscan-correct and trim raw biases, sigma-clipped mean, QC, read noise.

    ``BiasTask(instrument='WFI', chip='ccd50', overscan=6, commit=1)``: the
    raw biases of the chip's latest night (or of ``date=``, or ``raw_filenames=``).
    At least 3 raw biases are needed.
    """

    products = (BiasFrame,)
    product = BiasFrame
    inputs = (Input(RawBiasFrame, "raw_bias_frames", kind="raw"),)
    algorithm_modules = ("awe.image.combine", "awe.image.overscan", "awe.image.flat", "awe.image.stats",
                         "awe.tasks.base", "awe.tasks.calibration")
    version = "2"  # 2: read noise from the central READ_NOISE_SECTION of the bias pairs (was the whole frame)
    step, object_name = "Bias", "MASTER BIAS"
    selection = {**_COMMON_SELECTION, **_RAW_SELECTION}
    shortcuts = {"overscan": ("BiasFrame", "process_params", "OVERSCAN_CORRECTION")}

    def make(self) -> list[tuple[DBObject, Path | None]]:
        p = self.params(BiasFrame)
        raws = self._raw_frames(RawBiasFrame, "raw biases", use_filter=False)
        self._require_frames(raws, MINIMUM_BIAS_FRAMES, "raw biases", "BiasTask.MINIMUM_BIAS_FRAMES")
        start, end = self._validity(raws)
        product = self._new({"raw_bias_frames": raws}, raws[0], filter=None,
                            overscan_correction=p.OVERSCAN_CORRECTION, nframes=len(raws),
                            timestamp_start=start, timestamp_end=end)
        reused = self._reuse(product)
        if reused:
            return reused
        self.log.info("combining %d raw biases with OVERSCAN_CORRECTION=%d, SIGMA_CLIP=%g: %s", len(raws),
                      p.OVERSCAN_CORRECTION, p.SIGMA_CLIP, [f.filename for f in raws])
        with self._temporary() as tmp:
            result, staged = combine_biases([RawFile.of(f) for f in raws], p.OVERSCAN_CORRECTION, p.SIGMA_CLIP, tmp)
            section = central_section(staged[0].image_shape, READ_NOISE_SECTION, _binning(raws[0]))
            if section is not None and _pixels(section) < MINIMUM_GAIN_PIXELS:
                section = None
            product.read_noise_adu = bias_read_noise(staged, section)
        master = result.data
        product.n_rejected = result.n_rejected
        self.log.info("master bias: %d values clipped, read noise %.3f ADU", result.n_rejected, product.read_noise_adu)
        return self._finish(product, master, self._qc(product, master, p),
                            {"RDNOISE": (product.read_noise_adu, "read noise from bias pairs [ADU]")})

    def _qc(self, product: BiasFrame, master: np.ndarray, p: Any) -> list[Check]:
        stats = sigma_clipped_stats(master, sigma=p.SIGMA_CLIP)
        with np.errstate(invalid="ignore"):
            outliers = np.abs(master - np.float32(stats.median)) > p.SIGMA_CLIP * stats.stdev
        sub = subwin_stats(master, SUBWIN_GRID, mask=outliers)
        product.clipped_mean, product.clipped_stdev = stats.mean, stats.stdev
        product.subwin_flatness, product.subwin_stdev = sub.flatness, sub.max_stdev
        product.stdev_difference = self._stdev_difference(product, master)
        return [
            Check("|clipped mean|", abs(stats.mean), p.MAXIMUM_ABS_MEAN, "MAXIMUM_ABS_MEAN", QualityFlags.WRONG_LEVEL),
            Check("clipped stdev", stats.stdev, p.MAXIMUM_STDEV, "MAXIMUM_STDEV", QualityFlags.TOO_NOISY),
            Check("stdev of the difference with the previous master bias", product.stdev_difference,
                  p.MAXIMUM_STDEV_DIFFERENCE, "MAXIMUM_STDEV_DIFFERENCE", QualityFlags.DIFFERS_FROM_PREVIOUS),
            Check("sub-window flatness", sub.flatness, p.MAXIMUM_SUBWIN_FLATNESS, "MAXIMUM_SUBWIN_FLATNESS",
                  QualityFlags.NOT_FLAT),
            Check("largest sub-window stdev", sub.max_stdev, p.MAXIMUM_SUBWIN_STDEV, "MAXIMUM_SUBWIN_STDEV",
                  QualityFlags.TOO_NOISY),
        ]

    def _stdev_difference(self, product: BiasFrame, master: np.ndarray) -> float | None:
        """Stdev of this master minus the previous valid one of the chip (same overscan method), over every
        pixel but the defects both share (:func:`awe.image.stats.difference_stdev`: unclipped, so it cannot
        collapse when the two share most of their raw biases, and a change in part of the chip shows)."""
        query = ((BiasFrame.instrument.name == product.instrument.name) & (BiasFrame.chip.name == product.chip.name)
                 & (BiasFrame.quality_flags == 0) & (BiasFrame.is_valid != 0)
                 & (BiasFrame.overscan_correction == product.overscan_correction)
                 & (BiasFrame.provenance != product.provenance) & (BiasFrame.DATE_OBS <= product.DATE_OBS))
        previous = query.max("DATE_OBS")
        if previous is None:
            self.log.info("no previous valid master bias of %s to compare with", product.chip.name)
            return None
        old = previous.load()
        if old.shape != master.shape:
            self.log.info("previous master bias %s has another shape %s; not compared", previous.filename, old.shape)
            return None
        value = difference_stdev(master, old)
        self.log.info("compared with the previous master bias %s: stdev of the difference %.3f ADU (pixels "
                      "that are defects in both left out)", previous.filename, value)
        return value


# ============================================================================ hot pixels
class HotPixelsTask(_CalibrationTask):
    """Make a hot pixel map from the master bias valid on ``date``: pixels n-sigma above their local bias
    structure (row running median plus the column's own offset) and hot columns from a defect to one end."""

    products = (HotPixelMap,)
    product = HotPixelMap
    inputs = (Input(BiasFrame, "bias"),)
    algorithm_modules = ("awe.image.pixels", "awe.tasks.base", "awe.tasks.calibration", "awe.image.stats")
    step, object_name = "Hot", "HOT PIXELS"
    selection = dict(_COMMON_SELECTION)

    def make(self) -> list[tuple[DBObject, Path | None]]:
        p = self.params(HotPixelMap)
        target = self._target()
        bias = self.calibration("bias", target)
        product = self._new({"bias": bias}, bias, filter=None,
                            overscan_correction=bias.overscan_correction, nframes=bias.nframes, **self._span(bias))
        reused = self._reuse(product)
        if reused:
            return reused
        if p.ROW_WINDOW < 3 or not (p.THRESHOLD > 0 and p.COLUMN_THRESHOLD > 0):
            raise ParameterError(f"HotPixelMap.process_params: ROW_WINDOW must be >= 3 columns and THRESHOLD, "
                                 f"COLUMN_THRESHOLD > 0 sigma, got {p.ROW_WINDOW}, {p.THRESHOLD}, "
                                 f"{p.COLUMN_THRESHOLD}; see Pars(HotPixelsTask).show()")
        data = bias.load()
        result = hot_pixels(data, nsigma=p.THRESHOLD, column_nsigma=p.COLUMN_THRESHOLD, width=p.ROW_WINDOW)
        mask = result.mask
        product.n_bad_pixels, product.bad_fraction = result.n_hot, result.n_hot / mask.size
        product.bad_columns, product.threshold = result.hot_columns, result.threshold
        self.log.info("%d hot pixels (%.4f %%) above %.2f ADU, hot columns (x[rows]) %s", result.n_hot,
                      100 * product.bad_fraction, result.threshold, [f"{x}[{y0}:{y1}]" for x, y0, y1 in result.runs])
        checks = [Check("hot pixel fraction", product.bad_fraction, p.MAXIMUM_FRACTION, "MAXIMUM_FRACTION",
                        QualityFlags.TOO_NOISY)]
        return self._finish(product, mask.astype(np.uint8), checks,
                            {"NBAD": (result.n_hot, "hot pixels (value 1)")}, dtype=np.uint8)


# ============================================================================ flats
class _FlatTask(_CalibrationTask):
    """Combine raw flats: overscan-correct, de-bias, scale to the median, clipped mean, normalise, QC, gain."""

    raw_class: ClassVar[type[RawFrame]]
    raw_role: ClassVar[str]
    what: ClassVar[str]
    uses_cold_pixels: ClassVar[bool] = False

    def make(self) -> list[tuple[DBObject, Path | None]]:
        p = self.params(self.product)
        mode = p.OVERSCAN_CORRECTION
        raws = self._raw_frames(self.raw_class, self.what, use_filter=True)
        self._require_frames(raws, p.MINIMUM_FRAMES, self.what, f"{self.product.__name__}.process_params."
                                                                  "MINIMUM_FRAMES")
        first = raws[0]
        bias = self.calibration("bias", first, check=self._overscan_check(mode), overscan=mode)
        inputs: dict[str, Any] = {self.raw_role: raws, "bias": bias,
                                  "hot_pixels": self.calibration("hot_pixels", first)}
        if self.uses_cold_pixels:
            inputs["cold_pixels"] = self.calibration("cold_pixels", first)
        start, end = self._validity(raws)
        product = self._new(inputs, first, overscan_correction=mode, nframes=len(raws),
                            timestamp_start=start, timestamp_end=end)
        reused = self._reuse(product)
        if reused:
            return reused
        bias_data = bias.load()
        bad = _union_mask([m for role, m in inputs.items() if role.endswith("_pixels") and m is not None])
        self.log.info("combining %d %s with OVERSCAN_CORRECTION=%d, SIGMA_CLIP=%g, master bias %s: %s", len(raws),
                      self.what, mode, p.SIGMA_CLIP, bias.filename, [f.filename for f in raws])
        raw_files = [RawFile.of(f) for f in raws]
        frame_levels: dict[int, float] = {}

        def level(k: int, data: np.ndarray) -> None:  # each frame's level while it is in memory
            if data.shape == bias_data.shape:
                frame_levels[k] = flat_level(data, bias_data, what=f"flat frame {k}")

        with self._temporary() as tmp:
            staged = stage_corrected(raw_files, mode, tmp, measure=level)
            if staged[0].image_shape != bias_data.shape:
                raise TaskError(f"the {self.what} are {staged[0].image_shape} after trimming but the master bias "
                                f"{bias.filename} is {bias_data.shape}; make a master bias of the same layout")
            result = combine_flats(staged, bias_data, statistic="mean", reject_stars=True, sigma=p.SIGMA_CLIP,
                                   shape=staged[0].image_shape, levels=[frame_levels[k] for k in range(len(staged))])
            product.gain = self._gain(staged, bias, mode, p.GAIN_SECTION, _binning(first, raw_files[0]))
        levels = [float(v) for v in result.levels]
        product.levels, product.level, product.n_rejected = levels, float(np.mean(levels)), result.n_rejected
        self.log.info("%s: levels %s ADU, %d values clipped, gain %s e-/ADU", self.product.__name__,
                      [round(v, 1) for v in levels], result.n_rejected,
                      f"{product.gain:.3f}" if product.gain else "not measured")
        flat, checks, stats = self._flat_checks(product, result.data, bad, p, normalise=bad is not None)
        checks += [Check("lowest level of the raw flats", min(levels), p.MINIMUM_LEVEL, "MINIMUM_LEVEL",
                         QualityFlags.WRONG_LEVEL, minimum=True),
                   Check("highest level of the raw flats", max(levels), p.MAXIMUM_LEVEL, "MAXIMUM_LEVEL",
                         QualityFlags.WRONG_LEVEL)]
        gain_card = (product.gain or 0.0, "[e-/ADU] from flat/bias pairs, 0: none")
        return self._finish(product, flat, checks, {"GAIN": gain_card}, stats=stats)

    def _gain(self, staged: list[RowFile], bias: BiasFrame, mode: int, size: Sequence[float],
              binning: float) -> float | None:
        """Median gain over consecutive pairs of flats, with two of the master bias's raw biases, in the central
        ``size`` (GAIN_SECTION, full-size pixels) of the frames."""
        raw_biases = sorted(bias.raw_bias_frames, key=lambda f: f.DATE_OBS or _dt.datetime.min)
        if len(staged) < 2 or len(raw_biases) < 2:
            self.log.info("gain not measured: needs two flats and two raw biases of %s visible here", bias.filename)
            return None
        pair = [RawFile.of(f) for f in raw_biases[:2]]
        if any(r.trimmed_shape != staged[0].image_shape for r in pair):
            self.log.info("gain not measured: the raw biases of %s have another layout", bias.filename)
            return None
        try:
            section = central_section(staged[0].image_shape, size, binning)
        except ValueError as exc:
            raise ParameterError(f"{self.product.__name__}.process_params.GAIN_SECTION: {exc}") from None
        if section is not None and _pixels(section) < MINIMUM_GAIN_PIXELS:
            self.log.info("gain measured on the whole frame: the GAIN_SECTION of this %s x %s frame has only %d "
                          "pixels (fewer than %d)", staged[0].image_shape[1], staged[0].image_shape[0],
                          _pixels(section), MINIMUM_GAIN_PIXELS)
            section = None
        rows, columns = section if section is not None else (slice(None), slice(None))
        b1, b2 = (r.corrected(mode, rows=rows)[:, columns] for r in pair)  # the section's rows corrected only
        try:  # the bias pair's level and variance: measured once for all the flat pairs
            biases = BiasPair.of(b1, b2)
        except ValueError as exc:
            self.log.info("gain not measured: the raw biases of %s give no variance: %s", bias.filename, exc)
            return None
        del b1, b2
        cut = [f(rows)[:, columns] for f in staged]  # only the section's rows are read, each flat once
        estimates = []
        for first, second in zip(cut[:-1], cut[1:]):
            try:
                estimates.append(gain_from_pairs(first, second, None, None, biases=biases))
            except ValueError as exc:
                self.log.info("a flat pair gives no gain: %s", exc)
        return float(np.median(estimates)) if estimates else None


#: fewest pixels a GAIN_SECTION may have: a shrunk or binned frame's smaller section loses precision (at 1/8
#: scale a 256 x 128 section measured 0.8 % off the truth where the whole frame is within 0.7 %), so the
#: whole frame is used instead
MINIMUM_GAIN_PIXELS = 1_000_000


def _pixels(section: tuple[slice, slice]) -> int:
    return (section[0].stop - section[0].start) * (section[1].stop - section[1].start)


def _binning(frame: RawFrame, raw: RawFile | None = None) -> float:
    """Detector pixels per pixel of a raw chip frame (8 for a chip shrunk 8 times); ``raw``: its file, if at hand."""
    geometry = (raw if raw is not None else RawFile.of(frame)).geometry
    return get_instrument(frame.instrument.name).chip(frame.chip.name).nx / geometry.nx


def _union_mask(maps: Sequence[PixelMap]) -> np.ndarray | None:
    bad = None
    for m in maps:
        bad = m.mask() if bad is None else bad | m.mask()
    return bad


class DomeFlatTask(_FlatTask):
    """Make a dome flat of one chip and filter: raw dome flats of ``date`` combined, de-biased, median 1.

    ``DomeFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1)``;
    uses the master bias valid then (made with the same OVERSCAN_CORRECTION)
    and, when one exists, the hot pixel map.
    """

    products = (DomeFlatFrame,)
    product = DomeFlatFrame
    inputs = (Input(RawDomeFlatFrame, "raw_dome_flat_frames", kind="raw", filter=True), Input(BiasFrame, "bias"),
              Input(HotPixelMap, "hot_pixels", optional=True))
    version = "3"  # 2: gain from the central GAIN_SECTION (was the whole frame); 3: its clipping sort-based (1e-10 off)
    algorithm_modules = ("awe.image.flat", "awe.image.overscan", "awe.image.combine", "awe.image.stats",
                         "awe.tasks.base", "awe.tasks.calibration")
    step, object_name = "Dome", "DOME FLAT"
    raw_class = RawDomeFlatFrame
    raw_role = "raw_dome_flat_frames"
    what = "raw dome flats"
    selection = {**_COMMON_SELECTION, "filter": "filter ('#844' or the ESO name)", **_RAW_SELECTION}
    shortcuts = {"overscan": ("DomeFlatFrame", "process_params", "OVERSCAN_CORRECTION")}


class TwilightFlatTask(_FlatTask):
    """Make a twilight flat of one chip and filter: raw twilight flats combined with star rejection, median 1.

    Uses the master bias valid then (same OVERSCAN_CORRECTION) and, when they
    exist, the hot and cold pixel maps (left out of the statistics).
    """

    products = (TwilightFlatFrame,)
    product = TwilightFlatFrame
    inputs = (Input(RawTwilightFlatFrame, "raw_twilight_flat_frames", kind="raw", filter=True),
              Input(BiasFrame, "bias"), Input(HotPixelMap, "hot_pixels", optional=True),
              Input(ColdPixelMap, "cold_pixels", filter=True, optional=True))
    version = "3"  # 2: gain from the central GAIN_SECTION (was the whole frame); 3: its clipping sort-based (1e-10 off)
    algorithm_modules = ("awe.image.flat", "awe.image.overscan", "awe.image.combine", "awe.image.stats",
                         "awe.tasks.base", "awe.tasks.calibration")
    step, object_name = "Twi", "TWILIGHT FLAT"
    raw_class = RawTwilightFlatFrame
    raw_role = "raw_twilight_flat_frames"
    what = "raw twilight flats"
    uses_cold_pixels = True
    selection = {**_COMMON_SELECTION, "filter": "filter ('#844' or the ESO name)", **_RAW_SELECTION}
    shortcuts = {"overscan": ("TwilightFlatFrame", "process_params", "OVERSCAN_CORRECTION")}


# ============================================================================ cold pixels
class ColdPixelsTask(_CalibrationTask):
    """Make a cold pixel map from the dome flat valid on ``date``: cold/dead pixels and the bad runs of bad
    columns (the whole column when most of it is bad)."""

    products = (ColdPixelMap,)
    product = ColdPixelMap
    inputs = (Input(DomeFlatFrame, "domeflat", filter=True),)
    algorithm_modules = ("awe.image.pixels", "awe.tasks.base", "awe.tasks.calibration", "awe.image.stats")
    step, object_name = "Cold", "COLD PIXELS"
    selection = {**_COMMON_SELECTION, "filter": "filter of the dome flat ('#844'); any when not given"}

    def make(self) -> list[tuple[DBObject, Path | None]]:
        p = self.params(ColdPixelMap)
        target = self._target(use_filter=True)
        dome = self.calibration("domeflat", target)
        product = self._new({"domeflat": dome}, dome,
                            overscan_correction=dome.overscan_correction, nframes=dome.nframes, **self._span(dome))
        reused = self._reuse(product)
        if reused:
            return reused
        data = dome.load()
        scale = self._scaled(p.SMOOTHING_SCALE, dome, data.shape)
        result = cold_pixels(data, low=p.LOW, high=p.HIGH, column_threshold=p.COLUMN_THRESHOLD, scale_px=scale)
        product.n_bad_pixels, product.bad_fraction = result.n_cold, result.n_cold / result.mask.size
        product.bad_columns = result.bad_columns
        self.log.info("%d cold pixels (%.4f %%), bad columns %s", result.n_cold, 100 * product.bad_fraction,
                      result.bad_columns)
        checks = [Check("cold pixel fraction", product.bad_fraction, p.MAXIMUM_FRACTION, "MAXIMUM_FRACTION",
                        QualityFlags.TOO_NOISY)]
        return self._finish(product, result.mask.astype(np.uint8), checks,
                            {"NBAD": (result.n_cold, "cold pixels (value 1)")}, dtype=np.uint8)


# ============================================================================ master flat
class MasterFlatTask(_CalibrationTask):
    """Make the master flat: the dome flat's small scales times the twilight flat's large scales.

    Uses the dome and twilight flats of the chip and filter valid on ``date``.
    """

    products = (MasterFlatFrame,)
    product = MasterFlatFrame
    inputs = (Input(DomeFlatFrame, "domeflat", filter=True), Input(TwilightFlatFrame, "twilightflat", filter=True))
    algorithm_modules = ("awe.image.flat", "awe.tasks.base", "awe.tasks.calibration", "awe.image.stats")
    step, object_name = "Flat", "MASTER FLAT"
    selection = {**_COMMON_SELECTION, "filter": "filter ('#844')"}

    def make(self) -> list[tuple[DBObject, Path | None]]:
        p = self.params(MasterFlatFrame)
        target = self._target(use_filter=True)
        dome = self.calibration("domeflat", target)
        twilight = self.calibration("twilightflat", target)
        if (dome.filter and dome.filter.name) != (twilight.filter and twilight.filter.name):
            raise TaskError(f"the dome flat {dome.filename} and the twilight flat {twilight.filename} are of "
                            "different filters; give filter=")
        if dome.overscan_correction != twilight.overscan_correction:
            self.log.warning("the dome flat (OVERSCAN_CORRECTION=%s) and the twilight flat (%s) were overscan-"
                             "corrected differently", dome.overscan_correction, twilight.overscan_correction)
        product = self._new({"domeflat": dome, "twilightflat": twilight}, dome,
                            overscan_correction=dome.overscan_correction,
                            nframes=(dome.nframes or 0) + (twilight.nframes or 0), gain=dome.gain,
                            **self._span(dome, twilight))
        reused = self._reuse(product)
        if reused:
            return reused
        dome_data, twilight_data = dome.load(), twilight.load()
        if dome_data.shape != twilight_data.shape:
            raise TaskError(f"the dome flat {dome.filename} {dome_data.shape} and the twilight flat "
                            f"{twilight.filename} {twilight_data.shape} differ in shape")
        scale = self._scaled(p.SMOOTHING_SCALE, dome, dome_data.shape)
        combined = master_flat(dome_data, twilight_data, scale_px=scale, normalise=False)
        del dome_data, twilight_data
        product.smoothing_scale_pix = scale
        self.log.info("master flat: dome %s below %d pixels, twilight %s above", dome.filename, scale,
                      twilight.filename)
        flat, checks, stats = self._flat_checks(product, combined, None, p, normalise=True)
        return self._finish(product, flat, checks, {"SMOOTHSC": (scale, "smoothing scale [pixels]"),
                                                    "GAIN": (product.gain or 0.0, "gain of the dome flat [e-/ADU]")},
                            stats=stats)
