"""The awe prompt (spec section 3) in a real terminal, and ``from awe import *``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest


@pytest.fixture
def env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWE_")}
    env.update(AWE_HOME=str(tmp_path / "home"), AWE_USER="AWRSilVOTTI", HOME=str(tmp_path), TERM="dumb",
               MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    return env


def _awe() -> str:
    return str(Path(sys.executable).with_name("awe"))


def test_prompt_banner_namespace_history(tmp_path, env):
    work = tmp_path / "3C273"
    work.mkdir()
    child = pexpect.spawn(_awe(), cwd=str(work), env=env, encoding="utf-8", timeout=30, dimensions=(40, 200))
    child.expect("Current profile:")
    child.expect(r"- username : AWRSilVOTTI")
    child.expect(r"- project  : AWRSILVOTTI")
    child.expect("awe> ")
    child.sendline("(2-2*3+4**2)/2.")
    child.expect("6.0")
    child.expect("awe> ")
    child.sendline("print(len(RawBiasFrame.instrument.name == 'WFI'), context.get_current_project().name)")
    child.expect("0 AWRSILVOTTI")
    child.expect("awe> ")
    child.sendline("print(type(Pars(BiasTask)).__name__, pylab.__name__, os.sep)")
    child.expect("Pars matplotlib.pylab /")
    child.expect("awe> ")
    child.sendline("exit()")
    child.expect(pexpect.EOF)
    assert (work / ".awehistory").is_file()


def test_star_import_gives_the_prompt_namespace(tmp_path, env):
    script = ("from awe import *\n"
              "import awe\n"
              "names = set(awe.namespace())\n"
              "missing = [n for n in ('RawBiasFrame', 'BiasTask', 'ReduceTask', 'Pars', 'context', 'pylab', 'os')"
              " if n not in names or n not in globals()]\n"
              "print('missing', missing)\n"
              "print(context.get_current_project().name)\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "missing []" in out.stdout
    assert "AWRSILVOTTI" in out.stdout


def test_cli_errors_are_one_clear_line(tmp_path, env):
    env = dict(env, AWE_PROJECT="NOPE")
    out = subprocess.run([_awe(), "project", "list"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert "unknown project 'NOPE'" in out.stderr and "Traceback" not in out.stderr
