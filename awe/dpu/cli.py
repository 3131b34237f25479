"""The command-line verbs of the DPU and of target processing (``awe dpu ...``, ``awe make ...``)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

__all__ = ["dpu_group", "make_command"]


def _session() -> Any:
    from awe import context
    if not context.connected:
        context.connect()
    return context.session


def _dpu(ctx: click.Context) -> Any:
    from awe.dpu.runner import DPU
    options = ctx.obj.get("dpu", {}) if isinstance(ctx.obj, dict) else {}
    scheduler, workers = options.get("scheduler"), options.get("workers")
    if scheduler:
        return DPU(scheduler, progress=True)
    if options.get("executor") in ("dask", "pool"):
        return DPU(options["executor"], workers=workers or 2, progress=True)
    return DPU(progress=True)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.group("dpu")
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786",
              help="Run the jobs on this Dask scheduler (its workers: `awe dpu worker ADDRESS` or `dask worker`).")
@click.option("--executor", type=click.Choice(["in-process", "pool", "dask"]), default="in-process",
              show_default=True, help="Without --scheduler: in this process, a local process pool, a LocalCluster.")
@click.option("--workers", type=int, default=None, help="Processes of the pool or LocalCluster (default 2).")
@click.pass_context
def dpu_group(ctx: click.Context, scheduler: str | None, executor: str, workers: int | None) -> None:
    """The DPU: run a recipe's jobs in parallel, follow them, start a worker."""
    if not isinstance(ctx.obj, dict):
        ctx.obj = {}
    ctx.obj["dpu"] = {"scheduler": scheduler, "executor": executor, "workers": workers}


@dpu_group.command("recipes")
def recipes_command() -> None:
    """List the recipes: what each makes, its unit of work, its keywords."""
    from awe.dpu.runner import describe_recipes
    click.echo(describe_recipes())


@dpu_group.command("run")
@click.argument("recipe")
@click.argument("keywords", nargs=-1, metavar="KEY=VALUE...")
@click.option("--commit/--dry-run", default=False, help="Commit the products (default: a dry run, logs only).")
@click.option("--logs", is_flag=True, help="Print every job's log at the end.")
@click.pass_context
def run_command(ctx: click.Context, recipe: str, keywords: tuple[str, ...], commit: bool, logs: bool) -> None:
    """Run RECIPE (``awe dpu run Bias instrument=WFI date=2003-03-03 --commit``) and wait for its jobs."""
    _session()
    values: dict[str, Any] = {}
    for item in keywords:
        key, sep, text = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: give KEY=VALUE (e.g. chip=ccd50, raw_filenames='[\"a.fits\"]')")
        values[key] = _value(text)
    dpu = _dpu(ctx)
    try:
        ids = dpu.run(recipe, commit=int(commit), **values)
        if not ids:
            return
        jobs = dpu.wait_for_jobs()
        if logs:
            dpu.get_logs()
    finally:
        dpu.close()
    _summary(jobs)
    if any(j.state != "done" for j in jobs):
        sys.exit(1)


def _summary(jobs: list[Any]) -> None:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs")


@dpu_group.command("status")
@click.option("--last", default=20, show_default=True, help="How many of the latest jobs to list.")
def status_command(last: int) -> None:
    """Your jobs: how many are queued, running, done, failed, cancelled, and the latest ones."""
    from awe.dpu import jobs as dpu_jobs
    session = _session()
    found = dpu_jobs.jobs_of(session)
    _summary(found)
    for j in found[-last:]:
        took = f"{(j.ended - j.started).total_seconds():.1f} s" if j.started and j.ended else ""
        click.echo(f"{j.id:6d} {j.state:9s} {j.recipe:12s} {j.attempts}x {j.host or '':12s} {took:>8s} "
                   f"{j.label or ''}" + (f"\n       {j.error}" if j.error else ""))


@dpu_group.command("wait")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
def wait_command(job_ids: tuple[int, ...], timeout: float | None) -> None:
    """Wait for your jobs (these ids; default: every job that has not ended) with a live display."""
    from tqdm import tqdm

    from awe.dpu import jobs as dpu_jobs
    session = _session()
    ids = list(job_ids) or [j.id for j in dpu_jobs.jobs_of(session) if j.state not in dpu_jobs.ENDED]
    start = time.monotonic()
    with tqdm(total=len(ids), desc="DPU jobs", unit="job", file=sys.stderr) as bar:
        while True:
            found = dpu_jobs.jobs_of(session, ids)
            counts = {s: sum(1 for j in found if j.state == s) for s in dpu_jobs.STATES}
            bar.n = sum(counts[s] for s in dpu_jobs.ENDED)
            bar.set_postfix_str(f"running {counts['running']}, done {counts['done']}, failed {counts['failed']}")
            bar.refresh()
            if bar.n >= len(ids):
                break
            if timeout is not None and time.monotonic() - start > timeout:
                raise click.ClickException(f"jobs still not ended after {timeout:g} s")
            time.sleep(0.5)
    _summary(found)
    failed = [j for j in found if j.state == "failed"]
    for j in failed:
        click.echo(f"job {j.id} {j.label}: {j.error}", err=True)
    if failed:
        sys.exit(1)


@dpu_group.command("worker", context_settings={"ignore_unknown_options": True})
@click.argument("scheduler")
@click.option("--nthreads", default=1, show_default=True, help="Threads of the worker (awe's steps: 1).")
@click.argument("dask_options", nargs=-1, type=click.UNPROCESSED)
def worker_command(scheduler: str, nthreads: int, dask_options: tuple[str, ...]) -> None:
    """A Dask worker for SCHEDULER (``tcp://HOST:8786``) that runs awe's jobs (``dask worker`` with awe).

    On PostgreSQL set AWE_PASSWORD (a worker of your own) or AWE_DPU_AUTHENTICATOR and
    AWE_DPU_AUTHENTICATOR_PASSWORD (a shared worker, see `awe db authenticator`); the jobs carry no password.
    """
    os.execv(sys.executable, [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nthreads",
                              str(nthreads), *dask_options])


@click.command("make")
@click.argument("class_name", metavar="[CLASS]", required=False)
@click.option("--object", "object_", default=None, help="OBJECT of the target's frames ('3C273').")
@click.option("--filter", "filter_", default=None, help="Filter ('#844').")
@click.option("--chip", default=None, help="Chip ('ccd50'); all when not given.")
@click.option("--instrument", default=None, help="Instrument (default: the only one).")
@click.option("--date", default=None, help="Observing night ('2003-03-03').")
@click.option("--plan", is_flag=True, help="Only show what would be made, and why.")
@click.option("--stale", is_flag=True, help="First mark what is derived from invalid products invalid too, "
                                            "so it is made again.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786", help="Run the jobs on this Dask scheduler.")
@click.option("--executor", type=click.Choice(["in-process", "pool", "dask"]), default="in-process",
              show_default=True)
def make_command(class_name: str | None, object_: str | None, filter_: str | None, chip: str | None,
                 instrument: str | None, date: str | None, plan: bool, stale: bool, scheduler: str | None,
                 executor: str) -> None:
    """Make CLASS (and what its chain misses or has stale) for the selection: ``awe make ReducedScienceFrame
    --object 3C273 --chip ccd50 --plan``; ``awe make --stale`` alone re-makes whatever derives from an invalid
    product."""
    import awe
    from awe.dpu.make import make, remake_stale
    from awe.dpu.runner import DPU
    _session()
    if class_name is None:
        if not stale:
            raise click.UsageError("give the CLASS to make (e.g. ReducedScienceFrame), or --stale")
        dpu = DPU(scheduler or (executor if executor != "in-process" else None), progress=True)
        try:
            remake_stale(dpu)
        finally:
            dpu.close()
        return
    try:
        cls = getattr(awe, class_name)
    except AttributeError:
        raise click.BadParameter(f"no class {class_name!r} (e.g. ReducedScienceFrame, AstrometricParameters)") \
            from None
    selection = {k: v for k, v in (("object", object_), ("filter", filter_), ("chip", chip),
                                   ("instrument", instrument), ("date", date)) if v is not None}
    dpu = DPU(scheduler or (executor if executor != "in-process" else None), progress=True)
    try:
        make(cls, plan=plan, stale=stale, dpu=dpu, **selection)
    finally:
        dpu.close()
