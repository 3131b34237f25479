"""Committing products with files: storage first, then rows; retrieve; corrupt and missing files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sqlalchemy as sa

from awe.db.commit import commit
from awe import context
from awe.db.persistent import Inputs
from awe.db.schema import DBObject
from awe.model import BaseFrame
from awe.model._io import read_image, write_image
from awe.storage import CorruptFileError, MissingFileError, vacuum
from tests import _factory


class Picture(BaseFrame):
    """A test frame product made from raw biases."""

    frames = Inputs("RawBiasFrame")


@pytest.fixture
def picture(db, tmp_path):
    raws = _factory.biases(2)
    data = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    path = write_image(tmp_path / "work" / "pic.fits", data, {"OBJECT": "test"})
    pic = Picture(filename="Cal-TESTER-pic.fits", frames=raws, chip=raws[0].chip, instrument=raws[0].instrument)
    commit([(pic, path)])
    os.remove(path)
    return pic, data


def test_commit_stores_file_and_checksum(picture):
    pic, data = picture
    assert context.storage.exists(pic.filename)
    loaded = (Picture.filename == pic.filename)[0]
    assert loaded.checksum == context.storage.checksum(pic.filename)
    path = loaded.retrieve()
    assert path.parent == context.settings.workdir
    np.testing.assert_array_equal(read_image(path), data)
    np.testing.assert_array_equal(loaded.load(), data)


def test_corrupt_file_is_reported_never_used(picture):
    pic, _ = picture
    stored = next(p for p in (context.settings.home.parent / "storage").rglob("*.fits") if p.name.endswith(
        pic.filename) or pic.filename in p.name)
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0xFF
    stored.write_bytes(bytes(raw))
    loaded = (Picture.filename == pic.filename)[0]
    with pytest.raises(CorruptFileError, match="corrupt"):
        loaded.retrieve()
    assert not (context.settings.workdir / pic.filename).exists()


def test_missing_file_is_reported(picture):
    pic, _ = picture
    context.storage.delete(pic.filename)
    with pytest.raises(MissingFileError, match=pic.filename.replace("#", ".")[:20]):
        (Picture.filename == pic.filename)[0].retrieve()


def test_failed_row_insert_leaves_no_visible_product_and_vacuum_cleans(db, tmp_path, monkeypatch):
    raws = _factory.biases(1)
    path = write_image(tmp_path / "work" / "p2.fits", np.ones((4, 4)))
    pic = Picture(filename="Cal-TESTER-p2.fits", frames=raws)

    class Boom(RuntimeError):
        pass

    def exploding_links(*args, **kwargs):
        raise Boom("database went away")

    monkeypatch.setattr("awe.db.commit.link_rows", exploding_links)
    with pytest.raises(Boom):
        commit([(pic, path)])
    assert pic.object_id is None
    assert len(Picture.filename == "Cal-TESTER-p2.fits") == 0
    # the file went in first and is now an orphan: vacuum removes it, keeps the known ones
    assert context.storage.exists("Cal-TESTER-p2.fits")
    table = DBObject.__table__
    with context.engine.connect() as conn:
        known = set(conn.execute(sa.select(table.c.filename)).scalars())
    removed = vacuum(context.storage, known, min_age_s=0, exclusive=True)
    assert removed == ["Cal-TESTER-p2.fits"]
    assert not context.storage.exists("Cal-TESTER-p2.fits")
