"""Raw files for the security and fault tests: four exposures of the simulated course night, made once per run.

Import the fixture into a test module (``from tests.security._raw import raw_files  # noqa: F401``): being one
fixture definition, it is simulated once for the whole session, whichever modules use it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.io import fits

from awe.sim import simulate_night

SCALE = 0.0625  # 134 x 258 pixel chips: ~650 kB per raw file of 8 chips
BIAS = "WFI.2003-03-03T18:02:46.015.fits"
DOME = "WFI.2003-03-03T19:45:17.277.fits"
SCIENCE = "WFI.2003-03-04T04:43:52.117.fits"
STANDARD = "WFI.2003-03-04T04:42:29.496.fits"
NAMES = (BIAS, DOME, SCIENCE, STANDARD)


@pytest.fixture(scope="session")
def raw_files(tmp_path_factory) -> dict[str, Path]:
    """The four raw files by name (do not modify them: copy with :func:`edited`)."""
    folder = simulate_night(tmp_path_factory.mktemp("security-night"), scale=SCALE, seed=1,
                            only=[n[4:-5] for n in NAMES])
    return {name: folder / name for name in NAMES}


def edited(src: Path, dst: Path, cards: dict | None = None, delete: tuple[str, ...] = (),
           raw_cards: dict[str, str] | None = None, extension_cards: dict | None = None) -> Path:
    """A copy of a raw file with primary cards set or deleted, as the simulator wrote them otherwise.

    ``raw_cards`` replaces a primary card by 80 characters written verbatim (``{'EXPTIME': 'EXPTIME = NaN'}``),
    which astropy itself would refuse to write; ``extension_cards`` sets (or, with value None, deletes) a card
    in every chip's header.
    """
    with fits.open(src) as hdul:
        for key in delete:
            del hdul[0].header[key]
        for key, value in (cards or {}).items():
            hdul[0].header[key] = value
        for hdu in hdul[1:]:
            for key, value in (extension_cards or {}).items():
                if value is None:
                    hdu.header.remove(key, ignore_missing=True)
                else:
                    hdu.header[key] = value
        hdul.writeto(dst)
    if raw_cards:
        data = bytearray(dst.read_bytes())
        header_end = data.index(b"END" + b" " * 77)
        for key, text in raw_cards.items():
            start = _card_offset(data, key, header_end)
            data[start:start + 80] = text.ljust(80).encode("ascii")
        dst.write_bytes(bytes(data))
    return dst


def _card_offset(data: bytearray, key: str, header_end: int) -> int:
    for start in range(0, header_end, 80):
        text = data[start:start + 80].decode("ascii")
        if text[:8].rstrip() == key or (len(key) > 8 and text.startswith(key)
                                        and text[len(key):].lstrip().startswith("=")):
            return start
    raise KeyError(f"no card {key} in the primary header")


@pytest.fixture
def make_user():
    """``make_user(name)``: a session of a new user on the test's database (made by the administrator ``tester``),
    closed (its own connections disposed) at the end of the test."""
    from awe import context
    from awe.db.session import Session
    opened: list = []

    def make(name: str):
        password = f"pw-{name}"
        context.add_user(name, password)
        session = context.session
        user = Session.open(session.settings.with_(user=name, password=password, project=None),
                            database=session.database)
        opened.append(user)
        return user

    yield make
    for user in opened:
        getattr(user, "dispose", user.close)()


def chip_count(names: list[str], raw: str) -> int:
    """How many of ``names`` are chips of raw file ``raw``."""
    stem = raw[:-5]
    return sum(n.startswith(stem + "_") for n in names)


__all__ = ["raw_files", "make_user", "edited", "chip_count", "SCALE", "BIAS", "DOME", "SCIENCE", "STANDARD", "NAMES"]
