"""Algorithm versions: the record matches the code, a bump re-makes products, a recorded refactor does not."""

from __future__ import annotations

from awe.tasks import BiasTask
from awe.tasks import versions
from awe.tasks.registry import tasks
from tests import _factory


def test_recorded_versions_and_hashes_match_the_code():
    found = versions.problems()
    assert not found, "\n".join(found)
    assert set(versions.recorded()) == {t.__name__ for t in tasks()} | {"FollowSatellitesTask"}


def test_a_changed_module_without_a_bump_fails_with_what_to_do(tmp_path, monkeypatch):
    record = tmp_path / "algorithm_versions.toml"
    versions.record(record)
    assert versions.problems(record) == []
    # a module of BiasTask's algorithm changes (here: the hash of what it declares)
    monkeypatch.setattr(BiasTask, "algorithm_modules", BiasTask.algorithm_modules + ("awe.image.pixels",))
    (problem,) = versions.problems(record)
    assert "bump `BiasTask.version` if the output changes" in problem
    assert '"no output change" by running `python -m awe.tasks.versions --record`' in problem
    # a refactor: recorded, nothing else changes
    versions.record(record)
    assert versions.problems(record) == []
    assert versions.recorded(record)["BiasTask"]["version"] == BiasTask.version
    # a bump must be recorded too
    old, new = BiasTask.version, str(int(BiasTask.version) + 1)
    monkeypatch.setattr(BiasTask, "version", new)
    (problem,) = versions.problems(record)
    assert f"BiasTask.version is {new} (recorded {old})" in problem or f"BiasTask.version is {new} but {old}" in problem


def test_provenance_names_the_task_version(sqlite_db, monkeypatch):
    raws = _factory.biases(3)
    task = BiasTask(instrument="WFI", chip="ccd50")

    def provenance():
        return task.new_product(BiasTask.products[0], {"raw_bias_frames": raws}, template=raws[0]).provenance

    before = provenance()
    assert BiasTask.algorithm() == f"BiasTask:{BiasTask.version}"
    # a refactor with its hash recorded: the same provenance, the product is found again
    monkeypatch.setattr(BiasTask, "algorithm_modules", ("awe.tasks.calibration",))
    assert provenance() == before
    # a bumped version: another provenance, the product is made again
    old = BiasTask.version
    monkeypatch.setattr(BiasTask, "version", str(int(old) + 1))
    assert provenance() != before
    monkeypatch.setattr(BiasTask, "version", old)
    assert provenance() == before
