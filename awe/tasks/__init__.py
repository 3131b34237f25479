"""Tasks: ingest, calibration and reduction steps (spec sections 6-8).

``ingest()`` itself stays in :mod:`awe.tasks.ingest`: a function of that name
here would hide the module.
"""

from awe.tasks.base import MissingCalibrationError, Task, TaskError
from awe.tasks.calibration import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,
                                   TwilightFlatTask)
from awe.tasks.ingest import IngestParams, IngestReport
from awe.tasks.reduce import FollowSatellitesTask, ReduceTask
from awe.tasks.gastrom import GAstromSourceListTask, GAstromTask

from awe.tasks.photometry import IlluminationCorrectionTask, PhotcatTask, PhotomTask
from awe.tasks.astrometry import AstrometricParametersTask
from awe.tasks.sourcelist import AssociateListTask, SourceListTask
__all__ = [
    "Task", "TaskError", "MissingCalibrationError",
    "BiasTask", "HotPixelsTask", "DomeFlatTask", "ColdPixelsTask", "TwilightFlatTask", "MasterFlatTask",
    "ReduceTask", "FollowSatellitesTask", "IngestReport", "IngestParams",
    "GAstromSourceListTask", "GAstromTask",
    "PhotcatTask", "PhotomTask", "IlluminationCorrectionTask",
    "AstrometricParametersTask",
    "SourceListTask", "AssociateListTask",
]
from awe.tasks.regrid import RegridTask
from awe.tasks.coadd import CoaddTask
__all__ += ["RegridTask", "CoaddTask"]
