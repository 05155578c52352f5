#!/usr/bin/env python3
"""Screenshot of the page after transcribing a file, with headless Chromium (docs/screenshot.png).

    python scripts/screenshot.py [--model DIR] [--audio FILE ...] [--out docs/screenshot.png]

Starts app.py on a free port, uploads the files (default: the first clips in example/), presses
Transcribe, waits for the transcript and saves a full-page PNG. Needs Debian's chromium
(apt-get install chromium) and the playwright Python package; no browser download.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="passed to app.py (default: its own choice)")
    p.add_argument("--audio", nargs="*", default=None, help="files to upload (default: example/)")
    p.add_argument("--language", default=None, help="value of the language menu, e.g. en")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--app-args", nargs=argparse.REMAINDER, default=[],
                   help="further app.py flags (must come last)")
    args = p.parse_args()

    clips = sorted(str(x) for x in (ROOT / "example").iterdir()
                   if x.suffix.lower() in (".wav", ".mp3", ".flac", ".ogg", ".m4a"))
    audio = args.audio or clips[:2]
    if not audio:
        p.error("no audio: pass --audio FILE or put clips in example/")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), *args.app_args]
    if args.model:
        cmd += ["--model", args.model]
    app = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if app.poll() is not None:
                    return 1
                time.sleep(0.2)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(url + "/")
            page.wait_for_selector("#transcribe")
            page.locator("#files input[type=file]").set_input_files(audio)
            for f in audio:  # the list shows each name (stem and extension apart) once uploaded
                page.locator("#files").get_by_text(Path(f).stem).first.wait_for()
            if args.language:
                page.locator("#language input").fill(args.language)
                page.keyboard.press("Enter")
            page.locator("#transcribe").click()
            page.wait_for_function(
                "() => (document.querySelector('#transcript textarea') || {}).value",
                timeout=600_000)
            page.wait_for_timeout(1500)  # downloads list and status settle
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(args.out)
        return 0
    finally:
        app.terminate()
        app.wait(20)


if __name__ == "__main__":
    sys.exit(main())
