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
    child.expect("%tb prints the last traceback")
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
              "missing = [n for n in ('RawBiasFrame', 'BiasTask', 'ReduceTask', 'Pars', 'context', 'pylab', 'os',"
              " 'RegridTask', 'dpu', 'SourceList')"
              " if n not in names or n not in globals()]\n"
              "print('missing', missing)\n"
              "print(context.get_current_project().name)\n"
              "print('placeholders', [issubclass(globals()[n], awe.Planned) for n in ('RegridTask', 'SourceList',"
              " 'CoaddedRegriddedFrame', 'AssociateListTask')])\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "missing []" in out.stdout
    assert "AWRSILVOTTI" in out.stdout
    assert "placeholders [False, False, False, False]" in out.stdout


def test_a_planned_name_says_which_section_it_belongs_to(monkeypatch):
    """A name of the course awe does not implement yet is a placeholder that names its spec section."""
    import awe
    monkeypatch.setitem(awe.PLANNED, "FringeTask", ("section 11", "fringe correction"))
    awe.planned.cache_clear()
    placeholder = awe.__getattr__("FringeTask")
    with pytest.raises(awe.NotImplementedYetError, match=r"FringeTask is part of the spec \(section 11: fringe "
                       r"correction\) but not implemented yet in awe"):
        placeholder(instrument="WFI")
    with pytest.raises(awe.NotImplementedYetError):
        _ = placeholder.filename
    assert "FringeTask" in awe.namespace()
    awe.planned.cache_clear()


_TEST_BACKEND = """
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg


class FigureCanvas(FigureCanvasAgg):
    manager_class = FigureManagerBase


FigureManager = FigureManagerBase
"""


def test_prompt_keeps_the_backend_and_shows_awe_errors_in_one_line(tmp_path, env):
    """An interactive session's backend survives inspect figures; awe's errors are one line, %tb has the rest."""
    (tmp_path / "awe_test_backend.py").write_text(_TEST_BACKEND)
    env = dict(env, MPLBACKEND="module://awe_test_backend", PYTHONPATH=str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    child = pexpect.spawn(_awe(), cwd=str(work), env=env, encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect("awe> ")

    def run(line: str) -> str:
        child.sendline(line)
        child.expect("awe> ")
        return child.before

    run("import matplotlib, types; from awe.image.inspect import new_figure, show_image")
    run("from awe.model._io import inspect_image; from awe.model.science import draw_correction")
    run("fig, ax = new_figure(); show_image(ax, np.ones((8, 8)), 'flat')")
    run("frame = types.SimpleNamespace(load=lambda: np.arange(64.).reshape(8, 8), imstat=None, filename='x.fits')")
    run("inspect_image(frame); draw_correction(np.ones((8, 8)), 'illumination')")
    assert "backend=module://awe_test_backend" in run("print('backend=' + matplotlib.get_backend())")

    shown = run("BiasTask(instrument='WFI', chip='ccd50', overscan=6, commit=0).execute()")
    lines = [line for line in shown.splitlines()[1:] if line.strip()]
    errors = [line for line in lines if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("TaskError: ") and "[%tb shows the traceback]" in errors[0]
    assert "Traceback" not in shown
    assert "Traceback" in run("%tb") and "TaskError" in child.before

    shown = run("RegridTask(instrument='WFI', chip='ccd50', object='3C*', inspect=1, commit=0).execute()")
    assert "TaskError: " in shown and "Traceback" not in shown
    shown = run("Pars(BiasTask).BiasFrame.process_params.SIGMA_CLIP = 'high'")
    assert "ParameterError: parameter SIGMA_CLIP takes a float" in shown and "Traceback" not in shown
    shown = run("1/0")  # the user's own errors keep IPython's traceback
    assert "ZeroDivisionError" in shown and "Traceback" in shown
    child.sendline("exit()")
    child.expect(pexpect.EOF)


def test_backend_is_chosen_once_and_only_without_a_display(tmp_path):
    imported = ("import os, matplotlib, awe\n"
                "first = awe.choose_backend()\n"                    # DISPLAY is set: leave it to matplotlib
                "untouched = matplotlib.rcParams._get_backend_or_none()\n"
                "del os.environ['DISPLAY']\n"
                "second = awe.choose_backend()\n"                   # no display: Agg
                "chosen = matplotlib.rcParams._get_backend_or_none()\n"
                "os.environ['MPLBACKEND'] = 'pdf'\n"
                "third = awe.choose_backend()\n"                    # the user's MPLBACKEND wins
                "print(first, untouched, second, chosen, third)\n")
    not_yet = ("import os, sys, awe\n"                             # the command's verbs: matplotlib not imported
               "del os.environ['DISPLAY']\n"
               "first = awe.choose_backend()\n"
               "assert 'matplotlib' not in sys.modules\n"
               "import matplotlib.pyplot as plt\n"
               "second = awe.choose_backend()\n"                   # pyplot in use: the session chose
               "print(first, plt.get_backend(), second)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=":99", PYTHONWARNINGS="error")
    outputs = []
    for script in (imported, not_yet):
        out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout.split())
    assert [[word.lower() for word in words] for words in outputs] == [["none", "none", "agg", "agg", "none"],
                                                                      ["agg", "agg", "none"]]


def test_no_library_module_chooses_the_backend():
    import awe
    root = Path(awe.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "__init__.py" or p.parent != root
                 if "matplotlib.use(" in p.read_text() or "switch_backend(" in p.read_text()]
    assert offenders == []


def test_cli_errors_are_one_clear_line(tmp_path, env):
    env = dict(env, AWE_PROJECT="NOPE")
    out = subprocess.run([_awe(), "project", "list"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert "unknown project 'NOPE'" in out.stderr and "Traceback" not in out.stderr


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
        return exc
    raise AssertionError("nothing raised")


def test_which_errors_are_shown_in_one_line():
    from awe.demo import _fmt, run_course
    from awe.shell import is_awe_error, one_line
    from awe.tasks import MissingCalibrationError

    def missing():
        raise MissingCalibrationError("no valid BiasFrame for x.fits;\n run BiasTask first")

    domain = _raised(missing)
    assert is_awe_error(domain)
    assert one_line(domain) == ("MissingCalibrationError: no valid BiasFrame for x.fits; run BiasTask first  "
                                "[%tb shows the traceback]")
    validation = _raised(lambda: run_course("night", chips=["ccd99"]))  # a builtin ValueError raised by awe
    assert type(validation) is ValueError and is_awe_error(validation) and "ccd99" in str(validation)
    assert not is_awe_error(_raised(lambda: _fmt(object(), ".2f")))  # a TypeError of a bad call in awe: a bug
    assert not is_awe_error(_raised(lambda: 1 / 0))  # the user's own code
