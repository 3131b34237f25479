"""The per-chip astrometric solution (awe.image.astrometry, AstrometricParametersTask) on the shared night
against the simulator's true WCS, from header WCS that are off by 30" and 0.3 deg, and by 1' and 0.5 deg."""

from __future__ import annotations

import math

import numpy as np
import pytest

from awe import context
from awe.image.astrometry import (AstrometryError, match_pattern, solve_astrometry, tangent_plane,
                                  from_tangent_plane)
from awe.image.extract import FLAG_SATURATED, FLAG_TRUNCATED, extract
from awe.model import AstrometricMatch, AstrometricParameters, QualityFlags, ReducedScienceFrame, best_wcs
from awe.model.astrometry import header_wcs
from awe.model.refcat import refcat_sources
from awe.tasks import AstrometricParametersTask, TaskError
import awe.tasks.astrometry as task_module
from tests._factory import db_state

#: the spec's standard-field frame, and a 3C273 exposure on both chips
SPEC_FILE = "WFI.2003-03-04T04:42:29.496_1.fits"
SCIENCE = "2003-03-04T04:43:52.117"
#: rms of the solved against the true positions on a grid over the chip, at most (pixels of 1.9"): the
#: issue's 0.2 pix; measured 0.06-0.12 pix (the reference stars' own 0.15" errors on 12-30 stars per chip)
MAX_TRUTH_RMS_PIX = 0.2


def truth_rms_pix(truth, raw_name: str, chip: str, wcs, shape) -> float:
    """Rms [pix] of ``wcs`` (reduced pixels) against the true WCS (raw pixels) on a 12 x 24 grid."""
    trim = truth.geometry(chip).trim
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 12), np.linspace(0, ny - 1, 24))
    tra, tdec = truth.pixel_to_sky(raw_name, chip, gx.ravel() + trim[1].start, gy.ravel() + trim[0].start)
    ra, dec = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    xi, eta = tangent_plane(ra, dec, float(tra[0]), float(tdec[0]))
    txi, teta = tangent_plane(tra, tdec, float(tra[0]), float(tdec[0]))
    pixel = truth.pixel_scale
    return float(np.sqrt(np.mean((xi - txi) ** 2 + (eta - teta) ** 2)) * 3600.0 / pixel)


def perturbed(wcs, dx_arcsec: float, dy_arcsec: float, rotation_deg: float):
    """``wcs`` rotated by ``rotation_deg`` about CRPIX and shifted by (dx, dy) arcsec on the sky."""
    w = wcs.deepcopy()
    t = math.radians(rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    w.wcs.cd = rot @ w.wcs.cd if w.wcs.has_cd() else rot @ (w.wcs.get_pc() * w.wcs.cdelt[:, None])
    ra, dec = from_tangent_plane(dx_arcsec / 3600.0, dy_arcsec / 3600.0, *w.wcs.crval)
    w.wcs.crval = [float(ra), float(dec)]
    w.wcs.set()
    return w


@pytest.fixture(scope="module")
def frames(astro_night):
    """The 3C273 exposure on both chips: frame, usable detections, reference stars, header WCS."""
    out = {}
    for chip in astro_night.chips:
        name = astro_night.chip_file(SCIENCE, chip)
        red = ReducedScienceFrame.select(raw_filenames=[name]).first()
        cat = extract(red.load(), red.weight.load(), threshold=1.5, minarea=3, gain=red.gain,
                      saturation=task_module.saturation_level(red))
        cat = cat[(cat["snr"] > 5) & ((cat["flags"] & (FLAG_SATURATED | FLAG_TRUNCATED)) == 0)]
        start = header_wcs(red)
        centre = start.all_pix2world([[red.NAXIS1 / 2, red.NAXIS2 / 2]], 0)[0]
        refs = refcat_sources("astrometric", *centre, 0.3, epoch=red.DATE_OBS.isoformat())
        refs.sort("mag")
        out[chip] = dict(name=name, red=red, cat=cat, start=start, refs=refs, shape=(red.NAXIS2, red.NAXIS1))
    return out


def _solve(f, start):
    pixel = 1.9
    err = np.maximum(np.hypot(f["cat"]["xerr"], f["cat"]["yerr"]) / math.sqrt(2) * pixel, 0.01)
    ref_err = np.hypot(f["refs"]["ra_err"], f["refs"]["dec_err"]) / math.sqrt(2)
    return solve_astrometry(f["cat"]["x"], f["cat"]["y"], err, f["refs"]["ra"], f["refs"]["dec"], ref_err, start,
                            f["shape"], order=3)


@pytest.mark.parametrize("offset", [(21.2, 21.2, 0.3), (-30.0, 0.0, -0.3), (60.0, 0.0, 0.5), (-42.4, 42.4, -0.5)],
                         ids=["30as+0.3deg", "30as-0.3deg", "1am+0.5deg", "1am-0.5deg"])
def test_solution_from_a_wrong_header_against_truth(astro_night, frames, offset):
    truth = astro_night.truth
    for chip, f in frames.items():
        start = perturbed(f["start"], *offset)
        solution = _solve(f, start)
        rms = truth_rms_pix(truth, f["name"], chip, solution.wcs, f["shape"])
        print(f"\n{chip} start {offset}: order {solution.order}, {solution.n_ref} stars, rms vs reference "
              f"{solution.rms_ra:.3f}\"/{solution.rms_dec:.3f}\", vs truth {rms:.3f} pix")
        assert rms < MAX_TRUTH_RMS_PIX
        assert solution.n_ref >= 15 and max(solution.rms_ra, solution.rms_dec) < 0.4
        # the header was off by the perturbation plus its own 28": the solution says how much
        natural = _solve(f, f["start"])
        moved = np.hypot(solution.start_offset[0] - natural.start_offset[0],
                         solution.start_offset[1] - natural.start_offset[1])
        assert moved > 20.0
        assert abs(abs(solution.start_rotation - natural.start_rotation) - abs(offset[2])) < 0.05
        assert solution.wcs.wcs.radesys == "ICRS"


def test_pattern_match_refuses_a_field_it_cannot_find(frames):
    """A header 5' off (beyond MAX_OFFSET) or 3 deg off: an error, never a wrong solution."""
    f = frames["ccd50"]
    with pytest.raises(AstrometryError, match="no match between"):
        _solve(f, perturbed(f["start"], 300.0, 0.0, 0.0))
    with pytest.raises(AstrometryError, match="reference stars within"):
        _solve(f, perturbed(f["start"], 3 * 3600.0, 0.0, 0.0))
    with pytest.raises(AstrometryError, match="usable sources"):
        solve_astrometry(f["cat"]["x"][:3], f["cat"]["y"][:3], np.full(3, 0.1), f["refs"]["ra"], f["refs"]["dec"],
                         np.full(len(f["refs"]), 0.2), f["start"], f["shape"])
    rng = np.random.default_rng(2)
    with pytest.raises(AstrometryError, match="no match"):  # random points have no pattern in common
        match_pattern(rng.uniform(-300, 300, 100), rng.uniform(-500, 500, 100), rng.uniform(-300, 300, 100),
                      rng.uniform(-500, 500, 100))


def test_the_spec_call(astro_night):
    """``AstrometricParametersTask(raw_filenames=[...], inspect=1, commit=1)``: stored with its matches."""
    before = len(AstrometricParameters.all())
    [obj] = AstrometricParametersTask(raw_filenames=[SPEC_FILE], inspect=1, commit=1).execute()
    assert obj.object_id is not None and obj.quality_flags == 0 and len(AstrometricParameters.all()) == before + 1
    red = obj.reduced
    assert red.raw.filename == SPEC_FILE and [c.kind for c in obj.reference] == ["astrometric"]
    rms = truth_rms_pix(astro_night.truth, SPEC_FILE, "ccd50", obj.wcs, (red.NAXIS2, red.NAXIS1))
    print(f"\n{SPEC_FILE}: {obj.n_ref} stars, order {obj.distortion_order}, rms {obj.rms_ra:.3f}\"/"
          f"{obj.rms_dec:.3f}\", vs truth {rms:.3f} pix; header off by {obj.start_offset_ra:.1f}\", "
          f"{obj.start_offset_dec:.1f}\", {obj.start_rotation:.3f} deg")
    assert rms < MAX_TRUTH_RMS_PIX
    assert obj.n_ref >= 10 and 0.05 < obj.rms_ra < 0.4 and 0.05 < obj.rms_dec < 0.4
    assert obj.reference_epoch == pytest.approx(2003.17, abs=0.01)
    assert obj.wcs_cards["RADESYS"] == "ICRS"
    matches = obj.matches()
    assert len(matches) == obj.n_ref + obj.n_rejected == len(AstrometricMatch.of(obj))
    assert np.sqrt(np.mean(np.asarray(matches["dra"])[~np.asarray(matches["rejected"])] ** 2)) == \
        pytest.approx(obj.rms_ra, rel=1e-6)
    figure = context.settings.workdir / (obj.filename[:-5] + ".png")
    assert figure.stat().st_size > 10000
    # the frame's best WCS is now this solution
    wcs, solution = best_wcs(red)
    assert solution is not None and solution.object_id == obj.object_id
    # the same call again finds it
    [again] = AstrometricParametersTask(raw_filenames=[SPEC_FILE], commit=1).execute()
    assert again.object_id == obj.object_id


def test_by_instrument_chip_object_from_a_header_1_arcmin_off(astro_night, monkeypatch):
    """``instrument=, chip=, object='3C*'`` with commit=0 keeps nothing; a header 1' and 0.5 deg off is solved."""
    real = task_module.header_wcs
    monkeypatch.setattr(task_module, "header_wcs", lambda frame: perturbed(real(frame), 42.4, -42.4, 0.5))
    state = db_state(astro_night.root / "storage")
    made = AstrometricParametersTask(instrument="WFI", chip="ccd51", object="3C*", commit=0).execute()
    assert db_state(astro_night.root / "storage") == state
    assert len(made) == len(astro_night.science)
    for obj in made:
        red = obj.reduced
        assert obj.object_id is None and obj.quality_flags == 0
        rms = truth_rms_pix(astro_night.truth, red.raw.filename, "ccd51", obj.wcs, (red.NAXIS2, red.NAXIS1))
        assert rms < MAX_TRUTH_RMS_PIX, red.raw.filename
        assert np.hypot(obj.start_offset_ra, obj.start_offset_dec) > 40.0


def test_bad_input(astro_night, monkeypatch):
    """A pointing degrees off: a clear error naming the frame, nothing committed; too few matches: a flag."""
    real = task_module.header_wcs
    storage = astro_night.root / "storage"
    state = db_state(storage)
    monkeypatch.setattr(task_module, "header_wcs", lambda frame: perturbed(real(frame), 4 * 3600.0, 0.0, 0.0))
    # (redo=1: the solution of test_the_spec_call exists, and the patched header is not in its provenance)
    with pytest.raises(TaskError, match="no astrometric reference star within .* WFI.2003-03-04T04:42:29.496_1"):
        AstrometricParametersTask(raw_filenames=[SPEC_FILE], redo=1, commit=1).execute()
    monkeypatch.setattr(task_module, "header_wcs", lambda frame: perturbed(real(frame), 240.0, 0.0, 0.0))
    with pytest.raises(TaskError, match="no astrometric solution for WFI.2003-03-04T04:42:29.496_1.*no match"):
        AstrometricParametersTask(raw_filenames=[SPEC_FILE], redo=1, commit=1).execute()
    assert db_state(storage) == state
    monkeypatch.setattr(task_module, "header_wcs", real)
    with pytest.raises(TaskError, match="have no valid reduced frame"):
        AstrometricParametersTask(raw_filenames=["WFI.2003-03-04T04:42:29.496_7.fits"]).execute()
    # more matches asked for than the frame has: the solution is made, flagged, and not the frame's best
    name = astro_night.chip_file(astro_night.standards[0], "ccd51")
    [flagged] = AstrometricParametersTask(raw_filenames=[name], pars={"AstrometricParameters": {
        "process_params": {"MIN_REF": 500}}}, commit=1).execute()
    assert flagged.quality_flags & QualityFlags.FEW_INPUTS
    assert flagged.qc_report[0]["failed"] and "MIN_REF" in flagged.qc_report[0]["parameter"]
    wcs, solution = best_wcs(flagged.reduced)
    assert solution is None  # the header's WCS, with a warning


def test_distortion_is_fitted_when_the_stars_show_it(astro_night):
    """Many stars on a strongly distorted chip (the true SIP x 10: up to 14"): the order-3 TAN-SIP is chosen and
    recovered."""
    truth = astro_night.truth
    name = astro_night.chip_file(SCIENCE, "ccd50")
    true = truth.wcs(name, "ccd50")
    true.sip.a[:] *= 10
    true.sip.b[:] *= 10
    trim = truth.geometry("ccd50").trim
    true.wcs.crpix = [true.wcs.crpix[0] - trim[1].start, true.wcs.crpix[1] - trim[0].start]
    true.sip = type(true.sip)(true.sip.a, true.sip.b, None, None, true.wcs.crpix)
    shape = (511, 254)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 253, 400), rng.uniform(0, 510, 400)
    ra, dec = true.all_pix2world(x, y, 0)
    noise = 0.05 / 3600.0
    ra = ra + rng.normal(0, noise, x.size) / np.cos(np.radians(dec))
    dec = dec + rng.normal(0, noise, x.size)
    start = perturbed(header_wcs(ReducedScienceFrame.select(raw_filenames=[name]).first()), 20.0, -10.0, 0.2)
    solution = solve_astrometry(x, y, np.full(x.size, 0.03), ra, dec, np.full(x.size, 0.04), start, shape, order=3)
    assert solution.order == 3 and solution.wcs.sip is not None
    gx, gy = np.meshgrid(np.linspace(0, 253, 10), np.linspace(0, 510, 20))
    sra, sdec = solution.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    tra, tdec = true.all_pix2world(gx.ravel(), gy.ravel(), 0)
    err = np.hypot((sra - tra) * np.cos(np.radians(tdec)), sdec - tdec) * 3600.0 / truth.pixel_scale
    assert np.sqrt(np.mean(err ** 2)) < 0.01
    # the inverse polynomials (AP, BP: what FITS readers without iteration use) bring the sky back to the pixels
    sip = solution.wcs.sip
    assert sip.ap is not None and sip.bp is not None
    fx, fy = solution.wcs.wcs_world2pix(sra, sdec, 1)
    U, V = fx - sip.crpix[0], fy - sip.crpix[1]
    ap = sum(sip.ap[p, q] * U ** p * V ** q for p in range(sip.ap.shape[0]) for q in range(sip.ap.shape[1]))
    bp = sum(sip.bp[p, q] * U ** p * V ** q for p in range(sip.bp.shape[0]) for q in range(sip.bp.shape[1]))
    np.testing.assert_allclose(U + ap + sip.crpix[0] - 1.0, gx.ravel(), atol=0.01)
    np.testing.assert_allclose(V + bp + sip.crpix[1] - 1.0, gy.ravel(), atol=0.01)
    # with too few stars for it, a lower order
    few = solve_astrometry(x[:25], y[:25], np.full(25, 0.03), ra[:25], dec[:25], np.full(25, 0.04), start, shape,
                           order=3)
    assert few.order < 3


def test_solution_and_matches_are_stored_on_both_databases(db):
    """AstrometricParameters with its AstrometricMatch rows (booleans included), on SQLite and PostgreSQL."""
    from astropy.table import Table

    from awe.db.commit import commit
    from awe.image.astrometry import sip_wcs
    from awe.model.astrometry import wcs_to_cards
    wcs = sip_wcs((128.0, 256.0), (187.3, 2.0), {(1, 0): -5.3e-4, (0, 1): 0.0, (2, 0): 1e-10},
                  {(1, 0): 0.0, (0, 1): 5.3e-4, (0, 2): -1e-10}, 2, (511, 254))
    obj = AstrometricParameters(filename="Sci-test-Astrom.fits", wcs_cards=wcs_to_cards(wcs), rms_ra=0.1,
                                rms_dec=0.12, n_ref=3, n_rejected=1, distortion_order=2)
    obj.__dict__["_pending_rows"] = Table({"ra": [187.30, 187.31, 187.32, 187.33], "dec": [2.0, 2.01, 2.02, 2.03],
                                           "x": [1.0, 2.0, 3.0, 4.0], "y": [5.0, 6.0, 7.0, 8.0],
                                           "dra": [0.1, -0.1, 0.05, 2.0], "ddec": [0.0, 0.1, -0.1, 1.5],
                                           "rejected": [False, False, False, True]})
    commit([(obj, None)])
    [stored] = list(AstrometricParameters.filename == "Sci-test-Astrom.fits")
    rows = stored.matches()
    assert len(rows) == 4 and list(rows["rejected"]) == [False, False, False, True]
    assert len((AstrometricMatch.solution == stored) & (AstrometricMatch.rejected == True)) == 1  # noqa: E712
    x, y = 100.0, 300.0
    np.testing.assert_allclose(stored.wcs.all_pix2world([[x, y]], 0), wcs.all_pix2world([[x, y]], 0), atol=1e-10)
    assert stored.wcs_cards["CTYPE1"] == "RA---TAN-SIP" and stored.wcs_cards["RADESYS"] == "ICRS"
