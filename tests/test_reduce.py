"""ReduceTask (spec sections 6-8) on a simulated course night, against the simulator's truth.

One module-scoped night (scale 0.125, one seed): the calibration exposures,
the standard field of 04:42:29 and the six 3C273 exposures are simulated and
ingested into a fresh SQLite context; the missing-calibration errors are
checked on the way, the calibration chain runs for ccd50 (one of the chips
the satellite of the third 3C273 exposure crosses) and then the spec's two
ReduceTask calls. An illumination correction made from the truth is then
committed and a 3C273 frame reduced again with it. For the mosaic
satellite pass the other chips the satellite crosses are calibrated too:
the chip whose corner it only cuts is reduced alone, the pass is run on its
own (FollowSatellitesTask, commit=0), and then one ReduceTask reduces every
crossed chip of the exposure (the pass runs by itself). A copy of the
standard-field file whose headers carry SIP and TPV distortion is reduced
to check that the WCS survives the trim.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sep
from scipy import ndimage as ndi

from awe.db.commit import commit
from awe import context
from awe.db.query import observing_night
from awe.image.weights import COLD, COSMIC, HOT, SATELLITE
from awe.model import (BiasFrame, IlluminationCorrection, IlluminationFit, RawBiasFrame, RawScienceFrame,
                       ReducedScienceFrame, SatelliteMap, WeightFrame)
from awe.model._io import read_header, write_image
from awe.model.science import ReducedScienceParams
from awe.pars import Pars
from awe.sim import Truth, simulate_night
from awe.instruments import get_instrument
from awe.tasks import (BiasTask, ColdPixelsTask, DomeFlatTask, HotPixelsTask, MasterFlatTask,
                       MissingCalibrationError, ReduceTask, TaskError, TwilightFlatTask)
from awe.tasks.ingest import ingest
from awe.tasks.reduce import FollowSatellitesTask, header_wcs, trimmed_wcs_cards
from tests import _factory
from tests._truth import star_pixels

SCALE = 0.125
SEED = 1
CHIP = "ccd50"
BIASES = ["2003-03-03T18:02:46.015", "2003-03-03T18:59:58.474", "2003-03-03T19:01:05.890",
          "2003-03-03T19:18:48.680", "2003-03-03T19:20:11.815"]
DOMES = ["2003-03-03T19:45:17.277", "2003-03-03T19:46:58.069", "2003-03-03T19:48:27.232"]
TWILIGHTS = ["2003-03-03T23:46:15.975", "2003-03-03T23:48:12.051", "2003-03-03T23:50:42.573"]
STANDARD = "2003-03-04T04:42:29.496"
SCIENCE = ["2003-03-04T04:43:52.117", "2003-03-04T04:48:39.640", "2003-03-04T04:53:26.208",
           "2003-03-04T04:58:13.771", "2003-03-04T05:03:00.339", "2003-03-04T05:07:47.902"]
CROSSED_EXPOSURE = SCIENCE[2]           # the exposure the satellite crosses
DISTORTED = "2003-03-04T04:44:30.000"   # a copy of the standard field with SIP and TPV headers

SPEC_SATELLITE_PARS = """SatelliteMap
|
+--process_params
| |
|  +--DETECTION_THRESHOLD: 5.0
|  +--HOUGH_THRESHOLD: 1000.0
"""


def _chip_file(date_obs: str, chip: str = CHIP) -> str:
    return _factory.chip_file(date_obs, chip)


def _error(call) -> str:
    with pytest.raises(MissingCalibrationError) as info:
        call()
    return str(info.value)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _truth_illumination(truth: Truth, filename: str) -> IlluminationCorrection:
    """An illumination correction of ccd50 fitted to the simulator's illumination (as the photometry would)."""
    trim = truth.geometry(CHIP).trim
    illumination = truth.flat_components(CHIP)["illumination"][trim]
    illumination = illumination / np.median(illumination)
    ny, nx = illumination.shape
    yy, xx = np.mgrid[0:ny:4, 0:nx:4]
    fit = IlluminationFit.fit(xx, yy, illumination[::4, ::4], (ny, nx), degree=4)
    raw = RawScienceFrame.select(instrument="WFI", chip=CHIP, object="3C*")[0]
    start, end = observing_night("2003-03-03", raw.instrument.longitude)
    icm = IlluminationCorrection(instrument=raw.instrument, chip=raw.chip, filter=raw.filter, OBJECT="ILLUMINATION",
                                 DATE_OBS=raw.DATE_OBS, NAXIS1=nx, NAXIS2=ny, fit_degree=4,
                                 fit_coefficients=fit.coefficients.tolist(), fit_rms=fit.rms,
                                 timestamp_start=start, timestamp_end=end, filename=filename)
    path = write_image(Path(context.settings.workdir) / filename, fit.image())
    commit([(icm, path)])
    return icm


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("reduce")
    raw = simulate_night(root / "raw", scale=SCALE, seed=SEED,
                         only=BIASES + DOMES + TWILIGHTS + [STANDARD] + SCIENCE)
    storage = _factory.ingest_into_fresh_context(root, raw)
    standard = [_chip_file(STANDARD)]
    errors = {"bias": _error(lambda: ReduceTask(raw_filenames=standard, commit=1).execute())}
    BiasTask(instrument='WFI', chip=CHIP, overscan=6, commit=1).execute()
    HotPixelsTask(instrument='WFI', chip=CHIP, date='2003-03-03', commit=1).execute()
    errors["flat"] = _error(lambda: ReduceTask(raw_filenames=standard, commit=1).execute())
    DomeFlatTask(instrument='WFI', chip=CHIP, date='2003-03-03', filter='#844', commit=1).execute()
    ColdPixelsTask(instrument='WFI', chip=CHIP, date='2003-03-03', filter='#844', commit=1).execute()
    TwilightFlatTask(instrument='WFI', chip=CHIP, date='2003-03-03', filter='#844', commit=1).execute()
    MasterFlatTask(instrument='WFI', chip=CHIP, date='2003-03-03', filter='#844', commit=1).execute()

    before = _factory.db_state(storage)
    dry = ReduceTask(raw_filenames=standard, commit=0).execute()
    after = _factory.db_state(storage)

    records = _Records()
    logging.getLogger("awe").addHandler(records)
    level = logging.getLogger("awe").level
    logging.getLogger("awe").setLevel(logging.INFO)
    try:
        # the spec's calls (section 6)
        task = ReduceTask(raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'], commit=1, inspect=1)
        std = task.execute()
        sci = ReduceTask(instrument='WFI', chip='ccd50', object='3C*', commit=1).execute()
    finally:
        logging.getLogger("awe").removeHandler(records)
        logging.getLogger("awe").setLevel(level)
    icm = _truth_illumination(Truth(raw), "Cal-TESTER-WFI-----#844-ccd50-Illum-Cal-truth.fits")
    corrected = ReduceTask(raw_filenames=[_chip_file(SCIENCE[1])], commit=1).execute()

    # the satellite across the mosaic
    truth = Truth(raw)
    crossed = sorted(set(truth.satellite()["chips"]))
    for chip in crossed:
        if chip != CHIP:
            _factory.calibrate_chip(chip)
    corner = min(crossed, key=lambda c: int(truth.satellite_mask(_chip_file(CROSSED_EXPOSURE, c), c).sum()))
    alone = ReduceTask(raw_filenames=[_chip_file(CROSSED_EXPOSURE, corner)], commit=1).execute()
    follow_before = _factory.db_state(storage)
    followed = FollowSatellitesTask(raw_filenames=[_chip_file(CROSSED_EXPOSURE, c) for c in (CHIP, corner)],
                                    commit=0).execute()
    follow_after = _factory.db_state(storage)
    mosaic = ReduceTask(raw_filenames=[_chip_file(CROSSED_EXPOSURE, c) for c in crossed], commit=1).execute()

    # SIP on one chip, TPV on another: reduced with commit=0
    distorted_chips = (CHIP, next(c for c in crossed if c != CHIP))
    distorted = _distorted_copy(root, truth, distorted_chips)
    assert not ingest([distorted]).failed
    wcs_products = ReduceTask(raw_filenames=[_chip_file(DISTORTED, c) for c in distorted_chips]).execute()
    yield SimpleNamespace(truth=truth, root=root, storage=storage, workdir=root / "work", errors=errors,
                          dry=dry, dry_before=before, dry_after=after, std=std, sci=sci, log=records.messages,
                          icm=icm, corrected=corrected, crossed=crossed, corner=corner, alone=alone,
                          followed=followed, follow_before=follow_before, follow_after=follow_after,
                          mosaic=mosaic, distorted_chips=distorted_chips, wcs_products=wcs_products)
    context.close()


#: SIP terms of the distorted copy (3rd order, as the simulator's radial distortion, and stronger)
_SIP = {"A_ORDER": 3, "B_ORDER": 3, "A_2_0": 2e-5, "A_0_2": -1e-5, "A_3_0": 3e-8, "A_1_2": 3e-8,
        "B_1_1": 1.5e-5, "B_0_3": 3e-8, "B_2_1": 3e-8}
#: TPV terms (PV1_1 = PV2_1 = 1 is the plain TAN part)
_TPV = {"PV1_0": 0.0, "PV1_1": 1.0, "PV1_2": 0.0, "PV1_4": 0.02, "PV1_7": 0.05, "PV2_0": 0.0, "PV2_1": 1.0,
        "PV2_2": 0.0, "PV2_5": -0.01, "PV2_9": 0.04}


def _chip_extension(hdul, chip: str):
    """The extension of a raw MEF file holding ``chip`` (by detector id or EXTNAME)."""
    instrument = get_instrument("WFI")
    ids = {i.lower() for i in instrument.chip(chip).detector_ids} | {chip}
    for hdu in hdul[1:]:
        values = [hdu.header.get(k) for k in (*instrument.detector_id_keys, "EXTNAME")]
        if any(str(v).lower() in ids for v in values if v is not None):
            return hdu
    raise AssertionError(f"no extension of {chip}")


def _distorted_copy(root: Path, truth: Truth, chips: tuple[str, str]) -> Path:
    """The standard-field file as another exposure (DISTORTED), the first chip's WCS with SIP, the second's TPV."""
    from astropy.io import fits
    from astropy.time import Time
    out = root / "distorted" / f"WFI.{DISTORTED}.fits"
    out.parent.mkdir()
    with fits.open(root / "raw" / f"WFI.{STANDARD}.fits") as hdul:
        hdul[0].header["DATE-OBS"] = DISTORTED
        hdul[0].header["MJD-OBS"] = Time(DISTORTED, scale="utc").mjd
        sip, tpv = _chip_extension(hdul, chips[0]).header, _chip_extension(hdul, chips[1]).header
        sip["CTYPE1"], sip["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
        sip.update(_SIP)
        tpv["CTYPE1"], tpv["CTYPE2"] = "RA---TPV", "DEC--TPV"
        tpv.update(_TPV)
        hdul.writeto(out)
    return out


# ----------------------------------------------------------------------------- helpers on the products
def _by_class(products: list) -> dict[type, list]:
    out: dict[type, list] = {}
    for p in products:
        out.setdefault(type(p), []).append(p)
    return out


def _frames(night) -> list[tuple[str, ReducedScienceFrame, WeightFrame, SatelliteMap]]:
    """(raw file name, reduced, weight, satellite map) of the 3C273 frames of the spec's call."""
    groups = _by_class(night.sci)
    out = []
    for red in groups[ReducedScienceFrame]:
        weight = next(w for w in groups[WeightFrame] if w.reduced == red)
        sat = next(s for s in groups[SatelliteMap] if s.reduced == red)
        out.append((red.raw.filename, red, weight, sat))
    return out


def _trim(truth: Truth) -> tuple[slice, slice]:
    return truth.geometry(CHIP).trim


def _sky_blocks(image: np.ndarray, bad: np.ndarray, block: int = 64) -> np.ndarray:
    """Medians of ``block`` x ``block`` sky regions, sources (found by sep) and bad pixels left out."""
    data = np.ascontiguousarray(image, dtype=np.float64)
    back = sep.Background(data, mask=bad)
    _, segmap = sep.extract(data - back.back(), 2.0, err=back.globalrms, mask=bad, segmentation_map=True)
    masked = ndi.binary_dilation(segmap > 0, iterations=3) | bad
    ny, nx = data.shape
    medians = []
    for y in range(0, ny - block + 1, block):
        for x in range(0, nx - block + 1, block):
            values = data[y:y + block, x:x + block][~masked[y:y + block, x:x + block]]
            if values.size > block * block // 3:
                medians.append(float(np.median(values)))
    return np.asarray(medians)


# ----------------------------------------------------------------------------- the spec as written
def test_spec_calls_make_a_reduced_frame_weight_and_satellite_map_per_frame(night):
    assert [type(p) for p in night.std] == [ReducedScienceFrame, SatelliteMap, WeightFrame]
    groups = _by_class(night.sci)
    assert {k: len(v) for k, v in groups.items()} == {ReducedScienceFrame: 6, SatelliteMap: 6, WeightFrame: 6}
    assert sorted(r.raw.filename for r in groups[ReducedScienceFrame]) == [_chip_file(d) for d in SCIENCE]
    # one commit for every product of the task
    assert len({p.creation_date for p in night.sci}) == 1
    for product in night.std + night.sci:
        assert product.object_id is not None and context.storage.exists(product.filename)
        assert product.chip.name == CHIP and product.filter.name == "#844"
    red = night.std[0]
    assert red.filename.startswith("Sci-TESTER-WFI-----#844-ccd50-Red---Sci-")
    assert red.raw.filename == 'WFI.2003-03-04T04:42:29.496_1.fits'
    assert red.OBJECT == red.raw.OBJECT and red.EXPTIME == 30.0
    assert red.load().shape == (red.NAXIS2, red.NAXIS1) == night.truth.geometry(CHIP).trim_shape
    assert red.process_params["process_params"]["OVERSCAN_CORRECTION"] == red.overscan_correction == 6


def test_select_and_queries(night):
    q = ReducedScienceFrame.select(instrument='WFI', chip='ccd50', object='3C*')
    # the six of the spec's call, the one reduced again with the illumination correction, and the satellite
    # exposure reduced with it by the mosaic's ReduceTask
    q = ReducedScienceFrame.select(raw_filenames=['WFI.2003-03-04T04:42:29.496_1.fits'])
    assert [r.filename for r in q] == [night.std[0].filename]
    red = (ReducedScienceFrame.filename == night.std[0].filename)[0]
    assert red.weight == night.std[2] and red.satellites == night.std[1]
    # ccd50 at 04:53 (twice: the spec's call and, illumination-corrected, the mosaic's) and 04:58
    assert len(ReducedScienceFrame.raw.filename.like("WFI.2003-03-04T04:5*_1.fits")) == 3
    task = ReduceTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844')
    assert [f.filename for f in task._raw_frames()] == [_chip_file(d) for d in sorted([STANDARD, DISTORTED] + SCIENCE)]
    assert ReduceTask(i='WFI', c='ccd51', o='3C*')._raw_frames()[0].filename == _chip_file(SCIENCE[0], "ccd51")
    ordered = ReducedScienceFrame.select(object='3C273').order_by('psf_radius')
    radii = [r.psf_radius for r in ordered if r.psf_radius is not None]
    assert radii == sorted(radii) and len(radii) >= 5


def test_lineage_reaches_the_raw_biases(night):
    red, sat, weight = night.std
    inputs = red.inputs()
    assert [type(p).__name__ for p in inputs["bias"] + inputs["flat"] + inputs["hot_pixels"]
            + inputs["cold_pixels"]] == ["BiasFrame", "MasterFlatFrame", "HotPixelMap", "ColdPixelMap"]
    assert inputs["illumination"] == []
    raws = {d.filename for d in red.dependencies(raw_only=True)}
    assert {_chip_file(d) for d in BIASES + DOMES + TWILIGHTS} | {red.raw.filename} == raws
    assert weight.reduced == red and sat.reduced == red and weight.satellites == sat
    assert weight.flat == red.flat and weight.hot_pixels == red.hot_pixels
    assert red in weight.dependencies() and set(RawBiasFrame.filename.like("*_1.fits")) <= set(
        weight.dependencies())
    assert {p.object_id for p in red.derived()} == {sat.object_id, weight.object_id}


def test_pars_trees(capsys):
    Pars(SatelliteMap).show()
    assert capsys.readouterr().out == SPEC_SATELLITE_PARS
    pars = Pars(ReduceTask)
    assert list(pars.get()) == ["ReducedScienceFrame", "WeightFrame", "SatelliteMap"]
    assert pars.ReducedScienceFrame.process_params.OVERSCAN_CORRECTION == 6
    assert pars.ReducedScienceFrame.process_params.COSMIC_SIGCLIP == 4.5
    pars.SatelliteMap.process_params.DETECTION_THRESHOLD = 3.0
    pars.SatelliteMap.process_params.HOUGH_THRESHOLD = 900.0
    task = ReduceTask(instrument='WFI', object='3C273', pars=pars.get(), overscan=7)
    assert task.params(SatelliteMap).as_dict() == {"DETECTION_THRESHOLD": 3.0, "HOUGH_THRESHOLD": 900.0}
    assert task.params(ReducedScienceFrame).OVERSCAN_CORRECTION == 7
    with pytest.raises(ValueError, match="OVERSCAN_CORRECTION"):
        ReduceTask(instrument='WFI', overscan=5)


def test_process_params_are_stored(night):
    red, sat, weight = night.std
    assert sat.process_params == {"process_params": {"DETECTION_THRESHOLD": 5.0, "HOUGH_THRESHOLD": 1000.0}}
    assert set(weight.process_params["process_params"]) == {"USE_COSMIC_MASK", "USE_SATELLITE_MASK"}
    assert red.process_params["process_params"]["COSMIC_SIGCLIP"] == 4.5
    assert red.provenance == night.dry[0].provenance  # same inputs and parameters as the commit=0 run


def test_commit0_leaves_database_and_storage_untouched(night):
    assert night.dry_before == night.dry_after
    red, sat, weight = night.dry
    assert all(p.object_id is None for p in night.dry)
    assert all((night.workdir / p.filename).is_file() for p in night.dry)
    committed = night.std[0]
    assert np.array_equal(red.load(), committed.load())  # the same reduction, just not stored


# ----------------------------------------------------------------------------- accuracy against the truth
def test_background_is_flat_without_illumination_correction(night):
    for name, red, weight, _ in _frames(night):
        blocks = _sky_blocks(red.load(), weight.load() == 0)
        level = float(np.median(blocks))
        assert abs(level / red.background - 1) < 0.001, name                      # measured 0.05 % at most
        assert np.max(np.abs(blocks / level - 1)) < 0.005, (name, blocks / level)  # measured 0.23 %


def test_illumination_correction_is_applied_and_inspectable(night, tmp_path):
    red, sat, weight = night.corrected
    assert red.illumination == night.icm
    assert _chip_file(SCIENCE[1]) == red.raw.filename
    # spec: red.illumination.illuminationcorrection.inspect()
    red = (ReducedScienceFrame.filename == red.filename)[0]
    fit = red.illumination.illuminationcorrection
    assert fit.shape == red.load().shape and fit.rms < 2.5e-5                    # measured 1.1e-5
    figure = red.illumination.illuminationcorrection.inspect(path=tmp_path / "icm.png")
    assert (tmp_path / "icm.png").is_file() and figure is not None
    red.illumination.inspect(path=tmp_path / "icm-image.png")
    # the sky now follows the illumination: reduced / illumination truth is flat
    truth_illumination = night.truth.flat_components(CHIP)["illumination"][_trim(night.truth)]
    bad = weight.load() == 0
    blocks = _sky_blocks(red.load() / (truth_illumination / np.median(truth_illumination)), bad)
    assert np.max(np.abs(blocks / np.median(blocks) - 1)) < 0.005
    plain = next(r for n, r, _, _ in _frames(night) if n == red.raw.filename)
    ratio = red.load() / plain.load()
    good = ~bad & (plain.load() > 0)
    assert np.allclose(ratio[good], fit.image()[good], rtol=1e-4)
    # the weight is an inverse variance: the flat over the square of the correction
    plain_weight = next(w for n, _, w, _ in _frames(night) if n == red.raw.filename).load()
    both = good & (plain_weight > 0)
    assert np.allclose(weight.load()[both] * fit.image()[both] ** 2 / plain_weight[both],
                       np.median(weight.load()[both] * fit.image()[both] ** 2 / plain_weight[both]), rtol=1e-4)


def test_absent_illumination_correction_is_logged(night):
    assert any("is not illumination-corrected" in m and _chip_file(STANDARD) in m for m in night.log)
    assert any("MasterFlatFrame for WFI.2003-03-04T04:42:29.496_1.fits: chose" in m for m in night.log)


def test_satellite_track_found_in_the_right_exposure_only(night):
    truth = night.truth
    trim = _trim(truth)
    crossed = truth.satellite()["filename"]
    assert _chip_file(crossed[4:-5]) in {name for name, *_ in _frames(night)}
    for name, red, weight, sat in _frames(night):
        mask = sat.mask()
        if name.startswith(crossed[:-5]):
            true_track = truth.satellite_mask(name, CHIP)[trim]
            assert red.n_satellite_tracks == sat.n_tracks == 1
            assert mask[true_track].mean() > 0.995                                # measured: all
            assert mask.sum() < 3 * true_track.sum()                               # measured 2.0 times
            assert np.all(weight.load()[true_track & mask] == 0)
            assert np.all((weight.flags()[mask] & SATELLITE) > 0)
            segment = truth.satellite()["segments"]
            segment = segment[segment["chip"] == CHIP][0]
            true_angle = math.degrees(math.atan2(segment["y1"] - segment["y0"], segment["x1"] - segment["x0"]))
            (track,) = sat.tracks
            measured = math.degrees(math.atan2(track["y1"] - track["y0"], track["x1"] - track["x0"]))
            assert abs((measured - true_angle + 90) % 180 - 90) < 0.25            # measured 0.13 deg
        else:
            assert red.n_satellite_tracks == sat.n_tracks == 0 and sat.tracks == []
            assert not mask.any()


def _star_pixels(truth: Truth, name: str, shape: tuple[int, int], rms: float) -> np.ndarray:
    return star_pixels(truth, name, CHIP, shape, rms)


def _cosmic_scores(night, sampled: bool) -> tuple[int, int, int, int]:
    """(true cosmic-ray pixels, of them flagged, star pixels, of them flagged as cosmic rays) over the frames
    whose true FWHM is at least (``sampled``) or below 0.6 pixels."""
    truth = night.truth
    trim = _trim(truth)
    hits = found = star_pixels = stars_flagged = 0
    frames = [(night.std[0].raw.filename, night.std[0], night.std[2])] + [(n, r, w) for n, r, w, _ in _frames(night)]
    for name, red, weight in frames:
        fwhm = truth.exposure(name)["seeing_arcsec"] / truth.pixel_scale
        if (fwhm >= 0.6) != sampled:
            continue
        flags = weight.flags()
        cosmic = (flags & COSMIC) > 0
        true_cosmic = truth.cosmics(name, CHIP)[trim] & ~truth.saturated(name, CHIP)[trim]
        hits += int(true_cosmic.sum())
        found += int(cosmic[true_cosmic].sum())
        assert np.all(weight.load()[cosmic] == 0)
        assert red.n_cosmic_pixels == int(cosmic.sum())
        stars = _star_pixels(truth, name, cosmic.shape, red.background_rms)
        star_pixels += int(stars.sum())
        stars_flagged += int((cosmic & stars).sum())
    return hits, found, star_pixels, stars_flagged


def test_cosmic_rays_masked_and_stars_spared(night):
    """Frames whose stars span at least 0.6 pixel FWHM (seeing >= 1.15" at 1.9"/px): the standard field and
    the first 3C273 exposure."""
    hits, found, star_pixels, stars_flagged = _cosmic_scores(night, sampled=True)
    assert hits > 100 and star_pixels > 200
    assert found / hits >= 0.98, (found, hits)                                    # measured 99.1 %
    assert stars_flagged / star_pixels < 0.001, (stars_flagged, star_pixels)    # measured 0


def test_cosmic_rays_of_undersampled_frames(night):
    """Seeing 0.9" at 1.9"/px (FWHM ~0.5 px): a star puts ~80 % of its light in one pixel, so a single-pixel
    hit and a faint star look alike. Measured with the true PSF: ~77 % of the hit pixels found, 1-5 % of the
    star pixels taken (without the PSF check 95 % and 80 %): these bounds keep that trade-off from getting worse."""
    hits, found, star_pixels, stars_flagged = _cosmic_scores(night, sampled=False)
    assert hits > 300 and star_pixels > 500
    assert found / hits >= 0.7, (found, hits)                                     # measured 77.2 %
    assert stars_flagged / star_pixels < 0.014, (stars_flagged, star_pixels)    # measured 0.67 %


def test_seeing_matches_truth(night):
    """Within 10 % where the stars span at least 0.6 pixel FWHM, 20 % where they span ~0.5 pixel (0.9" at
    1.9"/px: even fitted at their true positions such stars come out ~7 % wide; measured at most 5.2 % and
    16.3 %); within 1.3 times its error everywhere, and marked unreliable when its error is large (at this
    scale nearly always: the bootstrap error is 18-55 % of the value)."""
    truth = night.truth
    frames = [(night.std[0].raw.filename, night.std[0])] + [(n, r) for n, r, _, _ in _frames(night)]
    frames += [(r.raw.filename, r) for r in night.mosaic if isinstance(r, ReducedScienceFrame)]
    for name, red in frames:
        true_fwhm = truth.exposure(name)["seeing_arcsec"]
        assert red.seeing is not None, name
        tolerance = 0.1 if true_fwhm / truth.pixel_scale >= 0.6 else 0.2
        if red.chip.name == CHIP:
            assert abs(red.seeing / true_fwhm - 1) < tolerance, (name, red.seeing, true_fwhm)
        assert 0.5 < red.psf_radius / red.seeing < 0.8  # half-light radius of a Moffat beta ~3: 0.63 FWHM
        assert red.n_stars_seeing >= 5 and red.seeing_error > 0
        # measured: within 0.63 times the error
        assert abs(red.seeing - true_fwhm) < 1.3 * red.seeing_error, (name, red.seeing, red.seeing_error, true_fwhm)
        limit = red.process_params["process_params"]["SEEING_MAX_ERROR"]
        if red.seeing_error > limit * red.seeing or abs(red.seeing / true_fwhm - 1) > tolerance:
            assert red.seeing_reliable is False, name
        header = read_header(red.local_path())
        assert header["SEEINGER"] == pytest.approx(red.seeing_error) and header["SEEINGOK"] == red.seeing_reliable
        assert header["NSTARSEE"] == red.n_stars_seeing
    assert any(m.startswith(_chip_file(STANDARD)) and "seeing" in m and "stars" in m for m in night.log)


def test_background_level_and_noise(night):
    truth = night.truth
    for name, red, weight, _ in _frames(night):
        exposure = truth.exposure(name)
        gain = truth.chips()["gain"][0]
        read_noise = truth.chips()["read_noise_adu"][0]
        sky = red.background
        expected_rms = math.sqrt(sky / gain + read_noise ** 2)
        assert abs(red.background_rms / expected_rms - 1) < 0.05, (name, red.background_rms, expected_rms)
        # the sky rate of the truth is before the flat-field response, normalised like the master flat
        assert abs(sky / (exposure["sky_adu_per_s"] * exposure["exptime"]) - 1) < 0.1, name
        assert red.imstat.median == pytest.approx(sky, rel=0.003)                 # measured 0.11 % at most


def test_weight_map_is_the_normalised_flat_with_masks(night):
    truth = night.truth
    trim = _trim(truth)
    red, sat, weight = night.std
    w = weight.load()
    flat = red.flat.load()
    flags = weight.flags()
    good = flags == 0
    assert np.allclose(w[good], (flat / np.median(flat[flat > 0]))[good], rtol=1e-5)
    assert np.all(w[~good] == 0)
    assert weight.n_zero_weight == int((w == 0).sum())
    hot, cold = truth.hot_pixels(CHIP)[trim], truth.cold_pixels(CHIP)[trim]
    assert ((flags & HOT) > 0)[hot].mean() > 0.99                                # measured: all
    assert ((flags & COLD) > 0)[cold].mean() > 0.99


def test_reduced_pixels_match_truth(night):
    """De-biased, flat-fielded pixels: the true sky plus noise where no source is."""
    red, _, weight = night.std
    header = read_header(red.local_path())
    raw_header = read_header(red.raw.local_path())
    x0, _, y0, _ = night.truth.geometry(CHIP).trim_box
    assert header["CRPIX1"] == pytest.approx(raw_header["CRPIX1"] - (x0 - 1))
    assert header["CRPIX2"] == pytest.approx(raw_header["CRPIX2"] - (y0 - 1))
    assert header["CD1_1"] == raw_header["CD1_1"] and header["RAWFILE"] == red.raw.filename
    assert header["BIASFILE"] == red.bias.filename and header["ILLUMFIL"] == ""


def test_inspect_saves_the_figure(night):
    red = night.std[0]
    figure = night.workdir / f"{red.filename[:-5]}-masks.png"
    assert figure.is_file() and figure.stat().st_size > 10_000


def test_identical_products_are_reused(night, caplog):
    with caplog.at_level(logging.INFO, logger="awe"):
        again = ReduceTask(raw_filenames=[_chip_file(SCIENCE[1])], commit=1).execute()
    assert [p.object_id for p in again] == [p.object_id for p in night.corrected]
    assert any("identical ReducedScienceFrame exists" in r.getMessage() for r in caplog.records)
    # other parameters of the satellite search: all three are made again (the reduced frame counts the tracks)
    pars = Pars(ReduceTask)
    pars.SatelliteMap.process_params.DETECTION_THRESHOLD = 6.0
    red, sat, weight = ReduceTask(raw_filenames=[_chip_file(SCIENCE[1])], pars=pars, commit=0).execute()
    assert red.object_id is None and sat.object_id is None and weight.object_id is None
    assert sat.process_params["process_params"]["DETECTION_THRESHOLD"] == 6.0


# ----------------------------------------------------------------------------- the WCS through the trim
def test_distortion_terms_survive_the_trim(night):
    """SIP on one chip, TPV on another: the reduced frame maps a physical pixel where the raw header does."""
    by_chip = {p.chip.name: p for p in night.wcs_products if isinstance(p, ReducedScienceFrame)}
    for chip, ctype in zip(night.distorted_chips, ("RA---TAN-SIP", "RA---TPV")):
        red = by_chip[chip]
        raw_header = read_header(red.raw.local_path())
        header = read_header(red.local_path())
        assert header["CTYPE1"] == ctype and raw_header["CTYPE1"] == ctype
        assert "CD1_1" in header and "PC1_1" not in header          # the raw header's CD convention is kept
        raw_wcs, wcs = header_wcs(raw_header), header_wcs(header)
        ys, xs = night.truth.geometry(chip).trim
        x = np.array([0.0, red.NAXIS1 - 1.0, 17.0, 0.0, red.NAXIS1 / 2])
        y = np.array([0.0, red.NAXIS2 - 1.0, 311.0, red.NAXIS2 - 1.0, red.NAXIS2 / 3])
        ra, dec = wcs.all_pix2world(x, y, 0)
        raw_ra, raw_dec = raw_wcs.all_pix2world(x + xs.start, y + ys.start, 0)
        assert np.max(np.hypot((ra - raw_ra) * np.cos(np.radians(dec)), dec - raw_dec)) < 1e-6
        # the distortion matters here: without it the positions differ by far more
        plain = raw_header.copy()
        plain["CTYPE1"], plain["CTYPE2"] = "RA---TAN", "DEC--TAN"
        for key in list(plain):
            if key[:2] in ("A_", "B_") or key.startswith("PV"):
                del plain[key]
        tan_ra, tan_dec = header_wcs(plain).all_pix2world(x + xs.start, y + ys.start, 0)
        assert np.max(np.hypot((tan_ra - raw_ra) * np.cos(np.radians(dec)), tan_dec - raw_dec)) > 1e-4


def test_frame_without_wcs_is_reduced_without_one(caplog):
    from astropy.io import fits
    header = fits.Header({"NAXIS": 2, "NAXIS1": 40, "NAXIS2": 30})
    with caplog.at_level(logging.INFO, logger="awe"):
        assert trimmed_wcs_cards(header, (slice(2, 28), slice(3, 37)), "raw.fits") == {}
    assert any("raw.fits: no celestial WCS" in r.getMessage() for r in caplog.records)
    header.update({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ", "CRVAL1": 187.0, "CRVAL2": 2.0, "CRPIX1": 10.0,
                   "CRPIX2": 5.0, "CD1_1": 1e-4, "CD2_2": 1e-4})   # no such projection
    with caplog.at_level(logging.WARNING, logger="awe"):
        assert trimmed_wcs_cards(header, (slice(2, 28), slice(3, 37)), "raw.fits") == {}
    assert any("raw.fits: the header's WCS cannot be read" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- satellites across the mosaic
def _current(night, chip: str) -> tuple[ReducedScienceFrame, SatelliteMap, WeightFrame]:
    red = ReducedScienceFrame.select(raw_filenames=[_chip_file(CROSSED_EXPOSURE, chip)]).max("creation_date")
    return red, red.satellites, red.weight


def test_the_corner_of_the_track_is_missed_chip_by_chip(night):
    """The defect the mosaic pass repairs: the satellite cuts a corner of one chip, too short for the Hough
    threshold although it is as bright there as anywhere."""
    red, sat, weight = night.alone
    true_track = night.truth.satellite_mask(red.raw.filename, night.corner)[_trim_of(night.truth, night.corner)]
    assert true_track.sum() > 100
    assert sat.n_tracks == 0 and not sat.mask()[true_track].any()


def test_satellite_pass_on_its_own(night):
    """FollowSatellitesTask on chips reduced separately (commit=0: working folder only)."""
    assert night.follow_before == night.follow_after
    sat, weight = night.followed
    red = night.alone[0]
    assert isinstance(sat, SatelliteMap) and isinstance(weight, WeightFrame)
    assert sat.object_id is None and (night.workdir / sat.filename).is_file()
    assert sat.reduced == red and sat.previous == night.alone[1] and weight.previous == night.alone[2]
    assert [m.chip.name for m in sat.followed_from] == [CHIP]
    assert sat.n_tracks == sat.n_followed_tracks == 1 and sat.tracks[0]["followed_from"] == [CHIP]
    true_track = night.truth.satellite_mask(red.raw.filename, night.corner)[_trim_of(night.truth, night.corner)]
    assert sat.mask()[true_track].all()
    assert np.all(weight.load()[true_track] == 0) and np.all((weight.flags()[true_track] & SATELLITE) > 0)
    # the committed per-chip products are as they were
    assert night.alone[1].n_tracks == 0 and not night.alone[1].mask().any()


def test_reduce_task_follows_tracks_across_the_chips_it_reduces(night):
    """One ReduceTask over the crossed chips of the exposure: every true track pixel is masked, also on the chip
    whose corner the track cuts (measured: all of them on seeds 1-3; 97.3 %, 93.3 % and 100 % chip by chip)."""
    truth = night.truth
    masked = total = 0
    for chip in night.crossed:
        red, sat, weight = _current(night, chip)
        true_track = truth.satellite_mask(red.raw.filename, chip)[_trim_of(truth, chip)]
        mask = sat.mask()
        masked += int(mask[true_track].sum())
        total += int(true_track.sum())
        assert mask.sum() < 3 * true_track.sum(), chip
        assert np.all(weight.load()[true_track & mask] == 0) and np.all((weight.flags()[mask] & SATELLITE) > 0)
        assert sat.n_tracks == 1, chip
    assert masked / total > 0.995, (masked, total)
    # the corner chip's map and weight were updated in this task: new products, the old ones unchanged
    red, sat, weight = _current(night, night.corner)
    assert sat in night.mosaic and weight in night.mosaic
    assert sat.previous == night.alone[1] and weight.previous == night.alone[2] and weight.satellites == sat
    assert sorted(m.chip.name for m in sat.followed_from) == [c for c in night.crossed if c != night.corner]
    fresh = [p for p in night.mosaic if p not in night.alone]                 # the corner chip was reduced before
    assert len(fresh) == 3 * len(night.crossed) - 1 and len({p.creation_date for p in fresh}) == 1  # one commit
    assert (SatelliteMap.filename == night.alone[1].filename)[0].n_tracks == 0
    assert read_header(sat.local_path())["PREVIOUS"] == night.alone[1].filename
    # later selections take the update, and so does ReduceTask when it finds the frame reduced already
    again = ReduceTask(raw_filenames=[_chip_file(CROSSED_EXPOSURE, night.corner)], commit=1).execute()
    assert [p.object_id for p in again] == [red.object_id, sat.object_id, weight.object_id]
    # a chip the track does not cross gets nothing
    assert all(p.chip.name in night.crossed for p in night.mosaic)


def test_satellite_pass_needs_reduced_frames(night):
    with pytest.raises(TaskError, match="none of the selected frames is reduced"):
        FollowSatellitesTask(raw_filenames=[_chip_file(SCIENCE[0], "ccd57")]).execute()


def _trim_of(truth: Truth, chip: str) -> tuple[slice, slice]:
    return truth.geometry(chip).trim


# ----------------------------------------------------------------------------- bad input
def test_missing_calibrations_name_the_task_to_run(night):
    assert "no valid BiasFrame" in night.errors["bias"]
    assert "run BiasTask(instrument='WFI', chip='ccd50', date='2003-03-03', overscan=6, commit=1)" in \
        night.errors["bias"]
    assert "no valid MasterFlatFrame" in night.errors["flat"]
    assert "run MasterFlatTask(instrument='WFI', chip='ccd50', date='2003-03-03', filter='#844', commit=1)" in \
        night.errors["flat"]


def test_bias_of_another_overscan_mode_is_refused(night):
    message = _error(lambda: ReduceTask(raw_filenames=[_chip_file(STANDARD)], overscan=2).execute())
    assert "OVERSCAN_CORRECTION=6 but this reduction uses 2" in message
    assert "overscan=2" in message


def test_bad_selections(night):
    with pytest.raises(TaskError, match="is a RawBiasFrame"):
        ReduceTask(raw_filenames=[_chip_file(BIASES[0])]).execute()
    with pytest.raises(TaskError, match="not in the database"):
        ReduceTask(raw_filenames=["WFI.2003-03-05T01:00:00.000_1.fits"]).execute()
    with pytest.raises(TaskError, match="of chip 'ccd50', not 'ccd51'"):
        ReduceTask(raw_filenames=[_chip_file(STANDARD)], chip='ccd51').execute()
    with pytest.raises(TaskError, match="no valid raw science frame"):
        ReduceTask(instrument='WFI', chip='ccd50', object='NGC*').execute()
    with pytest.raises(TypeError, match="raw_filenames= or instrument="):
        ReduceTask().execute()
    with pytest.raises(TypeError, match="unknown keyword"):
        ReduceTask(instrument='WFI', chips='ccd50')


def test_calibration_of_another_shape_is_refused(night):
    bias = BiasFrame.select(instrument='WFI', chip=CHIP)[0]
    start, end = bias.timestamp_start, bias.timestamp_end
    small = BiasFrame(instrument=bias.instrument, chip=bias.chip, OBJECT="MASTER BIAS", DATE_OBS=bias.DATE_OBS,
                      overscan_correction=6, timestamp_start=start, timestamp_end=end,
                      filename="Cal-TESTER-WFI----------ccd50-Bias--Cal-small.fits")
    path = write_image(night.workdir / small.filename, np.zeros((10, 10), np.float32))
    before = _factory.db_state(night.storage)
    commit([(small, path)])
    try:
        with pytest.raises(TaskError, match="the bias .* is 10 x 10 pixels"):
            ReduceTask(raw_filenames=[_chip_file(SCIENCE[0])], commit=1).execute()
    finally:
        context.delete(small)
    assert _factory.db_state(night.storage)[:2] == before[:2]


def test_seeing_or_assumed_is_the_width_later_extractions_use():
    """A frame whose seeing was not measured (too few stars) offers the ASSUMED_SEEING it was reduced with, as its
    cosmic-ray check took it; AstrometricParametersTask sizes its detection area by it (not by 2 pixels)."""
    red = ReducedScienceFrame()
    red.seeing, red.process_params = None, {"process_params": {"ASSUMED_SEEING": 1.4}}
    assert red.seeing_or_assumed == 1.4
    red.process_params = None                                       # reduced before the parameter was recorded
    assert red.seeing_or_assumed == ReducedScienceParams().ASSUMED_SEEING == 1.0
    red.seeing = 0.9
    assert red.seeing_or_assumed == 0.9
