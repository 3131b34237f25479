"""Tasks: ingest, calibration and reduction steps (spec sections 6-8)."""

from awe.tasks.base import MissingCalibrationError, Task, TaskError
from awe.tasks.calibration import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,
                                   TwilightFlatTask)

__all__ = ["Task", "TaskError", "MissingCalibrationError"]
__all__ += ["BiasTask", "HotPixelsTask", "DomeFlatTask", "ColdPixelsTask", "TwilightFlatTask", "MasterFlatTask"]
from awe.tasks.reduce import ReduceTask  # noqa: E402

__all__ += ["ReduceTask"]
# ingest() stays in awe.tasks.ingest: a function of that name here would hide the module
from awe.tasks.ingest import IngestParams, IngestReport  # noqa: E402

__all__ += ["IngestReport", "IngestParams"]
