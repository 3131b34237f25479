"""``awe storage check [--repair]``: every file the database refers to, verified against the data storage.

::

    report = check_storage(session, repair=True, sources=["raw/"])
    print(report)        # one line per file that is missing or corrupt, and what was done

Each object's file must exist and have the SHA-256 recorded in the database
(which also checks its size). With ``repair``:

- a raw frame is re-made from its original raw file when one of ``sources``
  holds it (``raw_file``, plain or compressed): a corrupt stored copy is removed
  first, then ingest stores the chip again and checks it against the recorded
  checksum;
- any other object (or a raw frame without its source) gets the quality flag
  ``FILE_LOST`` (so ``select()`` and the tasks skip it and ``Task.existing()``
  re-makes it), through the same rights checks as every change; the report
  names what to re-make and what was made from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from awe.db.schema import DBObject
from awe.model.frames import QualityFlags

__all__ = ["check_storage", "StorageCheck", "FileProblem"]

log = logging.getLogger(__name__)


@dataclass
class FileProblem:
    """One file that is not as the database says, and what was done about it.

    Attributes
    ----------
    filename : str
        The stored file's name.
    object_id : int
        The object referring to it.
    kind : str
        Its class name.
    problem : str
        ``'missing'`` or ``'corrupt'``.
    action : str
        ``'restored'``, ``'flagged'`` (quality flag ``FILE_LOST``), ``'reported'`` (no repair asked) or
        ``'failed'``; ``detail`` says why and what to do.
    """

    filename: str
    object_id: int
    kind: str
    problem: str
    action: str = "reported"
    detail: str = ""

    def __str__(self) -> str:
        label = {"restored": "restored", "flagged": "FLAGGED ", "reported": "MISSING " if self.problem == "missing"
                 else "CORRUPT ", "failed": "FAILED  "}[self.action]
        detail = f": {self.detail}" if self.detail else ""
        return f"{label} {self.filename} ({self.kind} {self.object_id}, {self.problem}){detail}"


@dataclass
class StorageCheck:
    """The outcome of :func:`check_storage`."""

    checked: int = 0
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def unresolved(self) -> list[FileProblem]:
        """Problems not repaired (flagged ones are marked, not repaired)."""
        return [p for p in self.problems if p.action != "restored"]

    def summary(self) -> str:
        count = {a: sum(p.action == a for p in self.problems) for a in ("restored", "flagged", "failed")}
        missing = sum(p.problem == "missing" for p in self.problems)
        return (f"{self.checked} file(s) checked: {self.checked - len(self.problems)} ok, {missing} missing, "
                f"{len(self.problems) - missing} corrupt; {count['restored']} restored, {count['flagged']} flagged "
                f"FILE_LOST, {count['failed']} could not be repaired")

    def __str__(self) -> str:
        return "\n".join([str(p) for p in self.problems] + [self.summary()])


def _rows(session: Any) -> list[tuple[int, str, str, str | None, str | None]]:
    """(object_id, class name, filename, checksum, raw_file or None) of every object with a file the session reads."""
    from awe.db.persistent import metadata
    table = DBObject.__table__
    raw = metadata.tables.get("raw_frames")
    columns = [table.c.object_id, table.c.class_name, table.c.filename, table.c.checksum]
    stmt = sa.select(*columns, raw.c.raw_file if raw is not None else sa.null())
    if raw is not None:
        stmt = stmt.select_from(table.outerjoin(raw, raw.c.object_id == table.c.object_id))
    stmt = stmt.where(table.c.filename.is_not(None), table.c.checksum.is_not(None)).order_by(table.c.object_id)
    with session.engine.connect() as conn:
        return [(int(r[0]), str(r[1]), str(r[2]), r[3], r[4]) for r in conn.execute(stmt)]


def _source(raw_file: str, sources: Iterable[Path]) -> Path | None:
    """The original raw file in one of the source folders (plain or compressed)."""
    from awe.tasks.ingest import RAW_SUFFIXES
    for folder in sources:
        for candidate in [raw_file] + [raw_file + ext for ext in (".gz", ".Z", ".bz2")]:
            path = Path(folder) / candidate
            if path.is_file() and path.name.endswith(RAW_SUFFIXES):
                return path
    return None


def _load(session: Any, object_id: int) -> Any:
    from awe.db.query import fetch_rows
    with session.engine.connect() as conn:
        rows = fetch_rows(conn, [object_id])
    return DBObject._from_row(rows[0], session) if rows else None


def _flag(session: Any, problem: FileProblem) -> None:
    """Mark the object FILE_LOST and say what to re-make."""
    obj = _load(session, problem.object_id)
    if obj is None:
        problem.action, problem.detail = "failed", "the object is gone meanwhile"
        return
    try:
        derived = obj.derived()
    except Exception:  # lineage not readable: say nothing about it
        derived = []
    remake = (f"re-make it (run its task again: Task.existing() treats it as missing){'' if not derived else '; '}"
              + (f"{len(derived)} product(s) were made from it: {', '.join(d.filename for d in derived[:5])}"
                 f"{' ...' if len(derived) > 5 else ''}" if derived else ""))
    try:
        obj.update(quality_flags=(obj.quality_flags or 0) | QualityFlags.FILE_LOST)
    except PermissionError as exc:
        problem.action, problem.detail = "failed", f"{exc}; {remake}"
        return
    problem.action, problem.detail = "flagged", f"marked with quality flag FILE_LOST; {remake}"


def check_storage(session: Any = None, repair: bool = False, sources: Iterable[str | Path] = (),
                  checksums: bool = True) -> StorageCheck:
    """Verify every file the database refers to (that the session may read) against the data storage.

    Parameters
    ----------
    session : Session, optional
        Who checks (default: the current session); on PostgreSQL row-level security limits what it sees.
    repair : bool
        Re-make missing or corrupt raw chips from ``sources`` and mark what cannot be restored ``FILE_LOST``.
    sources : iterable of folders
        Where the original raw files are (for ``repair``).
    checksums : bool
        Read every file and compare its SHA-256 (default); False checks existence only.

    Returns
    -------
    StorageCheck
        The files checked and every problem with what was done.
    """
    from awe.db.session import current_session
    session = session or current_session()
    storage = session.storage
    folders = [Path(s) for s in sources]
    report = StorageCheck()
    raw_files: dict[str, list[FileProblem]] = {}
    for object_id, kind, filename, checksum, raw_file in _rows(session):
        report.checked += 1
        status = storage.verify(filename, checksum if checksums else None)
        if status == "ok":
            continue
        problem = FileProblem(filename, object_id, kind, status)
        log.warning("storage check: %s is %s in %s", filename, status, storage.url)
        report.problems.append(problem)
        if repair and raw_file is not None:
            raw_files.setdefault(raw_file, []).append(problem)
        elif repair:
            _flag(session, problem)
    for raw_file, problems in raw_files.items():
        _restore_raw(session, raw_file, problems, folders)
    log.info("storage check: %s", report.summary())
    return report


def _restore_raw(session: Any, raw_file: str, problems: list[FileProblem], folders: list[Path]) -> None:
    """Re-ingest the raw file the chips came from; flag the chips that stay missing."""
    from awe.tasks.ingest import ingest
    source = _source(raw_file, folders)
    if source is None:
        where = ", ".join(map(str, folders)) or "no --source folder given"
        for p in problems:
            _flag(session, p)
            p.detail = f"original {raw_file} not found ({where}); " + p.detail
        return
    storage = session.storage
    for p in problems:
        if p.problem == "corrupt":  # stored files never change: remove the bad copy, ingest stores it again
            storage.delete(p.filename)
    with session.activate():
        result = ingest([source]).results[0]
    for p in problems:
        if storage.verify(p.filename, _checksum(session, p.object_id)) == "ok":
            p.action, p.detail = "restored", f"from {source}"
        else:
            _flag(session, p)
            p.detail = f"re-ingest of {source} did not restore it ({result.message}); " + p.detail


def _checksum(session: Any, object_id: int) -> str | None:
    table = DBObject.__table__
    with session.engine.connect() as conn:
        return conn.execute(sa.select(table.c.checksum).where(table.c.object_id == object_id)).scalar()
