"""The Task base on a real task: help(), keywords, log files, Pars, provenance reuse."""

from __future__ import annotations

import pydoc

import pytest

from awe.pars import ParameterError, Pars
from awe.tasks import BiasTask, HotPixelsTask


def test_help_lists_selection_keywords_and_parameters():
    text = pydoc.render_doc(BiasTask, renderer=pydoc.plaintext)
    for word in ("instrument", "chip", "overscan", "commit", "inspect", "SIGMA_CLIP", "MAXIMUM_ABS_MEAN"):
        assert word in text
    assert "date" in pydoc.render_doc(HotPixelsTask, renderer=pydoc.plaintext)


def test_unknown_keyword_and_parameter_are_named(sqlite_db):
    with pytest.raises(TypeError, match="colour.*valid keywords are"):
        BiasTask(instrument="WFI", chip="ccd50", colour="red")
    with pytest.raises(AttributeError, match="SIGMA_CLIP"):
        BiasTask(instrument="WFI", pars={"BiasFrame": {"process_params": {"SIGMA": 2.0}}})
    with pytest.raises(ParameterError, match="takes a float"):
        BiasTask(instrument="WFI", pars={"BiasFrame": {"process_params": {"SIGMA_CLIP": "x"}}})


def test_pars_and_shortcuts_reach_the_task(sqlite_db):
    pars = Pars(BiasTask)
    pars.BiasFrame.process_params.SIGMA_CLIP = 2.5
    task = BiasTask(instrument="WFI", chip="ccd50", overscan=7, pars=pars.get())
    assert task.pars.BiasFrame.process_params.SIGMA_CLIP == 2.5
    assert task.pars.BiasFrame.process_params.OVERSCAN_CORRECTION == 7
    assert task.instrument == "WFI" and task.chip == "ccd50"
    # the Pars object itself is accepted too
    assert BiasTask(instrument="WFI", pars=pars).pars.get() == pars.get()


class _Chatty(BiasTask):
    """A task whose make() only logs, to test per-task log capture."""

    def make(self):
        for n in range(50):
            self.log.info("%s line %d", self.selection_values["chip"], n)
        return []


def test_log_files_of_tasks_in_threads_hold_only_their_own_lines(sqlite_db):
    import threading
    barrier = threading.Barrier(2)
    session = sqlite_db.session
    errors = []

    def run(chip):
        try:
            barrier.wait(timeout=30)
            _Chatty(instrument="WFI", chip=chip, logfile=f"{chip}.log", session=session).execute()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in ("ccd50", "ccd51")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    workdir = session.settings.workdir
    for mine, other in (("ccd50", "ccd51"), ("ccd51", "ccd50")):
        text = (workdir / f"{mine}.log").read_text()
        assert text.count(f"{mine} line") == 50
        assert f"{other} line" not in text
