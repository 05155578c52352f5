"""CPU kernels: native sources (csrc/), their build (build.py), and the modules that use them:
packed bf16/int8 Linears (packed.py), fbgemm int8 mode (int8.py), one-token decoder-layer steps
(decode_step.py) and the screened exact greedy pick (exact_argmax.py)."""
from .build import avx512_kernels, kernels  # noqa: F401
