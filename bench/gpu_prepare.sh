#!/usr/bin/env bash
# Prepares what bench/gpu_check.sh needs on a GPU machine that cannot reach the network, in two
# git-ignored folders of the repository that the device tool carries:
#   .whl/  the wheels the engine needs beyond the GPU image's packages (torch, numpy, pyyaml,
#          tokenizers, tiktoken, huggingface_hub are there): kaldi-native-fbank, soundfile
#          (+ cffi, pycparser), soxr; the versions of this venv, for CPython 3.12 manylinux x86_64
#   .gpu/  assets/: the Qwen3 tokenizer's npm tarball (integrity-checked; tools/fetch_assets.py
#          unpacks it there); speech/: the shared clips (bench inputs and parity clips)
# Then: carry [".whl", ".gpu"], command "bash bench/gpu_check.sh", timeout_s 540.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# the checkout's packages (bench, tools), installed with pip install -e . or not
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SPEECH=${SPEECH_DATA:-../shared/data/speech}
WHEELS=$("$PY" bench/gpu_check.py --wheels)
rm -rf .whl .gpu
mkdir -p .whl .gpu/assets
for name in $WHEELS; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$name==$version"
done
"$PY" tools/fetch_assets.py --tarball .gpu/assets >/dev/null
cp -r "$SPEECH" .gpu/speech
chmod -R u+w .gpu/speech
ls -1 .whl
travel=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
extra=$(du -sb .whl .gpu | awk '{s += $1} END {print s}')
echo "tracked files $((travel / 1048576)) MiB + .whl/.gpu $((extra / 1048576)) MiB (limit 64 MiB)"
if [ $((travel + extra)) -gt $((62 * 1048576)) ]; then
    echo "too much to carry to the GPU machine" >&2
    exit 1
fi
