"""ESO raw multi-extension files as WFI writes them (headers and chip-by-chip writing).

The conventions that differ between file generations and archives are
options: the ``EXTNAME`` style (:data:`EXTNAME_STYLES`), the keyword that
carries the detector id (:data:`DETECTOR_ID_KEYS`, or none), whether the
primary header lists every chip's id, and the order of the extensions
(:func:`reorder_extensions`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits

from awe.instruments import ChipSpec, InstrumentSpec, RawGeometry
from awe.sim._optics import ChipOptics, header_wcs_cards
from awe.sim._plan import FILTER_ID, Exposure

__all__ = ["primary_header", "extension_header", "start_raw_file", "append_extension", "reorder_extensions",
           "check_conventions",
           "EXTNAME_STYLES", "DETECTOR_ID_KEYS", "DEFAULT_DETECTOR_ID_KEY"]

#: ``EXTNAME`` of a chip's extension: its name (``ccd50``), upper case (``CCD50``),
#: ``CHIP<index>`` (``CHIP1``), or no EXTNAME at all
EXTNAME_STYLES = ("name", "upper", "chip", "none")
#: spellings of the extension keyword naming the detector (FIERA-era ``CHIP1 ID``, later ``CHIP ID``)
DETECTOR_ID_KEYS = ("HIERARCH ESO DET CHIP1 ID", "HIERARCH ESO DET CHIP ID")
DEFAULT_DETECTOR_ID_KEY = DETECTOR_ID_KEYS[0]


def _sexagesimal(value_deg: float, hours: bool) -> str:
    value = value_deg / 15.0 if hours else value_deg
    sign = "-" if value < 0 else ""
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = ((value - d) * 60 - m) * 60
    return f"{sign}{d:02d}:{m:02d}:{s:0{6 if hours else 5}.{3 if hours else 2}f}"


def primary_header(exposure: Exposure, instrument: InstrumentSpec,
                   chip_order: Sequence[ChipSpec] | None = None) -> fits.Header:
    """Primary header of a raw WFI file (no data).

    With ``chip_order`` (the chips in extension order) the header lists the
    detector id of the n-th extension's chip as ``HIERARCH ESO DET CHIPn ID``
    (the instrument's ``primary_detector_id_key``).
    """
    filt = instrument.filter(FILTER_ID)
    catg, dpr_type, tech = exposure.dpr
    h = fits.Header()
    h["ORIGIN"] = ("ESO", "European Southern Observatory")
    h["DATE"] = (exposure.date_obs[:19], "Date this file was written")
    h["TELESCOP"] = (instrument.telescope, "ESO Telescope Name")
    h["INSTRUME"] = (instrument.name, "Instrument used")
    h["OBJECT"] = (exposure.object, "Original target")
    h["RA"] = (round(exposure.ra, 6), _sexagesimal(exposure.ra, True) + " RA (J2000) pointing (deg)")
    h["DEC"] = (round(exposure.dec, 6), _sexagesimal(exposure.dec, False) + " DEC (J2000) pointing (deg)")
    h["EQUINOX"] = (2000.0, "Standard FK5 (years)")
    h["RADECSYS"] = ("FK5", "Coordinate reference frame")
    h["EXPTIME"] = (exposure.exptime, "Total integration time")
    h["MJD-OBS"] = (round(exposure.mjd, 8), "Obs start " + exposure.date_obs[:19])
    h["DATE-OBS"] = (exposure.date_obs, "Date of observation")
    h["UTC"] = (exposure.utc_s, _sexagesimal(exposure.utc_s / 240.0, True) + " UTC at start (sec)")
    h["LST"] = (exposure.lst_s, _sexagesimal(exposure.lst_s / 240.0, True) + " LST at start (sec)")
    h["OBSERVER"] = ("UNKNOWN", "Name of observer")
    h["ARCFILE"] = (exposure.filename, "Archive File Name")
    h["ORIGFILE"] = (exposure.filename, "Original File Name")
    h["HIERARCH ESO DPR CATG"] = (catg, "Observation category")
    h["HIERARCH ESO DPR TYPE"] = (dpr_type, "Observation type")
    h["HIERARCH ESO DPR TECH"] = (tech, "Observation technique")
    h["HIERARCH ESO TPL ID"] = (exposure.template, "Template signature ID")
    h["HIERARCH ESO INS FILT1 NAME"] = (filt.eso_name, "Filter name")
    h["HIERARCH ESO INS FILT1 ID"] = (filt.id, "Filter id")
    h["HIERARCH ESO TEL AIRM START"] = (exposure.airmass_start, "Airmass at start")
    h["HIERARCH ESO TEL AIRM END"] = (exposure.airmass_end, "Airmass at end")
    h["HIERARCH ESO DET CHIPS"] = (len(instrument.chips), "Number of chips in the mosaic")
    h["HIERARCH ESO DET EXP NO"] = (exposure.exp_no, "Unique exposure ID number")
    h["HIERARCH ESO DET WIN1 DIT1"] = (exposure.exptime, "Actual integration time")
    if chip_order is not None and instrument.primary_detector_id_key:
        _list_chips(h, instrument, chip_order)
    return h


def _list_chips(header: fits.Header, instrument: InstrumentSpec, chip_order: Sequence[ChipSpec]) -> None:
    for n, chip in enumerate(chip_order, 1):
        header[instrument.primary_detector_id_key.format(n=n)] = (chip.detector_id, "Detector chip identification")


def extension_header(chip: ChipSpec, geometry: RawGeometry, optics: ChipOptics, exposure: Exposure, *,
                     extname_style: str = "name",
                     detector_id_key: str | None = DEFAULT_DETECTOR_ID_KEY) -> fits.Header:
    """Header of one chip's image extension (name, detector id, geometry, gain, rough WCS).

    Parameters
    ----------
    extname_style : str
        One of :data:`EXTNAME_STYLES`.
    detector_id_key : str or None
        The keyword carrying the chip's detector id (one of
        :data:`DETECTOR_ID_KEYS`); None writes no detector id.
    """
    check_conventions(extname_style, detector_id_key)
    h = fits.Header()
    extname = {"name": chip.name, "upper": chip.name.upper(), "chip": f"CHIP{chip.index}",
               "none": None}[extname_style]
    if extname is not None:
        h["EXTNAME"] = (extname, "Extension name")
    if detector_id_key is not None:
        h[detector_id_key] = (chip.detector_id, "Detector chip identification")
    h["HIERARCH ESO DET CHIP1 INDEX"] = (chip.index, "Chip index")
    h["HIERARCH ESO DET OUT1 CONAD"] = (chip.gain, "Conversion from electrons to ADU")
    h["HIERARCH ESO DET OUT1 RON"] = (chip.read_noise_e, "Readout noise per output (e-)")
    for key, value in geometry.header_cards().items():
        h[key] = value
    for key, value in header_wcs_cards(optics, exposure.ra, exposure.dec).items():
        h[key] = value
    return h


def start_raw_file(path: Path, header: fits.Header) -> None:
    """Write the data-less primary HDU of a raw file (replacing any old file)."""
    fits.PrimaryHDU(header=header).writeto(path, overwrite=True)


def append_extension(path: Path, data: np.ndarray, header: fits.Header) -> None:
    """Append one chip (uint16 -> BITPIX 16, BZERO 32768) to a raw file."""
    if data.dtype != np.uint16:
        raise TypeError(f"raw data must be uint16, got {data.dtype}")
    fits.append(path, data, header=header, verify=False)



def check_conventions(extname_style: str, detector_id_key: str | None) -> None:
    """Refuse an unknown ``EXTNAME`` style or detector id keyword."""
    if extname_style not in EXTNAME_STYLES:
        raise ValueError(f"extname_style must be one of {', '.join(EXTNAME_STYLES)}, got {extname_style!r}")
    if detector_id_key is not None and detector_id_key not in DETECTOR_ID_KEYS:
        raise ValueError(f"detector_id_key must be one of {', '.join(DETECTOR_ID_KEYS)} or None, "
                         f"got {detector_id_key!r}")


def reorder_extensions(path: Path, order: Sequence[int], instrument: InstrumentSpec) -> None:
    """Rewrite a raw file with its image extensions in ``order`` (old HDU numbers), the stored bytes unchanged.

    A primary list of detector ids (``CHIPn ID``) is rewritten to follow the new order.
    """
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
        if sorted(order) != list(range(1, len(hdul))):
            raise ValueError(f"order must be a permutation of 1..{len(hdul) - 1}, got {list(order)}")
        primary = hdul[0]
        key = instrument.primary_detector_id_key
        if key and key.format(n=1) in primary.header:
            old = [primary.header[key.format(n=n)] for n in range(1, len(hdul))]
            for n, source in enumerate(order, 1):
                primary.header[key.format(n=n)] = old[source - 1]
        shuffled = fits.HDUList([primary] + [hdul[n] for n in order])
        tmp = path.with_name(path.name + ".part")
        shuffled.writeto(tmp, overwrite=True)
    os.replace(tmp, path)
