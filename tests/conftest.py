"""Shared fixtures: fresh databases (SQLite and a throw-away PostgreSQL), the shared reduced and coadded nights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from awe.config import load_settings
from awe import context


@pytest.fixture(scope="session")
def astro_night_master(tmp_path_factory) -> Path:
    """The reduced night shared by every module that builds on it (tests/astro/conftest.py), built once."""
    from tests.astro.conftest import astro_night_root
    return astro_night_root(tmp_path_factory)


@pytest.fixture(scope="session")
def coadd_night_master(astro_night_master, tmp_path_factory) -> Path:
    """The regridded and coadded night on it (tests/_coadd_night.py), built once."""
    from tests import _coadd_night
    from tests.astro.conftest import CHIPS, SCIENCE, STANDARDS, _schema_key, chip_file
    return _coadd_night.coadd_night_root(astro_night_master, tmp_path_factory, _schema_key(), CHIPS, STANDARDS,
                                         SCIENCE, chip_file)


@pytest.fixture(scope="session")
def postgres():
    from tests._postgres import PostgresServer
    server = PostgresServer()
    yield server
    server.stop()


#: the password of the tests' user ``tester`` on PostgreSQL
TESTER_PASSWORD = "pw-tester"


def _connect(tmp_path: Path, url: str | None, user: str = "tester", postgres=None, **extra):
    settings = load_settings(home=str(tmp_path / "home"), workdir=str(tmp_path / "work"), user=user,
                             database_url=url, storage=str(tmp_path / "storage"), **extra)
    (tmp_path / "work").mkdir(exist_ok=True)
    if postgres is not None:
        # the superuser makes the schema and the administrator `tester`, a plain role bound by row-level security
        url = postgres.new_awe_database(settings, user, TESTER_PASSWORD)
        settings = settings.with_(database_url=url, password=TESTER_PASSWORD)
    context.connect(settings)
    return context


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path, monkeypatch):
    """A connected context on a fresh, empty database: run once on SQLite and once on PostgreSQL.

    The user is ``tester``, an administrator: on SQLite the database's first user, on PostgreSQL a
    non-superuser role (password :data:`TESTER_PASSWORD`) made by the superuser, so row-level security applies.
    """
    monkeypatch.chdir(tmp_path)
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    yield _connect(tmp_path, None, postgres=server)
    context.close()


@pytest.fixture
def sqlite_db(tmp_path, monkeypatch):
    """A connected context on a fresh SQLite database."""
    monkeypatch.chdir(tmp_path)
    yield _connect(tmp_path, None)
    context.close()


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """Tests never read the developer's ~/.awe or AWE_* variables."""
    for key in list(os.environ):
        if key.startswith("AWE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
