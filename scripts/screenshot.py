#!/usr/bin/env python3
"""Screenshots of the page's Files and Live tabs with headless Chromium, and the first-screen check.

    python scripts/screenshot.py [--model models/demo] [--out-dir docs] [--check-only]

Starts app.py on a free port (with the demo model by default, whose texts mean something) and
opens the page in a 1280x900 window, a common laptop screen. First it checks that the first
screen shows the Transcribe button and the examples without scrolling (exit status 1 if not,
with where they are). Then:

* ``docs/screenshot-files.png``: an example clicked (English), Transcribe, the transcript and
  results row shown;
* ``docs/screenshot-live.png``: the Live tab with Chromium's fake microphone playing two
  example clips (English, Finnish) into it, Start, their finals, Stop.

Needs Debian's chromium (apt-get install chromium) and the playwright Python package; no
browser download.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench._common import AppProcess
from bench._live_audio import DEMO_MODEL, recording, wav_bytes

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTH, HEIGHT = 1280, 900


def first_screen(page) -> list[str]:
    """What of Transcribe and the examples lies below the first screen (empty: all in view)."""
    below = []
    for sel in ("#transcribe", "#examples"):
        box = page.locator(sel).first.bounding_box()
        if box is None or box["y"] + (box["height"] if sel == "#transcribe" else 40) > HEIGHT:
            below.append(f"{sel} at {box}")
    return below


def files_tab(page, out: Path) -> None:
    page.get_by_text("English (en.wav)").click()
    page.locator("#transcribe").click()
    page.wait_for_function("() => (document.querySelector('#transcript textarea') || {}).value",
                           timeout=600_000)
    page.wait_for_timeout(1500)   # the downloads list and the status line settle
    page.screenshot(path=str(out))


def live_tab(browser_type, chromium: str, url: str, mic: Path, out: Path) -> None:
    b = browser_type.launch(executable_path=chromium, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}%noloop"])
    try:
        page = b.new_context(permissions=["microphone"],
                             viewport={"width": WIDTH, "height": HEIGHT}).new_page()
        page.goto(url + "/", timeout=60_000)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-start").click()
        deadline = time.monotonic() + 120
        while page.locator("#live-finals li").count() < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        page.locator("#live-stop").click()
        page.locator("#live-downloads a").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out))
    finally:
        b.close()


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL), help="passed to app.py")
    p.add_argument("--out-dir", default=str(ROOT / "docs"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--check-only", action="store_true", help="the first-screen check alone")
    args = p.parse_args()
    out = Path(args.out_dir)
    tmp = Path(tempfile.mkdtemp(prefix="screenshot-"))
    mic = tmp / "mic.wav"     # at 48 kHz, the fake capture device's rate
    mic.write_bytes(wav_bytes(recording(("en.wav", "fi.wav"), rate=48000, tail_s=3.0), 48000))
    app = AppProcess(["--model", args.model, "--max-new-tokens", "64"], tmp / "app.log")
    try:
        app.wait_ready(300)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto(app.url + "/", timeout=60_000)
            page.wait_for_selector("#transcribe", timeout=60_000)
            below = first_screen(page)
            print(f"first screen at {WIDTH}x{HEIGHT}: "
                  + ("Transcribe and the examples in view" if not below
                     else "below the fold: " + "; ".join(below)))
            if args.check_only or below:
                return 1 if below else 0
            out.mkdir(parents=True, exist_ok=True)
            files_tab(page, out / "screenshot-files.png")
            browser.close()
            live_tab(pw.chromium, args.chromium, app.url, mic, out / "screenshot-live.png")
        print(out / "screenshot-files.png", out / "screenshot-live.png")
        return 0
    finally:
        app.stop()


if __name__ == "__main__":
    sys.exit(main())
