"""Settings from keywords, environment, awe.toml and the embedded defaults."""

from __future__ import annotations

import pytest

from awe.config import ConfigError, load_settings


def test_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "h"))
    s = load_settings(workdir=str(tmp_path))
    assert s.database_url == f"sqlite:///{tmp_path / 'h' / 'awe.sqlite'}"
    assert s.storage == str(tmp_path / "h" / "storage")
    assert s.is_embedded and s.user


def test_precedence_env_toml_keywords(tmp_path, monkeypatch):
    (tmp_path / "awe.toml").write_text('[awe]\nuser = "fromtoml"\nproject = "KIDS"\n')
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "h"))
    assert load_settings(workdir=str(tmp_path)).user == "fromtoml"
    monkeypatch.setenv("AWE_USER", "fromenv")
    s = load_settings(workdir=str(tmp_path))
    assert s.user == "fromenv" and s.project == "KIDS"
    assert load_settings(workdir=str(tmp_path), user="kw").user == "kw"


def test_bad_settings_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "h"))
    (tmp_path / "awe.toml").write_text('[awe]\ndatabse = "x"\n')
    with pytest.raises(ConfigError, match="databse"):
        load_settings(workdir=str(tmp_path))
    (tmp_path / "awe.toml").write_text("not toml ===")
    with pytest.raises(ConfigError, match="awe.toml"):
        load_settings(workdir=str(tmp_path))
    with pytest.raises(ConfigError, match="colour"):
        load_settings(colour="red")
