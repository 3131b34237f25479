"""The DPU (distributed processing unit) and target processing.

The prompt's ``dpu`` is this module: ``dpu.run(recipe, ...)``, ``dpu.wait_for_jobs()``,
``dpu.get_logs()``, ``dpu.get_jobids()``, ``dpu.cancel_job(id)``, ``dpu.get_job_result(id)``,
``dpu.rerun_failed()``, ``dpu.status()``, ``dpu.use(executor)`` act on its default
:class:`~awe.dpu.runner.DPU` (in-process until ``dpu.use('dask')``, ``dpu.use('pool')`` or
``dpu.use('tcp://HOST:8786')``). :func:`~awe.dpu.make.make` works out and runs what a target product
needs (``make(ReducedScienceFrame, object='3C273', chip='ccd50')``). Jobs are rows of ``dpu_jobs``
(:mod:`awe.dpu.jobs`); the engines are in :mod:`awe.dpu.executors`.
"""

from __future__ import annotations

from typing import Any

from awe.dpu.executors import DPUError, SchedulerGone
from awe.dpu.runner import DPU, RECIPES, describe_recipes, dpu as default, recipes

__all__ = ["DPU", "default", "RECIPES", "recipes", "describe_recipes", "DPUError", "SchedulerGone", "run",
           "wait_for_jobs", "get_logs", "get_jobids", "cancel_job", "get_job_result", "rerun_failed", "status",
           "use", "close"]


def run(recipe: str, **keywords: Any) -> list[int]:
    """:meth:`DPU.run` of the default DPU."""
    return default.run(recipe, **keywords)


def wait_for_jobs(timeout: float | None = None, quiet: bool = False) -> list[Any]:
    """:meth:`DPU.wait_for_jobs` of the default DPU."""
    return default.wait_for_jobs(timeout, quiet)


def get_logs(job_ids: Any = None, quiet: bool = False) -> str:
    """:meth:`DPU.get_logs` of the default DPU."""
    return default.get_logs(job_ids, quiet)


def get_jobids() -> list[int]:
    """:meth:`DPU.get_jobids` of the default DPU."""
    return default.get_jobids()


def cancel_job(job_id: int) -> bool:
    """:meth:`DPU.cancel_job` of the default DPU."""
    return default.cancel_job(job_id)


def get_job_result(job_id: int) -> list[dict[str, Any]]:
    """:meth:`DPU.get_job_result` of the default DPU."""
    return default.get_job_result(job_id)


def rerun_failed() -> list[int]:
    """:meth:`DPU.rerun_failed` of the default DPU."""
    return default.rerun_failed()


def status(ids: Any = None) -> dict[str, int]:
    """:meth:`DPU.status` of the default DPU."""
    return default.status(ids)


def use(executor: Any = None, **options: Any) -> DPU:
    """:meth:`DPU.use` of the default DPU: ``None`` (in-process), 'pool', 'dask', 'tcp://HOST:8786'."""
    return default.use(executor, **options)


def close() -> None:
    """Release the default DPU's executor."""
    default.close()
