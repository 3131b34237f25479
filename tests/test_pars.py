"""Pars (spec section 8): declared once, shown as in the spec, validated, passed to tasks."""

from __future__ import annotations

import pytest

from awe.pars import Param, ParameterError, ParamGroup, Pars


class SatParams(ParamGroup):
    DETECTION_THRESHOLD = Param(5.0, "detection threshold", unit="sigma")
    HOUGH_THRESHOLD = Param(1000.0, "Hough accumulator threshold")


class Sat:
    parameter_groups = {"process_params": SatParams}


class Other:
    parameter_groups = {"process_params": type("OtherParams", (ParamGroup,), {
        "MODE": Param(6, "a mode", choices=(0, 1, 6)), "NAME": Param("x", "a name", affects_output=False)})}


class MakeBoth:
    products = (Sat, Other)


SPEC_SAT = """Sat
|
+--process_params
| |
|  +--DETECTION_THRESHOLD: 5.0
|  +--HOUGH_THRESHOLD: 1000.0"""


def test_show_as_in_spec(capsys):
    pars = Pars(Sat)
    pars.show()
    assert capsys.readouterr().out.strip() == SPEC_SAT
    pars.Sat.process_params.DETECTION_THRESHOLD = 3.0
    pars.Sat.process_params.HOUGH_THRESHOLD = 900
    assert "DETECTION_THRESHOLD: 3.0" in pars.format()
    assert pars.Sat.process_params.HOUGH_THRESHOLD == 900.0
    assert isinstance(pars.Sat.process_params.HOUGH_THRESHOLD, float)


def test_get_round_trips():
    pars = Pars(MakeBoth)
    pars.Other.process_params.MODE = 1
    values = pars.get()
    assert values == {"Sat": {"process_params": {"DETECTION_THRESHOLD": 5.0, "HOUGH_THRESHOLD": 1000.0}},
                      "Other": {"process_params": {"MODE": 1, "NAME": "x"}}}
    again = Pars(MakeBoth, values)
    assert again.get() == values
    # a product's own Pars is accepted by a task making it (the spec's Pars(SatelliteMap) -> Reduce)
    sat = Pars(Sat)
    sat.Sat.process_params.DETECTION_THRESHOLD = 2.0
    both = Pars(MakeBoth, sat.get())
    assert both.Sat.process_params.DETECTION_THRESHOLD == 2.0
    assert pars.output_affecting("Other") == {"process_params": {"MODE": 1}}


def test_errors_name_valid_keys_and_types():
    pars = Pars(MakeBoth)
    with pytest.raises(AttributeError, match="valid parameters are .*DETECTION_THRESHOLD"):
        pars.Sat.process_params.DETECTION_TRESHOLD = 3.0
    with pytest.raises(ParameterError, match="takes a float"):
        pars.Sat.process_params.DETECTION_THRESHOLD = "high"
    with pytest.raises(ParameterError, match="takes a float"):
        pars.Sat.process_params.DETECTION_THRESHOLD = True
    with pytest.raises(ParameterError, match="must be one of"):
        pars.Other.process_params.MODE = 3
    with pytest.raises(AttributeError, match="valid names are"):
        pars.Nothing
    with pytest.raises(AttributeError, match="valid names are"):
        Pars(MakeBoth, {"Sat": {"swarpconf": {"X": 1}}})
    with pytest.raises(ParameterError):
        pars.Sat = 3
    with pytest.raises(ParameterError, match="no parameters"):
        Pars(int)
