"""Exit 1 unless the installed torch is the build TARGET names: ``cpu`` (no CUDA) or ``cuXYZ``
(CUDA X.YZ, e.g. cu130 -> 13.0, cu128 -> 12.8).

The image build runs this right after installing torch, so a CPU image never carries a
multi-GB CUDA build (what a plain ``pip install torch`` gets from PyPI) and a GPU image never
ends up with a CPU one, whichever index or mirror the wheel came from.

    python scripts/image/check_torch.py cpu
"""
import re
import sys

import torch


def wanted_cuda(target: str) -> str | None:
    if target == "cpu":
        return None
    m = re.fullmatch(r"cu(\d+)(\d)", target)
    if not m:
        sys.exit(f"TORCH={target!r}: expected cpu or cuXYZ (cu130 for CUDA 13.0)")
    return f"{int(m[1])}.{m[2]}"


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    want, got = wanted_cuda(target), torch.version.cuda
    if got != want:
        print(f"torch {torch.__version__} is built for CUDA {got or 'none'}, but TORCH={target} "
              f"wants {want or 'a CPU-only build'}: give TORCH_INDEX_URL the index of that build",
              file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}: the {target} build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
