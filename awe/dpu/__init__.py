"""The DPU (distributed processing unit) and target processing.

``dpu`` is the prompt's :class:`~awe.dpu.runner.DPU` (``dpu.run(recipe, ...)``,
``dpu.wait_for_jobs()``, ``dpu.get_logs()``, ...); :func:`~awe.dpu.make.make`
works out and runs what a target product needs (``make(ReducedScienceFrame,
object='3C273', chip='ccd50')``). Jobs are rows of ``dpu_jobs``
(:mod:`awe.dpu.jobs`); the engines are in :mod:`awe.dpu.executors`.
"""

from awe.dpu.executors import DPUError, SchedulerGone
from awe.dpu.runner import DPU, RECIPES, describe_recipes, dpu, recipes

__all__ = ["DPU", "dpu", "RECIPES", "recipes", "describe_recipes", "DPUError", "SchedulerGone", "make"]


def __getattr__(name: str):
    if name == "make":
        from awe.dpu.make import make
        return make
    raise AttributeError(f"module 'awe.dpu' has no attribute {name!r}")
