"""The persistent classes: reference data, raw frames, calibrations and science products."""

from awe.model.entities import Chip, Filter, Instrument, ensure_instrument
from awe.model.frames import (BaseFrame, QualityFlags, RawBiasFrame, RawDomeFlatFrame, RawFrame,
                              RawScienceFrame, RawStandardFrame, RawTwilightFlatFrame, product_filename)
from awe.model.calibration import (BiasFrame, ColdPixelMap, DomeFlatFrame, HotPixelMap, MasterFlatFrame,
                                   TwilightFlatFrame)
from awe.model.refcat import ReferenceCatalog, ReferenceSource, load_refcat, refcat_box, refcat_sources
from awe.model.science import (IlluminationCorrection, IlluminationFit, ReducedScienceFrame, SatelliteMap,
                               WeightFrame)
from awe.model.gastrom import GAstrometric, GAstromSource, GAstromSourceList

from awe.model.photometry import PhotometricParameters, PhotSrc, PhotSrcCatalog
from awe.model.astrometry import AstrometricMatch, AstrometricParameters, best_wcs
from awe.model.sourcelist import AssociateList, Association, Source, SourceList
import awe.dpu.jobs  # noqa: E402,F401  (registers the dpu_jobs table)
__all__ = [
    "Instrument", "Chip", "Filter", "ensure_instrument",
    "BaseFrame", "RawFrame", "RawBiasFrame", "RawDomeFlatFrame", "RawTwilightFlatFrame", "RawScienceFrame",
    "RawStandardFrame", "QualityFlags", "product_filename",
    "ReferenceCatalog", "ReferenceSource", "load_refcat", "refcat_sources", "refcat_box",
    "BiasFrame", "HotPixelMap", "DomeFlatFrame", "ColdPixelMap", "TwilightFlatFrame", "MasterFlatFrame",
    "ReducedScienceFrame", "WeightFrame", "SatelliteMap", "IlluminationCorrection", "IlluminationFit",
    "GAstromSourceList", "GAstromSource", "GAstrometric",
    "PhotSrcCatalog", "PhotSrc", "PhotometricParameters",
    "AstrometricParameters", "AstrometricMatch", "best_wcs",
    "SourceList", "Source", "AssociateList", "Association",
]
from awe.model.regrid import RegridGrid, RegriddedFrame
from awe.model.coadd import CoaddedRegriddedFrame
__all__ += ["RegridGrid", "RegriddedFrame", "CoaddedRegriddedFrame"]
