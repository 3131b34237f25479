"""Ingest throughput on one full-size WFI exposure, against a plain astropy read-and-write.

    python benchmarks/bench_ingest.py [--raw WFI.....fits] [--repeat 3]

Without ``--raw`` the simulator writes one full-size raw file (8 x 2142 x 4128
16-bit chips, 141 MB; about half a minute). "awe" is :func:`awe.tasks.ingest.ingest`
into a fresh embedded database and local data storage (read, classify, split
into 8 per-chip files with merged headers, imstat, sanity checks, store with
checksums, one commit); "astropy" reads the same file and writes each
extension to its own file, nothing else. Also compares the histogram imstat of
ingest with :func:`awe.image.stats.imstat` on one chip.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

RAW = "WFI.2003-03-04T04:42:29.496"


def _best(function, repeat: int) -> tuple[float, float]:
    """Shortest wall-clock and CPU time of ``repeat`` runs."""
    wall, cpu = [], []
    for i in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        function(i)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def plain_astropy(raw: Path, outdir: Path) -> None:
    """The peer: read the MEF, write every image extension (primary header merged) to its own file."""
    with fits.open(raw, memmap=False) as hdul:
        primary = hdul[0].header
        for n, hdu in enumerate(hdul[1:], 1):
            header = primary.copy()
            header.update(hdu.header)
            for key in ("XTENSION", "PCOUNT", "GCOUNT", "EXTEND"):
                header.remove(key, ignore_missing=True)
            fits.PrimaryHDU(hdu.data, header=header).writeto(outdir / f"{raw.name[:-5]}_{n}.fits", overwrite=True)


def awe_ingest(raw: Path, home: Path) -> None:
    from awe.config import load_settings
    from awe import context
    from awe.tasks.ingest import ingest

    home.mkdir(parents=True)
    context.connect(load_settings(home=str(home), storage=str(home / "storage"), workdir=str(home), user="bench"),
                    create_user=True)
    try:
        report = ingest([raw])
        if len(report.ingested) != 1:
            raise RuntimeError(f"ingest failed: {report}")
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="a full-size raw WFI file (default: simulate one)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="awe-bench-ingest-") as tmp:
        tmp = Path(tmp)
        raw = args.raw
        if raw is None:
            from awe.sim import simulate_night
            print("simulating one full-size WFI exposure ...", flush=True)
            start = time.perf_counter()
            simulate_night(tmp / "night", scale=1.0, seed=1, only=[RAW])
            print(f"  done in {time.perf_counter() - start:.1f} s")
            raw = tmp / "night" / f"{RAW}.fits"
        megabytes = raw.stat().st_size / 1e6
        with fits.open(raw) as hdul:
            n_ext = len(hdul) - 1
            shape = hdul[1].data.shape
            chip = np.array(hdul[1].data)
        print(f"raw file {raw.name}: {megabytes:.1f} MB, {n_ext} extensions of {shape[1]} x {shape[0]}")

        ours = _best(lambda i: awe_ingest(raw, tmp / f"home{i}"), args.repeat)
        (tmp / "plain").mkdir()
        peer = _best(lambda i: plain_astropy(raw, tmp / "plain"), args.repeat)
        for label, (wall, cpu) in (("awe ingest", ours), ("astropy read + write", peer)):
            print(f"{label:22s}: {wall:6.2f} s wall {megabytes / wall:7.1f} MB/s | {cpu:6.2f} s CPU "
                  f"{megabytes / cpu:7.1f} MB/s")
        print(f"ratio awe / astropy   : {ours[0] / peer[0]:6.2f} wall, {ours[1] / peer[1]:6.2f} CPU "
              "(time; >1 means ingest is slower)")

        from awe.image.stats import imstat
        from awe.tasks.ingest import raw_imstat
        hist = _best(lambda i: raw_imstat(chip), 5)[1]
        generic = _best(lambda i: imstat(chip), 5)[1]
        print(f"imstat of one chip    : histogram {hist * 1e3:.0f} ms, awe.image.stats.imstat {generic * 1e3:.0f} ms"
              f" CPU (x{generic / hist:.1f})")


if __name__ == "__main__":
    main()
