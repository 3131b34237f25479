"""Which task makes which class: one registry, built from each Task's declared ``products``.

::

    >>> from awe.tasks.registry import task_for
    >>> task_for(HotPixelMap).__name__
    'HotPixelsTask'

A task registers the classes it declares in ``products`` when it is defined,
unless it only makes updates of products another task makes
(``Task.registers = False``: FollowSatellitesTask's new satellite maps and
weights). Every answer to "which task makes this?" (the advice of a missing
calibration, the advice to relax a refused one, the demo's steps) comes from
here. :func:`task_class` finds a task by its name or its qualified name (a
planned :class:`~awe.tasks.base.Unit` names its task that way).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from awe.tasks.base import Task

__all__ = ["task_for", "tasks", "task_class", "register", "RegistryError"]


class RegistryError(LookupError):
    """No task (or two tasks) for a class or a name."""


_makers: dict[type, "type[Task]"] = {}
_tasks: dict[str, "type[Task]"] = {}


def register(task: "type[Task]") -> None:
    """Record ``task`` by name and, when it ``registers``, as the maker of its ``products``."""
    _tasks[f"{task.__module__}.{task.__qualname__}"] = task
    if not task.registers or task.__name__.startswith("_"):
        return
    for cls in task.products:
        other = _makers.get(cls)
        if other is not None and other is not task and other.__module__.startswith("awe."):
            if task.__module__.startswith("awe."):
                raise RegistryError(f"{cls.__name__} is declared as made by both {other.__name__} and "
                                    f"{task.__name__}; set registers = False on the task that only updates it")
            continue  # a subclass outside awe (a test's, a user's) does not take over awe's classes
        _makers[cls] = task


def _load() -> None:
    importlib.import_module("awe.tasks")


def task_for(cls: type) -> "type[Task] | None":
    """The task that makes ``cls`` (a product class, or a subclass of one), or None."""
    _load()
    for klass in getattr(cls, "__mro__", (cls,)):
        if klass in _makers:
            return _makers[klass]
    return None


def tasks() -> "list[type[Task]]":
    """Every registered making task of awe, in the order they were defined (calibrations before reduction)."""
    _load()
    return list(dict.fromkeys(t for t in _makers.values()))


def task_class(name: str) -> "type[Task]":
    """The task class of ``name``: ``'BiasTask'`` or a qualified ``'awe.tasks.calibration.BiasTask'``."""
    _load()
    if name in _tasks:
        return _tasks[name]
    if "." in name:
        module, _, attr = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            found = None
        if isinstance(found, type):
            return found
    matches = [t for key, t in _tasks.items() if key.rpartition(".")[2] == name]
    if len(matches) == 1:
        return matches[0]
    raise RegistryError(f"no task named {name!r}; the tasks are {sorted(t.__name__ for t in _tasks.values())}")
