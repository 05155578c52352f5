"""The page's Files tab: upload or record, choose a language, transcribe, download.

Its named endpoint (usable from gradio_client):
  /transcribe    (files, microphone, language, itn, hotwords, speakers, known speakers' names,
                  their reference clips, the Compliance watch list: its terms as hotwords)
                 -> (results table, transcript, download files, JSON rows, model status)
The rows come from serving.pipeline.transcribe_items, as the API's do.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from engine.audio import AudioError
from engine.languages import language_label, resolve_language

from . import request_id
from .formats import combined_transcript, write_downloads
from .model_holder import ModelUnavailable
from .page_common import language_choices, status_markdown
from .pipeline import Options, RequestError, parse_hotwords, transcribe_items
from .request_id import request_id_scope

log = logging.getLogger("funasr_nano.app")

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".webm", ".opus", ".aac", ".mp4")
NO_INPUT = "Upload one or more audio files or record from the microphone first."
TABLE_HEADERS = ["File", "Duration (s)", "Language", "Processing time (s)", "Text or error"]
PAGE_ROUTE = "page_transcribe"  # the page's transcriptions in funasr_nano_requests_total
SPEAKER_CHOICES = [("Off", "off"), ("Automatic", "auto")] + [(str(n), str(n))
                                                              for n in range(2, 7)]
PUBLIC_FIELDS = ("file", "duration", "language", "language_name", "language_probability",
                 "processing_time", "text", "error", "segments", "words", "speakers",
                 "speakers_error")


# --------------------------------------------------------------------------- the inputs

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


def _path_of(f) -> str:
    """An upload's path, as Gradio hands it over (a path, a file object or a dict)."""
    return f if isinstance(f, str) else getattr(f, "name", None) or f.get("path")


def page_items(files, microphone, examples_dir: Path | None) -> list[tuple[str, str]]:
    """(display name, path) for the uploaded files, then the microphone recording."""
    items = []
    for f in files or []:
        path = _path_of(f)
        items.append((Path(path).name, readable_input(path, examples_dir)))
    if microphone:
        items.append(("microphone" + (Path(microphone).suffix or ".wav"),
                      readable_input(microphone, examples_dir)))
    return items


def page_speakers(value, settings, names="", clips=None, examples_dir: Path | None = None):
    """The page's Speakers menu and known speakers -> a SpeakerRequest (or None for Off).
    ``names``: comma or line separated, one a clip; ``clips``: the uploaded reference clips
    (2-10 s of each voice alone), in the same order. Known speakers imply Automatic."""
    from engine.speakers.options import SpeakerError, SpeakerRequest, parse_count
    names = [n.strip() for n in re.split(r"[,\n]+", str(names or "")) if n.strip()]
    clips = list(clips or [])
    if value in (None, "", "off") and not names and not clips:
        return None
    model = getattr(settings, "speaker_model", None)
    try:
        num, lo, hi = parse_count("auto" if value in (None, "", "off") else value)
        known = known_voices(names, clips, model, examples_dir) if names or clips else {}
    except SpeakerError as e:
        raise RequestError(str(e), 400, e.param) from None
    return SpeakerRequest(num, lo, hi, known, embedding_model=model)


KNOWN_NAMES, KNOWN_CLIPS = "Known speakers: names", "Known speakers: clips"


def known_voices(names, clips, embedding_model, examples_dir: Path | None) -> dict:
    """``{name: voice embedding}`` from the page's names and uploaded clips, by the API's and
    the CLI's checks (engine.speakers.options.known_speakers); SpeakerError naming the field."""
    from engine.audio import load_audio
    from engine.speakers.diarize import reference_embedding
    from engine.speakers.options import REFERENCE_MAX_S, SpeakerError, known_speakers

    audio = []
    for f in clips:
        path = readable_input(_path_of(f), examples_dir)
        try:
            audio.append(load_audio(path, name=Path(path).name, max_seconds=REFERENCE_MAX_S + 0.5))
        except AudioError as e:
            raise SpeakerError(f"{KNOWN_CLIPS}: {e}", KNOWN_CLIPS) from None
    return known_speakers(names, audio, lambda a: reference_embedding(a, embedding_model),
                          KNOWN_NAMES, KNOWN_CLIPS)


def page_watch_hotwords(watch_list) -> list[str]:
    """The watch box's terms, offered to the decoder as hotwords as the API and CLI offer theirs
    (docs/compliance.md); a bad list offers none: the hits step after the transcription names
    its line, and the transcription itself never fails for it."""
    from compliance.service import ComplianceRequestError, detector_from_request, watch_hotwords
    if not (watch_list or "").strip():
        return []
    try:
        return watch_hotwords(detector_from_request(watch_list, None))
    except ComplianceRequestError:
        return []


def page_options(settings, language, itn, hotwords, speakers, known_names="", known_clips=None,
                 examples_dir: Path | None = None, watch_list=None) -> Options:
    return Options(language=language, itn=bool(itn), hotwords=parse_hotwords(hotwords),
                   watch_hotwords=page_watch_hotwords(watch_list),
                   max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                   max_audio_seconds=settings.max_audio_seconds,
                   speakers=page_speakers(speakers, settings, known_names, known_clips,
                                          examples_dir),
                   words=True)   # the SRT/VTT downloads' cues start at words; JSON shows them


# --------------------------------------------------------------------------- the outputs

def heard_label(row: dict) -> str:
    """The Language column: the language given (``en (English)``), the one heard with how sure
    (``heard: en (English) 93%``), or ``auto`` where nothing could be told."""
    label = language_label(row["language"])
    p = row.get("language_probability")
    return label if p is None or label == "auto" else f"heard: {label} {p:.0%}"


def page_outputs(rows: list[dict], holder) -> tuple:
    """(results table, transcript, download files, JSON rows, model status) for the rows."""
    table = [[r["file"], r["duration"], heard_label(r), r["processing_time"],
              r["text"] if not r["error"] else f"ERROR: {r['error']}"] for r in rows]
    downloads = write_downloads(rows, holder.info()["model"])
    public = [{k: r[k] for k in PUBLIC_FIELDS if k in r} for r in rows]
    return table, combined_transcript(rows), downloads, public, status_markdown(holder)


def compliance_highlight(rows, pii, watch_list):
    from compliance.service import highlight
    return highlight(rows, bool(pii), watch_list)


# --------------------------------------------------------------------------- the handler

def page_transcriber(settings, holder, examples_dir: Path | None, metrics=None):
    """The Transcribe button's handler: each failure becomes the message a user should see
    (the caller's mistake without a traceback, an internal error as its request id), and each
    call is counted in /metrics under PAGE_ROUTE."""
    def run_rows(files, microphone, language, itn, hotwords, speakers, known, watch_list,
                 progress, rid):
        """The outputs, or None when there is nothing to transcribe."""
        items = page_items(files, microphone, examples_dir)
        if not items:
            return None
        opts = page_options(settings, language, itn, hotwords, speakers, *known, examples_dir,
                            watch_list)

        def report(frac, msg):   # no "0.0%" while nothing can be counted yet (the first load)
            progress(frac if frac > 0 else None, desc=msg)

        rows = transcribe_items(holder, items, opts, progress=report, caller=rid)
        log.info("page: %d file(s), %.1f s of audio", len(rows), sum(r["duration"] for r in rows))
        return page_outputs(rows, holder)

    # known_names=None: gradio_client then leaves the new inputs optional (older callers send
    # six values); watch_list: the Compliance box, whose terms go to the decoder as hotwords
    def transcribe(files, microphone, language, itn, hotwords, speakers="off", known_names=None,
                   known_clips=None, watch_list=None, progress=gr.Progress()):
        t0, status = time.perf_counter(), 500
        with request_id_scope() as rid:  # one id per transcription: its logs and its caller
            try:
                out = run_rows(files, microphone, language, itn, hotwords, speakers,
                               (known_names, known_clips), watch_list, progress, rid)
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

    return transcribe


# --------------------------------------------------------------------------- the layout

@dataclass
class FilesInputs:
    files: gr.File
    microphone: gr.Audio
    language: gr.Dropdown
    itn: gr.Checkbox
    hotwords: gr.Textbox
    speakers: gr.Dropdown
    known_names: gr.Textbox
    known_clips: gr.File
    run: gr.Button
    clear: gr.Button
    from_example: gr.State   # the files an example click put in the list ([] otherwise)


@dataclass
class FilesOutputs:
    transcript: gr.Textbox
    table: gr.Dataframe
    downloads: gr.File
    raw: gr.JSON
    pii: gr.Checkbox
    watch: gr.Textbox
    hits_note: gr.Markdown
    hits: gr.HighlightedText


def input_column(clips) -> FilesInputs:
    """Upload or record, the language, Transcribe and the examples first (on a 1280x900 screen
    they are all in view without scrolling: scripts/screenshot.py checks), then the rarer
    options."""
    with gr.Row(equal_height=True):
        files = gr.File(label="Audio files (wav, mp3, m4a, ...)", height=130,
                        file_count="multiple", file_types=list(AUDIO_EXTENSIONS),
                        elem_id="files")
        microphone = gr.Audio(sources=["microphone"], type="filepath",
                              label="...or record from the microphone", elem_id="microphone")
    with gr.Row():
        language = gr.Dropdown(language_choices(), value="auto", label="Language spoken",
                               elem_id="language")
        itn = gr.Checkbox(value=True, label="Inverse text normalization (ITN)",
                          info="numbers, punctuation, casing as written", elem_id="itn")
    with gr.Row():
        run = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
        clear = gr.Button("Clear", elem_id="clear")
    from_example = gr.State([])
    if clips:
        examples = gr.Examples([[[path], code] for path, code, _ in clips],
                               inputs=[files, language],
                               example_labels=[label for _, _, label in clips],
                               examples_per_page=40, elem_id="examples",
                               label="Examples (click one, then Transcribe)")
        examples.load_input_event.then(lambda f: list(f or []), files, from_example,
                                       api_visibility="private", queue=False)
    with gr.Row():
        hotwords = gr.Textbox(label="Hotwords", lines=1, elem_id="hotwords",
                              placeholder="names or terms, comma separated")
        speakers = gr.Dropdown(SPEAKER_CHOICES, value="off", label="Speakers",
                               info="Label who speaks (A, B, ...): the count estimated, or given",
                               elem_id="speakers")
    with gr.Accordion("Known speakers: their names instead of letters", open=False,
                      elem_id="known-speakers"):
        known_names = gr.Textbox(label="Names", lines=1, elem_id="known-names",
                                 placeholder="e.g. Anna, Ben (one a clip, in the clips' order)")
        known_clips = gr.File(label="A 2-10 s clip of each voice alone", file_count="multiple",
                              file_types=list(AUDIO_EXTENSIONS), elem_id="known-clips")
    return FilesInputs(files, microphone, language, itn, hotwords, speakers, known_names,
                       known_clips, run, clear, from_example)


def output_column() -> FilesOutputs:
    transcript = gr.Textbox(label="Transcript", lines=8, max_lines=30, buttons=["copy"],
                            elem_id="transcript")
    table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number", "str", "number", "str"],
                         label="Results", interactive=False, wrap=True,
                         # wide enough for "Processing" and "(Portuguese)"
                         column_widths=["15%", "13%", "17%", "16%", "39%"], elem_id="results")
    downloads = gr.File(label="Downloads (TXT, JSON, SRT, VTT)", file_count="multiple",
                        interactive=False, elem_id="downloads")
    with gr.Accordion("Results as JSON (segments, words, speakers)", open=False):
        raw = gr.JSON(label="Results as JSON", elem_id="json")
    # compliance (docs/compliance.md): hits highlighted after each transcription
    with gr.Accordion("Compliance: watch list and personal data", open=False):
        pii = gr.Checkbox(value=False, label="Find personal data", elem_id="compliance-pii")
        watch = gr.Textbox(label="Watch list (one term a line; TAB category TAB severity)",
                           lines=3, elem_id="compliance-watch")
        hits_note = gr.Markdown("", elem_id="compliance-note")
        hits = gr.HighlightedText(label="Hits", combine_adjacent=False, elem_id="compliance-hits")
    return FilesOutputs(transcript, table, downloads, raw, pii, watch, hits_note, hits)


# --------------------------------------------------------------------------- the events

def wire_transcribe(i: FilesInputs, o: FilesOutputs, status, holder, transcribe) -> None:
    """Transcribe: the status line says the model is loading (first request), the named
    /transcribe runs, then the compliance hits are drawn."""
    def first_load_status(files, microphone):
        """Before a transcription that will load the model: the status line says so (the
        load takes tens of seconds on the first request)."""
        if (files or microphone) and not holder.loaded:
            return status_markdown(holder, loading=True)
        return gr.skip()

    i.run.click(first_load_status, [i.files, i.microphone], status, queue=False,
                show_progress="hidden", api_visibility="private").then(
        transcribe, [i.files, i.microphone, i.language, i.itn, i.hotwords, i.speakers,
                     i.known_names, i.known_clips, o.watch],
        [o.table, o.transcript, o.downloads, o.raw, status], api_name="transcribe",
        api_description="Transcribe uploaded files and/or a microphone recording.",
        show_progress_on=[o.transcript, o.table]).then(   # never drawn over the status line
        compliance_highlight, [o.raw, o.pii, o.watch], [o.hits, o.hits_note],
        api_visibility="private", queue=False)


def wire_own_audio(i: FilesInputs, o: FilesOutputs) -> None:
    """An example sets its file and its language. The user's own audio afterwards must not
    inherit the language (a Finnish example, then an English recording labelled Finnish): the
    menu goes back to Automatic, visibly, and the example's file leaves the list."""
    def own_audio(example_paths, current):
        if not example_paths:
            return gr.skip(), gr.skip(), []
        gr.Info("Language set back to Automatic for your own audio: choose one if you "
                "know it.")
        kept = [f for f in current or [] if f not in example_paths]
        return "auto", kept or None, []

    for event in (i.microphone.stop_recording, i.microphone.upload, i.files.upload):
        # queued (a notice needs the queue), but never behind a running transcription
        event(own_audio, [i.from_example, i.files], [i.language, i.files, i.from_example],
              api_visibility="private", concurrency_limit=None, show_progress="hidden")
    i.language.input(lambda: [], None, i.from_example, api_visibility="private", queue=False)
    i.clear.click(lambda: (None, None, None, "", None, None), None,
                  [i.files, i.microphone, o.table, o.transcript, o.downloads, o.raw],
                  api_visibility="private", queue=False)


def build_files_tab(settings, holder, status, clips, examples_dir: Path | None,
                    metrics=None) -> None:
    """The tab's two columns (inputs and examples; transcript, table, downloads) and events;
    ``status``: the page's model status line, which Transcribe updates."""
    with gr.Tab("Files", id="files", elem_id="tab-files"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                inputs = input_column(clips)
            with gr.Column(scale=3):
                outputs = output_column()
    wire_transcribe(inputs, outputs, status, holder,
                    page_transcriber(settings, holder, examples_dir, metrics))
    wire_own_audio(inputs, outputs)
