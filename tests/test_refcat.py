"""Reference catalogues: loading the simulator's catalogues, region queries, contexts; SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from astropy.table import Table
import astropy.units as u

from awe import context
from awe.model import ReferenceCatalog, ReferenceSource, load_refcat, refcat_box, refcat_sources
from awe.model.refcat import RefcatError, refcat_rows
from awe.sim import simulate_night

QSO = (187.2779167, 2.0523889)  # 3C273


@pytest.fixture(scope="module")
def refcat_dir(tmp_path_factory) -> Path:
    """The simulator's reference catalogues (one raw exposure only: the catalogues cover the night)."""
    out = simulate_night(tmp_path_factory.mktemp("night"), scale=0.0625, seed=1,
                         only=["WFI.2003-03-04T04:42:29.496"])
    return out / "refcat"


def _inside(table: Table, ra: float, dec: float, radius: float) -> Table:
    """Brute force: the rows of ``table`` within ``radius`` deg."""
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(table["RA"], table["DEC"])).deg
    return table[sep <= radius]


def _n_rows(catalog_id: int) -> int:
    with context.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(refcat_rows)
                            .where(refcat_rows.c.catalog_id == catalog_id)).scalar()


def test_simulated_catalogues_and_region_queries(db, refcat_dir):
    astro_in = Table.read(refcat_dir / "astrometric.fits")
    std_in = Table.read(refcat_dir / "standards.fits")
    astro = load_refcat(refcat_dir / "astrometric.fits", "astrometric")
    std = load_refcat(refcat_dir / "standards.fits", "standard", name="Landolt-sim")
    assert (astro.name, astro.kind, astro.n_sources) == ("astrometric", "astrometric", len(astro_in))
    assert (std.name, std.kind, std.n_sources) == ("Landolt-sim", "standard", len(std_in))
    main = ("ra", "dec", "mag", "mag_err", "name")
    assert {k: std.source_columns[k] for k in main} == {"ra": "RA", "dec": "DEC", "mag": "R", "mag_err": "e_R",
                                                         "name": "NAME"}
    assert astro.source_columns["mag"] == "MAG" and astro.source_columns["mag_err"] is None
    assert (astro.source_columns["ra_err"], astro.source_columns["dec_err"]) == ("RA_ERR", "DEC_ERR")
    assert _n_rows(astro.object_id) == len(astro_in) and _n_rows(std.object_id) == len(std_in)
    everything = std.sources()
    assert len(everything) == len(std_in) and set(everything["name"]) == set(std_in["NAME"])
    # the stored file is the normalised table
    stored = Table.read(context.storage.open(std.filename, checksum=std.checksum))
    assert len(stored) == len(std_in) and stored.colnames[:5] == ["ra", "dec", "mag", "mag_err", "name"]

    # its QA figure: the sources on the sky
    std.inspect(path=context.settings.workdir / "std.png")
    assert (context.settings.workdir / "std.png").stat().st_size > 5000

    # a cone around 3C273: exactly the stars the input file has there
    found = refcat_sources("astrometric", *QSO, radius_deg=0.1)
    expected = _inside(astro_in, *QSO, 0.1)
    assert len(found) == len(expected) > 20
    order = np.lexsort((np.asarray(found["dec"]), np.asarray(found["ra"])))
    ref_order = np.lexsort((np.asarray(expected["DEC"]), np.asarray(expected["RA"])))
    np.testing.assert_allclose(np.asarray(found["ra"])[order], np.asarray(expected["RA"])[ref_order], atol=1e-12)
    np.testing.assert_allclose(np.asarray(found["mag"])[order], np.asarray(expected["MAG"])[ref_order], atol=1e-9)
    assert set(found["catalog"]) == {"astrometric"}
    # the positional errors (TUNIT arcsec) are columns of their own; no proper motions: epoch J2000 of the file
    np.testing.assert_allclose(np.asarray(found["ra_err"])[order], np.asarray(expected["RA_ERR"])[ref_order])
    assert np.all(np.isnan(found["pmra"])) and np.all(found["epoch"] == 2000.0)
    assert found["ra_err"].unit == u.arcsec and "RA_ERR" not in found.colnames

    # the standards of one Landolt field, with their other magnitudes
    sa104 = std_in[std_in["FIELD"] == "SA104"]
    centre = (float(np.mean(sa104["RA"])), float(np.mean(sa104["DEC"])))
    stars = refcat_sources("standard", *centre, radius_deg=0.5)
    assert set(stars["name"]) == set(_inside(std_in, *centre, 0.5)["NAME"]) >= set(sa104["NAME"])
    row = stars[list(stars["name"]).index(sa104["NAME"][0])]
    assert row["mag"] == pytest.approx(sa104["R"][0]) and row["mag_err"] == pytest.approx(sa104["e_R"][0])
    assert row["V"] == pytest.approx(sa104["V"][0]) and row["FIELD"] == "SA104"

    # box query equals the brute-force selection
    box = refcat_box("astrometric", QSO[0] - 0.05, QSO[0] + 0.05, QSO[1] - 0.03, QSO[1] + 0.03)
    keep = (np.abs(astro_in["RA"] - QSO[0]) <= 0.05) & (np.abs(astro_in["DEC"] - QSO[1]) <= 0.03)
    assert len(box) == int(keep.sum()) > 5

    # the sources are catalogue rows: units on the fetched columns, reachable from the query language
    assert (found["ra"].unit, found["dec"].unit, found["mag"].unit) == (u.deg, u.deg, u.mag)
    bright = (ReferenceSource.catalog == std) & (ReferenceSource.mag < 15)
    assert len(bright) == int((std_in["R"] < 15).sum()) > 0
    assert set(bright.table()["name"]) == set(std_in["NAME"][std_in["R"] < 15])
    assert len(ReferenceSource.catalog.kind == "astrometric") == len(astro_in)
    assert len(ReferenceSource.cone(*QSO, 0.1 * u.deg)) == len(expected)

    # loading the same catalogue again changes nothing; deleting it removes its rows
    assert load_refcat(refcat_dir / "astrometric.fits", "astrometric").object_id == astro.object_id
    assert len(ReferenceCatalog.kind == "astrometric") == 1
    std_id = std.object_id
    context.delete(std)
    assert _n_rows(std_id) == 0 and len(ReferenceCatalog.kind == "standard") == 0
    with context.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(refcat_rows)).scalar() == len(astro_in)


def test_visibility_follows_the_context(db, refcat_dir):
    private = load_refcat(refcat_dir / "standards.fits", "standard")
    assert private.project == "TESTER"
    assert len(refcat_sources("standard", 102.96, -0.35, 1.0)) > 0
    context.add_user("bob", "pw-bob")
    context.login("bob", "pw-bob")
    with pytest.raises(LookupError, match="no standard reference catalogue is visible in project BOB"):
        refcat_sources("standard", 102.96, -0.35, 1.0)
    context.login("tester")
    context.set_project("ALL")
    public = load_refcat(refcat_dir / "standards.fits", "standard")
    assert public.object_id != private.object_id and public.project == "ALL"
    # in TESTER both copies are visible: the same content is returned once, from the current project
    context.set_project("TESTER")
    both = refcat_sources("standard", 102.96, -0.35, 1.0)
    assert len(both) == len(set(both["name"])) > 0
    context.login("bob")
    assert len(refcat_sources("standard", 102.96, -0.35, 1.0)) == len(both)


def test_csv_sexagesimal_and_wrap_around(sqlite_db, tmp_path):
    path = tmp_path / "stars.csv"
    path.write_text(
        "star,alpha,delta,Rmag,Rmag_err,Vmag\n"
        "A,23:59:50.0,+00:10:00,14.1,0.02,14.5\n"
        "B,00:00:10.0,-00:10:00,15.2,0.03,15.9\n"
        "C,00:30:00.0,+00:00:00,16.0,,16.4\n"
        "D,12:00:00.0,+45:00:00,12.0,0.01,12.3\n")
    cat = load_refcat(path, "standard", columns={"ra": "alpha", "dec": "delta", "name": "star"})
    assert cat.n_sources == 4 and cat.source_columns["mag"] == "Rmag" and cat.source_columns["mag_err"] == "Rmag_err"
    near_zero = refcat_sources("standard", 0.0, 0.0, radius_deg=0.3)
    assert sorted(near_zero["name"]) == ["A", "B"]
    a = near_zero[list(near_zero["name"]).index("A")]
    assert a["ra"] == pytest.approx(359.958333333, abs=1e-8) and a["dec"] == pytest.approx(1 / 6, abs=1e-9)
    assert a["Vmag"] == pytest.approx(14.5)
    wrapped = refcat_box("standard", 359.0, 1.0, -1.0, 1.0)
    assert sorted(wrapped["name"]) == ["A", "B"]
    c = refcat_sources("standard", 7.5, 0.0, radius_deg=0.01)
    assert list(c["name"]) == ["C"] and np.isnan(c["mag_err"][0])
    assert list(refcat_sources("standard", 180.0, 45.0, radius_deg=0.001)["name"]) == ["D"]


def test_bad_catalogues(sqlite_db, tmp_path):
    no_ra = tmp_path / "no_ra.csv"
    no_ra.write_text("x,y,mag\n1,2,3\n")
    with pytest.raises(RefcatError, match="no RA column found"):
        load_refcat(no_ra, "astrometric")
    with pytest.raises(RefcatError, match="kind must be one of"):
        load_refcat(no_ra, "photometric")
    with pytest.raises(RefcatError, match="no column 'RAJ2000' for ra"):
        load_refcat(no_ra, "astrometric", columns={"ra": "RAJ2000"})
    bad_dec = tmp_path / "bad_dec.csv"
    bad_dec.write_text("ra,dec\n10,95\n")
    with pytest.raises(RefcatError, match="beyond"):
        load_refcat(bad_dec, "astrometric")
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"not a fits table" * 300)
    with pytest.raises(RefcatError, match="cannot read"):
        load_refcat(garbage, "astrometric")
    assert len(ReferenceCatalog.all()) == 0


# ---------------------------------------------------------------------------- astrometric columns, bands
def _gaia_like(path: Path) -> Table:
    """A Gaia DR3 export: errors in mas without TUNIT, proper motions with TUNIT, ref_epoch 2016.0."""
    table = Table()
    table["source_id"] = np.array([4295806720, 4295806721, 4295806722], dtype=np.int64)
    table["ra"] = [187.25, 187.30, 187.35] * u.deg
    table["dec"] = [2.00, 2.05, 2.10] * u.deg
    table["ra_error"] = [0.05, 0.2, 1.5]
    table["dec_error"] = [0.04, 0.3, 1.2]
    table["pmra"] = [100.0, -20.0, np.nan] * u.mas / u.yr
    table["pmdec"] = [-50.0, 5.0, np.nan] * u.mas / u.yr
    table["ref_epoch"] = [2016.0, 2016.0, 2016.0] * u.yr
    table["phot_g_mean_mag"] = [15.1, 17.2, 20.3]
    table.write(path, format="fits", overwrite=True)
    return table


def test_gaia_like_catalogue_errors_and_proper_motions(db, tmp_path):
    gaia = _gaia_like(tmp_path / "gaia.fits")
    cat = load_refcat(tmp_path / "gaia.fits", "astrometric")
    cols = cat.source_columns
    assert (cols["mag"], cols["ra_err"], cols["pmra"], cols["epoch"]) == ("phot_g_mean_mag", "ra_error", "pmra",
                                                                          "ref_epoch")
    at_catalogue = refcat_sources("astrometric", 187.3, 2.05, 0.2)
    at_catalogue.sort("ra")
    # Gaia's errors are in mas
    np.testing.assert_allclose(at_catalogue["ra_err"], np.asarray(gaia["ra_error"]) / 1000.0)
    np.testing.assert_allclose(at_catalogue["dec_err"], np.asarray(gaia["dec_error"]) / 1000.0)
    assert list(at_catalogue["epoch"]) == [2016.0] * 3 and list(at_catalogue["mag"]) == [15.1, 17.2, 20.3]
    assert list(at_catalogue["name"]) == [str(i) for i in gaia["source_id"]]
    # the night of 2003-03-04: 12.83 years before the catalogue's epoch
    night = refcat_sources("astrometric", 187.3, 2.05, 0.2, epoch="2003-03-04T04:42:29.496")
    night.sort("ra")
    from astropy.time import Time
    dt = Time("2003-03-04T04:42:29.496").jyear - 2016.0
    assert night.meta["epoch"] == pytest.approx(2003.17, abs=0.01)
    d_ra = (night["ra"] - at_catalogue["ra"]) * 3.6e6 * np.cos(np.radians(at_catalogue["dec"]))
    d_dec = (night["dec"] - at_catalogue["dec"]) * 3.6e6
    np.testing.assert_allclose(d_ra[:2], np.array([100.0, -20.0]) * dt, atol=0.01)  # mas
    np.testing.assert_allclose(d_dec[:2], np.array([-50.0, 5.0]) * dt, atol=0.01)
    assert d_ra[2] == 0 and d_dec[2] == 0  # no proper motion: the position stays
    # the same with the epoch as a Julian year; a nonsense epoch is refused
    same = refcat_sources("astrometric", 187.3, 2.05, 0.2, epoch=float(Time("2003-03-04T04:42:29.496").jyear))
    same.sort("ra")
    np.testing.assert_allclose(same["ra"], night["ra"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not a plausible Julian year"):
        refcat_sources("astrometric", 187.3, 2.05, 0.2, epoch=52702.2)


def test_vizier_like_catalogue_units_bands_and_colour(sqlite_db, tmp_path):
    """Vizier's spellings (RAJ2000, e_RAJ2000 in mas by TUNIT, pmRA/pmDE, Rmag/e_Rmag, Vmag), a proper motion
    without cos(dec) (pm_ra), and the magnitudes of a band with a colour."""
    table = Table()
    table["UCAC4"] = ["455-052181", "455-052182"]
    table["RAJ2000"] = [150.0, 150.1] * u.deg
    table["DEJ2000"] = [60.0, 60.05] * u.deg
    table["e_RAJ2000"] = [20.0, 40.0] * u.mas
    table["e_DEJ2000"] = [0.03, 0.05] * u.arcsec
    table["pm_ra"] = [100.0, 0.0] * u.mas / u.yr      # mu_alpha itself: times cos(60 deg) = 50 mas/yr
    table["pmDE"] = [0.01, 0.0] * u.arcsec / u.yr     # 10 mas/yr
    table["EpRA"] = [1998.5, 1998.5]
    table["Rmag"] = [14.0, 15.5]
    table["e_Rmag"] = [0.02, 0.03]
    table["Vmag"] = [14.6, 16.3]
    table["e_Vmag"] = [0.03, 0.04]
    table.write(tmp_path / "ucac.fits", format="fits")
    cat = load_refcat(tmp_path / "ucac.fits", "standard")
    assert cat.source_columns["mag"] == "Rmag" and cat.source_columns["pmra_cosdec"] is False
    stars = refcat_sources("standard", 150.05, 60.02, 0.2, band="V", colour="V-R")
    stars.sort("ra")
    np.testing.assert_allclose(stars["ra_err"], [0.02, 0.04])
    np.testing.assert_allclose(stars["dec_err"], [0.03, 0.05])
    np.testing.assert_allclose(stars["pmra"], [50.0, 0.0])
    np.testing.assert_allclose(stars["pmdec"], [10.0, 0.0])
    assert list(stars["epoch"]) == [1998.5, 1998.5]
    np.testing.assert_allclose(stars["mag"], [14.6, 16.3])
    np.testing.assert_allclose(stars["mag_err"], [0.03, 0.04])
    np.testing.assert_allclose(stars["colour"], [0.6, 0.8])
    np.testing.assert_allclose(stars["colour_err"], np.hypot([0.03, 0.04], [0.02, 0.03]))
    assert (stars.meta["band"], stars.meta["colour"]) == ("V", "V-R")
    # the main band is the catalogue's mag; a band it does not have is a clear error
    r = refcat_sources("standard", 150.05, 60.02, 0.2, band="R")
    r.sort("ra")
    np.testing.assert_allclose(r["mag"], [14.0, 15.5])
    with pytest.raises(LookupError, match="has no I magnitudes"):
        refcat_sources("standard", 150.05, 60.02, 0.2, band="I")
    with pytest.raises(ValueError, match="colour must name two bands"):
        refcat_sources("standard", 150.05, 60.02, 0.2, colour="VR")
    # an error column in a unit that is not an angle is refused when loading
    table["e_RAJ2000"].unit = u.mag
    table.write(tmp_path / "bad.fits", format="fits")
    with pytest.raises(RefcatError, match="not convertible to arcsec"):
        load_refcat(tmp_path / "bad.fits", "astrometric")


def test_simulated_standards_band_and_colour(sqlite_db, refcat_dir):
    std_in = Table.read(refcat_dir / "standards.fits")
    load_refcat(refcat_dir / "standards.fits", "standard")
    sa104 = std_in[std_in["FIELD"] == "SA104"]
    centre = (float(np.mean(sa104["RA"])), float(np.mean(sa104["DEC"])))
    stars = refcat_sources("standard", *centre, radius_deg=0.3, band="R", colour="V-R")
    by_name = {n: i for i, n in enumerate(std_in["NAME"])}
    rows = [by_name[n] for n in stars["name"]]
    np.testing.assert_allclose(stars["mag"], std_in["R"][rows])
    np.testing.assert_allclose(stars["mag_err"], std_in["e_R"][rows])
    np.testing.assert_allclose(stars["colour"], std_in["V_R"][rows])      # the catalogue's colour column
    np.testing.assert_allclose(stars["colour_err"], np.hypot(std_in["e_V"][rows], std_in["e_R"][rows]))


def test_catalogue_loaded_before_the_astrometric_columns(sqlite_db, refcat_dir):
    """A catalogue of an older awe (NULL errors, no ra_err in source_columns, errors in extra) still gives them."""
    from awe.db.persistent import metadata
    astro_in = Table.read(refcat_dir / "astrometric.fits")
    cat = load_refcat(refcat_dir / "astrometric.fits", "astrometric")
    fresh = refcat_sources("astrometric", *QSO, radius_deg=0.1)
    catalogs = metadata.tables["reference_catalogs"]
    old_columns = {k: v for k, v in cat.source_columns.items() if k in ("ra", "dec", "mag", "mag_err", "name")}
    by_position = {(round(float(r), 9), round(float(d), 9)): i for i, (r, d) in enumerate(zip(astro_in["RA"],
                                                                                             astro_in["DEC"]))}
    with context.engine.begin() as conn:
        conn.execute(catalogs.update().where(catalogs.c.object_id == cat.object_id).values(source_columns=old_columns))
        for row in conn.execute(sa.select(refcat_rows.c.row_id, refcat_rows.c.ra, refcat_rows.c.dec)).fetchall():
            i = by_position[(round(row.ra, 9), round(row.dec, 9))]
            conn.execute(refcat_rows.update().where(refcat_rows.c.row_id == row.row_id).values(
                ra_err=None, dec_err=None, pmra=None, pmdec=None, epoch=None,
                extra={"RA_ERR": float(astro_in["RA_ERR"][i]), "DEC_ERR": float(astro_in["DEC_ERR"][i])}))
    context.login("tester")  # a new session: the catalogue is read again
    old = refcat_sources("astrometric", *QSO, radius_deg=0.1)
    assert len(old) == len(fresh) > 20
    np.testing.assert_allclose(old["ra_err"], fresh["ra_err"])
    np.testing.assert_allclose(old["dec_err"], fresh["dec_err"])
    assert np.all(old["epoch"] == 2000.0) and np.all(np.isnan(old["pmra"]))
