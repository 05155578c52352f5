"""python -m engine.kernels: compile the CPU kernels now (the install step, an image build) and
say what this machine gets; exit status 1 when they cannot be built. ``--json`` prints the
state as one JSON line (the server's background build reads it)."""
import argparse
import json
import logging
import sys

from . import loader

p = argparse.ArgumentParser(prog="python -m engine.kernels", description=__doc__.split("\n")[0])
p.add_argument("--json", action="store_true", help="print the state as one JSON line")
args = p.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")
k = loader.kernels()
s = loader.state()
if args.json:
    print(json.dumps({**s, "detail": loader.detail()}), flush=True)
if k is None:
    if not args.json:
        print(f"CPU kernels: {s['state']}: {s['reason']}; the engine runs plain PyTorch",
              file=sys.stderr)
    sys.exit(1)
if not args.json:
    from .build import build_dir
    print(f"CPU kernels: ready at {build_dir()} ({s['paths']})")
