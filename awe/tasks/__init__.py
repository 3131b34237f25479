"""Tasks: ingest, calibration and reduction steps (spec sections 6-8)."""

from awe.tasks.base import MissingCalibrationError, Task, TaskError

__all__ = ["Task", "TaskError", "MissingCalibrationError"]
