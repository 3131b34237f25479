"""Jobs belong to their user: two users' jobs are isolated (PostgreSQL: by row-level security, also for raw SQL);
a job runs in a session of its user (PostgreSQL: with the user's password in-process, or on a worker through an
authenticator, no password sent with the job), and sees only what that user sees."""

from __future__ import annotations

import sqlalchemy as sa
import pytest

from awe import context
from awe.db.accounts import add_user
from awe.db.session import Session
from awe.dpu import DPU
from awe.dpu import jobs as dpu_jobs
from awe.dpu.worker import JobSpec, clear_sessions, run_job, settings_for_job
from awe.model import BiasFrame
from awe.tasks.ingest import ingest
from tests.dpu.conftest import BIASES


@pytest.fixture
def biases(db, dpu_night_master):
    report = ingest([dpu_night_master / "raw" / f"WFI.{d}.fits" for d in BIASES])
    assert not report.failed
    add_user(context.session, "alice", "pw-alice")
    yield db
    clear_sessions()


def test_jobs_of_two_users(biases):
    tester = DPU(session=context.session)
    ids = tester.run("Bias", instrument="WFI", chip="ccd50", date="2003-03-03", commit=1)
    [job] = tester.wait_for_jobs()
    assert job.state == "done" and job.user_name == "tester" and job.attempts == 1
    assert len(list(BiasFrame.all())) == 1
    [product] = tester.get_job_result(ids[0])
    assert product["class"] == "BiasFrame" and product["object_id"] == BiasFrame.all()[0].object_id

    settings = context.settings.with_(user="alice", password="pw-alice", project=None)
    alice = Session.open(settings)
    try:
        assert dpu_jobs.jobs_of(alice) == []
        with pytest.raises(LookupError, match="no DPU job"):
            DPU(session=alice).cancel_job(ids[0])
        assert dpu_jobs.mark_cancelled(alice, ids) == []
        assert dpu_jobs.job(context.session, ids[0]).state == "done"
        # alice's own job runs in her private project: tester's private raw frames are not there
        mine = DPU(session=alice)
        mine.run("Bias", instrument="WFI", chip="ccd50", date="2003-03-03", commit=1)
        [failed] = mine.wait_for_jobs(quiet=True)
        assert failed.state == "failed" and "no valid raw biases" in failed.error, failed.error
        assert [j.id for j in dpu_jobs.jobs_of(alice)] == [failed.id]
        assert [j.id for j in dpu_jobs.jobs_of(context.session)] == ids
        if not context.engine.dialect.name == "postgresql":
            return
        # PostgreSQL enforces it: alice's raw SQL sees no job of tester's and changes none
        with alice.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT user_name FROM dpu_jobs")).scalars().all() == ["alice"]
            changed = conn.execute(sa.text("UPDATE dpu_jobs SET state = 'cancelled' WHERE user_name = 'tester'"))
            assert changed.rowcount == 0
            with pytest.raises(sa.exc.DBAPIError):
                conn.execute(sa.text("INSERT INTO dpu_jobs (run_id, user_name, project_id, recipe, task, unit, "
                                     "state, submitted, attempts, max_attempts) SELECT 'x', 'tester', id, 'Bias', "
                                     "'t', '{}', 'queued', now(), 0, 1 FROM projects WHERE name = 'ALL'"))
        with context.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT state FROM dpu_jobs")).scalars().all() == ["done"]
    finally:
        alice.dispose()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # authenticators are PostgreSQL roles
def test_postgres_worker_through_an_authenticator(biases, monkeypatch):
    assert context.engine.dialect.name == "postgresql"
    from awe.db.rls import create_authenticator
    with context.engine.begin() as conn:
        create_authenticator(conn, "awe_dpu_worker", "pw-worker")
    monkeypatch.setenv("AWE_DPU_AUTHENTICATOR", "awe_dpu_worker")
    monkeypatch.setenv("AWE_DPU_AUTHENTICATOR_PASSWORD", "pw-worker")
    monkeypatch.delenv("AWE_PASSWORD", raising=False)
    from awe.tasks import BiasTask
    [unit] = BiasTask(instrument="WFI", chip="ccd50", date="2003-03-03", commit=1).plan()
    [job_id] = dpu_jobs.insert_jobs(context.session, "r", "Bias", [unit], {}, "remote", 1)
    settings, password = settings_for_job(context.settings, send_password=False)
    assert password is None and "password" not in settings
    clear_sessions()
    outcome = run_job(JobSpec(job_id, unit, settings, None))
    assert outcome["state"] == "done", outcome
    job = dpu_jobs.job(context.session, job_id)
    assert job.state == "done" and job.host and "master bias" in job.log
    assert BiasFrame.all()[0].creator == "tester"
    # without credentials a remote worker says what it needs
    clear_sessions()
    monkeypatch.delenv("AWE_DPU_AUTHENTICATOR")
    [job_id] = dpu_jobs.insert_jobs(context.session, "r", "Bias", [unit], {}, "remote", 1)
    with pytest.raises(Exception, match="AWE_PASSWORD"):
        run_job(JobSpec(job_id, unit, settings, None))
