"""The DPU: ``dpu.run(recipe, **keywords)`` plans the recipe's task and runs one job per unit, in parallel.

::

    awe> dpu.run('aaaaaa', instrument='WFI', date='2003-03-03')      # lists the recipes
    awe> dpu.run('Bias', instrument='WFI', date='2003-03-03', commit=1); dpu.wait_for_jobs()
    awe> dpu.run('Reduce', i='WFI', raw_filenames=['WFI.2003-03-04T04:42:29.496_'+str(i)+'.fits'
    ...          for i in range(1, 9)], commit=0); dpu.get_logs()

A recipe is a registered task (:data:`RECIPES`: the course's names; a recipe
whose task is not registered is not listed). ``dpu.run`` plans the task
(:meth:`Task.plan`: one unit per chip, frame, exposure or field), records one
job per unit (:mod:`awe.dpu.jobs`) and hands them to the executor
(:mod:`awe.dpu.executors`; ``dpu.use('dask')``, ``dpu.use('tcp://HOST:8786')``,
``dpu.use('pool', workers=4)``). Each job runs for the submitting user in its own
session; ``commit=0`` keeps nothing but the logs and the files in the working
folder (a dry run), ``commit=1`` commits every product. When the units of a task
with ``followed_by`` (ReduceTask: FollowSatellitesTask, the mosaic satellite pass)
have ended, that task runs as a second stage.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from awe.dpu import jobs as _jobs
from awe.dpu.executors import DPUError, Executor, InProcess, SchedulerGone, WorkerLost, executor as _executor
from awe.dpu.worker import JobSpec, settings_for_job

if TYPE_CHECKING:  # pragma: no cover
    from awe.tasks.base import Task

__all__ = ["DPU", "RECIPES", "recipes", "recipe_task", "describe_recipes", "dpu", "Run"]

log = logging.getLogger(__name__)

#: recipe name -> task class name (the course's names); listed when the task is registered
RECIPES: dict[str, str] = {
    "Bias": "BiasTask", "HotPixels": "HotPixelsTask", "DomeFlat": "DomeFlatTask", "ColdPixels": "ColdPixelsTask",
    "TwilightFlat": "TwilightFlatTask", "MasterFlat": "MasterFlatTask", "Reduce": "ReduceTask",
    "Astrometry": "AstrometricParametersTask", "Photcat": "PhotcatTask", "Illumination": "IlluminationCorrectionTask",
    "Photom": "PhotomTask", "GAstromSL": "GAstromSourceListTask", "GAstrom": "GAstromTask",
    "Regrid": "RegridTask", "Coadd": "CoaddTask", "SourceList": "SourceListTask", "Associate": "AssociateListTask",
}


def recipes() -> "dict[str, type[Task]]":
    """The recipes whose task is registered: name -> task class, in the course's order."""
    from awe.tasks import registry
    registered = {t.__name__: t for t in registry.tasks()}
    return {name: registered[task] for name, task in RECIPES.items() if task in registered}


def recipe_task(recipe: str) -> "type[Task]":
    """The task class of a recipe (or of a task name: ``'BiasTask'``)."""
    found = recipes()
    if recipe in found:
        return found[recipe]
    by_task = {t.__name__: t for t in found.values()}
    if recipe in by_task:
        return by_task[recipe]
    raise DPUError(f"no DPU recipe {recipe!r}; the recipes are {sorted(found)}\n{describe_recipes()}")


def recipe_name(task: "type[Task]") -> str:
    for name, cls in recipes().items():
        if cls is task:
            return name
    return task.__name__


def describe_recipes() -> str:
    """One line per recipe: what it makes, its unit of work and its keywords."""
    lines = ["DPU recipes (dpu.run(RECIPE, keyword=value, ..., commit=0|1)):"]
    for name, task in recipes().items():
        makes = ", ".join(c.__name__ for c in task.products)
        keywords = ", ".join(list(task.selection) + list(task.shortcuts) + ["pars", "commit"])
        lines.append(f"  {name:<13} {task.__name__}: makes {makes}; one job {task.unit.replace('_', ' ')}; "
                     f"keywords: {keywords}")
    return "\n".join(lines)


@dataclass
class Run:
    """One ``dpu.run`` call: its jobs and the executor's handles of those not collected yet."""

    run_id: str
    recipe: str
    task: "type[Task]"
    keywords: dict[str, Any]
    job_ids: list[int]
    handles: dict[int, Any] = field(default_factory=dict)
    followed: bool = False


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class DPU:
    """The distributed processing unit of the prompt (``dpu``); see the module documentation."""

    def __init__(self, executor: "str | Executor | None" = None, attempts: int = 3, progress: bool | None = None,
                 session: Any = None, **options: Any) -> None:
        self._executor_spec: Any = executor
        self._executor_options = options
        self._engine: Executor | None = None
        self.attempts = int(attempts)
        self.progress = progress
        self._session = session
        self.runs: list[Run] = []
        self._reported: set[int] = set()  # failed jobs wait_for_jobs has reported (not again after every wait)

    # ------------------------------------------------------------ set-up
    @property
    def session(self) -> Any:
        if self._session is not None:
            return self._session
        from awe.db.session import current_session
        return current_session()

    @property
    def executor(self) -> Executor:
        if self._engine is None:
            self._engine = _executor(self._executor_spec, **self._executor_options)
        return self._engine

    def use(self, executor: "str | Executor | None" = None, **options: Any) -> "DPU":
        """Choose the engine: ``None``/'in-process', 'pool' (``workers=``), 'dask' (a LocalCluster:
        ``workers=``, ``threads=``), 'tcp://HOST:8786' (an existing scheduler) or an Executor."""
        self.close()
        self._executor_spec, self._executor_options = executor, options
        return self

    def close(self) -> None:
        """Release the executor (its processes, its connection to the scheduler)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # ------------------------------------------------------------ running
    def run(self, recipe: str, **keywords: Any) -> list[int]:
        """Plan ``recipe``'s task with ``keywords`` and submit one job per unit; the job ids.

        An unknown recipe (``dpu.run('aaaaaa')``) prints the recipes, what each
        makes and its keywords, and submits nothing.
        """
        try:
            task_cls = recipe_task(recipe)
        except DPUError:
            print(describe_recipes())
            return []
        task = task_cls(session=self.session, **keywords)
        units = task.plan()
        if not units:
            log.warning("dpu.run(%r): nothing to do (the selection %s has no unit of work)", recipe, keywords)
            return []
        return self.submit(recipe, task_cls, units, keywords)

    def submit(self, recipe: str, task_cls: "type[Task]", units: list[Any],
               keywords: dict[str, Any] | None = None,
               report: "Callable[[int, int, str], None] | None" = None) -> list[int]:
        """Record one job per planned unit and hand them to the executor; the job ids.

        In-process the jobs run here: ``report(ended, total, label)`` is called as each ends (a progress display
        of the caller's, as :meth:`wait_for_jobs` gives it for the other executors)."""
        session = self.session
        engine = self.executor
        run_id = uuid.uuid4().hex
        parameters = _jsonable({k: v for k, v in (keywords or {}).items()})
        ids = _jobs.insert_jobs(session, run_id, recipe, units, parameters, engine.name, self.attempts)
        run = Run(run_id, recipe, task_cls, dict(keywords or {}), ids)
        self.runs.append(run)
        log.info("dpu.run(%r): %d job(s) %s on %s", recipe, len(ids), ids, engine.name)
        settings, password = settings_for_job(session.settings, engine.local)
        # in-process the jobs run here, one after the other: the live display is drawn meanwhile
        bar = self._bar(False) if isinstance(engine, InProcess) and len(ids) > 1 else None
        if bar is not None:
            bar.total = len(ids)
            bar.set_description(f"DPU {recipe}")
        try:
            for job_id, unit in zip(ids, units):
                spec = JobSpec(job_id, unit, settings, password)
                try:
                    run.handles[job_id] = handle = engine.submit(spec)
                except SchedulerGone as exc:
                    self._lost(run, [job_id] + [i for i in ids if i not in run.handles], str(exc))
                    raise
                if bar is not None:
                    bar.update(1)
                    if handle.get("state") == "failed":
                        bar.set_postfix_str(f"failed: job {job_id}")
                if report is not None and isinstance(engine, InProcess):
                    report(len(run.handles), len(ids), "")
        finally:
            if bar is not None:
                bar.close()
        if isinstance(engine, InProcess):  # ended already: collect them, run the followed_by stage
            self._collect(run, block=True)
        return ids

    def _lost(self, run: Run, ids: Iterable[int], message: str) -> None:
        for job_id in ids:
            _jobs.mark_lost(self.session, job_id, message)
            run.handles.pop(job_id, None)

    def _collect(self, run: Run, block: bool) -> None:
        """Collect the ended handles of ``run`` (retrying jobs whose worker died), then its followed_by stage."""
        session = self.session
        engine = self.executor
        for job_id, handle in list(run.handles.items()):
            if not block and not engine.done(handle):
                continue
            try:
                engine.outcome(handle)
                run.handles.pop(job_id)
            except WorkerLost as exc:
                job = _jobs.job(session, job_id)
                if job.state in _jobs.ENDED:
                    run.handles.pop(job_id)
                elif job.attempts < job.max_attempts:
                    log.warning("DPU job %d (%s): %s; retrying (attempt %d of %d)", job_id, job.label, exc,
                                job.attempts + 1, job.max_attempts)
                    settings, password = settings_for_job(session.settings, engine.local)
                    run.handles[job_id] = engine.submit(JobSpec(job_id, _jobs.unit_of(job), settings, password))
                else:
                    _jobs.mark_lost(session, job_id, f"{exc}, {job.attempts} time(s): not retried again "
                                                     f"(attempts={job.max_attempts})")
                    run.handles.pop(job_id)
            except SchedulerGone as exc:
                self._lost(run, list(run.handles), str(exc))
                raise
        if not run.handles and not run.followed:
            run.followed = True
            self._follow(run)

    def _follow(self, run: Run) -> None:
        """The ``followed_by`` task of a run's task, after its units (committed runs only)."""
        name = getattr(run.task, "followed_by", None)
        if not name:
            return
        if not run.keywords.get("commit"):
            log.info("%s: commit=0, so %s (it works on committed products) is not run", run.recipe, name)
            return
        done = _jobs.jobs_of(self.session, run.job_ids, states=["done"])
        raws = sorted({n for j in done for n in (j.unit.get("selection", {}).get("raw_filenames") or [])})
        if not done:
            return
        from awe.tasks import registry
        follower = registry.task_class(name)
        keywords = {k: v for k, v in run.keywords.items() if k in ("commit", "inspect")}
        pars = run.keywords.get("pars")
        if pars is not None:  # the follower's products' parameters only
            values = pars.get() if hasattr(pars, "get") and not isinstance(pars, dict) else dict(pars)
            keywords["pars"] = {k: v for k, v in values.items() if k in {c.__name__ for c in follower.products}}
        if raws:
            keywords["raw_filenames"] = raws
        else:
            keywords.update({k: v for k, v in run.keywords.items() if k in follower.selection})
        units = follower(session=self.session, **keywords).plan()
        if units:
            log.info("%s: its units ended; running %s (%d job(s))", run.recipe, name, len(units))
            self.submit(f"{run.recipe}:{name}", follower, units, keywords)

    def wait_for_jobs(self, timeout: float | None = None, quiet: bool = False,
                      report: "Callable[[int, int, str], None] | None" = None) -> list[_jobs.Job]:
        """Block until every job submitted here has ended (retrying those whose worker died, then each run's
        ``followed_by`` stage); shows the progress and reports the failures. The jobs of the runs.

        ``report(ended, total, states)`` is called as jobs end (a progress display of the caller's)."""
        start = time.monotonic()
        bar = self._bar(quiet)
        try:
            while True:
                pending = [r for r in self.runs if r.handles or not r.followed]
                for run in pending:
                    self._collect(run, block=False)
                ids = [i for r in self.runs for i in r.job_ids]
                states = self._states(ids)
                if bar is not None:
                    bar.total = len(ids)
                    bar.n = sum(states.get(s, 0) for s in _jobs.ENDED)
                    bar.set_postfix_str(", ".join(f"{s} {states.get(s, 0)}" for s in _jobs.STATES[1:4]))
                    bar.refresh()
                if report is not None:
                    report(sum(states.get(s, 0) for s in _jobs.ENDED), len(ids),
                           ", ".join(f"{s} {states.get(s, 0)}" for s in _jobs.STATES[1:4]))
                if not any(r.handles or not r.followed for r in self.runs):
                    break
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(f"dpu.wait_for_jobs: jobs still running after {timeout:g} s: "
                                       f"{[i for r in self.runs for i in r.handles]}")
                time.sleep(0.2)
        finally:
            if bar is not None:
                bar.close()
        found = _jobs.jobs_of(self.session, [i for r in self.runs for i in r.job_ids])
        failed = [j for j in found if j.state == "failed"]
        new = [j for j in failed if j.id not in self._reported]
        if new and not quiet:
            earlier = len(failed) - len(new)
            print(f"{len(new)} of {len(found)} DPU job(s) failed" + (
                f" (and {earlier} reported before)" if earlier else "") + ":", file=sys.stderr)
            for j in new:
                print(f"  job {j.id} {j.label}: {j.error}", file=sys.stderr)
            print("  dpu.get_logs() shows their logs; dpu.rerun_failed() runs them again", file=sys.stderr)
            self._reported.update(j.id for j in new)
        return found

    def _bar(self, quiet: bool) -> Any:
        show = self.progress if self.progress is not None else (not quiet and sys.stderr.isatty())
        if not show:
            return None
        from tqdm import tqdm  # type: ignore[import-untyped]
        return tqdm(total=0, desc="DPU jobs", unit="job", file=sys.stderr)

    def _states(self, ids: list[int]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for j in _jobs.jobs_of(self.session, ids):
            counts[j.state] = counts.get(j.state, 0) + 1
        return counts

    # ------------------------------------------------------------ looking at jobs
    def _last_ids(self) -> list[int]:
        return self.runs[-1].job_ids if self.runs else []

    def get_jobids(self) -> list[int]:
        """The ids of the jobs submitted by this DPU (every run of the session), oldest first."""
        return [i for r in self.runs for i in r.job_ids]

    def jobs(self, ids: Iterable[int] | None = None) -> list[_jobs.Job]:
        """The user's jobs (these ids; default: every job submitted here)."""
        return _jobs.jobs_of(self.session, list(ids) if ids is not None else self.get_jobids())

    def get_logs(self, job_ids: "int | Iterable[int] | None" = None, quiet: bool = False) -> str:
        """Print (and return) the log of each job of the last run (or of ``job_ids``)."""
        if isinstance(job_ids, int):
            job_ids = [job_ids]
        found = self.jobs(list(job_ids) if job_ids is not None else self._last_ids())
        parts = []
        for j in found:
            head = (f"=== job {j.id} {j.recipe} {j.label} [{j.state}] attempts {j.attempts} on {j.host} "
                    f"({j.worker}) {j.started} .. {j.ended}")
            body = j.log or ""
            if j.error and j.error not in body:
                body += f"ERROR {j.error}\n"
            parts.append(f"{head}\n{body}")
        text = "\n".join(parts)
        if not quiet:
            print(text)
        return text

    def get_job_result(self, job_id: int) -> list[dict[str, Any]]:
        """The products of one job: ``[{class, object_id, filename, local_path}, ...]`` (object_id None when
        ``commit=0``: the file is in the working folder)."""
        j = _jobs.job(self.session, job_id)
        if j.state != "done":
            raise DPUError(f"DPU job {job_id} ({j.label}) is {j.state}" + (f": {j.error}" if j.error else "")
                           + "; dpu.get_logs(%d) shows its log" % job_id)
        return list(j.result or [])

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a job that has not ended (a running one finishes its unit; its row says cancelled)."""
        _jobs.job(self.session, job_id)  # the user's?
        cancelled = _jobs.mark_cancelled(self.session, [job_id])
        for run in self.runs:
            handle = run.handles.pop(job_id, None)
            if handle is not None:
                self.executor.cancel(handle)
        return bool(cancelled)

    def rerun_failed(self) -> list[int]:
        """Run the failed jobs of the last run again (same units); their ids."""
        if not self.runs:
            return []
        run = self.runs[-1]
        failed = _jobs.jobs_of(self.session, run.job_ids, states=["failed"])
        engine = self.executor
        settings, password = settings_for_job(self.session.settings, engine.local)
        for j in failed:
            self._reported.discard(j.id)  # failing again is news
            _jobs.requeue(self.session, j.id)
            run.handles[j.id] = engine.submit(JobSpec(j.id, _jobs.unit_of(j), settings, password))
        run.followed = not failed and run.followed
        if failed:
            self._collect(run, block=False)
        return [j.id for j in failed]

    def status(self, ids: Iterable[int] | None = None) -> dict[str, int]:
        """How many of the jobs (default: every job submitted here) are in each state."""
        return self._states(list(ids) if ids is not None else self.get_jobids())

    def __repr__(self) -> str:
        engine = self._engine.name if self._engine is not None else (self._executor_spec or "in-process")
        return f"<DPU on {engine}: {len(self.get_jobids())} job(s) submitted; dpu.run('?') lists the recipes>"


def since(minutes: float) -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None) - _dt.timedelta(minutes=minutes)


#: the prompt's DPU (in-process until ``dpu.use(...)``)
dpu = DPU()
