"""Helpers for the image tests: which image is under test (scripts/image/build.sh builds it).
Its configuration and its containers: bench/_image.py (bench/container_speed.py runs them too)."""
from __future__ import annotations

import os
import shutil

from bench._image import Container, buildah, image_config  # noqa: F401  (the tests' names)
from tests._fixtures import missing

IMAGE_ENV = "FUNASR_NANO_TEST_IMAGE"


def image_name() -> str:
    """The image under test; without one the test fails under CI (which builds it first) and is
    skipped elsewhere, saying how to build it."""
    name = os.environ.get(IMAGE_ENV)
    why = None
    if not name:
        why = (f"{IMAGE_ENV} is not set: build the image with scripts/image/build.sh cpu, then "
               "`set -a; . ${TMPDIR:-/tmp}/funasr-nano-image/image.env; set +a`")
    elif shutil.which("buildah") is None:
        why = "buildah is not installed (scripts/image/build.sh installs it)"
    if why:
        missing(why)
    return name
