"""The engines that run DPU jobs: in this process, a local process pool, Dask distributed.

Every executor takes :class:`~awe.dpu.worker.JobSpec` s and runs
:func:`awe.dpu.worker.run_job` on them; :meth:`Executor.submit` returns a
handle, :meth:`Executor.outcome` waits for one and gives the job's record, or
raises :class:`WorkerLost` (the process running it died: the DPU retries the
job) or :class:`SchedulerGone` (the Dask scheduler cannot be reached: the job
is failed with that message).

- :class:`InProcess` (the default): runs each job at submission, one after the
  other, in this process (nothing to set up).
- :class:`ProcessPool`: ``concurrent.futures.ProcessPoolExecutor`` (``spawn``),
  ``workers`` processes; a dead process breaks the pool, which is made anew.
- :class:`Dask`: ``distributed`` — a ``LocalCluster`` of ``workers`` processes
  (one thread each), or an existing scheduler (``address='tcp://HOST:8786'``, its
  workers started with ``dask worker tcp://HOST:8786`` or ``awe dpu worker``), or
  any cluster object (``dask_jobqueue.SLURMCluster(...)``, see the README).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
from typing import Any

from awe._threads import limit_threads, thread_environment
from awe.dpu.worker import JobSpec, run_job

__all__ = ["Executor", "InProcess", "ProcessPool", "Dask", "WorkerLost", "SchedulerGone", "DPUError", "executor"]

log = logging.getLogger(__name__)


class DPUError(RuntimeError):
    """The DPU cannot do what was asked (unknown recipe, executor, job)."""


class WorkerLost(RuntimeError):
    """The worker running a job died before the job ended."""


class SchedulerGone(DPUError):
    """The Dask scheduler cannot be reached (never, or no longer)."""


class Executor:
    """Runs jobs; see the module documentation."""

    name = "executor"
    #: whether the submitting session's password may be handed to the workers (local processes only)
    local = True

    def submit(self, spec: JobSpec) -> Any:
        raise NotImplementedError

    def outcome(self, handle: Any, timeout: float | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def done(self, handle: Any) -> bool:
        return True

    def cancel(self, handle: Any) -> None:
        """Stop a job that has not started (a running one ends by itself; its row says cancelled)."""

    def close(self) -> None:
        """Release the engine's processes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class InProcess(Executor):
    """Every job at submission, in this process (its own session of the same user)."""

    name = "in-process"

    def submit(self, spec: JobSpec) -> Any:
        return run_job(spec)

    def outcome(self, handle: Any, timeout: float | None = None) -> dict[str, Any]:
        return dict(handle)


class ProcessPool(Executor):
    """A local pool of ``workers`` processes (``spawn``: each imports awe and opens its own session) of
    ``threads`` thread(s) each (:mod:`awe._threads`: so that the workers do not oversubscribe the cores)."""

    def __init__(self, workers: int = 2, threads: int = 1) -> None:
        self.workers, self.threads = int(workers), int(threads)
        self.name = f"process pool ({self.workers}x{self.threads})"
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=limit_threads, initargs=(self.threads,))
        return self._pool

    def submit(self, spec: JobSpec) -> Any:
        try:
            return self._executor().submit(run_job, spec)
        except cf.BrokenExecutor:
            self._pool = None  # a worker died: a new pool
            return self._executor().submit(run_job, spec)

    def done(self, handle: Any) -> bool:
        return bool(handle.done())

    def outcome(self, handle: Any, timeout: float | None = None) -> dict[str, Any]:
        try:
            return dict(handle.result(timeout))
        except cf.BrokenExecutor as exc:
            self._pool = None
            raise WorkerLost(f"a process of the pool died ({exc})") from None

    def cancel(self, handle: Any) -> None:
        handle.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Dask(Executor):
    """Dask distributed: a LocalCluster (default), an existing scheduler (``address``) or a cluster object.

    ``workers`` processes of ``threads`` thread(s) each for a LocalCluster. A
    worker killed mid-job is not retried by Dask itself (``allowed-failures``
    0 on a LocalCluster): the DPU retries the job up to its ``attempts``,
    counting them in the job's row.
    """

    def __init__(self, address: str | None = None, workers: int = 2, threads: int = 1, cluster: Any = None,
                 timeout: float = 10.0) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - a dependency of awe
            raise DPUError(f"the Dask executor needs the package 'distributed' ({exc}): pip install distributed") \
                from None
        self.address = address
        self._cluster = None
        try:
            if cluster is not None:
                self.client = Client(cluster, timeout=timeout)
                self.name = f"dask {type(cluster).__name__}"
                self.local = False
            elif address is not None:
                self.client = Client(address, timeout=timeout)
                self.name = f"dask {address}"
                self.local = address.startswith(("tcp://127.", "tcp://localhost", "inproc://"))
            else:
                # the dashboard on any free port (None is 8787: two clusters at once would clash)
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                                 dashboard_address=":0", host="127.0.0.1",
                                                 env=thread_environment(threads))
                self.client = Client(self._cluster, timeout=timeout)
                self.name = f"dask LocalCluster ({workers}x{threads})"
        except (OSError, TimeoutError) as exc:
            raise SchedulerGone(f"cannot reach the Dask scheduler at {address or 'the cluster'} within {timeout:g} s "
                                f"({type(exc).__name__}: {exc}): start it (`dask scheduler`) and its workers "
                                f"(`awe dpu worker {address or 'tcp://HOST:8786'}`), or check the address") from None

    def submit(self, spec: JobSpec) -> Any:
        try:
            return self.client.submit(run_job, spec, key=f"awe-job-{spec.job_id}-{id(spec):x}", pure=False,
                                      retries=0)
        except Exception as exc:
            if self.client.status in ("closed", "closing") or isinstance(exc, (OSError, TimeoutError)):
                raise SchedulerGone(f"the Dask scheduler {self.name} is gone ({type(exc).__name__}: {exc})") \
                    from None
            raise

    def done(self, handle: Any) -> bool:
        return bool(handle.done())

    def outcome(self, handle: Any, timeout: float | None = None) -> dict[str, Any]:
        from distributed import KilledWorker
        try:
            return dict(handle.result(timeout=timeout))
        except KilledWorker as exc:
            raise WorkerLost(f"the Dask worker running it died ({exc})") from None
        except (cf.CancelledError, OSError) as exc:
            raise SchedulerGone(f"the Dask scheduler {self.name} is gone ({type(exc).__name__}: {exc}): "
                                "the job's result is lost; restart the scheduler and dpu.rerun_failed()") from None
        except Exception as exc:
            if type(exc).__name__ in ("CommClosedError", "FutureCancelledError", "CancelledError") \
                    or self.client.status in ("closed", "closing", "connecting"):
                raise SchedulerGone(f"the Dask scheduler {self.name} is gone ({type(exc).__name__}: {exc}): "
                                    "restart the scheduler and dpu.rerun_failed()") from None
            raise

    def cancel(self, handle: Any) -> None:
        try:
            handle.cancel()
        except Exception:  # pragma: no cover - scheduler gone: nothing left to cancel
            pass

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None


def executor(kind: "str | Executor | None" = None, **options: Any) -> Executor:
    """An executor by name: ``'in-process'`` (default), ``'pool'``, ``'dask'`` (LocalCluster), or a scheduler
    address ``'tcp://HOST:8786'``."""
    if isinstance(kind, Executor):
        return kind
    if kind in (None, "in-process", "inprocess", "local"):
        return InProcess()
    if kind in ("pool", "processes", "process-pool"):
        return ProcessPool(**options)
    if kind in ("dask", "localcluster"):
        return Dask(**options)
    if isinstance(kind, str) and "://" in kind:
        return Dask(address=kind, **options)
    raise DPUError(f"unknown DPU executor {kind!r}: 'in-process' (default), 'pool', 'dask' (a LocalCluster), or a "
                   "Dask scheduler address 'tcp://HOST:8786'")
