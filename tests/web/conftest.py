"""A small team (tester, alice, bob) on SQLite and PostgreSQL, served by the web application.

alice has a private product with a real FITS file and a private reference catalogue (rows); she published another
product. On PostgreSQL the server connects as an authenticator role (``awe db authenticator``), so every request
runs as its user under row-level security.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from awe.db.commit import commit
from awe.db.publish import migrate
from tests.security._team import TeamProduct, make_team

PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob"}


class WebTeam:
    def __init__(self, team, app, server, tmp_path) -> None:
        self.team = team
        self.app = app
        self.server = server
        self.tmp_path = tmp_path

    def client(self, user: str | None = None):
        from starlette.testclient import TestClient
        client = TestClient(self.app, base_url="http://testserver", follow_redirects=False)
        if user is not None:
            r = client.post("/login", data={"username": user, "password": PASSWORDS[user]})
            assert r.status_code == 303, r.text
        return client


def csrf_of(client) -> str:
    """The CSRF token of a logged-in client (from the context form of the home page)."""
    import re
    page = client.get("/").text
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _fits_file(path, seed: int) -> None:
    data = np.random.default_rng(seed).normal(100, 5, (40, 60)).astype(np.float32)
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 30.0, "CRPIX2": 20.0,
                          "CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -0.0001, "CD1_2": 0.0, "CD2_1": 0.0,
                          "CD2_2": 0.0001})
    fits.PrimaryHDU(data, header).writeto(path)


@pytest.fixture
def web(db, tmp_path):
    team = make_team(db)
    alice = team.alice
    image = tmp_path / "alice-image.fits"
    _fits_file(image, 1)
    (team.alice_image,) = commit([(TeamProduct(filename="alice-image.fits", frames=team.raws[:1]), image)],
                                 session=alice)
    published = tmp_path / "alice-shared-image.fits"
    _fits_file(published, 2)
    (team.alice_shared_image,) = commit([(TeamProduct(filename="alice-shared-image.fits", frames=team.raws[1:2]),
                                          published)], session=alice)
    migrate(alice, team.alice_shared_image, "ALL")
    stars = tmp_path / "alice-stars.csv"
    stars.write_text("name,ra,dec,mag,mag_err\n" + "".join(
        f"S{i},{150 + (i % 10) * 0.01:.4f},{2 + (i // 10) * 0.01:.4f},{14 + i * 0.05:.2f},{'' if i % 3 else '0.02'}\n"
        for i in range(60)))  # mag_err: one value (ties) on every third star, none on the others
    from awe.model import load_refcat
    with alice.activate():
        team.alice_catalog = load_refcat(stars, "standard", name="alice-stars")
    server = team.admin.database
    if not server.is_sqlite:
        from awe.db.database import Database
        from awe.db.rls import create_authenticator
        with team.admin.engine.begin() as conn:
            create_authenticator(conn, "awe_web", "pw-web")
        url = team.admin.database.engine.url.set(username="awe_web", password="pw-web")
        server = Database(url.render_as_string(hide_password=False))
    from awe.web import create_app
    app = create_app(db.settings.with_(user="awe_web" if not server.is_sqlite else db.settings.user),
                     server, secret="test-secret-" + "x" * 40)
    yield WebTeam(team, app, server, tmp_path)
    if server is not team.admin.database:
        server.dispose()
    team.close()

