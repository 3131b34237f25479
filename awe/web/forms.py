"""The query form, compiled through the Python query language (never into SQL text from the user).

A form is a list of ``(attribute, operator, value)`` filters on one class (or
row class), a sort attribute and a page. :func:`compile_filters` checks every
attribute against the class's declared fields, every operator against a fixed
list, converts each value to the column's type, and builds the same query the
``awe>`` prompt would (``(RawBiasFrame.chip.name == 'ccd50') & ...``); the
Python text of that query is shown next to the results.
"""

from __future__ import annotations

import datetime as dt
import operator
from typing import Any, Callable, Mapping, Sequence

import sqlalchemy as sa

from awe.db.persistent import Embedded, Ref
from awe.db.query import Query, QueryError

__all__ = ["FormError", "OPERATORS", "queryable", "compile_filters", "python_text", "parse_filters",
           "sort_options", "row_queryable"]

#: the operators of the form and the query language's method for each
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "like": lambda attr, value: attr.like(value),
}
MAX_FILTERS = 8


class FormError(ValueError):
    """A query form that names an unknown attribute or operator, or a value of the wrong type."""


def _kind(type_: Any) -> str:
    if isinstance(type_, type):
        type_ = type_()
    if isinstance(type_, sa.DateTime):
        return "datetime"
    if isinstance(type_, sa.Boolean):
        return "bool"
    if isinstance(type_, sa.Integer):
        return "int"
    if isinstance(type_, sa.Float):
        return "float"
    if isinstance(type_, sa.String):
        return "str"
    return ""


def queryable(cls: type) -> dict[str, str]:
    """Attribute paths of ``cls`` the form offers (``'EXPTIME'``, ``'chip.name'``, ``'imstat.median'``) -> kind."""
    out: dict[str, str] = {"object_id": "int"}
    for name, fld in cls._fields.items():  # type: ignore[attr-defined]
        if isinstance(fld, Ref):
            target = fld.target
            for tname, tfld in target._fields.items():
                if tname == "name" and not isinstance(tfld, (Ref, Embedded)):
                    out[f"{name}.name"] = _kind(tfld.type)
        elif isinstance(fld, Embedded):
            for part, (type_, _doc) in fld.parts.items():
                kind = _kind(type_)
                if kind:
                    out[f"{name}.{part}"] = kind
        else:
            kind = _kind(fld.type)
            if kind:
                out[name] = kind
    return out


def row_queryable(cls: type) -> dict[str, str]:
    """Columns of a row class the form offers -> kind."""
    kinds = {"f8": "float", "f4": "float", "i8": "int", "i4": "int", "i2": "int", "bool": "bool", "text": "str"}
    return {name: kinds[col.kind] for name, col in cls._columns.items()  # type: ignore[attr-defined]
            if col.kind in kinds and name not in ("cx", "cy", "cz")}


def sort_options(fields: Mapping[str, str]) -> list[str]:
    return list(fields)


def _value(kind: str, text: str, attr: str) -> Any:
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if value != value:
                raise ValueError
            return value
        if kind == "bool":
            if text.lower() not in ("0", "1", "true", "false"):
                raise ValueError
            return text.lower() in ("1", "true")
        if kind == "datetime":
            return dt.datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=None)
    except ValueError:
        what = {"int": "an integer", "float": "a number", "bool": "true or false",
                "datetime": "a UT date and time, e.g. 2003-03-03T18:00"}[kind]
        raise FormError(f"{attr}: {text[:40]!r} is not {what}") from None
    return text


def parse_filters(params: Mapping[str, str], fields: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """The filters ``a0, o0, v0``, ``a1, o1, v1``, ... of a form (empty rows ignored), checked and typed."""
    out = []
    for i in range(MAX_FILTERS):
        attr, op, text = params.get(f"a{i}", ""), params.get(f"o{i}", "=="), params.get(f"v{i}", "")
        if not attr and not text:
            continue
        if attr not in fields:
            raise FormError(f"unknown attribute {attr[:60]!r}: choose one of the list")
        if op not in OPERATORS:
            raise FormError(f"unknown operator {op[:10]!r}: one of {', '.join(OPERATORS)}")
        if op == "like" and fields[attr] != "str":
            raise FormError(f"{attr}: 'like' compares texts only")
        out.append((attr, op, _value(fields[attr], text, attr)))
    return out


def _path(cls: type, attr: str) -> Any:
    target: Any = cls
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def compile_filters(cls: type, filters: Sequence[tuple[str, str, Any]], extra: Sequence[Query] = ()) -> Query:
    """The query of ``filters`` on ``cls`` (every object of the class when there are none)."""
    query: Query | None = None
    for attr, op, value in filters:
        try:
            part = OPERATORS[op](_path(cls, attr), value)
        except QueryError as exc:
            raise FormError(str(exc)) from None
        query = part if query is None else query & part
    for part in extra:
        query = part if query is None else query & part
    return query if query is not None else Query(cls)


def python_text(cls: type, filters: Sequence[tuple[str, str, Any]], extra: Sequence[str] = ()) -> str:
    """The query as typed at the ``awe>`` prompt."""
    name = cls.__name__
    parts = []
    for attr, op, value in filters:
        shown = repr(value) if not isinstance(value, dt.datetime) else repr(value.isoformat())
        parts.append(f"{name}.{attr}.like({shown})" if op == "like" else f"({name}.{attr} {op} {shown})")
    parts += list(extra)
    if not parts:
        return f"{name}.all()" if hasattr(cls, "_columns") else f"Query({name})"
    return " & ".join(parts)
