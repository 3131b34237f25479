"""The coadded mosaic of a field (spec section 7: CoaddTask, ``dpu.run('Coadd', ...)``).

:class:`CoaddedRegriddedFrame`: every RegriddedFrame of a field and filter (all chips of all dithers)
combined on their common grid (:class:`~awe.model.regrid.RegridGrid`), each input's sky level (``sky_level``)
first brought to their median -- weighted mean (default),
sigma-clipped weighted mean or median -- over the bounding box of the inputs (offset ``grid_x0,
grid_y0`` on the grid). The file holds the values (primary HDU, header ``MAGZERO`` = ``zeropoint``), the
weight map (``WEIGHT``: the sum of the inputs' weights, inverse variance of a pixel's share of an
aperture sum; 0 = no data) and the flag map (``FLAGS``: 4 where an input pixel was saturated, kept even
where other inputs had data). ``c.zeropoint``: a source's magnitude is -2.5 log10(the sum of its pixel
values) + zeropoint, above the atmosphere.
"""

from __future__ import annotations

from awe.db.persistent import Field, Float, Input, Inputs, Integer, String
from awe.model.frames import BaseFrame
from awe.model.regrid import _GridImage
from awe.pars import Param, ParamGroup

__all__ = ["CoaddedRegriddedFrame", "CoaddParams"]


class CoaddParams(ParamGroup):
    """``CoaddedRegriddedFrame.process_params``: how the regridded frames are combined."""

    COMBINE_TYPE = Param("WEIGHTED", "WEIGHTED: weighted mean; CLIPPED: weighted mean after rejecting values "
                                     "beyond CLIP_SIGMA from the median; MEDIAN: median",
                         choices=("WEIGHTED", "CLIPPED", "MEDIAN"))
    CLIP_SIGMA = Param(4.0, "CLIPPED: rejection threshold (the value's own noise, from its weight, plus "
                            "CLIP_FRACTION of the median)", unit="sigma")
    CLIP_FRACTION = Param(0.1, "CLIPPED: fraction of the median's signal above the sky added to the noise before "
                               "rejecting (keeps star cores whose resampled peak differs between dithers)")
    TILE_PIXELS = Param(4_000_000, "values held in memory per tile of the stack (the coadd streams in tiles of "
                                   "rows)", affects_output=False)
    DEPTH_APERTURE = Param(2.0, "the limiting magnitude's aperture diameter, in units of the seeing FWHM")


class CoaddedRegriddedFrame(_GridImage, BaseFrame):
    """The coadd of a field's regridded frames: values, weight and flag maps on the field's grid.

    ``seeing`` [arcsec]: median FWHM of its stars; ``limiting_magnitude``: 5-sigma in an aperture of
    ``DEPTH_APERTURE`` x FWHM diameter, from the noise measured in such apertures on the sky;
    ``n_inputs``: regridded frames combined (``regridded``: the lineage to each).
    """

    __tablename__ = "coadded_frames"

    parameter_groups = {"process_params": CoaddParams}

    regridded = Inputs("RegriddedFrame", "the regridded frames combined")
    grid = Input("RegridGrid", "the field's grid")

    grid_x0 = Field(Integer, "0-based column of the coadd's first pixel on the grid")
    grid_y0 = Field(Integer, "0-based row of the coadd's first pixel on the grid")
    pixel_scale = Field(Float, "pixel scale [arcsec]")
    zeropoint = Field(Float, "magnitude of a pixel-value sum of 1, above the atmosphere (header MAGZERO) [mag]")
    seeing = Field(Float, "median FWHM of the stars [arcsec]")
    psf_radius = Field(Float, "median half-light radius of the stars [arcsec]")
    limiting_magnitude = Field(Float, "5-sigma limiting magnitude in an aperture of DEPTH_APERTURE x seeing [mag]")
    aperture_noise = Field(Float, "measured noise of a sum over that aperture on the sky")
    n_inputs = Field(Integer, "regridded frames combined")
    combine_method = Field(String(16), "COMBINE_TYPE used")
    n_flagged = Field(Integer, "pixels flagged saturated")
    n_covered = Field(Integer, "pixels with weight > 0")
