"""Regridded frames and their grid (spec section 6: RegridTask).

* :class:`RegridGrid`: the tangent-plane pixel grid of one field (OBJECT, tangent point rounded to
  ``GRID_ROUNDING``) and pixel scale -- tangent point, scale, size; no file. Made once (create-or-get under
  the one-current-product rule: two regrid jobs of the same field make the same provenance, and the second
  commit adopts the first one's grid), shared by every RegriddedFrame of the field and by its coadd, so
  all of them share pixels.
* :class:`RegriddedFrame`: one reduced frame resampled onto the sub-image of the grid its chip covers
  (offset ``grid_x0, grid_y0``, size ``NAXIS1`` x ``NAXIS2``), its values scaled to the field's zero point
  (``zeropoint``: magnitude = -2.5 log10(sum of pixel values) + zeropoint, above the atmosphere). The file
  holds the values (primary HDU), the weight (``WEIGHT``: inverse variance of an output pixel's share of
  an aperture sum; 0 = no data) and the flags (``FLAGS``: the reduced frame's weight flag bits of the
  input pixels around each output pixel, :data:`awe.image.weights.mask_bits`; 4 = saturated).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from awe.db.persistent import Boolean, Field, Float, Input, Integer, Ref, String
from awe.db.schema import DBObject
from awe.model.frames import BaseFrame
from awe.pars import Param, ParamGroup

__all__ = ["RegridGrid", "RegriddedFrame", "SwarpParams", "RegridParams", "FLAG_SATURATED"]

#: the flag bit of a saturated pixel (as in the reduced frames' weight FLAGS)
FLAG_SATURATED = 4


class SwarpParams(ParamGroup):
    """``RegriddedFrame.swarpconf``: the output grid and the resampling (SWarp's names)."""

    PIXEL_SCALE = Param(0.2, "pixel scale of the output grid (the spec sets WFI's own 0.238)", unit="arcsec")
    RESAMPLING_TYPE = Param("LANCZOS3", "resampling kernel: LANCZOS3 (flux conserving), LANCZOS2, BILINEAR, "
                                        "NEAREST", choices=("LANCZOS3", "LANCZOS2", "BILINEAR", "NEAREST"))
    GRID_ROUNDING = Param(60.0, "the grid's tangent point is the field's mean pointing rounded to this, so that "
                                "every job of a field finds the same grid", unit="arcsec")
    GRID_MARGIN = Param(300.0, "the grid extends this far beyond the mosaic's footprint at the mean pointing "
                               "(room for the dithers)", unit="arcsec")
    MAPPING_STEP = Param(16, "the exact sky mapping is computed every this many output pixels and interpolated "
                             "(bicubic splines)", unit="pixel")
    NTHREADS = Param(1, "threads of one frame's resampling (0: all cores; at most NUMBA_NUM_THREADS); 1 when the "
                        "frames of a night are regridded in parallel jobs (no oversubscription)", affects_output=False)


class RegridParams(ParamGroup):
    """``RegriddedFrame.process_params``: background and flux scaling."""

    BACKGROUND_SUBTRACTION_TYPE = Param(0, "0: keep the sky; 1: subtract a smooth background (mesh "
                                           "BACKGROUND_MESH) before resampling", choices=(0, 1))
    BACKGROUND_MESH = Param(64, "mesh of the background subtracted with BACKGROUND_SUBTRACTION_TYPE = 1 (pixels "
                                "of the reduced frame)", unit="pixel")
    ZEROPOINT = Param(30.0, "the field's zero point the values are scaled to: magnitude = -2.5 log10(sum of "
                            "pixel values) + ZEROPOINT, above the atmosphere", unit="mag")
    ALLOW_UNCALIBRATED = Param(False, "regrid a frame without PhotometricParameters unscaled (flux_scale 1, "
                                      "photometric = False, flagged FEW_INPUTS) instead of refusing it")


class RegridGrid(DBObject):
    """The tangent-plane pixel grid of a field and pixel scale (no file).

    ``wcs()`` is its TAN WCS (``wcs(x0, y0)``: of a sub-image); ``tangent_grid()`` the
    :class:`awe.image.regrid.TangentGrid` the resampling uses.
    """

    __tablename__ = "regrid_grids"

    instrument = Ref("Instrument", "instrument")
    OBJECT = Field(String(80), "field (OBJECT of its frames)", index=True)
    grid_ra = Field(Float, "tangent point, right ascension [deg]")
    grid_dec = Field(Float, "tangent point, declination [deg]")
    pixel_scale = Field(Float, "pixel scale [arcsec]")
    grid_nx = Field(Integer, "grid width [pixels]")
    grid_ny = Field(Integer, "grid height [pixels]")

    def tangent_grid(self) -> Any:
        from awe.image.regrid import TangentGrid
        return TangentGrid(float(self.grid_ra), float(self.grid_dec), float(self.pixel_scale), int(self.grid_nx),
                           int(self.grid_ny))

    def wcs(self, x0: int = 0, y0: int = 0) -> Any:
        """The grid's TAN WCS (of the sub-image starting at 0-based pixel ``(x0, y0)``)."""
        return self.tangent_grid().wcs(x0, y0)


class _GridImage:
    """Shared by regridded frames and coadds: a sub-image of a grid with weight and flag extensions."""

    grid_x0: Any
    grid_y0: Any
    grid: Any
    NAXIS1: Any
    NAXIS2: Any
    local_path: Any  # BaseFrame's

    def weight_map(self) -> np.ndarray:
        """The weight (``WEIGHT`` extension; 0 = no data)."""
        from awe.model._io import read_image
        return read_image(self.local_path(), ext="WEIGHT")

    def flag_map(self) -> np.ndarray:
        """The flag bits (``FLAGS`` extension, uint8; 4 = saturated in an input)."""
        from awe.model._io import read_image
        return read_image(self.local_path(), ext="FLAGS").astype(np.uint8)

    def wcs(self) -> Any:
        """The TAN WCS of this sub-image (its grid's, moved by the offset)."""
        return self.grid.wcs(int(self.grid_x0), int(self.grid_y0))

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, nx, ny)`` on the grid."""
        return int(self.grid_x0), int(self.grid_y0), int(self.NAXIS1), int(self.NAXIS2)


class RegriddedFrame(_GridImage, BaseFrame):
    """A reduced frame resampled onto its field's grid (the sub-image its chip covers), on the field's zero point.

    ``psf_radius``, ``seeing`` (half-light radius and FWHM of its stars, arcsec) are measured on the input
    pixels (the reduced frame's measurement: a pixel-integrated Moffat fit, exact there, whereas resampling an
    undersampled frame broadens the profile seen on the output grid); ``flux_scale`` is the factor the reduced
    frame's ADU were multiplied by (from its chip's PhotometricParameters, the exposure time and the airmass);
    ``photometric`` False for a frame regridded unscaled (``ALLOW_UNCALIBRATED``).
    """

    __tablename__ = "regridded_frames"

    parameter_groups = {"swarpconf": SwarpParams, "process_params": RegridParams}

    reduced = Input("ReducedScienceFrame", "the reduced frame resampled")
    weight = Input("WeightFrame", "its weight map")
    astrometry = Input("DBObject", "the astrometric solution used (GAstrometric, else AstrometricParameters)")
    photometry = Input("PhotometricParameters", "the zero point used (none: unscaled, ALLOW_UNCALIBRATED)",
                       optional=True)
    grid = Input("RegridGrid", "the field's grid")

    grid_x0 = Field(Integer, "0-based column of the sub-image's first pixel on the grid")
    grid_y0 = Field(Integer, "0-based row of the sub-image's first pixel on the grid")
    pixel_scale = Field(Float, "pixel scale [arcsec]")
    kernel = Field(String(16), "resampling kernel")
    zeropoint = Field(Float, "magnitude of a pixel-value sum of 1, above the atmosphere [mag]")
    flux_scale = Field(Float, "factor the reduced frame's ADU were multiplied by")
    photometric = Field(Boolean, "False: not scaled by a photometric calibration")
    background_subtracted = Field(Integer, "BACKGROUND_SUBTRACTION_TYPE used")
    sky_level = Field(Float, "sky level of the regridded values (0 after background subtraction)")
    sky_rms = Field(Float, "pixel-to-pixel sky noise of the regridded values")
    psf_radius = Field(Float, "PSF radius: median half-light radius of the stars [arcsec]")
    seeing = Field(Float, "median FWHM of the stars [arcsec]")
    n_flagged = Field(Integer, "pixels with a saturation flag")
