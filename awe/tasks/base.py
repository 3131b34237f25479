"""The Task base: select inputs, run the pure step, build products, check them, commit.

::

    task = BiasTask(instrument='WFI', chip='ccd50', overscan=6, commit=1)
    task.execute()

``commit=0`` writes the products to the working folder only; ``commit=1``
stores them (file into the data storage, then the database rows, atomically).
``inspect=1`` saves each step's QA figure as PNG in the working folder.
``logfile=1`` (or a file name) also writes the log there. ``help(SomeTask)``
lists the selection keywords and the parameters.

A subclass declares ``products`` (the classes it makes: their parameter
groups form ``Pars(SomeTask)``), ``selection`` (keyword -> doc) and implements
:meth:`Task.make`, which returns ``[(product, local_file), ...]``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from awe import __version__
from awe.db.lineage import provenance_hash
from awe.db.schema import DBObject
from awe.db.session import Session, current_session
from awe.model.frames import BaseFrame, product_filename
from awe.pars import ParamGroup, Pars

__all__ = ["Task", "TaskError", "MissingCalibrationError", "select_calibration"]


class TaskError(RuntimeError):
    """A task cannot run: its inputs are missing or unusable."""


class MissingCalibrationError(TaskError, LookupError):
    """No valid calibration product for a frame."""


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


class Task:
    """Base class of every processing task."""

    products: ClassVar[tuple[type, ...]] = ()
    selection: ClassVar[dict[str, str]] = {}
    #: keyword shortcuts for parameters: ``overscan`` -> (product, group, name)
    shortcuts: ClassVar[dict[str, tuple[str, str, str]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
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
        self.logfile = logfile
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
        """Run the task for its session; returns the products (committed when ``commit=1``)."""
        with self.session.activate(), self._log_to_file():
            self.log.info("%s started: %s, commit=%d", type(self).__name__, self.selection_values, self.commit)
            made = self.make()
            if self.commit:
                from awe.db.commit import commit
                fresh = [(obj, path) for obj, path in made if obj.object_id is None]
                if fresh:
                    commit(fresh, session=self.session)
            self.results = [obj for obj, _ in made]
            self.log.info("%s done: %d product(s)", type(self).__name__, len(self.results))
        return self.results

    def make(self) -> list[tuple[DBObject, Path | None]]:
        """Select inputs, compute, write products to the working folder; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__}.make")

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
        handler = logging.FileHandler(self.workdir / name)
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

    def new_product(self, cls: type, inputs: dict[str, Any], template: BaseFrame | None = None,
                    category: str = "Cal", step: str | None = None, **attributes: Any) -> DBObject:
        """A new product with its inputs, parameters, provenance and unique file name.

        ``template`` (an input frame) gives instrument, chip, filter and header attributes.
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
                                         __version__)
        inst = getattr(obj, "instrument", None)
        chip = getattr(obj, "chip", None)
        filt = getattr(obj, "filter", None)
        obj.filename = product_filename(category, step or cls.__name__[:5], inst.name if inst else None,
                                        filt.name if filt else None, chip.name if chip else None,
                                        self.session.user, obj.provenance)
        return obj

    def existing(self, obj: DBObject) -> DBObject | None:
        """A committed, valid product identical to ``obj`` (same provenance), unless ``redo=1``."""
        if self.redo:
            return None
        cls = type(obj)
        found = ((cls.provenance == obj.provenance) & (cls.quality_flags == 0) & (cls.is_valid != 0)).max(
            "creation_date")
        if found is not None and type(found) is cls:
            self.log.info("an identical %s exists already: %s (made %s); using it (redo=1 makes it again)",
                          cls.__name__, found.filename, found.creation_date)
            return found
        return None

    def output_path(self, obj: DBObject) -> Path:
        """Where the product's file goes in the working folder."""
        path = self.workdir / obj.filename
        obj._local_path = path
        return path

    def figure_path(self, obj: DBObject | str, what: str = "") -> Path:
        stem = obj.filename[:-5] if isinstance(obj, DBObject) else str(obj)
        return self.workdir / f"{stem}{('-' + what) if what else ''}.png"


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


def select_calibration(cls: type, frame: BaseFrame, log: logging.Logger, *, filter: bool = False,
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
        if cand.quality_flags:
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
        error = MissingCalibrationError(
            f"no valid {cls.__name__} for {frame.filename} ({what}, {when}){detail}. "
            + (_relax_advice(cls, qc_failures) if qc_failures else f"Make one first (e.g. {_task_for(cls)})")
        )
        error.qc_failures = qc_failures  # type: ignore[attr-defined]
        raise error
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
    return getattr(cls, "made_by", None) or f"{cls.__name__.replace('Frame', '').replace('Map', '')}Task"


def _task_for(cls: type) -> str:
    return f"{_task_name(cls)}(instrument=..., chip=..., commit=1)"


def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)
