"""Pars: typed, hierarchical, validated parameter trees (spec section 8).

Each parameter is declared once, as a :class:`Param` in a :class:`ParamGroup`
(its type, default, unit, doc and whether it changes the output). Product
classes list their groups in ``parameter_groups`` (``{'process_params':
BiasParams}``) and tasks list the products they make in ``products``. That one
declaration drives validation, :meth:`Pars.show`, the task's ``help()``, the
``pars=`` dictionaries of tasks and ``dpu.run`` and the provenance hash::

    pars = Pars(BiasTask)
    pars.BiasFrame.process_params.SIGMA_CLIP = 2.5
    BiasTask(instrument='WFI', chip='ccd50', pars=pars.get()).execute()
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Iterator

__all__ = ["Param", "ParamGroup", "Pars", "ParameterError"]


class ParameterError(ValueError):
    """An unknown parameter name or a value of the wrong type."""


class ParameterNameError(ParameterError, AttributeError, KeyError):
    """An unknown parameter (or group, or product) name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Param:
    """Declaration of one parameter.

    Parameters
    ----------
    default : object
        Default value; its type is the parameter's type unless ``type`` is given.
    doc : str
        One line saying what the parameter does.
    unit : str, optional
        Physical unit, shown in help.
    type : type, optional
        ``float``, ``int``, ``bool``, ``str``, ``list`` or ``tuple``.
    affects_output : bool
        Whether a change alters the product (enters the provenance hash).
    choices : sequence, optional
        The only values allowed.
    """

    def __init__(self, default: Any, doc: str = "", unit: str | None = None, type: type | None = None,
                 affects_output: bool = True, choices: tuple | None = None) -> None:
        self.type = type or builtins_type(default)
        self.doc = doc
        self.unit = unit
        self.affects_output = affects_output
        self.choices = tuple(choices) if choices is not None else None
        self.name = ""
        self.default = self.validate(default)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to the declared type, or raise ParameterError."""
        kind = self.type
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif kind in (list, tuple) and isinstance(value, (list, tuple)):
            value = kind(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ParameterError(
                f"parameter {self.name} takes a {kind.__name__}, not {value!r} ({type(value).__name__})"
            )
        items = value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(v, float) and math.isnan(v) for v in items):
            raise ParameterError(
                f"parameter {self.name} is NaN, which would switch its check off silently: give a number "
                "(inf means no limit)"
            )
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {self.name} must be one of {list(self.choices)}, not {value!r}")
        return value

    def describe(self) -> str:
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.name} = {self.default!r}{unit}: {self.doc}"


def builtins_type(value: Any) -> type:
    return type(value)


class ParamGroup:
    """A named set of parameters; subclass it and declare :class:`Param` attributes.

    Instances hold values and validate every assignment.
    """

    _params: ClassVar[dict[str, Param]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params: dict[str, Param] = {}
        for base in reversed(cls.__mro__[1:]):
            params.update(getattr(base, "_params", {}))
        params.update({k: v for k, v in vars(cls).items() if isinstance(v, Param)})
        cls._params = dict(sorted(params.items()))

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_values", {k: p.default for k, p in self._params.items()})
        for key, value in values.items():
            setattr(self, key, value)

    @classmethod
    def declarations(cls) -> dict[str, Param]:
        return dict(cls._params)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name in type(self)._params:
            return object.__getattribute__(self, "_values")[name]
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        raise ParameterNameError(
            f"{type(self).__name__} has no parameter {name!r}; valid parameters are {list(self._params)}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._params:
            raise ParameterNameError(
                f"{type(self).__name__} has no parameter {name!r}; valid parameters are {list(self._params)}"
            )
        self._values[name] = self._params[name].validate(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values

    def update(self, values: dict[str, Any]) -> None:
        """Set several parameters from a dict, validating each."""
        if not isinstance(values, dict):
            raise ParameterError(f"{type(self).__name__} takes a dict of parameters, not {values!r}")
        for key, value in values.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._values)

    def output_affecting(self) -> dict[str, Any]:
        """The values that enter the provenance hash."""
        return {k: v for k, v in self._values.items() if self._params[k].affects_output}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"{type(self).__name__}({inner})"


class _Node:
    """One level of a Pars tree (a product with its parameter groups)."""

    def __init__(self, name: str, children: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_children", children)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._children[name]
        except KeyError:
            raise ParameterNameError(
                f"{self._name} has no {name!r}; valid names are {list(self._children)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise ParameterError(f"cannot replace {self._name}.{name}; set its parameters one by one")

    def __dir__(self) -> list[str]:
        return list(self._children)


def _groups_of(product: type) -> dict[str, type[ParamGroup]]:
    return dict(getattr(product, "parameter_groups", {}) or {})


def _products_of(target: type) -> tuple[type, ...]:
    products = getattr(target, "products", None)
    if products is not None:
        return tuple(products)
    if _groups_of(target):
        return (target,)
    raise ParameterError(f"{getattr(target, '__name__', target)!r} has no parameters: "
                         "give a task (e.g. BiasTask) or a product class (e.g. SatelliteMap)")


class Pars:
    """The parameter tree of a task or a product class.

    Parameters
    ----------
    target : type
        A task (its ``products`` give the tree) or a product class.
    values : dict, optional
        Initial values, as returned by :meth:`get`.
    """

    _target: type
    _tree: dict[str, _Node]

    def __init__(self, target: type, values: dict | None = None) -> None:
        tree: dict[str, _Node] = {}
        for product in _products_of(target):
            groups = {name: group() for name, group in _groups_of(product).items()}
            if groups:
                tree[product.__name__] = _Node(product.__name__, groups)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_tree", tree)
        if values:
            self.update(values)

    def __getattr__(self, name: str) -> _Node:
        try:
            return self._tree[name]
        except KeyError:
            raise ParameterNameError(
                f"Pars({self._target.__name__}) has no {name!r}; valid names are {list(self._tree)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise ParameterError(f"cannot replace {name}; set its parameters one by one")

    def __dir__(self) -> list[str]:
        return list(self._tree)

    def group(self, product: str, group: str) -> ParamGroup:
        """The values of one parameter group, e.g. ``group('BiasFrame', 'process_params')``."""
        return getattr(getattr(self, product), group)

    def update(self, values: "dict | Pars") -> None:
        """Apply a nested dict ``{product: {group: {name: value}}}``; unknown names raise."""
        if isinstance(values, Pars):
            values = values.get()
        if not isinstance(values, dict):
            raise ParameterError(f"pars must be a dict as returned by Pars.get() or a Pars, not {values!r}")
        for product, groups in values.items():
            node = getattr(self, product)
            if not isinstance(groups, dict):
                raise ParameterError(f"pars[{product!r}] must be a dict of parameter groups, not {groups!r}")
            for group, params in groups.items():
                getattr(node, group).update(params)

    def get(self) -> dict:
        """The whole tree as a plain nested dict (accepted by ``Task(pars=...)`` and ``dpu.run``)."""
        return {p: {g: grp.as_dict() for g, grp in node._children.items()} for p, node in self._tree.items()}

    def output_affecting(self, product: str) -> dict:
        node = self._tree.get(product)
        if node is None:
            return {}
        return {g: grp.output_affecting() for g, grp in node._children.items()}

    def format(self) -> str:
        """The tree as text, in the layout of the Astro-WISE prompt."""
        lines: list[str] = []
        for product, node in self._tree.items():
            lines += [product, "|"]
            for gname, group in node._children.items():
                lines += [f"+--{gname}", "| |"]
                lines += [f"|  +--{k}: {v}" for k, v in group.as_dict().items()]
        return "\n".join(lines)

    def show(self) -> None:
        """Print the tree (spec section 8)."""
        print(self.format())

    def describe(self) -> str:
        """Every parameter with its default, unit and doc (used by ``help(Task)``)."""
        lines = []
        for product in _products_of(self._target):
            for gname, group in _groups_of(product).items():
                for param in group.declarations().values():
                    lines.append(f"    {product.__name__}.{gname}.{param.describe()}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.format()
