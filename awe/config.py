"""Settings: database URL, data storage URL, user, password, project.

Read, in order of precedence, from keyword arguments, the environment
(``AWE_DATABASE_URL``, ``AWE_STORAGE``, ``AWE_USER``, ``AWE_PASSWORD``,
``AWE_PROJECT``, ``AWE_HOME``, ``AWE_WORKDIR``, ``AWE_CACHE``), an ``awe.toml``
in the working folder, an ``awe.toml`` in ``AWE_HOME``, and the embedded
defaults: a SQLite database and a local storage folder under ``AWE_HOME``
(``~/.awe``), which need nothing installed.

An ``awe.toml`` holds the same names in lower case, in a section ``[awe]``
(or at the top level)::

    [awe]
    home = "/data/awe-home"          # relative paths are relative to this file
    database_url = "postgresql+psycopg://me@dbhost/awe"

:class:`Settings` is a pydantic-settings model: the environment and the files
are merged by it, and every value is validated once, with the offending
setting and file named in the error.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from pathlib import Path
from typing import Any, Callable

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["Settings", "load_settings", "ConfigError"]

#: The name of the settings file looked for in the working folder and in ``AWE_HOME``.
SETTINGS_FILE = "awe.toml"


class ConfigError(ValueError):
    """A setting is missing or malformed."""


class Settings(BaseSettings):
    """The settings in force for one awe session.

    Build it with :func:`load_settings`; it is immutable (derive a changed
    copy with :meth:`with_`).

    Attributes
    ----------
    home : Path
        Folder of the embedded database and storage (``AWE_HOME``, default ``~/.awe``).
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

    model_config = SettingsConfigDict(env_prefix="AWE_", env_ignore_empty=True, frozen=True, extra="forbid",
                                      validate_default=True)

    home: Path = Field(description="folder of the embedded database and storage")
    database_url: str = Field(description="SQLAlchemy database URL")
    storage: str = Field(description="data-storage folder or fsspec URL")
    cache: str | None = Field(None, description="local cache of a remote storage")
    user: str = Field(description="database user name")
    password: str | None = Field(None, repr=False, description="password of the user")
    project: str | None = Field(None, description="project to start in")
    workdir: Path = Field(description="working folder for products and logs")

    @model_validator(mode="before")
    @classmethod
    def _embedded_defaults(cls, values: Any) -> Any:
        """Fill what no source gave: ``~/.awe``, and the database and storage inside it."""
        if not isinstance(values, dict):
            return values
        values = {k: v for k, v in values.items() if v is not None}
        home = _as_path(values.get("home")) if "home" in values else Path.home() / ".awe"
        if home is None:
            return values  # not a path: the field validation names it
        home = home.expanduser()
        values["home"] = home
        if not values.get("database_url"):
            values["database_url"] = f"sqlite:///{home / 'awe.sqlite'}"
        if not values.get("storage"):
            values["storage"] = str(home / "storage")
        if not values.get("cache"):
            values["cache"] = None
        if not values.get("user"):
            values["user"] = default_user()
        values.setdefault("workdir", os.getcwd())
        return values

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # keywords, then AWE_* variables, then the awe.toml files (no .env, no secrets directory)
        return init_settings, env_settings, _TomlFiles(settings_cls, init_settings, env_settings)

    @property
    def is_embedded(self) -> bool:
        """True for the embedded SQLite database."""
        return self.database_url.startswith("sqlite")

    def with_(self, **changes: Any) -> "Settings":
        """A copy with some settings changed (validated; the environment is not read again)."""
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid settings are {_names()}")
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(_explain(exc, lambda key: "keyword" if key in changes else "settings")) from None


class _TomlFiles(PydanticBaseSettingsSource):
    """``awe.toml`` in the working folder, then in ``AWE_HOME`` (the first one found wins per setting)."""

    def __init__(self, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                 env_settings: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._higher = (init_settings, env_settings)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the files as a whole

    def __call__(self) -> dict[str, Any]:
        given: dict[str, Any] = {}
        for source in reversed(self._higher):
            given.update({k: v for k, v in source().items() if v is not None})
        workdir = _as_path(given.get("workdir")) or Path(os.getcwd())
        values: dict[str, Any] = {}
        in_workdir = workdir / SETTINGS_FILE
        if in_workdir.is_file():
            values = read_settings_file(in_workdir)
        home = (_as_path(given.get("home")) or _as_path(values.get("home")) or Path.home() / ".awe").expanduser()
        in_home = home / SETTINGS_FILE
        if in_home.is_file() and in_home.resolve() != in_workdir.resolve():
            values = {**read_settings_file(in_home), **values}
        return values


def _as_path(value: Any) -> Path | None:
    """A path from a setting's raw value; None when absent or not path-like (validation reports it)."""
    return Path(value) if isinstance(value, (str, os.PathLike)) and str(value) else None


def read_settings_file(path: Path) -> dict[str, Any]:
    """The ``[awe]`` section of an ``awe.toml`` (paths in it made relative to its folder).

    Raises
    ------
    ConfigError
        If the file is not valid TOML or names an unknown setting.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix or remove the file") from None
    section = data.get("awe", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [awe] must be a table of settings; valid settings are {_names()}")
    unknown = set(section) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}; valid settings are {_names()}")
    section = dict(section)
    for key in ("home", "workdir", "storage", "cache"):
        value = section.get(key)
        if isinstance(value, str) and value and "://" not in value:
            section[key] = os.path.normpath(path.parent / Path(value).expanduser())
    return section


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from overrides, environment, ``awe.toml`` and defaults.

    Parameters
    ----------
    **overrides
        Any :class:`Settings` field, taking precedence over everything else
        (``None`` means "not given").

    Raises
    ------
    ConfigError
        For an unknown setting, an unreadable ``awe.toml`` or a value of the wrong type.
    """
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid settings are {_names()}")
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, lambda key: _origin(key, given))) from None


def _names() -> list[str]:
    return sorted(Settings.model_fields)


def _explain(exc: ValidationError, origin: Callable[[str], str]) -> str:
    problems = []
    errors = exc.errors()
    # a bad home leaves the settings derived from it unset: report the cause only
    errors = [e for e in errors if e["type"] != "missing"] or errors
    for error in errors:
        key = ".".join(map(str, error["loc"])) or "settings"
        problems.append(f"{key} = {error.get('input')!r} (from {origin(key)}): {error['msg']}")
    return "bad setting " + "; ".join(problems)


def _origin(key: str, overrides: dict[str, Any]) -> str:
    """Where a setting's value came from, for error messages."""
    if key in overrides:
        return "a keyword argument"
    variable = f"AWE_{key.upper()}"
    if variable in os.environ:
        return f"the environment variable {variable}"
    workdir = _as_path(overrides.get("workdir") or os.environ.get("AWE_WORKDIR")) or Path(os.getcwd())
    home = _as_path(overrides.get("home") or os.environ.get("AWE_HOME"))
    candidates = [workdir / SETTINGS_FILE]
    if home is not None:
        candidates.append(home.expanduser() / SETTINGS_FILE)
    else:
        in_workdir = read_settings_file(candidates[0]) if candidates[0].is_file() else {}
        candidates.append((_as_path(in_workdir.get("home")) or Path.home() / ".awe").expanduser() / SETTINGS_FILE)
    for path in candidates:
        if path.is_file() and key in read_settings_file(path):
            return str(path)
    return "the defaults"


def default_user() -> str:
    """The user name when none is set: the login name (``awe`` where there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "awe"
