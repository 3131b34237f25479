"""Frames: the attributes every image shares, raw frames, and ``select``.

Every frame has its instrument, chip and filter, the header attributes
(``OBJECT``, ``DATE_OBS``, ``MJD_OBS``, ``EXPTIME``, ``AIRMASS``, ``RA``,
``DEC``) and ``imstat`` of its data area.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any

from awe.db.persistent import DateTime, Field, Float, Integer, Ref, String
from awe.db.query import Query, observing_night
from awe.db.schema import DBObject, imstat_field

__all__ = ["BaseFrame", "RawFrame", "RawBiasFrame", "RawDomeFlatFrame", "RawTwilightFlatFrame",
           "RawScienceFrame", "RawStandardFrame", "product_filename", "QualityFlags"]


class QualityFlags:
    """Bits of ``quality_flags`` set by automatic checks (0 = fine)."""

    WRONG_LEVEL = 1 << 0       # level outside the range expected for the frame type
    SATURATED = 1 << 1         # too many saturated pixels
    EMPTY = 1 << 2             # no signal / constant frame
    TOO_NOISY = 1 << 3         # stdev above the limit
    NOT_FLAT = 1 << 4          # structure above the limit (flatness checks)
    DIFFERS_FROM_PREVIOUS = 1 << 5
    FEW_INPUTS = 1 << 6
    BAD_SOLUTION = 1 << 7
    ZERO_EXPTIME = 1 << 8      # a science/standard exposure of 0 s (ingest)
    GAIN_ASSUMED = 1 << 9      # the header's gain was missing or not positive: the instrument's was used (ingest)
    FILE_LOST = 1 << 10        # the stored file is missing or corrupt and could not be restored (awe storage check)

    @classmethod
    def describe(cls, flags: int) -> list[str]:
        return [name for name, bit in vars(cls).items() if isinstance(bit, int) and flags & bit]


class BaseFrame(DBObject, abstract=True):
    """An image: a file in the data storage with its instrument, chip, filter and header attributes."""

    __tablename__ = "frames"

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD)")
    filter = Ref("Filter", "filter")
    OBJECT = Field(String(80), "target name from the header", index=True)
    DATE_OBS = Field(DateTime, "start of the exposure (UTC)", index=True)
    MJD_OBS = Field(Float, "modified Julian date of the start of the exposure", index=True)
    EXPTIME = Field(Float, "exposure time [s]")
    AIRMASS = Field(Float, "airmass at the start of the exposure")
    RA = Field(Float, "telescope pointing right ascension [deg]")
    DEC = Field(Float, "telescope pointing declination [deg]")
    NAXIS1 = Field(Integer, "image width [pixels]")
    NAXIS2 = Field(Integer, "image height [pixels]")
    imstat = imstat_field()

    # ------------------------------------------------------------ selection
    @classmethod
    def select(cls, instrument: str | None = None, chip: str | None = None, filter: str | None = None,
               date: str | _dt.date | None = None, object: str | None = None, **attributes: Any) -> Query:
        """Valid frames (quality_flags == 0 and is_valid != 0) matching the keywords.

        Frames on the current project's exclusion list (``context.exclude``) are
        left out too.

        ``date`` is the observing night (local noon to noon at the observatory);
        ``object`` accepts wildcards (``'3C*'``); other keywords compare
        attributes for equality.
        """
        query = (cls.quality_flags == 0) & ((cls.is_valid != 0) | (cls.is_valid == None))  # noqa: E711
        from awe.db.audit import excluded
        from awe.db.session import current_session
        left_out = list(excluded(current_session()))
        if left_out:
            query &= ~cls.object_id.in_(left_out)
        if instrument is not None:
            query &= cls.instrument.name == instrument
        if chip is not None:
            query &= cls.chip.name == chip
        if filter is not None:
            query &= (cls.filter.name == filter) | (cls.filter.eso_name == filter)
        if object is not None:
            query &= cls.OBJECT.like(object) if any(c in object for c in "*?") else cls.OBJECT == object
        if date is not None:
            query &= cls.DATE_OBS.between(*observing_night(date, _longitude(instrument)))
        for key, value in attributes.items():
            query &= getattr(cls, key) == value
        return query

    # ------------------------------------------------------------ files
    def retrieve(self, dest: str | Path | None = None) -> Path:
        """Fetch the file from the data storage into the working folder; returns its path."""
        from awe.db.session import session_of
        if not self.filename:
            raise ValueError(f"{self!r} has no file")
        session = session_of(self)
        # through the session: only the file of an object this user sees, verified against the recorded checksum
        return session.retrieve(self.filename, Path(dest or session.settings.workdir))

    def local_path(self) -> Path:
        """Path of a readable copy (from the cache or storage), verified against the checksum."""
        from awe.db.session import session_of
        if self.object_id is None:
            path = getattr(self, "_local_path", None)
            if path is None:
                raise ValueError(f"{self!r} was not committed and has no local file")
            return Path(path)
        return session_of(self).open_file(self.filename)

    def load(self):
        """The pixel data (float32 numpy array) of the first image HDU."""
        from awe.model._io import read_image
        return read_image(self.local_path())

    def inspect(self, ax=None, path: str | Path | None = None):
        """Draw the frame (ZScale) with its statistics; returns the figure."""
        from awe.model._io import inspect_image
        return inspect_image(self, ax=ax, path=path)

    def stamps(self, ra: float, dec: float, size_arcsec: float = 20.0) -> Any:
        """Cut-outs of (ra, dec) [deg] from this image and every image it was made from (awe.model.stamps)."""
        from awe.model.stamps import stamps
        return stamps(self, ra, dec, size_arcsec)


def _longitude(instrument: str | None) -> float:
    """East longitude of the instrument's observatory (of the only known instrument when not given)."""
    from awe.model.entities import Instrument
    found = list(Instrument.name == instrument) if instrument else list(Instrument.all())
    if len(found) != 1 or found[0].longitude is None:
        raise ValueError(
            f"date= needs the observatory of instrument {instrument!r} to know its local noon: "
            + ("give instrument=" if not instrument else "ingest data of that instrument first")
        )
    return found[0].longitude


class RawFrame(BaseFrame, abstract=True):
    """A raw frame: one chip of an ESO raw MEF file, as ingested."""

    __tablename__ = "raw_frames"

    raw_file = Field(String(255), "original raw MEF file name", index=True)
    extension = Field(Integer, "extension number in the raw MEF file")
    DPR_TYPE = Field(String(32), "HIERARCH ESO DPR TYPE")
    gain = Field(Float, "gain from the header [e-/ADU]")


class RawBiasFrame(RawFrame):
    """A raw bias (zero-second) exposure of one chip."""


class RawDomeFlatFrame(RawFrame):
    """A raw dome flat of one chip."""


class RawTwilightFlatFrame(RawFrame):
    """A raw twilight (sky) flat of one chip."""


class RawScienceFrame(RawFrame):
    """A raw science exposure of one chip."""


class RawStandardFrame(RawScienceFrame):
    """A raw exposure of a photometric standard field."""


def product_filename(category: str, step: str, instrument: str | None, filter: str | None, chip: str | None,
                     user: str, unique: str) -> str:
    """A unique, readable product file name in the Astro-WISE style.

    ``Sci-AWUSER-WFI-----#844-ccd50-Red---Sci-54637.9045189-<sha1>.fits``
    """
    from astropy.time import Time
    mjd = Time(_dt.datetime.now(_dt.UTC).replace(tzinfo=None), scale="utc").mjd
    digest = hashlib.sha1(f"{unique}-{user}-{mjd:.9f}".encode()).hexdigest()
    return (f"{category}-{user.upper()}-{instrument or ''}-{(filter or ''):->8}-{chip or ''}-"
            f"{step:-<6}{category}-{mjd:.7f}-{digest}.fits")


