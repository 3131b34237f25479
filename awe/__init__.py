"""awe: an open, modern Python re-implementation of the Astro-WISE information system.

``from awe import *`` gives a script or notebook the namespace of the ``awe``
prompt: every persistent class, every task, ``Pars``, ``context``, ``dpu``, ``make`` (and
``pylab``, ``os``, ``np``). Names are imported on first use, so ``import
awe.image`` stays light.

Names of the course (``astro-wise-course-2008``) that awe does not implement
yet are in the namespace too (none at present: every name of the course is implemented), as
:class:`Planned` placeholders: calling or using one raises
:class:`NotImplementedYetError` saying which spec section it belongs to,
instead of a bare ``NameError``.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import types
from typing import Any

__version__ = "0.1.0"

_EXTRA = {"Pars": ("awe.pars", "Pars"), "context": ("awe._context", "context"),
          "os": ("os", None), "np": ("numpy", None), "pylab": ("matplotlib.pylab", None),
          "dpu": ("awe.dpu", None), "make": ("awe.dpu.make", "make")}

#: Names of the course that awe does not implement yet: name -> (sections of the spec, what it is).
PLANNED: dict[str, tuple[str, str]] = {}


class NotImplementedYetError(NotImplementedError):
    """A name of the course that awe does not implement yet was called or used."""


class _PlannedMeta(type):
    """Metaclass of the placeholders: every public use raises :class:`NotImplementedYetError`."""

    _awe_message: str

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedYetError(cls._awe_message)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):  # introspection (help, IPython, pickle) looks these up
            raise AttributeError(name)
        raise NotImplementedYetError(cls._awe_message)

    def __repr__(cls) -> str:
        return f"<{cls.__name__}: not implemented yet in awe {__version__}>"


class Planned(metaclass=_PlannedMeta):
    """Base of the placeholders for names of the course not implemented yet."""

    _awe_message = "this name is part of the course but not implemented yet in awe"


@functools.lru_cache(maxsize=None)
def planned(name: str) -> type:
    """The placeholder for ``name`` (one of :data:`PLANNED`); ``help()`` on it says what it will be."""
    section, what = PLANNED[name]
    message = (f"{name} is part of the spec ({section}: {what}) but not implemented yet in awe "
               f"{__version__}; see README 'Course coverage'")
    return _PlannedMeta(name, (Planned,), {"__doc__": message, "_awe_message": message, "__module__": "awe"})


class _LazyModule(types.ModuleType):
    """A module imported on its first attribute (``pylab``: matplotlib's second of start-up only when it plots)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))


@functools.lru_cache(maxsize=None)
def _lazy(module_name: str) -> types.ModuleType:
    return sys.modules.get(module_name) or _LazyModule(module_name)


def _modules() -> list[str]:
    return ["awe.model", "awe.tasks"]


def namespace() -> dict[str, Any]:
    """The prompt's namespace: persistent classes, tasks, Pars, context, pylab, os, np.

    Names of the course not implemented yet come as :func:`planned` placeholders;
    the real ones win as soon as they exist. The first call also chooses the
    matplotlib backend (see :func:`choose_backend`).
    """
    choose_backend()
    names: dict[str, Any] = {name: planned(name) for name in PLANNED}
    for module_name in _modules():
        module = importlib.import_module(module_name)
        names.update({n: getattr(module, n) for n in module.__all__})
    for name in _EXTRA:
        names[name] = __getattr__(name)
    return names


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted(namespace())
    if name in _EXTRA:
        module_name, attr = _EXTRA[name]
        if name == "pylab":
            return _lazy(module_name)
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    for module_name in _modules():
        module = importlib.import_module(module_name)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    if name in PLANNED:
        return planned(name)
    raise AttributeError(f"module 'awe' has no attribute {name!r}")


def has_display() -> bool:
    """Whether figures can be shown on a screen (a desktop session, or not a X11/Wayland platform)."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return True  # macOS and Windows always have their native backends
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def choose_backend() -> str | None:
    """Choose matplotlib's backend once, at start-up: ``Agg`` where there is no display.

    Called when the prompt, the ``awe`` command or ``from awe import *`` start;
    library code never touches the backend. Nothing is changed when
    ``MPLBACKEND`` is set, when there is a display (matplotlib then picks an
    interactive backend), or when pyplot is already in use (the session chose).

    Returns
    -------
    str or None
        The backend set, or None when the choice was left to matplotlib or the user.
    """
    if os.environ.get("MPLBACKEND") or has_display() or "matplotlib.pyplot" in sys.modules:
        return None
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    else:  # matplotlib reads it when (if ever) it is imported: the command's verbs need not import it
        os.environ["MPLBACKEND"] = "agg"
    return "agg"
