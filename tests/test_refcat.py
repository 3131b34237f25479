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
    assert std.source_columns == {"ra": "RA", "dec": "DEC", "mag": "R", "mag_err": "e_R", "name": "NAME"}
    assert astro.source_columns["mag"] == "MAG" and astro.source_columns["mag_err"] is None
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
    assert "RA_ERR" in found.colnames  # the other columns come back from extra

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
