"""Standard-star measurements as catalogue rows and photometric parameters, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from awe.db.commit import commit
from awe.model import PhotometricParameters, PhotSrc, PhotSrcCatalog


def test_measurements_are_rows_of_their_catalogue(db):
    n = 25
    rng = np.random.default_rng(5)
    rows = Table({"name": [f"SA104-{100 + 7 * i}" for i in range(n)], "ra": rng.uniform(190.4, 190.8, n),
                  "dec": rng.uniform(-0.7, -0.3, n), "x": rng.uniform(0, 254, n), "y": rng.uniform(0, 511, n),
                  "flux": rng.uniform(1e3, 1e5, n), "flux_err": np.full(n, 30.0), "mag_cat": rng.uniform(12, 16, n),
                  "mag_cat_err": np.full(n, 0.005), "colour": rng.normal(0.45, 0.2, n), "airmass": np.full(n, 1.3),
                  "exptime": np.full(n, 30.0), "flags": np.where(np.arange(n) % 5 == 0, 1, 0)})
    cat = PhotSrcCatalog(filename="Cal-TESTER-WFI-----#844-ccd50-Photc-Cal-1.fits", OBJECT="SA104", AIRMASS=1.3,
                         EXPTIME=30.0, band="R", colour_name="V-R", n_measured=n)
    cat.__dict__["_pending_rows"] = rows
    params = PhotometricParameters(filename="Cal-TESTER-WFI-----#844-ccd50-PhotomCal-1.fits", zeropoint=19.98,
                                   zeropoint_error=0.01, extinction=0.07, extinction_error=0.007,
                                   extinction_source="fitted", n_stars=n, rms=0.012)
    params.photcats = [cat]
    commit([(cat, None), (params, None)])

    (loaded,) = PhotSrcCatalog.filename == cat.filename
    table = loaded.sources()  # in sky order (rows are stored by HEALPix index)
    table.sort("name")
    rows.sort("name")
    assert list(table["name"]) == list(rows["name"]) and str(table["ra"].unit) == "deg"
    assert np.allclose(table["flux"], rows["flux"]) and np.array_equal(table["flags"], rows["flags"])
    assert len((PhotSrc.catalog == loaded) & (PhotSrc.flags == 0)) == n - 5
    assert len(PhotSrc.cone(float(rows["ra"][0]), float(rows["dec"][0]), 1.0)) >= 1
    (found,) = PhotometricParameters.extinction_source == "fitted"
    assert [c.object_id for c in found.photcats] == [loaded.object_id]
    assert abs(float(found.magnitude(10 ** (-0.4 * (15.0 - 19.98 + 0.07)), 1.0, 1.0)) - 15.0) < 1e-9
