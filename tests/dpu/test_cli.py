"""The command line: `awe make CLASS --plan`, `awe make CLASS`, `awe dpu run`, `awe dpu status`, `awe dpu wait`."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.dpu.conftest import copy_night


def _awe(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "awe.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["AWE_WORKDIR"])


def test_make_and_dpu_verbs(dpu_night_master, tmp_path):
    night = copy_night(dpu_night_master, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWE_")}
    env.update(AWE_HOME=str(night.root / "home"), AWE_WORKDIR=str(night.workdir), AWE_USER="tester",
               AWE_STORAGE=str(night.root / "storage"), PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               PYTHONWARNINGS="ignore")
    out = _awe(env, "make", "ReducedScienceFrame", "--object", "3C273", "--chip", "ccd50", "--plan")
    assert out.returncode == 0, out.stderr
    assert "Bias: 1 of 1 unit(s) to make" in out.stdout and "Reduce: 2 of 2" in out.stdout
    out = _awe(env, "dpu", "run", "Bias", "instrument=WFI", "chip=ccd51", "date=2003-03-03", "--commit")
    assert out.returncode == 0, out.stderr
    assert "1 done" in out.stdout
    out = _awe(env, "dpu", "run", "HotPixels", "instrument=WFI", "chip=ccd52", "date=2003-03-03", "--commit")
    assert out.returncode == 1 and "1 failed" in out.stdout and "no valid BiasFrame" in out.stderr
    out = _awe(env, "dpu", "status")
    assert out.returncode == 0, out.stderr
    assert "1 done, 1 failed" in out.stdout and "HotPixels" in out.stdout and "MissingCalibrationError" in out.stdout
    out = _awe(env, "dpu", "wait", "1", "--timeout", "60")
    assert out.returncode == 0 and "1 done" in out.stdout, out.stderr
    out = _awe(env, "make", "ReducedScienceFrame", "--object", "3C273", "--chip", "ccd50")
    assert out.returncode == 0, out.stderr
    out = _awe(env, "make", "ReducedScienceFrame", "--object", "3C273", "--chip", "ccd50")
    assert out.returncode == 0 and "nothing to do" in out.stdout, out.stdout + out.stderr
    out = _awe(env, "make")
    assert out.returncode != 0 and "--stale" in out.stderr
