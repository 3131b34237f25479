"""Overscan correction and trimming of raw CCD frames (Astro-WISE ``OVERSCAN_CORRECTION``).

A raw WFI extension has prescan columns on the left and overscan columns on
the right of the illuminated area (see ``awe.instruments.geometry``).  Both are
read out from the same amplifier as the data and carry the bias level of the
moment each row was read.  The correction measures that level from the
prescan/overscan strip, subtracts it and trims the frame to its data section.

The functions take plain slices so that they work on any layout::

    level = overscan_levels(raw, overscan_cols=slice(2098, 2142),
                            data_section=(slice(30, 4122), slice(50, 2082)), mode=6)
    block = overscan_correct(raw, slice(2098, 2142), (slice(30, 4122), slice(50, 2082)),
                             mode=6, rows=slice(0, 256), levels=level)

Streaming callers compute :func:`overscan_levels` once (it reads only the
narrow strips) and pass it to :func:`overscan_correct` for each row block.
"""

from __future__ import annotations

import logging
from enum import IntEnum

import bottleneck as bn
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["OverscanMode", "overscan_levels", "overscan_correct", "OverscanCorrector", "DEFAULT_SMOOTH_ROWS"]

log = logging.getLogger(__name__)

#: Default window (rows) of the running mean of mode 7.
DEFAULT_SMOOTH_ROWS = 31


class OverscanMode(IntEnum):
    """The overscan correction methods (the ``OVERSCAN_CORRECTION`` process parameter).

    Attributes
    ----------
    NONE = 0
        No correction: the frame is only trimmed (converted to float32).
    PRESCAN_MEDIAN = 1
        One constant, the median of the prescan-x region, is subtracted.
    OVERSCAN_MEDIAN = 2
        One constant, the median of the overscan-x region, is subtracted.
    MEAN_PRESCAN_OVERSCAN = 3
        One constant, the average of the prescan-x and overscan-x medians.
    PER_ROW = 6
        Astro-WISE's default: the median of the overscan-x columns of each row
        is subtracted from that row (removes row-to-row bias jitter).
    PER_ROW_SMOOTHED = 7
        As 6, but the per-row medians are smoothed along the columns by a
        running mean over ``smooth`` rows (window shrinking at the ends), for a
        bias level that drifts slowly during read-out: less noise than 6, but
        does not follow single-row jumps.

    Other mode numbers are refused with an error listing these.
    """

    NONE = 0
    PRESCAN_MEDIAN = 1
    OVERSCAN_MEDIAN = 2
    MEAN_PRESCAN_OVERSCAN = 3
    PER_ROW = 6
    PER_ROW_SMOOTHED = 7


def _mode(mode: int | OverscanMode) -> OverscanMode:
    try:
        return OverscanMode(int(mode))
    except ValueError:
        known = ", ".join(f"{m.value} ({m.name})" for m in OverscanMode)
        raise ValueError(f"unknown OVERSCAN_CORRECTION mode {mode!r}; use one of {known}") from None


def _check_2d(raw: ArrayLike) -> None:
    if len(np.shape(raw)) != 2:
        raise ValueError(f"the raw frame must be a 2-D array, got shape {np.shape(raw)}")


def _contiguous(sl: slice, n: int, what: str) -> tuple[int, int]:
    """``(start, stop)`` of a step-1 slice over ``n`` items."""
    start, stop, step = sl.indices(n)
    if step != 1:
        raise ValueError(f"{what} must be a contiguous slice (step 1), got {sl}")
    return start, max(start, stop)


def _strip(raw: ArrayLike, rows: slice, cols: slice | None, what: str) -> np.ndarray:
    """The prescan/overscan strip for ``rows`` as float32, with a clear error if it is empty."""
    if cols is None:
        raise ValueError(f"this overscan mode needs the {what} columns; pass {what}_cols=slice(...)")
    strip = np.asarray(raw[rows, cols], dtype=np.float32)
    if strip.size == 0:
        raise ValueError(f"the {what} region {cols} of a frame of shape {np.shape(raw)} is empty")
    return strip


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean over ``window`` samples; the window shrinks at the ends (no padding)."""
    n = values.size
    half = max(int(window), 1) // 2
    csum = np.concatenate(([0.0], np.cumsum(values, dtype=np.float64)))
    idx = np.arange(n)
    lo = np.clip(idx - half, 0, n)
    hi = np.clip(idx + half + 1, 0, n)
    return (csum[hi] - csum[lo]) / (hi - lo)


def overscan_levels(raw: ArrayLike, overscan_cols: slice | None, data_section: tuple[slice, slice],
                    mode: int | OverscanMode = OverscanMode.PER_ROW, prescan_cols: slice | None = None,
                    smooth: int = DEFAULT_SMOOTH_ROWS) -> np.ndarray:
    """The bias level to subtract from each row of the data section.

    Parameters
    ----------
    raw : array_like
        The raw 2-D frame (ndarray or memmap: only the strips are read).
    overscan_cols : slice or None
        Columns of the overscan-x region (raw, 0-based).
    data_section : (slice, slice)
        ``(rows, columns)`` of the data to keep (the trim section, 0-based).
    mode : int or OverscanMode
        See :class:`OverscanMode`.
    prescan_cols : slice, optional
        Columns of the prescan-x region; needed by modes 1 and 3.
    smooth : int
        Running-mean window in rows for mode 7.

    Returns
    -------
    ndarray
        float64 array with one level per data-section row (zeros for mode 0).
        The levels come from the strip rows matching the data rows.
    """
    _check_2d(raw)
    mode = _mode(mode)
    y0, y1 = _contiguous(data_section[0], np.shape(raw)[0], "data_section rows")
    rows, nrows = slice(y0, y1), y1 - y0
    if mode is OverscanMode.NONE:
        return np.zeros(nrows)
    if mode is OverscanMode.PRESCAN_MEDIAN:
        return np.full(nrows, float(bn.median(_strip(raw, rows, prescan_cols, "prescan"))))
    if mode is OverscanMode.OVERSCAN_MEDIAN:
        return np.full(nrows, float(bn.median(_strip(raw, rows, overscan_cols, "overscan"))))
    if mode is OverscanMode.MEAN_PRESCAN_OVERSCAN:
        pre = float(bn.median(_strip(raw, rows, prescan_cols, "prescan")))
        over = float(bn.median(_strip(raw, rows, overscan_cols, "overscan")))
        return np.full(nrows, 0.5 * (pre + over))
    per_row = bn.median(_strip(raw, rows, overscan_cols, "overscan"), axis=1).astype(np.float64)
    if mode is OverscanMode.PER_ROW:
        return per_row
    if smooth < 1:
        raise ValueError(f"smooth must be a positive number of rows, got {smooth!r}")
    return _running_mean(per_row, smooth)


def overscan_correct(raw: ArrayLike, overscan_cols: slice | None, data_section: tuple[slice, slice],
                     mode: int | OverscanMode = OverscanMode.PER_ROW, prescan_cols: slice | None = None,
                     smooth: int = DEFAULT_SMOOTH_ROWS, rows: slice | None = None,
                     levels: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Subtract the overscan level and trim to the data section.

    Parameters
    ----------
    raw : array_like
        The raw 2-D frame (ndarray or memmap; only the needed rows are read).
    overscan_cols, data_section, mode, prescan_cols, smooth
        As in :func:`overscan_levels`.
    rows : slice, optional
        Rows of the *trimmed* output to produce (default all): process a
        frame in row blocks by calling once per block.
    levels : ndarray, optional
        The result of :func:`overscan_levels` for this frame, to avoid
        recomputing it for every block.
    out : ndarray, optional
        float32 array of the output block's shape to write into.

    Returns
    -------
    ndarray
        float32, shape ``(rows of the block, data columns)``.
    """
    _check_2d(raw)
    ysec, xsec = data_section
    y0, y1 = _contiguous(ysec, np.shape(raw)[0], "data_section rows")
    if levels is None:
        levels = overscan_levels(raw, overscan_cols, data_section, mode, prescan_cols, smooth)
    elif len(levels) != y1 - y0:
        raise ValueError(f"levels has {len(levels)} values but the data section has {y1 - y0} rows")
    start, stop = (0, y1 - y0) if rows is None else _contiguous(rows, y1 - y0, "rows")
    src = raw[y0 + start:y0 + stop, xsec]
    if out is None:
        out = np.empty(np.shape(src), dtype=np.float32)
    elif out.shape != np.shape(src):
        raise ValueError(f"out has shape {out.shape}, the corrected block has {np.shape(src)}")
    out[...] = src
    out -= np.asarray(levels[start:stop], dtype=np.float32)[:, None]
    return out


class OverscanCorrector:
    """Configured overscan correction for one raw layout (the callable form).

    Parameters
    ----------
    overscan_cols, data_section, mode, prescan_cols, smooth
        As in :func:`overscan_levels`.

    Examples
    --------
    >>> corr = OverscanCorrector(slice(2098, 2142), (slice(30, 4122), slice(50, 2082)), mode=6)
    >>> trimmed = corr(raw)                                     # doctest: +SKIP
    >>> levels = corr.levels(raw); block = corr(raw, rows=slice(0, 256), levels=levels)  # doctest: +SKIP
    """

    def __init__(self, overscan_cols: slice | None, data_section: tuple[slice, slice],
                 mode: int | OverscanMode = OverscanMode.PER_ROW, prescan_cols: slice | None = None,
                 smooth: int = DEFAULT_SMOOTH_ROWS) -> None:
        self.mode = _mode(mode)
        if self.mode in (OverscanMode.PRESCAN_MEDIAN, OverscanMode.MEAN_PRESCAN_OVERSCAN) and prescan_cols is None:
            raise ValueError(f"overscan mode {self.mode.value} ({self.mode.name}) needs prescan_cols")
        if self.mode not in (OverscanMode.NONE, OverscanMode.PRESCAN_MEDIAN) and overscan_cols is None:
            raise ValueError(f"overscan mode {self.mode.value} ({self.mode.name}) needs overscan_cols")
        if len(data_section) != 2 or not all(isinstance(s, slice) for s in data_section):
            raise ValueError(f"data_section must be a (rows, columns) pair of slices, got {data_section!r}")
        if smooth < 1:
            raise ValueError(f"smooth must be a positive number of rows, got {smooth!r}")
        self.overscan_cols = overscan_cols
        self.prescan_cols = prescan_cols
        self.data_section = tuple(data_section)
        self.smooth = int(smooth)

    def levels(self, raw: ArrayLike) -> np.ndarray:
        """Per-row levels of ``raw`` (see :func:`overscan_levels`)."""
        return overscan_levels(raw, self.overscan_cols, self.data_section, self.mode, self.prescan_cols, self.smooth)

    def __call__(self, raw: ArrayLike, rows: slice | None = None, levels: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Corrected, trimmed float32 image or row block (see :func:`overscan_correct`)."""
        return overscan_correct(raw, self.overscan_cols, self.data_section, self.mode, self.prescan_cols,
                                self.smooth, rows=rows, levels=levels, out=out)

    def __repr__(self) -> str:
        return (f"OverscanCorrector(overscan_cols={self.overscan_cols}, data_section={self.data_section}, "
                f"mode={self.mode.value}, prescan_cols={self.prescan_cols}, smooth={self.smooth})")
