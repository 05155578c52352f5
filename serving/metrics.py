"""Prometheus metrics at ``/metrics`` (prometheus-client, text exposition format).

Every name starts with ``funasr_nano_``. Requests: ``requests_total{route,status}`` and
``request_duration_seconds{route}`` (the HTTP routes, and ``page`` for transcriptions run from
the page; labels come from a fixed list, never from what a client sends). The scheduler:
``queue_length{priority}`` and ``running_sequences{priority}`` (read when scraped),
``queue_wait_seconds{priority}``, ``decode_batch_size`` and ``prefill_batch_size`` (sequences
per call), ``decode_steps_total``, ``generated_tokens_total``, ``model_busy_seconds_total{phase}``
(prefill or decode), ``sequences_total{priority,outcome}`` (stop, length, error). Per request:
``audio_seconds_total{priority}``, ``processing_seconds{priority}`` and
``real_time_factor{priority}`` (processing seconds per second of audio). The model:
``model_state{state}`` (1 for the current one of not_loaded, loading, loaded, failed),
``model_load_seconds``, ``model_info{model,device,dtype,demo}``. Live transcription:
``live_sessions`` (open sessions of /v1/realtime, the page's Live tab among them, read from
serving.live.LiveSessions when scraped), ``live_audio_received_seconds_total{slot}`` and
``live_audio_dropped_seconds_total{slot}`` (the audio live sessions received and dropped, by
session slot: 0 to --live-sessions - 1, one session at a time each; dropped stays 0).

Each app has its own registry (``Metrics().registry``), so tests can run several in one process.
"""
from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("funasr_nano.http")

PREFIX = "funasr_nano_"
PRIORITIES = ("live", "interactive", "bulk")
MODEL_STATES = ("not_loaded", "loading", "loaded", "failed")
# the routes counted by name; everything else is "page" (Gradio's own routes) or "other"
ROUTES = ("/health", "/metrics", "/v1/models", "/v1/audio/transcriptions", "/v1/realtime",
          "/v1/realtime/client_secrets",
          "/v1/docs", "/v1/openapi.json")
PAGE_ROUTE = "page"
LOGGED_PREFIX = "/v1/"  # one structured log line per request on these routes

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
_WAIT = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_ROWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
_RTF = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10)


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/v1/"):
        return "/v1/other"
    return PAGE_ROUTE if path == "/" or path.startswith(("/gradio_api", "/config", "/assets",
                                                          "/theme", "/file=", "/upload",
                                                          "/queue", "/info")) else "other"


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        p = PREFIX
        self.requests = Counter(p + "requests", "HTTP requests and page transcriptions, by "
                                "route and status", ["route", "status"], registry=r)
        self.request_seconds = Histogram(p + "request_duration_seconds", "Time to answer a "
                                         "request, by route", ["route"], buckets=_SECONDS,
                                         registry=r)
        self.queue_wait = Histogram(p + "queue_wait_seconds", "Time a sequence waited before "
                                    "its prefill started", ["priority"], buckets=_WAIT,
                                    registry=r)
        self.decode_batch = Histogram(p + "decode_batch_size", "Sequences per decode step",
                                      buckets=_ROWS, registry=r)
        self.prefill_batch = Histogram(p + "prefill_batch_size", "Sequences per prefill (audio "
                                       "encoder, adaptor and decoder prompt together)",
                                       buckets=_ROWS, registry=r)
        self.decode_steps = Counter(p + "decode_steps", "Decode steps run", registry=r)
        self.tokens = Counter(p + "generated_tokens", "Tokens generated (all sequences)",
                              registry=r)
        self.busy = Counter(p + "model_busy_seconds", "Seconds the model thread spent in each "
                            "phase", ["phase"], registry=r)
        self.sequences = Counter(p + "sequences", "Sequences (one per input or segment) "
                                 "finished, by priority and outcome", ["priority", "outcome"],
                                 registry=r)
        self.audio_seconds = Counter(p + "audio_seconds", "Seconds of audio transcribed",
                                     ["priority"], registry=r)
        self.processing = Histogram(p + "processing_seconds", "Time from a call's submission "
                                    "to its results (queue wait included)", ["priority"],
                                    buckets=_SECONDS, registry=r)
        self.rtf = Histogram(p + "real_time_factor", "Processing seconds per second of audio, "
                             "per call", ["priority"], buckets=_RTF, registry=r)
        self.live_sessions = Gauge(p + "live_sessions", "Open live transcription sessions",
                                   registry=r)
        for priority in PRIORITIES:  # every series exists from the start (dashboards, alerts)
            self.audio_seconds.labels(priority)
            self.queue_wait.labels(priority)
        self._holder = None
        r.register(_HolderCollector(self))

    def watch(self, holder, live=None) -> None:
        """Report this model holder's state and its scheduler's queue, and the open sessions
        of ``live`` (serving.live.LiveSessions), when scraped."""
        self._holder = holder
        if live is not None:
            self.live_sessions.set_function(lambda: live.active)
            self.registry.register(_LiveAudioCollector(live))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # ------------------------------------------------------------------ scheduler hooks
    def admitted(self, priority: str, wait_s: float) -> None:
        self.queue_wait.labels(priority).observe(wait_s)

    def prefilled(self, sequences: int, seconds: float) -> None:
        self.prefill_batch.observe(sequences)
        self.busy.labels("prefill").inc(seconds)

    def stepped(self, sequences: int, seconds: float) -> None:
        self.decode_batch.observe(sequences)
        self.decode_steps.inc()
        self.tokens.inc(sequences)
        self.busy.labels("decode").inc(seconds)

    def finished(self, priority: str, outcome: str) -> None:
        self.sequences.labels(priority, outcome).inc()

    def request_done(self, priority: str, seconds: float, audio_seconds: float) -> None:
        self.processing.labels(priority).observe(seconds)
        if audio_seconds > 0:
            self.audio_seconds.labels(priority).inc(audio_seconds)
            self.rtf.labels(priority).observe(seconds / audio_seconds)

    # ------------------------------------------------------------------ requests
    def observe_request(self, route: str, status: int | str, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)


class _HolderCollector:
    """Model state, load time and the queue, read from the holder at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        holder = self.metrics._holder
        p = PREFIX
        state = GaugeMetricFamily(p + "model_state", "1 for the model's current state",
                                  labels=["state"])
        load = GaugeMetricFamily(p + "model_load_seconds", "Seconds the model took to load "
                                 "(0 until loaded)")
        info = GaugeMetricFamily(p + "model_info", "The model being served (value 1)",
                                 labels=["model", "device", "dtype", "demo"])
        waiting = GaugeMetricFamily(p + "queue_length", "Sequences waiting for the model",
                                    labels=["priority"])
        running = GaugeMetricFamily(p + "running_sequences", "Sequences in the decode batch",
                                    labels=["priority"])
        if holder is not None:
            i = holder.info()
            now = ("loaded" if i["model_loaded"] else "loading" if i["loading"]
                   else "failed" if i["load_error"] else "not_loaded")
            for s in MODEL_STATES:
                state.add_metric([s], 1.0 if s == now else 0.0)
            load.add_metric([], float(i["load_seconds"] or 0.0))
            info.add_metric([str(i["model"]), str(i["device"]), str(i["dtype"]),
                             str(bool(i["demo"])).lower()], 1.0)
            stats = holder.scheduler_stats()
            for priority in PRIORITIES:
                waiting.add_metric([priority], float(stats["waiting"].get(priority, 0)))
                running.add_metric([priority], float(stats["running"].get(priority, 0)))
        yield from (state, load, info, waiting, running)


class _LiveAudioCollector:
    """Audio received and dropped by live sessions, per slot, read when scraped."""

    def __init__(self, live):
        self.live = live

    def collect(self):
        from prometheus_client.core import CounterMetricFamily
        p = PREFIX
        received = CounterMetricFamily(p + "live_audio_received_seconds", "Seconds of audio "
                                       "live sessions received, by session slot",
                                       labels=["slot"])
        dropped = CounterMetricFamily(p + "live_audio_dropped_seconds", "Seconds of audio "
                                      "live sessions received and dropped, by session slot",
                                      labels=["slot"])
        for slot, (r, d) in sorted(self.live.audio_seconds().items()):
            received.add_metric([str(slot)], r)
            dropped.add_metric([str(slot)], d)
        yield from (received, dropped)


class HttpMetricsMiddleware:
    """ASGI: counts and times every HTTP request by route and status; writes one log line per
    /v1/* request (method, route, status, seconds) for finding errors and slow requests."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status, rid = [500], [None]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                # the guard inside set the request id and put it in the response headers
                rid[0] = next((v.decode("latin-1") for k, v in message.get("headers") or ()
                               if k.lower() == b"x-request-id"), None)
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope.get("path", "")
            route = route_label(path)
            seconds = time.perf_counter() - t0
            self.metrics.observe_request(route, status[0], seconds)
            if path.startswith(LOGGED_PREFIX):
                log.info("%s %s %d in %.3f s", scope.get("method"), route, status[0], seconds,
                         extra={"method": scope.get("method"), "route": route,
                                "status": status[0], "duration_s": round(seconds, 4),
                                "request_id": rid[0]})
