"""Smoke test of benchmarks/bench_night.py: the night at scale 1/8 on one chip to ReduceTask, both sides (no timing;
``--until reduce``: the coadd chain needs the AstrOmatic tools)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_night.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_night", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_night"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_night_runs_both_sides_on_the_same_data(tmp_path, capsys):
    bench = _load_bench()
    # 1/8 is the smallest scale whose hot pixel maps pass their QC (at 1/16 the hot columns exceed 1 %)
    result = bench.main(["--scale", "0.125", "--chips", "ccd50", "--until", "reduce"], workdir=tmp_path)

    table = capsys.readouterr().out
    for awe_step, floor_step in bench.STEPS:
        assert result.awe[awe_step].runs == 1 and result.awe[awe_step].wall > 0
        assert any(line.startswith(awe_step) for line in table.splitlines())
        if floor_step:
            assert result.floor[floor_step].runs == 1 and floor_step in table
    assert "total" in table
    assert not any(step in result.awe for step, _ in bench.COADD_STEPS)  # stopped after ReduceTask

    # 9 standard-field and 6 science exposures of ccd50, reduced by both
    assert len(result.awe_reduced) == 15
    assert set(result.floor_reduced) == set(result.awe_reduced)
    for name, (shape, awe_median) in result.awe_reduced.items():
        floor = fits.getdata(result.floor_reduced[name])
        assert floor.shape == shape, name
        floor_median = float(np.median(floor))
        assert abs(floor_median / awe_median - 1) < 0.03, (name, floor_median, awe_median)
