"""Target processing (the Astro-WISE "pull" model): make a product and whatever in its chain is missing or stale.

::

    awe> make(ReducedScienceFrame, object='3C273', chip='ccd50', plan=True)   # what would run, and why
    awe> make(ReducedScienceFrame, object='3C273', chip='ccd50')              # run exactly that
    $ awe make ReducedScienceFrame --object 3C273 --filter '#844' [--plan] [--stale]

The chain comes from the task contracts: the task that makes the target class
(:func:`awe.tasks.registry.task_for`), then, for each declared input that is a
product or a calibration (not raw frames, not optional ones), the task that makes
it, recursively; they run in dependency order. Calibration steps (tasks without
an ``object`` keyword) are planned per chip, night and filter of the target's raw
frames; the others with the target's selection.

Every planned unit is *probed*: its task's ``make()`` runs up to the point where
it looks for an identical product (:meth:`Task.existing`: same provenance =
class, output-affecting parameters, the inputs ``select_calibration`` chooses
now, the algorithm version). Found: the unit is up to date. Not found: the unit
is stale, and the reason is worked out against the current product it would
replace (same class, sharing its main input): another input chosen now (a newer
calibration, an edited validity range, the old one invalidated or made again), a
changed output-affecting parameter, a bumped algorithm version, the product
itself invalidated, flagged or its file lost, or no such product yet. A unit
whose inputs are re-made by an earlier step is stale for that reason.

Exactly the stale units run, step by step, each step's units in parallel through
the DPU (:mod:`awe.dpu.runner`). With nothing changed a second run does nothing
and says so.

:func:`invalidate` marks a product invalid (``is_valid=0``) and lists what is
derived from it; :func:`stale_products` lists the current products made from an
invalid one; ``make(..., stale=True)`` (``awe make --stale``: :func:`remake_stale`) marks those invalid too
and makes the chain again, so nothing made from a bad input is selected any more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from awe.tasks.base import Task

__all__ = ["make", "MakePlan", "PlannedUnit", "chain", "invalidate", "stale_products", "mark_stale", "remake_stale",
           "MakeError"]

log = logging.getLogger(__name__)

#: the selection keywords of target processing
TARGET_KEYWORDS = ("instrument", "object", "filter", "chip", "date")


class MakeError(RuntimeError):
    """Target processing cannot make what was asked (no task makes the class, a step failed); ``plan`` is the
    :class:`MakePlan` with the jobs that ran, when it got that far."""

    plan: "MakePlan | None" = None


@dataclass
class PlannedUnit:
    """One unit of one step: ``action`` is 'make', 'current', 'waits' (its inputs are made by an earlier
    step first) or 'cannot' (it cannot be made from what there is), with the reason."""

    step: str
    label: str
    action: str
    reason: str
    unit: Any = None
    chips: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"  {self.action:<7} {self.label}: {self.reason}"


@dataclass
class MakePlan:
    """The plan of a ``make()``: the steps in dependency order and every unit's verdict; after a run, the jobs."""

    target: str
    selection: dict[str, Any]
    steps: list[str] = field(default_factory=list)
    units: list[PlannedUnit] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)
    ran: bool = False

    @property
    def to_make(self) -> list[PlannedUnit]:
        return [u for u in self.units if u.action in ("make", "waits")]

    @property
    def cannot(self) -> list[PlannedUnit]:
        """The units that cannot be made from what there is (their probe's error is the reason)."""
        return [u for u in self.units if u.action == "cannot"]

    @property
    def nothing_to_do(self) -> bool:
        return not self.to_make

    def format(self) -> str:
        what = ", ".join(f"{k}={v!r}" for k, v in self.selection.items())
        lines = [f"make {self.target}({what}): steps {' -> '.join(self.steps)}"]
        for step in self.steps:
            mine = [u for u in self.units if u.step == step]
            todo = [u for u in mine if u.action != "current"]
            lines.append(f"{step}: {len(todo)} of {len(mine)} unit(s) to make" if mine else f"{step}: no unit")
            lines += [str(u) for u in mine if u.action != "current"]
            current = [u for u in mine if u.action == "current"]
            if current:
                lines.append(f"  current {len(current)} unit(s) up to date")
        if self.nothing_to_do:
            lines.append(f"nothing to do: every product of the chain of {self.target} is up to date")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def chain(cls: type) -> "list[type[Task]]":
    """The tasks that make ``cls`` and its inputs, in dependency order (``cls``'s task last)."""
    from awe.tasks import registry
    target = registry.task_for(cls)
    if target is None:
        raise MakeError(f"no task makes {getattr(cls, '__name__', cls)}: target processing needs a registered task "
                        f"whose products include it (awe.tasks.registry)")
    needed: "set[type[Task]]" = set()

    def require(task: "type[Task]") -> None:  # the tasks of the required (not optional) inputs, recursively
        if task in needed:
            return
        needed.add(task)
        for decl in task.inputs:
            maker = registry.task_for(decl.cls) if decl.kind != "raw" and not decl.optional else None
            if maker is not None and maker is not task:
                require(maker)

    require(target)
    order: "list[type[Task]]" = []
    visiting: "set[type[Task]]" = set()

    def visit(task: "type[Task]") -> None:  # dependency order; an optional input orders the tasks already needed
        if task in order or task in visiting:
            return
        visiting.add(task)
        for decl in task.inputs:
            maker = registry.task_for(decl.cls) if decl.kind != "raw" else None
            if maker is not None and maker is not task and maker in needed:
                visit(maker)
        visiting.discard(task)
        order.append(task)

    for task in registry.tasks():  # the registry's order (calibrations first) among independent steps
        if task in needed:
            visit(task)
    visit(target)
    return order


def calibration_steps(tasks: "list[type[Task]]") -> "set[type[Task]]":
    """The steps of a chain that make a calibration (an input of kind ``calibration``) and the steps those need.

    They are planned per chip, night and filter of the target's raw frames, never with the target's
    ``object``: a calibration of the night may come from other fields (the zero points from the standard
    fields, whose reduced frames the same ReduceTask step then makes too)."""
    from awe.tasks import registry
    found: "set[type[Task]]" = set()

    def mark(task: "type[Task]") -> None:
        if task in found:
            return
        found.add(task)
        for decl in task.inputs:
            maker = registry.task_for(decl.cls) if decl.kind != "raw" and not decl.optional else None
            if maker is not None and maker is not task and maker in tasks:
                mark(maker)

    for task in tasks:
        for decl in task.inputs:
            maker = registry.task_for(decl.cls) if decl.kind == "calibration" and not decl.optional else None
            if maker is not None and maker is not task and maker in tasks:
                mark(maker)
    return found


# ---------------------------------------------------------------- selections of the steps
def _science_raws(tasks: "list[type[Task]]", selection: dict[str, Any]) -> list[Any]:
    """The raw frames the target is made from: the raw input of the chain's tasks that select by object."""
    for task in tasks:
        if "object" not in task.selection:
            continue
        for decl in task.inputs:
            if decl.kind == "raw":
                keys = {k: v for k, v in selection.items() if k in ("instrument", "chip", "filter", "date", "object")}
                return list(decl.cls.select(**keys))
    return []


def _step_selections(task: "type[Task]", selection: dict[str, Any], raws: list[Any],
                     calibration: bool = False) -> list[dict[str, Any]]:
    """The selections to plan ``task`` with: the target's, or per chip/night/filter for a calibration step
    (:func:`calibration_steps`; a task that selects no ``object`` is one)."""
    if not raws or ("object" in task.selection and not calibration):
        return [{k: v for k, v in selection.items() if k in task.selection and v is not None}]
    from awe.db.query import night_of
    keys: set[tuple[str, str, str, str | None]] = set()
    for raw in raws:
        night = str(night_of(raw.DATE_OBS, raw.instrument.longitude or 0.0))
        filt = raw.filter.name if raw.filter is not None and "filter" in task.selection else None
        keys.add((raw.instrument.name, raw.chip.name, night, filt))
    out = []
    for inst, chip, night, filt in sorted(keys, key=lambda k: tuple(str(x) for x in k)):
        sel: dict[str, Any] = {"instrument": inst, "chip": chip, "date": night}
        if filt is not None:
            sel["filter"] = filt
        out.append({k: v for k, v in sel.items() if k in task.selection})
    return out


def _unit_chips(unit: Any) -> tuple[str, ...]:
    """The chips a unit is about (its ``chip``, or those of the files it names); () = every chip."""
    chip = unit.selection.get("chip")
    if chip:
        return (str(chip),)
    from awe.db.schema import DBObject
    names = list(unit.selection.get("raw_filenames") or []) + list(unit.selection.get("red_filenames") or [])
    if not names:
        return ()
    chips = set()
    for obj in DBObject.filename.in_(names):
        c = getattr(obj, "chip", None)
        if c is not None:
            chips.add(c.name)
    return tuple(sorted(chips))


# ---------------------------------------------------------------- probing one unit
class _Missing(Exception):
    def __init__(self, obj: Any) -> None:
        super().__init__(type(obj).__name__)
        self.obj = obj


def _probe(task_cls: "type[Task]", unit: Any, session: Any) -> tuple[str, str, tuple[str, ...]]:
    """('current' | 'make', reason, chips) for one unit, by running its make() up to its look-up of an
    identical product (nothing is computed for a unit that is up to date; nothing is written or committed)."""
    task = task_cls._unit_task(unit, session)
    task.commit = False
    task.inspect = False
    original = task.existing
    found: list[Any] = []

    def existing(obj: Any) -> Any:
        got = original(obj)
        if got is None:
            raise _Missing(obj)
        found.append(got)
        return got

    setattr(task, "existing", existing)
    quiet = logging.getLogger("awe.tasks")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with session.activate():
            try:
                task.make()
            except _Missing as missing:
                obj = missing.obj
                chip = getattr(obj, "chip", None)
                return "make", _reason(task, obj), ((chip.name,) if chip is not None else _unit_chips(unit))
    finally:
        quiet.setLevel(level)
    chips = tuple(sorted({f.chip.name for f in found if getattr(f, "chip", None) is not None}))
    names = ", ".join(sorted({f.filename for f in found})[:3])
    return "current", f"up to date ({names}{', ...' if len(found) > 3 else ''})", chips


def _reason(task: Any, obj: Any) -> str:
    """Why ``obj`` (the product a unit would make now) is not in the database as a current, valid product."""
    cls = type(obj)
    name = cls.__name__
    same = [o for o in ((cls.provenance == obj.provenance) & (cls.superseded_by == None))  # noqa: E711
            if type(o) is cls]
    for old in same:
        if old.is_valid == 0:
            return f"the current {name} {old.filename} is marked invalid (is_valid=0)"
        if old.quality_flags:
            return f"the current {name} {old.filename} is flagged (quality_flags={old.quality_flags})"
        if old.checksum is not None and not task.session.storage.exists(old.filename):
            return f"the file of the current {name} {old.filename} is gone from the data storage"
    if task.redo:
        return "redo=1"
    previous = _previous(task, obj)
    if previous is None:
        return f"missing: no {name} made from these inputs yet"
    new_inputs = {role: list(decl.values(obj)) for role, decl in cls._inputs.items()}
    old_inputs = previous.inputs()
    changes = []
    for role, new in new_inputs.items():
        old = list(old_inputs.get(role, []))
        if sorted(_ident(o) for o in new) == sorted(_ident(o) for o in old):
            continue
        changes.append(_input_change(role, old, new, obj))
    if changes:
        return f"{previous.filename}: " + "; ".join(changes)
    new_pars = task.pars.output_affecting(name)
    old_pars = previous.process_params or {}
    diffs = []
    for group, values in new_pars.items():
        for key, value in values.items():
            before = (old_pars.get(group) or {}).get(key, "(not set)")
            if before != value:
                diffs.append(f"{name}.{group}.{key} {before!r} -> {value!r}")
    if diffs:
        return f"{previous.filename}: output-affecting parameter(s) changed: " + ", ".join(diffs)
    maker = task.algorithm()
    return (f"{previous.filename}: same inputs and parameters but another provenance: the algorithm changed "
            f"(now {maker})")


def _ident(obj: Any) -> Any:
    return getattr(obj, "provenance", None) or getattr(obj, "object_id", None) or getattr(obj, "filename", None)


def _input_change(role: str, old: list[Any], new: list[Any], obj: Any) -> str:
    """``bias: Cal-Bias-...A -> Cal-Bias-...B (A is marked invalid)``."""
    if not old:
        return f"{role}: none before, now {', '.join(o.filename for o in new)}"
    if not new:
        return f"{role}: {', '.join(o.filename for o in old)} no longer used"
    if len(old) > 1 or len(new) > 1:
        return f"{role}: {len(old)} input(s) before, {len(new)} now (another selection)"
    before, now = old[0], new[0]
    when = getattr(obj, "DATE_OBS", None)
    if getattr(before, "is_valid", 1) == 0:
        why = f"{before.filename} is marked invalid"
    elif getattr(before, "superseded_by", None) is not None:
        why = f"{before.filename} was made again (superseded by object {before.superseded_by})"
    elif getattr(before, "quality_flags", 0):
        why = f"{before.filename} is flagged (quality_flags={before.quality_flags})"
    elif when is not None and getattr(before, "timestamp_start", None) is not None and not (
            before.timestamp_start <= when <= (before.timestamp_end or when)):
        why = f"the validity of {before.filename} ({before.timestamp_start} .. {before.timestamp_end}) was edited"
    elif (getattr(now, "creation_date", None) and getattr(before, "creation_date", None)
          and now.creation_date > before.creation_date):
        why = f"a newer {type(now).__name__} exists (made {now.creation_date:%Y-%m-%d %H:%M:%S})"
    else:
        why = f"select_calibration chooses {now.filename} now"
    return f"{role}: {before.filename} -> {now.filename} ({why})"


def _previous(task: Any, obj: Any) -> Any:
    """The current product of ``obj``'s class that ``obj`` would replace: same chip and filter, sharing its
    main input (a raw input first, else the first declared input), else (a calibration made from other
    calibrations) the newest whose validity overlaps ``obj``'s."""
    cls = type(obj)
    kinds = {decl.role: decl.kind for decl in task.inputs}
    roles = sorted((r for r in cls._inputs if r in kinds), key=lambda r: kinds[r] != "raw")
    anchors = []
    for role in roles:
        values = list(cls._inputs[role].values(obj))
        if values:
            anchors.append((role, {_ident(v) for v in values}))
    query = cls.superseded_by == None  # noqa: E711
    chip = getattr(obj, "chip", None)
    if chip is not None and "chip" in cls._fields:
        query &= cls.chip.name == chip.name
    filt = getattr(obj, "filter", None)
    if filt is not None and "filter" in cls._fields:
        query &= cls.filter.name == filt.name
    candidates = [c for c in query.order_by("-creation_date") if type(c) is cls]
    for role, idents in anchors[:1] if anchors and kinds.get(anchors[0][0]) == "raw" else anchors:
        for cand in candidates:
            if idents & {_ident(v) for v in cand.inputs().get(role, [])}:
                return cand
    start, end = getattr(obj, "timestamp_start", None), getattr(obj, "timestamp_end", None)
    if start is not None and end is not None:
        for cand in candidates:
            if cand.timestamp_start is not None and cand.timestamp_end is not None and \
                    cand.timestamp_start <= end and start <= cand.timestamp_end:
                return cand
    return None


# ---------------------------------------------------------------- planning and running
def _plan_step(task_cls: "type[Task]", selection: dict[str, Any], raws: list[Any], session: Any,
               made_chips: dict[str, set], upstream: "dict[type[Task], list[type[Task]]]", plan: MakePlan,
               extra: dict[str, Any], calibration: bool = False) -> list[Any]:
    """Plan and probe one step; append its verdicts to ``plan``; the units to make."""
    from awe.dpu.runner import recipe_name
    from awe.tasks.base import TaskError
    step = recipe_name(task_cls)
    waits_for = [recipe_name(t) for t in upstream.get(task_cls, []) if made_chips.get(recipe_name(t))]
    todo = []
    for sel in _step_selections(task_cls, selection, raws, calibration):
        try:
            units = task_cls(session=session, **extra, **sel).plan()
        except (TaskError, LookupError) as exc:
            if waits_for:
                plan.units.append(PlannedUnit(step, f"{task_cls.__name__}({_fmt(sel)})", "waits",
                                              f"its inputs are made first by {', '.join(waits_for)}", None))
                made_chips.setdefault(step, set()).add(str(sel.get("chip") or "*"))  # later steps wait for it
                continue
            raise MakeError(f"{step}: cannot plan {task_cls.__name__}({_fmt(sel)}): {exc}") from exc
        for unit in units:
            chips = _unit_chips(unit)
            stale_inputs = [s for s in waits_for if not chips or "*" in made_chips[s] or made_chips[s] & set(chips)]
            if stale_inputs:
                plan.units.append(PlannedUnit(step, unit.label, "waits",
                                              f"its inputs are made again first by {', '.join(stale_inputs)}", unit,
                                              chips))
                todo.append(unit)
                continue
            try:
                action, reason, chips = _probe(task_cls, unit, session)
            except (TaskError, LookupError) as exc:
                if waits_for:
                    plan.units.append(PlannedUnit(step, unit.label, "waits", f"needs {', '.join(waits_for)} first",
                                                  unit, chips))
                    todo.append(unit)
                    continue
                # this unit cannot be made from what there is (e.g. no standard star on the frame): said, and
                # its siblings go on
                plan.units.append(PlannedUnit(step, unit.label, "cannot", " ".join(str(exc).split()), unit, chips))
                continue
            plan.units.append(PlannedUnit(step, unit.label, action, reason, unit, chips))
            if action == "make":
                todo.append(unit)
    return todo


def _fmt(sel: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sel.items())


def make(cls: type, *, plan: bool = False, stale: bool = False, dpu: Any = None, session: Any = None,
         pars: Any = None, commit: int = 1, quiet: bool = False,
         progress: "Callable[[str], Callable[[int, int, str], None]] | None" = None, **selection: Any) -> MakePlan:
    """Make ``cls`` for the selection (``object=``, ``filter=``, ``chip=``, ``instrument=``, ``date=``) and every
    missing or stale product of its chain; ``plan=True`` only shows what would run and why.

    ``pars`` (a Pars or ``pars.get()`` of the target's task) applies to the steps it has parameters
    for. ``stale=True`` first marks the current products derived from an invalid one invalid
    (:func:`mark_stale`), so the chain makes them again (or goes back to valid ones). Returns the
    :class:`MakePlan` (printed unless ``quiet``). ``progress(step)`` gives the ``(done, total, name)``
    callback of a step that runs (a progress display: ``awe demo`` draws bars).
    """
    from awe.db.session import current_session
    from awe.dpu.runner import DPU, recipe_name
    from awe.pars import Pars
    unknown = set(selection) - set(TARGET_KEYWORDS)
    if unknown:
        raise TypeError(f"make() got unknown keyword(s) {sorted(unknown)}; the selection keywords are "
                        f"{list(TARGET_KEYWORDS)} (and plan, stale, pars, commit)")
    session = session or current_session()
    runner = dpu or DPU(session=session)
    if "instrument" not in selection:
        selection["instrument"] = _only_instrument(session)
    tasks = chain(cls)
    calibrations = calibration_steps(tasks)
    upstream = {t: [u for u in tasks if u is not t and any(
        d.kind != "raw" and issubclass(d.cls, tuple(u.products)) for d in t.inputs)]
        for t in tasks}
    result = MakePlan(cls.__name__, dict(selection), [recipe_name(t) for t in tasks])
    with session.activate():
        if stale:
            mark_stale(session, quiet)
        raws = _science_raws(tasks, selection)
        made_chips: dict[str, set] = {}
        for task_cls in tasks:
            extra: dict[str, Any] = {"commit": commit}
            if pars is not None:
                values = pars.get() if isinstance(pars, Pars) else dict(pars)
                mine = {k: v for k, v in values.items() if k in {p.__name__ for p in task_cls.products}}
                if mine:
                    extra["pars"] = mine
            # planning only: a unit whose inputs an earlier step makes again waits for it; running: the earlier
            # steps have run, so every unit is probed against what exists now
            todo = _plan_step(task_cls, selection, raws, session, made_chips if plan else {}, upstream, result,
                              extra, task_cls in calibrations)
            step = recipe_name(task_cls)
            if todo:
                chips: set[str] = set()
                for unit in todo:
                    unit_chips = _unit_chips(unit)
                    chips |= set(unit_chips) if unit_chips else {"*"}
                made_chips[step] = made_chips.get(step, set()) | chips
            if plan or not todo:
                continue
            log.info("make %s: %s, %d unit(s)", cls.__name__, step, len(todo))
            before = len([i for r in runner.runs for i in r.job_ids])
            tick = progress(step) if progress is not None else None
            if tick is not None:
                tick(0, len(todo), "submitted")
            ids = runner.submit(step, task_cls, todo, extra, report=tick)
            runner.wait_for_jobs(quiet=quiet, report=None if tick is None else (
                lambda done, total, states: tick(done - before, total - before, "")))
            jobs = runner.jobs([i for r in runner.runs for i in r.job_ids if i >= min(ids)])
            result.jobs += jobs
            failed = [j for j in jobs if j.state != "done"]
            if failed:  # the siblings' products stand; the next steps run on what was made
                log.warning("make %s: step %s failed in %d of %d job(s): %s", cls.__name__, step, len(failed),
                            len(jobs), "; ".join(f"job {j.id} {j.label}: {j.error}" for j in failed))
        result.ran = not plan and not result.nothing_to_do
        failed = [j for j in result.jobs if j.state != "done"]
        if failed or result.cannot:
            error = MakeError(f"make {cls.__name__}: {len(failed)} job(s) failed, {len(result.cannot)} unit(s) "
                              "could not be made: "
                              + "; ".join([f"job {j.id} {j.recipe} {j.label}: {j.error}" for j in failed]
                                          + [f"{u.step} {u.label}: {u.reason}" for u in result.cannot])
                              + " (dpu.get_logs() shows the jobs' logs; the other products are kept)")
            error.plan = result
            raise error
    if not quiet:
        print(result.format())
    return result


def _only_instrument(session: Any) -> str:
    from awe.model import Instrument
    names = sorted({i.name for i in Instrument.all()})
    if len(names) != 1:
        raise TypeError(f"make(): give instrument= (the database knows {names})")
    return names[0]


# ---------------------------------------------------------------- invalidation
def invalidate(obj: Any, quiet: bool = False) -> list[Any]:
    """Mark ``obj`` invalid (``is_valid=0``) and list what is derived from it (what ``make(..., stale=True)``
    re-makes); returns the derived products."""
    obj.update(is_valid=0)
    derived = [d for d in obj.derived() if d.superseded_by is None]
    if not quiet:
        print(f"{obj.filename} marked invalid; {len(derived)} product(s) derived from it:")
        for d in derived:
            print(f"  {type(d).__name__} {d.filename}")
        if derived:
            print("re-make them with make(..., stale=True) or `awe make --stale`")
    return derived


def stale_products(session: Any = None) -> list[tuple[Any, Any]]:
    """(product, the invalid input it derives from) for every current, valid product made from an invalid one."""
    from awe.db.schema import DBObject
    from awe.db.session import current_session
    session = session or current_session()
    out: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    with session.activate():
        for bad in (DBObject.is_valid == 0):
            for d in bad.derived():
                if d.object_id in seen or d.superseded_by is not None or d.is_valid == 0:
                    continue
                seen.add(d.object_id)
                out.append((d, bad))
    return out


def mark_stale(session: Any = None, quiet: bool = False) -> list[tuple[Any, Any]]:
    """Mark every current product made from an invalid one invalid too (``is_valid=0``, in the audit trail),
    so that no selection picks it any more; the (product, invalid input) pairs."""
    found = stale_products(session)
    for product, bad in found:
        product.update(is_valid=0)
        if not quiet:
            print(f"stale: {type(product).__name__} {product.filename} (made from the invalid {bad.filename}): "
                  "marked invalid")
    return found


def remake_stale(runner: Any = None, session: Any = None, quiet: bool = False) -> list["MakePlan"]:
    """``awe make --stale``: mark the products derived from invalid ones invalid, then make each of their
    classes again for its chip, filter and object (what the chain selects now)."""
    from awe.db.session import current_session
    session = session or current_session()
    plans = []
    done: set[tuple[str, Any, Any, Any]] = set()
    with session.activate():
        found = mark_stale(session, quiet)
    for product, _ in found:
        chip = getattr(product, "chip", None)
        filt = getattr(product, "filter", None)
        key = (type(product).__name__, chip.name if chip else None, filt.name if filt else None,
               getattr(product, "OBJECT", None))
        if key in done:
            continue
        done.add(key)
        selection = {k: v for k, v in zip(("chip", "filter", "object"), key[1:]) if v is not None}
        if "object" in selection and not _has_object_step(type(product)):
            selection.pop("object")
        if _has_object_step(type(product)) and "object" not in selection:
            continue
        plans.append(make(type(product), dpu=runner, session=session, quiet=quiet, **selection))
    return plans


def _has_object_step(cls: type) -> bool:
    try:
        return any("object" in t.selection for t in chain(cls))
    except MakeError:
        return False


def describe(units: Iterable[PlannedUnit]) -> str:
    return "\n".join(str(u) for u in units)
