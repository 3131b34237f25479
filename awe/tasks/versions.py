"""Algorithm versions: each task's ``version`` beside a hash of the modules its algorithm lives in.

``algorithm_versions.toml`` (beside this module) records, for every task, its
``version`` and the sha256 of the source of its ``algorithm_modules``.
``tests/test_algorithm_versions.py`` recomputes the hashes: a module that
changed while the task's version and the recorded hash did not fails it.
Then either the step's output changes (bump ``<Task>.version``: the
provenance changes and products are made again) or it does not (a refactor:
record that with ``python -m awe.tasks.versions --record``, which rewrites the
hashes keeping the versions, so no night is re-made for it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from awe.tasks.base import Task

__all__ = ["RECORD", "module_hash", "current", "recorded", "problems", "record"]

#: the recorded versions and hashes
RECORD = Path(__file__).with_name("algorithm_versions.toml")


def module_hash(modules: Sequence[str]) -> str:
    """sha256 over the source of ``modules`` (sorted, each with its name)."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        source = inspect.getsource(importlib.import_module(name))
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    return digest.hexdigest()


def _tasks() -> "list[type[Task]]":
    from awe.tasks import registry
    every = registry.tasks()
    every += [registry.task_class(name) for name in ("FollowSatellitesTask",)]
    return list(dict.fromkeys(every))


def current() -> dict[str, dict[str, str]]:
    """For every task: its version and the hash of its algorithm modules as they are now."""
    return {t.__name__: {"version": t.version, "sha256": module_hash(t.algorithm_modules)} for t in _tasks()}


def recorded(path: Path = RECORD) -> dict[str, dict[str, str]]:
    """The recorded versions and hashes (empty when there is no record)."""
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return {name: {k: str(v) for k, v in entry.items()} for name, entry in tomllib.load(fh).items()}


def problems(path: Path = RECORD) -> list[str]:
    """What is out of date in the record, each with what to do; empty when all is recorded."""
    rerecord = "python -m awe.tasks.versions --record"
    found = []
    old = recorded(path)
    for name, now in current().items():
        was = old.get(name)
        if was is None:
            found.append(f"{name} is not in {path.name}: record it with `{rerecord}`")
        elif was.get("sha256") != now["sha256"]:
            if was.get("version") == now["version"]:
                found.append(f"the algorithm modules of {name} changed ({name}.algorithm_modules) but its version "
                             f"{now['version']} did not: bump `{name}.version` if the output changes, else record "
                             f"\"no output change\" by running `{rerecord}`")
            else:
                found.append(f"{name}.version is {now['version']} (recorded {was.get('version')}): record the new "
                             f"version and hash with `{rerecord}`")
        elif was.get("version") != now["version"]:
            found.append(f"{name}.version is {now['version']} but {was.get('version')} is recorded with the same "
                         f"modules: record it with `{rerecord}`")
    return found


def record(path: Path = RECORD) -> dict[str, dict[str, str]]:
    """Rewrite the record: every task's current version and hash."""
    entries = current()
    lines = ["# Algorithm version of each task and the sha256 of the modules its algorithm lives in.",
             "# Written by `python -m awe.tasks.versions --record`; checked by tests/test_algorithm_versions.py.", ""]
    for name in sorted(entries):
        lines += [f"[{name}]", f'version = "{entries[name]["version"]}"', f'sha256 = "{entries[name]["sha256"]}"', ""]
    path.write_text("\n".join(lines))
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m awe.tasks.versions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="rewrite the hashes (and versions) in the record")
    args = parser.parse_args(argv)
    if args.record:
        record()
        print(f"recorded {RECORD}")
        return 0
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
