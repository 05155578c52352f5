# Fun-ASR-MLT-Nano speech recognition: the web page and the HTTP API on port 7860.
#
# Two images from this file, told apart by the TORCH build argument (the torch build inside):
#   docker build --build-arg TORCH=cpu   -t funasr-nano:cpu .    # CPU torch, ~2 GB
#   docker build --build-arg TORCH=cu130 -t funasr-nano:gpu .    # CUDA 13.0 torch, for --gpus all
#   docker run --gpus all -p 7860:7860 -v /path/to/Fun-ASR-MLT-Nano-2512:/models:ro funasr-nano:gpu
# The build checks that the torch it installed is the one TORCH names, whatever the index offers.
# README.md (Docker) has the rest; scripts/image/build.sh builds both without a Docker daemon.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- torch: the largest layer, first, from the index of the build TORCH names ---------------------
FROM ${PYTHON_IMAGE} AS torch

# cpu, or a CUDA build of PyTorch's index (cu130: CUDA 13.0, the build PyPI also ships).
ARG TORCH=cpu
ARG TORCH_VERSION=2.13.0
# Empty: pip's own configured index (a mirror); the TORCH check below still holds.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FUNASR_NANO_KERNEL_CACHE=/opt/kernels

COPY scripts/image/check_torch.py /tmp/check_torch.py
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi \
    && python /tmp/check_torch.py "$TORCH" \
    && rm /tmp/check_torch.py

# ---- kernels: the CPU decoding kernels, compiled once, here --------------------------------------
# Only this stage has the compiler. The cache key covers the sources, flags, torch and the Python
# environment, not the build machine's CPU (engine/kernels/build.py says why), so the final stage,
# with the same torch and Python, finds this build on any AVX2 CPU. Fails without a kernel.
FROM torch AS kernels
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++=4:12.2.* ninja-build=1.11.* \
    && rm -rf /var/lib/apt/lists/*
COPY engine/__init__.py /build/engine/__init__.py
COPY engine/kernels /build/engine/kernels
WORKDIR /build
RUN python -m engine.kernels \
    && rm -rf /opt/kernels/*/*.o /opt/kernels/*/.ninja_* /opt/kernels/*/build.ninja

# ---- the service ---------------------------------------------------------------------------------
FROM torch

ENV GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_TEMP_DIR=/tmp/gradio \
    HF_HOME=/cache/huggingface \
    MODELSCOPE_CACHE=/cache/modelscope \
    FUNASR_NANO_CACHE=/cache/funasr-nano \
    FUNASR_NANO_PREPARED_CACHE=/cache/funasr-nano/prepared \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Test-only packages (marked "# tests" in requirements.txt) stay out of the image. libgomp1: the
# kernels' OpenMP runtime (the compiler that brought it stays in the kernels stage).
COPY requirements.txt /tmp/requirements.txt
RUN grep -v -e "# tests" -e "# no-deps" /tmp/requirements.txt > /tmp/runtime.txt \
    && pip install -r /tmp/runtime.txt \
    && sed -n "s/ *# no-deps.*//p" /tmp/requirements.txt > /tmp/nodeps.txt \
    && pip install --no-deps -r /tmp/nodeps.txt \
    && rm /tmp/requirements.txt /tmp/runtime.txt /tmp/nodeps.txt \
    && apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 app \
    && useradd --create-home --uid 1000 --gid 1000 --shell /usr/sbin/nologin app \
    && mkdir -p /models /cache /tmp/gradio \
    && chown 1000:1000 /cache /tmp/gradio

# Root-owned and read-only for the app: the kernels are imported from here, never rebuilt.
COPY --from=kernels /opt/kernels /opt/kernels
COPY --chown=root:root . /app
WORKDIR /app
USER 1000:1000
# As the app's user, without a compiler: fails the build unless the kernels load from /opt/kernels.
RUN python -m engine.kernels

# /models: an official-layout model directory (config.yaml, model.pt, Qwen3-0.6B/, ...), mounted
# read-only. /cache: the Hugging Face / ModelScope caches when --model is a hub id, and the
# engine's prepared weights.
VOLUME ["/models", "/cache"]
EXPOSE 7860

# GET /health; its one line (docker inspect) says what runs where: the GPU's name and compute
# capability, each part's dtype, the decoder (scripts/healthcheck.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/app/scripts/healthcheck.py"]

ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD []
