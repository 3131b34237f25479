# ruff: noqa: F811  (the pytest fixture imported from tests.security._raw is a parameter)
"""A user reads stored files only through his session, and only the files of objects he may see.

On SQLite and PostgreSQL: another user's private file cannot be listed, retrieved or opened by name, nor
through a forged object; once published it can.
"""

from __future__ import annotations

import uuid

import pytest

from awe.db.files import FileAccessError
from awe.db.publish import migrate
from awe.db.session import Session
from awe.model import RawBiasFrame, RawFrame
from awe.tasks.ingest import ingest

from tests.security._raw import BIAS, make_user, raw_files  # noqa: F401


def test_files_of_private_objects(db, raw_files, make_user, tmp_path):
    tag = uuid.uuid4().hex[:6]
    alice, bob = make_user(f"alice{tag}"), make_user(f"bob{tag}")
    with alice.activate():
        (frame, *_) = ingest([raw_files[BIAS]]).frames
    name = frame.filename
    # the owner lists, retrieves and opens it, verified against the recorded checksum
    assert name in alice.list_files()
    assert alice.retrieve(name, tmp_path / "alice").is_file()
    assert alice.open_file(name).is_file()
    with alice.activate():
        assert frame.retrieve(tmp_path / "alice2").is_file()
    # another user cannot, by name or through a forged object, and cannot tell it from a file that does not exist
    assert name not in bob.list_files()
    paths_tried = 0
    refusals = []
    for attempt in (lambda: bob.retrieve(name, tmp_path / "bob"), lambda: bob.open_file(name)):
        with pytest.raises(FileAccessError) as info:
            attempt()
        paths_tried += 1
        refusals.append(str(info.value))
        assert bob.user in str(info.value) and "no object with file" in str(info.value)
    with pytest.raises(FileAccessError) as unknown:
        bob.retrieve("WFI.no-such-file_1.fits", tmp_path / "bob")
    assert str(unknown.value).replace("WFI.no-such-file_1.fits", name) == refusals[0]  # nothing to probe
    stolen = RawBiasFrame(filename=name)  # a forged object: ids and checksum set by hand
    stolen.__dict__.update(object_id=frame.object_id, project_id=bob.project.id, checksum=frame.checksum,
                           _session=bob)
    for attempt in (lambda: stolen.retrieve(tmp_path / "bob"), stolen.local_path, stolen.load):
        with pytest.raises(FileAccessError):
            attempt()
        paths_tried += 1
    borrowed = alice_frame_for(bob, frame)  # alice's own object handed to bob's session
    with pytest.raises(FileAccessError):
        borrowed.local_path()
    paths_tried += 1
    assert not (tmp_path / "bob").exists() or not any((tmp_path / "bob").iterdir())  # nothing was copied
    assert paths_tried == 6
    # once published, everyone reads it
    migrate(alice, frame, "ALL")
    bob.set_project("ALL")
    assert bob.retrieve(name, tmp_path / "bob").is_file()
    with bob.activate():
        assert len(RawFrame.filename == name) == 1


def alice_frame_for(session: Session, frame: RawFrame) -> RawFrame:
    """The same object as ``frame`` but acting for ``session``."""
    other = type(frame).__new__(type(frame))
    other.__dict__.update(frame.__dict__)
    other.__dict__["_session"] = session
    return other
