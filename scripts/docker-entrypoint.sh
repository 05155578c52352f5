#!/bin/sh
# Container entry point: app.py with the container's flags. A model directory mounted at /models
# is used unless FUNASR_NANO_MODEL or --model names another one; otherwise app.py picks the
# official model from the hub cache (/cache) or the bundled demo.
set -e
if [ -z "${FUNASR_NANO_MODEL:-}" ] && [ -f /models/config.yaml ]; then
    export FUNASR_NANO_MODEL=/models
fi
exec python /app/app.py "$@"
