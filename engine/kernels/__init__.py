"""CPU kernels: native sources (csrc/), their build (build.py) and state (loader.py), and the
modules that use them: packed bf16/int8 Linears (packed.py), fbgemm int8 mode (int8.py),
one-token decoder-layer steps (decode_step.py) and the screened exact greedy pick
(exact_argmax.py)."""
from .loader import avx512_kernels, kernels, start_background_build, state  # noqa: F401
