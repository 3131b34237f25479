"""awe: an open, modern Python re-implementation of the Astro-WISE information system.

``from awe import *`` gives a script or notebook the namespace of the ``awe``
prompt: every persistent class, every task, ``Pars``, ``context`` (and
``pylab``, ``os``, ``np``). Names are imported on first use, so ``import
awe.image`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXTRA = {"Pars": ("awe.pars", "Pars"), "context": ("awe._context", "context"),
          "os": ("os", None), "np": ("numpy", None), "pylab": ("matplotlib.pylab", None)}


def _modules() -> list[str]:
    return ["awe.model", "awe.tasks"]


def namespace() -> dict[str, Any]:
    """The prompt's namespace: persistent classes, tasks, Pars, context, pylab, os, np."""
    names: dict[str, Any] = {}
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
            import matplotlib
            matplotlib.use("Agg" if not _has_display() else matplotlib.get_backend())
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    for module_name in _modules():
        module = importlib.import_module(module_name)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'awe' has no attribute {name!r}")


def _has_display() -> bool:
    import os
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
