"""The web application in a real browser: Playwright driving Debian's chromium (the test command installs it).

One small night (one chip calibrated, one science exposure reduced with its source list, the master bias made again,
scale 0.125) served by uvicorn on 127.0.0.1: log in, browse the classes, query, open the newest reduced frame
(preview with RA/Dec readout, inspect figure), walk its lineage to a raw bias, open the source list's table and one
source's stamps back to the raw biases and flats, edit a validity range, publish (migrate) the frame to ALL,
watch a DPU job finish on the job monitor.
Screenshots of the main pages go to
``test-artefacts/web/`` (``AWE_TEST_ARTEFACTS`` moves the folder).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from awe import context
from awe.config import load_settings
from awe.db.accounts import private_project_name
from tests.astro.conftest import BIASES, DOMES, SCALE, SCIENCE, SEED, TWILIGHTS, chip_file

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(os.environ.get("AWE_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "test-artefacts")) / "web"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """uvicorn serving the web application on a calibrated chip and one reduced frame."""
    from awe.sim import simulate_night
    from tests import _factory
    from awe.tasks import BiasTask, ReduceTask
    from awe.tasks.ingest import ingest
    import uvicorn
    from awe.web import create_app

    root = tmp_path_factory.mktemp("web-night")
    raw = simulate_night(root / "raw", scale=SCALE, seed=SEED, only=BIASES + DOMES + TWILIGHTS + SCIENCE[:1])
    settings = load_settings(home=str(root / "home"), workdir=str(root / "work"), user="tester",
                             password="pw-tester", storage=str(root / "storage"))
    (root / "work").mkdir()
    context.connect(settings, create_user=True)
    try:
        assert not ingest([raw]).failed
        context.set_project(private_project_name("tester"))
        _factory.calibrate_chip("ccd50")
        reduced = ReduceTask(raw_filenames=[chip_file(SCIENCE[0], "ccd50")], commit=1).execute()
        from awe.model import ReducedScienceFrame
        from awe.tasks import SourceListTask
        frame = next(p for p in reduced if isinstance(p, ReducedScienceFrame))
        SourceListTask(filenames=[frame.filename], commit=1).execute()
        BiasTask(instrument="WFI", chip="ccd50", overscan=6, commit=1, redo=1).execute()  # eclipses the first
        app = create_app(settings, context.session.database, secret="browser-test-" + "s" * 40)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(10)
    finally:
        context.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    assert Path(CHROMIUM).exists(), (f"{CHROMIUM} is missing: the test command installs it (bash run.sh test), or "
                                     "`apt-get install chromium`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                    "--disable-background-networking", "--disable-extensions",
                                    "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


def _shot(page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def test_a_user_session_in_the_browser(served, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # log in: a wrong password first
    page.goto(served + "/classes")
    assert "/login" in page.url
    page.fill("input[name=username]", "tester")
    page.fill("input[name=password]", "nope")
    page.click("button[type=submit]")
    assert "wrong user name or password" in page.inner_text("#login-error")
    page.fill("input[name=username]", "tester")
    page.fill("input[name=password]", "pw-tester")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/classes$"))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)  # logged in now
    _shot(page, "classes")

    # browse: the class list counts what the night made
    row = page.locator("#classes tr", has=page.locator("a", has_text=re.compile(r"^RawBiasFrame$")))
    assert int(row.locator("td.num").inner_text()) == len(BIASES) * 8  # every chip of every bias
    page.click("#classes a:text-is('ReducedScienceFrame')")
    page.wait_for_url(re.compile(r".*/query/ReducedScienceFrame$"))

    # query: newest first, through the form
    page.select_option("select[name=a0]", "chip.name")
    page.fill("input[name=v0]", "ccd50")
    page.select_option("select[name=sort]", "creation_date")
    page.check("input[name=desc]")
    page.click("#query-form button[type=submit]")
    page.wait_for_url(re.compile(r".*sort=creation_date.*"))
    assert page.inner_text("#python-query") == (
        "((ReducedScienceFrame.chip.name == 'ccd50')).order_by('-creation_date')")
    _shot(page, "query")

    # the newest product: preview with the RA/Dec readout, overlays, lineage
    page.click("#results tr:nth-child(2) td a")
    page.wait_for_url(re.compile(r".*/object/\d+$"))
    reduced_url = page.url
    page.wait_for_selector("#preview[data-ready='1']")
    box = page.locator("#preview").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    readout = page.inner_text("#readout")
    assert "RA" in readout and "Dec" in readout, readout
    ra = float(re.search(r"RA ([\d.]+)", readout).group(1))
    dec = float(re.search(r"Dec (-?[\d.]+)", readout).group(1))
    x, y = (float(v) for v in re.search(r"x ([\d.]+), y ([\d.]+)", readout).groups())
    # the readout is the frame's header WCS at that pixel (astropy's answer on the downloaded file)
    import io
    from astropy.io import fits
    from astropy.wcs import WCS
    stored = page.request.get(reduced_url + "/fits")
    assert stored.ok and stored.headers["etag"].strip('"') in page.inner_text("main")
    with fits.open(io.BytesIO(stored.body())) as hdul:
        want_ra, want_dec = WCS(hdul[0].header).all_pix2world([[x, y]], 1)[0]
    assert abs((ra - want_ra) * np.cos(np.radians(dec))) * 3600 < 0.5 and abs(dec - want_dec) * 3600 < 0.5, (
        readout, want_ra, want_dec)
    assert page.locator("#lineage a.node").count() >= 10
    figure = page.request.get(reduced_url + "/inspect.png")  # the frame's inspect figure, drawn on the server
    assert figure.ok and figure.body()[:8] == b"\x89PNG\r\n\x1a\n" and len(figure.body()) > 10_000
    _shot(page, "object")
    page.click("text=WeightFrame")
    page.wait_for_selector("#preview[data-ready='1']")
    _shot(page, "object-weight-overlay")

    # walk the lineage to a raw bias: reduced frame -> master bias -> raw bias
    page.goto(reduced_url)
    page.click("#lineage a.node[data-class='BiasFrame']")
    page.wait_for_url(re.compile(r".*/object/\d+$"))
    assert page.inner_text("h1").startswith("BiasFrame")
    page.click("#lineage a.node[data-class='RawBiasFrame'] >> nth=0")
    page.wait_for_url(re.compile(r".*/object/\d+$"))
    assert page.inner_text("h1").startswith("RawBiasFrame")
    assert page.inner_text("#filename") in {f"WFI.{d}_1.fits" for d in BIASES}
    _shot(page, "raw-bias")

    # a source list: its sources table by MAG_AUTO, one click to a source's stamps through the lineage
    page.goto(served + "/query/SourceList")
    page.click("#results tr:nth-child(2) td a")
    page.wait_for_url(re.compile(r".*/object/\d+$"))
    assert page.inner_text("h1").startswith("SourceList")
    page.click("a.rows-link:text-is('Source rows of this object')")
    page.wait_for_url(re.compile(r".*/rows/Source\?parent=\d+$"))
    assert "order_by('MAG_AUTO')" in page.inner_text("#python-query")
    header_cells = page.locator("#results tr >> nth=0").locator("th").all_inner_texts()
    headers = [h.split(" [")[0].strip(" ▲▼") for h in header_cells]
    mags = [float(t) for t in page.locator("#results tr td:nth-child(%d)" % (headers.index("MAG_AUTO") + 1))
            .all_inner_texts() if t]
    assert len(mags) >= 10 and mags == sorted(mags)
    _shot(page, "sources")
    first = page.locator("#results tr:nth-child(2)")
    cells = first.locator("td").all_inner_texts()
    x, y = float(cells[headers.index("X")]), float(cells[headers.index("Y")])
    first.locator("a.stamps-link").click()
    page.wait_for_url(re.compile(r".*/object/\d+/stamps\?.*"))
    page.wait_for_selector("#stamps figure.stamp")
    roles = page.locator("#stamps figure.stamp").evaluate_all("els => els.map(e => e.dataset.role)")
    classes = set(page.locator("#stamps figure.stamp").evaluate_all("els => els.map(e => e.dataset.class)"))
    assert roles[0] == "image" and "image.raw" in roles and "image.bias.raw_bias_frames" in roles, roles
    assert {"ReducedScienceFrame", "RawScienceFrame", "BiasFrame", "RawBiasFrame", "RawDomeFlatFrame",
            "RawTwilightFlatFrame"} <= classes, classes
    # the page is the Python API's answer (awe.model.stamps) for that source
    from awe.model import Source
    from awe.model.stamps import stamps as stamps_of
    sid = int(re.search(r"sid=(\d+)", page.url).group(1))
    slid = int(re.search(r"/object/(\d+)/stamps", page.url).group(1))
    row = ((Source.SLID == slid) & (Source.SID == sid)).table()[0]
    assert abs(float(row["X"]) - x) < 1e-3 * max(1.0, abs(x)) and abs(float(row["Y"]) - y) < 1e-3 * max(1.0, abs(y))
    assert stamps_of(row).roles() == roles
    image_caption = page.inner_text("#stamps figure.stamp >> nth=0")
    px, py = (float(v) for v in re.search(r"pixel \(([-\d.]+), ([-\d.]+)\)", image_caption).groups())
    assert abs(px - float(row["X"])) <= 0.051 and abs(py - float(row["Y"])) <= 0.051  # the source, cut at its pixel
    for img in page.locator("#stamps figure.stamp img").all():
        assert img.evaluate("e => e.complete && e.naturalWidth > 0")
    _shot(page, "stamps")
    page.click("#stamps figure.stamp[data-class='RawBiasFrame'] a.stamp-link >> nth=0")
    page.wait_for_url(re.compile(r".*/object/\d+$"))
    assert page.inner_text("h1").startswith("RawBiasFrame")

    # edit a validity range: the master bias's end moves one day earlier; the chart and the history show it
    page.goto(served + "/validity?cls=BiasFrame&chip=ccd50")
    form = page.locator("form.validity-edit").first
    end = form.locator("input[name=timestamp_end]")
    old_end = end.input_value()
    new_end = "2003-03-04T06:00:00"
    end.fill(new_end)
    form.locator("button").click()
    page.wait_for_selector("#validity-history")
    assert new_end in page.inner_text("#validity-history")
    assert old_end != new_end and "tester" in page.inner_text("#validity-history")
    assert page.locator("#validity-chart svg a.bar").count() == 2
    assert page.locator("#validity-chart svg a.bar.eclipsed").count() == 1  # the first bias, made again
    _shot(page, "validity")

    # publish: the confirmation lists what moves, then the frame is in ALL
    page.goto(reduced_url)
    page.select_option("#publish-form select[name=project]", "ALL")
    page.click("#publish-form button")
    page.wait_for_selector("#moving")
    moving = page.locator("#moving li").count()
    assert moving >= 5  # the frame, its weight and satellite maps' inputs: the calibrations it was made with
    _shot(page, "publish")
    page.click("#confirm-publish button")
    page.wait_for_url(reduced_url)
    assert "project ALL" in page.inner_text("main")

    # the job monitor: a DPU job submitted while the page is open appears and finishes there, without a reload
    page.goto(served + "/jobs")
    page.wait_for_selector("#jobs-table")
    page.evaluate("window.aweSamePage = 1")
    from awe.dpu import DPU
    dpu = DPU(session=context.session)
    submitted: list[int] = []
    worker = threading.Thread(target=lambda: submitted.extend(
        dpu.run("Bias", instrument="WFI", chip="ccd50", overscan=6, commit=0, redo=1)))  # a dry run: nothing kept
    worker.start()
    page.wait_for_selector("#jobs tr.job[data-state='done']", timeout=180_000)
    worker.join(60)
    assert len(submitted) == 1 and page.evaluate("window.aweSamePage") == 1
    row = page.locator(f"#jobs tr.job[data-job='{submitted[0]}']")
    assert "Bias" in row.inner_text() and socket.gethostname() in row.inner_text()
    _shot(page, "jobs")
    row.locator("a.job-link").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    assert page.inner_text("#job-state") == "done" and len(page.inner_text("#job-log")) > 20
    _shot(page, "job")
    assert not errors, errors
