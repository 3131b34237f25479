# ruff: noqa: F811  (pytest fixtures imported from tests.security._raw and tests.conftest_s3 are parameters)
"""No silent corruption: faults while storing, a full disk, stored files that vanish, vacuum during an ingest.

Every write fault goes through a fault-injecting file object (short writes, ENOSPC, EIO, a write that makes no
progress, a write that lies about what it wrote, a failing fsync) on a local folder, ``memory://`` and S3
(moto); the full disk also for real on a 1 MB tmpfs where mounting works (the output says whether it did, and
the same scenario runs on an emulated 1 MB disk when it does not). After each fault nothing is left: no file,
no temporary file, no database row; and the retry works.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from awe import context
from awe.db.privileged import referenced_files
from awe.model import RawFrame
from awe.storage import DataStorage, MIN_SAFE_AGE_S, StorageError, sha256_file, vacuum
from awe.storage._names import TEMP_PREFIX
from awe.tasks.check_storage import check_storage
from awe.tasks.ingest import ingest

from tests.conftest_s3 import s3_endpoint, s3_url  # noqa: F401  (pytest fixtures)
from tests.security._raw import BIAS, DOME, SCIENCE, STANDARD, chip_count, raw_files  # noqa: F401

NAME = "Sci-AWUSER-WFI-----#844-ccd50-Red---Sci-54637.9045189-f077a92d.fits"
PAYLOAD = 300_000  # bytes: several writes of a small chunk size


class FaultyFile:
    """A binary file object that misbehaves like a failing disk or network.

    Parameters
    ----------
    inner : file object
        The real file.
    fault : str
        ``'short'`` (every write takes at most 4 kB: a correct writer continues), ``'enospc'`` (after ``limit``
        bytes: a short write of what still fits, then ENOSPC), ``'eio'`` (EIO once ``limit`` bytes are written),
        ``'stuck'`` (writes return 0 after ``limit`` bytes), ``'lie'`` (after ``limit`` bytes a write claims
        everything but keeps only half), ``'fsync'`` (the data go in, fsync fails with EIO).
    limit : int
        Bytes accepted before the fault.
    """

    def __init__(self, inner, fault: str, limit: int = 100_000) -> None:
        self.inner, self.fault, self.limit, self.written = inner, fault, limit, 0

    def write(self, data) -> int:
        data = bytes(data)
        if self.fault == "short":
            data = data[:4096]
        elif self.written >= self.limit and self.fault in ("enospc", "eio", "stuck", "lie"):
            if self.fault == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self.fault == "eio":
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            if self.fault == "stuck":
                return 0
            self.inner.write(data[: len(data) // 2])
            self.written += len(data)
            return len(data)
        elif self.fault in ("enospc", "stuck", "lie", "eio"):
            data = data[: self.limit - self.written]  # a short write up to the limit
        self.inner.write(data)
        self.written += len(data)
        return len(data)

    def fileno(self) -> int:
        if self.fault == "fsync":
            raise OSError(errno.EIO, "simulated fsync failure")
        return self.inner.fileno()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.inner.__exit__(*exc)


def inject(storage: DataStorage, monkeypatch, fault: str, limit: int = 100_000, on_call: int = 1) -> dict:
    """Make the ``on_call``-th write of a stored file (counting from 1) go through a :class:`FaultyFile`."""
    backend = storage._backend
    real = backend.open_temp
    calls = {"n": 0}

    def open_temp(key):
        calls["n"] += 1
        inner = real(key)
        return FaultyFile(inner, fault, limit) if calls["n"] == on_call else inner

    monkeypatch.setattr(backend, "open_temp", open_temp)
    return calls


def all_keys(storage: DataStorage) -> list[str]:
    return [key for key, _ in storage._backend.walk()]


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        yield DataStorage(tmp_path / "ds")
    elif request.param == "memory":
        ds = DataStorage(f"memory://awe-faults-{uuid.uuid4().hex}")
        yield ds
        try:
            ds._backend.fs.rm(ds._backend.root, recursive=True)
        except FileNotFoundError:
            pass
    else:
        url, options = request.getfixturevalue("s3_url")
        yield DataStorage(url, **options)


FAILING = ["enospc", "eio", "stuck", "lie"]


# ====================================================================== the storage itself
def test_short_writes_are_completed(storage, tmp_path, monkeypatch):
    data = os.urandom(PAYLOAD)
    (tmp_path / NAME).write_bytes(data)
    inject(storage, monkeypatch, "short")
    digest = storage.store(tmp_path / NAME)
    assert digest == sha256_file(tmp_path / NAME)
    monkeypatch.undo()
    assert storage.size(NAME) == PAYLOAD and storage.checksum(NAME) == digest


@pytest.mark.parametrize("fault", FAILING)
def test_a_failed_write_leaves_nothing(storage, tmp_path, monkeypatch, fault):
    _fails_cleanly(storage, tmp_path, monkeypatch, fault)


def test_a_failed_fsync_leaves_nothing(tmp_path, monkeypatch):
    """fsync is a local-file step (remote uploads are checked by size and read-back hash instead)."""
    _fails_cleanly(DataStorage(tmp_path / "ds"), tmp_path, monkeypatch, "fsync")


def _fails_cleanly(storage, tmp_path, monkeypatch, fault):
    data = os.urandom(PAYLOAD)
    (tmp_path / NAME).write_bytes(data)
    inject(storage, monkeypatch, fault)
    with pytest.raises(StorageError) as info:
        storage.store(tmp_path / NAME)
    message = str(info.value)
    assert NAME in message and "nothing was stored under that name" in message
    expected = {"enospc": "disk full", "stuck": "disk full", "eio": "Input/output error", "fsync": "fsync",
                "lie": "bytes"}[fault]
    assert expected in message, message
    monkeypatch.undo()
    assert all_keys(storage) == [] and not storage.exists(NAME)  # not even the temporary file
    assert storage.store(tmp_path / NAME) == sha256_file(tmp_path / NAME)  # the retry works


def test_a_corrupted_upload_is_caught_before_publication(tmp_path, monkeypatch, s3_url):  # noqa: F811
    """An object store that keeps other bytes than were sent: the read-back hash refuses to publish."""
    url, options = s3_url
    storage = DataStorage(url, **options)
    (tmp_path / NAME).write_bytes(os.urandom(PAYLOAD))
    real = storage._backend.open_temp

    class Flipping(FaultyFile):
        def write(self, data):
            data = bytearray(data)
            data[0] ^= 0xFF
            return self.inner.write(bytes(data))

    monkeypatch.setattr(storage._backend, "open_temp", lambda key: Flipping(real(key), "flip"))
    with pytest.raises(StorageError, match="corrupt"):
        storage.store(tmp_path / NAME)
    monkeypatch.undo()
    assert all_keys(storage) == []


# ====================================================================== through ingest
def test_ingest_with_a_failing_disk(db, raw_files, tmp_path, monkeypatch):
    """ENOSPC on the 5th chip of the second file: that file fails alone and leaves nothing; the rest go in."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in (BIAS, DOME, SCIENCE):
        shutil.copy(raw_files[name], inbox)
    inject(context.storage, monkeypatch, "enospc", limit=5000, on_call=8 + 5)  # files go in name order
    report = ingest(inbox)
    monkeypatch.undo()
    assert [r.status for r in report.results] == ["ingested", "failed", "ingested"], str(report)
    failed = report.results[1]
    assert failed.path.name == DOME and "disk full?" in failed.message and DOME[:-5] + "_5.fits" in failed.message
    line = [x for x in str(report).splitlines() if x.startswith("FAILED")]
    assert len(line) == 1 and DOME in line[0]
    names = sorted(f.filename for f in RawFrame.all())
    stored = sorted(context.storage.list())
    assert stored == names and chip_count(names, DOME) == 0 and len(names) == 16  # no file, no row of it
    again = ingest([inbox / DOME])
    assert again.results[0].status == "ingested" and len(again.frames) == 8
    assert not check_storage(context.session).problems


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None if it worked, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


@pytest.fixture
def small_disk(request, tmp_path, monkeypatch):
    """The storage folder of the ``db`` fixture on a 1 MB disk: a real tmpfs, or an emulated one (said so)."""
    folder = tmp_path / "storage"
    why = _mount_tmpfs(folder, "1m")
    def say(line: str) -> None:  # on the terminal, past pytest's capture, and in the log
        import logging
        logging.getLogger("awe.tests").warning("%s", line)
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if capture is not None and reporter is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)

    if why is None:
        say(f"[awe fault test] 1 MB tmpfs mounted at {folder}: the full-disk ingest runs on a real full disk")
        yield "tmpfs"
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    say(f"[awe fault test] cannot mount a tmpfs here ({why}): the full-disk ingest runs on an emulated "
        "1 MB disk (fault-injecting file objects sharing a 1 MB budget)")
    budget = {"left": 1 << 20}
    from awe.storage._backends import LocalBackend
    real = LocalBackend.open_temp

    class Disk(FaultyFile):
        def write(self, data):
            if budget["left"] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data = bytes(data)[: budget["left"]]
            budget["left"] -= len(data)
            return self.inner.write(data)

    monkeypatch.setattr(LocalBackend, "open_temp", lambda self, key: Disk(real(self, key), "disk"))
    yield "emulated"


def test_ingest_onto_a_full_disk(small_disk, db, raw_files, tmp_path):
    """Three raw files (~650 kB each) onto 1 MB: the first goes in, the others fail naming the disk; nothing
    half-stored, and the storage holds exactly the files of the database rows."""
    report = ingest([raw_files[BIAS], raw_files[DOME], raw_files[SCIENCE]])
    assert [r.status for r in report.results] == ["ingested", "failed", "failed"], str(report)
    for result in report.failed:
        assert "disk full?" in result.message and "nothing was stored under that name" in result.message
    names = sorted(f.filename for f in RawFrame.all())
    assert len(names) == 8 and chip_count(names, BIAS) == 8
    assert sorted(context.storage.list()) == names
    assert not [k for k in all_keys(context.storage) if TEMP_PREFIX in k]  # no temporary file left
    assert not check_storage(context.session).problems  # what is stored is whole


# ====================================================================== stored files that vanish
def test_storage_folder_deleted_then_reingest_and_check(db, raw_files, tmp_path):
    report = ingest([raw_files[BIAS], raw_files[STANDARD]])
    assert len(report.frames) == 16
    root = Path(context.storage.url)
    shutil.rmtree(root)  # the storage folder is gone
    check = check_storage(context.session)
    assert len(check.problems) == 16 and {p.problem for p in check.problems} == {"missing"}
    assert "16 missing" in check.summary()
    again = ingest([raw_files[BIAS]])  # re-ingest stores the missing chips again
    assert again.results[0].status == "ingested" and "stored again" in again.results[0].message
    assert len(RawFrame.all()) == 16  # no new rows
    # the standard's chips: one corrupt, the others missing; repair from the source folder
    lost = f"{STANDARD[:-5]}_3.fits"
    context.storage.store(raw_files[BIAS], lost)  # wrong content under that name: corrupt
    repaired = check_storage(context.session, repair=True, sources=[raw_files[STANDARD].parent])
    assert {p.action for p in repaired.problems} == {"restored"}, str(repaired)
    assert {p.problem for p in repaired.problems if p.filename == lost} == {"corrupt"}
    assert not check_storage(context.session).problems


def test_check_flags_a_product_it_cannot_restore(db, raw_files, tmp_path):
    ingest([raw_files[BIAS]])
    frame = (RawFrame.filename == f"{BIAS[:-5]}_2.fits")[0]
    context.storage.delete(frame.filename)
    report = check_storage(context.session, repair=True, sources=[tmp_path])  # no source there
    (problem,) = report.problems
    assert problem.action == "flagged" and "not found" in problem.detail and "re-make it" in problem.detail
    assert "FLAGGED" in str(report) and frame.filename in str(report)
    flagged = (RawFrame.filename == frame.filename)[0]
    from awe.model import QualityFlags
    assert flagged.quality_flags & QualityFlags.FILE_LOST
    assert frame.filename not in {f.filename for f in RawFrame.select(chip="ccd51")}


def test_cli_storage_check(db, raw_files, tmp_path):
    from awe.cli import main
    ingest([raw_files[BIAS]])
    runner = CliRunner()
    ok = runner.invoke(main, ["storage", "check"])
    assert ok.exit_code == 0 and "8 file(s) checked: 8 ok" in ok.output, ok.output
    context.storage.delete(f"{BIAS[:-5]}_1.fits")
    bad = runner.invoke(main, ["storage", "check"])
    assert bad.exit_code == 1 and "MISSING" in bad.output and "1 missing" in bad.output
    fixed = runner.invoke(main, ["storage", "check", "--repair", "--source", str(raw_files[BIAS].parent)])
    assert fixed.exit_code == 0 and "restored" in fixed.output, fixed.output


# ====================================================================== vacuum during an ingest
def test_vacuum_during_ingest_deletes_nothing_it_will_reference(db, raw_files, monkeypatch):
    """An ingest stored its chips and waits before writing its rows; vacuum runs meanwhile."""
    stored_all, go_on = threading.Event(), threading.Event()
    import awe.db.commit as commit_module
    real_commit = commit_module.commit

    def slow_commit(items, *args, **kwargs):  # ingest stored its chips already; pause before the rows
        stored_all.set()
        assert go_on.wait(60)
        return real_commit(items, *args, **kwargs)

    monkeypatch.setattr(commit_module, "commit", slow_commit)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("report", ingest([raw_files[DOME]])))
    worker.start()
    try:
        assert stored_all.wait(60)
        assert len(list(context.storage.list())) == 8 and len(RawFrame.all()) == 0
        with pytest.raises(ValueError, match="may belong to an ingest or commit in progress"):
            vacuum(context.storage, referenced_files(context.session), min_age_s=0)
        from awe.cli import main
        refused = CliRunner().invoke(main, ["storage", "vacuum", "--min-age", "0"])
        assert refused.exit_code == 1 and "refused" in refused.output, refused.output
        assert vacuum(context.storage, referenced_files(context.session), min_age_s=MIN_SAFE_AGE_S) == []
    finally:
        go_on.set()
        worker.join(60)
    assert result["report"].results[0].status == "ingested"
    assert len(RawFrame.all()) == 8 and not check_storage(context.session).problems
