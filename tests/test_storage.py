"""Data storage: round trips, immutability, checksums, cache, crashes and vacuum.

Every behaviour test runs on a local folder, ``memory://`` and ``s3://``
against a local moto server.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import os
import pickle
import stat
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from awe.storage import (
    MIN_SAFE_AGE_S,
    CorruptFileError,
    DataStorage,
    MissingFileError,
    StorageError,
    get_storage,
    sha256_file,
    vacuum,
)
from awe.storage._names import TEMP_PREFIX, relative_key

from tests.conftest_s3 import s3_endpoint, s3_url  # noqa: F401  (pytest fixtures)

RAW = "WFI.2003-03-03T19:23:24.843_1.fits"
SCI = "Sci-AWUSER-WFI-----#844-ccd50-Red---Sci-54637.9045189-f077a92d.fits"
ODD = "odd name %23 ?x*[1] 100%.fits"  # escapes must round-trip too


def payload(seed: int, nbytes: int = 20_000) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def drop_memory(ds: DataStorage) -> None:
    """Free what a ``memory://`` storage holds (it lives as long as the process)."""
    try:
        ds._backend.fs.rm(ds._backend.root, recursive=True)
    except FileNotFoundError:
        pass


def all_keys(storage: DataStorage) -> list[str]:
    """Every object under the storage root, temporary ones included."""
    return [key for key, _ in storage._backend.walk()]


def corrupt_stored(storage: DataStorage, filename: str) -> None:
    """Flip one byte of the stored file, behind the storage's back."""
    key = relative_key(filename)
    local = storage._backend.local_path(key)
    if local is not None:
        data = bytearray(local.read_bytes())
        data[len(data) // 2] ^= 0xFF
        local.chmod(stat.S_IRUSR | stat.S_IWUSR)
        local.write_bytes(bytes(data))
    else:
        fs, path = storage._backend.fs, storage._backend._path(key)
        data = bytearray(fs.cat_file(path))
        data[len(data) // 2] ^= 0xFF
        fs.pipe_file(path, bytes(data))
        fs.invalidate_cache()


def break_rename(storage: DataStorage, monkeypatch) -> None:
    """Make the step that gives an upload its final name fail (a crash at that point)."""

    def boom(*args, **kwargs):
        raise OSError(errno.EIO, "simulated crash while renaming")

    if storage.is_local:
        monkeypatch.setattr(os, "link", boom)
        monkeypatch.setattr(os, "rename", boom)
    else:
        monkeypatch.setattr(storage._backend.fs, "copy", boom)


def _empty_storage(request, tmp_path):
    """An empty storage of the kind ``request.param``, with a local cache folder."""
    cache = tmp_path / "cache"
    if request.param == "local":
        yield DataStorage(tmp_path / "ds", cache_dir=cache)
    elif request.param == "memory":
        ds = DataStorage(f"memory://awe-test-{uuid.uuid4().hex}", cache_dir=cache)
        yield ds
        drop_memory(ds)
    else:
        url, options = request.getfixturevalue("s3_url")
        yield DataStorage(url, cache_dir=cache, **options)


storage = pytest.fixture(params=["local", "memory", "s3"], name="storage")(_empty_storage)
remote_storage = pytest.fixture(params=["memory", "s3"], name="remote_storage")(_empty_storage)


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", [RAW, SCI, ODD])
def test_round_trip(storage, tmp_path, name):
    data = payload(1)
    digest = storage.store(write(tmp_path / "work", name, data))
    assert digest == sha(data)
    assert storage.exists(name)
    assert storage.size(name) == len(data)
    assert storage.checksum(name) == digest
    assert list(storage.list()) == [name]
    copy = storage.retrieve(name, tmp_path / "out", checksum=digest)
    assert copy == tmp_path / "out" / name
    assert copy.read_bytes() == data
    assert storage.open(name, checksum=digest).read_bytes() == data
    # one object, in a two-level hash shard, with '#', '%', '?', '*', '[', ' ' escaped
    (key,) = all_keys(storage)
    assert key == relative_key(name)
    shard1, shard2, leaf = key.split("/")
    assert len(shard1) == len(shard2) == 2
    assert not set("#?*[] ") & set(leaf)


def test_store_under_another_name(storage, tmp_path):
    data = payload(2)
    local = write(tmp_path, "product.fits", data)
    assert storage.store(local, SCI) == sha(data)
    assert list(storage.list()) == [SCI]
    assert not storage.exists("product.fits")


def test_store_bytes_writes_once_and_checks(storage, tmp_path):
    data = payload(6)
    assert storage.store_bytes(data, RAW, checksum=sha(data)) == sha(data)
    assert storage.retrieve(RAW, tmp_path / "out", checksum=sha(data)).read_bytes() == data
    assert storage.store_bytes(memoryview(data), RAW) == sha(data)  # the same content again: a no-op
    with pytest.raises(StorageError, match="refusing to overwrite"):
        storage.store_bytes(payload(7), RAW)
    # the bytes written must hash to the checksum given: nothing is stored otherwise
    with pytest.raises(StorageError, match="nothing stored"):
        storage.store_bytes(payload(8), SCI, checksum=sha(data))
    assert not storage.exists(SCI)
    assert all_keys(storage) == [relative_key(RAW)]


def test_identical_restore_is_a_noop(storage, tmp_path, monkeypatch):
    data = payload(3)
    first = storage.store(write(tmp_path / "a", RAW, data))

    def no_upload(*args, **kwargs):
        raise AssertionError("an identical file must not be uploaded again")

    monkeypatch.setattr(storage._backend, "write_temp", no_upload)
    assert storage.store(write(tmp_path / "b", RAW, data)) == first
    assert all_keys(storage) == [relative_key(RAW)]


def test_different_content_is_refused(storage, tmp_path):
    old, new = payload(4), payload(5)
    storage.store(write(tmp_path / "a", RAW, old))
    with pytest.raises(StorageError, match="refusing to overwrite") as info:
        storage.store(write(tmp_path / "b", RAW, new))
    assert RAW in str(info.value) and sha(new) in str(info.value) and sha(old) in str(info.value)
    # a different size is refused without reading the stored file
    with pytest.raises(StorageError, match="bytes stored"):
        storage.store(write(tmp_path / "c", RAW, old[:-1]))
    assert storage.retrieve(RAW, tmp_path / "out").read_bytes() == old
    assert all_keys(storage) == [relative_key(RAW)]


def test_store_race_detected_at_publication(storage, tmp_path, monkeypatch):
    """Another writer publishes the same name between the check and the rename."""
    data, other = payload(6), payload(7)
    storage.store(write(tmp_path / "a", RAW, data))
    real_exists = type(storage._backend).exists
    calls = []

    def exists_late(self, key):  # the first look does not see the other writer's file yet
        calls.append(key)
        return real_exists(self, key) if len(calls) > 1 else False

    monkeypatch.setattr(type(storage._backend), "exists", exists_late)
    assert storage.store(write(tmp_path / "b", RAW, data)) == sha(data)
    calls.clear()
    with pytest.raises(StorageError, match="refusing to overwrite"):
        storage.store(write(tmp_path / "c", RAW, other))
    monkeypatch.undo()
    assert all_keys(storage) == [relative_key(RAW)]  # the uploads' temporary files are gone
    assert storage.checksum(RAW) == sha(data)


# ---------------------------------------------------------------- corruption
def test_corrupt_file_detected_on_retrieve(storage, tmp_path):
    data = payload(8)
    digest = storage.store(write(tmp_path / "work", SCI, data))
    corrupt_stored(storage, SCI)
    out = tmp_path / "out"
    with pytest.raises(CorruptFileError) as info:
        storage.retrieve(SCI, out, checksum=digest)
    message = str(info.value)
    assert SCI in message and storage.url in message and digest in message
    assert "corrupt" in message and "restore it from a backup" in message
    assert info.value.actual == storage.checksum(SCI) != digest
    assert not out.exists() or list(out.iterdir()) == []  # no (partial) copy left
    with pytest.raises(CorruptFileError, match="corrupt"):
        storage.open(SCI, checksum=digest)
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
    # without a checksum nothing is verified: the caller asked for the bytes as they are
    assert storage.retrieve(SCI, out).read_bytes() != data


def test_malformed_checksum_is_refused(storage, tmp_path):
    storage.store(write(tmp_path, RAW, payload(9)))
    with pytest.raises(ValueError, match="not a SHA-256"):
        storage.retrieve(RAW, tmp_path / "out", checksum="abc")


def test_retrieve_keeps_a_verified_copy_in_place(storage, tmp_path, monkeypatch):
    data = payload(10)
    digest = storage.store(write(tmp_path / "work", RAW, data))
    first = storage.retrieve(RAW, tmp_path / "work", checksum=digest)
    monkeypatch.setattr(storage._backend, "open_read", None)  # any read would fail
    assert storage.retrieve(RAW, tmp_path / "work", checksum=digest) == first


# ---------------------------------------------------------------- cache
def test_cache_hit_and_repair(remote_storage, tmp_path, monkeypatch):
    storage = remote_storage
    data = payload(11)
    digest = storage.store(write(tmp_path / "work", SCI, data))
    storage.retrieve(SCI, tmp_path / "one", checksum=digest)
    cached = storage.open(SCI)
    assert cached.is_relative_to(tmp_path / "cache") and cached.read_bytes() == data

    def offline(*args, **kwargs):
        raise AssertionError("a cache hit must not read the storage")

    monkeypatch.setattr(storage._backend, "open_read", offline)
    assert storage.retrieve(SCI, tmp_path / "two", checksum=digest).read_bytes() == data
    assert storage.open(SCI, checksum=digest) == cached
    monkeypatch.undo()
    # a corrupted cached copy is detected and fetched again
    damaged = bytearray(data)
    damaged[0] ^= 1
    cached.write_bytes(bytes(damaged))
    assert storage.retrieve(SCI, tmp_path / "three", checksum=digest).read_bytes() == data
    assert cached.read_bytes() == data
    # deleting the file drops its cached copy
    storage.delete(SCI)
    assert not cached.exists()


def test_remote_open_without_cache_dir(tmp_path):
    ds = DataStorage(f"memory://awe-test-{uuid.uuid4().hex}")
    data = payload(12)
    digest = ds.store(write(tmp_path, RAW, data))
    path = ds.open(RAW, checksum=digest)
    assert path.read_bytes() == data and not path.is_relative_to(tmp_path)
    scratch = ds._scratch
    drop_memory(ds)
    del ds
    assert not scratch.exists()  # the private scratch cache goes with the storage


# ---------------------------------------------------------------- queries
def test_exists_delete_list_size(storage, tmp_path):
    names = [RAW, SCI, "WFI.2003-03-03T19:23:24.843_2.fits"]
    for i, name in enumerate(names):
        storage.store(write(tmp_path, name, payload(20 + i, 1000 * (i + 1))))
    assert sorted(storage.list()) == sorted(names)
    assert [storage.size(n) for n in names] == [1000, 2000, 3000]
    storage.delete(SCI)
    assert not storage.exists(SCI) and storage.exists(RAW)
    assert sorted(storage.list()) == sorted([RAW, names[2]])
    with pytest.raises(MissingFileError, match="is not in storage") as info:
        storage.delete(SCI)
    assert isinstance(info.value, FileNotFoundError) and SCI in str(info.value)
    for call in (storage.size, storage.checksum, storage.open, lambda n: storage.retrieve(n, tmp_path / "o")):
        with pytest.raises(MissingFileError, match=SCI.replace("#", "\\#")):
            call(SCI)


@pytest.mark.parametrize("bad", ["", "a/b.fits", "..", "../up.fits", "x..y", ".hidden", "tab\there"])
def test_bad_names_rejected(bad, tmp_path):
    ds = DataStorage(tmp_path / "ds")
    with pytest.raises(ValueError, match="invalid storage file name") as info:
        ds.exists(bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError):
        ds.store(write(tmp_path, "ok.fits", b"x"), bad)
    assert not (tmp_path / "ds").exists()


def test_foreign_objects_are_ignored(storage, tmp_path):
    storage.store(write(tmp_path, RAW, payload(30)))
    fs_write = (
        (lambda key, data: write(storage._backend.root, key, data))
        if storage.is_local
        else (lambda key, data: storage._backend.fs.pipe_file(storage._backend._path(key), data))
    )
    fs_write("README", b"not ours")
    fs_write("ab/cd/not-in-its-shard.fits", b"misplaced")
    assert list(storage.list()) == [RAW]
    assert vacuum(storage, set(), min_age_s=0, exclusive=True) == [RAW]  # foreign objects are never removed
    assert len(all_keys(storage)) == 2


# ---------------------------------------------------------------- crashes and vacuum
def test_crash_mid_store_leaves_nothing_under_the_final_name(storage, tmp_path, monkeypatch):
    data = payload(40)
    break_rename(storage, monkeypatch)
    with pytest.raises(StorageError, match="could not store") as info:
        storage.store(write(tmp_path, SCI, data))
    assert SCI in str(info.value) and "simulated crash" in str(info.value)
    monkeypatch.undo()
    assert not storage.exists(SCI)
    assert list(storage.list()) == [] and all_keys(storage) == []  # the temporary upload was removed
    assert storage.store(tmp_path / SCI) == sha(data)  # and a retry works


def test_hard_crash_temp_file_is_vacuumed(storage, tmp_path, monkeypatch):
    """The process dies before it can clean up: the temporary file stays until vacuum."""
    break_rename(storage, monkeypatch)

    def dead(*args, **kwargs):
        raise OSError(errno.EIO, "process killed")

    monkeypatch.setattr(storage._backend, "remove", dead)
    with pytest.raises(StorageError):
        storage.store(write(tmp_path, SCI, payload(41)))
    monkeypatch.undo()
    (temp,) = all_keys(storage)
    assert temp.split("/")[-1].startswith(TEMP_PREFIX)
    assert list(storage.list()) == [] and not storage.exists(SCI)
    assert vacuum(storage, set()) == []  # too young: could be an upload in progress
    assert vacuum(storage, set(), dry_run=True, min_age_s=0, exclusive=True) == [temp]
    assert all_keys(storage) == [temp]
    assert vacuum(storage, set(), min_age_s=0, exclusive=True) == [temp]
    assert all_keys(storage) == []


def test_vacuum_removes_orphans_keeps_known(storage, tmp_path):
    names = [RAW, SCI, "orphan-of-a-failed-commit.fits"]
    for i, name in enumerate(names):
        storage.store(write(tmp_path, name, payload(50 + i)))
    known = {RAW, SCI}
    assert vacuum(storage, known) == []  # orphans younger than an hour may be a commit in progress
    assert vacuum(storage, known, dry_run=True, min_age_s=0, exclusive=True) == [names[2]]
    assert storage.exists(names[2])
    assert vacuum(storage, known.__contains__, min_age_s=0, exclusive=True) == [names[2]]
    assert sorted(storage.list()) == sorted(known)
    assert vacuum(storage, known, min_age_s=0, exclusive=True) == []
    with pytest.raises(TypeError):
        vacuum(storage, RAW)


# ---------------------------------------------------------------- local specifics
def test_local_layout_and_permissions(tmp_path):
    ds = DataStorage(f"file://{tmp_path / 'ds'}")
    assert ds.url == str(tmp_path / "ds") and ds.is_local
    digest = ds.store(write(tmp_path, SCI, b"SIMPLE  =                    T"))
    stored = ds.open(SCI, checksum=digest)
    assert stored.parent.parent.parent == tmp_path / "ds"
    assert stored.name == SCI.replace("#", "%23")
    assert not stored.stat().st_mode & 0o222  # stored files are read-only
    assert DataStorage(tmp_path / "ds").exists(SCI)


def test_local_without_hard_links_falls_back_to_rename(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    ds = DataStorage(tmp_path / "ds")
    data = payload(60)
    assert ds.store(write(tmp_path, RAW, data)) == sha(data)
    assert ds.store(tmp_path / RAW) == sha(data)
    with pytest.raises(StorageError, match="refusing"):
        ds.store(write(tmp_path / "b", RAW, payload(61)))
    assert all_keys(ds) == [relative_key(RAW)]


def test_options_rejected_for_local(tmp_path):
    with pytest.raises(ValueError, match="do not apply"):
        DataStorage(tmp_path, anon=True)


def test_sha256_file_streams_large_files(tmp_path):
    data = payload(70, 9 * 1024 * 1024 + 17)  # more than two read chunks
    assert sha256_file(write(tmp_path, "big.fits", data)) == sha(data)


def test_get_storage_is_cached_per_url(tmp_path, monkeypatch):
    a = get_storage(str(tmp_path / "ds"))
    assert get_storage(f"file://{tmp_path / 'ds'}") is a
    assert get_storage(str(tmp_path / "ds"), cache_dir=tmp_path / "c") is not a
    monkeypatch.setenv("AWE_STORAGE", str(tmp_path / "ds"))
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AWE_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert get_storage() is a


def test_pickles_for_workers(storage, tmp_path):
    digest = storage.store(write(tmp_path, RAW, payload(80)))
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.url == storage.url and clone.cache_dir == storage.cache_dir
    assert clone.checksum(RAW) == digest


# ---------------------------------------------------------------- HTTP, read-only
@pytest.fixture
def http_storage(tmp_path):
    """A local storage folder served read-only over HTTP, as a data server would."""
    root = tmp_path / "served"
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield DataStorage(root), DataStorage(f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_storage_is_read_only(http_storage, tmp_path):
    local, remote = http_storage
    data = payload(90)
    digest = local.store(write(tmp_path / "work", SCI, data))
    assert remote.exists(SCI) and not remote.exists(RAW)
    assert remote.size(SCI) == len(data)
    assert remote.retrieve(SCI, tmp_path / "out", checksum=digest).read_bytes() == data
    with pytest.raises(MissingFileError):
        remote.retrieve(RAW, tmp_path / "out")
    with pytest.raises(StorageError, match="read-only"):
        remote.store(tmp_path / "work" / SCI, RAW)
    with pytest.raises(StorageError, match="read-only"):
        remote.delete(SCI)
    with pytest.raises(StorageError, match="cannot be listed"):
        list(remote.list())


def test_s3_unusable_bucket_or_endpoint(s3_url, tmp_path, monkeypatch):  # noqa: F811  (the fixture imported above)
    url, options = s3_url
    local = write(tmp_path, RAW, payload(100))
    nobucket = DataStorage(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/ds", **options)
    with pytest.raises(StorageError, match="could not store") as info:
        nobucket.store(local)
    assert not isinstance(info.value, MissingFileError) and RAW in str(info.value)
    from botocore.exceptions import EndpointConnectionError

    ds = DataStorage(url, **options)

    def unreachable(*args, **kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket")

    monkeypatch.setattr(ds._backend.fs, "info", unreachable)
    with pytest.raises(StorageError, match="could not look up") as info:
        ds.exists(RAW)
    assert RAW in str(info.value) and url in str(info.value) and "Could not connect" in str(info.value)


# ---------------------------------------------------------------- verify, and vacuum's safety margin
def test_verify(storage, tmp_path):
    data = payload(70)
    digest = storage.store(write(tmp_path, RAW, data))
    assert storage.verify(RAW, digest) == "ok" and storage.verify(RAW) == "ok"
    assert storage.verify(SCI, digest) == "missing"
    corrupt_stored(storage, RAW)
    assert storage.verify(RAW, digest) == "corrupt" and storage.verify(RAW) == "ok"  # without a checksum: exists


def test_vacuum_refuses_ages_a_running_commit_could_have(storage, tmp_path):
    storage.store(write(tmp_path, "young-orphan.fits", payload(71)))
    for age in (0, 1, MIN_SAFE_AGE_S - 1):
        with pytest.raises(ValueError, match="may belong to an ingest or commit in progress"):
            vacuum(storage, set(), min_age_s=age)
    assert vacuum(storage, set(), min_age_s=MIN_SAFE_AGE_S) == []  # the young orphan is kept
    assert storage.exists("young-orphan.fits")
