"""The web page in a real browser: headless Chromium (Debian's, driven by Playwright) against a live `vitmae serve`
on loopback. It asks for the token once, searches by an uploaded image, searches by a clicked result, pages through
the anomalies, keeps its state in the URL, and shows the duplicate groups. Screenshots are kept as artifacts; the docs'
pictures are those of the demo's run, and the duplicates view of real photographs with copies."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import GALLERY_CROPS, GALLERY_OUTLIERS, duplicates_table

from pipeline.demo import OUTLIERS, label_of

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = "VITMAE_TEST_ARTIFACTS"  # a folder that also receives the screenshots (CI keeps it)
# Set to 1, the demo's screenshots replace the pictures in docs/ (and the README): VITMAE_UPDATE_SCREENSHOTS=1
# .venv/bin/pytest tests/test_service_page.py -k demo. Look at each one before committing it.
UPDATE_SCREENSHOTS = "VITMAE_UPDATE_SCREENSHOTS"
TOKEN = "page-test-token"
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # a browser (Chromium) driving vitmae serve


@contextlib.contextmanager
def serving(run: Path, log: Path, token: str | None = None) -> Iterator[str]:
    """`vitmae serve` on `run`, on a free port, its output in `log`; yields its URL."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "VITMAE_SERVE_TOKEN"},
        **({"VITMAE_SERVE_TOKEN": token} if token else {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "serve", "--run", str(run), "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(rb"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_bytes())):
            assert server.poll() is None, f"vitmae serve exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"vitmae serve did not start: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield found.group(1).decode()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def served(gallery_run, gallery, tmp_path) -> Iterator[str]:
    """`vitmae serve` on a copy of the gallery run (with near-duplicate groups), with a token; yields its URL."""
    run = tmp_path / "run"
    shutil.copytree(gallery_run, run)
    from deltalake import DeltaTable

    pq.write_table(duplicates_table(gallery, DeltaTable(str(run / "embeddings")).version()), run / "duplicates.parquet")
    with serving(run, tmp_path / "serve.log", TOKEN) as base:
        assert httpx.get(f"{base}/api/health").status_code == 401  # the token is on
        yield base


def keep(page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """A screenshot (PNG, or JPEG for a .jpg name) under the test's folder, copied to $VITMAE_TEST_ARTIFACTS when
    set."""
    path = tmp_path / name
    page.mouse.move(0, 0)  # no card under the pointer
    quality = {"quality": 85} if path.suffix == ".jpg" else {}
    page.screenshot(path=str(path), full_page=full_page, animations="disabled", **quality)
    if os.environ.get(ARTIFACTS):
        os.makedirs(os.environ[ARTIFACTS], exist_ok=True)
        shutil.copy(path, Path(os.environ[ARTIFACTS]) / name)
    return path


def update_docs(pictures: list[Path]) -> None:
    """The docs' pictures replaced by these, under their names, with VITMAE_UPDATE_SCREENSHOTS=1."""
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        for picture in pictures:
            shutil.copy(picture, REPO / "docs" / picture.name)


def launch(playwright):
    """Debian's Chromium, headless; a missing one fails the test with what to install."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (make test does)", pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def test_search_click_anomalies_and_duplicates_in_a_browser(served, gallery, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    images = GALLERY_CROPS + len(GALLERY_OUTLIERS)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(served)

        # The token, asked once.
        expect(page.locator("#token-dialog")).to_be_visible()
        page.fill("#token-input", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#run-info")).to_contain_text(f"{images} images")

        # A file that is no image: one line, shown.
        page.set_input_files("#file", {"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image at all"})
        expect(page.locator("#search-status")).to_have_class(re.compile("error"))
        expect(page.locator("#search-status")).to_contain_text("not an image")

        # Search by an uploaded image: a grid of thumbnails with scores, the image itself first.
        page.set_input_files("#file", str(gallery / "coffee-03.png"))
        cards = page.locator("#search-grid .card")
        expect(cards).to_have_count(10)
        expect(cards.first).to_have_attribute("data-path", f"file://{gallery / 'coffee-03.png'}")
        expect(cards.first.locator(".scores")).to_contain_text("1.0000")
        expect(page.locator("#search-grid img.loaded")).to_have_count(10)
        expect(page.locator("#query-image")).to_be_visible()
        keep(page, tmp_path, "search.png")

        # Click a result: the search by its path, in the URL.
        clicked = cards.nth(3).get_attribute("data-path")
        cards.nth(3).click()
        expect(page).to_have_url(re.compile(r"view=search&path="))
        expect(cards.first).to_have_attribute("data-path", clicked)
        expect(cards.first).to_have_class(re.compile("query-card"))
        assert page.input_value("#path-input") == clicked

        # The anomalies view and its second page.
        page.click("nav a[data-view=anomalies]")
        grid = page.locator("#anomalies-grid .card")
        expect(grid).to_have_count(24)
        expect(grid.first.locator(".badge")).to_have_text("#1")
        expect(page.locator("#anomalies-grid img.loaded")).to_have_count(24)
        keep(page, tmp_path, "anomalies.png")
        # The run kept each patch's loss: the toggle draws it over every picture, and the link carries it.
        page.check("#heatmaps")
        expect(page).to_have_url(re.compile(r"heat=1"))
        expect(page.locator("#anomalies-grid img.loaded")).to_have_count(24)
        expect(page.locator("#anomalies-grid img[data-heatmap]")).to_have_count(24)
        keep(page, tmp_path, "anomalies-heatmaps.png")
        page.uncheck("#heatmaps")
        expect(page).not_to_have_url(re.compile(r"heat=1"))
        expect(page.locator("#anomalies-grid img.loaded")).to_have_count(24)
        expect(page.locator("#anomalies-grid img[data-heatmap]")).to_have_count(0)
        page.locator('.pager[data-for="anomalies"] button[data-action="next"]').first.click()
        expect(page).to_have_url(re.compile(r"view=anomalies.*page=2"))
        expect(grid).to_have_count(images - 24)
        expect(grid.first.locator(".badge")).to_have_text("#25")
        expect(page.locator("#anomalies-status")).to_contain_text(f"25–{images} of {images}")
        expect(page.locator("#anomalies-grid img.loaded")).to_have_count(images - 24)
        keep(page, tmp_path, "anomalies-page-2.png")

        # Another way to rank, from the menu; then the link, opened afresh, shows the same page (no second token).
        page.select_option("#by", "knn")
        expect(page).to_have_url(re.compile(r"by=knn"))
        expect(grid).to_have_count(24)
        expect(page.locator("#anomalies-status")).to_contain_text("kNN distance")
        page.locator('.pager[data-for="anomalies"] button[data-action="next"]').first.click()
        expect(grid).to_have_count(images - 24)
        shared = context.new_page()
        shared.goto(page.url)
        expect(shared.locator("#anomalies-grid .card")).to_have_count(images - 24)
        expect(shared.locator("#by")).to_have_value("knn")
        expect(shared.locator("#token-dialog")).not_to_be_visible()
        shared.close()

        # Back in history: the first page again.
        page.go_back()
        expect(grid).to_have_count(24)

        # The duplicates view: groups, largest first, each representative first.
        page.click("nav a[data-view=duplicates]")
        groups = page.locator("#duplicates-list .group")
        expect(groups).to_have_count(3)
        expect(groups.first.locator("h3")).to_contain_text("4 images")
        expect(groups.first.locator(".card").first.locator(".badge")).to_have_text("representative")
        expect(page.locator("#duplicates-list img.loaded")).to_have_count(9)
        keep(page, tmp_path, "duplicates.png")

        # Back to the search view: the last search is still there, and clicking through works from here too.
        page.click("nav a[data-view=search]")
        expect(cards.first).to_have_attribute("data-path", clicked)
        assert not errors, errors
        browser.close()


def test_the_demos_run_in_a_browser_gives_the_docs_pictures(demo, tmp_path):
    """The page on `make demo`'s run, as the README and docs/service.md show it: a search by a held-out digit scan,
    and the anomalies, where the planted photographs lead, with and without the loss heatmaps."""
    from playwright.sync_api import expect, sync_playwright

    report = json.loads((demo / "demo.json").read_text())
    pictures = []
    with serving(demo / "run", tmp_path / "serve.log") as base, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(base)

        page.set_input_files("#file", report["query"].removeprefix("file://"))
        cards = page.locator("#search-grid .card")
        expect(cards).to_have_count(report["after"]["k"])
        expect(cards.first).to_have_attribute("data-path", report["query"])
        expect(page.locator("#search-grid img.loaded")).to_have_count(report["after"]["k"])
        pictures.append(keep(page, tmp_path, "page-search.jpg"))

        page.click("nav a[data-view=anomalies]")
        grid = page.locator("#anomalies-grid .card")
        expect(grid).to_have_count(24)
        expect(page.locator("#anomalies-grid img.loaded")).to_have_count(24)
        top = [grid.nth(i).get_attribute("data-path") for i in range(len(OUTLIERS))]
        assert sum(label_of(path) == "photo" for path in top) == report["planted_in_top"], top
        pictures.append(keep(page, tmp_path, "page-anomalies.jpg", full_page=False))
        page.check("#heatmaps")
        expect(page.locator("#anomalies-grid img[data-heatmap].loaded")).to_have_count(24)
        pictures.append(keep(page, tmp_path, "page-heatmaps.jpg", full_page=False))
        assert not errors, errors
        browser.close()
    update_docs(pictures)


def test_the_copies_of_photographs_in_a_browser_give_the_docs_picture(copies_run, tmp_path):
    """The duplicates view of docs/service.md: `vitmae duplicates` on photographs and their copies (re-encoded,
    resized, cropped, byte for byte), each group with its original first."""
    from playwright.sync_api import expect, sync_playwright

    from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates

    run = tmp_path / "run"
    shutil.copytree(copies_run, run)
    find_duplicates(DuplicateConfig(str(run)))
    with serving(run, tmp_path / "serve.log") as base, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/?view=duplicates")
        groups = page.locator("#duplicates-list .group")
        expect(groups).to_have_count(5)
        expect(page.locator("#duplicates-list img.loaded")).to_have_count(11)
        expect(groups.first.locator(".card").first).to_have_attribute("data-path", re.compile(r"/camera\.png$"))
        picture = keep(page, tmp_path, "page-duplicates.jpg", full_page=False)
        browser.close()
    update_docs([picture])
