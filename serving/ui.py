"""The Gradio page: a Files tab (upload or record, choose a language, transcribe, download) and
a Live tab (the browser streams the microphone to /v1/realtime, serving/live_tab.py).

Named API endpoints (usable from gradio_client):
  /transcribe    (files, microphone, language, itn, hotwords)
                 -> (results table, transcript, download files, JSON rows, model status)
  /model_status  () -> model status (Markdown)
  /load_model    () -> model status, after loading the model if it was not loaded yet
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import gradio as gr

from engine.languages import LANGUAGES, language_label, resolve_language

from . import request_id
from .formats import combined_transcript, write_downloads
from .live_tab import build_live_tab
from .model_holder import ModelUnavailable
from .pipeline import Options, RequestError, parse_hotwords, transcribe_items
from .request_id import request_id_scope

log = logging.getLogger("funasr_nano.app")

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".webm", ".opus", ".aac", ".mp4")
NO_INPUT = "Upload one or more audio files or record from the microphone first."
TABLE_HEADERS = ["File", "Duration (s)", "Language", "Processing time (s)", "Text or error"]

CSS = """
#demo-banner { border: 2px solid #d97706; background: #fffbeb; color: #78350f;
               border-radius: 8px; padding: 10px 14px; }
#demo-banner * { color: #78350f !important; }
#model-status { font-size: 0.95em; }
/* Results table: break lines between words only ("Durati on" was Gradio's break-all), and a
   word too long for its column anywhere (a long file name, a URL in a transcript). */
#results th *, #results td * { word-break: normal !important; overflow-wrap: anywhere;
                               hyphens: manual; }
#results th * { overflow-wrap: normal !important; }
/* the Live tab (written by serving/static/live_client.js) */
#live-status { font-weight: 600; margin-bottom: 6px; }
.live-partial { min-height: 2.6em; color: #6b7280; font-style: italic; }
.live-finals { max-height: 28em; overflow-y: auto; padding-left: 1.4em; }
.live-time { color: #6b7280; font-variant-numeric: tabular-nums; }
.live-speaker, .live-lang { font-size: 0.85em; border-radius: 4px; padding: 0 4px;
                            background: #e5e7eb; }
.live-words { font-size: 0.85em; color: #6b7280; }
"""


def heard_label(row: dict) -> str:
    """The Language column: the language given (``en (English)``), the one heard with how sure
    (``heard: en (English) 93%``), or ``auto`` where nothing could be told."""
    label = language_label(row["language"])
    p = row.get("language_probability")
    return label if p is None or label == "auto" else f"heard: {label} {p:.0%}"


def language_choices() -> list[tuple[str, str]]:
    """("Automatic", "auto") then each language by its own name and its English name; the value
    is the ISO code, which the engine maps to the exact name the model was trained with."""
    out = [("Automatic", "auto")]
    for lang in LANGUAGES:
        label = lang.english if lang.native == lang.english else f"{lang.native} — {lang.english}"
        out.append((label, lang.code))
    return out


def example_files(directory: Path) -> list[tuple[str, str, str]]:
    """(path, language menu value, label) for each clip in ``directory``; the language comes
    from ``examples.tsv`` (columns ``file``, ``language``) where the folder has one."""
    if not directory.is_dir():
        return []
    languages = {}
    tsv = directory / "examples.tsv"
    if tsv.is_file():
        lines = tsv.read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t") if lines else []
        if "file" in header and "language" in header:
            fi, li = header.index("file"), header.index("language")
            for line in lines[1:]:
                cols = line.split("\t")
                if len(cols) > max(fi, li):
                    languages[cols[fi]] = cols[li]
    out = []
    for p in sorted(directory.iterdir()):
        if not (p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS):
            continue
        try:
            lang = resolve_language(languages.get(p.name))
        except ValueError:
            lang = None
        label = f"{lang.english} ({p.name})" if lang else p.name
        out.append((str(p), lang.code if lang else "auto", label))
    return out


def header_markdown(title: str, demo: bool, clips) -> str:
    """The page's first lines. With the demo model, which of the 31 languages it knows: the
    ones it was trained on, which are the languages of its example clips (one per language)."""
    api = ("The same port serves an OpenAI-compatible API: `POST /v1/audio/transcriptions` "
           "(see `/health`).")
    if not demo:
        return f"# {title}\n31 languages, running on this server. {api}"
    known = []
    for _, code, _ in clips:
        lang = resolve_language(code)
        if lang is not None and lang.english not in known:
            known.append(lang.english)
    if known:
        which = (f"was trained on **{len(known)} of the 31 languages**: {', '.join(known)} "
                 "(one example each below)")
    else:
        which = "was trained on a few of the 31 languages (see models/demo/DEMO.md)"
    return (f"# {title}\nThe **demo model** running here {which}; the official model knows all "
            f"31. {api}")


def status_markdown(holder, loading: bool = False) -> str:
    """The model's state; ``loading``: the page has just asked for the first load."""
    info = holder.info()
    name = info["model"]
    demo = " (demo model)" if info["demo"] else ""
    if loading and not info["model_loaded"]:
        info = {**info, "loading": True}
    if info["model_loaded"]:
        state = (f"**loaded** on **{info['device']}** ({info['dtype']}) "
                 f"in {info['load_seconds']} s")
    elif info["loading"]:
        state = (f"**loading** on {info['device']} ({info['dtype']}), once, on the first "
                 "request ...")
    elif info["load_error"]:
        state = f"**failed to load**: {info['load_error'].splitlines()[0]}"
    else:
        state = (f"**not loaded yet** (loads on the first request) - device "
                 f"**{info['device']}**, {info['dtype']}")
    return f"Model: `{name}`{demo} - {state}{kernel_note(info.get('kernels'))}"


def kernel_note(k: dict | None) -> str:
    """The CPU kernels' part of the status line (empty where they are simply in use)."""
    if not k:
        return ""
    if k["state"] == "compiling":
        return (f"  \nCPU kernels: **compiling CPU kernels (once)**, {k['seconds']:.0f} s so far; "
                "until they are ready the model runs the plain PyTorch path (slower)")
    if k["state"] == "failed":
        return (f"  \nCPU kernels: **none** ({k['reason']}); the model runs the plain PyTorch "
                "path (slower)")
    if k["state"] == "ready" and k.get("in_use") is False:
        return "  \nCPU kernels: ready; switching the model onto them"
    if k["state"] == "ready":
        return f"  \nCPU kernels: {k['paths']}"
    return ""


def _kernels_pending(holder) -> bool:
    k = holder.info().get("kernels") or {}
    return k.get("state") == "compiling" or (k.get("state") == "ready" and k.get("in_use") is False)


def readable_input(path, examples_dir: Path | None) -> str:
    """``path`` when it is a file this server handed out: in Gradio's upload cache or under
    ``examples_dir``; else a ``gr.Error`` that reads the same whether the path exists or not (no
    file-existence oracle). Gradio checks this before our handler (see app.py); this is the
    second line, for any route or Gradio version where that check does not run."""
    from gradio.utils import get_upload_folder

    real = os.path.realpath(str(path))
    roots = [get_upload_folder()] + ([str(examples_dir)] if examples_dir else [])
    for root in roots:
        root = os.path.realpath(root)
        if os.path.commonpath([real, root]) == root and real != root:
            return real
    raise gr.Error(f"{Path(str(path)).name or 'input'}: not a file uploaded to this page; "
                   "upload the file and try again")


PAGE_ROUTE = "page_transcribe"  # the page's transcriptions in funasr_nano_requests_total


def page_concurrency(settings) -> int:
    """Page transcriptions running at once (Gradio's queue): as many as the scheduler has rows,
    so several page users reach the scheduler together and are batched with the API's work."""
    return 2 * settings.batch_size


def compliance_highlight(rows, pii, watch_list):
    from compliance.service import highlight
    return highlight(rows, bool(pii), watch_list)


SPEAKER_CHOICES = [("Off", "off"), ("Automatic", "auto")] + [(str(n), str(n))
                                                              for n in range(2, 7)]


def page_speakers(value, settings):
    """The page's Speakers menu -> a SpeakerRequest (or None for Off)."""
    from engine.speakers.options import SpeakerError, SpeakerRequest, parse_count
    if value in (None, "", "off"):
        return None
    try:
        num, lo, hi = parse_count(value)
    except SpeakerError as e:
        raise RequestError(str(e), 400, "speakers") from None
    return SpeakerRequest(num, lo, hi, embedding_model=getattr(settings, "speaker_model", None))


def build_blocks(settings, holder, banner: str | None = None, examples_dir: Path | None = None,
                 title: str = "Fun-ASR-MLT-Nano speech recognition", live=None,
                 metrics=None, secrets=None) -> gr.Blocks:
    def transcribe(files, microphone, language, itn, hotwords, speakers="off",
                   progress=gr.Progress()):
        t0, status = time.perf_counter(), 500
        with request_id_scope() as rid:  # one id per transcription: its logs and its caller
            try:
                out = _transcribe(files, microphone, language, itn, hotwords, progress, rid,
                                  speakers)
                status = 200 if out is not None else 400
                if out is None:
                    # nothing to transcribe: the user's slip, not a failure: a notice, no red
                    # badges, no traceback in the log; every output stays as it was
                    gr.Warning(NO_INPUT)
                    return (gr.skip(),) * 5
                return out
            except ModelUnavailable as e:
                status = 503
                raise gr.Error(str(e), duration=None) from e
            except RequestError as e:
                # the caller's mistake (gradio_client raises it): no traceback in the log
                status = 400
                raise gr.Error(str(e), print_exception=False) from e
            except gr.Error:
                status = 400
                raise
            except Exception as e:  # noqa: BLE001
                # the page is mounted with show_error=True (a user sees why a file was refused),
                # which would also show this exception's text: the log gets it, the user the id
                status = 500
                raise gr.Error(request_id.internal_error(log, "page transcription", e),
                               print_exception=False) from None
            finally:
                if metrics is not None:
                    metrics.observe_request(PAGE_ROUTE, status, time.perf_counter() - t0)

    def _transcribe(files, microphone, language, itn, hotwords, progress, rid, speakers="off"):
        """The outputs, or None when there is nothing to transcribe."""
        items = []
        for f in files or []:
            path = f if isinstance(f, str) else getattr(f, "name", None) or f.get("path")
            items.append((Path(path).name, readable_input(path, examples_dir)))
        if microphone:
            items.append(("microphone" + (Path(microphone).suffix or ".wav"),
                          readable_input(microphone, examples_dir)))
        if not items:
            return None
        words = parse_hotwords(hotwords)
        opts = Options(language=language, itn=bool(itn), hotwords=words,
                       max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                       max_audio_seconds=settings.max_audio_seconds,
                       speakers=page_speakers(speakers, settings),
                       words=True)   # the SRT/VTT downloads' cues start at words; JSON shows them

        def report(frac, msg):   # no "0.0%" while nothing can be counted yet (the first load)
            progress(frac if frac > 0 else None, desc=msg)

        rows = transcribe_items(holder, items, opts, progress=report, caller=rid)
        table = [[r["file"], r["duration"], heard_label(r), r["processing_time"],
                  r["text"] if not r["error"] else f"ERROR: {r['error']}"] for r in rows]
        downloads = write_downloads(rows, holder.info()["model"])
        public = [{k: r[k] for k in ("file", "duration", "language", "language_name",
                                     "language_probability", "processing_time", "text", "error",
                                     "segments", "words", "speakers", "speakers_error") if k in r}
                  for r in rows]
        log.info("page: %d file(s), %.1f s of audio", len(rows), sum(r["duration"] for r in rows))
        return table, combined_transcript(rows), downloads, public, status_markdown(holder)

    def load_model():
        try:
            holder.get()
        except ModelUnavailable as e:
            raise gr.Error(str(e), duration=None) from e
        return status_markdown(holder)

    # delete_cache: uploads and results older than 2 h leave Gradio's cache, checked hourly.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 7200)) as blocks:
        clips = example_files(examples_dir) if examples_dir else []
        gr.Markdown(header_markdown(title, holder.info()["demo"], clips), elem_id="header")
        if banner:
            gr.Markdown(banner, elem_id="demo-banner")
        with gr.Row():
            status = gr.Markdown(status_markdown(holder), elem_id="model-status")
            load_btn = gr.Button("Load model now", size="sm", scale=0, min_width=140)
        # while the CPU kernels compile, the status line counts the seconds (and stops after)
        timer = gr.Timer(2.0, active=_kernels_pending(holder))
        with gr.Tab("Files", id="files", elem_id="tab-files"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2):
                    files = gr.File(label="Audio files (wav, mp3, m4a, flac, ogg, webm)",
                                    file_count="multiple", file_types=list(AUDIO_EXTENSIONS),
                                    elem_id="files")
                    microphone = gr.Audio(sources=["microphone"], type="filepath",
                                          label="...or record from the microphone",
                                          elem_id="microphone")
                    language = gr.Dropdown(language_choices(), value="auto", label="Language",
                                           info="Automatic, or the language spoken in the audio",
                                           elem_id="language")
                    with gr.Row():
                        itn = gr.Checkbox(value=True, label="Inverse text normalization (ITN)",
                                          info="numbers, punctuation and casing as written text",
                                          elem_id="itn")
                    hotwords = gr.Textbox(label="Hotwords", lines=1, elem_id="hotwords",
                                          placeholder="names or terms, comma separated")
                    speakers = gr.Dropdown(SPEAKER_CHOICES, value="off", label="Speakers",
                                           info="Label who speaks (A, B, ...): the count "
                                           "estimated, or given", elem_id="speakers")
                    with gr.Row():
                        run = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
                        clear = gr.Button("Clear", elem_id="clear")
                    # The files an example click put in the list, while the language shown is
                    # still the example's ([] otherwise)
                    from_example = gr.State([])
                    if clips:
                        examples = gr.Examples([[[path], code] for path, code, _ in clips],
                                               inputs=[files, language],
                                               example_labels=[label for _, _, label in clips],
                                               examples_per_page=40,
                                               label="Examples (click one, then Transcribe)")
                        examples.load_input_event.then(lambda f: list(f or []), files,
                                                       from_example, api_visibility="private",
                                                       queue=False)
                with gr.Column(scale=3):
                    transcript = gr.Textbox(label="Transcript", lines=8, max_lines=30,
                                            buttons=["copy"], elem_id="transcript")
                    table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number", "str",
                                                                          "number", "str"],
                                         label="Results", interactive=False, wrap=True,
                                         # wide enough for "Processing" and "(Portuguese)"
                                         column_widths=["15%", "13%", "17%", "16%", "39%"],
                                         elem_id="results")
                    downloads = gr.File(label="Downloads (TXT, JSON, SRT, VTT)",
                                        file_count="multiple", interactive=False,
                                        elem_id="downloads")
                    with gr.Accordion("JSON", open=False):
                        raw = gr.JSON(label="Results as JSON", elem_id="json")
                    # compliance (docs/compliance.md): hits highlighted after each transcription
                    with gr.Accordion("Compliance: watch list and personal data", open=False):
                        pii_box = gr.Checkbox(value=False, label="Find personal data",
                                              elem_id="compliance-pii")
                        watch_box = gr.Textbox(label="Watch list (one term a line; TAB category"
                                               " TAB severity)", lines=3, elem_id="compliance-watch")
                        hits_note = gr.Markdown("", elem_id="compliance-note")
                        hits_view = gr.HighlightedText(label="Hits", combine_adjacent=False,
                                                       elem_id="compliance-hits")
        if live is not None and secrets is not None:
            with gr.Tab("Live", id="live", elem_id="tab-live"):
                build_live_tab(settings, holder, secrets, language_choices)

        def first_load_status(files, microphone):
            """Before a transcription that will load the model: the status line says so (the
            load takes tens of seconds on the first request)."""
            if (files or microphone) and not holder.loaded:
                return status_markdown(holder, loading=True)
            return gr.skip()

        run.click(first_load_status, [files, microphone], status, queue=False,
                  show_progress="hidden", api_visibility="private").then(
            transcribe, [files, microphone, language, itn, hotwords, speakers],
            [table, transcript, downloads, raw, status], api_name="transcribe",
            api_description="Transcribe uploaded files and/or a microphone recording.",
            show_progress_on=[transcript, table]).then(   # never drawn over the status line
            compliance_highlight, [raw, pii_box, watch_box], [hits_view, hits_note],
            api_visibility="private", queue=False)

        # An example sets its file and its language. The user's own audio afterwards must not
        # inherit the language (a Finnish example, then an English recording labelled Finnish):
        # the menu goes back to Automatic, visibly, and the example's file leaves the list.
        def own_audio(example_paths, current):
            if not example_paths:
                return gr.skip(), gr.skip(), []
            gr.Info("Language set back to Automatic for your own audio: choose one if you "
                    "know it.")
            kept = [f for f in current or [] if f not in example_paths]
            return "auto", kept or None, []

        for event in (microphone.stop_recording, microphone.upload, files.upload):
            # queued (a notice needs the queue), but never behind a running transcription
            event(own_audio, [from_example, files], [language, files, from_example],
                  api_visibility="private", concurrency_limit=None, show_progress="hidden")
        language.input(lambda: [], None, from_example, api_visibility="private", queue=False)
        clear.click(lambda: (None, None, None, "", None, None), None,
                    [files, microphone, table, transcript, downloads, raw],
                    api_visibility="private", queue=False)
        load_btn.click(load_model, None, status, api_name="load_model")
        # a status refresh never draws a progress tracker over the status line itself (on a
        # slow machine this load can still be running when the first Transcribe is clicked)
        blocks.load(lambda: status_markdown(holder), None, status, api_name="model_status",
                    queue=False, show_progress="hidden")

        def tick():
            return status_markdown(holder), gr.Timer(active=_kernels_pending(holder))

        timer.tick(tick, None, [status, timer], api_visibility="private", queue=False,
                   show_progress="hidden")
        blocks.load(lambda: gr.Timer(active=_kernels_pending(holder)), None, timer,
                    api_visibility="private", queue=False)
    return blocks
