"""A throw-away PostgreSQL server for the tests, started from the installed binaries.

The test command (`.ci/run`) installs PostgreSQL when it is missing; here we
find ``initdb``/``pg_ctl``, make a cluster in a temporary folder, start it on a
free loopback port and stop it at the end. Each test gets a fresh database.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"PostgreSQL's {name} is not installed: run the test command from README.md "
        "(bash .ci/run installs it), or `apt-get install postgresql`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One temporary cluster; :meth:`new_database` gives a URL of a fresh database."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="awe-pg-"))
        self.port = _free_port()
        self._count = itertools.count()
        run_as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres") if _has_user("postgres") else None
            run_as = ["runuser", "-u", "postgres", "--"] if _has_user("postgres") else []
        self._run_as = run_as
        data = self.dir / "data"
        self._call([_binary("initdb"), "-D", str(data), "-U", "awe", "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8" if _has_locale() else "--no-locale"])
        self._call([_binary("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
                    f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off", "start"])
        self.admin_url = f"postgresql+psycopg://awe@127.0.0.1:{self.port}/postgres"
        self._admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def _call(self, cmd: list[str]) -> None:
        result = subprocess.run(self._run_as + cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")

    def new_database(self) -> str:
        name = f"awe_test_{next(self._count)}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return f"postgresql+psycopg://awe@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._admin.dispose()
        subprocess.run(self._run_as + [_binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _has_locale() -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    return "c.utf8" in out or "c.utf-8" in out
