"""Calibration tasks (spec sections 6-8) on a simulated course night, against the simulator's truth.

One module-scoped night (scale 0.125, one seed): the calibration exposures of
the course are simulated, ingested into a fresh SQLite context, and the chain
BiasTask -> HotPixelsTask -> DomeFlatTask -> ColdPixelsTask -> TwilightFlatTask
-> MasterFlatTask is run for ccd50 (two hot columns) and ccd57 (a hot and a dead
column) as the spec writes it. Then: accuracy against the truth, the spec's
listings and Pars tree, commit=0, lineage, logs, QC, reuse and bad input.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest

from awe import context
from awe.db.query import observing_night
from awe.instruments import get_instrument
from awe.model import ColdPixelMap, HotPixelMap, QualityFlags, RawBiasFrame, RawDomeFlatFrame, RawTwilightFlatFrame
from awe.model._io import read_header
from awe.pars import Pars
from awe.sim import Truth, simulate_night
from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,
                       MissingCalibrationError, TaskError, TwilightFlatTask)
from awe.tasks.base import select_calibration
from awe.tasks.calibration import RowFile, bias_read_noise
from tests import _factory
from tests._truth import chip_truth as _chip_truth, flat_errors as _flat_errors, trim as _trim, \
    true_master_bias as _true_master_bias

SCALE = 0.125
SEED = 1
CHIPS = ("ccd50", "ccd57")
NIGHT = "2003-03-03"
# the calibration exposures of the course night (spec section 6)
BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680", "2003-03-03T19:20:11.815", "2003-03-03T19:21:15.723",
          "2003-03-03T19:22:22.821", "2003-03-03T19:23:24.843", "2003-03-03T19:24:24.163",
          "2003-03-03T19:25:31.810"]
DOMES = ["2003-03-03T19:45:17.277", "2003-03-03T19:46:58.069", "2003-03-03T19:48:27.232"]
TWILIGHTS = ["2003-03-03T23:46:15.975", "2003-03-03T23:48:12.051", "2003-03-03T23:50:42.573"]

SPEC_PARS = """BiasFrame
|
+--process_params
| |
|  +--MAXIMUM_ABS_MEAN: 10.0
|  +--MAXIMUM_STDEV: 10.0
|  +--MAXIMUM_STDEV_DIFFERENCE: 10.0
|  +--MAXIMUM_SUBWIN_FLATNESS: 100000.0
|  +--MAXIMUM_SUBWIN_STDEV: 100000.0
|  +--OVERSCAN_CORRECTION: 6
|  +--SIGMA_CLIP: 3.0
"""


_chip_file = _factory.chip_file


def _chain(chip: str, inspect: int = 0) -> dict:
    """The spec's calls (section 6), committing each product."""
    made = {"bias": BiasTask(instrument='WFI', chip=chip, overscan=6, commit=1, inspect=inspect).execute()}
    made["hot"] = HotPixelsTask(instrument='WFI', chip=chip, date='2003-03-03', commit=1).execute()
    made["dome"] = DomeFlatTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844', commit=1,
                                inspect=inspect).execute()
    made["cold"] = ColdPixelsTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844',
                                  commit=1).execute()
    made["twilight"] = TwilightFlatTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844',
                                        commit=1).execute()
    made["master"] = MasterFlatTask(instrument='WFI', chip=chip, date='2003-03-03', filter='#844', commit=1,
                                    inspect=inspect).execute()
    for key, products in made.items():
        assert len(products) == 1, key
    return {key: products[0] for key, products in made.items()}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    raw = simulate_night(root / "raw", scale=SCALE, seed=SEED, only=BIASES + DOMES + TWILIGHTS)
    storage = _factory.ingest_into_fresh_context(root, raw)
    # spec: "create a master BIAS, without saving it in the DB" -- then with commit=1
    before = _factory.db_state(storage)
    dry = BiasTask(instrument='WFI', chip='ccd50', overscan=6, commit=0).execute()
    after = _factory.db_state(storage)
    products = {chip: _chain(chip, inspect=int(chip == "ccd50")) for chip in CHIPS}
    yield SimpleNamespace(truth=Truth(raw), root=root, storage=storage, workdir=root / "work", products=products,
                          dry=dry, dry_before=before, dry_after=after)
    context.close()


# ----------------------------------------------------------------------------- the spec as written
def test_spec_listings(night):
    q = (RawBiasFrame.instrument.name == 'WFI') & (RawBiasFrame.chip.name == 'ccd50')
    assert len(q) == 10
    assert sorted(b.filename for b in q) == sorted(_chip_file(d, "ccd50") for d in BIASES)
    q = RawDomeFlatFrame.select(instrument='WFI', chip='ccd50', filter='#844')
    assert sorted(d.filename for d in q) == sorted(_chip_file(d, "ccd50") for d in DOMES)
    q = RawTwilightFlatFrame.select(instrument='WFI', chip='ccd50', filter='#844')
    assert len(q) == 3


def test_pars_show_is_the_spec_tree(capsys):
    Pars(BiasTask).show()
    assert capsys.readouterr().out == SPEC_PARS


def test_commit0_leaves_database_and_storage_untouched(night):
    (product,) = night.dry
    assert night.dry_before == night.dry_after
    assert product.object_id is None
    assert (night.workdir / product.filename).is_file()
    committed = night.products["ccd50"]["bias"]
    assert committed.object_id is not None and committed.filename != product.filename
    assert np.allclose(product.load(), committed.load())


def test_products_committed_with_validity_mode_and_types(night):
    start, end = observing_night(NIGHT, get_instrument("WFI").longitude_deg)
    for chip in CHIPS:
        for key, product in night.products[chip].items():
            assert product.object_id is not None and product.quality_flags == 0, (chip, key)
            assert product.overscan_correction == 6, (chip, key)
            assert product.chip.name == chip
            assert product.process_params["process_params"]
            assert (product.timestamp_start, product.timestamp_end) == (start, end), (chip, key)
            assert product.covers(product.DATE_OBS) and not product.covers(end + dt.timedelta(seconds=1))
            assert context.storage.exists(product.filename)
            assert product.load().shape == (product.NAXIS2, product.NAXIS1) == night.truth.geometry(chip).trim_shape
        products = night.products[chip]
        assert products["bias"].filter is None and products["hot"].filter is None
        assert products["master"].filter.name == "#844"
        for key in ("hot", "cold"):
            assert read_header(products[key].local_path())["BITPIX"] == 8  # masks are uint8 images


# ----------------------------------------------------------------------------- accuracy against the truth
# Tolerances are about twice the worst of ccd50 and ccd57 over seeds 1-3 (the figures in the comments).
@pytest.mark.parametrize("chip", CHIPS)
def test_master_bias_matches_truth(night, chip):
    truth, bias = night.truth, night.products[chip]["bias"]
    residual = bias.load() - _true_master_bias(truth, chip)
    normal = ~truth.hot_pixels(chip)[_trim(truth, chip)]
    expected_noise = _chip_truth(truth, chip)["read_noise_adu"] / np.sqrt(bias.nframes)
    assert bias.nframes == 10
    assert abs(float(np.mean(residual[normal]))) < 0.025  # measured |mean| <= 0.0116 ADU
    # the per-row overscan median and the clipping add noise: measured +7.5 .. +8.2 %
    assert 0.0 < float(np.std(residual[normal])) / expected_noise - 1 < 0.17


@pytest.mark.parametrize("chip", CHIPS)
def test_read_noise_and_gain_match_truth(night, chip):
    row = _chip_truth(night.truth, chip)
    products = night.products[chip]
    assert abs(products["bias"].read_noise_adu / row["read_noise_adu"] - 1) < 0.04  # measured +0.7 .. +2.0 %
    assert abs(products["dome"].gain / row["gain"] - 1) < 0.014  # measured within 0.69 %
    assert abs(products["twilight"].gain / row["gain"] - 1) < 0.015  # measured within 0.76 %
    assert products["master"].gain == products["dome"].gain


def test_read_noise_ignores_row_jitter():
    rng = np.random.default_rng(3)
    frames = [rng.normal(0, 2.0, (300, 200)).astype(np.float32) + rng.normal(0, 5, (300, 1)).astype(np.float32)
              for _ in range(4)]
    assert abs(bias_read_noise(frames) / 2.0 - 1) < 0.006  # measured -0.31 % (within 0.32 % over seeds 3-7)


def _amplifier_excess(truth, chip):
    """How far each column next to the amplifier sits above the next 40 (the simulator's bias structure)."""
    section = _trim(truth, chip)
    pattern = truth.bias_pattern(chip)[section]
    columns = np.median(pattern, axis=0)
    return columns[:16] - np.median(columns[16:56])


@pytest.mark.parametrize("chip", CHIPS)
def test_hot_pixel_map_matches_truth(night, chip):
    """All true hot pixels found, ~no false ones, although the bias has columns a few ADU above their
    neighbours next to the amplifier (a 2-D smooth alone flags 1.2-2.0 % of the chip there)."""
    truth, hot = night.truth, night.products[chip]["hot"]
    assert _amplifier_excess(truth, chip).max() > 3.0  # the structure is there
    true_hot = truth.hot_pixels(chip)[_trim(truth, chip)]
    found = hot.mask()
    assert (found & true_hot).sum() == true_hot.sum()  # measured: all, on every chip of seeds 1-3
    assert (found & ~true_hot).sum() <= 2  # measured 0 (0-1 on the other chips)
    assert hot.quality_flags == 0
    assert hot.n_bad_pixels == found.sum() and hot.bad_fraction == pytest.approx(found.mean())
    assert np.array_equal(hot.weight(), (~found).astype(np.float32))
    x0 = _trim(truth, chip)[1].start
    assert sorted(hot.bad_columns) == sorted(int(c["x"]) - x0 for c in truth.hot_columns(chip))


@pytest.mark.parametrize("chip", CHIPS)
def test_cold_pixel_map_matches_truth(night, chip):
    truth, cold = night.truth, night.products[chip]["cold"]
    trim = _trim(truth, chip)
    true_cold = truth.cold_pixels(chip, include_columns=False)[trim]
    found = cold.mask()
    assert (found & true_cold).sum() == true_cold.sum()  # measured: all
    x0, y0 = trim[1].start, trim[0].start
    columns = truth.bad_columns(chip)
    for col in columns:
        rows = slice(max(int(col["y0"]) - y0, 0), int(col["y1"]) - y0)
        assert found[rows, int(col["x"]) - x0].all(), col
    # good pixels lost: only the dead run of a partially dead column is masked (was 229 on ccd57)
    assert (found & ~truth.cold_pixels(chip)[trim]).sum() <= 2  # measured 0
    if chip == "ccd57":
        assert len(columns) == 1  # the night has a dead column on this chip, over 45 % of it
        assert int(columns[0]["x"]) - x0 in cold.bad_columns


@pytest.mark.parametrize("chip", CHIPS)
def test_master_flat_matches_truth(night, chip):
    truth, products = night.truth, night.products[chip]
    good = ~(truth.cold_pixels(chip)[_trim(truth, chip)] | products["cold"].mask())
    small, large = _flat_errors(products["master"].load(), truth, chip, good)
    _, dome_large = _flat_errors(products["dome"].load(), truth, chip, good)
    # the pixel scale is the dome flats' photon noise: measured 1.038-1.044 x 1/sqrt(gain x sum of levels)
    photon = 1.0 / np.sqrt(_chip_truth(truth, chip)["gain"] * sum(products["dome"].levels))
    assert 1.0 < small / photon < 1.09
    assert large < 0.002  # measured 0.00094-0.00102
    assert large < 0.5 * dome_large  # the twilight's large scales fix the dome lamp's pattern (0.16-0.24 x)
    assert products["master"].smoothing_scale_pix == round(64 * SCALE)
    assert np.median(products["master"].load()) == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------- lineage, logs, figures, reuse
def test_lineage_reaches_raw_frames(night):
    master = night.products["ccd50"]["master"]
    raw = {f.filename for f in master.dependencies(raw_only=True)}
    expected = {_chip_file(d, "ccd50") for d in BIASES + DOMES + TWILIGHTS}
    assert raw == expected
    every = {type(o).__name__ for o in master.dependencies()}
    assert {"DomeFlatFrame", "TwilightFlatFrame", "BiasFrame", "HotPixelMap", "ColdPixelMap"} <= every
    assert master.inputs()["domeflat"][0] == night.products["ccd50"]["dome"]
    assert night.products["ccd50"]["twilight"].cold_pixels == night.products["ccd50"]["cold"]
    assert night.products["ccd50"]["bias"].derived()


def test_log_names_the_chosen_bias_and_reuses_identical_product(night, caplog):
    bias = night.products["ccd50"]["bias"]
    with caplog.at_level(logging.INFO, logger="awe"):
        (again,) = DomeFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844',
                                commit=1).execute()
    assert again == night.products["ccd50"]["dome"]  # identical product reused, nothing new committed
    chosen = [r.getMessage() for r in caplog.records if "chose" in r.getMessage()]
    assert any(msg.startswith("BiasFrame for") and bias.filename in msg for msg in chosen)
    assert any("identical DomeFlatFrame exists" in r.getMessage() for r in caplog.records)


def test_logfile_in_the_working_folder(night):
    bias = night.products["ccd50"]["bias"]
    HotPixelsTask(instrument='WFI', chip='ccd50', date='2003-03-03', commit=0, logfile=1, redo=1).execute()
    text = (night.workdir / "HotPixelsTask.log").read_text()
    assert "HotPixelsTask started" in text and bias.filename in text


def test_inspect_saves_one_figure_per_step(night):
    for key in ("bias", "dome", "master"):
        product = night.products["ccd50"][key]
        assert (night.workdir / (product.filename[:-5] + ".png")).stat().st_size > 10_000
    assert not list(night.workdir.glob(night.products["ccd50"]["hot"].filename[:-5] + "*.png"))


def test_bias_qc_against_previous_master_and_limits(night):
    """The stdev of the difference with the previous (10-frame) master reads what the shared frames imply,
    also when nearly all are shared (the clipped statistic read 0.000 ADU then), and fails above its limit."""
    rn = _chip_truth(night.truth, "ccd50")["read_noise_adu"]
    names = [_chip_file(d, "ccd50") for d in BIASES]
    before = _factory.db_state(night.storage)
    for n, ratio in ((5, 1.12), (9, 1.175)):  # measured 1.113-1.123 and 1.174-1.178 (seeds 1-3, ccd50, ccd57)
        (part,) = BiasTask(raw_filenames=names[:n], commit=0).execute()
        # plain means of n frames out of the same 10: rn * sqrt(1/n + 1/10 - 2 n / (10 n)); clipped means
        # are noisier (the clipped statistic read 1.065 and 1.047 x this)
        expected = rn * np.sqrt(1 / n + 1 / 10 - 2 / 10)
        assert abs(part.stdev_difference / expected - ratio) < 0.03, n
        assert part.quality_flags == 0 and part.nframes == n
    pars = Pars(BiasTask)
    pars.BiasFrame.process_params.SIGMA_CLIP = 2.5
    (same,) = BiasTask(instrument='WFI', chip='ccd50', pars=pars, commit=0).execute()
    assert 0.15 < same.stdev_difference < 0.4  # the same 10 frames, clipped harder: measured 0.238
    pars = Pars(BiasTask)
    pars.BiasFrame.process_params.MAXIMUM_STDEV = 0.5
    pars.BiasFrame.process_params.MAXIMUM_STDEV_DIFFERENCE = 0.3
    (strict,) = BiasTask(raw_filenames=names[:5], pars=pars, commit=0).execute()
    assert strict.quality_flags == QualityFlags.TOO_NOISY | QualityFlags.DIFFERS_FROM_PREVIOUS
    failed = {r["parameter"]: r for r in strict.qc_report if r["failed"]}
    assert set(failed) == {"BiasFrame.process_params.MAXIMUM_STDEV",
                           "BiasFrame.process_params.MAXIMUM_STDEV_DIFFERENCE"}
    assert failed["BiasFrame.process_params.MAXIMUM_STDEV_DIFFERENCE"]["value"] == pytest.approx(
        strict.stdev_difference)
    assert failed["BiasFrame.process_params.MAXIMUM_STDEV_DIFFERENCE"]["limit"] == 0.3
    passed = {r["parameter"].rsplit(".", 1)[1] for r in strict.qc_report if not r["failed"]}
    assert passed == {"MAXIMUM_ABS_MEAN", "MAXIMUM_SUBWIN_FLATNESS", "MAXIMUM_SUBWIN_STDEV"}
    assert _factory.db_state(night.storage) == before


def test_refused_calibration_names_the_check_its_value_and_parameter(night, caplog):
    """A flat made without a hot pixel map warns; a hot pixel map refused by its QC is named with the check
    that failed, its value, its limit and the parameter to relax -- not 'make one' (which makes it again)."""
    chip = "ccd54"
    BiasTask(instrument='WFI', chip=chip, commit=1).execute()
    with caplog.at_level(logging.INFO, logger="awe"):
        DomeFlatTask(instrument='WFI', chip=chip, date=NIGHT, filter='#844', commit=0).execute()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "without a HotPixelMap" in r.getMessage()]
    assert warned and "HotPixelsTask(" in warned[0].getMessage()
    pars = Pars(HotPixelsTask)
    pars.HotPixelMap.process_params.MAXIMUM_FRACTION = 1e-5
    (strict,) = HotPixelsTask(instrument='WFI', chip=chip, date=NIGHT, pars=pars, commit=1).execute()
    assert strict.object_id is not None and strict.quality_flags == QualityFlags.TOO_NOISY
    (record,) = strict.qc_report
    assert record == {"check": "hot pixel fraction", "value": pytest.approx(strict.bad_fraction), "limit": 1e-5,
                      "parameter": "HotPixelMap.process_params.MAXIMUM_FRACTION", "relation": ">",
                      "failed": True, "flag": "TOO_NOISY"}
    raw = RawDomeFlatFrame.select(instrument='WFI', chip=chip, filter='#844')[0]
    with pytest.raises(MissingCalibrationError) as info:
        select_calibration(HotPixelMap, raw, logging.getLogger("test"))
    message = str(info.value)
    for words in (strict.filename, "hot pixel fraction = ", f"{strict.bad_fraction:.4g} > 1e-05",
                  "raise HotPixelMap.process_params.MAXIMUM_FRACTION", "pars = Pars(HotPixelsTask)", "redo=1"):
        assert words in message, (words, message)
    assert "Make one first" not in message
    assert info.value.qc_failures == [(strict.filename, record)]
    pars.HotPixelMap.process_params.MAXIMUM_FRACTION = 0.01
    (relaxed,) = HotPixelsTask(instrument='WFI', chip=chip, date=NIGHT, pars=pars, commit=1).execute()
    assert relaxed.quality_flags == 0 and select_calibration(HotPixelMap, raw, logging.getLogger("test")) == relaxed


def test_streaming_row_file_roundtrip(tmp_path):
    image = np.arange(35, dtype=np.float32).reshape(7, 5)
    reader = RowFile.write(tmp_path / "x.f32", image)
    assert np.array_equal(reader(slice(2, 5)), image[2:5])
    assert np.array_equal(reader.read(), image)
    assert not hasattr(reader, "shape")  # a row reader for awe.image.combine


# ----------------------------------------------------------------------------- bad input: clear errors, no commit
def _refused(night, make, error, *words):
    before = _factory.db_state(night.storage)
    with pytest.raises(error) as info:
        make()
    assert _factory.db_state(night.storage) == before
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return info.value


def test_flat_without_master_bias(night):
    _refused(night, lambda: DomeFlatTask(instrument='WFI', chip='ccd51', date=NIGHT, filter='#844',
                                         commit=1).execute(),
             MissingCalibrationError, "no valid BiasFrame", "ccd51", "BiasTask")


def test_missing_pixel_maps_name_the_task_that_makes_them(night):
    raw = RawDomeFlatFrame.select(instrument='WFI', chip='ccd51', filter='#844')[0]
    for cls, task in ((HotPixelMap, "HotPixelsTask("), (ColdPixelMap, "ColdPixelsTask(")):
        with pytest.raises(MissingCalibrationError, match=re.escape(task)):
            select_calibration(cls, raw, logging.getLogger("test"))
    _refused(night, lambda: HotPixelsTask(instrument='WFI', chip='ccd51', commit=1).execute(),
             MissingCalibrationError, "no valid BiasFrame", "BiasTask(")


def test_master_bias_of_another_overscan_mode_is_refused(night):
    bias = night.products["ccd50"]["bias"]
    _refused(night, lambda: DomeFlatTask(instrument='WFI', chip='ccd50', date=NIGHT, filter='#844', overscan=2,
                                         commit=1).execute(),
             MissingCalibrationError, bias.filename, "OVERSCAN_CORRECTION=6", "uses 2")


def test_flats_of_another_filter(night):
    _refused(night, lambda: DomeFlatTask(instrument='WFI', chip='ccd50', date=NIGHT, filter='#842',
                                         commit=1).execute(), TaskError, "#842", "#844")
    _refused(night, lambda: MasterFlatTask(instrument='WFI', chip='ccd50', date=NIGHT, filter='#842',
                                           commit=1).execute(), MissingCalibrationError, "DomeFlatFrame", "#842")


def test_chip_mismatch(night):
    ccd50 = [_chip_file(d, "ccd50") for d in BIASES]
    _refused(night, lambda: BiasTask(chip='ccd51', raw_filenames=ccd50, commit=1).execute(),
             TaskError, "ccd51", "ccd50")
    mixed = ccd50[:3] + [_chip_file(d, "ccd51") for d in BIASES[:3]]
    _refused(night, lambda: BiasTask(raw_filenames=mixed, commit=1).execute(), TaskError, "different chips")
    _refused(night, lambda: HotPixelsTask(instrument='WFI', chip='ccd99', commit=1).execute(), TaskError, "ccd99")


def test_wrong_kind_of_raw_frame(night):
    _refused(night, lambda: BiasTask(raw_filenames=[_chip_file(DOMES[0], "ccd50")], commit=1).execute(),
             TaskError, "RawDomeFlatFrame, not a RawBiasFrame")
    _refused(night, lambda: BiasTask(raw_filenames=["WFI.2001-01-01T00:00:00.000_1.fits"], commit=1).execute(),
             TaskError, "not in the database")


def test_too_few_frames(night):
    _refused(night, lambda: BiasTask(raw_filenames=[_chip_file(d, "ccd50") for d in BIASES[:2]],
                                     commit=1).execute(), TaskError, "at least 3")
    pars = Pars(DomeFlatTask)
    pars.DomeFlatFrame.process_params.MINIMUM_FRAMES = 4
    _refused(night, lambda: DomeFlatTask(instrument='WFI', chip='ccd50', date=NIGHT, filter='#844', pars=pars,
                                         commit=1).execute(), TaskError, "MINIMUM_FRAMES", "3 raw dome flats")


def test_bad_hot_pixel_parameters(night):
    pars = Pars(HotPixelsTask)
    pars.HotPixelMap.process_params.ROW_WINDOW = 1
    _refused(night, lambda: HotPixelsTask(instrument='WFI', chip='ccd50', date=NIGHT, pars=pars, commit=1).execute(),
             ValueError, "HotPixelMap.process_params", "ROW_WINDOW must be >= 3")


def test_wrong_night(night):
    _refused(night, lambda: BiasTask(instrument='WFI', chip='ccd50', date='2003-03-05', commit=1).execute(),
             TaskError, "2003-03-03")


def test_every_frame_flagged(night):
    flats = list(RawTwilightFlatFrame.select(instrument='WFI', chip='ccd53', filter='#844'))
    assert len(flats) == 3
    try:
        for f in flats:
            f.update(quality_flags=QualityFlags.SATURATED)
        _refused(night, lambda: TwilightFlatTask(instrument='WFI', chip='ccd53', date=NIGHT, filter='#844',
                                                 commit=1).execute(), TaskError, "all 3 are flagged", "SATURATED")
        _refused(night, lambda: TwilightFlatTask(raw_filenames=[f.filename for f in flats], commit=1).execute(),
                 TaskError, "all 3 raw twilight flats given are flagged")
    finally:
        for f in flats:
            f.update(quality_flags=0)
