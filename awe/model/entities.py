"""Reference data shared by every context: instruments, their chips and filters.

Rows are made from the instrument descriptions in :mod:`awe.instruments` the
first time an instrument is used (:func:`ensure_instrument`).
"""

from __future__ import annotations

import logging

from awe.db.persistent import Float, Integer, Field, Ref, String
from awe.db.schema import Entity, inserted_id

__all__ = ["Instrument", "Chip", "Filter", "ensure_instrument", "lookup_entity"]

log = logging.getLogger(__name__)


class Instrument(Entity):
    """A camera on a telescope (``WFI`` on the MPG/ESO 2.2m)."""

    __tablename__ = "instruments"
    name = Field(String(32), "instrument name", unique=True)
    telescope = Field(String(32), "telescope name")
    observatory = Field(String(64), "observatory")
    longitude = Field(Float, "east longitude of the observatory [deg]")
    latitude = Field(Float, "latitude of the observatory [deg]")
    pixel_scale = Field(Float, "pixel scale [arcsec/pixel]")

    @property
    def spec(self):
        """The full instrument description (chips, geometry, filters)."""
        from awe.instruments import get_instrument
        return get_instrument(self.name)


class Chip(Entity):
    """One CCD of an instrument (``ccd50``); ``index`` is its MEF extension and file suffix."""

    __tablename__ = "chips"
    name = Field(String(32), "chip name", index=True)
    index = Field(Integer, "extension number in the raw MEF file (1..N)")
    instrument = Ref("Instrument", "instrument the chip belongs to")

    @property
    def spec(self):
        return self.instrument.spec.chip(self.name)


class Filter(Entity):
    """A filter, by its Astro-WISE id (``#844``) and ESO name (``BB#Rc/162_ESO844``)."""

    __tablename__ = "filters"
    name = Field(String(32), "Astro-WISE filter id", index=True)
    eso_name = Field(String(64), "ESO filter name")
    band = Field(String(16), "photometric band")
    wavelength = Field(Float, "central wavelength [nm]")
    instrument = Ref("Instrument", "instrument the filter belongs to")


def ensure_instrument(name: str) -> Instrument:
    """The Instrument row for ``name``, creating it (with chips and filters) from its description.

    Idempotent when several processes use a new instrument at once: the rows
    are made in one write transaction that looks again first (SQLite: under
    the write lock), and a concurrent creation that won (PostgreSQL: the unique
    instrument name) is taken instead.
    """
    import sqlalchemy as sa

    from awe.db.engine import write_transaction
    from awe.db.session import current_session
    from awe.instruments import get_instrument
    spec = get_instrument(name)
    found = list(Instrument.name == spec.name)
    if found:
        return found[0]
    inst_t, chip_t, filt_t = Instrument.__table__, Chip.__table__, Filter.__table__
    session = current_session()
    try:
        with write_transaction(session.engine) as conn:
            if conn.execute(sa.select(inst_t.c.object_id).where(inst_t.c.name == spec.name)).first() is None:
                iid = inserted_id(conn.execute(inst_t.insert().values(
                    class_name="Instrument", name=spec.name, telescope=spec.telescope,
                    observatory=spec.observatory, longitude=spec.longitude_deg, latitude=spec.latitude_deg,
                    pixel_scale=spec.pixel_scale,
                )))
                conn.execute(chip_t.insert(), [dict(class_name="Chip", name=c.name, index=c.index,
                                                    instrument_id=iid) for c in spec.chips])
                conn.execute(filt_t.insert(), [dict(class_name="Filter", name=f.id, eso_name=f.eso_name,
                                                    band=f.band, wavelength=f.wavelength_nm, instrument_id=iid)
                                               for f in spec.filters])
    except sa.exc.IntegrityError:
        log.info("instrument %s was created meanwhile by another session; using it", spec.name)
    session.database.forget_entities()
    return list(Instrument.name == spec.name)[0]


def lookup_entity(cls: type[Chip] | type[Filter], instrument: Instrument, name: str) -> Entity:
    """The chip or filter ``name`` of ``instrument`` (filters also by ESO name)."""
    query = (cls.instrument.object_id == instrument.object_id) & (cls.name == name)
    if cls is Filter:
        query = (cls.instrument.object_id == instrument.object_id) & ((cls.name == name) | (cls.eso_name == name))
    found = list(query)
    if not found:
        raise LookupError(f"{instrument.name} has no {cls.__name__.lower()} {name!r}")
    return found[0]


