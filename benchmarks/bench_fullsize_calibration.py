"""Calibration and reduction accuracy against the simulator's truth at full size (2142 x 4128 chips).

Simulates the course night's 16 calibration exposures and its standard-field
exposure at ``--scale`` (default 1: full size, ~2.4 GB), ingests them into a
throw-away embedded database, runs the spec's chain for one chip (BiasTask ...
MasterFlatTask, then ReduceTask on the standard field, commit=1) and prints the
issue's acceptance figures with their goals, and the time of each step.

    python benchmarks/bench_fullsize_calibration.py [--scale 1] [--chip ccd50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awe.config import load_settings  # noqa: E402
from awe import context  # noqa: E402
from awe.sim import Truth, simulate_night  # noqa: E402
from awe.image.weights import COSMIC  # noqa: E402
from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,  # noqa: E402
                       ReduceTask, TwilightFlatTask)
from awe.tasks.ingest import ingest  # noqa: E402
from tests._truth import chip_truth, flat_errors, star_pixels, trim, true_master_bias  # noqa: E402

CALIBRATION_EXPOSURES = [
    "2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890", "2003-03-03T19:18:48.680",
    "2003-03-03T19:20:11.815", "2003-03-03T19:21:15.723", "2003-03-03T19:22:22.821", "2003-03-03T19:23:24.843",
    "2003-03-03T19:24:24.163", "2003-03-03T19:25:31.810",
    "2003-03-03T19:45:17.277", "2003-03-03T19:46:58.069", "2003-03-03T19:48:27.232",
    "2003-03-03T23:46:15.975", "2003-03-03T23:48:12.051", "2003-03-03T23:50:42.573",
]
STANDARD = "2003-03-04T04:42:29.496"


def timed(label: str, fn, timings: dict):
    t0 = time.perf_counter()
    result = fn()
    timings[label] = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--chip", default="ccd50")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chip, timings = args.chip, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = timed("simulate", lambda: simulate_night(root / "raw", scale=args.scale, seed=args.seed,
                                                      only=CALIBRATION_EXPOSURES + [STANDARD]), timings)
        (root / "work").mkdir()
        context.connect(load_settings(home=str(root / "home"), workdir=str(root / "work"), user="bench",
                                      storage=str(root / "storage")), create_user=True)
        report = timed("ingest", lambda: ingest([raw]), timings)
        assert not report.failed, str(report)
        common = dict(instrument="WFI", chip=chip, commit=1)
        flat = dict(date="2003-03-03", filter="#844", **common)
        bias = timed("BiasTask", lambda: BiasTask(overscan=6, **common).execute()[0], timings)
        hot = timed("HotPixelsTask", lambda: HotPixelsTask(date="2003-03-03", **common).execute()[0], timings)
        dome = timed("DomeFlatTask", lambda: DomeFlatTask(**flat).execute()[0], timings)
        cold = timed("ColdPixelsTask", lambda: ColdPixelsTask(**flat).execute()[0], timings)
        twilight = timed("TwilightFlatTask", lambda: TwilightFlatTask(**flat).execute()[0], timings)
        master = timed("MasterFlatTask", lambda: MasterFlatTask(**flat).execute()[0], timings)
        index = int(chip[3:]) - 49
        reduced = timed("ReduceTask", lambda: ReduceTask(raw_filenames=[f"WFI.{STANDARD}_{index}.fits"],
                                                         commit=1).execute(), timings)
        red = next(p for p in reduced if type(p).__name__ == "ReducedScienceFrame")
        weight = next(p for p in reduced if type(p).__name__ == "WeightFrame")

        truth = Truth(raw)
        section = trim(truth, chip)
        row = chip_truth(truth, chip)
        residual = bias.load() - true_master_bias(truth, chip)
        normal = ~truth.hot_pixels(chip)[section]
        noise_ratio = float(np.std(residual[normal])) / (row["read_noise_adu"] / np.sqrt(bias.nframes))
        true_hot = truth.hot_pixels(chip)[section]
        found_hot = hot.mask()
        true_cold = truth.cold_pixels(chip, include_columns=False)[section]
        found_cold = cold.mask()
        good = ~(truth.cold_pixels(chip)[section] | found_cold)
        small, large = flat_errors(master.load(), truth, chip, good)
        _, dome_large = flat_errors(dome.load(), truth, chip, good)
        name = f"WFI.{STANDARD}.fits"
        cosmic = (weight.flags() & COSMIC) > 0
        true_cosmic = truth.cosmics(name, chip)[section] & ~truth.saturated(name, chip)[section]
        stars = star_pixels(truth, name, chip, cosmic.shape, red.background_rms)
        exposure = truth.exposure(name)
        rows = [
            ("master bias mean residual [ADU]", float(np.mean(residual[normal])), "|x| < 0.5"),
            ("master bias noise / (RN/sqrt(N))", noise_ratio, "within 20 %"),
            ("read noise / truth", bias.read_noise_adu / row["read_noise_adu"], "within 5 %"),
            ("gain (dome) / truth", dome.gain / row["gain"], "within 5 %"),
            ("gain (twilight) / truth", twilight.gain / row["gain"], "within 5 %"),
            ("hot pixels found", (found_hot & true_hot).sum() / max(true_hot.sum(), 1), ">= 0.95"),
            ("hot pixels false fraction", (found_hot & ~true_hot).sum() / found_hot.size, "< 0.001"),
            ("cold pixels found", (found_cold & true_cold).sum() / max(true_cold.sum(), 1), ">= 0.95"),
            ("master flat pixel-scale rms error", small, "< 0.005"),
            ("master flat large-scale rms error", large, "< 0.003"),
            ("dome flat alone large-scale rms error", dome_large, "> master's"),
            ("standard field: seeing / truth", red.seeing / exposure["seeing_arcsec"], "within 10 %"),
            ("standard field: cosmic-ray pixels found", cosmic[true_cosmic].mean(), ">= 0.90"),
            ("standard field: star pixels taken as cosmics", (cosmic & stars).sum() / max(stars.sum(), 1),
             "< 0.001"),
        ]
        print(f"scale {args.scale}, chip {chip}, seed {args.seed}; raw size "
              f"{sum(p.stat().st_size for p in raw.glob('WFI.*.fits')) / 1e9:.2f} GB")
        for label, value, goal in rows:
            print(f"  {label:40s} {value:10.5f}   goal {goal}")
        print("  times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        context.close()


if __name__ == "__main__":
    main()
