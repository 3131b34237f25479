"""Removing what no database object refers to."""

from __future__ import annotations

import logging
import time
from typing import Callable, Collection

from awe.storage._errors import MissingFileError
from awe.storage._storage import DataStorage

__all__ = ["vacuum", "MIN_SAFE_AGE_S"]

log = logging.getLogger(__name__)

#: The youngest file vacuum removes while other sessions may work: a commit stores its files first and writes its
#: rows after, so a younger unreferenced file may belong to an ingest or commit still in progress.
MIN_SAFE_AGE_S = 600.0


def vacuum(
    storage: DataStorage,
    known: Callable[[str], bool] | Collection[str],
    dry_run: bool = False,
    min_age_s: float = 3600,
    exclusive: bool = False,
) -> list[str]:
    """Remove orphan files and stale temporary files from a storage.

    A commit stores the files first and then writes the database rows; if it
    fails in between, the files stay behind unreferenced, and a crash during an
    upload leaves a temporary file. Both are removed here once older than
    ``min_age_s``: a younger orphan may belong to a commit still in progress,
    so ages below :data:`MIN_SAFE_AGE_S` are refused unless ``exclusive``.

    Parameters
    ----------
    storage : DataStorage
        The storage to clean.
    known : callable or collection of str
        The file names the database refers to (a set, or a predicate).
    dry_run : bool
        Only report what would be removed.
    min_age_s : float
        Minimum age (seconds since last modification) of what is removed; at
        least :data:`MIN_SAFE_AGE_S` unless ``exclusive``.
    exclusive : bool
        The caller guarantees that no ingest or commit uses the storage meanwhile
        (a maintenance window, a test): any ``min_age_s`` is accepted.

    Returns
    -------
    list of str
        The removed (or, with ``dry_run``, removable) orphan file names and
        temporary keys (``ab/cd/.awe-tmp-...``).

    Raises
    ------
    ValueError
        If ``min_age_s`` is below :data:`MIN_SAFE_AGE_S` and not ``exclusive``.
    """
    if min_age_s < MIN_SAFE_AGE_S and not exclusive:
        raise ValueError(
            f"vacuum min_age_s={min_age_s:g} s is refused: files younger than {MIN_SAFE_AGE_S:g} s may belong to "
            "an ingest or commit in progress (its files are stored before its rows are written), and removing "
            f"them would lose them; use at least {MIN_SAFE_AGE_S:g} s, or stop every ingest and task first")
    if isinstance(known, (str, bytes)):
        raise TypeError("known must be a collection of file names or a predicate, not one string")
    is_known = known if callable(known) else frozenset(known).__contains__
    now = time.time()
    removed: list[str] = []
    for info, mtime in list(storage._entries()):
        if min_age_s > 0 and (mtime is None or now - mtime < min_age_s):
            continue
        if info.filename is None:  # a temporary file
            if not dry_run:
                storage._remove_temp(info.key)
            removed.append(info.key)
        elif not is_known(info.filename):
            if not dry_run:
                try:
                    storage.delete(info.filename)
                except MissingFileError:  # removed meanwhile by someone else
                    continue
            removed.append(info.filename)
        else:
            continue
        log.info("%s %s from %s", "would remove" if dry_run else "removed", removed[-1], storage.url)
    return removed
