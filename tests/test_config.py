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


def test_files_in_workdir_and_home_then_environment(tmp_path, monkeypatch):
    home, work = tmp_path / "h", tmp_path / "w"
    home.mkdir()
    work.mkdir()
    (home / "awe.toml").write_text('[awe]\nuser = "fromhome"\nproject = "HOMEPROJ"\nstorage = "s3://bucket/awe"\n')
    monkeypatch.setenv("AWE_HOME", str(home))
    s = load_settings(workdir=str(work))
    assert (s.user, s.project, s.storage) == ("fromhome", "HOMEPROJ", "s3://bucket/awe")
    assert s.database_url == f"sqlite:///{home / 'awe.sqlite'}"
    (work / "awe.toml").write_text('project = "WORKPROJ"\n')  # top level works too; the working folder wins
    s = load_settings(workdir=str(work))
    assert (s.user, s.project) == ("fromhome", "WORKPROJ")
    monkeypatch.setenv("AWE_PROJECT", "ENVPROJ")
    assert load_settings(workdir=str(work)).project == "ENVPROJ"
    assert load_settings(workdir=str(work), project="KW").project == "KW"


def test_workdir_file_chooses_the_home_relative_to_itself(tmp_path, monkeypatch):
    """What ``awe demo`` relies on: ``awe`` started in its working folder opens the demo's database."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    (tmp_path / "demo-home").mkdir()
    (tmp_path / "demo-home" / "awe.toml").write_text('[awe]\nuser = "observer"\n')
    (tmp_path / "work" / "awe.toml").write_text('[awe]\nhome = "../demo-home"\n')
    s = load_settings(workdir=str(tmp_path / "work"))
    assert s.home == tmp_path / "demo-home"
    assert s.database_url == f"sqlite:///{tmp_path / 'demo-home' / 'awe.sqlite'}"
    assert s.storage == str(tmp_path / "demo-home" / "storage")
    assert s.user == "observer"  # the home's awe.toml is read too
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "elsewhere"))
    assert load_settings(workdir=str(tmp_path / "work")).home == tmp_path / "elsewhere"


def test_bad_values_name_the_setting_and_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "h"))
    (tmp_path / "awe.toml").write_text('[awe]\nuser = 7\n')
    with pytest.raises(ConfigError, match=r"user = 7 \(from .*awe.toml\)"):
        load_settings(workdir=str(tmp_path))
    (tmp_path / "awe.toml").write_text('awe = "not a table"\n')
    with pytest.raises(ConfigError, match=r"awe.toml: \[awe\] must be a table"):
        load_settings(workdir=str(tmp_path))
    (tmp_path / "awe.toml").unlink()
    with pytest.raises(ConfigError, match=r"home = \[1\] \(from a keyword argument\)") as caught:
        load_settings(home=[1])
    assert "database_url" not in str(caught.value)  # only the cause, not what could not be derived from it
    monkeypatch.setenv("AWE_WORKDIR", "")
    monkeypatch.chdir(tmp_path)
    assert load_settings().workdir == tmp_path  # an empty variable means "not set"


def test_settings_are_immutable_validated_copies_without_the_password_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("AWE_HOME", str(tmp_path / "h"))
    s = load_settings(workdir=str(tmp_path), password="s3cret")
    assert "s3cret" not in repr(s) and s.password == "s3cret"
    t = s.with_(user="other", project=None)
    assert (t.user, t.project, t.password, s.user != "other") == ("other", None, "s3cret", True)
    assert isinstance(s.with_(workdir=str(tmp_path)).workdir, type(tmp_path))
    with pytest.raises(ConfigError, match="colour"):
        s.with_(colour="red")
    with pytest.raises(ConfigError, match="user"):
        s.with_(user=3)
    with pytest.raises(ValueError):
        s.user = "changed"
