"""The page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): upload a file,
press Transcribe, read the transcript and the results row; and the Live tab with Chromium's fake
microphone playing example clips."""
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
def playwright():
    """One Playwright driver for the module (its sync API allows one at a time)."""
    if not _ensure_chromium():
        missing(f"{CHROMIUM} is absent and could not be installed with apt-get")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
    assert cells[2] == "auto" or cells[2].startswith("heard: "), cells   # not told: heard
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


# --------------------------------------------------------------------------- the Live tab

@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    """The app with the demo model (its texts mean something), warmed up."""
    import requests
    from _live_audio import DEMO_MODEL, ROOT
    server = start_app(str(DEMO_MODEL), tmp_path_factory.mktemp("browser_live"),
                       "--max-new-tokens", "64")
    try:
        with open(ROOT / "example" / "sv.wav", "rb") as f:
            assert requests.post(server.url + "/v1/audio/transcriptions", files={"file": f},
                                 timeout=120).status_code == 200
        yield server
    finally:
        server.stop()


def _cer(a: str, b: str) -> float:
    from rapidfuzz.distance import Levenshtein
    return Levenshtein.distance(a, b) / max(1, len(b))


def _fake_microphone(path, clips):
    """A wav of the clips with pauses; returns (length, end of the last speech) in seconds.
    Gradio drops the first 100 ms pieces while it opens the stream (the page says when to
    speak), so it starts with 4 s of silence."""
    import numpy as np
    import soundfile as sf
    from _live_audio import ROOT

    from engine.audio import load_audio
    parts = [np.zeros(4 * 16000, np.float32)]
    for name in clips:
        parts += [load_audio(str(ROOT / "example" / name)), np.zeros(24000, np.float32)]
    parts.append(np.zeros(2 * 16000, np.float32))
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return sum(len(p) for p in parts) / 16000, (sum(len(p) for p in parts[:-2])) / 16000


def test_live_tab_streams_the_microphone(playwright, demo_app, tmp_path):
    """Chromium's fake microphone plays two example clips; the Live tab shows partial text
    before the speech ends and, after Stop, both finals with times and the downloads."""
    import time

    import srt
    from _live_audio import ROOT
    from playwright.sync_api import expect

    clips = ["en.wav", "fi.wav"]
    mic = tmp_path / "mic.wav"
    length, speech_ends = _fake_microphone(mic, clips)
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}%noloop"])
    try:
        page = b.new_context(permissions=["microphone"]).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(demo_app.url + "/", timeout=60_000)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-mic button", has_text="Record").first.click(timeout=30_000)
        started = time.monotonic()        # the fake microphone starts playing now
        page.locator("#live-status").get_by_text("recording").first.wait_for(timeout=20_000)
        partial_at = None
        while time.monotonic() - started < length + 5:
            if page.locator("#live-partial textarea").input_value().strip():
                partial_at = time.monotonic() - started
                break
            time.sleep(0.05)
        assert partial_at is not None and partial_at < speech_ends, partial_at
        time.sleep(max(0.0, length + 0.5 - (time.monotonic() - started)))
        page.locator("#live-mic button", has_text="Stop").first.click()
        expect(page.locator("#live-downloads")).to_contain_text(re.compile(r"live\s*\.srt"),
                                                                timeout=60_000)
        lines = page.locator("#live-transcript textarea").input_value().splitlines()
        status = page.locator("#live-status").inner_text()
        srt_link = page.locator('#live-downloads a[download="live.srt"]').first
        srt_text = page.request.get(srt_link.get_attribute("href")).text()
    finally:
        b.close()
    assert not errors, errors
    assert "stopped" in status and "2 utterances" in status, status
    assert len(lines) == 2, lines
    expected = [line.split("\t")[2] for line in
                (ROOT / "example" / "examples.tsv").read_text(encoding="utf-8").splitlines()
                if line.split("\t")[0] in clips]
    for line, want in zip(lines, expected):
        m = re.fullmatch(r"\[(\d+):(\d+\.\d) → (\d+):(\d+\.\d)\] (.+)", line)
        assert m, line
        start, end = int(m[1]) * 60 + float(m[2]), int(m[3]) * 60 + float(m[4])
        assert 0 <= start < end <= length
        assert _cer(m[5], want) < 0.35, (m[5], want)   # the demo model on its own voices
    cues = list(srt.parse(srt_text))
    assert " ".join(c.content.replace("\n", " ") for c in cues).split() == " ".join(
        line.split("] ", 1)[1] for line in lines).split()


# --------------------------------------------------------------------------- first use

# Words of one table cell that lie on more than one line (a word broken mid-way).
_BROKEN_WORDS_JS = """(sel) => {
  const out = [];
  for (const cell of document.querySelectorAll(sel)) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /\\S+/g;
      let m;
      while ((m = re.exec(node.textContent)) !== null) {
        const r = document.createRange();
        r.setStart(node, m.index);
        r.setEnd(node, m.index + m[0].length);
        const tops = new Set([...r.getClientRects()].filter(x => x.width > 0)
                                                    .map(x => Math.round(x.top)));
        if (tops.size > 1) out.push(m[0]);
      }
    }
  }
  return out;
}"""


# the example's file in the file list (Gradio shows its name and extension apart)
EXAMPLE_FI = re.compile(r"\bfi\s*\.wav")


def test_first_use_of_the_page(playwright, tmp_path):
    """What a new user meets: which languages the demo knows; an empty Transcribe is a notice,
    not error badges on the model status or a traceback in the log; the first load shows on the
    status line and no progress is drawn over it; table headers and cells break between words
    only; an example's language does not stick to the user's own recording."""
    import time

    import numpy as np
    import soundfile as sf
    from _live_audio import DEMO_MODEL, ROOT
    from playwright.sync_api import expect

    from engine.audio import load_audio

    mic = tmp_path / "mic.wav"       # the fake microphone: 1 s of silence, en.wav, silence
    silence = np.zeros(16000, np.float32)
    sf.write(mic, np.concatenate([silence, load_audio(str(ROOT / "example" / "en.wav")),
                                  silence, silence]), 16000, subtype="PCM_16")
    app = start_app(str(DEMO_MODEL), tmp_path, "--max-new-tokens", "64")
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}"])
    try:
        page = b.new_context(permissions=["microphone"],
                             viewport={"width": 1400, "height": 1000}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(app.url + "/", timeout=60_000)
        page.wait_for_selector("#transcribe", timeout=60_000)
        header = page.locator("#header").inner_text()
        assert "12 of the 31 languages" in header, header
        for name in ("Chinese", "English", "Cantonese", "Japanese", "Korean", "Indonesian",
                     "Vietnamese", "Portuguese", "Dutch", "Polish", "Swedish", "Finnish"):
            assert name in header, (name, header)

        # an empty Transcribe: a notice; no error badge anywhere, nothing in the log
        page.locator("#transcribe").click()
        expect(page.get_by_text("Upload one or more audio files")).to_be_visible(timeout=10_000)
        time.sleep(1.0)
        for sel in ("#model-status", "#results", "#transcript", "#downloads"):
            assert "Error" not in page.locator(sel).inner_text(), sel
        assert page.locator('[data-testid="status-tracker"].error').count() == 0
        assert "not loaded yet" in page.locator("#model-status").inner_text()

        # an example, then Transcribe: the first load is on the status line, never covered
        page.get_by_text("Finnish (fi.wav)").click()
        expect(page.locator("#language input")).to_have_value("Suomi — Finnish", timeout=10_000)
        page.locator("#transcribe").click()
        saw_loading, covered = False, []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = page.locator("#model-status")
            text = status.inner_text()
            saw_loading |= "loading" in text
            covered += [t for t in status.locator('[data-testid="status-tracker"]')
                        .all_inner_texts() if t.strip()]
            if page.locator("#transcript textarea").input_value():
                break
            time.sleep(0.05)
        assert saw_loading and not covered, covered
        expect(page.locator("#model-status")).to_contain_text("loaded", timeout=10_000)
        row = page.locator('#results [role="row"][aria-rowindex="2"]')
        row.wait_for(timeout=10_000)
        cells = [c.strip() for c in row.locator('[role="gridcell"]').all_inner_texts()]
        assert cells[0] == "fi.wav" and cells[2].split() == ["fi", "(Finnish)"], cells
        broken = page.evaluate(_BROKEN_WORDS_JS, "#results th, #results td")
        assert not broken, broken

        # the user's own recording: the language goes back to Automatic, the example's file
        # leaves, and the row says auto
        page.locator("#microphone button", has_text="Record").first.click(timeout=30_000)
        time.sleep(5.0)
        page.locator("#microphone button", has_text="Stop").first.click()
        expect(page.locator("#language input")).to_have_value("Automatic", timeout=10_000)
        expect(page.get_by_text("Language set back to Automatic")).to_be_visible(timeout=10_000)
        expect(page.locator("#files")).not_to_contain_text(EXAMPLE_FI, timeout=10_000)
        page.locator("#transcribe").click()
        expect(page.locator('#results [role="row"][aria-rowindex="2"]')).to_contain_text(
            "microphone", timeout=60_000)
        cells = [c.strip() for c in page.locator('#results [role="row"][aria-rowindex="2"]')
                 .locator('[role="gridcell"]').all_inner_texts()]
        assert cells[0].startswith("microphone") and (
            cells[2] == "auto" or cells[2].startswith("heard: ")), cells
        assert page.locator('#results [role="row"][aria-rowindex="3"]').count() == 0

        # an example, then the user's own upload: Automatic again, and only the user's file
        page.locator("#microphone button[aria-label='Clear']").first.click()
        page.get_by_text("Finnish (fi.wav)").click()
        expect(page.locator("#language input")).to_have_value("Suomi — Finnish", timeout=10_000)
        expect(page.locator("#files")).to_contain_text(EXAMPLE_FI, timeout=10_000)
        own = tmp_path / "mine.wav"
        own.write_bytes(mic.read_bytes())
        page.locator("#files input[type=file]").set_input_files(str(own))
        expect(page.locator("#language input")).to_have_value("Automatic", timeout=10_000)
        expect(page.locator("#files")).not_to_contain_text(EXAMPLE_FI, timeout=10_000)
        assert page.locator("#files").get_by_text("mine").count() == 1
        assert not errors, errors
    finally:
        b.close()
        app.stop()
    log = app.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
