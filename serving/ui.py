"""The Gradio page: the model status line above a Files tab (serving/files_tab.py: upload or
record, choose a language, transcribe, download) and a Live tab (the browser streams the
microphone to /v1/realtime, serving/live_tab.py).

Named API endpoints (usable from gradio_client):
  /transcribe    (files, microphone, language, itn, hotwords, speakers)
                 -> (results table, transcript, download files, JSON rows, model status)
  /model_status  () -> model status (Markdown)
  /load_model    () -> model status, after loading the model if it was not loaded yet
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine.languages import resolve_language

from .files_tab import build_files_tab, example_files
from .live_tab import build_live_tab
from .model_holder import ModelUnavailable
from .page_common import kernels_pending, language_choices, status_markdown

CSS = """
#demo-banner { border: 2px solid #d97706; background: #fffbeb; color: #78350f;
               border-radius: 8px; padding: 6px 12px; }
#demo-banner * { color: #78350f !important; }
/* the banner's sentence beside its commands, so that Transcribe and the examples stay on the
   first screen (1280x900) */
#demo-banner span.md { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 3fr);
                       gap: 4px 16px; align-items: center; }
#demo-banner pre { margin: 0; padding: 6px 10px; font-size: 0.8em; line-height: 1.3; }
#header h1 { margin-bottom: 4px; }
#model-status { font-size: 0.95em; }
/* the status line states the model's progress in words ("loading ..."): no event's progress
   tracker is ever drawn over it. Gradio can mark it pending for a moment when an event that
   updates it starts (a "0.0s" tracker, seen about 1 run in 9 of test_first_use_of_the_page) */
#model-status [data-testid="status-tracker"] { display: none !important; }
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


def page_concurrency(settings) -> int:
    """Page transcriptions running at once (Gradio's queue): as many as the scheduler has rows,
    so several page users reach the scheduler together and are batched with the API's work."""
    return 2 * settings.batch_size


def status_line(holder):
    """The model status line and its Load button; and the timer that refreshes the line while
    the CPU kernels compile (and stops after)."""
    def load_model():
        try:
            holder.get()
        except ModelUnavailable as e:
            raise gr.Error(str(e), duration=None) from e
        return status_markdown(holder)

    with gr.Row():
        status = gr.Markdown(status_markdown(holder), elem_id="model-status")
        load_btn = gr.Button("Load model now", size="sm", scale=0, min_width=140)
    # the line says "loading" at once (its own tracker is hidden, see CSS), then the result
    load_btn.click(lambda: status_markdown(holder, loading=True), None, status, queue=False,
                   show_progress="hidden", api_visibility="private").then(
        load_model, None, status, api_name="load_model", show_progress="hidden")
    return status, gr.Timer(2.0, active=kernels_pending(holder))


def wire_status(blocks, holder, status, timer) -> None:
    # a status refresh never draws a progress tracker over the status line itself (on a
    # slow machine this load can still be running when the first Transcribe is clicked)
    blocks.load(lambda: status_markdown(holder), None, status, api_name="model_status",
                queue=False, show_progress="hidden")

    def tick():
        return status_markdown(holder), gr.Timer(active=kernels_pending(holder))

    timer.tick(tick, None, [status, timer], api_visibility="private", queue=False,
               show_progress="hidden")
    blocks.load(lambda: gr.Timer(active=kernels_pending(holder)), None, timer,
                api_visibility="private", queue=False)


def build_blocks(settings, holder, banner: str | None = None, examples_dir: Path | None = None,
                 title: str = "Fun-ASR-MLT-Nano speech recognition", live=None,
                 metrics=None, secrets=None) -> gr.Blocks:
    """The page: header, demo banner, status line, then the Files and Live tabs."""
    # delete_cache: uploads and results older than 2 h leave Gradio's cache, checked hourly.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 7200)) as blocks:
        clips = example_files(examples_dir) if examples_dir else []
        gr.Markdown(header_markdown(title, holder.info()["demo"], clips), elem_id="header")
        if banner:
            gr.Markdown(banner, elem_id="demo-banner")
        status, timer = status_line(holder)
        build_files_tab(settings, holder, status, clips, examples_dir, metrics)
        if live is not None and secrets is not None:
            with gr.Tab("Live", id="live", elem_id="tab-live"):
                build_live_tab(settings, holder, secrets, language_choices)
        wire_status(blocks, holder, status, timer)
    return blocks
