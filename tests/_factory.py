"""Small builders of persistent objects for the database tests (no pixels needed)."""

from __future__ import annotations

import datetime as dt


from awe.db.commit import commit
from awe import context
from awe.db.schema import ImStat
from awe.model import Chip, Filter, Instrument, RawBiasFrame


def instrument(name: str = "WFI", chips: int = 8) -> Instrument:
    """An Instrument with chips ccd50.. and filter #844 (rows only)."""
    found = list(Instrument.name == name)
    if found:
        return found[0]
    with context.engine.begin() as conn:
        iid = conn.execute(Instrument.__table__.insert().values(
            class_name="Instrument", name=name, longitude=-70.7346)).inserted_primary_key[0]
        conn.execute(Chip.__table__.insert(), [dict(class_name="Chip", name=f"ccd{50 + i}", index=i + 1,
                                                     instrument_id=iid) for i in range(chips)])
        conn.execute(Filter.__table__.insert(), [dict(class_name="Filter", name="#844",
                                                       eso_name="BB#Rc/162_ESO844", instrument_id=iid)])
    context.forget_entities()
    return list(Instrument.name == name)[0]


def chip(name: str) -> Chip:
    return list(Chip.name == name)[0]


def biases(n: int = 10, chip_name: str = "ccd50", start: dt.datetime = dt.datetime(2003, 3, 3, 18, 2)) -> list:
    inst = instrument()
    c = chip(chip_name)
    objs = []
    for i in range(n):
        when = start + dt.timedelta(minutes=7 * i, seconds=i)
        objs.append(RawBiasFrame(
            filename=f"WFI.{when.isoformat(timespec='milliseconds')}_{c.index}.fits", instrument=inst, chip=c,
            EXPTIME=0.0, OBJECT="BIAS", DATE_OBS=when, MJD_OBS=52701.0 + i / 100,
            imstat=ImStat(mean=182.0, median=180.0 + i % 4, stdev=28.0 + i / 10, min=150.0, max=400.0)))
    commit([(o, None) for o in objs])
    return objs




def chip_file(date_obs: str, chip: str) -> str:
    """The per-chip raw file name of an exposure (``_1`` is ccd50)."""
    return f"WFI.{date_obs}_{int(chip[3:]) - 49}.fits"


def db_state(storage) -> tuple[int, int, list[str]]:
    """Rows in the objects and links tables and the files in the data storage (to prove nothing changed)."""
    import sqlalchemy as sa
    with context.engine.connect() as conn:
        objects = conn.execute(sa.text("SELECT count(*) FROM objects")).scalar()
        links = conn.execute(sa.text("SELECT count(*) FROM links")).scalar()
    return objects, links, sorted(str(p) for p in storage.rglob("*") if p.is_file())


def ingest_into_fresh_context(root, raw, user: str = "tester"):
    """Connect to a new embedded database under ``root`` and ingest the raw files of ``raw``; returns the
    storage folder."""
    from awe.config import load_settings
    from awe.tasks.ingest import ingest
    settings = load_settings(home=str(root / "home"), workdir=str(root / "work"), user=user,
                             storage=str(root / "storage"))
    (root / "work").mkdir(exist_ok=True)
    context.connect(settings, create_user=True)
    report = ingest([raw])
    assert not report.failed, str(report)
    return root / "storage"


def calibrate_chip(chip: str) -> None:
    """The course's calibration chain for one chip of the night of 2003-03-03 (filter #844), committed."""
    from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,
                           TwilightFlatTask)
    BiasTask(instrument='WFI', chip=chip, overscan=6, commit=1).execute()
    HotPixelsTask(instrument='WFI', chip=chip, date='2003-03-03', commit=1).execute()
    DomeFlatTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844', commit=1).execute()
    ColdPixelsTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844', commit=1).execute()
    TwilightFlatTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844', commit=1).execute()
    MasterFlatTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844', commit=1).execute()
