"""DPU jobs as database records: who, recipe, parameters, unit, state, times, host, worker, attempts, log, result.

One row of ``dpu_jobs`` per planned :class:`~awe.tasks.base.Unit`. The submitting
session inserts it (``queued``); the worker that runs it marks it ``running``
(counting the attempt, naming its host and worker), then ``done`` (with the
products it made) or ``failed`` (with the error); ``cancelled`` by the user.
Every statement is one short write transaction (SQLite: ``BEGIN IMMEDIATE``
with the busy timeout, so many workers update one embedded database without
"database is locked").

A job is seen only by the user who submitted it: every function here filters
on ``user_name`` and, on PostgreSQL, row-level security enforces the same
(:mod:`awe.db.rls`: ``dpu_jobs`` is one of its per-user tables).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa

from awe.db.engine import write_transaction
from awe.db.persistent import JSON, DateTime, Integer, String, metadata, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from awe.db.session import Session
    from awe.tasks.base import Unit

__all__ = ["dpu_jobs", "STATES", "ENDED", "Job", "insert_jobs", "jobs_of", "job", "mark_running", "mark_ended",
           "mark_cancelled", "mark_lost", "unit_of"]

#: the states of a job
STATES = ("queued", "running", "done", "failed", "cancelled")
#: the states a job does not leave
ENDED = ("done", "failed", "cancelled")

dpu_jobs = sa.Table(
    "dpu_jobs", metadata,
    sa.Column("id", Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", String(40), nullable=False, index=True, comment="the dpu.run call the job belongs to"),
    sa.Column("user_name", String(64), nullable=False, index=True, comment="who submitted the job"),
    sa.Column("project_id", Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False,
              index=True, comment="the project the job runs in"),
    sa.Column("recipe", String(64), nullable=False, comment="the recipe ('Bias', 'Reduce', ...)"),
    sa.Column("task", String(255), nullable=False, comment="qualified name of the task class"),
    sa.Column("label", String(255), nullable=True, comment="what the unit is about"),
    sa.Column("parameters", JSON, nullable=True, comment="the keywords of the dpu.run call (pars included)"),
    sa.Column("unit", JSON, nullable=False, comment="the planned unit: selection, pars, options"),
    sa.Column("state", String(16), nullable=False, index=True, comment="queued, running, done, failed, cancelled"),
    sa.Column("executor", String(64), nullable=True, comment="in-process, process pool, dask scheduler address"),
    sa.Column("submitted", DateTime, nullable=False, default=utcnow, comment="when it was submitted (UTC)"),
    sa.Column("started", DateTime, nullable=True, comment="when its last attempt started (UTC)"),
    sa.Column("ended", DateTime, nullable=True, comment="when it ended (UTC)"),
    sa.Column("host", String(255), nullable=True, comment="host of the worker of the last attempt"),
    sa.Column("worker", String(255), nullable=True, comment="the worker of the last attempt (pid, dask address)"),
    sa.Column("attempts", Integer, nullable=False, default=0, server_default="0", comment="attempts started"),
    sa.Column("max_attempts", Integer, nullable=False, default=3, server_default="3",
              comment="attempts allowed when a worker dies mid-job"),
    sa.Column("log", sa.Text, nullable=True, comment="the job's log records"),
    sa.Column("error", sa.Text, nullable=True, comment="why it failed"),
    sa.Column("result", JSON, nullable=True, comment="the products: [{class, object_id, filename}, ...]"),
    sqlite_autoincrement=True,
)


@dataclasses.dataclass
class Job:
    """One job as read from the database."""

    id: int
    run_id: str
    user_name: str
    recipe: str
    task: str
    label: str | None
    state: str
    submitted: _dt.datetime | None
    started: _dt.datetime | None
    ended: _dt.datetime | None
    host: str | None
    worker: str | None
    attempts: int
    max_attempts: int
    log: str | None
    error: str | None
    result: list[dict[str, Any]] | None
    parameters: dict[str, Any] | None
    unit: dict[str, Any]
    executor: str | None

    @property
    def ended_ok(self) -> bool:
        return self.state == "done"

    def __str__(self) -> str:
        return f"job {self.id} {self.recipe} {self.label or ''} [{self.state}]"


def _job(row: Any) -> Job:
    names = [f.name for f in dataclasses.fields(Job)]
    return Job(**{n: getattr(row, n) for n in names})


def unit_of(job_row: Job) -> "Unit":
    """The planned unit of a job."""
    from awe.tasks.base import Unit
    return Unit(**job_row.unit)


def insert_jobs(session: "Session", run_id: str, recipe: str, units: Iterable["Unit"], parameters: dict[str, Any],
                executor: str, max_attempts: int) -> list[int]:
    """Insert one ``queued`` job per unit for ``session``'s user and project; returns their ids."""
    ids = []
    with write_transaction(session.engine) as conn:
        for unit in units:
            result = conn.execute(dpu_jobs.insert().values(
                run_id=run_id, user_name=session.user, project_id=session.project.id, recipe=recipe,
                task=unit.task, label=unit.label[:255], parameters=parameters, unit=dataclasses.asdict(unit),
                state="queued", executor=executor[:64], submitted=utcnow(), attempts=0, max_attempts=max_attempts))
            key = result.inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
    return ids


def jobs_of(session: "Session", ids: Iterable[int] | None = None, run_id: str | None = None,
            states: Iterable[str] | None = None) -> list[Job]:
    """The user's jobs (all, these ids, one run's, in these states), oldest first."""
    stmt = sa.select(dpu_jobs).where(dpu_jobs.c.user_name == session.user).order_by(dpu_jobs.c.id)
    if ids is not None:
        stmt = stmt.where(dpu_jobs.c.id.in_(list(ids)))
    if run_id is not None:
        stmt = stmt.where(dpu_jobs.c.run_id == run_id)
    if states is not None:
        stmt = stmt.where(dpu_jobs.c.state.in_(list(states)))
    with session.engine.connect() as conn:
        return [_job(row) for row in conn.execute(stmt)]


def job(session: "Session", job_id: int) -> Job:
    """One of the user's jobs; ``LookupError`` naming the ids there are when it is not one."""
    found = jobs_of(session, [job_id])
    if not found:
        known = [j.id for j in jobs_of(session)][-20:]
        raise LookupError(f"no DPU job {job_id} of user {session.user}; the last job ids are {known} "
                          "(dpu.get_jobids())")
    return found[0]


def mark_running(session: "Session", job_id: int, host: str, worker: str) -> int | None:
    """Start an attempt of a queued (or a retried running) job; its attempt number, or None when the job is
    no longer to run (cancelled, or ended by an earlier attempt)."""
    with write_transaction(session.engine) as conn:
        row = conn.execute(sa.select(dpu_jobs.c.state, dpu_jobs.c.attempts).where(
            dpu_jobs.c.id == job_id, dpu_jobs.c.user_name == session.user)).first()
        if row is None or row.state in ENDED:
            return None
        attempts = int(row.attempts) + 1
        conn.execute(dpu_jobs.update().where(dpu_jobs.c.id == job_id).values(
            state="running", started=utcnow(), host=host[:255], worker=worker[:255], attempts=attempts))
    return attempts


def mark_ended(session: "Session", job_id: int, state: str, log: str, error: str | None = None,
               result: list[dict[str, Any]] | None = None) -> None:
    """Record the end of a job (``done`` or ``failed``), unless it was cancelled meanwhile."""
    assert state in ("done", "failed"), state
    with write_transaction(session.engine) as conn:
        conn.execute(dpu_jobs.update().where(
            dpu_jobs.c.id == job_id, dpu_jobs.c.user_name == session.user, dpu_jobs.c.state != "cancelled",
        ).values(state=state, ended=utcnow(), log=log, error=error, result=result))


def mark_cancelled(session: "Session", job_ids: Iterable[int]) -> list[int]:
    """Cancel the user's jobs that have not ended; the ids cancelled."""
    ids = list(job_ids)
    with write_transaction(session.engine) as conn:
        todo = list(conn.execute(sa.select(dpu_jobs.c.id).where(
            dpu_jobs.c.id.in_(ids), dpu_jobs.c.user_name == session.user,
            dpu_jobs.c.state.notin_(ENDED))).scalars())
        if todo:
            conn.execute(dpu_jobs.update().where(dpu_jobs.c.id.in_(todo)).values(
                state="cancelled", ended=utcnow(), error="cancelled by the user"))
    return [int(i) for i in todo]


def mark_lost(session: "Session", job_id: int, error: str) -> None:
    """A job whose worker or scheduler is gone (and has no attempt left): failed with ``error``."""
    with write_transaction(session.engine) as conn:
        conn.execute(dpu_jobs.update().where(
            dpu_jobs.c.id == job_id, dpu_jobs.c.user_name == session.user, dpu_jobs.c.state.notin_(ENDED),
        ).values(state="failed", ended=utcnow(), error=error))


def requeue(session: "Session", job_id: int) -> None:
    """Put a failed job back in the queue (``rerun_failed``)."""
    with write_transaction(session.engine) as conn:
        conn.execute(dpu_jobs.update().where(
            dpu_jobs.c.id == job_id, dpu_jobs.c.user_name == session.user).values(
            state="queued", started=None, ended=None, error=None, result=None, log=None, attempts=0))
