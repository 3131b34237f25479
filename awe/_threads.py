"""Thread limits for a worker process that shares the machine's cores with others (the DPU's pool and Dask
workers): ``AWE_THREADS`` (awe's own stack combinations, :func:`awe.image.combine.threads`) and the BLAS/OpenMP
libraries' variables. Imports nothing heavy, so that a pool's initializer sets them before numpy loads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

#: the variables a worker of ``n`` threads gets (numpy's BLAS reads its own when it is first imported)
THREAD_VARIABLES = ("AWE_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    """The environment of a worker of ``threads`` threads."""
    return {name: str(max(int(threads), 1)) for name in THREAD_VARIABLES}


def limit_threads(threads: int) -> None:
    """Set the thread limits of this process (a pool's initializer: before numpy is imported)."""
    os.environ.update(thread_environment(threads))


# ---------------------------------------------------------------------- BLAS threads of this process
_blas_controller: Any = None
_blas_lock = threading.Lock()


@contextlib.contextmanager
def blas_threads(threads: int = 1) -> Iterator[None]:
    """Run the block with numpy's OpenBLAS limited to ``threads`` threads (then as before).

    OpenBLAS's idle threads spin for a while after every product: for the products of a few hundred million
    multiplications awe makes (the spline of :func:`awe.image.flat.smooth_large_scale`), that costs more CPU
    than the product itself (0.1-0.25 s for one of 30 ms), and the results are the same. The limit is set
    through ``threadpoolctl``; when another thread of the process is in such a block, the block runs as it is.
    """
    global _blas_controller
    if not _blas_lock.acquire(blocking=False):
        yield
        return
    try:
        if _blas_controller is None:
            from threadpoolctl import ThreadpoolController
            _blas_controller = ThreadpoolController()
        with _blas_controller.limit(limits=int(threads), user_api="blas"):
            yield
    finally:
        _blas_lock.release()
