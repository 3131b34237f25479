"""What a DPU worker runs: one job (a planned unit) for the submitting user, in its own session.

:func:`run_job` is the function every executor calls (in this process, in a
process of a local pool, on a Dask worker). It opens (once per worker process)
a session of the job's user: on the embedded database the same SQLite file and
data storage (:meth:`Session.open_as`: whoever can read the file is trusted);
on PostgreSQL either the user's own login or an authenticator acting for the
user (``SET LOCAL ROLE``). The password never travels with a job to a remote
worker: it comes from the worker's environment (``AWE_PASSWORD``, or
``AWE_DPU_AUTHENTICATOR`` / ``AWE_DPU_AUTHENTICATOR_PASSWORD`` for a shared
worker acting for several users); only local executors (in-process, process
pool, a LocalCluster) may hand the submitting session's password over in memory.

The job's log records (only its own, whatever other threads of the worker do)
are collected and stored in the job's row with its state and products.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
import threading
import traceback
from typing import Any

__all__ = ["JobSpec", "run_job", "worker_session", "WorkerError", "clear_sessions"]

log = logging.getLogger(__name__)

_sessions: dict[tuple[str, str, str, str], Any] = {}
_lock = threading.Lock()


class WorkerError(RuntimeError):
    """A worker cannot open the session a job needs."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job: plain values (it pickles; no session, no password unless local)."""

    job_id: int
    unit: Any  # awe.tasks.base.Unit
    settings: dict[str, Any]
    password: str | None = None


def settings_for_job(settings: Any, send_password: bool) -> tuple[dict[str, Any], str | None]:
    """The settings a job carries (never the password) and the password for a local executor."""
    values = settings.model_dump()
    password = values.pop("password", None)
    values = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in values.items()}
    return values, (password if send_password else None)


def clear_sessions() -> None:
    """Close the sessions this worker process opened (tests; a worker exits)."""
    with _lock:
        for session in _sessions.values():
            try:
                session.dispose()
            except Exception:  # pragma: no cover - best effort at shutdown
                pass
        _sessions.clear()


def worker_session(spec: JobSpec) -> Any:
    """The session of the job's user and project in this worker process (opened once, then reused)."""
    from awe.config import Settings
    from awe.db.database import Database
    from awe.db.session import Session, connect_as

    values = dict(spec.settings)
    if os.environ.get("AWE_DPU_WORKDIR"):
        values["workdir"] = os.environ["AWE_DPU_WORKDIR"]
    unit = spec.unit
    key = (values["database_url"], str(values.get("storage")), unit.user, unit.project)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            settings = Settings(**{k: v for k, v in values.items() if v is not None})
            settings = settings.with_(user=unit.user, project=None)
            if settings.is_embedded:
                database = Database(settings.database_url, auto_upgrade=False)
                session = Session.open_as(database, unit.user, settings)
                session._opened.append(database)
            elif spec.password is not None:
                session = Session.open(settings.with_(password=spec.password))
            elif os.environ.get("AWE_DPU_AUTHENTICATOR"):
                database = connect_as(settings.database_url, os.environ["AWE_DPU_AUTHENTICATOR"],
                                      os.environ.get("AWE_DPU_AUTHENTICATOR_PASSWORD"))
                session = Session.open_as(database, unit.user, settings)
                session._opened.append(database)
            elif os.environ.get("AWE_PASSWORD"):
                session = Session.open(settings.with_(password=os.environ["AWE_PASSWORD"]))
            else:
                raise WorkerError(
                    f"this DPU worker ({socket.gethostname()}, pid {os.getpid()}) cannot log in to "
                    f"{settings.database_url.split('@')[-1]} as {unit.user}: start it with AWE_PASSWORD set (the "
                    "user's own worker), or with AWE_DPU_AUTHENTICATOR and AWE_DPU_AUTHENTICATOR_PASSWORD (an "
                    "authenticator made with `awe db authenticator NAME`)")
            _sessions[key] = session
    if session.project.name != unit.project:
        session.set_project(unit.project)
    return session


class _JobLog(logging.Handler):
    """The log records of one job's thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stream = io.StringIO()
        self.thread = threading.get_ident()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.stream.write(self.format(record) + "\n")

    def text(self) -> str:
        return self.stream.getvalue()


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run one job: mark it running, run its unit, record its log, state and products; returns the record.

    A unit that raises is recorded as ``failed`` with its error and log (its
    commit is one transaction: nothing of it stays); the exception does not
    propagate, so its siblings go on. A job cancelled (or already ended) is
    not run. The worker process dying mid-job leaves the job ``running``; the
    executor retries it.
    """
    from awe.dpu import jobs
    from awe.tasks.base import Task, _lower_level, _restore_level

    session = worker_session(spec)
    attempt = jobs.mark_running(session, spec.job_id, socket.gethostname(), _worker_name())
    if attempt is None:
        return {"job_id": spec.job_id, "state": "skipped"}
    handler = _JobLog()
    root = logging.getLogger("awe")
    _lower_level(root)
    root.addHandler(handler)
    state, error, result = "done", None, None
    try:
        log.info("DPU job %d (attempt %d) on %s: %s", spec.job_id, attempt, handler.thread, spec.unit.label)
        products = Task.run_unit(spec.unit, session)
        result = [{"class": type(p).__name__, "object_id": p.object_id, "filename": p.filename,
                   "local_path": str(getattr(p, "_local_path", "") or "") or None} for p in products]
        log.info("DPU job %d done: %d product(s)%s", spec.job_id, len(products),
                 "" if spec.unit.options.get("commit") else " (commit=0: kept in the working folder only)")
    except Exception as exc:
        state = "failed"
        error = f"{type(exc).__name__}: {exc}"
        log.error("DPU job %d failed: %s\n%s", spec.job_id, error, traceback.format_exc())
    finally:
        root.removeHandler(handler)
        _restore_level(root)
    jobs.mark_ended(session, spec.job_id, state, handler.text(), error, result)
    return {"job_id": spec.job_id, "state": state, "error": error, "result": result}
