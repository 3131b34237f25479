"""The Astro-WISE query language, compiled to SQL.

::

    q = (RawBiasFrame.instrument.name == 'WFI') & (RawBiasFrame.chip.name == 'ccd50')
    len(q); list(q); q[0]
    for b in q: print(b.filename, b.imstat.median, b.imstat.stdev)
    q.order_by('psf_radius')
    (CoaddedRegriddedFrame.OBJECT == '3C273').max('creation_date')

A comparison of a class attribute makes a :class:`Query`; ``&``, ``|`` and ``~``
combine them. Paths through references (``.chip.name``), embedded groups
(``.imstat.median``) and lineage roles (``ReducedScienceFrame.raw.filename``)
become joins or ``EXISTS`` sub-queries. Every query runs in the database and
sees only what the current context may see.

Catalogue rows (:mod:`awe.db.rows`) read the same way,
``(Source.SLID == 42) & (Source.MAG_AUTO < 22)``, with sky conditions
(``Source.cone(ra, dec, radius)``, ``Source.box(...)``); their queries
(:class:`~awe.db.rows.RowQuery`) fetch astropy Tables, and see the rows whose
parent object the context may see.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import math
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import sqlalchemy as sa

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.persistent import Embedded, Field, Input
    from awe.db.session import Session

#: The class a query path or a query is on: a :class:`~awe.db.persistent.Persistent` class, or a
#: catalogue row class (:class:`~awe.db.rows.Rows`) that declares the same class attributes
#: (``__table__``, ``_fields``, ``_tables``, ``_from_row``, ...). The two hierarchies are built by
#: different metaclasses and share no base, so this is typed by what it provides, at run time.
QueriedClass = Any

__all__ = ["Query", "Attr", "RefPath", "EmbeddedPath", "InputPath", "QueryError", "load_objects"]


class QueryError(AttributeError, TypeError):
    """A query names an attribute the class does not have, or is used wrongly."""


# --------------------------------------------------------------------- paths
class _Path:
    """Something reached from a class: a column, a reference, an embedded group."""

    def __init__(self, cls: QueriedClass, refs: tuple) -> None:
        self._cls = cls
        self._refs = refs  # tuple of Ref descriptors walked from cls

    def _owner(self) -> QueriedClass:
        return self._refs[-1].target if self._refs else self._cls

    def _label(self) -> str:
        return ".".join([self._cls.__name__] + [r.name for r in self._refs])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        owner = self._owner()
        fld = owner._fields.get(name)
        if fld is None:
            raise QueryError(
                f"{self._label()} has no attribute {name!r}; valid attributes are {sorted(owner._fields)}"
            )
        from awe.db.persistent import Embedded, Ref
        if isinstance(fld, Ref):
            return RefPath(self._cls, self._refs + (fld,))
        if isinstance(fld, Embedded):
            return EmbeddedPath(self._cls, self._refs, fld)
        return Attr(self._cls, self._refs, fld)

    def __bool__(self) -> bool:
        raise TypeError(f"{self._label()} is a query path, not a value: compare it (==, <, like) to make a query")


class RefPath(_Path):
    """``RawBiasFrame.chip``: attribute access continues into the referenced class."""

    def __eq__(self, other: Any) -> "Query":  # type: ignore[override]
        return self.object_id == (other.object_id if other is not None else None)

    def __ne__(self, other: Any) -> "Query":  # type: ignore[override]
        return self.object_id != (other.object_id if other is not None else None)

    __hash__ = None  # type: ignore[assignment]


class EmbeddedPath(_Path):
    """``RawBiasFrame.imstat``: ``.median`` etc. are columns."""

    def __init__(self, cls: QueriedClass, refs: tuple, embedded: "Embedded") -> None:
        super().__init__(cls, refs)
        self._embedded = embedded

    def __getattr__(self, name: str) -> "Attr":
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._embedded.parts:
            raise QueryError(
                f"{self._label()}.{self._embedded.name} has no attribute {name!r}; "
                f"valid attributes are {list(self._embedded.parts)}"
            )
        return Attr(self._cls, self._refs, None, column=self._embedded.column(name),
                    label=f"{self._embedded.name}.{name}", type_=self._embedded.parts[name][0])


class InputPath:
    """``ReducedScienceFrame.raw``: a condition on an input becomes ``EXISTS (...)``."""

    def __init__(self, cls: QueriedClass, role: "Input") -> None:
        self._cls = cls
        self._role = role

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        target = self._role.target
        inner = getattr(target, name)
        return _InputAttr(self._cls, self._role, inner)

    def __bool__(self) -> bool:
        raise TypeError("a query path is not a value: compare it to make a query")


class _Comparable:
    """Comparison operators that make queries."""

    def _cond(self, op: str, value: Any) -> "Query":
        raise NotImplementedError

    def __eq__(self, value: Any) -> "Query":  # type: ignore[override]
        return self._cond("==", value)

    def __ne__(self, value: Any) -> "Query":  # type: ignore[override]
        return self._cond("!=", value)

    def __lt__(self, value: Any) -> "Query":
        return self._cond("<", value)

    def __le__(self, value: Any) -> "Query":
        return self._cond("<=", value)

    def __gt__(self, value: Any) -> "Query":
        return self._cond(">", value)

    def __ge__(self, value: Any) -> "Query":
        return self._cond(">=", value)

    def like(self, pattern: str) -> "Query":
        """Wildcard match: ``*`` any characters, ``?`` one character (``.like('3C*')``)."""
        return self._cond("like", pattern)

    def between(self, low: Any, high: Any) -> "Query":
        """``low <= value < high``."""
        return self._cond(">=", low) & self._cond("<", high)

    def in_(self, values: Sequence[Any]) -> "Query":
        """Match any of the values."""
        return self._cond("in", list(values))

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError("a query path is not a value: compare it (==, <, like) to make a query")


class Attr(_Comparable):
    """A column reached from a class, e.g. ``RawBiasFrame.EXPTIME``."""

    def __init__(self, cls: QueriedClass, refs: tuple, fld: "Field | None", column: str | None = None,
                 label: str | None = None, type_: Any = None) -> None:
        self._cls = cls
        self._refs = refs
        self._field = fld
        self._column = column or fld.column  # type: ignore[union-attr]
        self._label = label or (fld.name if fld else self._column)
        self._type = type_ if type_ is not None else (fld.type if fld is not None else None)

    def _cond(self, op: str, value: Any) -> "Query":
        unit = getattr(self._field, "unit", None)
        if unit is not None:  # a Quantity compared with a column of a declared unit
            value = [_in_unit(v, unit, self) for v in value] if op == "in" else _in_unit(value, unit, self)
        if op == "in":
            value = [_checked_value(self, op, v) for v in value]
        else:
            value = _checked_value(self, op, value)
        return Query(self._cls, _Compare(self, op, value))

    def _sql(self, comp: "_Compiler") -> sa.ColumnElement:
        return comp.column(self._refs, self._column)

    def __repr__(self) -> str:
        return ".".join([self._cls.__name__] + [r.name for r in self._refs] + [self._label])


#: what a column of each SQL type is compared with: (description, accepted Python types, advice)
_KINDS: dict[type, tuple[str, tuple[type, ...], str]] = {
    sa.DateTime: ("a date and time (UTC)", (_dt.datetime, _dt.date, str),
                  "a datetime.datetime (UTC), e.g. datetime(2003, 3, 3, 18, 0), or an ISO string '2003-03-03T18:00'"),
    sa.Float: ("a number", (int, float), "a number (int or float)"),
    sa.Integer: ("an integer", (int, float), "a number"),
    sa.Boolean: ("a boolean", (bool, int), "True or False"),
    sa.String: ("a text", (str,), "a string, e.g. 'ccd50'"),
}


def _checked_value(attr: Attr, op: str, value: Any) -> Any:
    """``value`` as the attribute's column compares it, or :class:`QueryError` naming the attribute and type.

    SQLite would compare anything with anything (a date with a number is always
    true there), so the query language refuses mismatched types before the SQL.
    """
    value = _coerce(value)
    if value is None:
        return value
    if op == "like":
        if not isinstance(value, str):
            raise QueryError(f"{attr!r}.like() takes a pattern string ('WFI*'), not {value!r}")
        return value
    sql_type = attr._type if isinstance(attr._type, type) else type(attr._type)
    for base, (kind, accepted, advice) in _KINDS.items():
        if attr._type is None or not issubclass(sql_type, base):
            continue
        if base is not sa.Boolean and isinstance(value, bool):
            accepted = ()  # True is not a number, a date or a text here
        if isinstance(value, str) and base is sa.DateTime:
            try:
                return _dt.datetime.fromisoformat(value)
            except ValueError:
                pass
        elif isinstance(value, accepted) and not (isinstance(value, float) and math.isnan(value)):
            if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
                return _dt.datetime.combine(value, _dt.time())
            return value
        shown = "NaN (which compares false with everything)" if isinstance(value, float) and math.isnan(value) \
            else f"{value!r} ({type(value).__name__})"
        raise QueryError(f"{attr!r} holds {kind}; cannot compare it {op} {shown}: compare it with {advice}")
    return value


def _in_unit(value: Any, unit: str, attr: Attr) -> Any:
    if not hasattr(value, "unit") or not hasattr(value, "to_value"):
        return value
    import astropy.units as u
    try:
        return value.to_value(unit)
    except u.UnitConversionError:
        raise QueryError(f"{attr!r} is in {unit}; {value} does not convert to it") from None


class _InputAttr(_Comparable):
    def __init__(self, cls: QueriedClass, role: "Input", inner: Any) -> None:
        self._cls = cls
        self._role = role
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _InputAttr(self._cls, self._role, getattr(self._inner, name))

    def _cond(self, op: str, value: Any) -> "Query":
        inner_query = self._inner._cond(op, value)
        return Query(self._cls, _Exists(self._role, inner_query))


# --------------------------------------------------------------------- conditions
def _like_pattern(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


class _Cond:
    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        raise NotImplementedError


class _Compare(_Cond):
    def __init__(self, attr: Attr, op: str, value: Any) -> None:
        self.attr, self.op, self.value = attr, op, _coerce(value)

    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        col = self.attr._sql(comp)
        op, value = self.op, self.value
        if op == "like":
            return col.like(_like_pattern(str(value)), escape="\\")
        if op == "in":
            return col.in_(value)
        if value is None:
            if op == "==":
                return col.is_(None)
            if op == "!=":
                return col.is_not(None)
            raise QueryError(f"cannot compare {self.attr!r} {op} None")
        return {"==": col.__eq__, "!=": col.__ne__, "<": col.__lt__, "<=": col.__le__,
                ">": col.__gt__, ">=": col.__ge__}[op](value)


class _And(_Cond):
    def __init__(self, *parts: _Cond) -> None:
        self.parts = parts

    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        return sa.and_(*(p.sql(comp) for p in self.parts))


class _Or(_And):
    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        return sa.or_(*(p.sql(comp) for p in self.parts))


class _Not(_Cond):
    def __init__(self, part: _Cond) -> None:
        self.part = part

    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        return sa.not_(self.part.sql(comp))


class _Raw(_Cond):
    """A condition built directly from the compiler (used by ``select``)."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder

    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        return self.builder(comp)


class _Exists(_Cond):
    def __init__(self, role: "Input", inner: "Query") -> None:
        self.role, self.inner = role, inner

    def sql(self, comp: "_Compiler") -> sa.ColumnElement:
        from awe.db.schema import links
        link = links.alias()
        sub = _Compiler(self.inner.cls, comp.visible)
        cond = sa.and_(link.c.child_id == comp.base.c.object_id, link.c.role == self.role.name,
                       link.c.parent_id == sub.base.c.object_id, sub.where(self.inner._cond))
        return sa.exists(sa.select(sa.literal(1)).select_from(sub.from_clause().join(link, sa.true())).where(cond))


def _coerce(value: Any) -> Any:
    from awe.db.persistent import Persistent
    if isinstance(value, Persistent):
        return value.object_id
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        return value.item()
    return value


# --------------------------------------------------------------------- compiler
class _Compiler:
    """Turns paths into columns of the root table's alias plus the joins they need.

    A family table of the queried class (``frames``, ``bias_frames``) is joined
    (inner, on ``object_id``) only when one of its columns is used; a reference
    (``.chip.name``) is an outer join to the entity's table.
    """

    #: the base table's key column: the tie-breaker of every order
    key = "object_id"

    def __init__(self, cls: QueriedClass, visible: Sequence[int] | None) -> None:
        self.cls = cls
        self.visible = visible
        self.base = cls.__table__.alias()
        self.joins: dict[tuple, sa.FromClause] = {}
        #: (alias, ON clause, inner join?) in the order they were made
        self.join_list: list[tuple[sa.FromClause, sa.ColumnElement, bool]] = []

    def _alias(self, key: tuple, table: sa.Table, on: Any, inner: bool) -> sa.FromClause:
        if key not in self.joins:
            alias = table.alias()
            self.joins[key] = alias
            self.join_list.append((alias, on(alias), inner))
        return self.joins[key]

    def _locate(self, key: tuple, owner: QueriedClass, column: str) -> sa.FromClause:
        """The alias of the table of ``owner``'s chain that holds ``column`` (joining it if needed)."""
        root = self.base if not key else self.joins[key]
        if column in root.c:
            return root
        for table in getattr(owner, "_tables", ())[1:]:
            if column in table.c:
                return self._alias(key + (table.name,), table, lambda a: a.c.object_id == root.c.object_id,
                                   inner=not key)
        raise QueryError(f"column {column} is not in the tables of {owner.__name__}")

    def family(self, table: sa.Table) -> sa.FromClause:
        """The (joined) alias of one of the queried class's family tables."""
        return self._alias((table.name,), table, lambda a: a.c.object_id == self.base.c.object_id, inner=True)

    def column(self, refs: tuple, column: str) -> sa.ColumnElement:
        owner: QueriedClass = self.cls
        key: tuple = ()
        for ref in refs:
            holder = self._locate(key, owner, ref.column)
            key = key + (ref,)
            self._alias(key, ref.target.__table__, lambda a, h=holder, r=ref: a.c.object_id == h.c[r.column],
                        inner=False)
            owner = ref.target
        return self._locate(key, owner, column).c[column]

    def order_term(self, column: sa.ColumnElement, descending: bool) -> sa.ColumnElement:
        """``column`` ascending or descending in an ORDER BY."""
        return column.desc() if descending else column.asc()

    def from_clause(self) -> sa.FromClause:
        clause: sa.FromClause = self.base
        for alias, on, inner in self.join_list:
            clause = clause.join(alias, on) if inner else clause.outerjoin(alias, on)
        return clause

    def where(self, cond: _Cond | None) -> sa.ColumnElement:
        parts = []
        if self.visible is not None:
            parts.append(self.base.c.project_id.in_(list(self.visible)))
        parts.append(self.base.c.class_name.in_(self.cls.subclass_names()))
        if cond is not None:
            parts.append(cond.sql(self))
        return sa.and_(*parts)


def _object_columns(comp: _Compiler) -> list[Any]:
    """What loading objects of the queried class selects: its root and family tables' columns."""
    columns: list[Any] = [comp.base]
    for table in getattr(comp.cls, "_tables", ())[1:]:
        alias = comp.family(table)
        columns += [c for c in alias.c if c.name != "object_id"]
    return columns


_IN_CHUNK = 500


def _complete_rows(conn: sa.Connection, rows: list[dict[str, Any]], known: int) -> None:
    """Add to each row the columns of the family tables of its class below the first ``known`` ones.

    A query on ``BaseFrame`` selects ``objects`` and ``frames``; the rows of
    BiasFrames then get ``calibration_frames`` and ``bias_frames`` here, one
    query per table and chunk of ids (not one per object).
    """
    from awe.db.persistent import registry
    extra: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if len(registry[row["class_name"]]._tables) > known:
            for table in registry[row["class_name"]]._tables[known:]:
                extra.setdefault(table.name, []).append(row)
    for name, wanting in extra.items():
        table = next(t for t in registry[wanting[0]["class_name"]]._tables if t.name == name)
        by_id = {row["object_id"]: row for row in wanting}
        ids = list(by_id)
        for start in range(0, len(ids), _IN_CHUNK):
            stmt = sa.select(table).where(table.c.object_id.in_(ids[start:start + _IN_CHUNK]))
            for found in conn.execute(stmt).mappings():
                by_id[found["object_id"]].update({k: v for k, v in found.items() if k != "object_id"})


def fetch_rows(conn: sa.Connection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Complete rows of products by id, whoever owns them (for callers that checked the rights)."""
    from awe.db.schema import DBObject
    table = DBObject.__table__
    rows: list[dict[str, Any]] = []
    ids = list(ids)
    for start in range(0, len(ids), _IN_CHUNK):
        stmt = sa.select(table).where(table.c.object_id.in_(ids[start:start + _IN_CHUNK]))
        rows += [dict(r) for r in conn.execute(stmt).mappings()]
    _complete_rows(conn, rows, 1)
    return rows


def load_objects(session: "Session", cls: QueriedClass, ids: Sequence[int]) -> dict[int, Any]:
    """The objects of ``cls`` with these ids that ``session`` may see, by id (complete, in few queries)."""
    result: dict[int, Any] = {}
    ids = list(set(ids))
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        for obj in Query(cls, session=session).filter(cls.object_id.in_(chunk)).list():
            result[obj.object_id] = obj
    return result


# --------------------------------------------------------------------- query
class Query:
    """A selection of objects of one class; runs in the database when used.

    ``len(q)`` counts, iterating yields the objects, ``q[i]`` / ``q[a:b]`` index
    in the current order, ``q.order_by('psf_radius')`` sorts (in place, and
    returns the query), ``q.max('creation_date')`` returns the object with the
    largest value.
    """

    def __new__(cls, klass: type, cond: _Cond | None = None, session: "Session | None" = None) -> "Query":
        # a class may name its own kind of query (catalogue rows: awe.db.rows.RowQuery)
        wanted = getattr(klass, "_query_class", None)
        if wanted is not None and not issubclass(cls, wanted):
            return super().__new__(wanted)
        return super().__new__(cls)

    def __init__(self, cls: QueriedClass, cond: _Cond | None = None, session: "Session | None" = None) -> None:
        self.cls = cls
        self._cond = cond
        self._order: list[tuple[Any, bool]] = []
        self._bound = session

    def using(self, session: "Session") -> "Query":
        """This query run for ``session`` (a web request's, a job's) instead of the current one."""
        result = Query(self.cls, self._cond, session)
        result._order = list(self._order)
        return result

    @property
    def session(self) -> "Session":
        """The session this query runs for: the bound one, else the current one."""
        from awe.db.session import current_session
        return self._bound if self._bound is not None else current_session()

    # combination ------------------------------------------------------
    def _merge_class(self, other: "Query") -> QueriedClass:
        if issubclass(self.cls, other.cls):
            return self.cls
        if issubclass(other.cls, self.cls):
            return other.cls
        raise QueryError(f"cannot combine a query on {self.cls.__name__} with one on {other.cls.__name__}")

    def _combine(self, other: Any, kind: type[_And]) -> "Query":
        if not isinstance(other, Query):
            return NotImplemented
        parts = [c for c in (self._cond, other._cond) if c is not None]
        result = Query(self._merge_class(other), kind(*parts) if parts else None, self._bound or other._bound)
        result._order = list(self._order or other._order)
        return result

    def __and__(self, other: Any) -> "Query":
        return self._combine(other, _And)

    def __or__(self, other: Any) -> "Query":
        return self._combine(other, _Or)

    def __invert__(self) -> "Query":
        return Query(self.cls, _Not(self._cond) if self._cond is not None else _Raw(lambda c: sa.false()),
                     self._bound)

    def __bool__(self) -> bool:
        raise TypeError(
            "a query has no truth value: combine queries with & (and), | (or), ~ (not) - "
            "'q1 and q2' silently drops q1. Use len(q) to count."
        )

    def filter(self, cond: "Query") -> "Query":
        """The same as ``self & cond``."""
        return self & cond

    # ordering ---------------------------------------------------------
    def order_by(self, *names: str, descending: bool = False) -> "Query":
        """Sort by attributes (``'psf_radius'``, ``'-creation_date'``, ``'chip.name'``); in place."""
        self._order = []
        for name in names:
            desc = descending
            if name.startswith("-"):
                name, desc = name[1:], True
            self._order.append((self._path(name), desc))
        return self

    def _path(self, name: str) -> Attr:
        target: Any = self.cls
        for part in name.split("."):
            target = getattr(target, part)
        if not isinstance(target, Attr):
            raise QueryError(f"{self.cls.__name__}.{name} is not a sortable attribute")
        return target

    # execution --------------------------------------------------------
    def _compiler(self) -> _Compiler:
        owned = "project_id" in self.cls.__table__.c  # products belong to projects; reference data is shared
        return _Compiler(self.cls, self.session.visible_project_ids() if owned else None)

    def _select(self, columns: Any = None, ordered: bool = True) -> tuple[sa.Select, _Compiler]:
        comp = self._compiler()
        where = comp.where(self._cond)
        order = [comp.order_term(a._sql(comp), d) for a, d in self._order]
        selected = columns(comp) if columns else _object_columns(comp)
        stmt = sa.select(*selected).select_from(comp.from_clause()).where(where)
        if ordered:
            stmt = stmt.order_by(*order, comp.base.c[comp.key])
        return stmt, comp

    def sql(self) -> str:
        """The SQL this query runs (for the curious)."""
        return str(self._select()[0])

    def _execute(self, stmt: sa.Select) -> list[Any]:
        with self.session.engine.connect() as conn:
            return list(conn.execute(stmt).mappings())

    def __len__(self) -> int:
        return self.count()

    def count(self) -> int:
        stmt, _ = self._select(lambda comp: [sa.func.count()], ordered=False)
        return int(self._scalar(stmt))

    def _scalar(self, stmt: sa.Select) -> Any:
        with self.session.engine.connect() as conn:
            return conn.execute(stmt).scalar()

    def _objects(self, stmt: sa.Select) -> list[Any]:
        session = self.session
        with session.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(stmt).mappings()]
            _complete_rows(conn, rows, len(self.cls._tables))
        return [self.cls._from_row(row, session) for row in rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._objects(self._select()[0]))

    def list(self) -> list[Any]:
        return self._objects(self._select()[0])

    def _window(self, offset: int, limit: int | None) -> builtins.list[Any]:
        """Objects ``offset`` .. ``offset + limit`` in the current order: the ids first (a sort of narrow
        rows), then the objects."""
        stmt = self._select(lambda comp: [comp.base.c.object_id])[0].offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.session.engine.connect() as conn:
            ids = list(conn.execute(stmt).scalars())
        objects = load_objects(self.session, self.cls, ids)
        return [objects[i] for i in ids if i in objects]

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            if (index.start or 0) < 0 or (index.stop or 0) < 0 or index.step not in (None, 1):
                return self.list()[index]
            start = index.start or 0
            return self._window(start, None if index.stop is None else max(index.stop - start, 0))
        if index < 0:
            index += self.count()
        result = self._window(index, 1) if index >= 0 else []
        if not result:
            raise IndexError(f"query on {self.cls.__name__} has no object number {index}")
        return result[0]

    def first(self) -> Any | None:
        """The first object in the current order, or None."""
        result = self._window(0, 1)
        return result[0] if result else None

    def _extreme(self, name: str, desc: bool) -> Any | None:
        attr = self._path(name)
        comp = self._compiler()
        where = comp.where(self._cond)
        column = attr._sql(comp)
        # the id first (a sort of narrow rows), then the whole object
        stmt = (sa.select(comp.base.c.object_id).select_from(comp.from_clause()).where(where, column.is_not(None))
                .order_by(column.desc() if desc else column.asc(), comp.base.c[comp.key].desc()).limit(1))
        found = self._scalar(stmt)
        return None if found is None else load_objects(self.session, self.cls, [found]).get(found)

    def max(self, name: str) -> Any | None:
        """The object with the largest ``name`` (e.g. the newest by ``'creation_date'``), or None."""
        return self._extreme(name, True)

    def min(self, name: str) -> Any | None:
        """The object with the smallest ``name``, or None."""
        return self._extreme(name, False)

    def values(self, name: str) -> builtins.list[Any]:
        """One attribute of every object, in the current order (fetched in one query)."""
        attr = self._path(name)
        stmt, _ = self._select(lambda comp: [attr._sql(comp)])
        with self.session.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def __repr__(self) -> str:
        return f"<Query on {self.cls.__name__}>"


def observing_night(date: str | _dt.date, longitude_deg: float) -> tuple[_dt.datetime, _dt.datetime]:
    """UTC start and end of the observing night ``date`` (local noon to local noon).

    Parameters
    ----------
    date : str or date
        ``'2003-03-03'``: the night starting on the evening of that date.
    longitude_deg : float
        East longitude of the observatory (La Silla: -70.73).
    """
    if isinstance(date, str):
        try:
            date = _dt.date.fromisoformat(date)
        except ValueError:
            raise ValueError(f"date {date!r} is not an ISO date like '2003-03-03'") from None
    if isinstance(date, _dt.datetime):
        date = date.date()
    noon_utc = _dt.datetime.combine(date, _dt.time(12)) - _dt.timedelta(hours=longitude_deg / 15.0)
    return noon_utc, noon_utc + _dt.timedelta(days=1)


def night_of(when: _dt.datetime, longitude_deg: float) -> _dt.date:
    """The observing night (its evening date) an observation at UTC ``when`` belongs to."""
    local = when + _dt.timedelta(hours=longitude_deg / 15.0)
    return (local - _dt.timedelta(hours=12)).date()
