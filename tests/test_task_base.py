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
