"""ESO raw multi-extension files as WFI writes them (headers and chip-by-chip writing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from awe.instruments import ChipSpec, InstrumentSpec, RawGeometry
from awe.sim._optics import ChipOptics, header_wcs_cards
from awe.sim._plan import FILTER_ID, Exposure

__all__ = ["primary_header", "extension_header", "start_raw_file", "append_extension"]


def _sexagesimal(value_deg: float, hours: bool) -> str:
    value = value_deg / 15.0 if hours else value_deg
    sign = "-" if value < 0 else ""
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = ((value - d) * 60 - m) * 60
    return f"{sign}{d:02d}:{m:02d}:{s:0{6 if hours else 5}.{3 if hours else 2}f}"


def primary_header(exposure: Exposure, instrument: InstrumentSpec) -> fits.Header:
    """Primary header of a raw WFI file (no data)."""
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
    return h


def extension_header(chip: ChipSpec, geometry: RawGeometry, optics: ChipOptics, exposure: Exposure) -> fits.Header:
    """Header of one chip's image extension (geometry, gain, rough WCS)."""
    h = fits.Header()
    h["EXTNAME"] = (chip.name, "Extension name")
    h["HIERARCH ESO DET CHIP1 ID"] = (chip.name, "Detector chip identification")
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

