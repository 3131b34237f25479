"""``awe demo`` as a newcomer runs it — the whole course night, all eight chips — then the prompt command it ends
with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from awe.config import load_settings
from awe.demo import prepare_prompt
from awe.sim import Truth


def _awe() -> str:
    return str(Path(sys.executable).with_name("awe"))


@pytest.fixture
def env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWE_")}
    env.update(HOME=str(tmp_path), TERM="dumb", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    return env


def test_demo_then_its_prompt_command_opens_its_data(tmp_path, env):
    """The course night end to end at test scale (all 8 chips), in-process: the coadd of the 48 frames of 3C273
    and its source list by target processing."""
    work = tmp_path / "awe-work"
    work.mkdir()
    demo_env = dict(env, AWE_HOME=str(tmp_path / "awe-home"), AWE_USER="observer")
    out = subprocess.run([_awe(), "demo", "--scale", "0.125"], env=demo_env, cwd=work,
                         capture_output=True, text=True, timeout=900)
    lines = out.stdout.splitlines()
    assert out.returncode in (0, 1), out.stderr
    # a screenful of summary, progress bars instead of the log, the detail in the log file: on the screen only
    # the errors, one line each (their tracebacks are in the log), the warnings counted
    assert len(lines) <= 60, out.stdout
    assert "INFO" not in out.stderr and "sha256" not in out.stderr and "WARNING" not in out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert re.search(r"^\d+ warning\(s\) logged \(quality checks, seeing, \.\.\.\), each in ", out.stdout, re.M)
    steps = ("Bias", "HotPixels", "DomeFlat", "ColdPixels", "TwilightFlat", "MasterFlat", "Reduce", "Astrometry",
             "GAstromSL", "GAstrom", "Photcat", "Photom", "Regrid", "Coadd")
    for step in ("simulate", "ingest") + steps:
        assert re.search(rf"{step} *: 100%", out.stderr), step
        assert re.search(rf"^  {step} +\d+\.\d s ", out.stdout, re.M), step
    log = (work / "awe.log").read_text()
    assert log.count("sha256") >= 248  # every frame ingested
    for task in ("BiasTask", "ReduceTask", "AstrometricParametersTask", "PhotcatTask", "PhotomTask",
                 "GAstromSourceListTask", "GAstromTask", "RegridTask", "CoaddTask", "SourceListTask"):
        assert f"{task} started" in log, task
    assert f"Every step in detail: {work / 'awe.log'}" in lines
    assert "31 file(s) ingested (248 frames), 0 skipped, 0 failed into ALL" in out.stdout
    truth = Truth(work / "course-night")
    offsets = {r["chip"]: float(r["zp_offset"]) for r in truth.chips()}
    for chip in [f"ccd{n}" for n in range(50, 58)]:  # one row of quality figures per chip
        row = next(line for line in lines if line.startswith(chip + " ")).split()
        read_noise, astrometric_rms, zeropoint = float(row[1]), float(row[-4]), float(row[-3])
        assert 1.5 < read_noise < 3.5, row  # the master bias of the 1/8 chip: 2.0-2.6 ADU
        assert 0.05 < astrometric_rms < 1.3, row  # arcsec, on 1.9" pixels: 0.26-0.63 measured
        assert abs(zeropoint - (truth.zero_point + offsets[chip])) < 0.01, row  # measured within 0.003
    # the night's extinction from the standards of every chip (true: 0.07; measured 0.071 +- 0.004)
    extinction = re.search(r"extinction (0\.\d+) \+- (0\.\d+) mag/airmass \(night", out.stdout)
    assert extinction and abs(float(extinction.group(1)) - truth.extinction) < 0.01, out.stdout
    assert re.search(r"GAstrom: rms 0\.\d+\" between exposures", out.stdout), out.stdout
    # the coadd of the six dithers and its source list, and how they compare with the truth
    coadd = re.search(r"^coadd \S+: 48 frames, zero point 30\.00, seeing [\d.]+\", depth ([\d.]+) mag \(5 sigma\), "
                      r"(\d+) sources \(SLID \d+\)$", out.stdout, re.M)
    assert coadd, out.stdout
    assert 20.5 < float(coadd.group(1)) < 22.5 and int(coadd.group(2)) > 3000  # 21.30 mag, 5586 sources
    assert re.search(r"^against the truth: zero points within 0\.00\d mag \(PhotomTask against the true ones; 8 "
                     r"chip\(s\)\)", out.stdout, re.M), out.stdout
    astrometry = re.search(r"^against the truth: coadd astrometry ([\d.]+)\" rms per axis, photometry MAG_AUTO - "
                           r"true R ([+-][\d.]+) mag", out.stdout, re.M)
    assert astrometry, out.stdout
    assert float(astrometry.group(1)) < 0.3 and abs(float(astrometry.group(2))) < 0.04  # 0.156", -0.015 mag
    depth = re.search(r"^against the truth: coadd depth: 50 % of the true stars found at R = (2\d\.\d)", out.stdout,
                      re.M)
    assert depth and float(depth.group(1)) > 20.5, out.stdout  # 21.0
    failures = [line for line in lines if line.startswith("failed: ")]
    assert out.returncode == (1 if failures else 0)
    assert all(re.match(r"failed: \w+ \w+Task\(.*\): \w+Error: ", f) for f in failures), failures
    # a unit its task refused for its data (the clouded standard exposures' chips with too few stars for an
    # astrometric solution): said, with the task's reason; the night goes on without it
    assert all(re.match(r"left out: \w+ \w+Task\(.*\): TaskError: \S", line) for line in lines
               if line.startswith("left out"))
    # what target processing found cannot be made from what there is: said, with the reason
    assert all(re.match(r"not made: \w+ \w+Task\(.*\): \S", line) for line in lines if line.startswith("not made"))
    # the last line is the command; `awe` in this folder opens the demo's database (awe.toml says where)
    command = lines[-1].strip()
    assert command.endswith("awe") and "AWE_" not in command, command
    assert 'home = "' + str(tmp_path / "awe-home") + '"' in (work / "awe.toml").read_text()

    child = pexpect.spawn("bash", ["-c", command], cwd=str(work), env=env, encoding="utf-8", timeout=60,
                          dimensions=(40, 250))
    child.expect("- username : observer")
    child.expect("awe> ")
    child.sendline("q = (RawBiasFrame.instrument.name == 'WFI') & (RawBiasFrame.chip.name == 'ccd50')")
    child.expect("awe> ")
    child.sendline("print('biases', len(q), 'masters', len(BiasFrame.chip.name == 'ccd50'))")
    child.expect(r"biases 10 masters 1\s")
    child.expect("awe> ")
    # the demo's reduction is found again, not redone; a calibration it lacks is said in one line
    child.sendline("ReduceTask(raw_filenames=['WFI.2003-03-04T04:42:29.496_2.fits'], commit=0).execute()")
    child.expect("awe> ")
    assert "an identical ReducedScienceFrame exists already" in child.before, child.before
    assert "Error" not in child.before
    child.sendline("BiasTask(instrument='WFI', chip='ccd50', date='2003-03-05', commit=0).execute()")
    child.expect("awe> ")
    shown = [line for line in child.before.splitlines()[1:] if "Error" in line]
    assert len(shown) == 1 and "2003-03-05" in shown[0], child.before
    assert "Traceback" not in child.before
    child.sendline("exit()")
    child.expect(pexpect.EOF)


def _demo_settings(tmp_path, **extra):
    return load_settings(home=str(tmp_path / "awe-home"), workdir=str(tmp_path / "work"), **extra)


def test_prepare_prompt_records_where_the_demo_data_are(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path)
    settings = _demo_settings(tmp_path, user="observer")
    assert prepare_prompt(settings, "bash run.sh prompt") == "bash run.sh prompt"
    toml = (tmp_path / "work" / "awe.toml").read_text()
    assert "password" not in toml
    seen = load_settings(workdir=str(tmp_path / "work"))  # no AWE_* set: what `awe` there would use
    assert (seen.database_url, seen.storage, seen.user) == (settings.database_url, settings.storage, "observer")
    program = f"(awe|{re.escape(_awe())})"  # `awe` when it is on the PATH
    assert re.fullmatch(rf"cd {re.escape(str(tmp_path / 'work'))} && {program}", prepare_prompt(settings))

    # a file the user wrote is never overwritten: the command then carries the settings
    (tmp_path / "work" / "awe.toml").write_text('[awe]\nhome = "/somewhere/else"\n')
    other = _demo_settings(tmp_path, user="observer")
    command = prepare_prompt(other)
    assert (tmp_path / "work" / "awe.toml").read_text() == '[awe]\nhome = "/somewhere/else"\n'
    assert f"AWE_HOME={tmp_path / 'awe-home'} AWE_USER=observer " in command


def test_prepare_prompt_writes_nothing_for_the_default_home_and_no_password(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    plain = load_settings(workdir=str(tmp_path / "work"))
    assert prepare_prompt(plain).endswith("awe") and not (tmp_path / "work" / "awe.toml").exists()
    team = plain.with_(database_url="postgresql+psycopg://ann:s3cret@dbhost/awe", password="s3cret")
    prepare_prompt(team)
    toml = (tmp_path / "work" / "awe.toml").read_text()
    assert 'database_url = "postgresql+psycopg://ann@dbhost/awe"' in toml and "s3cret" not in toml
