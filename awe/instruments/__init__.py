"""Instruments as data: one TOML description per camera in this folder.

>>> wfi = get_instrument("wfi")
>>> wfi.chip("ccd50").gain, wfi.chip(8).name, wfi.filter("BB#Rc/162_ESO844").id
(1.99, 'ccd57', '#844')

Adding a camera (OmegaCAM, ...) needs only a new ``<name>.toml`` file here with
the same keys as ``wfi.toml``.  Pure Python: no database, no files written.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

from awe.instruments._spec import ChipSpec, FilterSpec, InstrumentDescriptionError, InstrumentSpec, spec_from_mapping
from awe.instruments.geometry import RawGeometry

__all__ = ["get_instrument", "list_instruments", "InstrumentSpec", "ChipSpec", "FilterSpec", "RawGeometry",
           "InstrumentDescriptionError"]


@functools.cache
def _descriptions() -> dict[str, InstrumentSpec]:
    """Every instrument description shipped with awe, by upper-case name."""
    found: dict[str, InstrumentSpec] = {}
    for entry in sorted(resources.files("awe.instruments").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        try:
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InstrumentDescriptionError(f"instrument description {entry.name} is not valid TOML: {exc}") from exc
        spec = spec_from_mapping(data, source=entry.name)
        if spec.name.upper() in found:
            raise InstrumentDescriptionError(f"instrument {spec.name} is described twice (again in {entry.name})")
        found[spec.name.upper()] = spec
    return found


def list_instruments() -> list[str]:
    """Names of the described instruments (``['WFI']``)."""
    return [spec.name for spec in _descriptions().values()]


def get_instrument(name: str) -> InstrumentSpec:
    """The description of instrument ``name`` (case-insensitive).

    Raises
    ------
    LookupError
        If no description of that name exists; the message lists the known ones.
    """
    try:
        return _descriptions()[str(name).strip().upper()]
    except KeyError:
        raise LookupError(f"unknown instrument {name!r}; known instruments: {', '.join(list_instruments())} "
                          f"(describe a new one in a TOML file in awe/instruments/)") from None
