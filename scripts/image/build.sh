#!/usr/bin/env bash
# Build the project's image (Dockerfile) on a machine with no Docker daemon and no Docker Hub, as
# CI does: buildah, daemonless, in its own storage; the base image made from Debian's packages.
#
#   scripts/image/build.sh [cpu|gpu]          # default cpu
#
# With Docker, `docker build --build-arg TORCH=cpu -t funasr-nano:cpu .` does the same (README).
# Here:
#   - buildah (chroot isolation) keeps its images under $IMAGE_WORK/storage, not in /var/lib;
#   - python:3.11-slim-bookworm, when that storage lacks it, is stood in for by an image made with
#     mmdebstrap from this machine's Debian sources: Debian's python3.11 in a virtualenv at
#     /usr/local (so `python` and `pip` are where the official image has them) with its headers;
#   - pip inside the build gets this machine's certificate bundle and, for the CPU image, its
#     local wheel folders (pip's find-links: the CPU torch) by read-only bind mounts that leave
#     nothing in the image; torch then comes from pip's configured index, and the Dockerfile's
#     check still refuses a torch that is not the target's build;
#   - --format docker: buildah's default OCI format drops HEALTHCHECK.
# It ends by writing $IMAGE_WORK/image.env (the image's name and the storage settings), which
# tests/test_image.py reads:   set -a; . "$IMAGE_WORK/image.env"; set +a; pytest tests/test_image.py
#
# Environment: IMAGE_WORK (default ${TMPDIR:-/tmp}/funasr-nano-image), IMAGE (default
# localhost/funasr-nano:TARGET), TORCH_INDEX_URL (default: pip's own index), NEW_BASE=1 remakes
# the base image.
set -euo pipefail

TARGET=${1:-cpu}
case "$TARGET" in
  cpu) TORCH=cpu ;;
  gpu) TORCH=cu130 ;;   # PyPI's torch 2.13.0 is the CUDA 13.0 build
  *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac
SRC=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${IMAGE_WORK:-${TMPDIR:-/tmp}/funasr-nano-image}
IMAGE=${IMAGE:-localhost/funasr-nano:$TARGET}
BASE=docker.io/library/python:3.11-slim-bookworm
mkdir -p "$WORK/logs"
say() { printf '== %s  %s\n' "$(date +%T)" "$*"; }
t0=$(date +%s)

# ---- tools: Debian's buildah, mmdebstrap, and uidmap (buildah's user namespaces) ----------------
missing=()
for pkg in buildah mmdebstrap uidmap; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- storage of our own: overlay where the kernel has it, vfs (slower, bigger) otherwise --------
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf BUILDAH_ISOLATION=chroot
if [ ! -f "$CONTAINERS_STORAGE_CONF" ]; then
  driver=vfs; grep -qw overlay /proc/filesystems && driver=overlay
  printf '[storage]\ndriver = "%s"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' \
    "$driver" "$WORK" "$WORK" > "$CONTAINERS_STORAGE_CONF"
fi
buildah info >/dev/null

# ---- base image: python:3.11-slim-bookworm, or its stand-in -------------------------------------
if [ "${NEW_BASE:-0}" = 1 ] || ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  say "base image: mmdebstrap bookworm (log: $WORK/logs/base.log)"
  sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  rm -f "$WORK/base.tar"
  # Like debian:bookworm-slim: no recommends, no docs, man pages or locales (copyrights stay).
  # merged-usr hook: without it mmdebstrap pulls usrmerge and perl. libpython3.11-dev: Python.h,
  # which torch's cpp_extension compiles the kernels against (the official image has it too).
  mmdebstrap --variant=apt --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=ca-certificates,netbase,tzdata,python3,python3-venv,libpython3.11-dev \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" python3 -m venv /usr/local' \
    --customize-hook='chroot "$1" /usr/local/bin/pip --version' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/tmp/* "$1"/var/log/apt/* "$1"/usr/lib/python3.11/config-3.11-x86_64-linux-gnu/*.a' \
    bookworm "$WORK/base.tar" "$sources" > "$WORK/logs/base.log" 2>&1 \
    || { tail -20 "$WORK/logs/base.log"; exit 1; }
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$WORK/base.tar" /
  buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd '["python3"]' "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
  rm -f "$WORK/base.tar"
fi
t1=$(date +%s)

# ---- pip settings for the RUN steps (bind mounts: nothing of them stays in the image) -----------
cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}
links=""
if [ "$TARGET" = cpu ]; then   # the GPU image must not see a local CPU torch
  links=${PIP_FIND_LINKS:-$(pip3 config get global.find-links 2>/dev/null || true)}
fi
mounts=(-v "$cert:/etc/ssl/build-ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")
{
  printf '[global]\ncert = /etc/ssl/build-ca.crt\ndefault-timeout = 180\n'
  [ -n "$links" ] && printf 'find-links = %s\n' "$links"
} > "$WORK/pip.conf"
for d in $links; do [ -d "$d" ] && mounts+=(-v "$d:$d:ro"); done

# ---- build ---------------------------------------------------------------------------------------
say "buildah bud $IMAGE (TORCH=$TORCH; log: $WORK/logs/build-$TARGET.log)"
# --pull=never: the base is local. --network host: apt and pip reach their registries.
# TORCH_INDEX_URL (environment) empty, the default here: pip's configured index (see above)
# instead of PyTorch's own, which only the machines with its host on their network reach.
set +e
buildah bud --isolation chroot --pull=never --layers --network host --format docker \
  "${mounts[@]}" --build-arg TORCH="$TORCH" --build-arg TORCH_INDEX_URL="${TORCH_INDEX_URL-}" \
  -t "$IMAGE" "$SRC" > "$WORK/logs/build-$TARGET.log" 2>&1
rc=$?
set -e
grep -E '^(STEP|CPU kernels|torch .*build)' "$WORK/logs/build-$TARGET.log" || true
[ $rc = 0 ] || { echo "build failed ($rc):"; tail -30 "$WORK/logs/build-$TARGET.log"; exit 1; }
t2=$(date +%s)

printf 'FUNASR_NANO_TEST_IMAGE=%s\nCONTAINERS_STORAGE_CONF=%s\nBUILDAH_ISOLATION=chroot\n' \
  "$IMAGE" "$CONTAINERS_STORAGE_CONF" > "$WORK/image.env"
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
say "built $IMAGE ($size): base $((t1 - t0)) s, build $((t2 - t1)) s; settings in $WORK/image.env"
