"""Throughput of the local data storage against a plain ``shutil.copy``.

``DataStorage.store`` hashes (SHA-256), writes a temporary file, fsyncs it and
links it into place; ``retrieve`` copies and verifies the checksum. The peer is
``shutil.copy`` of the same file (with and without an fsync, which ``store``
always does). Files are in the page cache: this measures the CPU and memory
cost of the storage layer, not the disk.

Run::

    python benchmarks/bench_storage.py [--size-mb 32] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from awe.storage import DataStorage, sha256_file

NAME = "Sci-AWUSER-WFI-----#844-ccd50-Red---Sci-54637.9045189-f077a92d.fits"


def _median_time(action: Callable[[], object], repeat: int, reset: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(repeat):
        reset()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _copy_fsync(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    nbytes = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="awe-bench-storage-") as tmp:
        root = Path(tmp)
        src = root / "work" / NAME
        src.parent.mkdir()
        src.write_bytes(np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
        ds = DataStorage(root / "ds")
        out = root / "out"
        copy_dst = root / "copy.fits"

        def unstore() -> None:
            if ds.exists(NAME):
                ds.delete(NAME)

        def unretrieve() -> None:
            (out / NAME).unlink(missing_ok=True)

        def uncopy() -> None:
            copy_dst.unlink(missing_ok=True)

        results = {
            "sha256_file": _median_time(lambda: sha256_file(src), args.repeat),
            "shutil.copy": _median_time(lambda: shutil.copy(src, copy_dst), args.repeat, uncopy),
            "shutil.copy + fsync": _median_time(lambda: _copy_fsync(src, copy_dst), args.repeat, uncopy),
            "DataStorage.store": _median_time(lambda: ds.store(src), args.repeat, unstore),
        }
        digest = ds.store(src)
        results["DataStorage.store (identical, no-op)"] = _median_time(lambda: ds.store(src), args.repeat)
        results["DataStorage.retrieve"] = _median_time(lambda: ds.retrieve(NAME, out), args.repeat, unretrieve)
        results["DataStorage.retrieve (checksum)"] = _median_time(
            lambda: ds.retrieve(NAME, out, checksum=digest), args.repeat, unretrieve
        )
        results["DataStorage.open (checksum)"] = _median_time(lambda: ds.open(NAME, checksum=digest), args.repeat)

    base = results["shutil.copy"]
    print(f"file of {args.size_mb} MB, median of {args.repeat} runs, local folder")
    print(f"{'operation':40s} {'seconds':>9s} {'MB/s':>8s} {'time / shutil.copy':>19s}")
    for label, seconds in results.items():
        print(f"{label:40s} {seconds:9.4f} {args.size_mb / seconds:8.0f} {seconds / base:19.2f}")


if __name__ == "__main__":
    main()
