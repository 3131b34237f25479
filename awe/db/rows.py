"""Catalogue rows: millions of sources in one declared table per row type, with a sky index.

A catalogue product (a reference catalogue, a source list, an association)
is one persistent object; its sources are rows of a table of their own,
declared once like the attributes of a persistent class::

    class ReferenceSource(Rows):
        __tablename__ = "reference_sources"
        catalog = Parent("ReferenceCatalog", "the catalogue the source belongs to")
        ra = Field(Float, "right ascension (ICRS)", unit="deg")
        dec = Field(Float, "declination (ICRS)", unit="deg")
        mag = Field(Float, "magnitude", unit="mag")

    ReferenceSource.insert(catalog, table)               # bulk: executemany (SQLite), COPY (PostgreSQL)
    q = (ReferenceSource.catalog == catalog) & (ReferenceSource.mag < 15)
    len(q); q.table(); q.order_by('mag')[:10]; for row in q: ...
    ReferenceSource.cone(187.28, 2.05, 60.0).table()    # radius in arcsec (or any angle Quantity)
    ReferenceSource.box(187.0, 187.5, 1.8, 2.3)

Every row table has, besides the declared columns:

``row_id``
    the primary key; rows of one insert are stored in sky order (by ``healpix``),
    which keeps a cone's rows together on disk;
``<parent>_id``
    the parent object (``objects.object_id``); its rows are deleted with it
    (see :func:`delete_rows`: no foreign key, which PostgreSQL would check row by
    row and so halve the speed of COPY; the insert checks and locks the parent
    once instead);
``healpix``
    the sky index: the HEALPix pixel (nested scheme, order :data:`HEALPIX_ORDER`
    = 12, nside 4096: 201,326,592 cells of 0.86 arcmin) of the row's position,
    computed at insert with ``astropy-healpix``;
``cx, cy, cz``
    the position's unit vector (as SDSS stores it), so the exact great-circle
    cut of a cone is plain arithmetic in SQL on every database.

A cone query is the disc's pixels (``HEALPix.cone_search_lonlat``, at a coarser
order for large discs, as ranges of the stored order) plus the exact cut
``|v - v0|^2 <= (2 sin(r/2))^2``; a box query is the pixels of a cover of the
box by small discs plus the exact cut on ``ra``/``dec`` (``ra_min > ra_max`` goes
through RA 0). Both are ordinary conditions of the query language: they
combine with ``&``, ``|``, ``~`` and count, sort and slice in the database.

Rows are visible exactly where their parent object is: every query joins the
parent's ``objects`` row and keeps the rows whose parent is in a visible project
(:func:`visible_rows`), in SQL. Fetched tables are columnar (one ``fetchall``,
turned into numpy columns by one structured-array conversion in C, never a
Python object per row) and carry each column's unit and description. On SQLite a
query with a cone or box names the sky index (``INDEXED BY``): without
statistics its planner would read all of a parent's rows instead.

Units follow awe's convention: positions in degrees, radii and sizes in arcsec
unless the name says otherwise (``_deg``, ``_pix``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Alias
from sqlalchemy.sql.visitors import InternalTraversal

from awe.db.persistent import Field, Float, Integer, PersistentError, Ref, metadata, registry
from awe.db.query import Attr, Query, QueryError, RefPath, _And, _Compiler, _Cond, _Or

if TYPE_CHECKING:  # pragma: no cover
    from astropy.table import Row, Table

__all__ = ["Rows", "Parent", "RowQuery", "RowsError", "RowsDeclarationError", "HEALPIX_ORDER", "HEALPIX_NSIDE",
           "healpix_index", "visible_rows", "delete_rows", "row_registry"]

log = logging.getLogger(__name__)

#: order of the sky index: nside 2**12 = 4096, cells of 0.86 arcmin (about the 1 arcmin of a typical cone)
HEALPIX_ORDER = 12
HEALPIX_NSIDE = 2 ** HEALPIX_ORDER
_NPIX = 12 * HEALPIX_NSIDE ** 2  # 201,326,592: fits the INTEGER column

#: rows per executemany (SQLite) / per COPY block (PostgreSQL)
CHUNK_ROWS = 50_000
#: a sky condition uses at most this many pixel ranges (coarser pixels beyond: the exact cut follows anyway)
MAX_RANGES = 48
#: ... and looks up at most this many pixels at its order
_MAX_PIXELS = 512

#: the columns every row table has besides the declared ones
INTERNAL = ("row_id", "healpix", "cx", "cy", "cz")

#: every row class by name
row_registry: dict[str, type["Rows"]] = {}

#: numpy's string functions (``np.strings`` since numpy 2, ``np.char`` before)
_strings: Any = getattr(np, "strings", np.char)


class RowsError(ValueError):
    """Rows cannot be stored or fetched: bad columns, values or parent."""


class RowsDeclarationError(PersistentError, TypeError):
    """A row class is declared wrongly."""


# ====================================================================== columns
#: column kind -> (numpy dtype of the values, PostgreSQL binary format or None for text)
_KINDS: dict[str, tuple[str, str | None]] = {
    "f8": ("float64", ">f8"), "f4": ("float32", ">f4"), "i2": ("int16", ">i2"), "i4": ("int32", ">i4"),
    "i8": ("int64", ">i8"), "bool": ("bool", "|u1"), "text": ("str", None), "json": ("object", None),
}


def _kind(type_: Any) -> str | None:
    """The storage kind of a column type, or None when rows cannot hold it."""
    t = type_() if isinstance(type_, type) else type_
    if isinstance(t, sa.JSON):
        return "json"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.REAL) or (isinstance(t, sa.Float) and not isinstance(t, sa.Double)
                                  and t.precision is not None and t.precision <= 24):
        return "f4"
    if isinstance(t, sa.Float):
        return "f8"
    if isinstance(t, sa.SmallInteger):
        return "i2"
    if isinstance(t, sa.BigInteger):
        return "i8"
    if isinstance(t, sa.Integer):
        return "i4"
    if isinstance(t, sa.String):
        return "text"
    return None


class _Col:
    """One stored column of a row table: name, kind, unit, doc (declared or internal)."""

    def __init__(self, name: str, kind: str, unit: str | None = None, doc: str = "", length: int | None = None,
                 default: Any = None) -> None:
        self.name, self.kind, self.unit, self.doc, self.length, self.default = name, kind, unit, doc, length, default


class Parent(Ref):
    """The parent object of a row (its catalogue): a column ``<name>_id`` -> ``objects.object_id``.

    On the class, ``Source.catalog == cat`` (an object or its id) and
    ``Source.catalog.in_([...])`` select rows of given parents without a join;
    ``Source.catalog.name == 'Landolt'`` goes through the parent's attributes.
    Deleting the parent deletes its rows.
    """

    def __init__(self, target: str, doc: str = "") -> None:
        super().__init__(target, doc, index=True)

    def sql_columns(self) -> list[sa.Column]:
        return [sa.Column(self.column, Integer, nullable=False,
                          comment=f"{self.doc} (objects.object_id)" if self.doc else "objects.object_id")]

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            return ParentPath(cls, (self,))
        return super().__get__(obj, cls)


def _parent_id(value: Any) -> Any:
    from awe.db.persistent import Persistent
    if isinstance(value, Persistent):
        if value.object_id is None:
            raise QueryError(f"{value!r} is not committed: it has no rows")
        return value.object_id
    if value is None or isinstance(value, (int, np.integer)):
        return None if value is None else int(value)
    raise QueryError(f"a parent is an object or its object_id, not {value!r}")


class ParentPath(RefPath):
    """``Source.catalog``: compare with an object or an id (no join), or continue into its attributes."""

    def _id_attr(self) -> Attr:
        parent: Parent = self._refs[0]
        return Attr(self._cls, (), parent)

    def __eq__(self, other: Any) -> Query:  # type: ignore[override]
        return self._id_attr() == _parent_id(other)

    def __ne__(self, other: Any) -> Query:  # type: ignore[override]
        return self._id_attr() != _parent_id(other)

    def in_(self, values: Iterable[Any]) -> Query:
        """Rows of any of these parents (objects or ids)."""
        return self._id_attr().in_([_parent_id(v) for v in values])

    __hash__ = None


# ====================================================================== the row class
class RowsMeta(type):
    """Makes ``Cls.unknown`` an error that lists the valid columns."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        columns = cls.__dict__.get("_columns") or {}
        if name in columns:  # the internal columns (row_id, healpix, cx...) and the parent's id
            return Attr(cls, (), None, column=name, label=name)
        valid = sorted(set(getattr(cls, "_fields", {})) | set(columns))
        raise QueryError(f"{cls.__name__} has no column {name!r}; valid columns are {valid}")


class Rows(metaclass=RowsMeta):
    """Base of the catalogue row types; see the module documentation.

    A subclass with ``__tablename__`` declares one table: exactly one
    :class:`Parent`, the position columns named by ``__position__`` (default
    ``('ra', 'dec')``, Float, unit deg) and any number of :class:`Field` columns
    (Float, Integer, BigInteger, SmallInteger, Boolean, String, JSON; with
    ``unit=`` for quantities). A subclass without ``__tablename__`` is a mixin of
    shared columns. The table goes into awe's schema (``awe.db.persistent.metadata``:
    a schema revision must create it), or into ``__metadata__`` when a test or a
    benchmark sets its own.
    """

    __tablename__: ClassVar[str]
    __table__: ClassVar[sa.Table]
    __position__: ClassVar[tuple[str, str]] = ("ra", "dec")
    #: the MetaData of the table: awe's schema (None), or a private one for tables outside it (tests, benchmarks)
    __metadata__: ClassVar[sa.MetaData | None] = None
    _fields: ClassVar[dict[str, Field]] = {}
    _parents: ClassVar[tuple[Parent, ...]] = ()  # (the Parent column,): a tuple, so no descriptor fires
    _columns: ClassVar[dict[str, _Col]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, Field] = {}
        parents: list[Parent] = []
        for base in reversed(cls.__mro__):
            for key, value in vars(base).items():
                if isinstance(value, Parent):
                    parents = [p for p in parents if p.name != key] + [value]
                elif isinstance(value, Field):
                    fields[key] = value
        cls._fields = {k: f for k, f in fields.items() if not isinstance(f, Parent)}
        if "__tablename__" not in vars(cls):
            return
        name = cls.__name__
        if name in row_registry or name in registry:
            raise RowsDeclarationError(f"two persistent or row classes named {name}")
        if len(parents) != 1:
            raise RowsDeclarationError(f"{name} must declare exactly one Parent(...) column, not {len(parents)}")
        parent = parents[0]
        target = registry.get(parent.target_name)
        if target is None or "project_id" not in getattr(getattr(target, "__table__", None), "c", {}):
            raise RowsDeclarationError(
                f"{name}.{parent.name}: the parent class {parent.target_name!r} must be a persistent product "
                "class (below DBObject) declared before the row class")
        cls._parents = (parent,)
        columns: dict[str, _Col] = {"row_id": _Col("row_id", "i8", doc="row id (rows of one insert in sky order)"),
                                    parent.column: _Col(parent.column, "i4", doc=parent.doc)}
        table_columns: list[sa.Column | sa.Index] = [
            sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=True, comment="row id"),
            *parent.sql_columns(),
        ]
        for key, fld in cls._fields.items():
            kind = _kind(fld.type)
            if kind is None:
                raise RowsDeclarationError(
                    f"{name}.{key}: rows hold Float, Integer, BigInteger, SmallInteger, Boolean, String or JSON "
                    f"columns, not {fld.type!r} (store times as MJD floats)")
            if key in INTERNAL or key == parent.column:
                raise RowsDeclarationError(f"{name}.{key}: the name is taken by an internal column {INTERNAL}")
            if fld.mutable or fld.unique:
                raise RowsDeclarationError(f"{name}.{key}: row columns are neither mutable nor unique")
            unit = getattr(fld, "unit", None)
            if unit is not None:
                import astropy.units as u
                try:
                    u.Unit(unit)
                except ValueError:
                    raise RowsDeclarationError(f"{name}.{key}: unit {unit!r} is not an astropy unit") from None
            length = getattr(fld.type, "length", None) if kind == "text" else None
            columns[fld.column] = _Col(fld.column, kind, unit, fld.doc, length, fld.default)
            comment = f"{fld.doc} [{unit}]" if unit and fld.doc else (fld.doc or None)
            table_columns.append(sa.Column(fld.column, fld.type, nullable=True, index=fld.index, comment=comment))
        for pos in cls.__position__:
            col = columns.get(pos)
            if col is None or col.kind != "f8" or col.unit != "deg":
                raise RowsDeclarationError(
                    f"{name}: the position column {pos!r} (__position__ = {cls.__position__}) must be declared as "
                    f"Field(Float, ..., unit='deg')")
        table_columns += [
            sa.Column("healpix", Integer, nullable=False, index=True,
                      comment=f"HEALPix pixel of the position (nested, order {HEALPIX_ORDER}, nside {HEALPIX_NSIDE})"),
            sa.Column("cx", Float, nullable=False, comment="unit vector of the position: cos(dec) cos(ra)"),
            sa.Column("cy", Float, nullable=False, comment="unit vector of the position: cos(dec) sin(ra)"),
            sa.Column("cz", Float, nullable=False, comment="unit vector of the position: sin(dec)"),
        ]
        columns["healpix"] = _Col("healpix", "i4", doc=f"HEALPix pixel (nested, order {HEALPIX_ORDER})")
        for c in ("cx", "cy", "cz"):
            columns[c] = _Col(c, "f8", doc="unit vector of the position")
        cls._columns = columns
        # the parent's rows in row order (fetch, slices, deletion of the parent), and the sky index
        table_columns.append(sa.Index(f"ix_{cls.__tablename__}_{parent.column}_row_id", parent.column, "row_id"))
        summary = (cls.__doc__ or "").strip().split("\n")[0]
        cls.__table__ = sa.Table(cls.__tablename__, cls.__metadata__ or metadata, *table_columns,
                                 comment=f"rows of {name}: {summary}" if summary else f"rows of {name}")
        row_registry[name] = cls

    _query_class: ClassVar[type] = None  # type: ignore[assignment]  # set below: RowQuery

    def __init__(self) -> None:
        raise RowsDeclarationError(f"{type(self).__name__} rows are not objects: insert a table with "
                                   f"{type(self).__name__}.insert(parent, table)")

    # ------------------------------------------------------------------ queries
    @classmethod
    def all(cls) -> "RowQuery":
        """Every visible row."""
        return RowQuery(cls)

    @classmethod
    def of(cls, *parents: Any) -> "RowQuery":
        """The rows of these parent objects (or ids)."""
        return cls._parents[0].__get__(None, cls).in_(parents)

    @classmethod
    def cone(cls, ra: float, dec: float, radius: Any) -> "RowQuery":
        """The rows within ``radius`` of (``ra``, ``dec``) [deg]; ``radius`` in arcsec or an angle Quantity."""
        return RowQuery(cls, _Cone(cls, ra, dec, _arcsec(radius, "radius")))

    @classmethod
    def box(cls, ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> "RowQuery":
        """The rows with ``ra_min <= ra <= ra_max`` and ``dec_min <= dec <= dec_max`` [deg].

        ``ra_min > ra_max`` is a box through RA 0 (359.5 .. 0.5); ``ra_max - ra_min >= 360``
        is every RA.
        """
        return RowQuery(cls, _Box(cls, ra_min, ra_max, dec_min, dec_max))

    @classmethod
    def column_names(cls) -> list[str]:
        """The names of the stored columns (internal ones included)."""
        return list(cls._columns)

    # ------------------------------------------------------------------ inserting
    @classmethod
    def insert(cls, parent: Any, data: Any, *, connection: sa.Connection | None = None) -> int:
        """Store the rows of ``data`` as rows of ``parent``; returns the number of rows.

        Parameters
        ----------
        parent : DBObject
            The committed parent object (of the class the :class:`Parent` column names).
        data : astropy Table, mapping of column name -> array, or numpy structured array
            Columns by their declared names; missing columns are NULL (or their
            default), the position columns are required. Columns with units are
            converted to the declared unit. RA is stored modulo 360.
        connection : sqlalchemy Connection, optional
            Insert inside this transaction (a commit hook); by default in a
            transaction of its own, after checking that the user may write to
            the parent's project.

        Raises
        ------
        RowsError
            Unknown or missing columns, positions outside the sky, values the
            column cannot hold, or a parent that is not committed.
        """
        from awe.db.schema import DBObject
        target = cls._parents[0].target
        if not isinstance(parent, target) or not isinstance(parent, DBObject):
            raise RowsError(f"{cls.__name__} rows belong to a {target.__name__}, not {parent!r}")
        if parent.object_id is None:
            raise RowsError(f"{parent!r} is not committed: commit it first (its rows go in with it)")
        arrays, n = _normalise(cls, data)
        if n == 0:
            return 0
        if connection is None:
            from awe.db.accounts import PrivilegeError
            from awe.db.session import session_of
            session = session_of(parent)
            if parent.project_id is None or not session.may_write(parent.project_id):
                raise PrivilegeError(f"user {session.user} may not add rows to {parent!r} (project "
                                     f"{parent.project})")
            with session.engine.begin() as conn:
                _write(cls, conn, parent.object_id, arrays, n)
        else:
            _write(cls, connection, parent.object_id, arrays, n)
        log.info("inserted %d %s rows of %s", n, cls.__name__, parent)
        return n


def _arcsec(value: Any, what: str) -> float:
    if hasattr(value, "unit"):
        import astropy.units as u
        try:
            value = value.to_value(u.arcsec)
        except u.UnitConversionError:
            raise ValueError(f"{what} {value!r} is not an angle") from None
    value = float(value)
    if not value > 0:
        raise ValueError(f"{what} must be positive (arcsec), got {value!r}")
    return value


# ====================================================================== normalising input
def _input_columns(data: Any) -> dict[str, Any]:
    from astropy.table import Table
    if isinstance(data, Table):
        return {name: data[name] for name in data.colnames}
    if isinstance(data, np.ndarray) and data.dtype.names:
        return {name: data[name] for name in data.dtype.names}
    if isinstance(data, Mapping):
        return dict(data)
    raise RowsError(f"rows come as an astropy Table, a mapping of column -> array or a structured array, "
                    f"not {type(data).__name__}")


def _with_unit(values: Any, col: _Col, cls: type) -> Any:
    unit = getattr(values, "unit", None)
    if unit is None:
        return values
    import astropy.units as u
    if col.unit is None:
        if u.Unit(unit) == u.dimensionless_unscaled:
            return getattr(values, "value", values)
        raise RowsError(f"{cls.__name__}.{col.name} has no unit, but the input column has unit {unit}")
    try:
        mask = getattr(values, "mask", None)
        converted = (np.asarray(getattr(values, "value", values), dtype=np.float64) * u.Unit(unit)).to_value(col.unit)
    except u.UnitConversionError:
        raise RowsError(f"{cls.__name__}.{col.name} is in {col.unit}; the input column's unit {unit} does "
                        "not convert to it") from None
    return np.ma.masked_array(converted, mask=mask) if mask is not None and np.any(mask) else converted


def _split_mask(values: Any) -> tuple[np.ndarray, np.ndarray | None]:
    mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) or hasattr(values, "mask") else None
    data = np.ma.getdata(values) if mask is not None else values
    return np.asarray(data), (mask if mask is not None and mask.any() else None)


_NONE = np.array(None, dtype=object)


def _is_none(values: np.ndarray) -> np.ndarray:
    """Where an object array holds None (elementwise, in C: ``np.equal(values, None)``)."""
    return np.equal(values, _NONE)


def _convert(cls: type, col: _Col, values: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, null mask or None) of one column, in its storage dtype."""
    values = _with_unit(values, col, cls)
    if col.kind == "json":
        arr = np.empty(n, dtype=object)
        arr[:] = list(values)
        null = np.array([v is None for v in arr], dtype=bool)
        return arr, (null if null.any() else None)
    data, mask = _split_mask(values)
    if data.shape != (n,):
        raise RowsError(f"{cls.__name__}.{col.name}: the input column has shape {data.shape}, not ({n},)")
    if data.dtype.kind == "O":  # Python objects: None is NULL
        none = _is_none(data)
        mask = none if mask is None else (mask | none)
        if none.any():
            data = data.copy()
            data[none] = "" if col.kind == "text" else 0
    if col.kind == "text":
        if data.dtype.kind == "S":
            data = _strings.decode(data, "utf-8")
        data = data.astype(str)
        longest = int(np.max(_strings.str_len(data))) if data.size else 0
        if col.length is not None and longest > col.length:
            raise RowsError(f"{cls.__name__}.{col.name} holds at most {col.length} characters; the input has "
                            f"{longest}")
        return data, mask
    dtype = _KINDS[col.kind][0]
    if col.kind in ("f8", "f4"):
        try:
            out = data.astype(dtype)
        except (TypeError, ValueError):
            raise RowsError(f"{cls.__name__}.{col.name} is a float column; the input column is {data.dtype}") \
                from None
        if mask is not None:
            out[mask] = np.nan
        return out, None  # NaN is NULL
    if data.dtype.kind == "f":
        nan = np.isnan(data)
        mask = nan if mask is None else (mask | nan)
        filled = np.where(nan, 0, data)
        if np.any(filled != np.round(filled)):
            raise RowsError(f"{cls.__name__}.{col.name} is an integer column; the input has fractions")
        data = filled
    elif data.dtype.kind not in "iub":
        raise RowsError(f"{cls.__name__}.{col.name} is an integer column; the input column is {data.dtype}")
    if col.kind != "bool" and data.size:
        info = np.iinfo(dtype)
        good = data if mask is None else data[~mask]
        if good.size and (good.min() < info.min or good.max() > info.max):
            raise RowsError(f"{cls.__name__}.{col.name} holds {dtype} values; the input has "
                            f"{good.min()} .. {good.max()}")
    out = data.astype(dtype)
    if mask is not None:
        out[mask] = 0
    return out, mask


def _normalise(cls: type[Rows], data: Any) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], int]:
    given = _input_columns(data)
    parent_column = cls._parents[0].column
    declared = {c.name: c for c in cls._columns.values() if c.name not in INTERNAL and c.name != parent_column}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise RowsError(f"{cls.__name__} has no column(s) {unknown}; its columns are {sorted(declared)}")
    ra_name, dec_name = cls.__position__
    for pos in (ra_name, dec_name):
        if pos not in given:
            raise RowsError(f"{cls.__name__} rows need the position column {pos!r}; the input has {sorted(given)}")
    lengths = {len(v) for v in given.values()}
    if len(lengths) != 1:
        raise RowsError(f"{cls.__name__}: the input columns have different lengths {sorted(lengths)}")
    n = lengths.pop()
    arrays: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name, col in declared.items():
        if name in given:
            arrays[name] = _convert(cls, col, given[name], n)
        elif col.default is not None:
            arrays[name] = _convert(cls, col, np.full(n, col.default, dtype=object if col.kind == "json" else None),
                                    n)
    ra, dec = arrays[ra_name][0], arrays[dec_name][0]
    bad = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad.any():
        raise RowsError(f"{cls.__name__}: {int(bad.sum())} row(s) have no finite {ra_name}/{dec_name} "
                        f"(first: row {int(np.flatnonzero(bad)[0])}); drop them before inserting")
    if n and np.abs(dec).max() > 90.0:
        raise RowsError(f"{cls.__name__}.{dec_name} has values beyond +-90 deg ({float(np.abs(dec).max())}); "
                        "is it in degrees?")
    ra = np.mod(ra, 360.0)
    ra[ra >= 360.0] = 0.0  # np.mod(-1e-17, 360) == 360.0
    arrays[ra_name] = (ra, None)
    arrays["healpix"] = (healpix_index(ra, dec).astype(np.int32), None)
    for c, v in zip(("cx", "cy", "cz"), _unit_vectors(ra, dec)):
        arrays[c] = (v, None)
    return arrays, n


# ====================================================================== writing
def _lock_parent(conn: sa.Connection, parent_id: int, cls: type) -> None:
    """What a foreign key would check, once per insert: the parent exists, and stays until the commit."""
    from awe.db.schema import DBObject
    objects = DBObject.__table__
    stmt = sa.select(objects.c.object_id).where(objects.c.object_id == parent_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True, read=True)
    if conn.execute(stmt).first() is None:
        raise RowsError(f"{cls.__name__}: parent object {parent_id} does not exist (deleted meanwhile?)")


_Columns = dict[str, tuple[np.ndarray, "np.ndarray | None"]]


def _blocks(arrays: _Columns, size: int) -> Iterator[_Columns]:
    """The rows in sky order (by ``healpix``, stable), ``size`` at a time.

    Each block is gathered only when it is written, so on PostgreSQL the next
    block is built while the server stores the previous one.
    """
    order = np.argsort(arrays["healpix"][0], kind="stable")
    for start in range(0, len(order), size):
        take = order[start:start + size]
        yield {k: (v[take], None if m is None else m[take]) for k, (v, m) in arrays.items()}


def _write(cls: type[Rows], conn: sa.Connection, parent_id: int, arrays: _Columns, n: int) -> None:
    _lock_parent(conn, parent_id, cls)
    names = [cls._parents[0].column] + list(arrays)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        _copy_postgresql(cls, conn, parent_id, names, _blocks(arrays, CHUNK_ROWS))
    elif dialect == "sqlite":
        _executemany_sqlite(cls, conn, parent_id, names, _blocks(arrays, CHUNK_ROWS))
    else:
        _insert_generic(cls, conn, parent_id, names, _blocks(arrays, CHUNK_ROWS))


def _python_lists(cls: type[Rows], block: _Columns, names: Sequence[str]) -> list[Any]:
    """Each column of a block as a Python list (NULL = None; NaN floats are NULL on SQLite)."""
    lists: list[Any] = []
    for name in names:
        values, null = block[name]
        if cls._columns[name].kind == "json":
            out = [None if v is None else json.dumps(v, default=_json_default) for v in values]
        else:
            out = values.tolist()
        if null is not None:
            for i in np.flatnonzero(null).tolist():
                out[i] = None
        lists.append(out)
    return lists


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{value!r} is not JSON-serialisable")


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _executemany_sqlite(cls: type[Rows], conn: sa.Connection, parent_id: int, names: list[str],
                        blocks: Iterable[_Columns]) -> None:
    columns = ", ".join(_quote(conn, c) for c in names)
    sql = (f"INSERT INTO {_quote(conn, cls.__tablename__)} ({columns}) "
           f"VALUES ({', '.join('?' * len(names))})")
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for block in blocks:
            rows = zip(itertools.repeat(parent_id), *_python_lists(cls, block, names[1:]))
            # sqlite3 takes any iterable of rows (no list of 50,000 tuples); SQLAlchemy's DBAPI protocol says Sequence
            cursor.executemany(sql, rows)  # type: ignore[arg-type]
    finally:
        cursor.close()


def _insert_generic(cls: type[Rows], conn: sa.Connection, parent_id: int, names: list[str],
                    blocks: Iterable[_Columns]) -> None:
    for block in blocks:
        rows = [dict(zip(names, (parent_id, *values))) for values in zip(*_python_lists(cls, block, names[1:]))]
        conn.execute(cls.__table__.insert(), rows)


_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_PG_TRAILER = b"\xff\xff"


def _binary_block(cls: type[Rows], fields: list[tuple[str, np.ndarray, np.ndarray | None]], encoding: str) -> bytes:
    """PostgreSQL binary COPY tuples for these columns, built with numpy (no Python loop over rows).

    Each tuple is ``int16 ncols`` then, per column, ``int32 length`` (-1: NULL)
    and the value's bytes. The tuples are laid out in a 2-D byte array with
    every column at its widest, and the bytes that belong to the stream picked
    out with a mask: short strings and NULLs simply take fewer bytes.
    """
    n = len(fields[0][1])
    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []  # (lengths, bytes (n, w), keep (n, w))
    for name, values, null in fields:
        kind = cls._columns[name].kind
        fmt = _KINDS[kind][1]
        if kind in ("f8", "f4"):
            null = np.isnan(values) if null is None else (null | np.isnan(values))
            null = null if null.any() else None
        if fmt is not None:
            raw = np.ascontiguousarray(values.astype(fmt)).view(np.uint8).reshape(n, -1)
            width = raw.shape[1]
            lengths = np.full(n, width, dtype=">i4")
            keep = None
            if null is not None:
                lengths[null] = -1
                keep = np.repeat(~null[:, None], width, axis=1)
        else:
            if kind == "json":
                text = np.array(["" if v is None else json.dumps(v, default=_json_default) for v in values],
                                dtype=str) if n else np.array([], dtype=str)
            else:
                text = values
            try:
                encoded = text.astype("S") if n else np.array([], dtype="S1")  # ASCII: a plain cast
            except UnicodeEncodeError:
                encoded = _strings.encode(text, encoding)
            width = max(encoded.dtype.itemsize, 1)
            raw = np.frombuffer(encoded.tobytes(), dtype=np.uint8).reshape(n, width) if n else \
                np.zeros((0, width), np.uint8)
            size = _strings.str_len(encoded).astype(">i4")
            keep = np.arange(width)[None, :] < size[:, None]
            lengths = size
            if null is not None:
                lengths = np.where(null, -1, size).astype(">i4")
                keep &= ~null[:, None]
        blocks.append((lengths, raw, keep))
    total = 2 + sum(4 + raw.shape[1] for _, raw, _ in blocks)
    out = np.empty((n, total), dtype=np.uint8)
    out[:, :2] = np.frombuffer(np.array(len(fields), dtype=">i2").tobytes(), dtype=np.uint8)
    mask = None
    at = 2
    for lengths, raw, keep in blocks:
        out[:, at:at + 4] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        out[:, at + 4:at + 4 + raw.shape[1]] = raw
        if keep is not None:
            if mask is None:
                mask = np.ones((n, total), dtype=bool)
            mask[:, at + 4:at + 4 + raw.shape[1]] = keep
        at += 4 + raw.shape[1]
    return out.tobytes() if mask is None else out[mask].tobytes()


def _copy_postgresql(cls: type[Rows], conn: sa.Connection, parent_id: int, names: list[str],
                     blocks: Iterable[_Columns]) -> None:
    from psycopg.copy import QueuedLibpqWriter
    driver = conn.connection.driver_connection
    encoding = driver.info.encoding  # type: ignore[union-attr]
    columns = ", ".join(_quote(conn, c) for c in names)
    target = _quote(conn, cls.__tablename__)
    # PostgreSQL refuses COPY into a table with row-level security (awe.db.rls): copy into a temporary table
    # and insert from there, so the policies check every row
    secured = conn.exec_driver_sql(f"SELECT relrowsecurity FROM pg_class WHERE oid = '{target}'::regclass").scalar()
    staged = _quote(conn, f"awe_staged_{cls.__tablename__}"[:63]) if secured else target
    if secured:
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {staged} AS SELECT {columns} FROM {target} WITH NO DATA")
    sql = f"COPY {staged} ({columns}) FROM STDIN (FORMAT BINARY)"
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        # a writer thread feeds the server while this one builds the next block
        with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
            copy.write(_PG_HEADER)
            for block in blocks:
                n = len(block[names[1]][0])
                fields = [(names[0], np.full(n, parent_id, dtype=np.int32), None)] + [
                    (name, *block[name]) for name in names[1:]]
                copy.write(_binary_block(cls, fields, encoding))
            copy.write(_PG_TRAILER)
    if secured:
        conn.exec_driver_sql(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {staged} ORDER BY healpix")
        conn.exec_driver_sql(f"DROP TABLE {staged}")


# ====================================================================== deleting
def delete_rows(conn: sa.Connection, parent_ids: Any, parameters: Sequence[Mapping[str, Any]] = ()) -> None:
    """Delete the rows of every row class whose parent is in ``parent_ids`` (ids or a SELECT of ids).

    ``parameters``: the parameter sets of bound parameters in ``parent_ids``, if any.

    Deleting objects (:mod:`awe.db.publish`) calls it in the same transaction,
    so a catalogue's rows go with it.
    """
    inspector = None
    for cls in list(row_registry.values()):
        table = cls.__table__
        key = (str(conn.engine.url), table.name)
        if key not in _EXISTING:
            inspector = inspector or sa.inspect(conn)
            if not inspector.has_table(table.name):
                continue  # a row class of this process whose table this database does not have
            _EXISTING.add(key)
        stmt = table.delete().where(table.c[cls._parents[0].column].in_(parent_ids))
        for values in parameters or [{}]:
            conn.execute(stmt, dict(values) or None)


_EXISTING: set[tuple[str, str]] = set()


# ====================================================================== the sky index
_HEALPIX: dict[int, Any] = {}


def _healpix(order: int) -> Any:
    if order not in _HEALPIX:
        from astropy_healpix import HEALPix
        _HEALPIX[order] = HEALPix(nside=2 ** order, order="nested")
    return _HEALPIX[order]


def healpix_index(ra: Any, dec: Any) -> np.ndarray:
    """The sky-index pixels (nested, order :data:`HEALPIX_ORDER`) of positions [deg]."""
    import astropy.units as u
    return np.asarray(_healpix(HEALPIX_ORDER).lonlat_to_healpix(np.asarray(ra, dtype=np.float64) * u.deg,
                                                                 np.asarray(dec, dtype=np.float64) * u.deg))


def _unit_vectors(ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    cos_dec = np.cos(dec_r)
    return cos_dec * np.cos(ra_r), cos_dec * np.sin(ra_r), np.sin(dec_r)


def _pixel_deg(order: int) -> float:
    """Side of a pixel of ``order`` [deg] (square root of its area)."""
    return math.degrees(math.sqrt(4 * math.pi / (12 * 4 ** order)))


def _start_order(radius_deg: float) -> int:
    """The finest order (<= the stored one) at which a disc of this radius has at most ~_MAX_PIXELS pixels."""
    for order in range(HEALPIX_ORDER, -1, -1):
        side = _pixel_deg(order)
        if math.pi * (radius_deg + side) ** 2 / side ** 2 <= _MAX_PIXELS:
            return order
    return 0


def _ranges(pixels: np.ndarray, order: int) -> list[tuple[int, int]]:
    """Pixels of ``order`` as inclusive ranges of stored-order pixels, adjacent ones merged."""
    if len(pixels) == 0:
        return []
    shift = 2 * (HEALPIX_ORDER - order)
    pix = np.unique(np.asarray(pixels, dtype=np.int64))
    breaks = np.flatnonzero(np.diff(pix) != 1)
    starts = np.concatenate([[pix[0]], pix[breaks + 1]])
    stops = np.concatenate([pix[breaks], [pix[-1]]])
    return [(int(a) << shift, ((int(b) + 1) << shift) - 1) for a, b in zip(starts, stops)]


def _disc_ranges(discs: Sequence[tuple[float, float, float]]) -> list[tuple[int, int]] | None:
    """Stored-order pixel ranges covering the union of discs (ra, dec, radius) [deg]; None for the whole sky."""
    import astropy.units as u
    if any(r >= 180.0 for _, _, r in discs):
        return None
    order = _start_order(max(r for _, _, r in discs) if len(discs) == 1 else
                         math.sqrt(sum(r * r for _, _, r in discs)))
    while True:
        hp = _healpix(order)
        pixels = np.unique(np.concatenate([hp.cone_search_lonlat((ra % 360.0) * u.deg, dec * u.deg, r * u.deg)
                                           for ra, dec, r in discs]))
        ranges = _ranges(pixels, order)
        if len(ranges) <= MAX_RANGES or order == 0:
            break
        order -= 1
    if ranges == [(0, _NPIX - 1)]:
        return None
    return ranges


def _separation_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance [deg] (haversine)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    s = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1))))


def _box_discs(lo: float, span: float, dec_min: float, dec_max: float) -> list[tuple[float, float, float]]:
    """Small discs whose union covers the box (RA lo .. lo+span, Dec dec_min .. dec_max) [deg].

    The box is cut into cells no wider than a quarter of the box (at most 10 deg,
    at most 90 deg of RA); each cell lies inside the disc around its centre
    through its farthest corner (on a cell's edges the distance from the centre
    grows towards the corners).
    """
    height = dec_max - dec_min
    dec_eq = 0.0 if dec_min <= 0.0 <= dec_max else min(abs(dec_min), abs(dec_max))
    width = span * math.cos(math.radians(dec_eq))
    side = min(max(max(height, width) / 4.0, _pixel_deg(HEALPIX_ORDER)), 10.0)
    n_bands = max(1, math.ceil(height / side))
    edges = np.linspace(dec_min, dec_max, n_bands + 1)
    discs = []
    for d0, d1 in zip(edges[:-1], edges[1:]):
        near_eq = 0.0 if d0 <= 0.0 <= d1 else min(abs(d0), abs(d1))
        step = min(90.0, side / max(math.cos(math.radians(near_eq)), 1e-9))
        n_pieces = max(1, math.ceil(span / step))
        ra_edges = lo + np.linspace(0.0, span, n_pieces + 1)
        r0, r1 = ra_edges[:-1], ra_edges[1:]
        rc, dc = (r0 + r1) / 2, np.full(n_pieces, (d0 + d1) / 2)
        radius = np.max([_separation_deg(rc, dc, r, np.full(n_pieces, d))
                         for r in (r0, r1) for d in (d0, d1)], axis=0)
        discs += [(float(a), float(b), float(c) * (1 + 1e-9) + 1e-9) for a, b, c in zip(rc, dc, radius)]
    return discs


class _Inline(sa.ColumnElement[bool]):
    """A condition written as SQL around column references and numbers (computed here: pixel numbers, unit
    vectors; never a user's text). A cone's SQL this way is built and compiled in a fraction of the time
    SQLAlchemy takes for the same tree of operators (dozens of them).

    ``parts`` are SQL fragments (str), columns and :func:`_value` numbers. The fragments and the columns are the
    cache key; the numbers are parameters rendered into the SQL when it runs (``literal_execute``: the planner
    sees them), so a page's statement is compiled once for every cone of the same number of pixel ranges.
    """

    inherit_cache = True
    _traverse_internals = [("texts", InternalTraversal.dp_string_list),
                           ("elements", InternalTraversal.dp_clauseelement_list)]
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a condition: SQLite gets it as it is, not as "(...) = 1" (no index then)

    def __init__(self, *parts: str | sa.ColumnElement) -> None:
        texts, elements = [""], []
        for part in parts:
            if isinstance(part, str):
                texts[-1] += part
            else:
                elements.append(part)
                texts.append("")
        self.texts, self.elements = texts, elements


@compiles(_Inline)
def _compile_inline(element: _Inline, compiler: Any, **kw: Any) -> str:
    out = [element.texts[0]]
    for part, text in zip(element.elements, element.texts[1:]):
        out += [compiler.process(part, **kw), text]
    return "".join(out)


def _value(value: Any, integer: bool = False) -> sa.BindParameter:
    """A finite number of an :class:`_Inline` condition (rendered exactly, in parentheses by the caller)."""
    value = int(value) if integer else float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return sa.bindparam(None, value, type_=sa.BigInteger() if integer else sa.Float(), unique=True,
                        literal_execute=True)


def _in_ranges(column: sa.ColumnElement, ranges: list[tuple[int, int]]) -> sa.ColumnElement:
    """``column`` in any of the ranges (one statement shape per number of ranges)."""
    if not ranges:
        return sa.false()
    parts: list[str | sa.ColumnElement] = ["("]
    for i, (a, b) in enumerate(ranges):
        parts += [" OR " if i else "", column, " BETWEEN ", _value(a, True), " AND ", _value(b, True)]
    return _Inline(*parts, ")")


class _Cone(_Cond):
    """Rows within a radius: the disc's pixel ranges plus the exact chord cut."""

    def __init__(self, cls: type, ra: float, dec: float, radius_arcsec: float) -> None:
        ra, dec = float(ra), float(dec)
        if not (math.isfinite(ra) and math.isfinite(dec) and abs(dec) <= 90.0):
            raise ValueError(f"cone centre ({ra}, {dec}) is not on the sky: RA and Dec in degrees, |Dec| <= 90")
        self.ra, self.dec, self.radius_deg = ra % 360.0, dec, radius_arcsec / 3600.0
        self.ranges = _disc_ranges([(self.ra, self.dec, self.radius_deg)])

    def sql(self, comp: _Compiler) -> sa.ColumnElement:
        base = comp.base
        x, y, z = (_value(v) for v in _unit_vectors(self.ra, self.dec))
        chord = 2.0 * math.sin(math.radians(min(self.radius_deg, 180.0)) / 2.0)
        cx, cy, cz = base.c.cx, base.c.cy, base.c.cz  # the squared chord to the centre, at most the radius's
        cut = _Inline("((", cx, " - (", x, ")) * (", cx, " - (", x, ")) + (", cy, " - (", y, ")) * (", cy, " - (", y,
                      ")) + (", cz, " - (", z, ")) * (", cz, " - (", z, ")) <= (", _value(chord * chord), "))")
        return cut if self.ranges is None else sa.and_(_in_ranges(base.c.healpix, self.ranges), cut)


class _Box(_Cond):
    """Rows in an RA/Dec box: the pixels of its cover by discs plus the exact cut on ra, dec."""

    def __init__(self, cls: type[Rows], ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> None:
        ra_min, ra_max, dec_min, dec_max = (float(v) for v in (ra_min, ra_max, dec_min, dec_max))
        if not all(math.isfinite(v) for v in (ra_min, ra_max, dec_min, dec_max)):
            raise ValueError("box limits must be finite degrees")
        if dec_min > dec_max:
            raise ValueError(f"dec_min {dec_min} is above dec_max {dec_max}")
        if dec_max < -90.0 or dec_min > 90.0:
            raise ValueError(f"box Dec {dec_min} .. {dec_max} is not on the sky (|Dec| <= 90 deg)")
        dec_min, dec_max = max(dec_min, -90.0), min(dec_max, 90.0)  # beyond a pole is the pole
        self.cls = cls
        self.full_ra = ra_max - ra_min >= 360.0
        self.lo, self.hi = ra_min % 360.0, ra_max % 360.0
        self.dec_min, self.dec_max = dec_min, dec_max
        span = 360.0 if self.full_ra else (self.hi - self.lo) % 360.0
        if self.full_ra and dec_min <= -90.0 and dec_max >= 90.0:
            self.ranges = None
        else:
            self.ranges = _disc_ranges(_box_discs(self.lo, span, dec_min, dec_max))

    def sql(self, comp: _Compiler) -> sa.ColumnElement:
        ra_name, dec_name = self.cls.__position__
        ra, dec = comp.base.c[ra_name], comp.base.c[dec_name]
        parts = [dec.between(self.dec_min, self.dec_max)]
        if not self.full_ra:
            parts.append(ra.between(self.lo, self.hi) if self.lo <= self.hi else sa.or_(ra >= self.lo, ra <= self.hi))
        if self.ranges is not None:
            parts.insert(0, _in_ranges(comp.base.c.healpix, self.ranges))
        return sa.and_(*parts)


# ====================================================================== visibility and queries
def visible_rows(parent: sa.FromClause, visible_project_ids: Sequence[int] | None) -> sa.ColumnElement:
    """The SQL condition "the row's parent object is visible": its project is one of ``visible_project_ids``.

    ``parent`` is the parent's ``objects`` row joined to the row table; None
    (no restriction) is for administrators' tools only.
    """
    if visible_project_ids is None:
        return sa.true()
    return parent.c.project_id.in_(list(visible_project_ids))


class _IndexedAlias(Alias):
    """A table alias that, on SQLite, names the index the planner must use (``INDEXED BY``).

    The index's name is part of the statement's cache key (a compilation is reused only for the same index, or
    none), so SQLAlchemy compiles a page's statement once, not on every request.
    """

    inherit_cache = True
    _traverse_internals = Alias._traverse_internals + [("index_name", InternalTraversal.dp_string)]
    index_name: str | None = None


@compiles(_IndexedAlias)
def _compile_alias(element: _IndexedAlias, compiler: Any, **kw: Any) -> str:
    return compiler.visit_alias(element, **kw)


@compiles(_IndexedAlias, "sqlite")
def _compile_alias_sqlite(element: _IndexedAlias, compiler: Any, **kw: Any) -> str:
    text = compiler.visit_alias(element, **kw)
    if kw.get("asfrom") and element.index_name:
        text += f" INDEXED BY {compiler.preparer.quote(element.index_name)}"
    return text


def _conjuncts(cond: _Cond | None) -> Iterator[_Cond]:
    if isinstance(cond, _And) and not isinstance(cond, _Or):
        for part in cond.parts:
            yield from _conjuncts(part)
    elif cond is not None:
        yield cond


class _RowCompiler(_Compiler):
    """Compiles conditions on a row class; joins the parent (inner) for the visibility condition.

    A query whose conditions include a cone or a box (as a term of the AND) is
    driven by the sky index: without statistics SQLite would rather read every
    row of the parent through the parent's index, so it is told ``INDEXED BY``.
    """

    key = "row_id"

    def __init__(self, cls: type[Rows], visible: Sequence[int] | None) -> None:
        super().__init__(cls, visible)
        self.base = _IndexedAlias._construct(cls.__table__, name=None)
        # the parent's table itself, not an alias (it is joined once; an alias of the wide objects
        # table would cost more to build than a small cone query takes to run)
        parent = cls._parents[0]
        objects = parent.target.__table__
        self.joins[(parent,)] = objects
        self.join_list.append((objects, objects.c.object_id == self.base.c[parent.column], True))
        self.parent = objects

    def order_term(self, column: sa.ColumnElement, descending: bool) -> sa.ColumnElement:
        # rows without a value last, on every database (SQLite and PostgreSQL differ by default)
        return (column.desc() if descending else column.asc()).nulls_last()

    def where(self, cond: _Cond | None) -> sa.ColumnElement:
        parts = [visible_rows(self.parent, self.visible)]
        if cond is not None:
            parts.append(cond.sql(self))
        if any(isinstance(c, (_Cone, _Box)) and c.ranges is not None for c in _conjuncts(cond)):
            self.base.index_name = next(ix.name for ix in self.cls.__table__.indexes
                                        if [c.name for c in ix.columns] == ["healpix"])
        return sa.and_(*parts)


class RowQuery(Query):
    """A selection of catalogue rows; runs in the database when used.

    ``len(q)`` counts; ``q.table()`` fetches an astropy Table (all declared
    columns with units, or ``columns=[...]``); iterating yields the table's
    rows; ``q[i]`` is one row, ``q[a:b]`` a table (LIMIT/OFFSET in SQL);
    ``q.order_by('mag')`` sorts; ``q.max('mag')`` is the row with the largest
    value; ``q.values('mag')`` one column.
    """

    def _compiler(self) -> _Compiler:
        return _RowCompiler(self.cls, self.session.visible_project_ids())

    def _attributes(self, columns: Sequence[str] | None) -> list[tuple[str, Attr, _Col | None]]:
        cls = self.cls
        if columns is None:
            names = ["row_id", cls._parents[0].column] + [f.column for f in cls._fields.values()]
        else:
            names = list(columns)
        out = []
        for name in names:
            col = cls._columns.get(name)
            attr = Attr(cls, (), None, column=name, label=name) if col is not None else self._path(name)
            out.append((name, attr, col))
        return out

    def table(self, columns: Sequence[str] | None = None) -> "Table":
        """The rows as an astropy Table, in the current order.

        Parameters
        ----------
        columns : list of str, optional
            Column names (default: ``row_id``, the parent's id and every
            declared column; also the internal ``healpix``, ``cx``.. and paths
            through the parent such as ``'catalog.name'``).
        """
        return self._table(columns, None, None)

    def _table(self, columns: Sequence[str] | None, offset: int | None, limit: int | None) -> "Table":
        attrs, rows = self._rows(columns, offset, limit)
        return _build_table(attrs, rows)

    def _values(self, columns: Sequence[str] | None, offset: int | None, limit: int | None) -> list[tuple]:
        """The rows as tuples of plain Python values (None where NULL) in the order of ``columns``: what a web page
        shows, without building a Table."""
        attrs, rows = self._rows(columns, offset, limit)
        return _python_values(attrs, rows)

    def _rows(self, columns: Sequence[str] | None, offset: int | None, limit: int | None, count: bool = False
              ) -> tuple[list[tuple[str, Attr, _Col | None]], Sequence[tuple]]:
        attrs = self._attributes(columns)
        stmt, _ = self._select(lambda comp: [a._sql(comp).label(f"c{i}") for i, (_, a, _) in enumerate(attrs)]
                               + ([sa.func.count().over().label("total")] if count else []))
        if offset:
            stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        return attrs, self._fetch(stmt)

    def _values_and_count(self, columns: Sequence[str] | None, limit: int) -> tuple[list[tuple], int]:
        """The first ``limit`` rows (as :meth:`_values`) and the number of all rows, in one statement
        (``count(*) OVER ()``: one pass over the selection instead of two; for a small selection such as a cone,
        which the database collects and sorts anyway)."""
        attrs, rows = self._rows(columns, None, limit, count=True)
        if not rows:
            return [], 0
        return _python_values(attrs, [row[:-1] for row in rows]), int(rows[0][-1])

    def _fetch(self, stmt: sa.Select) -> Sequence[tuple]:
        """The driver's tuples (no per-row processing by SQLAlchemy); PostgreSQL sends them in binary."""
        with self.session.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                sql, params = _driver_statement(stmt, conn.dialect)
                if all(_plain_param(v) for v in params.values()):
                    raw: Any = conn.connection.driver_connection
                    if _PIPELINE and raw.info.transaction_status == _IDLE:
                        return _fetch_pipelined(conn, raw, sql, params)
                    conn.begin()  # the "begin" event runs first (a session of Session.open_as: SET LOCAL ROLE)
                    with raw.cursor(binary=True) as cursor:
                        cursor.execute(sql, params)
                        return cursor.fetchall()
            return conn.execute(stmt).cursor.fetchall()

    def __iter__(self) -> Iterator["Row"]:
        return iter(self.table())

    def list(self) -> list[Any]:
        return list(self.table())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            if (index.start or 0) < 0 or (index.stop or 0) < 0 or index.step not in (None, 1):
                return self.table()[index]
            start = index.start or 0
            return self._table(None, start, None if index.stop is None else max(index.stop - start, 0))
        if index < 0:
            index += self.count()
        result = self._table(None, index, 1) if index >= 0 else []
        if not len(result):
            raise IndexError(f"query on {self.cls.__name__} has no row number {index}")
        return result[0]

    def first(self) -> Any | None:
        """The first row in the current order, or None."""
        result = self._table(None, None, 1)
        return result[0] if len(result) else None

    def _extreme(self, name: str, desc: bool) -> Any | None:
        """The row with the largest (smallest) ``name``; rows without a value are left out."""
        attr = self._path(name)
        attrs = self._attributes(None)
        comp = self._compiler()
        where = comp.where(self._cond)  # first: it may add joins and the index hint
        column = attr._sql(comp)
        selected = [a._sql(comp).label(f"c{i}") for i, (_, a, _) in enumerate(attrs)]
        stmt = (sa.select(*selected).select_from(comp.from_clause()).where(where, column.is_not(None))
                .order_by(column.desc() if desc else column.asc(), comp.base.c[comp.key].desc()).limit(1))
        table = _build_table(attrs, self._fetch(stmt))
        return table[0] if len(table) else None

    def values(self, name: str) -> Any:
        """One column of every row, in the current order (an astropy Column, with its unit)."""
        return self.table([name])[name]

    def __repr__(self) -> str:
        return f"<RowQuery on {self.cls.__name__}>"


Rows._query_class = RowQuery


def _pipeline_supported() -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite only
        return False
    return bool(psycopg.Pipeline.is_supported())


_PIPELINE = _pipeline_supported()
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


_COMPILED: "OrderedDict[Any, Any]" = OrderedDict()
_COMPILED_LOCK = threading.Lock()
_COMPILED_SIZE = 500


def _driver_statement(stmt: sa.Select, dialect: Any) -> tuple[str, dict[str, Any]]:
    """The SQL text and parameters of ``stmt`` for the driver itself, compiled once per statement shape as
    SQLAlchemy's own execution does (by the statement's cache key, in a cache of :data:`_COMPILED_SIZE`); each
    execution fills in its own values, the IN lists and the numbers rendered into the text."""
    key = stmt._generate_cache_key()
    if key is None:  # a construct that cannot be cached
        once = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        return str(once), dict(once.params)
    full = (id(dialect), key.key)
    with _COMPILED_LOCK:
        compiled = _COMPILED.get(full)
        if compiled is not None:
            _COMPILED.move_to_end(full)
    if compiled is None:
        compiled = stmt.compile(dialect=dialect, cache_key=key)
        with _COMPILED_LOCK:
            _COMPILED[full] = compiled
            while len(_COMPILED) > _COMPILED_SIZE:
                _COMPILED.popitem(last=False)
    values = compiled.construct_params(extracted_parameters=key.bindparams, escape_names=False)
    state = compiled.construct_expanded_state(values)
    return state.statement, dict(state.parameters)


def _fetch_pipelined(conn: sa.Connection, raw: Any, sql: str, params: Any) -> Sequence[tuple]:
    """The rows of one query on PostgreSQL in one round trip: ``BEGIN``, the statements of the engine's "begin"
    event (a session of ``Session.open_as``: ``SET LOCAL ROLE user``, so row-level security applies), the query
    and ``COMMIT`` sent at once (psycopg's pipeline mode), instead of a round trip each.

    The transaction is opened explicitly (the connection in autocommit for the moment, so psycopg sends no
    ``BEGIN`` of its own and waits for its answer); it is ended by the ``COMMIT`` (after an error: rolled back
    here), so SQLAlchemy's own end of the transaction and the pool's reset have nothing left to send.
    """
    raw.autocommit = True
    try:
        with raw.pipeline() as pipeline:
            raw.execute("BEGIN")
            conn.begin()  # the "begin" event's statements, in the transaction just begun
            with raw.cursor(binary=True) as cursor:
                cursor.execute(sql, params)
                raw.execute("COMMIT")
                pipeline.sync()
                return cursor.fetchall()
    finally:
        if not raw.closed:
            if raw.info.transaction_status != _IDLE:
                raw.rollback()
            raw.autocommit = False


def _plain_param(value: Any) -> bool:
    """A parameter the driver takes as it is (SQLAlchemy would not convert it)."""
    if isinstance(value, (list, tuple)):
        return all(_plain_param(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


# ====================================================================== fetching
#: dtype of each kind in the structured array a fetch is converted into ('O': post-processed)
_FETCH_DTYPES = {"f8": "f8", "f4": "f4", "i2": "i2", "i4": "i4", "i8": "i8", "bool": "?"}


def _fetched_columns(kinds: list[str | None], rows: Sequence[tuple]) -> list[Any]:
    """The columns of fetched tuples: one structured-array conversion in C, or a transposition when it fails."""
    if not rows:
        return [np.array([], dtype=_KINDS[k][0] if k in _KINDS and k != "json" else object) for k in kinds]
    dtype = np.dtype([(f"c{i}", _FETCH_DTYPES.get(k or "", "O")) for i, k in enumerate(kinds)])
    try:
        array = np.array(rows, dtype=dtype)
    except (TypeError, ValueError):  # NULL in an integer column, or a value the dtype does not take
        return [np.array(values, dtype=object) for values in zip(*rows)]
    return [array[f"c{i}"] for i in range(len(kinds))]


def _column_values(kind: str | None, values: np.ndarray) -> Any:
    """A numpy array (masked where NULL for integers) from one fetched column."""
    if kind in ("f8", "f4"):
        return values.astype(np.float64 if kind == "f8" else np.float32)  # None -> NaN
    if kind in ("i2", "i4", "i8", "bool"):
        dtype = _KINDS[kind][0]
        if values.dtype != object:
            return values.astype(dtype)
        null = _is_none(values)
        filled = values.copy()
        filled[null] = 0
        return np.ma.masked_array(filled.astype(dtype), mask=null) if null.any() else filled.astype(dtype)
    if kind == "text":
        obj = values.astype(object)
        obj[_is_none(obj)] = ""
        return obj.astype(str) if len(obj) else np.array([], dtype=str)
    if kind == "json":
        out = np.empty(len(values), dtype=object)
        out[:] = [json.loads(v) if isinstance(v, (str, bytes)) else v for v in values]
        return out
    # a path through the parent: whatever the driver returned
    obj = values.astype(object)
    if len(obj) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
        return obj.astype(np.float64 if any(isinstance(v, float) for v in obj) else np.int64)
    if len(obj) and all(isinstance(v, str) or v is None for v in obj):
        obj[_is_none(obj)] = ""
        return obj.astype(str)
    return obj


def _python_values(attrs: list[tuple[str, Attr, _Col | None]], rows: Sequence[tuple]) -> list[tuple]:
    """Fetched tuples as plain Python values of each column's kind (None where NULL or NaN)."""
    def number(v: Any) -> Any:
        return None if v is None or v != v else float(v)

    def integer(v: Any) -> Any:
        return None if v is None else int(v)

    def flag(v: Any) -> Any:
        return None if v is None else bool(v)

    def js(v: Any) -> Any:
        return json.loads(v) if isinstance(v, (str, bytes)) else v

    def same(v: Any) -> Any:
        return v

    by_kind = {"f8": number, "f4": number, "i2": integer, "i4": integer, "i8": integer, "bool": flag, "json": js}
    convert = [by_kind.get(col.kind, same) if col is not None else same for _, _, col in attrs]
    return [tuple(f(v) for f, v in zip(convert, row)) for row in rows]


def _build_table(attrs: list[tuple[str, Attr, _Col | None]], rows: Sequence[tuple]) -> "Table":
    from astropy.table import Table
    kinds = [col.kind if col is not None else None for _, _, col in attrs]
    arrays = [_column_values(kind, values) for kind, values in zip(kinds, _fetched_columns(kinds, rows))]
    return Table(arrays, names=[name for name, _, _ in attrs], copy=False,
                 units=[col.unit if col is not None else None for _, _, col in attrs],
                 descriptions=[(col.doc if col is not None else "") or None for _, _, col in attrs])
