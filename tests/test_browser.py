"""The page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): upload a file,
press Transcribe, read the transcript and the results row."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tests._fixtures import missing  # noqa: E402
from _app_server import (app_model_dir, audio_files, engine, expected_text,  # noqa: E402,F401
                         start_app)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _ensure_chromium() -> bool:
    """Debian's chromium, installed with apt-get when missing and we may (root, apt present)."""
    if os.path.exists(CHROMIUM):
        return True
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env,
                       capture_output=True, timeout=1200)
    return os.path.exists(CHROMIUM)


@pytest.fixture(scope="module")
def browser():
    if not _ensure_chromium():
        missing(f"{CHROMIUM} is absent and could not be installed with apt-get")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("browser_app"))
    yield server
    server.stop()


def test_upload_transcribe_and_read_results(browser, app, engine, audio_files):
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app.url + "/", timeout=60_000)
    page.wait_for_selector("#transcribe", timeout=60_000)
    assert "not loaded yet" in page.locator("#model-status").inner_text()

    wav = audio_files["chirp.wav"]
    page.locator("#files input[type=file]").set_input_files(str(wav))
    page.get_by_text("chirp.wav").first.wait_for(timeout=30_000)   # upload finished
    page.locator("#transcribe").click()
    page.wait_for_function(
        "() => (document.querySelector('#transcript textarea') || {}).value", timeout=60_000)

    want = expected_text(engine, wav)
    assert page.locator("#transcript textarea").input_value() == want
    row = page.locator('#results [role="row"][aria-rowindex="2"]')   # the first data row
    row.wait_for(timeout=10_000)
    cells = [c.strip() for c in row.locator('[role="gridcell"]').all_inner_texts()]
    assert len(cells) == 5, cells
    assert "chirp.wav" in cells[0]
    assert float(cells[1]) == pytest.approx(1.5)
    assert cells[2] == "auto"
    assert float(cells[3]) >= 0
    assert cells[4] == want
    page.locator("#model-status").get_by_text("loaded").first.wait_for(timeout=10_000)
    assert "cpu" in page.locator("#model-status").inner_text()
    for name in ("transcript.txt", "transcript.json", "chirp.srt", "chirp.vtt"):
        stem, ext = name.split(".")   # the page shows the name and the extension apart
        expect(page.locator("#downloads")).to_contain_text(re.compile(rf"{stem}\s*\.{ext}"),
                                                           timeout=10_000)
    assert not errors, errors
    page.close()
