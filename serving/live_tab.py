"""The page's Live tab: a browser client of ``/v1/realtime`` (serving/static/live_client.js).

The browser captures the microphone itself (getUserMedia and an AudioWorklet at 16 kHz) and
streams pcm16 to ``/v1/realtime`` over a WebSocket, the same API and the same sessions as any
other realtime client: the same limits, idle timeout and session cap, and a closed tab closes
its socket, which frees its session at once. Audio captured before the socket opens, or while
the network is slow, waits in the browser and is sent in order, so the first words are kept.

What runs here, through Gradio's queue (so ``--auth`` covers it):

* Start mints a short-lived client secret (serving/client_secrets.py) bound to one session and
  carrying its settings (language, ITN, hotwords); the page connects with it in OpenAI's
  ``openai-insecure-api-key.<secret>`` subprotocol. The long-lived ``--api-key`` never reaches
  the page.
* Stop: the browser sends what is left, commits the open utterance, waits for its final and hands
  the transcript back; the TXT / JSON / SRT / VTT downloads are written here, as the Files tab
  writes them.
"""
from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import gradio as gr

from compliance import service as compliance_service

from . import request_id
from .client_secrets import ClientSecrets
from .formats import write_downloads
from .model_holder import ModelUnavailable
from .pipeline import RequestError, parse_language

log = logging.getLogger("funasr_nano.app")

SCRIPT = Path(__file__).with_name("static") / "live_client.js"
RATE = 16000                 # what the page captures and sends (live_client.js: RATE)
SECRET_SECONDS = 60          # the page connects within a second of minting
MAX_TRANSCRIPT_BYTES = 4 << 20
MAX_SEGMENTS = 20_000
MAX_HOTWORDS_CHARS = 2000


def head_html() -> str:
    """The page's <head> addition: the live client (inline, so no extra route is needed)."""
    return "<script>\n" + SCRIPT.read_text(encoding="utf-8") + "\n</script>"


def _internal_errors_hidden(handler):
    """The page is mounted with show_error=True (a user sees why input was refused), which would
    also show an unexpected exception's text: the log gets it, the user the request id."""
    @functools.wraps(handler)
    def wrapped(*args):
        try:
            return handler(*args)
        except gr.Error:
            raise
        except ModelUnavailable as e:      # its message is written for the user
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001
            with request_id.request_id_scope():
                raise gr.Error(request_id.internal_error(log, f"live tab: {handler.__name__}", e),
                               print_exception=False) from None
    return wrapped


def session_for(language, itn, hotwords) -> dict:
    """The realtime session (OpenAI's GA shape) for the tab's settings; RequestError for a bad
    language or hotwords."""
    lang = parse_language(language)
    if hotwords is not None and not isinstance(hotwords, str):
        raise RequestError("hotwords must be text")
    if hotwords and len(hotwords) > MAX_HOTWORDS_CHARS:
        raise RequestError(f"hotwords: at most {MAX_HOTWORDS_CHARS} characters")
    return {"type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                "transcription": {"language": lang.code if lang else None,
                                                  "prompt": hotwords or "",
                                                  "itn": bool(itn)},
                                "turn_detection": {"type": "server_vad"}}}}


def compliance_for(pii, watch_list) -> dict | None:
    """The session's ``compliance`` settings (docs/compliance.md, Live alerts) for the tab's
    inputs, checked here so that a bad watch list is named before the session opens; None when
    both are off."""
    if watch_list is not None and not isinstance(watch_list, str):
        raise RequestError("the watch list must be text")
    watch_list = (watch_list or "").strip("\n")
    try:
        detector = compliance_service.detector_from_request(watch_list or None, bool(pii))
    except compliance_service.ComplianceRequestError as e:
        raise RequestError(str(e)) from None
    if detector is None:
        return None
    return {"pii": bool(pii), **({"watch_list": watch_list} if watch_list else {})}


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"the live transcript's {name} is not a number")
    return float(value)


def transcript_row(raw) -> dict:
    """The browser's transcript (JSON text from live_client.js) as a results row for
    serving.formats; bounded and checked (it comes from the browser)."""
    if not isinstance(raw, str) or len(raw.encode("utf-8", "surrogatepass")) > \
            MAX_TRANSCRIPT_BYTES:
        raise RequestError("the live transcript is missing or too large")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RequestError("the live transcript is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list) or len(
            doc["segments"]) > MAX_SEGMENTS:
        raise RequestError("the live transcript has no list of segments")
    segments = []
    for s in doc["segments"]:
        if not isinstance(s, dict) or not isinstance(s.get("text"), str):
            raise RequestError("a live segment has no text")
        seg = {"start": round(_number(s.get("start"), "start"), 3),
               "end": round(_number(s.get("end"), "end"), 3), "text": s["text"]}
        if isinstance(s.get("speaker"), (str, int)) and not isinstance(s.get("speaker"), bool):
            seg["speaker"] = s["speaker"]
        segments.append(seg)
    language = doc.get("language") if isinstance(doc.get("language"), str) else None
    from engine.longform.subtitles import join_texts
    return {"file": "live", "duration": round(_number(doc.get("duration", 0.0), "duration"), 3),
            "language": language or "auto", "processing_time": 0.0,
            "text": join_texts([s["text"] for s in segments], language), "error": None,
            "segments": segments}


def build_live_tab(settings, holder, secrets: ClientSecrets, language_choices) -> None:
    """The Live tab's components and events, inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    gr.Markdown("Press Start and speak: the text appears while you talk, and each finished "
                "sentence lands below with its times. Stop leaves the whole transcript to "
                "download.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="live-start")
                stop = gr.Button("Stop", elem_id="live-stop")
            language = gr.Dropdown(language_choices(), value="auto", label="Language",
                                   elem_id="live-language")
            itn = gr.Checkbox(value=True, label="Inverse text normalization (ITN)",
                              elem_id="live-itn")
            hotwords = gr.Textbox(label="Hotwords", lines=1, elem_id="live-hotwords",
                                  placeholder="names or terms, comma separated")
            speakers = gr.Checkbox(value=False, label="Label speakers (A, B, ...)",
                                   elem_id="live-speakers")
            with gr.Accordion("Compliance alerts", open=False, elem_id="live-compliance"):
                pii = gr.Checkbox(value=False, label="Alert on personal data (phone, card, "
                                  "ID, e-mail, IBAN)", elem_id="live-pii")
                watch = gr.Textbox(label="Watch list (one term a line; TAB category TAB "
                                   "severity)", lines=3, elem_id="live-watch")
        with gr.Column(scale=3):
            # live_client.js writes into these; Python never re-renders them
            gr.HTML('<div id="live-status" data-state="idle">ready · press Start and speak'
                    '</div><div id="live-partial" class="live-partial"></div>'
                    '<ol id="live-finals" class="live-finals"></ol>'
                    '<ul id="live-alerts" class="live-alerts"></ul>', elem_id="live-view")
            downloads = gr.File(label="Downloads (TXT, JSON, SRT, VTT)", file_count="multiple",
                                interactive=False, elem_id="live-downloads")
    # hand-offs between the browser and Python (not shown)
    minted = gr.Textbox(visible=False, elem_id="live-minted")
    transcript = gr.Textbox(visible=False, elem_id="live-transcript-json")

    def mint(lang, itn_on, words, labels, pii_on, watch_list):
        """A client secret for one session with these settings, the URL to open and the
        compliance settings the page sends first (never raises: the browser shows the error
        and stops its microphone)."""
        try:
            session = session_for(lang, itn_on, words)
            alerts = compliance_for(pii_on, watch_list)
        except RequestError as e:
            return json.dumps({"error": str(e)})
        out = secrets.mint(SECRET_SECONDS, session)
        if not holder.loaded:
            holder.preload_in_background()   # loads while the user starts talking
        url = "v1/realtime?intent=transcription" + ("&speakers=auto" if labels else "")
        return json.dumps({**out, "url": url, **({"compliance": alerts} if alerts else {})})

    @_internal_errors_hidden
    def make_downloads(raw):
        try:
            row = transcript_row(raw)
        except RequestError as e:
            raise gr.Error(str(e), print_exception=False) from None
        if not row["segments"]:
            return None
        return write_downloads([row], holder.info()["model"])

    common = dict(api_visibility="private", show_progress="hidden")
    # The microphone opens in the click itself (js runs first), so nothing said while the
    # secret is minted and the socket opens is lost: it waits in the browser.
    start.click(_internal_errors_hidden(mint), [language, itn, hotwords, speakers, pii, watch],
                minted, js="(...a) => { window.funasrLive.capture(); return a; }",
                queue=False, **common).then(
        None, minted, None, js="(m) => { window.funasrLive.connect(m); return []; }")
    stop.click(make_downloads, transcript, downloads,
               js="async () => [await window.funasrLive.stop()]", **common)
