# Fun-ASR-MLT-Nano speech recognition: web page + HTTP API on port 7860.
#
#   docker build -t funasr-nano .
#   docker run --gpus all -p 7860:7860 -v /path/to/Fun-ASR-MLT-Nano-2512:/models:ro funasr-nano
#
# The default torch wheel is the CUDA build (it also runs on CPU). For a smaller CPU-only image,
# pass PyTorch's CPU wheel index: docker build --build-arg TORCH_INDEX_URL=<cpu index url> ...
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_TEMP_DIR=/tmp/gradio \
    HF_HOME=/cache/huggingface \
    MODELSCOPE_CACHE=/cache/modelscope \
    FUNASR_NANO_KERNEL_CACHE=/opt/kernels \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /app

# torch first (the largest layer, and its own index when given), then the rest; test-only
# packages (marked "# tests" in requirements.txt) stay out of the image.
COPY requirements.txt /tmp/requirements.txt
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi \
    && grep -v "# tests" /tmp/requirements.txt > /tmp/runtime.txt \
    && pip install -r /tmp/runtime.txt \
    && rm /tmp/requirements.txt /tmp/runtime.txt

RUN groupadd --gid 1000 app \
    && useradd --create-home --uid 1000 --gid 1000 --shell /usr/sbin/nologin app \
    && mkdir -p /models /cache /tmp/gradio \
    && chown 1000:1000 /cache /tmp/gradio

COPY --chown=root:root . /app

# The CPU decoding kernels (engine/kernels/csrc) are compiled once here, not at every start.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/* \
    && (cd /app && python -m engine.kernels) \
    && chmod -R a+rX /opt/kernels

USER 1000:1000

# /models: an official-layout model directory (config.yaml, model.pt, Qwen3-0.6B/, ...), mounted
# read-only. /cache: the Hugging Face / ModelScope cache when --model is a hub id.
VOLUME ["/models", "/cache"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=8)"]

ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD []
