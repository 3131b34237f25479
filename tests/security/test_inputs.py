"""Bad inputs are refused cleanly, naming what is wrong (SQLite and PostgreSQL where a database is involved).

* ``Pars``: a NaN threshold would switch its QC check off: refused, naming the
  parameter; ``inf`` stays allowed ("no limit").
* Queries: a datetime attribute compared with a number (SQLite would return
  everything), a number with a string, a string with a number, NaN: refused,
  naming the attribute and the type it expects; ISO date strings still work.
* Names: ``commit`` of a product whose file name is ``../x``, absolute, has a NUL
  or a separator: refused before anything is stored; ``Task(logfile=...)``
  outside the working folder: refused.
"""

from __future__ import annotations

import datetime as dt
import math
import os

import numpy as np
import pytest

from awe import context
from awe.db.commit import commit
from awe.db.query import QueryError
from awe.model import RawBiasFrame
from awe.model._io import write_image
from awe.pars import ParameterError, Pars
from awe.tasks import BiasTask
from tests import _factory

# --------------------------------------------------------------------- Pars
@pytest.mark.parametrize("name", ["MAXIMUM_STDEV", "MAXIMUM_ABS_MEAN", "SIGMA_CLIP"])
def test_nan_thresholds_are_refused_naming_the_parameter(name):
    pars = Pars(BiasTask)
    with pytest.raises(ParameterError, match=f"{name} is NaN.*inf means no limit"):
        setattr(pars.BiasFrame.process_params, name, math.nan)
    with pytest.raises(ParameterError, match=f"{name} is NaN"):
        Pars(BiasTask, {"BiasFrame": {"process_params": {name: float("nan")}}})
    with pytest.raises(ParameterError, match=f"{name} is NaN"):
        Pars(BiasTask, {"BiasFrame": {"process_params": {name: np.float64("nan")}}})


def test_inf_stays_allowed_as_no_limit():
    pars = Pars(BiasTask)
    pars.BiasFrame.process_params.MAXIMUM_STDEV = math.inf
    assert pars.BiasFrame.process_params.MAXIMUM_STDEV == math.inf


# --------------------------------------------------------------------- queries
@pytest.fixture
def biases(db):
    return _factory.biases(4)


#: (query, words its error must name): every one is refused on SQLite and PostgreSQL
MISMATCHED = [
    (lambda: RawBiasFrame.DATE_OBS > 5, ["RawBiasFrame.DATE_OBS", "date and time", "datetime"]),
    (lambda: RawBiasFrame.DATE_OBS < 52701.5, ["RawBiasFrame.DATE_OBS", "date and time"]),
    (lambda: RawBiasFrame.DATE_OBS > "yesterday", ["RawBiasFrame.DATE_OBS", "'yesterday'", "ISO"]),
    (lambda: RawBiasFrame.EXPTIME > "ten", ["RawBiasFrame.EXPTIME", "a number", "'ten'"]),
    (lambda: RawBiasFrame.EXPTIME == dt.datetime(2003, 3, 3), ["RawBiasFrame.EXPTIME", "a number"]),
    (lambda: RawBiasFrame.EXPTIME < math.nan, ["RawBiasFrame.EXPTIME", "NaN"]),
    (lambda: RawBiasFrame.EXPTIME == True, ["RawBiasFrame.EXPTIME", "a number"]),  # noqa: E712
    (lambda: RawBiasFrame.OBJECT == 5, ["RawBiasFrame.OBJECT", "a text"]),
    (lambda: RawBiasFrame.chip.name == 50, ["chip.name", "a text", "'ccd50'"]),
    (lambda: RawBiasFrame.imstat.median > "high", ["imstat.median", "a number"]),
    (lambda: RawBiasFrame.DATE_OBS.in_([1, 2]), ["RawBiasFrame.DATE_OBS", "date and time"]),
    (lambda: RawBiasFrame.filename.like(5), ["filename", "pattern string"]),
]


def test_mismatched_types_in_queries_are_refused(biases):
    for make, words in MISMATCHED:
        with pytest.raises(QueryError) as err:
            list(make())
        for word in words:
            assert word in str(err.value), (word, str(err.value))


def test_matching_types_still_select_the_right_frames(biases):
    assert len(RawBiasFrame.DATE_OBS > dt.datetime(2003, 3, 3, 18, 5)) == 3
    assert len(RawBiasFrame.DATE_OBS > "2003-03-03T18:05") == 3
    assert len(RawBiasFrame.DATE_OBS >= dt.date(2003, 3, 3)) == 4
    assert len(RawBiasFrame.EXPTIME == 0) == 4 and len(RawBiasFrame.EXPTIME < np.float32(1.0)) == 4
    assert len(RawBiasFrame.chip.name == "ccd50") == 4


# --------------------------------------------------------------------- commit names
BAD_NAMES = ["../Cal-TESTER-escape.fits", "../../etc/passwd", "/tmp/Cal-TESTER-abs.fits", "sub/Cal-TESTER.fits",
             "..\\Cal-TESTER.fits", "Cal-TESTER\x00.fits", "Cal\nTESTER.fits", ".hidden.fits"]


def test_commit_refuses_product_names_that_are_not_one_plain_name(db, tmp_path):
    raws = _factory.biases(2)
    before = _factory.db_state(tmp_path / "storage")
    path = write_image(tmp_path / "work" / "ok.fits", np.zeros((4, 4), np.float32), {})
    for name in BAD_NAMES:
        for file in (None, path):
            frame = RawBiasFrame(filename=name, instrument=raws[0].instrument, chip=raws[0].chip)
            with pytest.raises(ValueError, match=r"cannot commit RawBiasFrame .*invalid storage file name"):
                commit([(frame, file)])
            assert frame.object_id is None
    assert _factory.db_state(tmp_path / "storage") == before  # nothing stored, no row
    assert not (tmp_path / "Cal-TESTER-escape.fits").exists() and not (tmp_path / "Cal-TESTER-abs.fits").exists()


# --------------------------------------------------------------------- log files
@pytest.mark.parametrize("logfile", ["../../x.log", "../x.log", "sub/../../x.log", "x\x00.log", ""])
def test_task_logfile_outside_the_working_folder_is_refused(sqlite_db, logfile):
    with pytest.raises(ValueError, match="logfile=.*working folder"):
        BiasTask(instrument="WFI", chip="ccd50", logfile=logfile)


def test_task_logfile_absolute_or_through_a_link_outside_is_refused_when_run(sqlite_db, tmp_path):
    workdir = context.session.settings.workdir
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, workdir / "link")
    for logfile in (str(outside / "abs.log"), "link/x.log"):
        with pytest.raises(ValueError, match="outside the working folder"):
            BiasTask(instrument="WFI", chip="ccd50", logfile=logfile).execute()
    assert list(outside.iterdir()) == []


def test_task_logfile_inside_the_working_folder_is_written(sqlite_db):
    workdir = context.session.settings.workdir
    _factory.instrument()
    for logfile in ("plain.log", "logs/sub.log", str(workdir / "absolute-inside.log")):
        try:
            BiasTask(instrument="WFI", chip="ccd50", logfile=logfile).execute()
        except Exception:  # no raw biases: the task fails, after opening its log file
            pass
        assert (workdir / logfile).is_file()
