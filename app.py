#!/usr/bin/env python3
"""Fun-ASR-MLT-Nano speech recognition: the web page and the HTTP API on one port (7860).

    python app.py [--model DIR_OR_HUB_ID] [--device cuda] [--host 0.0.0.0] [--port 7860] ...
    python app.py --help        # every flag, with its environment variable

The page is up in seconds; the model loads on the first request (or at once with --preload).
Routes: / (page), /health, /metrics (Prometheus), /v1/models, /v1/audio/transcriptions,
/v1/realtime (WebSocket), /gradio_api/... (gradio_client). One scheduler (serving/scheduler.py)
batches the work of every caller: the page, the API, long-audio segments, live sessions.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from serving.settings import parse_settings  # noqa: E402

log = logging.getLogger("funasr_nano.app")


def model_banner(spec: str, note: str | None, demo: bool) -> str | None:
    """The page's banner (and log line) when the model is the demo, or when there is none."""
    from engine.checkpoint import how_to_download, missing_files
    path = Path(spec)
    if path.is_dir() and missing_files(path) or (note and not path.is_dir()):
        return ("**No model is available.** Neither the official Fun-ASR-MLT-Nano-2512 weights "
                f"nor the demo checkpoint were found (tried `{spec}`).\n\n"
                f"```\n{how_to_download()}\n```")
    if demo:
        return ("**Demo model.** This is a small demo model trained on synthetic speech by this "
                "project; it will not transcribe real recordings well. For the real "
                f"Fun-ASR-MLT-Nano-2512 weights:\n\n```\n{how_to_download()}\n```")
    return None


def create_app(settings):
    """The FastAPI app (API routes + the Gradio page mounted at /) and its model holder."""
    import gradio as gr
    from fastapi import FastAPI

    from serving import api, client_secrets, errors, live_tab, realtime, ui
    from serving.live import LiveSessions
    from serving.metrics import Metrics
    from serving.model_choice import choose_model
    from serving.model_holder import ModelHolder, is_demo_dir

    spec, note = choose_model(settings.model)
    demo = note is not None or is_demo_dir(spec)
    banner = model_banner(spec, note, demo)
    if banner:
        plain = banner.replace("**", "").replace("```", "")
        log.warning("%s", re.sub(r"\n{2,}", "\n", plain).strip())
    metrics = Metrics()
    holder = ModelHolder(spec, settings.device, settings.dtype, demo=demo,
                         batch_size=settings.batch_size, scheduler=settings.scheduler,
                         metrics=metrics, bench_tokens=settings.bench_tokens)
    log.info("model: %s (device %s, %s); it loads %s; scheduler: %s, batch size %d", spec,
             holder.device, holder.dtype,
             "now, in the background" if settings.preload else "on the first request",
             settings.scheduler, settings.batch_size)
    if settings.bench_tokens:
        log.warning("--bench-tokens %d: every sequence decodes exactly %d tokens (benchmarks "
                    "only; the texts are not transcripts)", settings.bench_tokens,
                    settings.bench_tokens)

    # the CPU kernels: loaded from the cache, or compiled in the background (the model does not
    # wait for them: it loads on the plain path and switches over when they are ready)
    holder.watch_kernels()

    app = FastAPI(title="Fun-ASR-MLT-Nano", docs_url="/v1/docs", openapi_url="/v1/openapi.json",
                  redoc_url=None)
    live = LiveSessions(settings.live_sessions)   # /v1/realtime and the Live tab share the cap
    metrics.watch(holder, live)
    lifecycle = api.install(app, settings, holder, live=live, metrics=metrics)
    app.state.lifecycle = lifecycle   # main() marks it draining when a stop signal arrives
    secrets = client_secrets.ClientSecrets()   # the page's and browsers' way into /v1/realtime
    app.include_router(client_secrets.create_router(settings, secrets))
    app.include_router(realtime.create_router(settings, holder, live, secrets))
    blocks = ui.build_blocks(settings, holder, banner=banner, examples_dir=ROOT / "example",
                             live=live, metrics=metrics, secrets=secrets)
    blocks.queue(default_concurrency_limit=ui.page_concurrency(settings))
    errors.install_fallback(app)   # after every /v1 route, before the page takes every path
    gr.mount_gradio_app(app, blocks, path="/", server_name=settings.host,
                        server_port=settings.port, auth=settings.auth_pair,
                        allowed_paths=[str(ROOT / "example")],
                        max_file_size=settings.max_upload_bytes, css=ui.CSS, ssr_mode=False,
                        show_error=True, head=live_tab.head_html())
    # launch() sets has_launched, and only then does Gradio check the path of every input file
    # (FileData.path) against its upload cache and blocked_paths (gradio.processing_utils.
    # _check_allowed); mount_gradio_app() does not, so without this line any server path named
    # in a request to /gradio_api/call/* or the queue would be read. Examples are moved into
    # the cache when the page is built, so they pass.
    blocks.has_launched = True
    from serving.page_guard import PageGuard, install as install_page_errors
    install_page_errors()   # Gradio's own error texts: a sentence for the user, no server path;
    # and no URL a client names is fetched
    app.add_middleware(PageGuard, blocks=blocks)
    if settings.preload:
        holder.preload_in_background()
    return app, holder


def main(argv=None) -> int:
    settings = parse_settings(argv)
    from serving.logs import setup_logging, uvicorn_log_config
    setup_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import uvicorn

    app, holder = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # From here /v1/* answers new requests 503; those in flight get --stop-timeout
            # seconds, then uvicorn cancels them and the guard answers them 503 too.
            app.state.lifecycle.draining = True
            super().handle_exit(sig, frame)

    from serving.connections import protocol_class, ws_protocol_class
    from serving.limits import HEADER_TIMEOUT_S, WS_PING_INTERVAL_S, WS_PING_TIMEOUT_S
    server = Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                   # request headers get a deadline (serving.connections)
                                   http=protocol_class(min(HEADER_TIMEOUT_S,
                                                           settings.body_timeout)),
                                   # a WebSocket client that stops reading (no pong) is
                                   # closed within ping interval + timeout
                                   ws=ws_protocol_class(),
                                   ws_ping_interval=WS_PING_INTERVAL_S,
                                   ws_ping_timeout=WS_PING_TIMEOUT_S,
                                   log_level=settings.log_level.lower(),
                                   log_config=uvicorn_log_config(settings.log_format),
                                   timeout_graceful_shutdown=settings.stop_timeout,
                                   # /v1/realtime answers messages up to this size itself (an
                                   # error event, then 1009); past it the WebSocket layer
                                   # closes with 1009 on its own.
                                   ws_max_size=max(16 << 20, 2 * settings.live_max_message_bytes)))

    def announce():
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
            log.info("ready: http://%s:%d (page), /health, /v1/audio/transcriptions, "
                     "/v1/realtime",
                     host, settings.port)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    finally:
        holder.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
