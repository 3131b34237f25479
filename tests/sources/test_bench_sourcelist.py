"""Smoke test of benchmarks/bench_sourcelist.py at scale 1/8 (awe's side; SExtractor's too when installed)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sourcelist.py"


def test_bench_sourcelist_runs_at_small_scale(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_sourcelist", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sourcelist"] = module
    spec.loader.exec_module(module)
    peer = shutil.which("source-extractor") or shutil.which("sex")
    args = ["--scale", "0.125", "--repeat", "1", "--workdir", str(tmp_path)] + ([] if peer else ["--no-peer"])
    results = module.main(args)
    out = capsys.readouterr().out
    assert "completeness_snr30" in out
    awe = results["awe"]
    # measured at this scale: 233 sources, every clean star at S/N >= 30 found, 1 spurious
    assert awe["n_sources"] > 150 and awe["completeness_snr30"] >= 0.95 and awe["spurious"] <= 5
    assert 0 <= awe["stars_class_gt_0.5"] <= 1 and awe["seconds"] > 0
    if peer:
        assert results["sextractor"]["n_sources"] > 150 and results["time_ratio"] > 0
        assert awe["completeness_snr5"] >= results["sextractor"]["completeness_snr5"] - 0.05
