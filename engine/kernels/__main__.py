"""python -m engine.kernels: compile the CPU kernels now (the install step, an image build) and
say what this machine gets; exit status 1 when they cannot be built."""
import logging
import sys
import time

from .build import build_dir, kernels

logging.basicConfig(level=logging.INFO, format="%(message)s")
t0 = time.perf_counter()
k = kernels()
if k is None:
    sys.exit("CPU kernels: not available (see the warning above); the engine runs plain PyTorch")
print(f"CPU kernels: ready in {time.perf_counter() - t0:.1f} s at {build_dir()} "
      f"(AVX-512: {k.has_avx512()}, VNNI: {k.has_vnni()})")
