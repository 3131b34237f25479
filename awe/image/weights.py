"""Weight maps and pixel masks of a reduced science frame.

The weight of a pixel is its relative sensitivity, the normalised master
flat (``flat / median(flat)``), set to 0 wherever a pixel is unusable: hot or
cold in the calibration masks, saturated (with its bleed trail), hit by a
cosmic ray or crossed by a satellite. :data:`mask_bits` gives each reason a
bit so that the reasons can be kept in one integer flag image
(:func:`combine_masks`).

Pure functions on arrays; no files, no database.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

import numpy as np
from scipy import ndimage as ndi

__all__ = ["mask_bits", "HOT", "COLD", "SATURATED", "COSMIC", "SATELLITE",
           "weight_map", "saturation_mask", "grow_mask", "combine_masks"]

log = logging.getLogger(__name__)

HOT = 1
COLD = 2
SATURATED = 4
COSMIC = 8
SATELLITE = 16

#: Bit of each mask in a flag image (read-only mapping).
mask_bits = MappingProxyType({"hot": HOT, "cold": COLD, "saturated": SATURATED,
                              "cosmic": COSMIC, "satellite": SATELLITE})


def _check_mask(name: str, mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} mask has shape {mask.shape}, expected {shape} like the image")
    return mask.astype(bool, copy=False)


def combine_masks(hot: np.ndarray | None = None, cold: np.ndarray | None = None,
                  saturated: np.ndarray | None = None, cosmics: np.ndarray | None = None,
                  satellites: np.ndarray | None = None,
                  shape: tuple[int, int] | None = None) -> np.ndarray:
    """Combine boolean masks into a ``uint8`` flag image with :data:`mask_bits`.

    Parameters
    ----------
    hot, cold, saturated, cosmics, satellites : numpy.ndarray, optional
        Boolean masks (``True`` = bad) of one shape.
    shape : tuple of int, optional
        Image shape, needed only if every mask is ``None``.

    Returns
    -------
    numpy.ndarray
        ``uint8`` image; bit ``mask_bits[name]`` set where mask ``name`` is.
    """
    masks = {"hot": hot, "cold": cold, "saturated": saturated, "cosmic": cosmics,
             "satellite": satellites}
    given = [np.asarray(m) for m in masks.values() if m is not None]
    if shape is None:
        if not given:
            raise ValueError("combine_masks needs at least one mask or the image shape")
        shape = given[0].shape
    flags = np.zeros(shape, dtype=np.uint8)
    for name, m in masks.items():
        m = _check_mask(name, m, tuple(shape))
        if m is not None:
            flags[m] |= np.uint8(mask_bits[name])
    return flags


def weight_map(master_flat: np.ndarray, hot: np.ndarray | None = None, cold: np.ndarray | None = None,
               saturated: np.ndarray | None = None, cosmics: np.ndarray | None = None,
               satellites: np.ndarray | None = None, flags: np.ndarray | None = None) -> np.ndarray:
    """Weight map of a reduced frame: normalised flat, 0 on masked pixels.

    Parameters
    ----------
    master_flat : numpy.ndarray
        Master flat of the chip (any normalisation); it is divided by its
        median over the finite, positive pixels.
    hot, cold, saturated, cosmics, satellites : numpy.ndarray, optional
        Boolean masks (``True`` = bad) of the frame's shape.
    flags : numpy.ndarray, optional
        A flag image (:func:`combine_masks`); any non-zero flag zeroes the
        weight.

    Returns
    -------
    numpy.ndarray
        ``float32`` weights; non-finite or non-positive flat pixels get 0.
    """
    flat = np.asarray(master_flat, dtype=np.float64)
    if flat.ndim != 2:
        raise ValueError(f"master_flat must be 2-D, got shape {flat.shape}")
    good = np.isfinite(flat) & (flat > 0)
    if not good.any():
        raise ValueError("master_flat has no finite positive pixel: check the flat")
    weight = np.where(good, flat / np.median(flat[good]), 0.0)
    bad = ~good
    for name, m in (("hot", hot), ("cold", cold), ("saturated", saturated), ("cosmic", cosmics),
                    ("satellite", satellites)):
        m = _check_mask(name, m, flat.shape)
        if m is not None:
            bad |= m
    if flags is not None:
        flags = np.asarray(flags)
        if flags.shape != flat.shape:
            raise ValueError(f"flags have shape {flags.shape}, expected {flat.shape}")
        bad |= flags != 0
    weight[bad] = 0.0
    log.debug("weight map: %.3f %% of pixels at zero weight", 100.0 * bad.mean())
    return weight.astype(np.float32)


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` (8-connected): ``binary_dilation`` by a 3 x 3 square ``pixels`` times.

    A sparse mask (saturated stars, cosmic rays: a small fraction of the frame) is grown from its pixels
    alone, each spread over the ``(2 pixels + 1)``-square around it, instead of a pass over the whole frame.
    """
    mask = np.asarray(mask, dtype=bool)
    if pixels <= 0:
        return mask.copy()
    side = 2 * pixels + 1
    ys, xs = np.nonzero(mask)
    if mask.ndim != 2 or len(ys) * side * side > mask.size // 8:
        return ndi.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=pixels)
    out = np.zeros(mask.shape, dtype=bool)
    ny, nx = mask.shape
    for dy in range(-pixels, pixels + 1):
        yy = ys + dy
        for dx in range(-pixels, pixels + 1):
            xx = xs + dx
            inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            out[yy[inside], xx[inside]] = True
    return out


def saturation_mask(image: np.ndarray, level: float, grow: int = 1) -> np.ndarray:
    """Mask saturated pixels and their bleed trails, grown by ``grow`` pixels.

    A saturated star spills charge along its column (a bleed trail), where
    the pixels are at or near the saturation level too. Pixels at or above
    ``level`` are flagged; then every pixel within ``grow`` pixels
    (8-connected) of them, which carries the trail's partially filled ends
    and the star's core edge. Works on raw or reduced frames: pass the level
    in the frame's units (e.g. the ADC limit on a raw frame, or the level
    scaled by the flat on a reduced one).

    Parameters
    ----------
    image : numpy.ndarray
        2-D frame.
    level : float
        Saturation level in the frame's units.
    grow : int
        Dilation in pixels (0 for none).

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    data = np.asarray(image)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {data.shape}")
    if grow < 0:
        raise ValueError(f"grow must be >= 0, got {grow}")
    with np.errstate(invalid="ignore"):
        sat = data >= level
    if grow and sat.any():
        sat = grow_mask(sat, grow)
    return sat
