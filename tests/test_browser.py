"""The page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): upload a file,
press Transcribe, read the transcript and the results row; and the Live tab with Chromium's fake
microphone playing example clips."""
from __future__ import annotations

import base64
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

LIVE_KEY = "sk-live-tab-never-in-the-page-7f3a9c"
# All 12 example clips. en.wav comes first, 0.3 s in: a page that lost its first moments would
# lose its "The".
LIVE_CLIPS = ["en.wav", "fi.wav", "ko.wav", "zh.wav", "pt.wav", "ja.wav", "id.wav", "sv.wav",
              "pl.wav", "yue.wav", "vi.wav", "nl.wav"]
LIVE_LENGTH_S = 60.0
RATE = 16000


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    """The app with the demo model (its texts mean something) and an API key, warmed up."""
    import requests
    from bench._live_audio import DEMO_MODEL, ROOT
    server = start_app(str(DEMO_MODEL), tmp_path_factory.mktemp("browser_live"),
                       "--max-new-tokens", "64", env={"FUNASR_NANO_API_KEY": LIVE_KEY})
    try:
        with open(ROOT / "example" / "sv.wav", "rb") as f:
            assert requests.post(server.url + "/v1/audio/transcriptions", files={"file": f},
                                 headers={"Authorization": f"Bearer {LIVE_KEY}"},
                                 timeout=120).status_code == 200
        yield server
    finally:
        server.stop()


def _live_microphone(path, names=LIVE_CLIPS, length_s=LIVE_LENGTH_S):
    """A wav of ``length_s``: the example clips with even pauses, from 0.3 s on, and 2 s of
    trailing silence (so Chromium's fake device never joins two clips). Returns the clips'
    onsets in seconds and the 16 kHz signal played."""
    import numpy as np
    import soundfile as sf
    import soxr
    from bench._live_audio import ROOT

    from engine.audio import load_audio
    clips = [load_audio(str(ROOT / "example" / name)) for name in names]
    total = int(length_s * RATE)
    lead = int(0.3 * RATE)
    gap = (total - lead - sum(len(c) for c in clips) - 2 * RATE) // max(1, len(clips) - 1)
    assert gap > 1.2 * RATE, gap
    out, onsets, at = np.zeros(total, np.float32), [], lead
    for c in clips:
        out[at:at + len(c)] = c
        onsets.append(at / RATE)
        at += len(c) + gap
    # at 48 kHz, the capture device's rate, so that only the page's 16 kHz context resamples
    sf.write(path, soxr.resample(out, RATE, 48000, quality="VHQ"), 48000, subtype="FLOAT")
    return onsets, out


def _launch_with_microphone(playwright, mic):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}%noloop"])


class _Recorder:
    """What the browser receives (response bodies, WebSocket frames: the key must be in none)
    and the audio the page sent, from its input_audio_buffer.append frames, in order."""

    def __init__(self, page):
        self.seen, self.appends, self.errors = [], [], []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("response", self._response)
        page.on("websocket", lambda ws: (ws.on("framereceived", self._received),
                                         ws.on("framesent", self._sent)))

    def _response(self, response):
        try:
            self.seen.append(response.text())
        except Exception:  # noqa: BLE001 - bodies of redirects and aborted loads
            pass

    def _received(self, payload):
        self.seen.append(payload if isinstance(payload, str) else repr(payload))

    def _sent(self, payload):
        import json
        if isinstance(payload, str) and '"input_audio_buffer.append"' in payload:
            self.appends.append(json.loads(payload)["audio"])

    def leaks(self, secret):
        return [t[:200] for t in self.seen if secret in t]

    def pcm(self) -> bytes:
        """The pcm16 samples the page sent, in order."""
        return b"".join(base64.b64decode(a) for a in self.appends)

    def audio(self):
        """The samples the page sent, as float32 (what the session decoded)."""
        import numpy as np
        return np.frombuffer(self.pcm(), "<i2").astype(np.float32) / 32768.0


# Everything the page captured (live_client.js keeps a copy when window.funasrLiveKeep is set),
# as base64 pcm16
_KEPT_JS = """() => {
  const kept = window.funasrLive.kept || [];
  const n = kept.reduce((a, c) => a + c.length, 0);
  const all = new Int16Array(n);
  let at = 0;
  for (const c of kept) { all.set(c, at); at += c.length; }
  const bytes = new Uint8Array(all.buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}"""


def _files_text(app, audio, headers) -> str:
    """The Files tab's text (the same pipeline, through the API) for 16 kHz audio, sent as the
    pcm16 wav it was streamed as."""
    import io

    import requests
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, audio, RATE, format="WAV", subtype="PCM_16")
    r = requests.post(app.url + "/v1/audio/transcriptions", headers=headers, timeout=300,
                      files={"file": ("span.wav", buf.getvalue(), "audio/wav")})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def _clip_in(sent, clip, at, reach=RATE // 2):
    """(lag, correlation): where the clip, played from sample ``at``, is in the sent audio
    (``sent[at - lag + i]`` ~ ``clip[i]``, lag within ``reach``), and the normalised
    correlation there (1.0: the same samples)."""
    import numpy as np
    from scipy.signal import fftconvolve
    lo = max(0, at - reach)
    window = sent[lo:at + reach + len(clip)]
    xc = fftconvolve(window, clip[::-1], mode="valid")
    k = int(np.argmax(xc))
    seg = window[k:k + len(clip)]
    corr = float(xc[k] / (np.linalg.norm(seg) * np.linalg.norm(clip) + 1e-12))
    return at - (lo + k), corr


def _read_finals(page):
    return [{"start": float(li.get_attribute("data-start")),
             "end": float(li.get_attribute("data-end")),
             "text": li.locator(".live-text").inner_text(),
             "speaker": (li.locator(".live-speaker").all_inner_texts() or [None])[0]}
            for li in page.locator("#live-finals li").all()]


def _speak_until_done(page, length_s, proxy=None):
    """Waits while the fake microphone plays; with a proxy, the link is slow (8 KB/s up, the
    audio needs ~45) for the first 20 s of audio, then fast enough to catch up. Returns whether
    the page said it was queueing, and its largest backlog."""
    import time
    status = page.locator("#live-status")
    slow_seen, backlog = False, 0.0
    progress = (0.0, time.monotonic())
    while (at := float(status.get_attribute("data-captured") or 0)) < length_s:
        now = status.inner_text()
        if at > progress[0]:
            progress = (at, time.monotonic())
        # a session that ended, or a capture that stalled, fails here with the page's words
        assert status.get_attribute("data-state") in ("starting", "recording"), now
        assert time.monotonic() - progress[1] < 30, f"no audio captured for 30 s: {now}"
        if "network slow" in now:
            slow_seen = True
            backlog = max(backlog, float(re.search(r"slow: ([\d.]+) s", now)[1]))
        if proxy is not None and proxy.up_bytes_per_s and at > 20:
            proxy.up_bytes_per_s = None
        time.sleep(0.2)
    return slow_seen, backlog


@pytest.mark.parametrize("link", ["direct", "throttled"])
def test_live_tab_is_a_realtime_client(playwright, demo_app, tmp_path, link):
    """Chromium's fake microphone plays 60 s of the 12 example clips into the Live tab (directly,
    or through a TCP proxy that limits the upload to 8 KB/s for the first 20 s) while four
    file transcriptions run through the API. The session gets every sample the page captured,
    and that is the played audio (duration within 1%, the same signal); each clip has one final
    that starts within 0.5 s of its onset and covers the clip; every final's text equals the
    Files tab's text for that clip as the session received it (the very samples its final
    decoded, uploaded as a file: exact, see docs/live.md for why not the clip file's own text);
    the first word is there; the page works with --api-key set and the key never reaches the
    browser; Stop leaves the downloads; a closed tab frees its session."""
    from concurrent.futures import ThreadPoolExecutor

    import srt
    from _throttle import ThrottledProxy
    from bench._live_audio import ROOT
    from playwright.sync_api import expect

    from engine.audio import load_audio

    bearer = {"Authorization": f"Bearer {LIVE_KEY}"}
    mic = tmp_path / "mic.wav"
    onsets, played = _live_microphone(mic)

    def clip_file_text(name):      # the load: four file transcriptions at a time
        return _files_text(demo_app, load_audio(str(ROOT / "example" / name)), bearer)

    received_before = _metric(demo_app, "funasr_nano_live_audio_received_seconds_total")
    b = _launch_with_microphone(playwright, mic)
    pool = ThreadPoolExecutor(4)
    proxy = ThrottledProxy(demo_app.port).start() if link == "throttled" else None
    url = f"http://127.0.0.1:{proxy.port}" if proxy else demo_app.url
    try:
        context = b.new_context(permissions=["microphone"])
        page = context.new_page()
        rec = _Recorder(page)
        page.goto(url + "/", timeout=60_000)
        page.get_by_role("tab", name="Live").click()
        if proxy:
            proxy.up_bytes_per_s = 8 * 1024
        page.evaluate("() => { window.funasrLiveKeep = true; }")
        page.locator("#live-start").click()
        jobs = [pool.submit(clip_file_text, name) for name in LIVE_CLIPS]
        status = page.locator("#live-status")
        expect(status).to_contain_text("recording", timeout=20_000)
        slow_seen, backlog = _speak_until_done(page, LIVE_LENGTH_S, proxy)
        page.locator("#live-stop").click()
        expect(page.locator("#live-downloads")).to_contain_text(re.compile(r"live\s*\.srt"),
                                                                timeout=120_000)
        captured = float(status.get_attribute("data-captured"))
        state, text = status.get_attribute("data-state"), status.inner_text()
        finals = _read_finals(page)
        kept = base64.b64decode(page.evaluate(_KEPT_JS))
        srt_link = page.locator('#live-downloads a[download="live.srt"]').first
        srt_text = page.request.get(srt_link.get_attribute("href")).text()
        rec.seen.append(page.content())
        clip_text = dict(zip(LIVE_CLIPS, [job.result() for job in jobs]))
        assert _wait_health(demo_app, "live_sessions", 0) == 0   # Stop closed the session
        received = _metric(demo_app, "funasr_nano_live_audio_received_seconds_total") \
            - received_before

        # a tab closed mid-session frees its slot at once
        page2 = context.new_page()
        page2.goto(url + "/", timeout=60_000)
        page2.get_by_role("tab", name="Live").click()
        page2.locator("#live-start").click()
        assert _wait_health(demo_app, "live_sessions", 1) == 1
        page2.close()
        assert _wait_health(demo_app, "live_sessions", 0, timeout=10) == 0
    finally:
        pool.shutdown(wait=True)
        b.close()
        if proxy:
            proxy.stop()
    assert not rec.errors, rec.errors
    assert _metric(demo_app, "funasr_nano_live_audio_dropped_seconds_total") == 0
    assert state == "stopped", text
    assert slow_seen or not proxy, "the throttled link never made the page queue"
    sent = rec.audio()
    __import__("soundfile").write(tmp_path / "sent.wav", sent, RATE)   # kept for a post-mortem
    assert abs(captured - LIVE_LENGTH_S) / LIVE_LENGTH_S < 0.01, captured
    # the page sent every sample it captured, in order, and the session received them all
    assert len(kept) == 2 * round(captured * RATE) and rec.pcm() == kept, (len(kept), captured)
    assert abs(received - captured) < 1e-3, (received, captured)
    assert f"{len(LIVE_CLIPS)} utterances" in text, (text, finals)
    assert len(finals) == len(LIVE_CLIPS), finals
    found = _check_finals(demo_app, bearer, finals, onsets, sent)
    assert finals[0]["text"].split()[0] == "The", finals[0]
    cues = list(srt.parse(srt_text))
    assert " ".join(c.content.replace("\n", " ") for c in cues).split() == " ".join(
        f["text"] for f in finals).split()
    other = [(n, f["text"], clip_text[n]) for n, f in zip(LIVE_CLIPS, finals)
             if f["text"] != clip_text[n]]
    print(f"live tab ({link}): captured {captured:.3f} s, received {received:.3f} s, sent "
          f"audio vs played, each clip (lag in samples, correlation): {found}; largest backlog "
          f"{backlog:.1f} s; final start - onset: "
          f"{[round(f['start'] - o, 2) for f, o in zip(finals, onsets)]}; finals other than the "
          f"clip file's own text (clip, final, file): {other}")
    assert not rec.leaks(LIVE_KEY), rec.leaks(LIVE_KEY)
    log = demo_app.log_path.read_text(errors="replace")
    assert LIVE_KEY not in log and "Traceback" not in log, log[-3000:]


def _check_finals(app, headers, finals, onsets, sent):
    """Each clip is in the audio the page sent, in its place (correlation with the clip file
    over 0.5: Chromium's resampling leaves 0.98, a capture glitch under heavy load less, another
    clip about 0); its final starts within 0.5 s of its onset, its span holds the clip (99.9% of its energy),
    and its text equals the Files tab's text for the samples it decoded. Returns each clip's
    (lag, correlation)."""
    import numpy as np
    from bench._live_audio import ROOT

    from engine.audio import load_audio
    found = []
    for name, onset, final in zip(LIVE_CLIPS, onsets, finals):
        clip = load_audio(str(ROOT / "example" / name))
        lag, corr = _clip_in(sent, clip, round(onset * RATE))
        found.append((lag, round(corr, 4)))
        assert corr > 0.5, (name, lag, corr, found)
        assert abs(final["start"] - onset) <= 0.5, (name, onset, final)
        a, b = round(final["start"] * RATE), round(final["end"] * RATE)
        at = round(onset * RATE) - lag + np.arange(len(clip))    # the clip in the sent audio
        inside = (clip ** 2)[(at >= a) & (at < b)].sum() / (clip ** 2).sum()
        assert inside >= 0.999, (name, inside, final)
        want = _files_text(app, sent[a:b], headers)
        assert final["text"] == want, (name, final, want)
    return found


def _metric(app, name: str) -> float:
    """The sum of a /metrics series over its labels."""
    import requests
    r = requests.get(app.url + "/metrics", headers={"Authorization": f"Bearer {LIVE_KEY}"},
                     timeout=10)
    assert r.status_code == 200, r.text
    text = r.text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _wait_health(app, key, value, timeout=20.0):
    import time

    import requests
    deadline = time.monotonic() + timeout
    while True:
        got = requests.get(app.url + "/health", timeout=10).json()[key]
        if got == value or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _handshake_status(app, secret=None, headers=None):
    """The HTTP status a /v1/realtime handshake gets: 101 when accepted (then closed)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    protocols = ["realtime"] + ([f"openai-insecure-api-key.{secret}"] if secret else [])
    try:
        with connect(app.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription",
                     subprotocols=protocols, additional_headers=headers or {},
                     open_timeout=30):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


def test_live_tab_behind_the_login_with_speakers_and_alerts(playwright, tmp_path):
    """With --auth and --api-key: the page's login, then the Live tab with speaker labels and
    compliance alerts on (a watch term and personal data): each final shows its speaker, the
    watch term's alert shows as it comes and is marked in its final; the key is in nothing the
    browser receives; a /v1/realtime handshake without a secret, with a wrong or an expired
    one is refused (HTTP 401) before it is accepted, while the login's Basic auth opens one."""
    import time

    import requests
    from bench._live_audio import DEMO_MODEL
    from playwright.sync_api import expect

    mic = tmp_path / "mic.wav"
    names = ["en.wav", "sv.wav"]
    onsets, _ = _live_microphone(mic, names, 12.0)
    app = start_app(str(DEMO_MODEL), tmp_path, "--max-new-tokens", "64", "--auth", "ann:pw",
                    env={"FUNASR_NANO_API_KEY": LIVE_KEY})
    basic = {"Authorization": "Basic " + base64.b64encode(b"ann:pw").decode()}
    b = _launch_with_microphone(playwright, mic)
    try:
        short = requests.post(app.url + "/v1/realtime/client_secrets", headers=basic,
                              json={"expires_after": {"seconds": 10}}, timeout=30)
        assert short.status_code == 200, short.text
        minted_at = time.time()
        assert _handshake_status(app) == 401
        assert _handshake_status(app, "ek_wrong") == 401
        assert _handshake_status(app, headers=basic) == 101

        page = b.new_context(permissions=["microphone"]).new_page()
        rec = _Recorder(page)
        page.goto(app.url + "/", timeout=60_000)
        page.locator("input[type=text]").first.fill("ann")
        page.locator("input[type=password]").fill("pw")
        page.get_by_role("button", name="Login").click()
        page.get_by_role("tab", name="Live").click(timeout=60_000)
        page.locator("#live-speakers input").check()
        page.locator("#live-compliance").get_by_text("Compliance alerts").click()
        page.locator("#live-pii input").check()
        page.locator("#live-watch textarea").fill("ticket\tproduct\thigh")
        page.locator("#live-start").click()
        expect(page.locator("#live-status")).to_contain_text("recording", timeout=20_000)
        _speak_until_done(page, 12.0)
        page.locator("#live-stop").click()
        expect(page.locator("#live-downloads")).to_contain_text(re.compile(r"live\s*\.srt"),
                                                                timeout=120_000)
        finals = _read_finals(page)
        alerts = [{"label": li.get_attribute("data-label"),
                   "text": li.locator(".live-alert-text").inner_text()}
                  for li in page.locator("#live-alerts li").all()]
        hits = page.locator("#live-finals li").first.locator("mark.live-hit").all_inner_texts()
        rec.seen.append(page.content())
        time.sleep(max(0.0, minted_at + 10.5 - time.time()))
        assert _handshake_status(app, short.json()["value"]) == 401    # expired
    finally:
        b.close()
        app.stop()
    print(f"live tab behind the login: finals {finals}, alerts {alerts}")
    assert not rec.errors, rec.errors
    assert len(finals) == len(names), finals
    assert finals[0]["text"].split()[0] == "The", finals
    assert all(f["speaker"] for f in finals) and finals[0]["speaker"] == "A", finals
    assert {"label": "PRODUCT", "text": "ticket"} in alerts, (alerts, finals)
    assert hits == ["ticket"], hits
    assert not rec.leaks(LIVE_KEY), rec.leaks(LIVE_KEY)
    log = app.log_path.read_text(errors="replace")
    assert LIVE_KEY not in log and "Traceback" not in log, log[-3000:]


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


FIRST_SCREEN = {"width": 1280, "height": 900}   # a common laptop screen


def test_first_use_of_the_page(playwright, tmp_path):
    """What a new user meets: the first screen (1280x900) shows Transcribe and every example;
    which languages the demo knows; an empty Transcribe is a notice, not error badges on the
    model status or a traceback in the log; the first load shows on the status line and no
    progress is drawn over it; table headers and cells break between words only; an example's
    language does not stick to the user's own recording."""
    import numpy as np
    import soundfile as sf
    from bench._live_audio import DEMO_MODEL, ROOT

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
        page = b.new_context(permissions=["microphone"], viewport=FIRST_SCREEN).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(app.url + "/", timeout=60_000)
        page.wait_for_selector("#transcribe", timeout=60_000)
        _first_screen_shows_transcribe_and_the_examples(page)
        _header_names_the_demo_languages(page)
        _empty_transcribe_is_a_notice(page)
        _example_with_the_first_load_on_the_status_line(page)
        _own_recording_sets_the_language_back(page)
        own = tmp_path / "mine.wav"
        own.write_bytes(mic.read_bytes())
        _own_upload_sets_the_language_back(page, own)
        assert not errors, errors
    finally:
        b.close()
        app.stop()
    log = app.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _first_screen_shows_transcribe_and_the_examples(page):
    for sel in ("#transcribe", "#examples"):
        box = page.locator(sel).first.bounding_box()
        assert box and box["y"] + box["height"] <= FIRST_SCREEN["height"], (sel, box)


def _header_names_the_demo_languages(page):
    header = page.locator("#header").inner_text()
    assert "12 of the 31 languages" in header, header
    for name in ("Chinese", "English", "Cantonese", "Japanese", "Korean", "Indonesian",
                 "Vietnamese", "Portuguese", "Dutch", "Polish", "Swedish", "Finnish"):
        assert name in header, (name, header)


def _empty_transcribe_is_a_notice(page):
    """A notice; no error badge anywhere, nothing in the log."""
    import time

    from playwright.sync_api import expect
    page.locator("#transcribe").click()
    expect(page.get_by_text("Upload one or more audio files")).to_be_visible(timeout=10_000)
    time.sleep(1.0)
    for sel in ("#model-status", "#results", "#transcript", "#downloads"):
        assert "Error" not in page.locator(sel).inner_text(), sel
    assert page.locator('[data-testid="status-tracker"].error').count() == 0
    assert "not loaded yet" in page.locator("#model-status").inner_text()


# The texts of the progress trackers a user can see inside an element. Gradio keeps a hidden
# tracker's element (its "0.0s" text included) in the page, so texts alone would count trackers
# nobody sees; checkVisibility() is false under display:none, the page's CSS for the status line.
_VISIBLE_TRACKERS_JS = """el => [...el.querySelectorAll('[data-testid="status-tracker"]')]
    .filter(t => t.checkVisibility() && t.innerText.trim()).map(t => t.innerText)"""
# A tracker put on the status line the way Gradio draws one: visible unless the page's CSS hides it.
_PROBE_TRACKER_JS = """el => { const t = document.createElement('div');
    t.dataset.testid = 'status-tracker'; t.textContent = '0.0s'; el.appendChild(t);
    const seen = t.checkVisibility(); t.remove(); return seen; }"""


def _example_with_the_first_load_on_the_status_line(page):
    """An example, then Transcribe: the first load is on the status line, never covered."""
    import time

    from playwright.sync_api import expect
    page.get_by_text("Finnish (fi.wav)").click()
    expect(page.locator("#language input")).to_have_value("Suomi — Finnish", timeout=10_000)
    assert page.locator("#model-status").evaluate(_PROBE_TRACKER_JS) is False
    page.locator("#transcribe").click()
    saw_loading, covered = False, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = page.locator("#model-status")
        text = status.inner_text()
        saw_loading |= "loading" in text
        covered += status.evaluate(_VISIBLE_TRACKERS_JS)
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


def _own_recording_sets_the_language_back(page):
    """The user's own recording: the language goes back to Automatic, the example's file
    leaves, and the row says auto."""
    import time

    from playwright.sync_api import expect
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


def _own_upload_sets_the_language_back(page, own):
    """An example, then the user's own upload: Automatic again, and only the user's file."""
    from playwright.sync_api import expect
    page.locator("#microphone button[aria-label='Clear']").first.click()
    page.get_by_text("Finnish (fi.wav)").click()
    expect(page.locator("#language input")).to_have_value("Suomi — Finnish", timeout=10_000)
    expect(page.locator("#files")).to_contain_text(EXAMPLE_FI, timeout=10_000)
    page.locator("#files input[type=file]").set_input_files(str(own))
    expect(page.locator("#language input")).to_have_value("Automatic", timeout=10_000)
    expect(page.locator("#files")).not_to_contain_text(EXAMPLE_FI, timeout=10_000)
    assert page.locator("#files").get_by_text("mine").count() == 1
