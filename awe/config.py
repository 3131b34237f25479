"""Settings: database URL, data storage URL, user, password, project.

Read, in order of precedence, from keyword arguments, the environment
(``AWE_DATABASE_URL``, ``AWE_STORAGE``, ``AWE_USER``, ``AWE_PASSWORD``,
``AWE_PROJECT``, ``AWE_HOME``, ``AWE_WORKDIR``, ``AWE_CACHE``), an ``awe.toml``
in the working folder or in ``AWE_HOME``, and the embedded defaults: a SQLite
database and a local storage folder under ``AWE_HOME`` (``~/.awe``), which need
nothing installed.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["Settings", "load_settings", "ConfigError"]


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """The settings in force for one awe session.

    Attributes
    ----------
    home : Path
        Folder of the embedded database and storage (``AWE_HOME``).
    database_url : str
        SQLAlchemy URL: ``sqlite:///...`` (default) or ``postgresql+psycopg://...``.
    storage : str
        Data-storage URL: a local folder (default) or any fsspec URL (``s3://...``).
    cache : str or None
        Local cache folder for files fetched from a remote storage.
    user : str
        Database user name.
    password : str or None
        Password of ``user`` (``AWE_PASSWORD``); users without a password need none.
    project : str or None
        Project (context) to start in; default: the user's private project.
    workdir : Path
        Working folder: where tasks write their products and logs.
    """

    home: Path
    database_url: str
    storage: str
    cache: str | None
    user: str
    password: str | None
    project: str | None
    workdir: Path

    @property
    def is_embedded(self) -> bool:
        """True for the embedded SQLite database."""
        return self.database_url.startswith("sqlite")

    def with_(self, **changes) -> "Settings":
        """A copy with some settings changed."""
        return replace(self, **changes)


_KEYS = {f.name for f in fields(Settings)}


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix or remove the file") from None
    section = data.get("awe", data)
    unknown = set(section) - _KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {sorted(unknown)}; valid settings are {sorted(_KEYS)}"
        )
    return section


def load_settings(**overrides) -> Settings:
    """Build the settings from overrides, environment, ``awe.toml`` and defaults.

    Parameters
    ----------
    **overrides
        Any :class:`Settings` field, taking precedence over everything else.
    """
    unknown = set(overrides) - _KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid settings are {sorted(_KEYS)}")
    env = {k: os.environ[f"AWE_{k.upper()}"] for k in _KEYS if f"AWE_{k.upper()}" in os.environ}
    workdir = Path(overrides.get("workdir") or env.get("workdir") or os.getcwd())
    home = Path(overrides.get("home") or env.get("home") or Path.home() / ".awe").expanduser()
    values: dict = {}
    for candidate in (home / "awe.toml", workdir / "awe.toml"):
        if candidate.is_file():
            values.update(_read_toml(candidate))
    values.update(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    home = Path(values.get("home", home)).expanduser()
    return Settings(
        home=home,
        database_url=values.get("database_url") or f"sqlite:///{home / 'awe.sqlite'}",
        storage=str(values.get("storage") or home / "storage"),
        cache=values.get("cache") or None,
        user=values.get("user") or _default_user(),
        password=values.get("password"),
        project=values.get("project"),
        workdir=Path(values.get("workdir", workdir)),
    )


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "awe"
