"""Calibration products (spec sections 6-8): master bias, bad-pixel maps, flats.

Every class here is a calibration with a validity range (``timestamp_start``
.. ``timestamp_end``, by default the observing nights of its raw inputs) so that
a task picks the right one for a frame (:func:`awe.tasks.base.select_calibration`).
All images are on the *trimmed* grid of the chip: the data area left after the
overscan correction and the trim (the grid :class:`~awe.model.science.ReducedScienceFrame`
uses too).

* :class:`BiasFrame`: the master bias, sigma-clipped mean of overscan-corrected raw biases (float32, ADU).
* :class:`HotPixelMap`: hot pixels and hot columns found in a master bias.
* :class:`DomeFlatFrame`: combined dome flat, normalised to median 1 (float32).
* :class:`ColdPixelMap`: cold/dead pixels and bad columns found in a dome flat.
* :class:`TwilightFlatFrame`: combined twilight flat, stars rejected, median 1 (float32).
* :class:`MasterFlatFrame`: the dome flat's small scales times the twilight flat's large scales.

Pixel maps are stored as uint8 images, **1 on a bad pixel, 0 elsewhere** (as
:class:`~awe.model.science.SatelliteMap`); :meth:`PixelMap.mask` gives the
boolean mask (True = bad) and :meth:`PixelMap.weight` the multiplicative
weight (0 = bad, 1 = good) that goes into a weight map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from awe.db.persistent import JSON, Field, Float, Input, Inputs, Integer
from awe.model.frames import BaseFrame
from awe.pars import Param, ParamGroup

__all__ = [
    "BiasParams", "HotPixelParams", "DomeFlatParams", "ColdPixelParams", "TwilightFlatParams", "MasterFlatParams",
    "CalibrationFrame", "PixelMap", "FlatFrame",
    "BiasFrame", "HotPixelMap", "DomeFlatFrame", "ColdPixelMap", "TwilightFlatFrame", "MasterFlatFrame",
    "OVERSCAN_MODES", "draw_image_and_histogram", "draw_mask",
]

#: OVERSCAN_CORRECTION values the tasks accept (see awe.image.overscan.OverscanMode)
OVERSCAN_MODES = (0, 1, 2, 3, 6, 7)

_OVERSCAN_DOC = ("overscan correction method: 0 none, 1 prescan median, 2 overscan median, "
                 "3 mean of both, 6 per-row overscan median, 7 per-row smoothed; a master bias is used only "
                 "with the method it was made with")


# ============================================================================ parameters
class BiasParams(ParamGroup):
    """``BiasFrame.process_params`` (exactly the tree of spec section 8)."""

    MAXIMUM_ABS_MEAN = Param(10.0, "QC: largest |clipped mean| of the overscan-corrected master bias", unit="ADU")
    MAXIMUM_STDEV = Param(10.0, "QC: largest clipped standard deviation of the master bias", unit="ADU")
    MAXIMUM_STDEV_DIFFERENCE = Param(10.0, "QC: largest standard deviation of the difference with the "
                                           "previous valid master bias of the chip (defects of both left out)",
                                     unit="ADU")
    MAXIMUM_SUBWIN_FLATNESS = Param(100000.0, "QC: largest max - min of the medians of 4 x 4 sub-windows",
                                    unit="ADU")
    MAXIMUM_SUBWIN_STDEV = Param(100000.0, "QC: largest standard deviation within a sub-window", unit="ADU")
    OVERSCAN_CORRECTION = Param(6, _OVERSCAN_DOC, choices=OVERSCAN_MODES)
    SIGMA_CLIP = Param(3.0, "kappa of the kappa-sigma clipping of each pixel's stack (cosmic rays)", unit="sigma")


class HotPixelParams(ParamGroup):
    """``HotPixelMap.process_params``."""

    THRESHOLD = Param(6.0, "a pixel is hot when it exceeds its local bias level (the running median of its "
                           "row plus its column's offset) by this many robust sigma", unit="sigma")
    COLUMN_THRESHOLD = Param(6.0, "a column is hot from a row to one end when the mean excess on that side "
                                  "exceeds the other side's by this many standard errors (and one pixel sigma)",
                             unit="sigma")
    ROW_WINDOW = Param(15, "columns of the running median along each row that gives the local bias level; "
                           "column structure over a column's whole length is part of that level", unit="pixel")
    MAXIMUM_FRACTION = Param(0.01, "QC: largest acceptable fraction of hot pixels", unit="fraction")


class _FlatParams(ParamGroup):
    """What dome and twilight flats share."""

    OVERSCAN_CORRECTION = Param(6, _OVERSCAN_DOC, choices=OVERSCAN_MODES)
    SIGMA_CLIP = Param(3.0, "kappa of the clipping of each pixel's level-scaled stack (cosmic rays, stars)",
                       unit="sigma")
    MINIMUM_FRAMES = Param(3, "fewest raw flats to combine")
    MINIMUM_LEVEL = Param(3000.0, "QC: lowest acceptable de-biased median of an input flat", unit="ADU")
    MAXIMUM_LEVEL = Param(35000.0, "QC: highest acceptable de-biased median of an input flat (linearity)",
                          unit="ADU")
    MAXIMUM_STDEV = Param(0.1, "QC: largest standard deviation of the normalised flat", unit="fraction")
    MAXIMUM_SUBWIN_FLATNESS = Param(0.2, "QC: largest max - min of the medians of 4 x 4 sub-windows of the "
                                         "normalised flat", unit="fraction")
    GAIN_SECTION = Param((2048, 1024), "gain from flat/bias pairs: measured in the central x by y detector pixels "
                                       "(full-size pixels: a chip shrunk 8 times uses an eighth of each); (0, 0) "
                                       "takes the whole frame", unit="pixel", type=tuple)


class DomeFlatParams(_FlatParams):
    """``DomeFlatFrame.process_params``."""


class TwilightFlatParams(_FlatParams):
    """``TwilightFlatFrame.process_params``."""


class ColdPixelParams(ParamGroup):
    """``ColdPixelMap.process_params``."""

    LOW = Param(0.8, "a pixel is cold when its response relative to its surroundings is below this")
    HIGH = Param(1.2, "... or above this (overly responsive pixel)")
    COLUMN_THRESHOLD = Param(0.95, "a run along a column is bad when its median response relative to the "
                                   "neighbouring columns is below this (the whole column when most of it is bad)")
    SMOOTHING_SCALE = Param(256, "block size of the local response, in full-size pixels (scaled to the "
                                 "frame's size)", unit="pixel")
    MAXIMUM_FRACTION = Param(0.01, "QC: largest acceptable fraction of cold pixels", unit="fraction")


class MasterFlatParams(ParamGroup):
    """``MasterFlatFrame.process_params``."""

    SMOOTHING_SCALE = Param(64, "scale separating the dome flat's small scales from the twilight flat's large "
                                "scales, in full-size pixels (scaled to the frame's size)", unit="pixel")
    MAXIMUM_STDEV = Param(0.1, "QC: largest standard deviation of the master flat", unit="fraction")
    MAXIMUM_SUBWIN_FLATNESS = Param(0.2, "QC: largest max - min of the medians of 4 x 4 sub-windows",
                                    unit="fraction")


# ============================================================================ products
class CalibrationFrame(BaseFrame, abstract=True):
    """A calibration image of one chip with a validity range, on the trimmed grid."""

    __tablename__ = "calibration_frames"

    nframes = Field(Integer, "number of raw frames combined")
    overscan_correction = Field(Integer, "overscan correction method (OVERSCAN_CORRECTION) of the raw frames")

    def covers(self, when: Any) -> bool:
        """Whether the validity range includes the UTC datetime ``when``."""
        start, end = self.timestamp_start, self.timestamp_end
        return (start is None or start <= when) and (end is None or when <= end)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Draw the image (ZScale) and the histogram of its values; returns the figure."""
        return draw_image_and_histogram(self.load(), self._title(), ax=ax, path=path,
                                        xlabel=self._value_label)

    _value_label = "value"

    def _title(self) -> str:
        stat = self.imstat
        extra = f"\nmedian {stat.median:.5g}, stdev {stat.stdev:.4g}" if stat and stat.median is not None else ""
        return f"{type(self).__name__} {self.chip.name if self.chip else ''}\n{self.filename}{extra}"


class PixelMap(CalibrationFrame, abstract=True):
    """A bad-pixel map: uint8 image, 1 on a bad pixel."""

    __tablename__ = "pixel_maps"

    n_bad_pixels = Field(Integer, "number of pixels flagged")
    bad_fraction = Field(Float, "fraction of pixels flagged")
    bad_columns = Field(JSON, "0-based (trimmed grid) columns with a flagged run (hot: from a defect to one end; "
                              "cold: the bad runs, or the whole column when most of it is bad)")

    def mask(self) -> np.ndarray:
        """Boolean mask, True on bad pixels."""
        return self.load() > 0

    def weight(self) -> np.ndarray:
        """float32 weight, 0 on bad pixels and 1 elsewhere."""
        return (~self.mask()).astype(np.float32)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Draw the bad pixels and the count per column; returns the figure."""
        title = f"{type(self).__name__} {self.chip.name if self.chip else ''}\n{self.filename}\n" \
                f"{self.n_bad_pixels} pixels ({100 * (self.bad_fraction or 0):.3f} %), columns {self.bad_columns}"
        return draw_mask(self.mask(), title, ax=ax, path=path)


class FlatFrame(CalibrationFrame, abstract=True):
    """A normalised flat field (median 1 over the trimmed grid) with its QC figures."""

    __tablename__ = "flat_frames"

    level = Field(Float, "mean de-biased median level of the raw flats combined [ADU]")
    levels = Field(JSON, "de-biased median level of each raw flat [ADU], in input order")
    n_rejected = Field(Integer, "values clipped while combining (cosmic rays, stars)")
    flat_stdev = Field(Float, "standard deviation of the normalised flat (bad pixels excluded)")
    flatness = Field(Float, "max - min of the 4 x 4 sub-window medians of the normalised flat")
    large_scale_rms = Field(Float, "rms of the large-scale structure of the normalised flat")
    gain = Field(Float, "gain from flat/bias pairs [e-/ADU] (None when it could not be measured)")

    _value_label = "relative response"


class BiasFrame(CalibrationFrame):
    """The master bias of one chip: overscan-corrected, trimmed, sigma-clipped mean of raw biases [ADU].

    ``overscan_correction`` says which OVERSCAN_CORRECTION method made it;
    frames reduced with it must be overscan-corrected the same way.
    ``read_noise_adu`` is measured from differences of pairs of raw biases.
    """

    __tablename__ = "bias_frames"

    parameter_groups = {"process_params": BiasParams}

    raw_bias_frames = Inputs("RawBiasFrame", "the raw biases combined")

    read_noise_adu = Field(Float, "read noise from bias pairs [ADU] (ReducedScienceFrame.read_noise is in e-)")
    n_rejected = Field(Integer, "values clipped while combining (cosmic rays)")
    clipped_mean = Field(Float, "sigma-clipped mean of the master bias [ADU] (QC MAXIMUM_ABS_MEAN)")
    clipped_stdev = Field(Float, "sigma-clipped standard deviation of the master bias [ADU] (QC MAXIMUM_STDEV)")
    stdev_difference = Field(Float, "standard deviation of this minus the previous valid master bias, the "
                                    "defects of both left out [ADU] (QC MAXIMUM_STDEV_DIFFERENCE; None without a "
                                    "previous one)")
    subwin_flatness = Field(Float, "max - min of 4 x 4 sub-window medians [ADU] (QC MAXIMUM_SUBWIN_FLATNESS)")
    subwin_stdev = Field(Float, "largest sub-window standard deviation [ADU] (QC MAXIMUM_SUBWIN_STDEV)")

    _value_label = "ADU"


class HotPixelMap(PixelMap):
    """Hot pixels and hot columns of a chip, found in its master bias (uint8, 1 = hot)."""

    parameter_groups = {"process_params": HotPixelParams}

    bias = Input("BiasFrame", "the master bias searched")

    threshold = Field(Float, "excess above the local bias level beyond which a pixel is hot [ADU]")


class DomeFlatFrame(FlatFrame):
    """The combined dome flat of one chip and filter, de-biased and normalised to median 1."""

    parameter_groups = {"process_params": DomeFlatParams}

    raw_dome_flat_frames = Inputs("RawDomeFlatFrame", "the raw dome flats combined")
    bias = Input("BiasFrame", "master bias subtracted")
    hot_pixels = Input("HotPixelMap", "hot pixels left out of the statistics", optional=True)


class ColdPixelMap(PixelMap):
    """Cold/dead pixels and bad columns of a chip, found in its dome flat (uint8, 1 = cold)."""

    parameter_groups = {"process_params": ColdPixelParams}

    domeflat = Input("DomeFlatFrame", "the dome flat searched")


class TwilightFlatFrame(FlatFrame):
    """The combined twilight flat of one chip and filter (stars rejected), normalised to median 1."""

    parameter_groups = {"process_params": TwilightFlatParams}

    raw_twilight_flat_frames = Inputs("RawTwilightFlatFrame", "the raw twilight flats combined")
    bias = Input("BiasFrame", "master bias subtracted")
    hot_pixels = Input("HotPixelMap", "hot pixels left out of the statistics", optional=True)
    cold_pixels = Input("ColdPixelMap", "cold pixels left out of the statistics", optional=True)


class MasterFlatFrame(FlatFrame):
    """The master flat: the dome flat's small scales times the twilight flat's large scales, median 1.

    ``smoothing_scale_pix`` is the scale (in pixels of this frame) separating them.
    """

    parameter_groups = {"process_params": MasterFlatParams}

    domeflat = Input("DomeFlatFrame", "small scales (pixel-to-pixel response)")
    twilightflat = Input("TwilightFlatFrame", "large scales (illumination like the night sky's)")

    smoothing_scale_pix = Field(Integer, "smoothing scale used [pixels of this frame]")


# ============================================================================ figures
def _pyplot() -> Any:
    import matplotlib.pyplot as plt
    return plt


def _set_title(fig: Any, ax: Any, title: str) -> None:
    """Over the whole figure when we made it (long file names fit), else over the axes."""
    if fig is not None:
        fig.suptitle(title, fontsize=8)
    else:
        ax.set_title(title, fontsize=6)


def draw_image_and_histogram(data: np.ndarray, title: str, ax: Any = None, path: str | Path | None = None,
                             xlabel: str = "value") -> Any:
    """The image (ZScale, grey) and, without ``ax``, the histogram of its finite values beside it."""
    from astropy.visualization import ZScaleInterval

    plt = _pyplot()
    values = np.asarray(data, dtype=np.float32)
    finite = values[np.isfinite(values)]
    fig = None
    if ax is None:
        fig, (ax, hax) = plt.subplots(1, 2, figsize=(10, 7), gridspec_kw={"width_ratios": [1, 1.2]},
                                      layout="constrained")
    else:
        hax = None
    vmin, vmax = ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)
    shown = ax.imshow(values, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.figure.colorbar(shown, ax=ax, fraction=0.05)
    _set_title(fig, ax, title)
    if hax is not None and finite.size:
        lo, hi = np.percentile(finite, [0.05, 99.95])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        hax.hist(np.clip(finite, lo, hi), bins=200, range=(lo, hi), color="0.3", log=True)
        hax.set_xlabel(xlabel)
        hax.set_ylabel("pixels")
        hax.set_title("histogram (0.05-99.95 percentile range; ends clipped)", fontsize=8)
    fig = fig or ax.figure
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig


def draw_mask(mask: np.ndarray, title: str, ax: Any = None, path: str | Path | None = None) -> Any:
    """A bad-pixel mask (bad pixels dark) and, without ``ax``, the bad pixels per column."""
    plt = _pyplot()
    bad = np.asarray(mask, dtype=bool)
    fig = None
    if ax is None:
        fig, (ax, cax) = plt.subplots(1, 2, figsize=(10, 7), gridspec_kw={"width_ratios": [1, 1.2]},
                                      layout="constrained")
    else:
        cax = None
    ax.imshow(~bad, origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _set_title(fig, ax, title)
    if cax is not None:
        counts = bad.sum(axis=0)
        cax.bar(np.arange(counts.size), counts, width=1.0, color="0.2")
        cax.set_xlabel("column (trimmed grid)")
        cax.set_ylabel("bad pixels")
    fig = fig or ax.figure
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
