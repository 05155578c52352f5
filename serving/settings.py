"""The app's flags, each with an environment variable that sets its default.

Precedence: command line, then the environment, then the built-in default. ``--host`` and
``--port`` also honour Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

# (flag, env variable(s), default, type, help); the first env variable found wins.
_FLAGS = [
    ("--model", ("FUNASR_NANO_MODEL",), None, str,
     "model directory or hub id (default: the official model if present locally, else the demo)"),
    ("--device", ("FUNASR_NANO_DEVICE",), None, str,
     "cpu, cuda or cuda:N (default: cuda if available)"),
    ("--dtype", ("FUNASR_NANO_DTYPE",), None, str,
     "fp32 (faithful), bf16 (GPU) or int8 (CPU only: fastest, lossy); default: bf16 on GPUs "
     "of compute capability 8.0+, fp32 on older GPUs and on CPU (exact, bf16-stored weights)"),
    ("--host", ("GRADIO_SERVER_NAME", "FUNASR_NANO_HOST"), "127.0.0.1", str,
     "address to listen on (0.0.0.0 for all interfaces)"),
    ("--port", ("GRADIO_SERVER_PORT", "FUNASR_NANO_PORT"), 7860, int,
     "port for the page and the API"),
    ("--max-upload-mb", ("FUNASR_NANO_MAX_UPLOAD_MB",), 200.0, float,
     "largest accepted upload in MB (larger: HTTP 413)"),
    ("--max-audio-minutes", ("FUNASR_NANO_MAX_AUDIO_MINUTES",), 60.0, float,
     "longest accepted audio in minutes (longer: HTTP 413)"),
    ("--auth", ("FUNASR_NANO_AUTH",), None, str,
     "user:pass to log in to the page (the API then also accepts these as HTTP Basic auth)"),
    ("--api-key", ("FUNASR_NANO_API_KEY",), None, str,
     "require 'Authorization: Bearer KEY' on /v1/* and /metrics (/health stays open)"),
    ("--batch-size", ("FUNASR_NANO_BATCH_SIZE",), 8, int,
     "sequences (files, segments, live utterances) decoded together in one step, from every "
     "caller"),
    ("--scheduler", ("FUNASR_NANO_SCHEDULER",), "batch", str,
     "batch: one scheduler batches every caller's work (continuous batching, priorities, "
     "fairness); serial: one request's model call at a time (the old path, for comparisons)"),
    ("--max-new-tokens", ("FUNASR_NANO_MAX_NEW_TOKENS",), 512, int,
     "token limit per utterance (small values only for tests)"),
    ("--live-sessions", ("FUNASR_NANO_LIVE_SESSIONS",), 4, int,
     "live transcription sessions at a time (/v1/realtime and the page's Live tab together)"),
    ("--live-idle-seconds", ("FUNASR_NANO_LIVE_IDLE_SECONDS",), 60.0, float,
     "a live session that sends nothing for this long is closed"),
    ("--live-max-message-mb", ("FUNASR_NANO_LIVE_MAX_MESSAGE_MB",), 4.0, float,
     "largest /v1/realtime message in MB (larger: error event, close code 1009)"),
    ("--max-uploads", ("FUNASR_NANO_MAX_UPLOADS",), 16, int,
     "request bodies received at once on /v1/* and the page's upload route (more: HTTP 503)"),
    ("--max-uploads-per-client", ("FUNASR_NANO_MAX_UPLOADS_PER_CLIENT",), None, int,
     "of those, bodies received at once from one client address (default: half of "
     "--max-uploads; more: HTTP 503)"),
    ("--body-timeout", ("FUNASR_NANO_BODY_TIMEOUT",), 30.0, float,
     "longest pause in seconds while a request body arrives; after that long the body must "
     "also average 16 KB/s (slower: HTTP 408)"),
    ("--stop-timeout", ("FUNASR_NANO_STOP_TIMEOUT",), 15.0, float,
     "on SIGTERM, seconds that requests in flight get to finish; the rest get HTTP 503 "
     "(scripts/service.sh sets it from its STOP_TIMEOUT)"),
    ("--preload", ("FUNASR_NANO_PRELOAD",), False, bool,
     "start loading the model in the background right after startup instead of on first use"),
    ("--log-level", ("FUNASR_NANO_LOG_LEVEL",), "info", str, "debug, info, warning or error"),
    ("--log-format", ("FUNASR_NANO_LOG_FORMAT",), "text", str,
     "text, or json: one JSON object per line with the request id"),
    ("--alert-webhook", ("FUNASR_NANO_ALERT_WEBHOOK",), None, str,
     "compliance: live alerts are also POSTed here (JSON, HMAC-signed, retried; "
     "docs/compliance.md)"),
    ("--alert-webhook-secret", ("FUNASR_NANO_ALERT_WEBHOOK_SECRET",), None, str,
     "compliance: the HMAC-SHA256 key of the alert webhook's X-Compliance-Signature"),
    ("--bench-tokens", ("FUNASR_NANO_BENCH_TOKENS",), None, int,
     "benchmarks only: every sequence decodes exactly this many tokens, end tokens ignored"),
]


@dataclass
class Settings:
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 200.0
    max_audio_minutes: float = 60.0
    auth: str | None = None
    api_key: str | None = None
    batch_size: int = 8
    scheduler: str = "batch"
    max_new_tokens: int = 512
    live_sessions: int = 4
    live_idle_seconds: float = 60.0
    live_max_message_mb: float = 4.0
    max_uploads: int = 16
    max_uploads_per_client: int | None = None
    body_timeout: float = 30.0
    stop_timeout: float = 15.0
    preload: bool = False
    log_level: str = "info"
    log_format: str = "text"
    bench_tokens: int | None = None
    alert_webhook: str | None = None
    alert_webhook_secret: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_audio_seconds(self) -> float:
        return self.max_audio_minutes * 60.0

    @property
    def live_max_message_bytes(self) -> int:
        return int(self.live_max_message_mb * 1024 * 1024)

    @property
    def uploads_per_client(self) -> int:
        """Bodies received at once from one client address (default: half of --max-uploads)."""
        if self.max_uploads_per_client:
            return min(self.max_uploads_per_client, self.max_uploads)
        return max(1, self.max_uploads // 2)

    @property
    def auth_pair(self) -> tuple[str, str] | None:
        if not self.auth:
            return None
        user, _, password = self.auth.partition(":")
        return user, password

    def validate(self) -> None:
        if self.dtype not in (None, "fp32", "bf16", "int8", "float32", "bfloat16"):
            raise ValueError(f"--dtype must be fp32, bf16 or int8, not {self.dtype!r}")
        if self.auth is not None and (":" not in self.auth or not self.auth.split(":", 1)[0]):
            raise ValueError("--auth takes user:pass")
        for name in ("batch_size", "max_new_tokens", "port", "live_sessions",
                     "max_uploads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.bench_tokens is not None and self.bench_tokens < 1:
            raise ValueError("--bench-tokens must be at least 1")
        if self.scheduler not in ("batch", "serial"):
            raise ValueError(f"--scheduler must be batch or serial, not {self.scheduler!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"--log-format must be text or json, not {self.log_format!r}")
        if self.max_upload_mb <= 0 or self.max_audio_minutes <= 0:
            raise ValueError("--max-upload-mb and --max-audio-minutes must be positive")
        if self.live_idle_seconds <= 0 or self.live_max_message_mb <= 0:
            raise ValueError("--live-idle-seconds and --live-max-message-mb must be positive")
        if self.alert_webhook and not self.alert_webhook.startswith(("http://", "https://")):
            raise ValueError("--alert-webhook must be an http:// or https:// URL")
        if self.body_timeout <= 0 or self.stop_timeout < 0:
            raise ValueError("--body-timeout must be positive and --stop-timeout not negative")


def _truthy(value: str) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    # Flags default to None so that the environment can fill them in (parse_settings); --help
    # therefore prints the built-in default itself, not argparse's "(default: None)".
    # allow_abbrev=False: "--port" is never taken for "--po", nor "--lang" for "--language".
    p = argparse.ArgumentParser(
        prog="app.py", description="Fun-ASR-MLT-Nano speech recognition: web page and HTTP API "
        "on one port. Every flag has an environment variable (shown in brackets); a flag on the "
        "command line overrides it.", allow_abbrev=False)
    for flag, envs, default, typ, text in _FLAGS:
        dest = flag[2:].replace("-", "_")
        shown = "" if default is None or typ is bool else f" (default: {default})"
        help_text = f"{text}{shown} [{' or '.join(envs)}]".replace("%", "%%")
        if typ is bool:
            p.add_argument(flag, dest=dest, action="store_true", default=None, help=help_text)
        else:
            p.add_argument(flag, dest=dest, type=typ, default=None, help=help_text)
    return p


def parse_settings(argv=None, environ=None) -> Settings:
    """Settings from ``argv`` (default sys.argv[1:]) over ``environ`` (default os.environ)."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    values = {}
    for flag, envs, default, typ, _ in _FLAGS:
        dest = flag[2:].replace("-", "_")
        value = getattr(args, dest)
        if value is None:
            raw = next((env.get(n) for n in envs if env.get(n) not in (None, "")), None)
            if raw is not None:
                try:
                    value = _truthy(raw) if typ is bool else typ(raw)
                except ValueError as e:
                    raise SystemExit(f"app.py: bad value {raw!r} in the environment for "
                                     f"{flag}: {e}") from None
        values[dest] = default if value is None else value
    settings = Settings(**values)
    try:
        settings.validate()
    except ValueError as e:
        raise SystemExit(f"app.py: {e}") from None
    return settings


def flags_table() -> str:
    """The flags as a Markdown table (docs/deployment.md is checked against it)."""
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for flag, envs, default, typ, text in _FLAGS:
        shown = "off" if typ is bool else ("-" if default is None else default)
        rows.append(f"| `{flag}` | {', '.join(f'`{e}`' for e in envs)} | {shown} | {text} |")
    return "\n".join(rows)
