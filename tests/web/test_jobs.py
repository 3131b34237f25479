"""The job monitor (spec section 7's DPU page) on the web team, SQLite and PostgreSQL (row-level security on
``dpu_jobs``): each user sees his own jobs with recipe, state, times, host and log, updating by HTMX polling;
cancels his own queued or running job through a CSRF-protected form; nobody else's job is reachable."""

from __future__ import annotations

import re

import pytest

from awe.tasks.base import Unit
from tests.web.conftest import csrf_of

pytestmark = pytest.mark.postgres


def _unit(session, label: str) -> Unit:
    return Unit(task="awe.tasks.calibration.BiasTask", selection={"instrument": "WFI", "chip": "ccd50"}, pars={},
                options={"commit": 0}, user=session.user, project=session.project.name, label=label)


@pytest.fixture
def jobs(web):
    """alice: a Bias job done (with its log), a Reduce job running on host 'node7', one queued; bob: one queued."""
    from awe.dpu import jobs as j
    alice, bob = web.team.alice, web.team.bob
    done, running, queued = j.insert_jobs(alice, "run-a", "Bias", [_unit(alice, "alice bias ccd50"),
                                                                  _unit(alice, "alice reduce"),
                                                                  _unit(alice, "alice queued")],
                                          {"chip": "ccd50"}, "in-process", 3)
    with alice.engine.begin() as conn:  # the second job is of another recipe
        conn.execute(j.dpu_jobs.update().where(j.dpu_jobs.c.id == running).values(recipe="Reduce"))
    j.mark_running(alice, done, "node1", "pid 11")
    j.mark_ended(alice, done, "done", "INFO bias: 5 raw biases combined\nINFO done", result=[])
    j.mark_running(alice, running, "node7", "pid 77")
    (bobs,) = j.insert_jobs(bob, "run-b", "Bias", [_unit(bob, "bob secret job")], {}, "in-process", 3)
    return {"done": done, "running": running, "queued": queued, "bob": bobs}


def test_own_jobs_with_states_times_hosts_logs_and_live_updates(web, jobs):
    alice = web.client("alice")
    r = alice.get("/jobs")
    assert r.status_code == 200
    shown = {int(a): s for a, s in re.findall(r'<tr class="job" data-job="(\d+)" data-state="(\w+)">', r.text)}
    assert shown == {jobs["done"]: "done", jobs["running"]: "running", jobs["queued"]: "queued"}
    assert "node7" in r.text and "pid 77" in r.text and "alice reduce" in r.text
    assert "bob secret job" not in r.text and 'id="count-queued">1<' in r.text
    assert 'hx-get="/jobs/table" hx-trigger="every 2s"' in r.text  # live: HTMX polls the table
    # the fragment the polling swaps in, filtered by recipe and by state
    r = alice.get("/jobs/table", params={"recipe": "Reduce"})
    assert "<html" not in r.text and re.findall(r'data-job="(\d+)"', r.text) == [str(jobs["running"])]
    assert 'hx-get="/jobs/table?recipe=Reduce"' in r.text
    r = alice.get("/jobs/table", params={"state": "queued"})
    assert re.findall(r'data-job="(\d+)"', r.text) == [str(jobs["queued"])]
    assert alice.get("/jobs/table", params={"state": "nonsense"}).status_code == 400
    # a job's page: its log; it polls while the job runs, not once it has ended
    r = alice.get(f"/jobs/{jobs['done']}")
    assert "5 raw biases combined" in r.text and 'id="job-state" class="state state-done">done<' in r.text
    assert "hx-trigger" not in r.text.split('id="job-detail"')[1].split(">")[0]
    r = alice.get(f"/jobs/{jobs['running']}?part=1")
    assert r.text.startswith('<div id="job-detail" data-state="running" hx-get="/jobs/') and "node7" in r.text


def test_cancel_own_job_with_csrf_only(web, jobs):
    from awe.dpu import jobs as j
    alice = web.client("alice")
    # without the form's token, or from another site: refused, nothing changes
    token, other = csrf_of(alice), csrf_of(web.client("bob"))
    for forged in ({}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": other}):
        assert alice.post(f"/jobs/{jobs['queued']}/cancel", data=forged).status_code == 403, forged
    r = alice.post(f"/jobs/{jobs['queued']}/cancel", data={"csrf": token}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and j.job(web.team.alice, jobs["queued"]).state == "queued"
    # with it: cancelled (a queued job never starts); an ended job stays as it ended
    r = alice.post(f"/jobs/{jobs['queued']}/cancel", data={"csrf": token, "next": "/jobs"})
    assert r.status_code == 303 and r.headers["location"] == "/jobs"
    assert j.job(web.team.alice, jobs["queued"]).state == "cancelled"
    assert j.mark_running(web.team.alice, jobs["queued"], "node1", "pid 1") is None
    r = alice.post(f"/jobs/{jobs['running']}/cancel", data={"csrf": token})
    assert r.status_code == 303 and j.job(web.team.alice, jobs["running"]).state == "cancelled"
    alice.post(f"/jobs/{jobs['done']}/cancel", data={"csrf": token})
    assert j.job(web.team.alice, jobs["done"]).state == "done"
    assert 'data-state="cancelled"' in alice.get("/jobs").text


def test_another_users_jobs_are_unreachable(web, jobs):
    from awe.dpu import jobs as j
    bob = web.client("bob")
    r = bob.get("/jobs")
    assert re.findall(r'data-job="(\d+)"', r.text) == [str(jobs["bob"])] and "alice" not in r.text.split("<main>")[1]
    for url in (f"/jobs/{jobs['done']}", f"/jobs/{jobs['running']}?part=1", "/jobs/999999"):
        r = bob.get(url)
        assert r.status_code == 404 and "alice" not in r.text.split("<main>")[1] and "node7" not in r.text, url
    token = csrf_of(bob)
    r = bob.post(f"/jobs/{jobs['running']}/cancel", data={"csrf": token})
    assert r.status_code == 404 and j.job(web.team.alice, jobs["running"]).state == "running"
    # no session: nothing
    anonymous = web.client()
    assert anonymous.get("/jobs/table").status_code == 401
    assert anonymous.post(f"/jobs/{jobs['running']}/cancel", data={"csrf": token}).status_code in (401, 403)
    assert j.job(web.team.alice, jobs["running"]).state == "running"
    # and on PostgreSQL the table itself hides alice's rows from bob (row-level security), whatever the query
    import sqlalchemy as sa
    with web.team.bob.engine.connect() as conn:
        seen = set(conn.execute(sa.select(j.dpu_jobs.c.id)).scalars())
    if not web.team.bob.database.is_sqlite:
        assert seen == {jobs["bob"]}
