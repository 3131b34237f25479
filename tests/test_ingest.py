"""Ingest of ESO raw files: the course night (spec sections 5-6) against the simulator's truth, bad input,
duplicates, compressed files and the sanity checks; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
import astropy.units as u

from awe import context
from awe.instruments import get_instrument
from awe.model import (QualityFlags, RawBiasFrame, RawDomeFlatFrame, RawFrame, RawScienceFrame, RawStandardFrame,
                       RawTwilightFlatFrame)
from awe.sim import Truth, simulate_night
from awe.sim._rawfile import reorder_extensions
from awe.tasks.ingest import (BY_DETECTOR_ID, BY_EXTNAME, BY_POSITION, BY_PRIMARY_LIST, IngestError, IngestParams,
                              chip_stats, classify, identify_chips, ingest, raw_imstat)

SCALE = 0.0625
STANDARD = "WFI.2003-03-04T04:42:29.496.fits"
BIAS = "WFI.2003-03-03T19:18:48.680.fits"
DETECTOR_ID = "HIERARCH ESO DET CHIP1 ID"       # the simulator's default spelling
# the course's listings (spec sections 5 and 6): file -> raw median of ccd50
COURSE_BIASES = {
    "WFI.2003-03-03T19:23:24.843_1.fits": 183.0, "WFI.2003-03-03T18:02:46.015_1.fits": 181.0,
    "WFI.2003-03-03T19:24:24.163_1.fits": 183.0, "WFI.2003-03-03T19:20:11.815_1.fits": 182.0,
    "WFI.2003-03-03T19:18:48.680_1.fits": 181.0, "WFI.2003-03-03T19:25:31.810_1.fits": 183.0,
    "WFI.2003-03-03T18:59:58.474_1.fits": 180.0, "WFI.2003-03-03T19:22:22.821_1.fits": 183.0,
    "WFI.2003-03-03T19:21:15.723_1.fits": 182.0, "WFI.2003-03-03T19:01:05.890_1.fits": 180.0,
}
COURSE_DOME = {"WFI.2003-03-03T19:46:58.069_1.fits": 17945.0, "WFI.2003-03-03T19:48:27.232_1.fits": 18192.0,
               "WFI.2003-03-03T19:45:17.277_1.fits": 17217.0}
COURSE_TWILIGHT = {"WFI.2003-03-03T23:48:12.051_1.fits": 17919.0, "WFI.2003-03-03T23:50:42.573_1.fits": 19911.0,
                   "WFI.2003-03-03T23:46:15.975_1.fits": 17270.0}


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """The course night at 1/16 size (31 raw files), simulated once for the module."""
    return simulate_night(tmp_path_factory.mktemp("night"), scale=SCALE, seed=1)


@pytest.fixture(scope="module")
def truth(night) -> Truth:
    return Truth(night)


def _raw(night: Path, date_obs: str) -> Path:
    return night / f"WFI.{date_obs}.fits"


def _rewrite(src: Path, dst: Path, header: dict | None = None, delete: tuple[str, ...] = (),
             data=None) -> Path:
    """A copy of a raw file with primary keywords changed or deleted, or every chip's data replaced.

    A new DATE-OBS brings its MJD-OBS along unless ``header`` sets that too (ingest refuses a disagreement).
    """
    header = dict(header or {})
    if "DATE-OBS" in header and "MJD-OBS" not in header and "MJD-OBS" not in delete:
        from astropy.time import Time
        header["MJD-OBS"] = round(float(Time(header["DATE-OBS"], scale="utc").mjd), 8)
    with fits.open(src) as hdul:
        for key in delete:
            del hdul[0].header[key]
        for key, value in header.items():
            hdul[0].header[key] = value
        if data is not None:
            for hdu in hdul[1:]:
                hdu.data = data(hdu.data).astype(np.uint16)
        hdul.writeto(dst)
    return dst


def lzw_compress(data: bytes, maxbits: int = 16) -> bytes:
    """Unix ``compress`` (.Z) encoding, block mode without CLEAR codes: the test's own encoder."""
    out = bytearray(b"\x1f\x9d" + bytes([0x80 | maxbits]))
    maxmax, free, nbits = 1 << maxbits, 257, 9
    maxcode = (1 << nbits) - 1
    group: list[int] = []

    def flush(pad: bool) -> None:
        codes = group + ([0] * (-len(group) % 8) if pad else [])
        acc = sum(c << (i * nbits) for i, c in enumerate(codes))
        out.extend(acc.to_bytes((len(codes) * nbits + 7) // 8, "little"))
        group.clear()

    def emit(code: int) -> None:
        nonlocal nbits, maxcode
        group.append(code)
        if len(group) == 8:
            flush(False)
        if free > maxcode:  # the next code is one bit wider: compress(1) pads the group of 8 codes
            flush(True)
            nbits += 1
            maxcode = maxmax if nbits == maxbits else (1 << nbits) - 1

    table: dict[int, int] = {}
    ent = data[0]
    for c in data[1:]:
        key = (ent << 8) | c
        if key in table:
            ent = table[key]
            continue
        emit(ent)
        ent = c
        if free < maxmax:
            table[key] = free
            free += 1
    emit(ent)
    flush(False)
    return bytes(out)


# ====================================================================== the course night
def _check_spec_listings() -> None:
    """Section 5/6 queries give the course's counts, names and statistics."""
    q = (RawBiasFrame.instrument.name == "WFI") & (RawBiasFrame.chip.name == "ccd50")
    assert len(q) == 10
    biases = list(q)
    assert {b.filename for b in biases} == set(COURSE_BIASES)
    stdevs = []
    for b in biases:
        assert 180.0 <= b.imstat.median <= 183.0, (b.filename, b.imstat)
        assert abs(b.imstat.median - COURSE_BIASES[b.filename]) <= 1.0, (b.filename, b.imstat.median)
        # cosmics vary it at 1/16 size: 27.75-31.00 measured (seed 1), the course 27.9-28.3
        assert 27.4 <= b.imstat.stdev <= 34.0, (b.filename, b.imstat.stdev)
        stdevs.append(b.imstat.stdev)
    assert 27.8 <= float(np.median(stdevs)) <= 28.4  # measured 27.96; the course: 27.9-28.3
    for cls, course in ((RawDomeFlatFrame, COURSE_DOME), (RawTwilightFlatFrame, COURSE_TWILIGHT)):
        q = cls.select(instrument="WFI", chip="ccd50", filter="#844")
        assert len(q) == 3
        for f in q:
            assert type(f) is cls
            assert 17000.0 <= f.imstat.median <= 20000.0
            assert f.imstat.median == pytest.approx(course[f.filename], rel=0.001)  # measured <= 0.04 %
    science = RawScienceFrame.select(instrument="WFI", chip="ccd50", object="3C*")
    assert len(science) == 6
    assert all(type(f) is RawScienceFrame and 1.23 <= f.AIRMASS <= 1.31 for f in science)  # 1.242-1.298


def _check_classes(truth: Truth) -> None:
    """Every exposure got the class of its DPR TYPE, for every chip."""
    kinds = {"bias": RawBiasFrame, "domeflat": RawDomeFlatFrame, "twilightflat": RawTwilightFlatFrame,
             "standard": RawStandardFrame, "science": RawScienceFrame}
    frames = list(RawFrame.all())
    assert len(frames) == 31 * 8
    expected = {row["filename"]: kinds[row["type"]] for row in truth.exposures()}
    for frame in frames:
        assert type(frame) is expected[frame.raw_file], frame.filename
    assert {f.project_id for f in frames} == {context.project.id} and frames[0].project == "ALL"
    assert len(RawStandardFrame.all()) == 9 * 8
    assert len(RawScienceFrame.OBJECT == "3C273") == 6 * 8
    assert len(RawStandardFrame.OBJECT.like("SA*")) == 9 * 8


def _check_standard_frame(night: Path, truth: Truth) -> None:
    """The course's standard-field frame: attributes, chip mapping, pixels and header WCS."""
    spec = get_instrument("WFI")
    exp = truth.exposure(STANDARD)
    with fits.open(night / STANDARD) as raw:
        for n in range(1, 9):
            frame = (RawFrame.filename == f"WFI.2003-03-04T04:42:29.496_{n}.fits")[0]
            assert type(frame) is RawStandardFrame
            assert frame.chip.name == f"ccd{49 + n}" and frame.chip.index == n and frame.extension == n
            assert frame.instrument.name == "WFI" and frame.filter.name == "#844"
            assert frame.gain == spec.chip(n).gain
            assert frame.DATE_OBS == dt.datetime(2003, 3, 4, 4, 42, 29, 496000)
            assert frame.MJD_OBS == pytest.approx(float(exp["mjd"]), abs=1e-7)
            assert frame.EXPTIME == 30.0 and frame.OBJECT == "SA104" and frame.DPR_TYPE == "STD"
            assert frame.AIRMASS == pytest.approx(float(exp["airmass_start"]), abs=1e-4)
            assert (frame.RA, frame.DEC) == pytest.approx((float(exp["ra"]), float(exp["dec"])), abs=1e-5)
            assert frame.raw_file == STANDARD and frame.quality_flags == 0
            assert (frame.NAXIS2, frame.NAXIS1) == truth.geometry(n).shape
            # the stored per-chip file: the raw extension's pixels, a self-describing header
            with fits.open(frame.local_path()) as chip:
                assert len(chip) == 1
                np.testing.assert_array_equal(chip[0].data, raw[n].data)
                header = chip[0].header
                assert header["EXTNAME"] == f"ccd{49 + n}" and header["INSTRUME"] == "WFI"
                # the chip's own detector id; the primary's list of all eight is not copied into it
                assert header[DETECTOR_ID] == spec.chip(n).detector_id == f"ccd{49 + n}"
                assert [k for k in header if re.fullmatch(r"ESO DET CHIP\d* ID", k)] == ["ESO DET CHIP1 ID"]
                assert header["HIERARCH ESO DPR TYPE"] == "STD" and header["DATE-OBS"] == exp["date_obs"]
            stat = raw_imstat(raw[n].data)
            values = raw[n].data.astype(np.float64)
            assert (frame.imstat.median, frame.imstat.min, frame.imstat.max) == \
                (np.median(values), values.min(), values.max())
            assert frame.imstat.stdev == pytest.approx(values.std(), rel=1e-9) == stat.stdev
            _check_wcs(WCS(header), truth, n, exp)


def _check_wcs(wcs: WCS, truth: Truth, chip: int, exp: dict) -> None:
    """True star positions put through the stored header WCS land where the rough pointing says.

    The header carries the nominal pointing (tens of arcsec off): every star is
    off by that one pointing error, to within a few arcsec (rotation), on every
    chip - a chip mapped to the wrong extension would be arcminutes off.
    """
    sources = truth.frame_sources(STANDARD, chip)
    assert len(sources) > 50
    ra, dec = wcs.all_pix2world(np.asarray(sources["x"]), np.asarray(sources["y"]), 0)
    header_pos = SkyCoord(ra * u.deg, dec * u.deg)
    true_pos = SkyCoord(np.asarray(sources["ra"]) * u.deg, np.asarray(sources["dec"]) * u.deg)
    assert header_pos.separation(true_pos).arcsec.max() < 60.0
    d_ra, d_dec = header_pos.spherical_offsets_to(true_pos)
    pointing = SkyCoord(float(exp["ra"]) * u.deg, float(exp["dec"]) * u.deg).spherical_offsets_to(
        SkyCoord(float(exp["ra_true"]) * u.deg, float(exp["dec_true"]) * u.deg))
    assert np.mean(d_ra.arcsec) == pytest.approx(pointing[0].arcsec, abs=4.0)    # measured <= 1.8"
    assert np.mean(d_dec.arcsec) == pytest.approx(pointing[1].arcsec, abs=4.0)   # measured <= 1.2"
    assert np.std(d_ra.arcsec) < 1.2 and np.std(d_dec.arcsec) < 1.2   # measured <= 0.60" (seed 1)


def test_course_night(db, night, truth):
    db.set_project("ALL")
    calls = []
    report = ingest(night, progress=lambda done, total, name: calls.append((done, total, name)))
    assert (len(report.ingested), len(report.skipped), len(report.failed)) == (31, 0, 0), str(report)
    assert len(report.frames) == 248
    assert calls[-1][:2] == (31, 31) and [c[0] for c in calls] == list(range(1, 32))
    assert "31 file(s) ingested (248 frames), 0 skipped, 0 failed" in str(report)
    assert not any("identified by" in r.message for r in report.results)  # every chip by its detector id

    _check_spec_listings()
    _check_classes(truth)
    _check_standard_frame(night, truth)

    # ingesting the night again adds nothing and says so
    again = ingest([night])
    assert (len(again.ingested), len(again.skipped), len(again.failed)) == (0, 31, 0)
    assert all("already ingested" in r.message for r in again.skipped)
    assert len(RawFrame.all()) == 248


# ====================================================================== which extension is which chip
#: the chips in extension order of the re-ordered files
ORDER = ["ccd55", "ccd57", "ccd50", "ccd53", "ccd51", "ccd56", "ccd54", "ccd52"]


@pytest.fixture(scope="module")
def restyled(tmp_path_factory) -> Path:
    """Two exposures of the same night as another file generation writes them: the extensions in another
    order, EXTNAME CHIP1..CHIP8 and the detector id in HIERARCH ESO DET CHIP ID."""
    return simulate_night(tmp_path_factory.mktemp("restyled"), scale=SCALE, seed=1, only=[STANDARD, BIAS],
                          shuffle_extensions=ORDER, extname_style="chip", detector_id_key="HIERARCH ESO DET CHIP ID")


def _messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "awe.tasks.ingest" and r.levelno == level]


def _check_chips(night: Path, raw: Path, order: list[str] | None = None) -> None:
    """Every chip of ``raw`` ingested under its own name and suffix, with its own pixels (those of the
    instrument-order file of the same night, checked against the truth in test_course_night)."""
    spec = get_instrument("WFI")
    order = order or list(spec.chip_names)
    with fits.open(night / raw.name) as plain, fits.open(raw) as written:
        for extension, name in enumerate(order, 1):
            n = spec.chip(name).index
            frame = (RawFrame.filename == raw.name.replace(".fits", f"_{n}.fits"))[0]
            assert (frame.chip.name, frame.chip.index, frame.extension) == (name, n, extension)
            with fits.open(frame.local_path()) as stored:
                np.testing.assert_array_equal(stored[0].data, plain[n].data)
                np.testing.assert_array_equal(stored[0].data, written[extension].data)
                assert stored[0].header["EXTNAME"] == name


def test_chips_by_detector_id_in_any_order(sqlite_db, night, truth, restyled, caplog):
    with caplog.at_level(logging.DEBUG, logger="awe.tasks.ingest"):
        report = ingest(restyled)
    assert [r.status for r in report.results] == ["ingested", "ingested"], str(report)
    assert not any("identified by" in r.message for r in report.results)
    assert len(RawFrame.all()) == 16
    used = [m for m in _messages(caplog, logging.DEBUG) if "chips identified by detector id" in m]
    assert len(used) == 2 and all("(HIERARCH ESO DET CHIP ID)" in m for m in used)
    assert not _messages(caplog, logging.WARNING)
    for raw in (restyled / BIAS, restyled / STANDARD):
        _check_chips(night, raw, ORDER)
    # the header WCS of every stored chip puts the truth's stars where they are: the chips are the right ones
    exp = truth.exposure(STANDARD)
    for n in range(1, 9):
        frame = (RawFrame.filename == f"WFI.2003-03-04T04:42:29.496_{n}.fits")[0]
        with fits.open(frame.local_path()) as stored:
            _check_wcs(WCS(stored[0].header), truth, n, exp)
    # the same exposures from the other file generation map onto the same chip files, whose headers differ
    again = ingest([night / BIAS, night / STANDARD])
    assert [r.status for r in again.results] == ["failed", "failed"]
    assert all("is ingested already" in r.message and "from a different file" in r.message for r in again.results)


def _restyle(src: Path, dst: Path, *, extname=lambda chip: chip.name, id_key: str | None = DETECTOR_ID,
             id_value=lambda chip: chip.detector_id, primary_list: bool = True,
             order: list[str] | None = None) -> Path:
    """A copy of a raw file in another convention: EXTNAME (None: none), the detector id keyword and value
    (None: none), the primary's list of ids, the extension order (chip names)."""
    spec = get_instrument("WFI")
    with fits.open(src, do_not_scale_image_data=True) as hdul:
        for n in range(1, 9):
            header, chip = hdul[n].header, spec.chip(n)
            for key in ("EXTNAME", DETECTOR_ID):
                header.remove(key, ignore_missing=True)
            if extname(chip) is not None:
                header["EXTNAME"] = extname(chip)
            if id_key is not None:
                header[id_key] = id_value(chip)
            if not primary_list:
                del hdul[0].header[f"HIERARCH ESO DET CHIP{n} ID"]
        hdul.writeto(dst)
    if order is not None:
        reorder_extensions(dst, [spec.chip(name).index for name in order], spec)
    return dst


@pytest.mark.parametrize("convention, method, level", [
    (dict(extname=lambda c: c.name.upper(), id_key="HIERARCH ESO DET CHIP ID",
          id_value=lambda c: f"ESO_CCD_#{c.name[3:]}", order=ORDER), BY_DETECTOR_ID, logging.DEBUG),
    (dict(extname=lambda c: c.name.upper() if c.index % 2 else c.name, id_key=None, primary_list=False,
          order=ORDER), BY_EXTNAME, logging.INFO),
    (dict(extname=lambda c: None, id_key=None, order=ORDER), BY_PRIMARY_LIST, logging.INFO),
    (dict(id_value=lambda c: f"EEV 44-82 #{c.index:04d}", primary_list=False, order=ORDER), BY_EXTNAME,
     logging.INFO),
    (dict(extname=lambda c: f"CHIP{c.index}", id_key=None, primary_list=False), BY_POSITION, logging.WARNING),
], ids=["eso-ccd-ids", "names-only", "primary-list", "unknown-ids", "position"])
def test_chips_by_the_best_evidence_the_file_has(sqlite_db, night, tmp_path, caplog, convention, method, level):
    raw = _restyle(night / STANDARD, tmp_path / STANDARD, **convention)
    with caplog.at_level(logging.DEBUG, logger="awe.tasks.ingest"):
        report = ingest(raw)
    assert [r.status for r in report.results] == ["ingested"], str(report)
    _check_chips(night, raw, convention.get("order"))
    assert sum(f"{STANDARD}: chips identified by" in m and method in m for m in _messages(caplog, level)) == 1
    if method == BY_DETECTOR_ID:
        assert "identified by" not in report.results[0].message
    else:
        assert f"chips identified by {method} (no detector ids)" in report.results[0].message
    warnings_ = _messages(caplog, logging.WARNING)
    if "id_value" in convention and method != BY_DETECTOR_ID:  # ids the description does not declare: say so
        assert len(warnings_) == 1 and "'EEV 44-82 #0001'" in warnings_[0] and "detector_ids" in warnings_[0]
    elif method != BY_POSITION:
        assert not warnings_


def test_contradictory_chip_identification_ingests_nothing(sqlite_db, night, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(night / BIAS, inbox)
    std = night / STANDARD
    _restyle(std, inbox / "two-ids.fits", id_key="HIERARCH ESO DET CHIP ID",
             id_value=lambda c: "ccd57" if c.index == 3 else c.name)      # and CHIP1 ID = ccd52 stays
    with fits.open(inbox / "two-ids.fits", mode="update") as hdul:
        for n in range(1, 9):
            hdul[n].header[DETECTOR_ID] = f"ccd{49 + n}"
    _restyle(std, inbox / "id-vs-name.fits", extname=lambda c: "ccd55" if c.index == 2 else c.name)
    _restyle(std, inbox / "duplicate.fits", extname=lambda c: None,
             id_value=lambda c: "ccd50" if c.index == 6 else c.name, order=ORDER)
    _restyle(std, inbox / "partial.fits", extname=lambda c: None, primary_list=False,
             id_value=lambda c: "ccd56" if c.index == 4 else None)
    with fits.open(inbox / "partial.fits", mode="update") as hdul:
        for n in range(1, 9):
            if hdul[n].header[DETECTOR_ID] is None:
                del hdul[n].header[DETECTOR_ID]
    report = ingest(inbox)
    reasons = {r.path.name: r.message for r in report.failed}
    assert len(reasons) == 4 and [r.path.name for r in report.ingested] == [BIAS], str(report)
    assert re.search(r"^two-ids.fits: extension 3 has contradictory detector ids \(HIERARCH ESO DET CHIP ID = "
                     r"'ccd57' \(ccd57\), HIERARCH ESO DET CHIP1 ID = 'ccd52' \(ccd52\)\)", reasons["two-ids.fits"])
    assert reasons["id-vs-name.fits"].startswith("id-vs-name.fits: extension 2 has detector id 'ccd51' (ccd51) but "
                                                 "EXTNAME 'ccd55' (ccd55)")
    assert reasons["duplicate.fits"].startswith("duplicate.fits: extensions 1 and 3 are both ccd50 by their "
                                                "detector ids")
    assert reasons["partial.fits"].startswith("partial.fits: extension 4 says it is ccd56 (detector id 'ccd56') "
                                              "but the other extensions do not identify themselves and by position "
                                              "it would be ccd53")
    assert all("nothing of" in m for m in reasons.values())
    # nothing of the refused files is in the database or the storage
    frames = list(RawFrame.all())
    assert len(frames) == 8 and {f.raw_file for f in frames} == {BIAS}
    assert sorted(context.storage.list()) == sorted(f.filename for f in frames)


def test_identify_chips_by_the_ids_the_description_declares(caplog):
    """A camera whose detector ids are serial numbers, unlike its chip names: the description decides."""
    import tomllib
    from importlib import resources

    from awe.instruments._spec import spec_from_mapping
    data = tomllib.loads((resources.files("awe.instruments") / "wfi.toml").read_text())
    serials = {c["name"]: f"8221-{c['index']:02d}-7" for c in data["chips"]}
    for chip in data["chips"]:
        chip["detector_ids"] = [serials[chip["name"]]]
    spec = spec_from_mapping(data, "serials.toml")
    order = [4, 1, 8, 2, 7, 3, 6, 5]

    def mef(cards) -> fits.HDUList:
        return fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(np.zeros((4, 4), np.uint16), header=fits.Header(
            cards(spec.chip(i)))) for i in order])

    by_serial = identify_chips(mef(lambda c: [("HIERARCH ESO DET CHIP ID", serials[c.name])]), spec, "cam.fits")
    assert by_serial.method == BY_DETECTOR_ID and [c.index for c in by_serial.chips] == order
    assert by_serial.chip_of(3).name == "ccd57"
    by_name = identify_chips(mef(lambda c: [("HIERARCH ESO DET CHIP1 ID", c.name.upper())]), spec, "cam.fits")
    assert by_name.method == BY_DETECTOR_ID and [c.index for c in by_name.chips] == order   # the name is an alias
    with pytest.raises(IngestError, match="cam.fits: extensions 1 and 2 are both ccd53 by their detector ids"):
        identify_chips(mef(lambda c: [("HIERARCH ESO DET CHIP ID", serials["ccd53"])]), spec, "cam.fits")
    with pytest.raises(IngestError, match="cam.fits has 7 image extension"):
        identify_chips(fits.HDUList(list(mef(lambda c: []))[:-1]), spec, "cam.fits")
    # without ids or names: the primary's list in extension order, when it is complete and names each chip once
    listed = mef(lambda c: [])
    for n, index in enumerate(order, 1):
        listed[0].header[f"HIERARCH ESO DET CHIP{n} ID"] = serials[spec.chip(index).name]
    assert [c.index for c in identify_chips(listed, spec, "cam.fits").chips] == order
    listed[0].header["HIERARCH ESO DET CHIP5 ID"] = serials[spec.chip(order[0]).name]
    with pytest.raises(IngestError, match="extensions 1 and 5 are both ccd53 by the primary header's detector list"):
        identify_chips(listed, spec, "cam.fits")
    del listed[0].header["HIERARCH ESO DET CHIP5 ID"]
    with caplog.at_level(logging.INFO, logger="awe.tasks.ingest"):
        assert identify_chips(listed, spec, "cam.fits").method == BY_POSITION
    assert [m for m in _messages(caplog, logging.WARNING) if "detector list" in m and "incomplete" in m]


# ====================================================================== bad input
def test_bad_files_fail_alone(db, night, tmp_path):
    bias = _raw(night, "2003-03-03T18:02:46.015")
    dome = _raw(night, "2003-03-03T19:45:17.277")
    std = _raw(night, STANDARD[4:-5])
    sci = _raw(night, "2003-03-04T04:43:52.117")
    raw = std.read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(bias, inbox)
    shutil.copy(dome, inbox)
    cut = inbox / "WFI.cut-in-data.fits"
    cut.write_bytes(raw[: int(len(raw) * 0.6)])
    with fits.open(std) as hdul:  # ends exactly after chip 5: a valid FITS file missing 3 chips
        offset = hdul.fileinfo(6)["hdrLoc"]
    (inbox / "WFI.five-chips.fits").write_bytes(raw[:offset])
    (inbox / "WFI.garbage.fits").write_bytes(np.random.default_rng(3).bytes(40000))
    _rewrite(sci, inbox / "WFI.no-type.fits", delete=("HIERARCH ESO DPR TYPE", "OBJECT"))
    _rewrite(sci, inbox / "WFI.no-date.fits", delete=("DATE-OBS",))
    _rewrite(sci, inbox / "WFI.omegacam.fits", header={"INSTRUME": "OmegaCAM-unknown"})

    report = ingest(inbox)
    assert len(report.ingested) == 2 and len(report.failed) == 6, str(report)
    reasons = {r.path.name: r.message for r in report.failed}
    assert re.search("truncated|corrupt", reasons["WFI.cut-in-data.fits"])
    assert "5 image extension(s) but WFI has 8 chips" in reasons["WFI.five-chips.fits"]
    assert "cannot read it as FITS" in reasons["WFI.garbage.fits"]
    assert "DPR TYPE is missing" in reasons["WFI.no-type.fits"]
    assert "DATE-OBS is missing" in reasons["WFI.no-date.fits"]
    assert "unknown instrument 'OmegaCAM-unknown'" in reasons["WFI.omegacam.fits"]
    lines = str(report).splitlines()
    for name in reasons:  # one line per failed file, naming it
        assert sum(name in line and line.startswith("FAILED") for line in lines) == 1
    # nothing of the failed files is in the database or the storage; the good ones are complete
    frames = list(RawFrame.all())
    assert len(frames) == 16 and {f.raw_file for f in frames} == {bias.name, dome.name}
    stored = sorted(context.storage.list())
    assert stored == sorted(f.filename for f in frames)

    # again: the good ones are skipped as duplicates, a changed file under a known name fails
    changed = tmp_path / "changed"
    changed.mkdir()
    _rewrite(bias, changed / bias.name, data=lambda d: d + 1)
    again = ingest([bias, dome, changed / bias.name])
    assert [r.status for r in again.results] == ["skipped", "skipped", "failed"]
    assert "already ingested (8 chips in project TESTER)" in again.results[0].message
    assert "from a different file" in again.results[2].message
    assert len(RawFrame.all()) == 16
    # a chip deleted since is restored from the raw file, the others stay
    lost = (RawFrame.filename == "WFI.2003-03-03T18:02:46.015_4.fits")[0]
    context.delete(lost)
    repaired = ingest([bias])
    assert [f.filename for f in repaired.frames] == [lost.filename]
    assert "1 chips (the other 7 were in project TESTER already)" in repaired.results[0].message
    assert len(RawFrame.all()) == 16


def test_compressed_files(sqlite_db, night, tmp_path):
    twilight = _raw(night, "2003-03-03T23:46:15.975")
    dome = _raw(night, "2003-03-03T19:48:27.232")
    packed = tmp_path / "packed"
    packed.mkdir()
    z_file = packed / (twilight.name + ".Z")
    z_file.write_bytes(lzw_compress(twilight.read_bytes()))
    gz_file = packed / (dome.name + ".gz")
    gz_file.write_bytes(gzip.compress(dome.read_bytes()))
    report = ingest(packed)
    assert [r.status for r in report.results] == ["ingested", "ingested"], str(report)
    frames = {f.filename: f for f in report.frames}
    assert {f.raw_file for f in frames.values()} == {twilight.name, dome.name}
    with fits.open(twilight) as raw, fits.open(frames["WFI.2003-03-03T23:46:15.975_3.fits"].local_path()) as chip:
        np.testing.assert_array_equal(chip[0].data, raw[3].data)
    # the plain files hold the same exposures: nothing to add
    again = ingest([twilight, dome])
    assert [r.status for r in again.results] == ["skipped", "skipped"]
    # a damaged .Z fails alone
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / z_file.name).write_bytes(z_file.read_bytes()[: z_file.stat().st_size // 2])
    failed = ingest(damaged)
    assert failed.results[0].status == "failed" and "truncated" in failed.results[0].message


# ====================================================================== sanity checks
def test_quality_flags(db, night, tmp_path):
    bias = _raw(night, "2003-03-03T19:01:05.890")
    flat = _raw(night, "2003-03-03T19:45:17.277")
    odd = tmp_path / "odd"
    odd.mkdir()
    _rewrite(bias, odd / "bias-leak.fits", header={"DATE-OBS": "2003-03-03T20:00:00.000"},
             data=lambda d: d.astype(np.int64) + 3000)
    _rewrite(bias, odd / "bias-constant.fits", header={"DATE-OBS": "2003-03-03T20:01:00.000"},
             data=lambda d: np.full_like(d, 200))
    _rewrite(flat, odd / "flat-saturated.fits", header={"DATE-OBS": "2003-03-03T20:02:00.000"},
             data=lambda d: np.minimum(d.astype(np.int64) * 3, 65535))
    _rewrite(flat, odd / "flat-faint.fits", header={"DATE-OBS": "2003-03-03T20:03:00.000"},
             data=lambda d: d.astype(np.int64) // 20)
    report = ingest([bias, flat, odd])
    assert len(report.ingested) == 6, str(report)
    flags = {r.path.name: {f.quality_flags for f in r.frames} for r in report.results}
    assert flags[bias.name] == {0} and flags[flat.name] == {0}
    assert flags["bias-leak.fits"] == {QualityFlags.WRONG_LEVEL}
    assert flags["bias-constant.fits"] == {QualityFlags.EMPTY}
    assert flags["flat-saturated.fits"] == {QualityFlags.SATURATED}
    assert flags["flat-faint.fits"] == {QualityFlags.WRONG_LEVEL}
    assert "flagged: ccd50 ['WRONG_LEVEL']" in str(report)
    # select() skips the flagged frames; the query language still sees them
    assert [f.raw_file for f in RawBiasFrame.select(instrument="WFI", chip="ccd50")] == [bias.name]
    assert [f.raw_file for f in RawDomeFlatFrame.select(instrument="WFI", chip="ccd50", filter="#844")] == [flat.name]
    assert len(RawBiasFrame.chip.name == "ccd50") == 3
    # the thresholds are parameters: a stricter bias range flags the normal bias
    strict = ingest([_raw(night, "2003-03-03T19:18:48.680")], thresholds={"BIAS_MAX_LEVEL": 150.0})
    assert {f.quality_flags for f in strict.frames} == {QualityFlags.WRONG_LEVEL}
    assert strict.frames[0].process_params["ingest_params"]["BIAS_MAX_LEVEL"] == 150.0
    with pytest.raises(ValueError, match="BIAS_MAX"):
        ingest([], thresholds={"BIAS_MAX": 1.0})


# ====================================================================== pure parts
@pytest.mark.parametrize("cards, expected", [
    ({"HIERARCH ESO DPR TYPE": "BIAS"}, RawBiasFrame),
    ({"HIERARCH ESO DPR TYPE": "FLAT,DOME"}, RawDomeFlatFrame),
    ({"HIERARCH ESO DPR TYPE": "FLAT,SKY"}, RawTwilightFlatFrame),
    ({"HIERARCH ESO DPR TYPE": "STD"}, RawStandardFrame),
    ({"HIERARCH ESO DPR TYPE": "OBJECT", "OBJECT": "BIAS"}, RawScienceFrame),  # DPR TYPE decides
    ({"IMAGETYP": "zero", "EXPTIME": 0.0}, RawBiasFrame),
    ({"OBJECT": "Dome flat R", "EXPTIME": 20.0}, RawDomeFlatFrame),
    ({"OBJECT": "SKYFLAT", "EXPTIME": 8.0}, RawTwilightFlatFrame),
    ({"OBJECT": "SA 98", "EXPTIME": 10.0}, RawStandardFrame),
    ({"EXPTIME": 0.0}, RawBiasFrame),
    ({"OBJECT": "NGC 253", "EXPTIME": 300.0}, RawScienceFrame),
])
def test_classify(cards, expected):
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    assert classify(header)[0] is expected


@pytest.mark.parametrize("cards, message", [
    ({"EXPTIME": 300.0}, "DPR TYPE is missing"),
    ({}, "DPR TYPE is missing"),
    ({"HIERARCH ESO DPR TYPE": "DARK"}, "not a frame type awe ingests"),
])
def test_classify_refuses(cards, message):
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    with pytest.raises(IngestError, match=message):
        classify(header)


@pytest.mark.parametrize("dtype, size", [(np.uint16, 1), (np.uint16, 1000), (np.uint16, 1001), (np.int16, 777),
                                         (np.float32, 500)])
def test_raw_imstat_matches_numpy(dtype, size):
    rng = np.random.default_rng(size)
    data = rng.normal(100 if dtype is np.int16 else 3000, 800, size).astype(dtype)
    stat = raw_imstat(data)
    values = data.astype(np.float64)
    assert stat.median == pytest.approx(np.median(values), rel=1e-7)  # exact for integers
    assert stat.min == values.min() and stat.max == values.max()
    if dtype is not np.float32:
        assert stat.median == np.median(values)
    assert stat.mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-9)
    assert stat.stdev == pytest.approx(values.std(), rel=1e-9, abs=1e-9)


def test_chip_stats_split_whole_and_illuminated_area():
    rng = np.random.default_rng(11)
    data = rng.normal(180, 3, (70, 50)).astype(np.uint16)
    area = (slice(2, 66), slice(6, 44))
    data[area] = rng.normal(17000, 500, (64, 38)).astype(np.uint16)
    whole, lit = chip_stats(data, area)
    assert whole == raw_imstat(data)
    assert lit == raw_imstat(data[area])
    assert lit.min > 15000 and whole.min < 200
    whole_f, lit_f = chip_stats(data.astype(np.float32), area)
    assert (whole_f.median, lit_f.median) == (whole.median, lit.median)


def test_lzw_encoder_round_trip():
    import io

    import uncompresspy
    data = np.random.default_rng(5).normal(2000, 30, 200000).astype(">i2").tobytes()
    packed = lzw_compress(data)
    assert len(packed) < len(data)
    with uncompresspy.LZWFile(io.BytesIO(packed)) as fh:
        assert fh.read() == data
    assert IngestParams().SATURATION_LEVEL == 0.0
