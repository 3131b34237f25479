"""Thread limits for a worker process that shares the machine's cores with others (the DPU's pool and Dask
workers): ``AWE_THREADS`` (awe's own stack combinations, :func:`awe.image.combine.threads`) and the BLAS/OpenMP
libraries' variables. Imports nothing heavy, so that a pool's initializer sets them before numpy loads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

#: the variables a worker of ``n`` threads gets (numpy's BLAS reads its own when it is first imported)
THREAD_VARIABLES = ("AWE_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    """The environment of a worker of ``threads`` threads."""
    return {name: str(max(int(threads), 1)) for name in THREAD_VARIABLES}


def limit_threads(threads: int) -> None:
    """Set the thread limits of this process (a pool's initializer: before numpy is imported)."""
    os.environ.update(thread_environment(threads))


# ---------------------------------------------------------------------- BLAS threads of this process
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
                 "openblas_set_num_threads")
_blas_libraries: list | None = None
_blas_lock = threading.Lock()


def _blas() -> list:
    """``(set_num_threads, get_num_threads)`` of every OpenBLAS loaded in this process (Linux; else none)."""
    global _blas_libraries
    if _blas_libraries is None:
        import ctypes
        import re
        found = []
        try:
            with open("/proc/self/maps") as fh:
                paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
        except OSError:
            paths = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in _BLAS_SETTERS:
                getter = name.replace("set_num", "get_num")
                if hasattr(lib, name) and hasattr(lib, getter):
                    found.append((getattr(lib, name), getattr(lib, getter)))
                    break
        _blas_libraries = found
    return _blas_libraries


@contextlib.contextmanager
def blas_threads(threads: int = 1) -> Iterator[None]:
    """Run the block with numpy's OpenBLAS limited to ``threads`` threads (then as before).

    OpenBLAS's idle threads spin for a while after every product: for the products of a few hundred million
    multiplications awe makes (the spline of :func:`awe.image.flat.smooth_large_scale`), that costs more CPU
    than the product itself (0.1-0.25 s for one of 30 ms), and the results are the same. Without an OpenBLAS
    found, or when another thread of the process is in such a block, the block runs as it is.
    """
    libraries = _blas() if _blas_lock.acquire(blocking=False) else None
    if libraries is None:
        yield
        return
    try:
        before = [int(get()) for _, get in libraries]
        for set_threads, _ in libraries:
            set_threads(int(threads))
        try:
            yield
        finally:
            for (set_threads, _), n in zip(libraries, before):
                set_threads(n)
    finally:
        _blas_lock.release()
