"""Thread limits for a worker process that shares the machine's cores with others (the DPU's pool and Dask
workers): ``AWE_THREADS`` (awe's own stack combinations, :func:`awe.image.combine.threads`) and the BLAS/OpenMP
libraries' variables. Imports nothing heavy, so that a pool's initializer sets them before numpy loads.
"""

from __future__ import annotations

import os

#: the variables a worker of ``n`` threads gets (numpy's BLAS reads its own when it is first imported)
THREAD_VARIABLES = ("AWE_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    """The environment of a worker of ``threads`` threads."""
    return {name: str(max(int(threads), 1)) for name in THREAD_VARIABLES}


def limit_threads(threads: int) -> None:
    """Set the thread limits of this process (a pool's initializer: before numpy is imported)."""
    os.environ.update(thread_environment(threads))
