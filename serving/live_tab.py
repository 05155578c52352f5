"""The page's Live tab: the microphone streams through Gradio (so ``--auth`` covers it) into an
``engine.live.LiveSession``; the tab shows the partial text in progress, each final with its
times as it lands and the elapsed time, and Stop leaves the whole transcript with TXT / SRT /
VTT downloads.

Gradio's microphone component sends what it recorded every 100 ms (its front end fixes the
interval for audio) and ``chunk`` runs for each piece; the session decodes in its own thread, so
each call only feeds audio and reads what is new. Gradio drops the first pieces while it opens
the stream, so the status says when to start speaking. Each browser tab holds at most one
session (in a ``gr.State``, closed when the tab goes away), counted against ``--live-sessions``
with the ``/v1/realtime`` sessions.
"""
from __future__ import annotations

import functools
import logging
import threading

import gradio as gr
import numpy as np

from engine.audio import AudioError
from engine.live import LiveError, LiveOptions, LiveSession

from . import request_id
from .formats import write_downloads
from .live import LiveSessions, TooManySessions, decode_function
from .model_holder import ModelUnavailable
from .pipeline import RequestError, parse_hotwords, parse_language

log = logging.getLogger("funasr_nano.app")

STREAM_EVERY_S = 0.1      # what Gradio's audio front end uses whatever is asked
FINISH_TIMEOUT_S = 60.0


def _internal_errors_hidden(handler):
    """The page is mounted with show_error=True (a user sees why audio was refused), which would
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


def clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60.0)
    return f"{int(m)}:{s:04.1f}"


class PageLive:
    """One browser tab's live transcript (the value of the tab's ``gr.State``)."""

    def __init__(self):
        self.session: LiveSession | None = None
        self.finals: list[dict] = []       # {"start", "end", "text"} in order
        self.partial = ""
        self.error: str | None = None
        self.seconds = 0.0
        self._lock = threading.Lock()      # the transcript, written by the session's thread
        # start / feed / finish / stop: Gradio may run a tab's stop while its last piece of
        # audio is still being fed
        self._life = threading.RLock()
        self._sessions: LiveSessions | None = None
        self._language = "auto"

    def __deepcopy__(self, memo):
        # Gradio deep-copies a fresh State value for a session that skipped the page's load
        # event (a client of the queue API); the locks cannot be copied, and a copy of a tab's
        # transcript is a new, empty one
        return PageLive()

    # -- session life
    def start(self, holder, settings, sessions: LiveSessions, language, itn, hotwords) -> None:
        with self._life:
            self._start(holder, settings, sessions, language, itn, hotwords)

    def _start(self, holder, settings, sessions, language, itn, hotwords) -> None:
        self.stop()
        self.finals, self.partial, self.error, self.seconds = [], "", None, 0.0
        lang = parse_language(language)
        self._language = lang.code if lang else None
        sessions.acquire()
        self._sessions = sessions
        if not holder.loaded:
            holder.preload_in_background()
        options = LiveOptions(language=self._language, itn=bool(itn),
                              hotwords=parse_hotwords(hotwords),
                              max_new_tokens=settings.max_new_tokens,
                              batch_size=settings.batch_size)
        self._options = options
        self._decode = decode_function(holder, settings, sessions)
        self.session = None                # made on the first chunk, at its sample rate

    def feed(self, rate: int, samples: np.ndarray) -> None:
        with self._life:
            if self._sessions is not None:
                self._feed(rate, samples)

    def _feed(self, rate: int, samples: np.ndarray) -> None:
        if self.session is None:
            self._options.sample_rate = int(rate)
            self.session = LiveSession(self._decode, self._options, on_event=self._event,
                                       name="page-live")
        elif int(rate) != self.session.options.sample_rate:
            samples = _resample(samples, rate, self.session.options.sample_rate)
        self.session.feed(samples)
        self.seconds = self.session.seconds

    def finish(self) -> None:
        with self._life:
            if self.session is not None:
                self.session.finish(FINISH_TIMEOUT_S)
            self.stop()

    def stop(self) -> None:
        with self._life:
            if self.session is not None:
                self.session.close()
                self.session = None
            if self._sessions is not None:
                self._sessions.release()
                self._sessions = None
            self.partial = ""

    def _event(self, e) -> None:
        with self._lock:
            if e.kind == "partial":
                self.partial = e.text
            elif e.kind == "final":
                if e.text:
                    self.finals.append({"start": round(e.start, 3), "end": round(e.end, 3),
                                        "text": e.text})
                self.partial = ""
            elif e.kind == "failed":
                self.error = "a part of the speech could not be transcribed (see the log)"
                self.partial = ""

    # -- what the tab shows
    def transcript(self) -> str:
        with self._lock:
            lines = [f"[{clock(f['start'])} → {clock(f['end'])}] {f['text']}"
                     for f in self.finals]
        return "\n".join(lines)

    def status(self, recording: bool | None) -> str:
        """``recording`` None: Record was pressed and no audio has arrived yet (Gradio drops
        the microphone's first chunks while it opens the stream), so say when to speak."""
        n = len(self.finals)
        if recording is None or recording and self.session is None:
            return "**connecting…** start speaking when this says ● recording"
        state = "● recording" if recording else "stopped"
        extra = f" · {self.error}" if self.error else ""
        return (f"**{state}** · {clock(self.seconds)} · {n} utterance{'s' if n != 1 else ''}"
                f"{extra}")

    def downloads(self, model: str | None) -> list[str]:
        with self._lock:
            segments = list(self.finals)
        from engine.longform.subtitles import join_texts
        row = {"file": "live", "duration": round(self.seconds, 3), "language": self._language
               or "auto", "processing_time": 0.0,
               "text": join_texts([s["text"] for s in segments], self._language),
               "error": None, "segments": segments}
        if self._language is None:   # none given: the language heard (engine.language_id)
            from engine.language_id import detect
            row.update(detect(row["text"]) or {})
        return write_downloads([row], model)


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    from engine.audio import resample
    x = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples
    return resample(x, int(rate), int(target))


def _mono(rate: int, data: np.ndarray) -> np.ndarray:
    """Gradio's (rate, samples): mono int16 as it is, anything else as mono float32."""
    data = np.asarray(data)
    if data.ndim == 1 and data.dtype == np.int16:
        return data
    from engine.audio import load_audio
    return load_audio((data, int(rate)), int(rate), name="microphone")


def _close_state(value) -> None:
    if isinstance(value, PageLive):
        value.stop()


def build_live_tab(settings, holder, sessions: LiveSessions, language_choices) -> None:
    """The Live tab's components and events, inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    state = gr.State(PageLive, time_to_live=6 * 3600, delete_callback=_close_state)
    gr.Markdown("Speak: the text appears while you talk, and each finished sentence lands "
                "below with its times. Stop leaves the whole transcript to download.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy",
                           label="Microphone", elem_id="live-mic")
            language = gr.Dropdown(language_choices(), value="auto", label="Language",
                                   elem_id="live-language")
            itn = gr.Checkbox(value=True, label="Inverse text normalization (ITN)",
                              elem_id="live-itn")
            hotwords = gr.Textbox(label="Hotwords", lines=1, elem_id="live-hotwords",
                                  placeholder="names or terms, comma separated")
        with gr.Column(scale=3):
            status = gr.Markdown("**ready** · press Record and speak", elem_id="live-status")
            partial = gr.Textbox(label="Now (partial)", lines=2, interactive=False,
                                 elem_id="live-partial")
            finals = gr.Textbox(label="Transcript", lines=10, max_lines=40, interactive=False,
                                buttons=["copy"], elem_id="live-transcript")
            downloads = gr.File(label="Downloads (TXT, JSON, SRT, VTT)", file_count="multiple",
                                interactive=False, elem_id="live-downloads")

    @_internal_errors_hidden
    def start(live: PageLive, lang, itn_on, words):
        try:
            live.start(holder, settings, sessions, lang, itn_on, words)
        except TooManySessions as e:
            raise gr.Error(str(e)) from None
        except RequestError as e:
            raise gr.Error(str(e)) from None
        return live, live.status(None), "", "", None

    @_internal_errors_hidden
    def chunk(live: PageLive, audio):
        if audio is not None and live._sessions is not None:
            rate, data = audio
            try:
                live.feed(int(rate), _mono(rate, data))
            except (LiveError, AudioError) as e:
                raise gr.Error(str(e)) from None
        return (live, live.status(live._sessions is not None), live.partial,
                live.transcript())

    @_internal_errors_hidden
    def stop(live: PageLive):
        live.finish()
        files = live.downloads(holder.info()["model"]) if live.finals else None
        return live, live.status(False), "", live.transcript(), files

    limit = max(1, settings.live_sessions)
    # Gradio's own queue runs these (so --auth covers them); the Files tab's queue limit
    # does not apply: each call is short (stop waits for the last final).
    common = dict(api_visibility="private", concurrency_limit=limit, concurrency_id="live",
                  show_progress="hidden")
    mic.start_recording(start, [state, language, itn, hotwords],
                        [state, status, partial, finals, downloads], **common)
    mic.stream(chunk, [state, mic], [state, status, partial, finals],
               stream_every=STREAM_EVERY_S, time_limit=None, **common)
    mic.stop_recording(stop, [state], [state, status, partial, finals, downloads], **common)
