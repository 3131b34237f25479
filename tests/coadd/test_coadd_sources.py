"""Issue 14 joined up: SourceListTask, AssociateListTask and the stamps on the real coadd and regridded frames
of the coadd night (tests/_coadd_night.py: six dithers x ccd50, ccd51 of 3C273 at 1.904"/pixel, zero point 30).

**True S/N** of a source on a grid image: its true flux ``10^(-0.4 (R - zeropoint))`` over the sky noise of a
circular aperture of radius ``max(hypot(FWHM, 1.5 r_eff), 1 pixel)`` from the weight map at the source
(``sqrt(area / weight)``: the weight is the inverse variance of a pixel's share of an aperture sum).
**Counted**: true sources more than 3 pixels inside the image, on pixels with weight > 0 within a pixel, more
than 6 pixels from a pixel flagged saturated and without a brighter true source within 2.5 pixels; a
detection is a true source's when it lies within 1.5 pixels of it (tests/_truth.py: ``grid_truth``, ``true_pairs``,
shared with benchmarks/bench_night.py). (This is the S/N of a small, near-optimal
aperture, as in tests/sources; the lists' own SNR is the AUTO flux's, in the larger Kron aperture: measured 0.28
of it for faint stars.)

Measured (the tolerances are about twice the measured error) -- see the constants.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

from awe.model import (Association, CoaddedRegriddedFrame, RawScienceFrame, RegridGrid, RegriddedFrame,
                       SourceList)
from awe.tasks import AssociateListTask, SourceListTask, TaskError
from tests._factory import db_state
from tests._truth import grid_truth, true_pairs

FIELD = "3C273"
#: completeness at true S/N >= 10 on the coadd (measured 0.941 of 950; the issue's >= 90 %); the
#: 50 %-completeness magnitude is printed (measured R = 21.1; the list's 5-sigma AUTO limit 20.1, the coadd's
#: 5-sigma limit in 2-FWHM apertures 22.1)
MIN_COMPLETENESS = 0.90
#: spurious detections at S/N >= 10 (measured 2 of 393, 0.5 %; the issue's < 2 %)
MAX_SPURIOUS = 0.02
#: MAG_AUTO - R of isolated unflagged stars at S/N > 50 on the coadd (measured median -0.014, scatter 0.033,
#: 8 stars)
MAX_MAG_OFFSET = 0.03
MAX_MAG_SCATTER = 0.065
#: per-axis rms of the coadd list's positions against the true ones (measured 0.18", 37 stars at S/N > 20)
MAX_POSITION_RMS = 0.35
#: true pairs of two regridded dithers (both detected) associated within 1": measured 81/81 at S/N >= 20,
#: 154/157 (98.1 %) at S/N >= 10 (1.9" pixels: centroid errors of faint sources reach 1")
MIN_PAIRS_MATCHED = 0.99
MIN_PAIRS_MATCHED_SNR10 = 0.96
#: stamp centroids of the star on the coadd and regridded frames against the star's pixel (measured max 0.34)
MAX_CENTROID_OFFSET = 0.7
#: raw science stamps: the stamp's position against the star's true raw pixel (measured max 0.12)
MAX_RAW_OFFSET = 0.25


@pytest.fixture(scope="module")
def coadd(coadd_night):
    c = (CoaddedRegriddedFrame.OBJECT == FIELD).max("creation_date")
    assert c is not None
    return c


@pytest.fixture(scope="module")
def coadd_list(coadd):
    (sl,) = SourceListTask(filenames=[coadd.filename], commit=1).execute()
    return sl


@pytest.fixture(scope="module")
def regridded(coadd_night):
    """The first two dithers of ccd50."""
    frames = sorted((f for f in RegriddedFrame.OBJECT == FIELD if f.chip.name == "ccd50"), key=lambda f: f.DATE_OBS)
    assert len(frames) == len(coadd_night.science)
    return frames[:2]


@pytest.fixture(scope="module")
def regridded_lists(regridded):
    made = SourceListTask(filenames=[f.filename for f in regridded], commit=1).execute()
    by_image = {sl.image.filename: sl for sl in made}
    return [by_image[f.filename] for f in regridded]


@pytest.fixture(scope="module")
def coadd_truth(coadd_night, coadd, coadd_list):
    return grid_truth(coadd_night.truth, coadd, coadd_list, float(coadd.seeing), FIELD)


# ============================================================================ 1. the coadd's source list
def test_coadd_source_list_product(coadd, coadd_list):
    sl = coadd_list
    assert sl.image.object_id == coadd.object_id and sl.object_id is not None
    assert sl.OBJECT == FIELD and sl.chip is None and sl.filter is not None
    assert sl.filter.name == coadd.filter.name
    assert sl.zeropoint == pytest.approx(coadd.zeropoint) and "CoaddedRegriddedFrame" in sl.zeropoint_source
    assert sl.wcs_source.startswith("RegridGrid") and sl.pixel_scale == pytest.approx(coadd.pixel_scale, rel=1e-4)
    assert sl.weight is None  # the weight is the coadd's own WEIGHT extension
    assert sl.detection["saturated_pixels"] == int(np.count_nonzero(coadd.flag_map() & 4)) > 0
    assert sl.n_sources == len(sl.table()) > 200
    assert (SourceList.object_id == sl.SLID).first().image.object_id == coadd.object_id


def test_coadd_saturated_stars_flagged(coadd, coadd_truth):
    """The stars saturated in the inputs (weight 0 at their cores) are detected whole and flagged 4."""
    m = coadd_truth
    flags = coadd.flag_map()
    table = m["table"]
    fl = np.asarray(table["FLAGS"], int)
    ix = np.clip(np.rint(np.asarray(table["X"], float)).astype(int), 0, flags.shape[1] - 1)
    iy = np.clip(np.rint(np.asarray(table["Y"], float)).astype(int), 0, flags.shape[0] - 1)
    on_saturated = (flags[iy, ix] & 4) != 0
    assert on_saturated.sum() >= 2
    assert np.all(fl[on_saturated] & 4)
    # the two brightest stars (R 11 and 12.6): their cores have no data in the coadd (weight 0), so the
    # detection's centroid sits on the wings (measured 2.3 and 2.7 pixels off), flagged saturated
    det = np.column_stack([np.asarray(table["X"], float), np.asarray(table["Y"], float)])
    for b in np.argsort(np.asarray(m["stars"]["mag_R"], float))[:2]:
        d = np.hypot(det[:, 0] - m["x"][b], det[:, 1] - m["y"][b])
        near = d < 4.0
        assert near.any() and np.all(fl[near] & 4), (m["stars"]["mag_R"][b], d.min())


def test_coadd_completeness_and_spurious(coadd_list, coadd_truth):
    m = coadd_truth
    sel = m["counted"] & (m["snr"] >= 10)
    assert sel.sum() >= 100
    completeness = float(np.mean(m["found"][sel]))
    snr = np.asarray(m["table"]["SNR"], float)
    hi = (snr >= 10) & ~m["det_masked"]
    spurious = int(np.sum(hi & (m["d_det"] > 2.0)))
    mag, hit = np.asarray(m["stars"]["mag_R"], float)[m["counted"]], m["found"][m["counted"]]
    edges = np.arange(18.0, 25.0, 0.25)
    rate = np.array([hit[(mag >= a) & (mag < a + 0.25)].mean() if np.any((mag >= a) & (mag < a + 0.25)) else 0.0
                     for a in edges])
    m50 = float(edges[np.argmax(rate < 0.5)] + 0.125)
    print(f"\ncoadd: {sel.sum()} true sources at S/N >= 10, completeness {completeness:.3f}; spurious at S/N >= 10: "
          f"{spurious} of {hi.sum()} ({100 * spurious / hi.sum():.2f} %); 50 %-completeness R = {m50:.2f}, the list's "
          f"5-sigma limit {coadd_list.mag_limit:.2f}")
    assert completeness >= MIN_COMPLETENESS
    assert spurious / hi.sum() < MAX_SPURIOUS
    assert 20.0 < m50 < 24.5 and abs(coadd_list.mag_limit - m50) < 1.5


def test_coadd_magnitudes_and_positions(coadd, coadd_truth):
    m = coadd_truth
    stars, table = m["stars"], m["table"]
    xy = np.column_stack([m["x"], m["y"]])
    mags = np.asarray(stars["mag_R"], float)
    tree = cKDTree(xy)
    isolated = np.array([sum(mags[j] < mk + 5.0 for j in tree.query_ball_point(p, 15.0 / coadd.pixel_scale)) == 1
                         for p, mk in zip(xy, mags)])
    j = m["match"]
    fl = np.asarray(table["FLAGS"], int)[j]
    snr = np.asarray(table["SNR"], float)[j]
    star = ~m["galaxy"] & m["found"] & m["counted"] & (fl == 0)
    use = star & isolated & (snr > 50)
    assert use.sum() >= 6
    d = np.asarray(table["MAG_AUTO"], float)[j][use] - mags[use]
    offset, scatter = float(np.median(d)), float(1.4826 * np.median(np.abs(d - np.median(d))))
    pos = star & (snr > 20)
    ra, dec = np.asarray(table["RA"], float)[j][pos], np.asarray(table["DEC"], float)[j][pos]
    tra, tdec = np.asarray(stars["ra"], float)[pos], np.asarray(stars["dec"], float)[pos]
    dra = (ra - tra) * np.cos(np.radians(tdec)) * 3600.0
    ddec = (dec - tdec) * 3600.0
    rms = float(np.sqrt(np.mean(np.r_[dra, ddec] ** 2)))
    print(f"\ncoadd MAG_AUTO - R: median {offset:+.4f}, scatter {scatter:.4f} ({use.sum()} isolated stars at "
          f"S/N > 50); positions: {rms:.3f}\" rms per axis ({pos.sum()} stars at S/N > 20)")
    assert abs(offset) < MAX_MAG_OFFSET and scatter < MAX_MAG_SCATTER
    assert rms < MAX_POSITION_RMS


# ============================================================================ 2. regridded lists, association
def test_regridded_lists_and_the_spec_query(regridded, regridded_lists, coadd_list):
    for f, sl in zip(regridded, regridded_lists):
        assert sl.chip.name == "ccd50" and sl.OBJECT == FIELD and sl.zeropoint == pytest.approx(f.zeropoint)
        assert sl.wcs_source.startswith("RegridGrid") and sl.n_sources > 100
    q = (SourceList.OBJECT == '3C273') & (SourceList.chip.name == 'ccd50')
    found = {sl.SLID for sl in q}
    assert {sl.SLID for sl in regridded_lists} <= found and coadd_list.SLID not in found
    assert q.max("creation_date").SLID in {sl.SLID for sl in regridded_lists}


def test_associate_two_dithers(coadd_night, regridded, regridded_lists):
    sl1, sl2 = regridded_lists
    (al,) = AssociateListTask(ids=[(sl1.SLID, 's'), (sl2.SLID, 's')], commit=1).execute()
    assert al.n_lists == 2 and al.n_matched > 100 and al.search_distance == pytest.approx(1.0)
    pairs = true_pairs(coadd_night.truth, regridded, regridded_lists, Association.of(al).table(), FIELD)
    both, same, snr = pairs["both"], pairs["same"], pairs["snr"]
    rates = {}
    for cut in (10.0, 20.0):
        sel = both & (snr >= cut)
        rates[cut] = (int(same[sel].sum()), int(sel.sum()))
    print(f"\nassociation of two regridded dithers within 1\": {al.n_matched} matched, {al.n_single} single; true "
          f"pairs matched: S/N >= 10 {rates[10.0][0]}/{rates[10.0][1]}, S/N >= 20 {rates[20.0][0]}/{rates[20.0][1]}")
    good, total = rates[20.0]
    assert total >= 50 and good / total >= MIN_PAIRS_MATCHED
    good, total = rates[10.0]
    assert total >= 100 and good / total >= MIN_PAIRS_MATCHED_SNR10


def test_bench_night_association(coadd_night, regridded, regridded_lists, capsys):
    """benchmarks/bench_night.py's association of dithers (run there after the coadd, e.g. at full size) on this
    night: the same two lists (SourceListTask finds them made) and the same true pairs (tests/_truth.py)."""
    from tests.test_bench_night import _load_bench
    bench = _load_bench()
    awe: dict = {}
    (fig,) = bench.awe_association(awe, coadd_night.raw, "ccd50", "first")
    assert fig.frames == tuple(str(f.DATE_OBS) for f in regridded)
    assert awe["SourceListTask"].runs == 2 and awe["AssociateListTask"].runs == 1
    good, total = fig.pairs[20]
    assert total >= 50 and good / total >= MIN_PAIRS_MATCHED
    assert fig.pairs[10][1] >= 100 and fig.n_matched > 100
    assert fig.n_position >= 5 and 0 < fig.rms[2] < 1.0  # 1.9" pixels: centroid errors of tenths of an arcsec
    bench.print_association([fig], "ccd50", awe)
    out = capsys.readouterr().out
    assert "true pairs matched at S/N >= 20" in out and "positions between the dithers" in out
    print(out)


# ============================================================================ 3. stamps through the lineage
def _centroid(stamp, half):
    data = np.nan_to_num(stamp - np.nanmedian(stamp))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    near = np.hypot(xx, yy) <= 2.5
    w = np.where(near, np.clip(data, 0, None), 0.0)
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


@pytest.fixture(scope="module")
def star_stamps(coadd_night, coadd, coadd_list, coadd_truth):
    """The stamps of a bright isolated unflagged star of the coadd list, and that star."""
    from awe.model.stamps import stamps
    m = coadd_truth
    table = m["table"]
    j = m["match"]
    fl = np.asarray(table["FLAGS"], int)[j]
    snr = np.asarray(table["SNR"], float)[j]
    cand = np.flatnonzero(~m["galaxy"] & m["found"] & m["counted"] & (fl == 0) & (snr > 100) & (snr < 2000))
    assert cand.size
    k = int(cand[np.argmax(snr[cand])])
    row = table[j[k]]
    return stamps(row, size_arcsec=20.0), m["stars"][k], row


def test_stamps_through_the_lineage(coadd_night, coadd, star_stamps):
    s, star, row = star_stamps
    by_cls: dict[str, list] = {}
    for st in s:
        by_cls.setdefault(st.cls, []).append(st)
    assert [st.role for st in by_cls["CoaddedRegriddedFrame"]] == ["image"]
    assert by_cls["CoaddedRegriddedFrame[WEIGHT]"][0].role == "image.weight"
    assert {st.role for st in by_cls["RegriddedFrame"]} == {"image.regridded"}
    assert {st.role for st in by_cls["ReducedScienceFrame"]} == {"image.regridded.reduced"}
    assert {st.role for st in by_cls["RawScienceFrame"]} == {"image.regridded.reduced.raw"}
    # every dither whose chip covers the star, through to its raw frame
    n = len(by_cls["RegriddedFrame"])
    covering = []
    for f in coadd.regridded:
        fx, fy = f.wcs().all_world2pix([[float(star["ra"]), float(star["dec"])]], 0)[0]
        if -0.5 <= fx < f.NAXIS1 - 0.5 and -0.5 <= fy < f.NAXIS2 - 0.5:
            covering.append(f.filename)
    assert n >= 2 and sorted(st.filename for st in by_cls["RegriddedFrame"]) == sorted(covering)
    assert len(by_cls["ReducedScienceFrame"]) == len(by_cls["RawScienceFrame"]) == n
    for cls, role in (("MasterFlatFrame", "image.regridded.reduced.flat"),
                      ("DomeFlatFrame", "image.regridded.reduced.flat.domeflat"),
                      ("TwilightFlatFrame", "image.regridded.reduced.flat.twilightflat"),
                      ("BiasFrame", "image.regridded.reduced.bias"),
                      ("RawBiasFrame", "image.regridded.reduced.bias.raw_bias_frames"),
                      ("RawDomeFlatFrame", "image.regridded.reduced.flat.domeflat.raw_dome_flat_frames"),
                      ("RawTwilightFlatFrame", "image.regridded.reduced.flat.twilightflat.raw_twilight_flat_frames")):
        assert cls in by_cls, (cls, sorted(by_cls))
        assert {st.role for st in by_cls[cls]} == {role}, cls
    for st in s:
        assert st.filename and st.data.shape[0] == st.data.shape[1] >= 5
    # the coadd and regridded stamps are centred on the star
    offsets = []
    for st in by_cls["CoaddedRegriddedFrame"] + by_cls["RegriddedFrame"]:
        obj = (CoaddedRegriddedFrame.object_id == st.object_id).first() or \
            (RegriddedFrame.object_id == st.object_id).first()
        tx, ty = (float(v) for v in obj.wcs().all_world2pix([[float(star["ra"]), float(star["dec"])]], 0)[0])
        half = st.data.shape[0] // 2
        cx, cy = _centroid(st.data, half)
        offsets.append(math.hypot(cx - (tx - round(st.x)), cy - (ty - round(st.y))))
        assert abs(st.x - tx) < 0.3 and abs(st.y - ty) < 0.3  # at the measured position: the star's within its error
    # the raw science stamps at the star's true pixel (the astrometric solution against the simulator's WCS)
    raw_offsets = []
    for st in by_cls["RawScienceFrame"]:
        raw = (RawScienceFrame.object_id == st.object_id).first()
        name = Path(raw.raw_file).name
        tx, ty = (float(v) for v in coadd_night.truth.wcs(name, raw.chip.name).all_world2pix(
            [[float(star["ra"]), float(star["dec"])]], 0)[0])
        raw_offsets.append(math.hypot(st.x - tx, st.y - ty))
    # calibration stamps share their reduced frame's pixel (the raw calibration frames: moved by the trim)
    reduced_xy = {(round(st.x), round(st.y)) for st in by_cls["ReducedScienceFrame"]}
    for cls in ("MasterFlatFrame", "BiasFrame", "DomeFlatFrame", "TwilightFlatFrame"):
        assert all(st.grid == "reduced" and (round(st.x), round(st.y)) in reduced_xy for st in by_cls[cls])
    raw_xy = {(round(st.x), round(st.y)) for st in by_cls["RawScienceFrame"]}
    for cls in ("RawBiasFrame", "RawDomeFlatFrame", "RawTwilightFlatFrame"):
        assert all(st.grid == "raw" and (round(st.x), round(st.y)) in raw_xy for st in by_cls[cls])
    print(f"\nstamps of the star at S/N {float(row['SNR']):.0f}: {len(s)} images; centroid offsets on coadd/regridded: "
          f"max {max(offsets):.3f} pix; raw stamp positions vs the true pixel: max {max(raw_offsets):.3f} pix")
    assert max(offsets) < MAX_CENTROID_OFFSET
    assert max(raw_offsets) < MAX_RAW_OFFSET


def test_coadd_stamps_method_and_inspect(coadd, star_stamps, tmp_path):
    s, star, row = star_stamps
    again = coadd.stamps(float(row["RA"]), float(row["DEC"]), 20.0)
    assert again.roles() == s.roles()
    half = math.ceil(0.5 * 20.0 / coadd.pixel_scale)
    assert again[0].data.shape == (2 * half + 1, 2 * half + 1) and again[0].grid == "wcs"
    path = tmp_path / "stamps.png"
    fig = again.inspect(path)
    assert path.stat().st_size > 10_000 and len([ax for ax in fig.axes if ax.images]) == len(again)
    import matplotlib.pyplot as plt
    plt.close(fig)


# ============================================================================ 4. bad input
def test_bad_inputs_commit_nothing(coadd_night, regridded, tmp_path, monkeypatch):
    before = db_state(coadd_night.root / "storage")
    grid = (RegridGrid.OBJECT == FIELD).first()
    print(f"\nthe grid's filename: {grid.filename!r}")
    if grid.filename:
        with pytest.raises(TaskError, match="RegridGrid, not an image product"):
            SourceListTask(filenames=[grid.filename], commit=1).execute()
    else:
        with pytest.raises(TaskError, match="not a file name"):
            SourceListTask(filenames=[grid.filename], commit=1).execute()
    with pytest.raises(TaskError, match="no product named"):
        SourceListTask(filenames=[f"RegridGrid-{grid.object_id}"], commit=1).execute()
    # a regridded frame whose file has lost its WEIGHT extension
    frame = (RegriddedFrame.object_id == regridded[1].object_id).first()
    stripped = tmp_path / "noweight.fits"
    with fits.open(frame.local_path()) as hdul:
        fits.HDUList([hdul[0].copy(), hdul["FLAGS"].copy()]).writeto(stripped)
    monkeypatch.setattr(RegriddedFrame, "local_path", lambda self, *a, **k: stripped)
    with pytest.raises(TaskError, match=r"no readable WEIGHT extension.*RegridTask"):
        SourceListTask(filenames=[frame.filename], commit=1).execute()
    assert db_state(coadd_night.root / "storage") == before
