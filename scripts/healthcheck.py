#!/usr/bin/env python3
"""The container's HEALTHCHECK: GET /health on the app's port and print one line saying what
runs where (``docker inspect --format '{{json .State.Health}}'`` shows it), e.g.

    ok: model loaded; cuda:0 (NVIDIA H200, compute capability 9.0): audio_encoder fp32,
    audio_adaptor fp32, llm bf16; decoder static

Exit 0 when the app answers ``"status": "ok"``, 1 (Docker's "unhealthy") when it does not
answer, or not ok. Standard library only, so each check is quick and light.

    python scripts/healthcheck.py          # port $GRADIO_SERVER_PORT (default 7860)
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request


def describe(health: dict) -> str:
    p = health.get("placement") or {}
    state = ("model loaded" if health.get("model_loaded") else
             "model loading" if health.get("loading") else "model not loaded yet")
    where = p.get("device") or health.get("device") or "?"
    about = ", ".join(x for x in (p.get("device_name"), p.get("capability") and
                                  f"compute capability {p['capability']}") if x)
    parts = ", ".join(f"{k} {v}" for k, v in (p.get("compute") or {}).items())
    line = f"ok: {state}; {where}" + (f" ({about})" if about else "")
    line += f": {parts}" if parts else f" ({health.get('dtype', '?')})"
    if p.get("decoder"):
        line += f"; decoder {p['decoder']}"
    if health.get("load_error"):
        line += f"; load error: {health['load_error'].splitlines()[0]}"
    return line


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('GRADIO_SERVER_PORT', '7860')}/health"
    try:
        with urllib.request.urlopen(url, timeout=8) as r:
            health = json.load(r)
    except Exception as e:  # noqa: BLE001 - any failure to answer is "unhealthy"
        print(f"unhealthy: {url}: {e}")
        return 1
    if health.get("status") != "ok":
        print(f"unhealthy: {url} says status {health.get('status')!r}")
        return 1
    print(describe(health))
    return 0


if __name__ == "__main__":
    sys.exit(main())
