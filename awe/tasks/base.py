"""The Task base: select inputs, run the pure step, build products, check them, commit.

::

    task = BiasTask(instrument='WFI', chip='ccd50', overscan=6, commit=1)
    task.execute()

``commit=0`` writes the products to the working folder only; ``commit=1``
stores them (file into the data storage, then the database rows, atomically).
``inspect=1`` saves each step's QA figure as PNG in the working folder.
``logfile=1`` (or a file name) also writes the log there. ``help(SomeTask)``
lists the selection keywords and the parameters.

The contract a subclass declares (class attributes), so that an executor can
plan it without running it:

- ``products``: the classes it makes (their parameter groups form
  ``Pars(SomeTask)``; the registry :mod:`awe.tasks.registry` says which task
  makes which class from them);
- ``inputs``: what it reads, as :class:`Input` declarations (class, lineage
  role, raw frames or a calibration look-up, filter-matched or not, optional);
  the shell's :meth:`Task.calibration` looks calibrations up by these;
- ``unit``: its unit of work, one of :data:`UNITS` (``per_chip``: one chip
  of one night; ``per_frame``: one raw chip frame; ``per_exposure``: the chips
  of one exposure);
- ``selection`` (keyword -> doc);
- ``version`` and ``algorithm_modules``: the algorithm's version (in every
  product's provenance) and the modules it lives in (their hashes are recorded
  beside the version in ``algorithm_versions.toml``, see :mod:`awe.tasks.versions`).

:meth:`Task.plan` returns the independent :class:`Unit` s of work (plain,
picklable values: no session, engine or ORM object); :meth:`Task.run_unit`
runs one for an explicitly given session (in another process, a DPU worker);
:meth:`Task.execute` plans and runs every unit in-process, then
:meth:`Task.gather` (a pass over the units' products, e.g. ReduceTask's
mosaic satellite pass), then commits everything in one transaction. A
subclass implements :meth:`Task.make` (one unit: select, compute with a pure
function of :mod:`awe.image`, build products), which returns
``[(product, local_file), ...]``, with the shell's helpers: :meth:`calibration`,
:meth:`new_product`, :meth:`existing`, :meth:`write_product`,
:meth:`save_figure`, :func:`apply_checks`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from awe.db.commit import remember_twin
from awe.db.lineage import provenance_hash
from awe.db.schema import DBObject
from awe.db.session import Session, current_session
from awe.model.frames import BaseFrame, product_filename
from awe.model._io import write_image
from awe.pars import ParamGroup, Pars
from awe.tasks import registry

__all__ = ["Task", "TaskError", "MissingCalibrationError", "select_calibration", "Input", "Unit", "UNITS",
           "Check", "apply_checks", "maker_call"]

_P = TypeVar("_P", bound=DBObject)

#: the units of work a task may declare
UNITS = ("per_chip", "per_frame", "per_exposure", "per_field")


class TaskError(RuntimeError):
    """A task cannot run: its inputs are missing or unusable."""


class MissingCalibrationError(TaskError, LookupError):
    """No valid calibration product for a frame.

    ``qc_failures`` lists the quality checks that refused candidates
    (``[(filename, check record), ...]``, empty when none was refused by its QC).
    """

    def __init__(self, message: str, qc_failures: Sequence[tuple[str, dict]] = ()) -> None:
        super().__init__(message)
        self.qc_failures: list[tuple[str, dict]] = list(qc_failures)


_ALIASES = {"i": "instrument", "c": "chip", "f": "filter", "o": "object", "d": "date"}
_COMMON = {
    "pars": "parameters: a Pars or the dict of Pars.get()",
    "commit": "1: store the products in the database and data storage; 0: working folder only",
    "inspect": "1: save the QA figures as PNG in the working folder",
    "logfile": "1 (or a file name): also write the log to a file in the working folder",
    "redo": "1: make the product again even if an identical one exists",
    "session": "the Session to run for (a web request's, a DPU job's); default: the current one",
}

#: the task whose execute() is running in this thread/asyncio task (per-task log files)
_running: contextvars.ContextVar["Task | None"] = contextvars.ContextVar("awe_task", default=None)
_level_lock = threading.Lock()
_level_users = 0
_level_saved = logging.NOTSET


@dataclass(frozen=True)
class Input:
    """One input a task reads.

    Attributes
    ----------
    cls : type
        The class of the input.
    role : str
        The lineage role it fills on the product (``bias``, ``raw_bias_frames``).
    kind : str
        ``'raw'`` (selected raw frames), ``'calibration'`` (looked up by
        :func:`select_calibration`: valid, covering the frame, newest) or
        ``'product'`` (a product of another task found by its lineage).
    filter : bool
        Whether the look-up matches the frame's filter.
    optional : bool
        Whether the product is made without it when there is none.
    """

    cls: type[Any]
    role: str
    kind: str = "calibration"
    filter: bool = False
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("raw", "calibration", "product"):
            raise ValueError(f"Input.kind is 'raw', 'calibration' or 'product', not {self.kind!r}")


@dataclass(frozen=True)
class Unit:
    """One independent unit of work of a task: plain values only, so it pickles and travels to a worker.

    Attributes
    ----------
    task : str
        The qualified name of the task class (``awe.tasks.calibration.BiasTask``).
    selection : dict
        The selection keywords of this unit (``chip``, ``raw_filenames``, ...).
    pars : dict
        The parameters (``Pars.get()``).
    options : dict
        ``commit``, ``inspect``, ``redo``, ``logfile``.
    user, project : str
        Who the unit runs for and in which project (names: the worker opens its own session).
    label : str
        What the unit is about, for logs and job monitors.
    """

    task: str
    selection: dict[str, Any]
    pars: dict[str, Any]
    options: dict[str, Any]
    user: str
    project: str
    label: str = ""


class Task:
    """Base class of every processing task."""

    products: ClassVar[tuple[type, ...]] = ()
    #: what the task reads (see :class:`Input`)
    inputs: ClassVar[tuple[Input, ...]] = ()
    #: the unit of work (one of :data:`UNITS`)
    unit: ClassVar[str] = "per_chip"
    selection: ClassVar[dict[str, str]] = {}
    #: keyword shortcuts for parameters: ``overscan`` -> (product, group, name)
    shortcuts: ClassVar[dict[str, tuple[str, str, str]]] = {}
    #: the algorithm's version: bump it when the step's output changes (it is in every product's provenance)
    version: ClassVar[str] = "1"
    #: the modules the algorithm lives in (their hashes are recorded beside ``version``)
    algorithm_modules: ClassVar[tuple[str, ...]] = ()
    #: False for a task that only makes updates of another task's products (not the registry's maker)
    registers: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.unit not in UNITS:
            raise TypeError(f"{cls.__name__}.unit must be one of {UNITS}, not {cls.unit!r}")
        registry.register(cls)
        doc = (cls.__doc__ or cls.__name__).rstrip()
        lines = [doc, "", "Selection keywords", "------------------"]
        lines += [f"{k} : {v}" for k, v in cls.selection.items()]
        lines += [f"{k} : sets {'.'.join(v)}" for k, v in cls.shortcuts.items()]
        lines += [f"{k} : {v}" for k, v in _COMMON.items()]
        described = Pars(cls).describe() if cls.products else ""
        if described:
            lines += ["", "Parameters (Pars)", "-----------------", described]
        cls.__doc__ = "\n".join(lines)

    def __init__(self, pars: "Pars | dict | None" = None, commit: int | bool = 0, inspect: int | bool = 0,
                 logfile: int | bool | str = 0, redo: int | bool = 0, session: Session | None = None,
                 **selection: Any) -> None:
        selection = {_ALIASES.get(k, k): v for k, v in selection.items()}
        allowed = set(self.selection) | set(self.shortcuts)
        unknown = set(selection) - allowed
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown keyword(s) {sorted(unknown)}; valid keywords are "
                f"{sorted(allowed | set(_COMMON))} (see help({type(self).__name__}))"
            )
        self.pars = Pars(type(self), pars.get() if isinstance(pars, Pars) else pars)
        for key in list(selection):
            if key in self.shortcuts:
                product, group, name = self.shortcuts[key]
                setattr(self.pars.group(product, group), name, selection.pop(key))
        self.selection_values = selection
        self.commit = bool(commit)
        self.inspect = bool(inspect)
        self.logfile = _checked_logfile(logfile)
        self.redo = bool(redo)
        self._session = session
        self.log = logging.getLogger(f"awe.tasks.{type(self).__name__}")
        self.results: list[DBObject] = []

    # ------------------------------------------------------------------ running
    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("selection_values", {})
        if name in type(self).selection:
            return values.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def session(self) -> Session:
        """The session the task runs for: the one given, else the current one when it was asked."""
        if self._session is None:
            self._session = current_session()
        return self._session

    @property
    def workdir(self) -> Path:
        return Path(self.session.settings.workdir)

    def execute(self) -> list[DBObject]:
        """Run the task for its session: plan, run every unit here, gather, commit (``commit=1``) in one go."""
        with self.session.activate(), self._log_to_file():
            self.log.info("%s started: %s, commit=%d", type(self).__name__, self.selection_values, self.commit)
            made: list[tuple[DBObject, Path | None]] = []
            for unit in self._plan():
                made += self._unit_task(unit, self.session, in_process=True).make()
            made += self.gather(made)
            self._commit(made)
            self.results = [obj for obj, _ in made]
            self.log.info("%s done: %d product(s)", type(self).__name__, len(self.results))
        return self.results

    def plan(self) -> list[Unit]:
        """The independent units of work of this task (selected, not run)."""
        with self.session.activate():
            return self._plan()

    def _plan(self) -> list[Unit]:
        project = self.session.project.name
        options = {"commit": int(self.commit), "inspect": int(self.inspect), "redo": int(self.redo),
                   "logfile": self.logfile}
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        units = []
        for selection in self.unit_selections():
            label = ", ".join(f"{k}={v}" for k, v in selection.items() if v is not None)
            units.append(Unit(name, dict(selection), self.pars.get(), dict(options), self.session.user, project,
                              f"{type(self).__name__}({label})"))
        self.log.info("%s: %d unit(s) of work (%s)", type(self).__name__, len(units), self.unit)
        return units

    def unit_selections(self) -> list[dict[str, Any]]:
        """The selection of each unit of work; by default one unit of the whole selection.

        ``per_chip`` tasks given no ``chip`` (nor ``raw_filenames``) get one unit per chip that
        their first declared input has (with the instrument, filter and night asked for).
        """
        selection = dict(self.selection_values)
        if self.unit != "per_chip" or selection.get("chip") is not None or selection.get("raw_filenames"):
            return [selection]
        chips = self._chips_of_first_input()
        return [dict(selection, chip=chip) for chip in chips] or [selection]

    def _chips_of_first_input(self) -> list[str]:
        if not self.inputs:
            return []
        first = self.inputs[0]
        filt = self.selection_values.get("filter") if first.filter else None
        query = first.cls.select(instrument=self.selection_values.get("instrument"), filter=filt,
                                 date=self.selection_values.get("date") if first.kind == "raw" else None)
        return sorted({f.chip.name for f in query if f.chip is not None})

    @classmethod
    def run_unit(cls, unit: Unit, session: Session) -> list[DBObject]:
        """Run one planned unit for ``session`` (a worker's own, of the unit's user and project).

        Returns its products (committed when the unit says ``commit``); the
        :meth:`gather` pass of a whole task is not run (an executor runs the task
        that does it, e.g. FollowSatellitesTask after ReduceTask's units).
        """
        task_cls = registry.task_class(unit.task)
        if session.user != unit.user:
            raise TaskError(f"the unit {unit.label} was planned for user {unit.user}, the session is of "
                            f"{session.user}: open a session of {unit.user} to run it")
        if session.project.name != unit.project:
            raise TaskError(f"the unit {unit.label} was planned in project {unit.project}, the session is in "
                            f"{session.project.name}: session.set_project({unit.project!r}) first")
        task = task_cls._unit_task(unit, session)
        with session.activate(), task._log_to_file():
            task.log.info("%s started: %s, commit=%d (one unit)", task_cls.__name__, task.selection_values,
                          task.commit)
            made = task.make()
            task._commit(made)
            task.results = [obj for obj, _ in made]
            task.log.info("%s done: %d product(s)", task_cls.__name__, len(task.results))
        return task.results

    @classmethod
    def _unit_task(cls, unit: Unit, session: Session, in_process: bool = False) -> "Task":
        options = dict(unit.options)
        if in_process:
            options["logfile"] = 0  # the planning task's log file has the unit's records already
        return cls(pars=unit.pars, session=session, **options, **unit.selection)

    def gather(self, made: list[tuple[DBObject, Path | None]]) -> list[tuple[DBObject, Path | None]]:
        """A pass over the products of all units of one execute() (none by default)."""
        return []

    def _commit(self, made: list[tuple[DBObject, Path | None]]) -> None:
        """Commit the new products (``commit=1``); ``made`` then holds what was committed.

        A product whose identical twin another run committed meanwhile is replaced by that
        twin in ``made`` (this run's file in the working folder is removed).
        """
        if self.commit:
            from awe.db.commit import commit
            fresh = [(i, obj, path) for i, (obj, path) in enumerate(made) if obj.object_id is None]
            if fresh:
                committed = commit([(obj, path) for _, obj, path in fresh], session=self.session)
                for (i, obj, path), result in zip(fresh, committed):
                    if result is not obj:
                        made[i] = (result, None)
                        if path is not None:
                            Path(path).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _log_to_file(self) -> Iterator[None]:
        """With ``logfile``: this task's log records (only its own, whatever runs in other threads) to a file."""
        token = _running.set(self)
        if not self.logfile:
            try:
                yield
            finally:
                _running.reset(token)
            return
        name = self.logfile if isinstance(self.logfile, str) else f"{type(self).__name__}.log"
        handler = logging.FileHandler(_inside(self.workdir, name))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(lambda record: _running.get() is self)  # filters run in the emitting thread
        root = logging.getLogger("awe")
        _lower_level(root)
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            _restore_level(root)
            handler.close()
            _running.reset(token)

    # ------------------------------------------------------------------ helpers for subclasses
    def params(self, product: type, group: str = "process_params") -> ParamGroup:
        """The parameter values of ``product``'s ``group``."""
        return self.pars.group(product.__name__, group)

    def require(self, *names: str) -> None:
        """Raise a clear error when selection keywords are missing."""
        missing = [n for n in names if self.selection_values.get(n) is None]
        if missing:
            raise TypeError(f"{type(self).__name__} needs the keyword(s) {missing} (see help({type(self).__name__}))")

    @classmethod
    def algorithm(cls) -> str:
        """``'BiasTask:1'``: the task's algorithm and its version, as the provenance names it."""
        return f"{cls.__name__}:{cls.version}"

    def new_product(self, cls: type[_P], inputs: dict[str, Any], template: BaseFrame | None = None,
                    category: str = "Cal", step: str | None = None, maker: "type[Task] | None" = None,
                    **attributes: Any) -> _P:
        """A new product with its inputs, parameters, provenance and unique file name.

        ``template`` (an input frame) gives instrument, chip, filter and header attributes.
        The provenance names the algorithm version of ``maker`` (default: this task).
        """
        obj = cls()
        if template is not None:
            for key in ("instrument", "chip", "filter", "OBJECT", "DATE_OBS", "MJD_OBS", "EXPTIME", "AIRMASS",
                        "RA", "DEC"):
                if key in cls._fields:
                    setattr(obj, key, getattr(template, key))
        for key, value in inputs.items():
            setattr(obj, key, value)
        for key, value in attributes.items():
            setattr(obj, key, value)
        groups = self.pars.get().get(cls.__name__, {})
        obj.process_params = groups
        role_values = {name: role.values(obj) for name, role in cls._inputs.items()}
        obj.provenance = provenance_hash(cls.__name__, self.pars.output_affecting(cls.__name__), role_values,
                                         (maker or type(self)).algorithm())
        inst = getattr(obj, "instrument", None)
        chip = getattr(obj, "chip", None)
        filt = getattr(obj, "filter", None)
        obj.filename = product_filename(category, step or cls.__name__[:5], inst.name if inst else None,
                                        filt.name if filt else None, chip.name if chip else None,
                                        self.session.user, obj.provenance)
        # the current product of the same key now: committing supersedes it, or adopts a twin made meanwhile
        remember_twin(obj, self.session)
        return obj

    def existing(self, obj: _P) -> _P | None:
        """A committed, current, valid product identical to ``obj`` (same provenance), unless ``redo=1``.

        A product whose file is gone from the data storage counts as missing: it is made
        again (the log says why), and the new one supersedes it. Products without a file
        (solutions, catalogues kept as rows: no checksum) are only looked up.
        """
        if self.redo:
            return None
        cls = type(obj)
        found = ((cls.provenance == obj.provenance) & (cls.quality_flags == 0) & (cls.is_valid != 0)
                 & (cls.superseded_by == None)).max("creation_date")  # noqa: E711  (the query language's IS NULL)
        if found is None or type(found) is not cls:
            return None
        if found.checksum is not None and not self.session.storage.exists(found.filename):
            self.log.warning("an identical %s exists (%s, object %s), but its file is gone from the data storage "
                             "%s: making it again", cls.__name__, found.filename, found.object_id,
                             self.session.storage.url)
            return None
        self.log.info("an identical %s exists already: %s (made %s); using it (redo=1 makes it again)",
                      cls.__name__, found.filename, found.creation_date)
        return found

    def output_path(self, obj: DBObject) -> Path:
        """Where the product's file goes in the working folder."""
        path = self.workdir / obj.filename
        setattr(obj, "_local_path", path)
        return path

    def figure_path(self, obj: DBObject | str, what: str = "") -> Path:
        stem = obj.filename[:-5] if isinstance(obj, DBObject) else str(obj)
        return self.workdir / f"{stem}{('-' + what) if what else ''}.png"

    # ------------------------------------------------------------------ the shell: inputs, outputs, figures
    def declared(self, role: str) -> Input:
        """The declared input of ``role``."""
        for decl in self.inputs:
            if decl.role == role:
                return decl
        raise KeyError(f"{type(self).__name__} declares no input {role!r} (its inputs: "
                       f"{[d.role for d in self.inputs]})")

    def calibration(self, role: str, frame: Any, check: Callable[[Any], str | None] | None = None,
                    **advice: Any) -> Any:
        """The calibration of the declared input ``role`` for ``frame`` (:func:`select_calibration`).

        A missing one raises :class:`MissingCalibrationError` naming the call that makes it
        (``advice``: keywords of that call, e.g. ``overscan=6``), unless candidates were refused
        by their QC checks (``qc_failures``): then the error says which parameter to relax, and
        no call is advised (it would make the same refused product); an ``optional`` one is None
        then, logged by :meth:`missing_optional`.
        """
        decl = self.declared(role)
        try:
            return select_calibration(decl.cls, frame, self.log, filter=decl.filter, check=check)
        except MissingCalibrationError as exc:
            if decl.optional:
                self.missing_optional(decl, frame, exc)
                return None
            if exc.qc_failures:
                # refused by their QC checks: the message names the check and the parameter to relax;
                # running the maker again with the same parameters would make the same refused product
                raise
            raise MissingCalibrationError(f"{exc}; for {frame.filename}: run "
                                          f"{maker_call(decl.cls, frame, decl.filter, advice)}") from None

    def missing_optional(self, decl: Input, frame: Any, exc: Exception) -> None:
        """Log that an optional calibration is missing (the product is made without it)."""
        self.log.warning("%s made without a %s (the pixels it would flag are not left out of the statistics): %s",
                         self.products[0].__name__, decl.cls.__name__, exc)

    def write_product(self, obj: BaseFrame, data: np.ndarray, cards: dict[str, Any], dtype: Any = np.float32,
                      hdus: dict[str, np.ndarray] | None = None, imstat: Any = None) -> Path:
        """Size, ``imstat`` (when not set), the class and provenance cards, and the file in the working folder."""
        from awe.image.stats import imstat as measure
        obj.NAXIS2, obj.NAXIS1 = (int(n) for n in data.shape)
        if imstat is not None or obj.imstat is None:
            obj.imstat = stored_imstat(imstat if imstat is not None else measure(data))
        header = dict(cards)
        header.update({"AWECLASS": (type(obj).__name__, "awe product class"),
                       "PROVHASH": (obj.provenance, "awe provenance hash")})
        path = self.output_path(obj)
        write_image(path, data, header, extra=hdus, dtype=dtype)
        self.log.info("%s written to %s (quality_flags=%s)", type(obj).__name__, path, obj.quality_flags)
        return path

    def save_figure(self, obj: DBObject, draw: Callable[[Path], Any], what: str = "") -> Path | None:
        """With ``inspect=1``: ``draw(path)`` makes the figure of ``obj`` (returning it), saved and closed."""
        if not self.inspect:
            return None
        import matplotlib.pyplot as plt
        path = self.figure_path(obj, what)
        fig = draw(path)
        if fig is not None:
            plt.close(fig)
        self.log.info("QA figure of %s saved as %s", type(obj).__name__, path)
        return path


def _checked_logfile(logfile: int | bool | str) -> int | bool | str:
    """``logfile`` if it is 0/1 or a name of a file in the working folder, else ``ValueError``."""
    if isinstance(logfile, (bool, int)):
        return logfile
    if not isinstance(logfile, str) or not logfile or "\x00" in logfile or ".." in Path(logfile).parts:
        raise ValueError(f"logfile={logfile!r}: give 1 (the task's name) or the name of a file in the working "
                         "folder (no '..', no NUL)")
    return logfile


def _inside(workdir: Path, name: str) -> Path:
    """``workdir / name`` if that stays inside the working folder (links resolved), else ``ValueError``."""
    root = Path(workdir).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ValueError(f"logfile={name!r} is outside the working folder {root}: give a plain file name (or a "
                         "path inside the working folder)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def stored_imstat(stat: Any) -> Any:
    """``imstat`` for the database: NaN (no usable pixel) stored as NULL."""
    from awe.db.schema import ImStat

    def finite(value: float) -> float | None:
        return float(value) if value is not None and math.isfinite(value) else None
    return ImStat(**{k: finite(getattr(stat, k)) for k in ("mean", "median", "stdev", "min", "max")})


# ============================================================================ QC
@dataclass(frozen=True)
class Check:
    """One quality check: ``value`` beyond ``limit`` (above, or below when ``minimum``) sets ``flag``.

    ``parameter`` is the name of the limit's parameter in the product's ``group`` of parameters
    (``MAXIMUM_FRACTION`` of ``HotPixelMap.process_params``).
    """

    label: str
    value: float | None
    limit: float
    parameter: str
    flag: int
    minimum: bool = False
    group: str = "process_params"

    def failed(self) -> bool:
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value < self.limit if self.minimum else self.value > self.limit

    def record(self, product: DBObject) -> dict[str, Any]:
        """The check as an entry of ``product.qc_report``."""
        from awe.model.frames import QualityFlags
        value = None if self.value is None else float(self.value)
        return {"check": self.label, "value": value if value is None or math.isfinite(value) else None,
                "limit": float(self.limit), "parameter": f"{type(product).__name__}.{self.group}.{self.parameter}",
                "relation": "<" if self.minimum else ">", "failed": self.failed(),
                "flag": " ".join(QualityFlags.describe(self.flag))}


def apply_checks(product: DBObject, checks: Sequence[Check], logger: logging.Logger) -> int:
    """Set ``product.quality_flags`` from the failed checks (logging each), record every check in
    ``product.qc_report`` and return the flags."""
    from awe.model.frames import QualityFlags
    flags = 0
    for check in checks:
        if check.failed():
            flags |= check.flag
            relation = "<" if check.minimum else ">"
            logger.warning("%s QC failed: %s = %.6g %s %s.%s.%s = %.6g -> %s", type(product).__name__, check.label,
                           check.value, relation, type(product).__name__, check.group, check.parameter, check.limit,
                           QualityFlags.describe(check.flag))
    product.quality_flags = flags
    product.qc_report = [check.record(product) for check in checks]
    if flags == 0:
        logger.info("%s QC passed: %s", type(product).__name__,
                    ", ".join(f"{c.label} = {c.value:.5g}" for c in checks if c.value is not None))
    return flags


def _lower_level(logger: logging.Logger) -> None:
    """Let INFO records through while at least one task writes a log file (reference-counted)."""
    global _level_users, _level_saved
    with _level_lock:
        if _level_users == 0:
            _level_saved = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        _level_users += 1


def _restore_level(logger: logging.Logger) -> None:
    global _level_users
    with _level_lock:
        _level_users -= 1
        if _level_users == 0:
            logger.setLevel(_level_saved)


def select_calibration(cls: type[Any], frame: BaseFrame, log: logging.Logger, *, filter: bool = False,
                       extra: "Any | None" = None, check: Any = None) -> DBObject:
    """The calibration of type ``cls`` to use for ``frame``: newest valid one whose validity covers it.

    Candidates share the frame's instrument and chip (and filter when
    ``filter``); ``extra`` is an additional query condition; ``check(candidate)``
    may return a reason to refuse a candidate. The log says which one was
    chosen and why each other candidate was not.

    Raises
    ------
    MissingCalibrationError
        When no candidate is usable. A candidate refused for its quality flags
        is named with the checks it failed (measured value, limit and the
        parameter that sets the limit, from its ``qc_report``), and the
        message says which parameter to relax; the error's ``qc_failures``
        lists those checks (``[(filename, check record), ...]``).
    """
    query = (cls.instrument.name == frame.instrument.name) & (cls.chip.name == frame.chip.name)
    if filter and frame.filter is not None:
        query &= cls.filter.name == frame.filter.name
    if extra is not None:
        query &= extra
    candidates = list(query.order_by("-creation_date"))
    when = frame.DATE_OBS
    chosen = None
    reasons: list[str] = []
    qc_failures: list[tuple[str, dict]] = []
    for cand in candidates:
        why = None
        if cand.superseded_by is not None:
            why = f"superseded by object {cand.superseded_by} (made again)"
        elif cand.quality_flags:
            failed = _failed_checks(cand)
            qc_failures += [(cand.filename, record) for record in failed]
            why = _flags_text(cand.quality_flags)
            if failed:
                why += ": QC failed: " + "; ".join(_check_text(record) for record in failed)
        elif cand.is_valid == 0:
            why = "marked invalid (is_valid=0)"
        elif when is not None and cand.timestamp_start is not None and not (
                cand.timestamp_start <= when <= (cand.timestamp_end or _dt.datetime.max)):
            why = f"validity {cand.timestamp_start} .. {cand.timestamp_end} does not cover {when}"
        elif check is not None:
            why = check(cand)
        elif chosen is not None:
            why = f"older than {chosen.filename}"
        if why is None and chosen is None:
            chosen = cand
        else:
            reasons.append(f"{cand.filename}: {why or 'older than the chosen one'}")
    what = f"{frame.instrument.name} {frame.chip.name}" + (f" {frame.filter.name}" if filter and frame.filter else "")
    if chosen is None:
        detail = ("; candidates refused: " + "; ".join(reasons)) if reasons else "; there are none"
        raise MissingCalibrationError(
            f"no valid {cls.__name__} for {frame.filename} ({what}, {when}){detail}. "
            + (_relax_advice(cls, qc_failures) if qc_failures else f"Make one first (e.g. {_task_for(cls)})"),
            qc_failures)
    log.info("%s for %s: chose %s (made %s, valid %s .. %s)", cls.__name__, frame.filename, chosen.filename,
             chosen.creation_date, chosen.timestamp_start, chosen.timestamp_end)
    for reason in reasons:
        log.info("  not chosen: %s", reason)
    return chosen


def _flags_text(flags: int) -> str:
    from awe.model.frames import QualityFlags
    return f"quality_flags={flags} {QualityFlags.describe(flags)}"


def _failed_checks(candidate: DBObject) -> list[dict]:
    """The failed entries of a product's ``qc_report`` (none when it has no report)."""
    report = getattr(candidate, "qc_report", None) or []
    return [r for r in report if isinstance(r, dict) and r.get("failed")]


def _number(value: Any) -> str:
    return "None" if value is None else f"{value:.4g}"


def _check_text(record: dict) -> str:
    """``hot pixel fraction = 0.01575 > 0.01 (HotPixelMap.process_params.MAXIMUM_FRACTION)``."""
    return (f"{record.get('check')} = {_number(record.get('value'))} {record.get('relation', '>')} "
            f"{_number(record.get('limit'))} ({record.get('parameter')})")


def _relax_advice(cls: type, failures: list[tuple[str, dict]]) -> str:
    """What to do about calibrations refused by their quality checks: which parameter to relax, how."""
    parameters: dict[str, dict] = {}
    for _, record in failures:
        parameters.setdefault(str(record.get("parameter")), record)
    task = _task_name(cls)
    lines = []
    for path, record in parameters.items():
        bound = "lower" if record.get("relation") == "<" else "raise"
        lines.append(f"{bound} {path} (now {_number(record.get('limit'))}; measured "
                     f"{_number(record.get('value'))})")
    example = next(iter(parameters))
    return (f"Making it again with the same parameters gives the same result: if you accept it, "
            f"{' and '.join(lines)}, e.g. pars = Pars({task}); pars.{example} = ...; "
            f"{task}(instrument=..., chip=..., pars=pars, redo=1, commit=1); or make it from better inputs")


def _task_name(cls: type) -> str:
    maker = registry.task_for(cls)
    return maker.__name__ if maker is not None else f"the task that makes {cls.__name__}"


def _task_for(cls: type) -> str:
    return f"{_task_name(cls)}(instrument=..., chip=..., commit=1)"


def maker_call(cls: type, frame: Any, use_filter: bool, extra: dict[str, Any] | None = None) -> str:
    """The call that makes a calibration of type ``cls`` valid for ``frame``, e.g.
    ``MasterFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1)``."""
    from awe.db.query import night_of
    maker = registry.task_for(cls)
    keywords: dict[str, Any] = {"instrument": frame.instrument.name, "chip": frame.chip.name}
    if frame.DATE_OBS is not None and frame.instrument.longitude is not None:
        keywords["date"] = str(night_of(frame.DATE_OBS, frame.instrument.longitude))
    if use_filter and frame.filter is not None:
        keywords["filter"] = frame.filter.name
    keywords.update(extra or {})
    if maker is None:
        return f"the task that makes {cls.__name__} ({', '.join(f'{k}={v!r}' for k, v in keywords.items())})"
    accepted = set(maker.selection) | set(maker.shortcuts)
    text = ", ".join(f"{k}={v!r}" for k, v in keywords.items() if k in accepted)
    return f"{maker.__name__}({text}, commit=1)"


def newest_of_each(products: Iterable[Any], key: Callable[[Any], Any]) -> list[Any]:
    """The newest product (by creation date, then id) of each ``key(product)`` (e.g. each raw frame)."""
    newest: dict[Any, Any] = {}
    for p in products:
        k = key(p)
        if k not in newest or (p.creation_date, p.object_id) > (newest[k].creation_date, newest[k].object_id):
            newest[k] = p
    return list(newest.values())


def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)
