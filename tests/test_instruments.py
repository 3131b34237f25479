"""The instrument model: WFI described as data (wfi.toml) and the raw geometry of its extensions."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from awe.instruments import (InstrumentDescriptionError, RawGeometry, get_instrument, list_instruments)
from awe.instruments._spec import spec_from_mapping
from awe.instruments.geometry import MIN_SCAN_COLUMNS

WFI_GAINS = [1.99, 2.02, 2.29, 2.68, 2.24, 2.25, 2.16, 2.03]   # WFI.md, ccd50..ccd57


def _wfi_data() -> dict:
    return tomllib.loads((resources.files("awe.instruments") / "wfi.toml").read_text())


# ---------------------------------------------------------------- instrument
def test_lookup_is_case_insensitive_and_unknown_names_the_known():
    assert "WFI" in list_instruments()
    wfi = get_instrument("wfi")
    assert wfi is get_instrument(" WFI ")
    assert (wfi.name, wfi.telescope, wfi.observatory) == ("WFI", "MPI-2.2", "La Silla")
    assert wfi.longitude_deg == pytest.approx(-70.7346) and -30 < wfi.latitude_deg < -29
    assert (wfi.pixel_scale, wfi.saturation, wfi.adc_limit) == (0.238, 45000.0, 65535)
    with pytest.raises(LookupError, match="unknown instrument 'OmegaCAM'.*WFI"):
        get_instrument("OmegaCAM")


def test_chips_extensions_and_layout():
    wfi = get_instrument("WFI")
    assert [c.name for c in wfi.chips] == [f"ccd{49 + n}" for n in range(1, 9)]
    assert [c.index for c in wfi.chips] == list(range(1, 9))
    assert [c.gain for c in wfi.chips] == WFI_GAINS
    for n in range(1, 9):
        assert wfi.chip(n) is wfi.chip(f"ccd{49 + n}") is wfi.chip(f"CCD{49 + n}") is wfi.chip(str(n))
        chip = wfi.chip(n)
        assert (chip.nx, chip.ny) == (2048, 4096) and chip.raw_shape == (4128, 2142)
        assert 4.5 <= chip.read_noise_e <= 5.5
        assert chip.read_noise_adu == pytest.approx(chip.read_noise_e / chip.gain)
    assert wfi.layout == (("ccd50", "ccd51", "ccd52", "ccd53"), ("ccd57", "ccd56", "ccd55", "ccd54"))
    # the pointing is near the north-east corner of ccd55; ccd50's CD matrix as in WFI.md
    assert wfi.chip("ccd55").crpix == (202.0, 4232.8)
    assert wfi.chip("ccd50").cd == ((-6.5979e-5, -2.256e-7), (-1.353e-7, 6.6063e-5))
    # unlit rows: below the illuminated area on ccd50-53, above it on ccd54-57
    assert all(wfi.chip(n).prescan_y > 0 == wfi.chip(n).overscan_y - 2 for n in range(1, 5))
    assert all(wfi.chip(n).prescan_y == 0 and wfi.chip(n).overscan_y == 32 for n in range(5, 9))
    with pytest.raises(LookupError, match="no chip 'ccd58'.*ccd50 \\(extension 1\\)"):
        wfi.chip("ccd58")
    with pytest.raises(LookupError, match="no chip 9"):
        wfi.chip(9)


def test_detector_ids_name_the_chips():
    wfi = get_instrument("WFI")
    # the keywords raw files carry the detector id in, read in this order; the primary's list of them
    assert wfi.detector_id_keys == ("HIERARCH ESO DET CHIP ID", "HIERARCH ESO DET CHIP1 ID")
    assert wfi.primary_detector_id_key.format(n=3) == "HIERARCH ESO DET CHIP3 ID"
    for chip in wfi.chips:
        # ESO's La Silla detector ids are the ESO CCD numbers: WFI's chips are ESO CCDs #50..#57
        assert chip.detector_id == chip.name and chip.detector_ids == (chip.name, f"ESO_CCD_#{chip.name[3:]}")
        for value in (chip.name, chip.name.upper(), f" eso_ccd_#{chip.name[3:]} "):
            assert wfi.identify(value) is chip
    with pytest.raises(LookupError, match="no detector with id or name 'ccd58'.*ccd50 \\(ccd50/ESO_CCD_#50\\)"):
        wfi.identify("ccd58")
    with pytest.raises(LookupError, match="no detector"):
        wfi.identify("1")          # a position is not a detector id
    # a description without detector ids: the chip name is the id
    data = _wfi_data()
    del data["detector_id"]
    for chip in data["chips"]:
        del chip["detector_ids"]
    bare = spec_from_mapping(data, "bare.toml")
    assert bare.detector_id_keys == () and bare.primary_detector_id_key is None
    assert bare.chip(2).detector_id == "ccd51" and bare.identify("CCD51") is bare.chip(2)


def test_filters_by_id_or_eso_name():
    wfi = get_instrument("WFI")
    rc = wfi.filter("#844")
    assert rc is wfi.filter("BB#Rc/162_ESO844") is wfi.filter("bb#rc/162_eso844")
    assert (rc.id, rc.eso_name, rc.band, rc.wavelength_nm) == ("#844", "BB#Rc/162_ESO844", "Rc", 646.5)
    assert {f.eso_name for f in wfi.filters} >= {"BB#U/50_ESO877", "BB#B/99_ESO842", "BB#V/89_ESO843",
                                                 "BB#I/203_ESO879", "BB#Z+/61_ESO846"}
    with pytest.raises(LookupError, match="no filter '#999'.*#844 \\(BB#Rc/162_ESO844\\)"):
        wfi.filter("#999")


def test_a_new_instrument_needs_only_its_description():
    data = _wfi_data()
    data["name"] = "WFI2"
    data["chips"] = data["chips"][:2]
    data["layout"] = [["ccd50", "ccd51"]]
    spec = spec_from_mapping(data, "wfi2.toml")
    assert spec.name == "WFI2" and spec.chip_names == ("ccd50", "ccd51")
    assert RawGeometry.from_chip(spec.chip(2)).shape == (4128, 2142)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("telescope"), "missing key 'telescope'"),
    (lambda d: d["chips"][0].pop("gain"), "chip ccd50: missing key 'gain'"),
    (lambda d: d["chips"][0].update(trim=[40, 2082, 31, 4122]), "trim section .* not inside"),
    (lambda d: d["chips"][1].update(index=1), "chip indices must be 1..8"),
    (lambda d: d.update(layout=[["ccd50"]]), "layout .* every chip"),
    (lambda d: d["chips"][3].update(detector_ids=["ccd53", "ESO_CCD_#50"]),
     "detector id or name 'eso_ccd_#50' names both chip ccd50 and chip ccd53"),
    (lambda d: d["chips"][1].update(detector_ids=["ccd50"]), "'ccd50' names both chip ccd50 and chip ccd51"),
    (lambda d: d["chips"][0].update(detector_ids="ccd50"), "chip ccd50: detector_ids must be a list of non-empty"),
    (lambda d: d["chips"][0].update(detector_ids=["ccd50", " "]), "detector_ids must be a list of non-empty"),
    (lambda d: d["detector_id"].pop("extension_keys"), "detector_ids but detector_id.extension_keys does not say"),
    (lambda d: d["detector_id"].update(primary_key="HIERARCH ESO DET CHIP1 ID"), "primary_key must be a keyword "
                                                                                "with {n}"),
    (lambda d: d["detector_id"].update(extension_key="X"), "detector_id has unknown key\\(s\\) \\['extension_key'\\]"),
    (lambda d: d.update(detector_id="HIERARCH ESO DET CHIP ID"), "detector_id must be a table"),
])
def test_bad_descriptions_are_refused(change, message):
    data = _wfi_data()
    change(data)
    with pytest.raises(InstrumentDescriptionError, match=message):
        spec_from_mapping(data, "broken.toml")


# ---------------------------------------------------------------- geometry
def test_full_size_geometry_matches_wfi_md():
    wfi = get_instrument("WFI")
    for chip in wfi.chips:
        g = RawGeometry.from_chip(chip)
        assert g.shape == (4128, 2142) and g == RawGeometry.scaled(chip, 1.0)
        assert (g.prescan_x, g.overscan_x) == (slice(0, 50), slice(2098, 2142))
        assert g.data[1] == slice(50, 2098)
        assert g.trim[1] == slice(50, 2082)                    # x 51..2082
        north = chip.index <= 4
        assert g.trim[0] == (slice(30, 4122) if north else slice(1, 4093))   # y 31..4122 or 2..4093
        assert g.data[0] == (slice(30, 4126) if north else slice(0, 4096))
        assert g.trimsec == ("[51:2082,31:4122]" if north else "[51:2082,2:4093]")
        assert g.trim_shape == (4092, 2032)


@given(scale=st.floats(min_value=0.02, max_value=1.0))
@settings(max_examples=60, deadline=None)
def test_scaled_geometry_is_proportional_and_trim_stays_lit(scale):
    for chip in get_instrument("WFI").chips:
        g = RawGeometry.scaled(chip, scale)
        assert g.nx == max(1, int(chip.nx * scale + 0.5)) and g.ny == max(1, int(chip.ny * scale + 0.5))
        assert g.n_prescan_x >= MIN_SCAN_COLUMNS and g.n_overscan_x >= MIN_SCAN_COLUMNS
        assert g.shape == (g.n_prescan_y + g.ny + g.n_overscan_y, g.n_prescan_x + g.nx + g.n_overscan_x)
        (ty, tx), (dy, dx) = g.trim, g.data
        assert dx.start <= tx.start < tx.stop <= dx.stop and dy.start <= ty.start < ty.stop <= dy.stop
        # the trim section covers the same fraction of the illuminated area as at full size
        # (rounded inwards at either end)
        assert 0 <= 2032 * g.nx / 2048 - (tx.stop - tx.start) < 2.0
        assert 0 <= 4092 * g.ny / 4096 - (ty.stop - ty.start) < 2.0
        assert g.overscan_x.stop == g.shape[1] and g.prescan_x.start == 0


def test_scale_one_eighth():
    g = RawGeometry.scaled(get_instrument("WFI").chip("ccd50"), 0.125)
    assert g.shape == (516, 288) and (g.n_prescan_x, g.n_overscan_x, g.n_prescan_y) == (16, 16, 4)
    assert g.trim_box == (17, 270, 5, 515)
    with pytest.raises(ValueError, match="scale must be in"):
        RawGeometry.scaled(get_instrument("WFI").chip(1), 0.0)


@pytest.mark.parametrize("scale", [1.0, 0.125, 0.0625])
def test_geometry_round_trips_through_a_header(scale):
    for chip in get_instrument("WFI").chips:
        g = RawGeometry.scaled(chip, scale)
        header = fits.Header()
        for key, value in g.header_cards().items():
            header[key] = value
        header["NAXIS1"], header["NAXIS2"] = g.shape[1], g.shape[0]
        assert RawGeometry.from_header(header, chip) == g
        # a plain mapping with the keywords works too
        assert RawGeometry.from_header({k: v[0] for k, v in g.header_cards().items()}, chip) == g


def test_header_without_keywords_falls_back_and_inconsistent_headers_fail():
    chip = get_instrument("WFI").chip("ccd54")
    assert RawGeometry.from_header(fits.Header([("NAXIS1", 2142), ("NAXIS2", 4128)]), chip) == \
        RawGeometry.from_chip(chip)
    with pytest.raises(ValueError, match="extension is 288 x 516 pixels .* add up to 2142 x 4128"):
        RawGeometry.from_header(fits.Header([("NAXIS1", 288), ("NAXIS2", 516)]), chip)
    # only NX/NY given (ESO DET CHIP keywords): sections fall back, trim scales with them
    small = fits.Header([("HIERARCH ESO DET CHIP NX", 1024), ("HIERARCH ESO DET CHIP NY", 2048)])
    g = RawGeometry.from_header(small, chip)
    assert (g.nx, g.ny, g.n_prescan_x) == (1024, 2048, 50) and g.trim_box == (51, 1066, 2, 2046)
