"""The ``awe`` command's verbs, run as a user would (in a subprocess, embedded database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWE_")}
    env.update(AWE_HOME=str(tmp_path / "home"), AWE_USER="observer", HOME=str(tmp_path), PYTHONWARNINGS="ignore",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # the awe under test, wherever it is installed
    awe = str(Path(sys.executable).with_name("awe"))

    def call(*args: str, input: str | None = None, user: str | None = None, password: str | None = None):
        e = dict(env)
        if user:
            e["AWE_USER"] = user
        if password:
            e["AWE_PASSWORD"] = password
        return subprocess.run([awe, *args], env=e, cwd=tmp_path, capture_output=True, text=True, input=input,
                              timeout=300)

    def python(script: str, user: str, password: str | None = None):
        e = dict(env, AWE_USER=user, **({"AWE_PASSWORD": password} if password else {}))
        return subprocess.run([sys.executable, "-c", script], env=e, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    call.python = python
    return call


def test_sim_ingest_refcat_vacuum(run, tmp_path):
    out = run("sim", str(tmp_path / "night"), "--scale", "0.0625", "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "night").glob("WFI.*.fits"))) == 31
    out = run("ingest", str(tmp_path / "night"))  # no --project: raw data go to ALL, as in the course
    assert out.returncode == 0, out.stderr
    assert "31 file(s) ingested (248 frames)" in out.stdout
    assert "INFO" not in out.stderr and "sha256" not in out.stderr  # the detail is in the log file
    assert "ingest" in out.stderr and "31/31" in out.stderr  # the progress bar
    log = (tmp_path / "awe.log").read_text()
    assert log.count("sha256") >= 248 and "31 file(s) ingested" in log
    assert run("user", "add", "somebody_else", "--password", "pw-else").returncode == 0
    seen = run.python("from awe import *\n"
                      "print(len(RawBiasFrame.instrument.name == 'WFI'), context.get_current_project().name)",
                      user="somebody_else", password="pw-else")
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == ["80", "SOMEBODY_ELSE"]  # another user sees them: they are in ALL
    # a frame left out of one's own selections, without touching it; then flagged, which the audit trail shows
    chip = "WFI.2003-03-03T19:23:24.843_1.fits"
    out = run("exclude", chip, "--reason", "satellite trail", user="somebody_else", password="pw-else")
    assert out.returncode == 0 and "excluded 1 object(s) from the selections of SOMEBODY_ELSE" in out.stdout
    flag = run.python(f"from awe import *\n(RawBiasFrame.filename == {chip!r})[0].update(is_valid=0)",
                      user="somebody_else", password="pw-else")
    assert flag.returncode == 1 and "only its creator observer" in flag.stderr
    flag = run.python(f"from awe import *\n(RawBiasFrame.filename == {chip!r})[0].update(is_valid=0)",
                      user="observer")
    assert flag.returncode == 0, flag.stderr
    trail = run("history", chip, user="somebody_else", password="pw-else")
    assert trail.returncode == 0 and f"observer: {chip} is_valid 1 -> 0" in trail.stdout
    again = run("ingest", str(tmp_path / "night" / "WFI.2003-03-03T19:23:24.843.fits"))
    assert again.returncode == 0 and "already ingested" in again.stdout
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    bad = run("ingest", str(tmp_path / "broken.fits"))
    assert bad.returncode == 1 and "broken.fits" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    out = run("refcat", str(tmp_path / "night" / "refcat" / "standards.fits"), "--kind", "standard",
              "--project", "ALL")
    assert out.returncode == 0, out.stderr
    assert "standard reference sources" in out.stdout
    out = run("storage", "vacuum", "--dry-run", "--min-age", "600")
    assert out.returncode == 0 and "would remove 0 orphaned file(s)" in out.stdout
    out = run("db", "upgrade")
    assert out.returncode == 0 and "schema upgraded" in out.stdout


def test_users_projects_and_passwords(run):
    """The first user (observer, the OS user of the embedded database) is its administrator; the others are not."""
    out = run("user", "add", "alice", "--password", "s3cret")
    assert out.returncode == 0, out.stderr
    assert "private project ALICE" in out.stdout
    denied = run("project", "list", user="alice", password="wrong")
    assert denied.returncode == 1 and "wrong password for user 'alice'" in denied.stderr
    assert "Traceback" not in denied.stderr
    out = run("project", "add", "KIDS", "--member", "alice")
    assert out.returncode == 0, out.stderr
    listed = run("project", "list", user="alice", password="s3cret")
    assert listed.returncode == 0 and set(listed.stdout.split()) == {"ALL", "ALICE", "KIDS"}
    mine = run("project", "list")
    assert set(mine.stdout.split()) == {"ALL", "OBSERVER"}
    # the administrator adds members; a plain member may not, not even himself
    out = run("project", "add-member", "KIDS", "observer")
    assert out.returncode == 0
    assert "KIDS" in run("project", "list").stdout.split()
    assert run("user", "add", "bob", "--password", "pw-bob").returncode == 0
    refused = run("project", "add-member", "KIDS", "bob", user="bob", password="pw-bob")
    assert refused.returncode == 1 and "only its managers" in refused.stderr and "Traceback" not in refused.stderr
    assert "KIDS" not in run("project", "list", user="bob", password="pw-bob").stdout.split()
    # ... a manager may
    assert run("project", "add-member", "KIDS", "alice", "--manager").returncode == 0
    assert run("project", "add-member", "KIDS", "bob", user="alice", password="s3cret").returncode == 0
    assert "KIDS" in run("project", "list", user="bob", password="pw-bob").stdout.split()
    # a user creates no users or projects and changes no other password; his own only with the old one
    for args in (["user", "add", "mallory", "--password", "x"], ["project", "add", "MINE"],
                 ["user", "passwd", "alice", "--password", "owned"]):
        refused = run(*args, user="bob", password="pw-bob")
        assert refused.returncode == 1 and "only an administrator" in refused.stderr, (args, refused.stderr)
    refused = run("user", "passwd", "--old-password", "guess", "--password", "new", user="bob", password="pw-bob")
    assert refused.returncode == 1 and "old password of bob is wrong" in refused.stderr
    out = run("user", "passwd", "--old-password", "pw-bob", "--password", "pw-bob-2", user="bob", password="pw-bob")
    assert out.returncode == 0, out.stderr
    assert run("project", "list", user="bob", password="pw-bob").returncode == 1
    assert run("project", "list", user="bob", password="pw-bob-2").returncode == 0
    # the administrator resets; an unknown AWE_USER is not created on the spot
    assert run("user", "passwd", "bob", "--password", "reset").returncode == 0
    assert run("project", "list", user="bob", password="reset").returncode == 0
    unknown = run("project", "list", user="carol")
    assert unknown.returncode == 1 and "awe user add carol" in unknown.stderr
    assert "carol" not in run("project", "list").stdout.lower()
    # a user without a password cannot be made, so nobody is impersonated
    refused = run("user", "add", "dave", "--password", "")
    assert refused.returncode == 1 and "needs a password" in refused.stderr
