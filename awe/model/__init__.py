"""The persistent classes: reference data, raw frames, calibrations and science products."""

from awe.model.entities import Chip, Filter, Instrument, ensure_instrument
from awe.model.frames import (BaseFrame, QualityFlags, RawBiasFrame, RawDomeFlatFrame, RawFrame,
                              RawScienceFrame, RawStandardFrame, RawTwilightFlatFrame, product_filename)

__all__ = [
    "Instrument", "Chip", "Filter", "ensure_instrument",
    "BaseFrame", "RawFrame", "RawBiasFrame", "RawDomeFlatFrame", "RawTwilightFlatFrame", "RawScienceFrame",
    "RawStandardFrame", "QualityFlags", "product_filename",
]
