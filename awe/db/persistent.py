"""Persistent classes: attributes declared once, stored in SQL tables, queried by expressions.

A persistent class declares its attributes with descriptors::

    class RawBiasFrame(RawFrame):
        EXPTIME = Field(Float, "exposure time [s]")
        chip = Ref(Chip)
        imstat = Embedded(ImStat)
        raw_bias_frames = Inputs(RawBiasFrame)

On the class, an attribute is a query path (``RawBiasFrame.chip.name == 'ccd50'``
is a :class:`~awe.db.query.Query`); on an instance it is the value.

Tables (joined-table inheritance): a class with ``__tablename__`` and no
persistent ancestor with a table is a *root* (``objects`` for every product,
``instruments``, ...): its table has ``object_id`` and ``class_name`` and the
attributes it declares. A class with ``__tablename__`` below a root starts a
*family* table (``frames``, ``bias_frames``, ...) keyed by the same
``object_id``; every attribute goes into the table of the nearest class that
has one. So an object is one row in each table of its chain
(``cls._tables``: root first), a query on a class sees its subclasses too
(``class_name IN (...)``), and a column name means one quantity with one unit:
the same name may not appear twice along a chain.

Instances are plain Python objects, detached from any database session: they are
loaded by queries and written by :func:`awe.db.commit.commit`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, ClassVar, Iterable, Self

import sqlalchemy as sa

__all__ = [
    "metadata", "Field", "Ref", "Embedded", "Input", "Inputs", "Persistent", "registry",
    "Float", "Integer", "String", "DateTime", "JSON", "Boolean", "PersistentError",
    "ReadOnlyAttributeError",
]

Float = sa.Float
Integer = sa.Integer
String = sa.String
DateTime = sa.DateTime
JSON = sa.JSON
Boolean = sa.Boolean

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

#: every persistent class by name (``class_name`` in the tables)
registry: dict[str, type["Persistent"]] = {}


class PersistentError(RuntimeError):
    """Misuse of a persistent object."""


class ReadOnlyAttributeError(PersistentError, AttributeError):
    """An attribute of a committed object that may not change."""


class Field:
    """A stored attribute: one column.

    Parameters
    ----------
    type_ : sqlalchemy type
        ``Float``, ``Integer``, ``String``, ``DateTime``, ``JSON`` or ``Boolean``.
    doc : str
        What the attribute means (with its unit).
    index : bool
        Create an index on the column.
    default : object
        Value of a new object.
    mutable : bool
        May change after commit (``is_valid``, ``quality_flags``, the validity
        range), through ``obj.update(name=value)`` only.
    unit : str, optional
        The astropy unit of a quantity (``'deg'``, ``'arcsec'``, ``'mag'``); catalogue
        rows (:mod:`awe.db.rows`) put it on their fetched Table columns.
    """

    def __init__(self, type_: Any, doc: str = "", *, index: bool = False, default: Any = None,
                 mutable: bool = False, unique: bool = False, unit: str | None = None) -> None:
        self.type = type_
        self.doc = doc
        self.unit = unit
        self.index = index
        self.default = default
        self.mutable = mutable
        self.unique = unique
        self.name = ""
        self.column = ""
        self.owner: type | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.column = self.column or name
        self.owner = owner

    def sql_columns(self) -> list[sa.Column]:
        return [sa.Column(self.column, self.type, nullable=True, index=self.index, unique=self.unique or None,
                          comment=self.doc or None)]

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            from awe.db.query import Attr
            return Attr(cls, (), self)
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        if obj.__dict__.get("object_id") is not None and self.name != "object_id":
            if not self.mutable:
                raise ReadOnlyAttributeError(
                    f"{type(obj).__name__}.{self.name} of committed object {obj.object_id} cannot change; "
                    "make a new product instead"
                )
            raise ReadOnlyAttributeError(
                f"{type(obj).__name__}.{self.name} of committed object {obj.object_id} is changed in the database "
                f"with obj.update({self.name}={value!r}), which checks your rights; plain assignment does not "
                "write it"
            )
        obj.__dict__[self.name] = value

    def to_db(self, value: Any) -> Any:
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.owner.__name__ if self.owner else '?'}.{self.name}>"


class Ref(Field):
    """A reference to an entity (Instrument, Chip, Filter): a foreign-key column ``<name>_id``.

    On the class, ``Cls.chip.name`` is a query path through the reference; on an
    instance ``obj.chip`` is the referenced object.
    """

    def __init__(self, target: str, doc: str = "", *, index: bool = True) -> None:
        super().__init__(Integer, doc, index=index)
        self.target_name = target

    def __set_name__(self, owner: type, name: str) -> None:
        self.column = f"{name}_id"
        super().__set_name__(owner, name)

    @property
    def target(self) -> type["Persistent"]:
        return registry[self.target_name]

    def sql_columns(self) -> list[sa.Column]:
        return [sa.Column(self.column, Integer, index=self.index, nullable=True, comment=self.doc or None)]

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            from awe.db.query import RefPath
            return RefPath(cls, (self,))
        value = obj.__dict__.get(self.name)
        if value is None and obj.__dict__.get(self.column) is not None:
            value = self.target.get_cached(obj.__dict__[self.column], obj.__dict__.get("_session"))
            obj.__dict__[self.name] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        if obj.__dict__.get("object_id") is not None:
            raise ReadOnlyAttributeError(f"{type(obj).__name__}.{self.name} of a committed object cannot change")
        if value is not None and not isinstance(value, self.target):
            raise TypeError(f"{type(obj).__name__}.{self.name} takes a {self.target_name}, not {value!r}")
        obj.__dict__[self.name] = value
        obj.__dict__[self.column] = value.object_id if value is not None else None

    def to_db(self, value: Any) -> Any:
        return value.object_id if value is not None else None


class Embedded:
    """A group of sub-attributes stored as prefixed columns (``imstat.median`` -> ``imstat_median``).

    Parameters
    ----------
    parts : dict
        Sub-attribute name -> (sqlalchemy type, doc).
    factory : callable
        Builds the instance value from the sub-attribute values (e.g. a dataclass).
    """

    def __init__(self, parts: dict[str, tuple[Any, str]], factory: Any, doc: str = "") -> None:
        self.parts = parts
        self.factory = factory
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def column(self, part: str) -> str:
        return f"{self.name}_{part}"

    def sql_columns(self) -> list[sa.Column]:
        return [sa.Column(self.column(p), t, nullable=True, comment=d or None) for p, (t, d) in self.parts.items()]

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            from awe.db.query import EmbeddedPath
            return EmbeddedPath(cls, (), self)
        values = {p: obj.__dict__.get(self.column(p)) for p in self.parts}
        if all(v is None for v in values.values()):
            return None
        return self.factory(**values)

    def __set__(self, obj: Any, value: Any) -> None:
        if obj.__dict__.get("object_id") is not None:
            raise ReadOnlyAttributeError(f"{type(obj).__name__}.{self.name} of a committed object cannot change")
        for part in self.parts:
            obj.__dict__[self.column(part)] = None if value is None else _plain(getattr(value, part))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars for the database."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


class Input:
    """A lineage role: the product was made from this (these) input object(s).

    Stored as rows of the ``links`` table (child, parent, role, position), so
    every product's dependencies can be walked in SQL. On the class,
    ``ReducedScienceFrame.raw.filename == 'WFI...'`` queries through the link.
    """

    many = False

    def __init__(self, target: str, doc: str = "", *, optional: bool = False) -> None:
        self.target_name = target
        self.doc = doc
        self.optional = optional
        self.name = ""
        self.owner: type | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.owner = owner

    @property
    def target(self) -> type["Persistent"]:
        return registry[self.target_name]

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            from awe.db.query import InputPath
            return InputPath(cls, self)
        key = f"_input_{self.name}"
        if key not in obj.__dict__:
            from awe.db.lineage import load_inputs
            loaded = load_inputs(obj, self.name) if obj.object_id is not None else []
            obj.__dict__[key] = loaded if self.many else (loaded[0] if loaded else None)
        return obj.__dict__[key]

    def __set__(self, obj: Any, value: Any) -> None:
        if obj.__dict__.get("object_id") is not None:
            raise ReadOnlyAttributeError(f"the inputs of committed object {obj.object_id} cannot change")
        values = list(value) if self.many else ([value] if value is not None else [])
        for v in values:
            if not isinstance(v, Persistent):
                raise TypeError(f"{type(obj).__name__}.{self.name} takes persistent objects, not {v!r}")
        obj.__dict__[f"_input_{self.name}"] = values if self.many else value

    def values(self, obj: Any) -> list["Persistent"]:
        value = self.__get__(obj, type(obj))
        if value is None:
            return []
        return list(value) if self.many else [value]


class Inputs(Input):
    """A lineage role with any number of inputs (e.g. the raw biases of a master bias)."""

    many = True


class PersistentMeta(type):
    """Makes ``Cls.unknown`` an error that lists the valid attributes."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from awe.db.query import QueryError
        valid = sorted(set(cls.__dict__.get("_fields", {})) | set(getattr(cls, "_inputs", {})))
        raise QueryError(f"{cls.__name__} has no attribute {name!r}; valid attributes are {valid}")


class Persistent(metaclass=PersistentMeta):
    """Base of every stored class.

    Subclasses that define ``__tablename__`` have a table of their own (a root,
    or a family table joined by ``object_id``); the others add their columns to
    the table of their nearest ancestor that has one.
    """

    __tablename__: ClassVar[str | None] = None
    __table__: ClassVar[sa.Table]
    #: the tables of this class's chain, root first (every object has one row in each)
    _tables: ClassVar[tuple[sa.Table, ...]] = ()
    _fields: ClassVar[dict[str, Any]] = {}
    _inputs: ClassVar[dict[str, Input]] = {}
    _abstract: ClassVar[bool] = True

    object_id = Field(Integer, "unique object id")

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._abstract = abstract
        if cls.__name__ in registry and registry[cls.__name__] is not cls:
            raise PersistentError(f"two persistent classes named {cls.__name__}")
        registry[cls.__name__] = cls
        fields: dict[str, Any] = {}
        inputs: dict[str, Input] = {}
        for base in reversed(cls.__mro__):
            for key, value in vars(base).items():
                if isinstance(value, (Field, Embedded)):
                    fields[key] = value
                elif isinstance(value, Input):
                    inputs[key] = value
        cls._fields = fields
        cls._inputs = inputs
        tablename = vars(cls).get("__tablename__")
        if tablename is not None:
            chain = cls._tables
            if chain:  # a family table below the root, joined by object_id
                table = sa.Table(tablename, metadata,
                                 sa.Column("object_id", Integer, sa.ForeignKey(f"{chain[0].name}.object_id"),
                                           primary_key=True, autoincrement=False))
            else:
                # sqlite_autoincrement: ids are never reused after a delete (provenance names raw inputs by id)
                table = sa.Table(tablename, metadata,
                                 sa.Column("object_id", Integer, primary_key=True, autoincrement=True),
                                 sa.Column("class_name", String(64), nullable=False, index=True),
                                 sqlite_autoincrement=True)
                cls.__table__ = table
            cls._tables = chain + (table,)
        own: sa.Table | None = cls._tables[-1] if cls._tables else None
        for key, value in vars(cls).items():
            if own is None:
                if isinstance(value, (Field, Embedded)) and key != "object_id":
                    raise PersistentError(f"{cls.__name__}.{key}: declare attributes below a class with a table")
                continue
            if isinstance(value, (Field, Embedded)) and key != "object_id":
                for column in value.sql_columns():
                    for other in cls._tables[:-1]:
                        if column.name in other.c:
                            raise PersistentError(
                                f"{cls.__name__}.{key}: column {column.name} is already in table {other.name} of "
                                f"its ancestors; give the quantity its own name")
                    _add_column(own, column, cls)

    # ------------------------------------------------------------------ building
    def __init__(self, **attributes: Any) -> None:
        if self._abstract:
            raise PersistentError(f"{type(self).__name__} is abstract; make one of its subclasses")
        for key, value in attributes.items():
            if key not in self._fields and key not in self._inputs:
                raise AttributeError(
                    f"{type(self).__name__} has no attribute {key!r}; valid attributes are "
                    f"{sorted(set(self._fields) | set(self._inputs))}"
                )
            setattr(self, key, value)

    @classmethod
    def subclass_names(cls) -> list[str]:
        """Names of this class and every registered subclass (for ``class_name IN (...)``)."""
        return [name for name, klass in registry.items() if issubclass(klass, cls)]

    @classmethod
    def _from_row(cls, row: Any, session: Any = None) -> Self:
        """The object of a database row, remembering the session it was loaded through."""
        klass = registry[row["class_name"]]
        if not issubclass(klass, cls):
            raise PersistentError(f"object {row.get('object_id')} is a {klass.__name__}, not a {cls.__name__}")
        obj = klass.__new__(klass)
        obj.__dict__.update(klass._row_values(row))
        if session is not None:
            obj.__dict__["_session"] = session
        return obj

    @classmethod
    def _row_values(cls, row: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, fld in cls._fields.items():
            if isinstance(fld, Embedded):
                for part in fld.parts:
                    values[fld.column(part)] = row.get(fld.column(part))
            elif isinstance(fld, Ref):
                values[fld.column] = row.get(fld.column)
            else:
                values[key] = row.get(fld.column)
        return values

    def _table_values(self) -> list[tuple[sa.Table, dict[str, Any]]]:
        """The row to insert into each table of the chain (root first; the others without object_id)."""
        values = self._column_values()
        return [(table, {c.name: values[c.name] for c in table.c if c.name in values}) for table in self._tables]

    def _column_values(self) -> dict[str, Any]:
        """The values to insert, by column name."""
        values: dict[str, Any] = {"class_name": type(self).__name__}
        for key, fld in self._fields.items():
            if key == "object_id":
                continue
            if isinstance(fld, Embedded):
                for part in fld.parts:
                    values[fld.column(part)] = self.__dict__.get(fld.column(part))
            elif isinstance(fld, Ref):
                values[fld.column] = self.__dict__.get(fld.column)
            else:
                values[fld.column] = _plain(self.__dict__.get(key, fld.default))
        return values

    # ------------------------------------------------------------------ queries
    @classmethod
    def all(cls):
        """A query for every visible object of this class."""
        from awe.db.query import Query
        return Query(cls)

    @classmethod
    def get(cls, object_id: int) -> "Persistent":
        """The object with this id, if the current context may see it."""
        result = list(cls.object_id == int(object_id))
        if not result:
            raise LookupError(f"no {cls.__name__} with object_id {object_id} is visible in the current context")
        return result[0]

    @classmethod
    def get_cached(cls, object_id: int, session: Any = None) -> "Persistent":
        """Reference data (an entity) by id, from the database's cache."""
        from awe.db.session import current_session
        return (session or current_session()).database.cached_entity(cls, object_id)

    def __getstate__(self) -> dict[str, Any]:
        """The object's values without its session: an object sent to another process (a DPU worker)
        acts for the session that process makes current."""
        return {k: v for k, v in self.__dict__.items() if k != "_session"}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Persistent):
            return NotImplemented
        if self.object_id is None or other.object_id is None:
            return self is other
        return type(self).__table__ is type(other).__table__ and self.object_id == other.object_id

    def __hash__(self) -> int:
        return hash((type(self).__table__.name, self.object_id)) if self.object_id is not None else id(self)

    def __repr__(self) -> str:
        label = getattr(self, "filename", None) or getattr(self, "name", None) or ""
        return f"<{type(self).__name__} {self.object_id} {label}>".replace(" >", ">")


def _add_column(table: sa.Table, column: sa.Column, cls: type) -> None:
    existing = table.c.get(column.name)
    if existing is not None:
        if type(existing.type) is not type(column.type):
            raise PersistentError(
                f"{cls.__name__}.{column.name}: column {column.name} of table {table.name} already has type "
                f"{existing.type}, not {column.type}"
            )
        return
    table.append_column(column)


def utcnow() -> _dt.datetime:
    """Naive UTC now (all database times are UTC)."""
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


def iter_fields(cls: type[Persistent]) -> Iterable[tuple[str, Any]]:
    return cls._fields.items()
