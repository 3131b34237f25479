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
        # passwords are checked on TCP (as on a shared server): the tests' users log in with theirs
        self.password = "awe-admin-pw"
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if run_as:
            shutil.chown(pwfile, "postgres", "postgres")
        self._call([_binary("initdb"), "-D", str(data), "-U", "awe", "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                    "--locale=C.UTF-8" if _has_locale() else "--no-locale"])
        self._call([_binary("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
                    f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off", "start"])
        self.admin_url = f"postgresql+psycopg://awe:{self.password}@127.0.0.1:{self.port}/postgres"
        self._admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def _call(self, cmd: list[str]) -> None:
        result = subprocess.run(self._run_as + cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")

    def new_database(self) -> str:
        """The URL (as the superuser ``awe``, with its password) of a fresh, empty database."""
        name = f"awe_test_{next(self._count)}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return f"postgresql+psycopg://awe:{self.password}@127.0.0.1:{self.port}/{name}"

    def new_awe_database(self, settings, user: str = "tester", password: str = "pw-tester") -> str:
        """A fresh database with the awe schema, made by the superuser (its first administrator), and the
        administrator ``user`` (a real, non-superuser role, bound by row-level security) with ``password``."""
        from awe.db.session import Session
        url = self.new_database()
        owner = Session.open(settings.with_(database_url=url, user="awe", password=self.password))
        from awe.db.accounts import add_user
        add_user(owner, user, password, admin=True)
        with owner.engine.begin() as conn:  # test modules declare tables of their own (test_rows)
            conn.execute(sa.text(f'GRANT CREATE ON SCHEMA public TO "{user}"'))
        owner.database.dispose()
        return url

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


def share_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Let every awe user of the database use the tables of ``metadata`` a test made (as their owner)."""
    from awe.db.rls import group_role, quote
    with engine.begin() as conn:
        group = quote(group_role(conn))
        for table in metadata.sorted_tables:
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {quote(table.name)} TO {group}"))
        conn.execute(sa.text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {group}"))
