#!/usr/bin/env python3
"""Speed benchmark: this engine (model.py FunASRNano) against the reference (funasr 1.4.16).

    python bench/benchmark.py                                   # everything, full-size model
    python bench/benchmark.py --model-dir /tmp/full1 --cases 1x10s,8x10s --modes fp32,bf16
    python bench/benchmark.py --engines ours --modes fp32,bf16,int8 --repeats 5

What it does
  * Model: a random-weight directory in the official layout (same shapes, same files, same
    cost as the real checkpoint). ``--model-dir DIR`` reuses DIR, or builds it there with
    tools/make_random_model.py when it has no model.pt; without it the tool's cache is used
    (``--size full --seed 1``, built once per machine, ~40 s, 2 GB).
  * Inputs (decoded once by the parent, passed to every child as float32 arrays, so audio
    decoding is outside every timing): the English clips of the shared speech data
    concatenated (lhotse_librispeech_2412-153948-0000.flac first); ``1x10s`` is its first 10 s
    (= the first 10 s of that flac), ``1x30s`` its first 30 s, ``Nx10s`` N different 10 s
    windows spread evenly over it. Every sequence gets exactly ``--tokens`` (64) new tokens:
    ours with ``transcribe(..., ignore_eos=True)``, the reference with
    ``generate(..., max_length=T, llm_kwargs={"min_new_tokens": T})`` (passed to HF generate);
    both counts are checked.
  * One child process per (engine, mode): it imports, loads once (timed: ``load s``), warms up
    once, then serves "run case" requests, so its peak RSS (getrusage ru_maxrss) is that
    engine's alone. For each mode the two engines' children are alive together and are driven
    in turns (ours repeat 1, reference repeat 1, ours repeat 2, ...), so CPU noise from other
    work hits both alike. Medians over ``--repeats``.
  * A mode that fails to load (an unknown dtype, a missing kernel, an OOM) is reported in the
    table and the results, never fatal.

Per repeat of a case, in each engine (both timed the same way):
  frontend   the engine's own feature extraction for all N clips (ours: Frontend.batch; reference:
             funasr's extract_fbank with its WavFrontend, clip by clip as its generate() does)
  encoder    audio encoder + adaptor on those features (ours batched as transcribe() does;
             the reference clip by clip, as its generate() does)
  prefill    wall of the LLM generate call (ours: engine.batching.greedy_generate, reference:
             HF llm.generate) inside an end-to-end run with 1 new token
  decode     ms per decode step = (LLM generate wall with T tokens - with 1 token) / (T - 1),
             both from end-to-end runs; a step yields one token for each of the N sequences
  e2e        wall of transcribe() / AutoModel.generate() on the N arrays with T tokens each,
             as one batch (batch_size=N); RTF = e2e / audio seconds; tok/s = N*T / e2e
  floor      bytes of weights one decode step reads (decoder layers + final norm + lm_head as
             loaded in that mode, or the int8 copy that screens the greedy pick where ours has
             one) / memory bandwidth (a 1 GiB torch copy, (read+write)/time,
             measured in the same run with the same thread count); "x floor" = decode / floor
``vs ref`` = reference time / our time for the same mode (>1: we are faster); a mode the
reference lacks is compared with the reference's fastest mode on that case, and says which.

Results: a markdown table on stdout and, unless ``--no-save``, bench/results/<host>-<date>.md
and .json (``--results-dir`` elsewhere).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench._common import REPO, build_inputs, cer, loadavg, machine_info, median, parse_case

DEFAULT_CASES = "1x10s,1x30s,8x10s,32x10s"
REFERENCE_MODES = ("fp32", "bf16")
MARK = "@@BENCH@@ "  # prefix of the protocol lines on a child's stdout (funasr prints too)
GIB = 1024 ** 3


# =============================================================================== helpers
def peak_rss_bytes() -> int:
    import resource
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


# =============================================================================== inputs
# =============================================================================== model dir
def resolve_model_dir(args) -> Path:
    def complete(d: Path) -> bool:
        return all((d / f).is_file() for f in ("model.pt", "config.yaml", "Qwen3-0.6B/config.json"))

    if args.model_dir:
        d = Path(args.model_dir).expanduser().resolve()
        if complete(d):
            return d
        print(f"[bench] building a random-weight {args.size} model in {d} (seed {args.seed})",
              file=sys.stderr)
        subprocess.run([sys.executable, str(REPO / "tools/make_random_model.py"), "--out", str(d),
                        "--size", args.size, "--seed", str(args.seed)], check=True)
        return d
    from tools import make_random_model as mrm
    if hasattr(mrm, "cached_random_model"):
        print(f"[bench] random-weight {args.size} model (seed {args.seed}) from the tool's cache "
              "(built on first use)", file=sys.stderr)
        return Path(mrm.cached_random_model(args.size, args.seed, ctc=False))
    d = Path.home() / ".cache/funasr-nano-bench" / f"random-{args.size}-seed{args.seed}"
    if not complete(d):
        mrm.make_random_model(d, args.size, args.seed, False)
    return d


# =============================================================================== children
def _sync(device: str):
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def _mem(device: str) -> dict:
    m = {"peak_rss": peak_rss_bytes()}
    if device.startswith("cuda"):
        import torch
        m["cuda_peak"] = torch.cuda.max_memory_allocated()
    return m


def decode_weight_bytes(llm) -> int:
    """Bytes of the tensors one decode step reads: every decoder layer, the final norm and the
    lm_head (tied embeddings count once, as lm_head: a step reads only one embedding row), or
    the int8 copy the exact greedy pick screens with (engine/kernels/exact_argmax.py).
    Counted from the modules' state (parameters, buffers, packed quantized tensors), each
    storage once."""
    import torch
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor):
            if t.is_quantized:
                key = ("q", t.data_ptr())
                if key not in seen:
                    seen.add(key)
                    total += t.int_repr().nbytes if hasattr(t, "int_repr") else t.nbytes
                return
            key = (t.untyped_storage().data_ptr(), t.dtype)
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        elif isinstance(t, (tuple, list)):
            for x in t:
                add(x)

    inner = llm.model
    # every state dict stays alive until counted: int8 modules hand out fresh unpacked tensors,
    # and a freed one's address, reused by the next module's, would look "seen" (this undercounted
    # the int8 lm_head's 155 MB in runs before vm-20261202-1408)
    screen = getattr(llm, "exact_argmax", None)
    # with the screened greedy pick a step reads the lm_head's int8 copy (and a few rows of the
    # bf16 one), not the bf16 matrix
    head = [] if screen is not None else [llm.lm_head]
    states = [mod.state_dict(keep_vars=True) for mod in (inner.layers, inner.norm, *head)]
    for state in states:
        for v in state.values():
            add(v)
    if screen is not None:
        add(screen.tensors())
    return total


class Timer:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn, *a, **k):
        _sync(self.device)
        t0 = time.perf_counter()
        r = fn(*a, **k)
        _sync(self.device)
        return time.perf_counter() - t0, r


class OursRunner:
    def __init__(self, args):
        import torch
        import model as ours_mod
        self.torch, self.mod, self.device = torch, ours_mod, args.device
        self.timer = Timer(args.device)
        t0 = time.perf_counter()
        self.asr = ours_mod.FunASRNano.from_pretrained(args.model_dir, device=args.device,
                                                       dtype=args.mode)
        _sync(args.device)
        self.load_s = time.perf_counter() - t0
        self.llm_calls = []
        # time the decoder inside transcribe(): the dynamic loop (CPU) or the static one (CUDA)
        for name in ("greedy_generate", "static_greedy_generate"):
            if hasattr(ours_mod, name):
                setattr(ours_mod, name, self._timed(getattr(ours_mod, name)))

    def _timed(self, orig):
        def timed(*a, **k):
            dt, r = self.timer(orig, *a, **k)
            self.llm_calls.append(dt)
            return r
        return timed

    def weight_bytes(self):
        return decode_weight_bytes(self.asr.llm)

    def e2e(self, waves, tokens):
        self.llm_calls.clear()
        dt, res = self.timer(self.asr.transcribe, list(waves), batch_size=len(waves),
                             max_new_tokens=tokens, ignore_eos=True)
        errors = [r["error"] for r in res if r.get("error")]
        if errors:
            raise RuntimeError("; ".join(errors))
        counts = [r.get("num_tokens") for r in res]
        self.texts = [r.get("text", "") for r in res]
        return dt, (sum(self.llm_calls) if self.llm_calls else None), counts

    def frontend(self, waves):
        return self.timer(self.asr.frontend.batch, list(waves))

    def encoder(self, feats):
        x, lens = feats
        x, lens = x.to(self.asr.device), lens.to(self.asr.device)

        def run():
            with self.torch.inference_mode():
                enc, enc_lens = self.asr.audio_encoder(x, lens)
                return self.asr.audio_adaptor(enc, enc_lens)
        return self.timer(run)[0]


class ReferenceRunner:
    def __init__(self, args):
        import contextlib
        import io

        import torch
        import funasr  # noqa: F401  (fills the registry)
        from funasr import AutoModel
        from funasr.models.fun_asr_nano.model import FunASRNano as Builtin
        from funasr.register import tables
        from funasr.utils.load_utils import extract_fbank
        if args.mode not in REFERENCE_MODES:
            raise ValueError(f"the reference has no mode {args.mode!r} "
                             f"(it has {', '.join(REFERENCE_MODES)})")
        self.torch, self.extract_fbank, self.device = torch, extract_fbank, args.device
        self.timer = Timer(args.device)
        self.bf16 = args.mode == "bf16"
        tables.model_classes["FunASRNano"] = Builtin  # funasr's own class, never remote code
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # one "miss key" print per CTC tensor
            self.auto = AutoModel(model=str(args.model_dir),
                                  device="cuda:0" if args.device.startswith("cuda") else "cpu",
                                  ncpu=args.threads, disable_update=True, disable_pbar=True,
                                  log_level="WARNING", frontend_conf={"dither": 0.0})
        _sync(args.device)
        self.load_s = time.perf_counter() - t0
        self.model = self.auto.model
        assert type(self.model) is Builtin, type(self.model)
        self.frontend_mod = self.auto.kwargs["frontend"]
        self.llm_calls, self.llm_tokens = [], []
        llm = self.model.llm
        orig = llm.generate

        def timed(*a, **k):
            dt, out = self.timer(orig, *a, **k)
            self.llm_calls.append(dt)
            self.llm_tokens.append(int(out.shape[1]))  # inputs_embeds only: new tokens only
            return out
        llm.generate = timed  # instance attribute: survives the reference's self.llm.to(dtype)

    def weight_bytes(self):
        return decode_weight_bytes(self.model.llm)  # after warm-up: in the mode's dtype

    def e2e(self, waves, tokens):
        torch = self.torch
        self.llm_calls.clear()
        self.llm_tokens.clear()
        inputs = [torch.from_numpy(w) for w in waves]
        kw = dict(batch_size=len(inputs), max_length=tokens,
                  llm_kwargs={"min_new_tokens": tokens})
        if self.bf16:
            kw["bf16"] = True
        dt, res = self.timer(self.auto.generate, input=inputs, **kw)
        if len(res) != len(waves):
            raise RuntimeError(f"reference returned {len(res)} results for {len(waves)} inputs")
        counts = [t for t in self.llm_tokens for _ in range(len(waves) // len(self.llm_tokens))]
        self.texts = [r.get("text", "") for r in res]
        return dt, (sum(self.llm_calls) if self.llm_calls else None), counts

    def frontend(self, waves):
        torch = self.torch

        def run():
            return [self.extract_fbank(torch.from_numpy(w), data_type="sound",
                                       frontend=self.frontend_mod, is_final=True) for w in waves]
        return self.timer(run)

    def encoder(self, feats):
        torch, m = self.torch, self.model
        dev = next(m.audio_encoder.parameters()).device
        feats = [(s.to(dev), l.to(dev)) for s, l in feats]

        def run():
            with torch.no_grad():
                for speech, lens in feats:  # the encoder scales its input in place: clone
                    enc, enc_lens = m.audio_encoder(speech.clone(), lens)
                    m.audio_adaptor(enc, enc_lens)
        return self.timer(run)[0]


def _exit_with_parent() -> None:
    """A child whose parent died (killed, Ctrl-C) stops at once instead of finishing its run."""
    import threading
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1)
            if os.getppid() != parent:
                os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def child_main(args) -> None:
    """One (engine, mode): load, warm up, then answer JSON requests on stdin."""
    import numpy as np
    import torch

    def send(obj):
        sys.stdout.write(MARK + json.dumps(obj) + "\n")
        sys.stdout.flush()

    _exit_with_parent()
    torch.set_num_threads(args.threads)
    try:
        runner = (OursRunner if args.child == "ours" else ReferenceRunner)(args)
        mem_load = _mem(args.device)
        inputs = np.load(args.inputs)
        first = [inputs[k] for k in sorted(inputs.files) if k.startswith("warmup")]
        t0 = time.perf_counter()
        runner.e2e(first, 4)  # warm-up (the reference also settles its LLM dtype here)
        warm_s = time.perf_counter() - t0
        ready = {"event": "ready", "load_s": runner.load_s, "warmup_s": warm_s,
                 "weight_bytes": runner.weight_bytes(), "threads": torch.get_num_threads(),
                 "mem_after_load": mem_load}
    except BaseException as e:  # noqa: BLE001
        send({"event": "error", "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()})
        return
    send(ready)
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            case, tokens = req["case"], req["tokens"]
            waves = [inputs[f"{case}_{i}"] for i in range(req["n"])]
            # e2e with 1 token first: also warms this batch shape for the runs after it
            e2e1, llm1, c1 = runner.e2e(waves, 1)
            fe_s, feats = runner.frontend(waves)
            enc_s = runner.encoder(feats)
            e2e, llm, counts = runner.e2e(waves, tokens)
            steps = tokens - 1
            if llm is not None and llm1 is not None:
                decode = (llm - llm1) / steps if steps else None
            else:
                decode = (e2e - e2e1) / steps if steps else None
            send({"event": "result", "frontend_s": fe_s, "encoder_s": enc_s,
                  "prefill_s": llm1, "e2e1_s": e2e1, "decode_step_s": decode, "e2e_s": e2e,
                  "llm_s": llm, "token_counts": counts, "tokens_ok": all(c == tokens for c in counts)
                  and all(c == 1 for c in c1), "texts": runner.texts, "loadavg": loadavg(),
                  **_mem(args.device)})
        except BaseException as e:  # noqa: BLE001
            send({"event": "error", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()})


def bandwidth_main(args) -> None:
    """Memory bandwidth with the benchmark's thread count: a 1 GiB torch copy, (read + write)
    bytes / time; also a read-only pass (sum) for reference. Median of 5."""
    import torch
    torch.set_num_threads(args.threads)
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    n = int(args.bw_bytes) // 4
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copies, reads = [], []
    for _ in range(5):
        _sync(dev)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(dev)
        copies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        float(src.sum())
        reads.append(time.perf_counter() - t0)
    nbytes = n * 4
    sys.stdout.write(MARK + json.dumps({"copy_gbps": 2 * nbytes / statistics.median(copies) / 1e9,
                                        "read_gbps": nbytes / statistics.median(reads) / 1e9,
                                        "bytes": nbytes}) + "\n")


class Child:
    """A child process speaking the MARK protocol; stderr goes to a log file."""

    def __init__(self, engine, mode, args, inputs_path, logdir):
        self.engine, self.mode = engine, mode
        self.log_path = Path(logdir) / f"{engine}-{mode}.log"
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--mode", mode,
               "--model-dir", str(args.model_dir), "--inputs", str(inputs_path),
               "--device", args.device, "--threads", str(args.threads)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=str(REPO), env=env)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.proc.wait()
        return {"event": "error", "error": f"child exited with code {self.proc.returncode}"
                f"{' (killed: out of memory?)' if self.proc.returncode in (-9, 137) else ''}: "
                + self.tail()}

    def tail(self, n=6) -> str:
        try:
            self.log.flush()
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                     if ln.strip()]
            return " | ".join(lines[-n:])
        except OSError:
            return ""

    def request(self, **req) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        return self.read()

    def close(self, kill: bool = False):
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure_bandwidth(args) -> dict | None:
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "bandwidth",
                        "--device", args.device, "--threads", str(args.threads),
                        "--bw-bytes", str(args.bw_bytes)],
                       capture_output=True, text=True, cwd=str(REPO))
    for line in r.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    print(f"[bench] bandwidth measurement failed: {r.stderr[-500:]}", file=sys.stderr)
    return None


# =============================================================================== parent
def our_modes() -> list[str]:
    """The dtypes/modes the engine offers: model.MODES if it defines one, else the distinct
    entries of model.DTYPES (aliases such as float32/bfloat16 dropped)."""
    try:
        import model as ours_mod
    except Exception as e:  # noqa: BLE001
        print(f"[bench] cannot import model.py ({e}); modes default to fp32,bf16", file=sys.stderr)
        return ["fp32", "bf16"]
    modes = getattr(ours_mod, "MODES", None)
    if modes:
        return list(modes)
    seen, out = set(), []
    for name, value in getattr(ours_mod, "DTYPES", {"fp32": 0, "bf16": 1}).items():
        key = repr(value)
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def funasr_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("funasr") is not None


def run_all(args, inputs_path, cases, engines, modes, logdir, checkpoint=None,
            before_mode=None) -> dict:
    """Per mode: start each engine's child (one at a time, so loads do not overlap), then run
    the cases, repeats alternating between the engines."""
    entries = {}  # (engine, mode) -> {"ready":..., "runs": {case: [result, ...]}, "error":...}
    for mode in modes:
        if before_mode:
            before_mode(mode)
        children = []
        for engine in engines:
            key = f"{engine}/{mode}"
            ent = entries[key] = {"engine": engine, "mode": mode, "runs": {}, "errors": []}
            if engine == "reference" and mode not in REFERENCE_MODES:
                ent["skipped"] = f"the reference has no mode {mode}"
                continue
            print(f"[bench] loading {key} ...", file=sys.stderr, flush=True)
            child = Child(engine, mode, args, inputs_path, logdir)
            ready = child.read()
            if ready["event"] != "ready":
                ent["load_error"] = ready["error"]
                ent["traceback"] = ready.get("traceback")
                print(f"[bench] {key} failed to load: {ready['error']}", file=sys.stderr)
                child.close()
                continue
            ent["ready"] = ready
            print(f"[bench] {key} loaded in {ready['load_s']:.1f} s", file=sys.stderr, flush=True)
            children.append((ent, child))
            if args.no_interleave:  # one engine at a time: run it now, then drop it
                run_cases(args, cases, [(ent, child)], lambda: checkpoint and checkpoint(entries))
                child.close()
                children.pop()
        try:
            run_cases(args, cases, children, lambda: checkpoint and checkpoint(entries))
        except BaseException:
            for _, child in children:
                child.close(kill=True)
            raise
        for _, child in children:
            child.close()
        if checkpoint:
            checkpoint(entries)
    return entries


def run_cases(args, cases, children, checkpoint=None):
    for case in cases:
        n, _ = parse_case(case)
        for rep in range(args.repeats):
            for ent, child in children:
                if child.proc.poll() is not None:
                    continue
                t0 = time.time()
                res = child.request(cmd="run", case=case, n=n, tokens=args.tokens)
                runs = ent["runs"].setdefault(case, [])
                if res["event"] == "result":
                    runs.append(res)
                    print(f"[bench] {ent['engine']}/{ent['mode']} {case} #{rep + 1}: "
                          f"e2e {res['e2e_s']:.2f} s (load avg {res['loadavg']})",
                          file=sys.stderr, flush=True)
                else:
                    ent["errors"].append(f"{case}: {res['error']}")
                    print(f"[bench] {ent['engine']}/{ent['mode']} {case} failed after "
                          f"{time.time() - t0:.0f} s: {res['error']}", file=sys.stderr)
                if checkpoint:  # results so far on disk: a killed run keeps what it measured
                    checkpoint()


def summarize(entries, cases, args, bandwidth) -> list[dict]:
    bw = bandwidth.get("copy_gbps") if bandwidth else None
    rows = []
    for ent in entries.values():
        ready = ent.get("ready") or {}
        for case in cases:
            n, seconds = parse_case(case)
            runs = ent["runs"].get(case, [])
            row = {"case": case, "mode": ent["mode"], "engine": ent["engine"],
                   "repeats": len(runs)}
            if ent.get("skipped"):
                continue
            if ent.get("load_error"):
                row["error"] = "load failed: " + ent["load_error"]
                rows.append(row)
                continue
            errs = [e for e in ent["errors"] if e.startswith(case + ":")]
            if not runs:
                if not errs:  # not run (yet): a partial result
                    continue
                row["error"] = errs[0]
                rows.append(row)
                continue
            med = {k: median([r.get(k) for r in runs]) for k in
                   ("frontend_s", "encoder_s", "prefill_s", "decode_step_s", "e2e_s")}
            wbytes = ready.get("weight_bytes")
            floor = wbytes / (bw * 1e9) if (wbytes and bw) else None
            row.update(
                load_s=ready.get("load_s"),
                peak_rss_gb=max(r["peak_rss"] for r in runs) / GIB,
                cuda_peak_gb=(max(r["cuda_peak"] for r in runs) / GIB
                              if "cuda_peak" in runs[0] else None),
                frontend_ms=med["frontend_s"] * 1e3, encoder_ms=med["encoder_s"] * 1e3,
                prefill_ms=None if med["prefill_s"] is None else med["prefill_s"] * 1e3,
                decode_ms=None if med["decode_step_s"] is None else med["decode_step_s"] * 1e3,
                floor_ms=None if floor is None else floor * 1e3,
                weight_bytes=wbytes, e2e_s=med["e2e_s"],
                rtf=med["e2e_s"] / (n * seconds), tok_s=n * args.tokens / med["e2e_s"],
                tokens_ok=all(r["tokens_ok"] for r in runs),
                e2e_all=[r["e2e_s"] for r in runs],
                loadavg=[r["loadavg"] for r in runs],
                texts=runs[-1].get("texts"))
            if floor and row["decode_ms"]:
                row["x_floor"] = row["decode_ms"] / row["floor_ms"]
            if errs:
                row["error"] = "; ".join(errs)
            rows.append(row)
    # ratios: reference time / our time, same case, same mode (else the reference's fastest)
    ref = {(r["case"], r["mode"]): r for r in rows
           if r["engine"] == "reference" and "e2e_s" in r}
    for r in rows:
        if r["engine"] != "ours" or "e2e_s" not in r:
            continue
        base = ref.get((r["case"], r["mode"]))
        r["ref_mode"] = r["mode"]
        if base is None:  # a mode the reference lacks: against its fastest mode on this case
            cands = [x for (c, _), x in ref.items() if c == r["case"]]
            if cands:
                base = min(cands, key=lambda x: x["e2e_s"])
                r["ref_mode"] = base["mode"]
        if base:
            r["speedup_e2e"] = base["e2e_s"] / r["e2e_s"]
            if base.get("decode_ms") and r.get("decode_ms"):
                r["speedup_decode"] = base["decode_ms"] / r["decode_ms"]
            if base.get("encoder_ms") and r.get("encoder_ms"):
                r["speedup_encoder"] = base["encoder_ms"] / r["encoder_ms"]
    order = {c: i for i, c in enumerate(cases)}
    mode_order = {m: i for i, m in enumerate(dict.fromkeys(e["mode"] for e in entries.values()))}
    rows.sort(key=lambda r: (order[r["case"]], mode_order[r["mode"]],
                             r["engine"] != "ours"))
    return rows


COLUMNS = [("case", "case"), ("mode", "mode"), ("engine", "engine"), ("load s", "load_s"),
           ("peak RSS GB", "peak_rss_gb"), ("frontend ms", "frontend_ms"),
           ("encoder ms", "encoder_ms"), ("prefill ms", "prefill_ms"),
           ("decode ms/step", "decode_ms"), ("floor ms", "floor_ms"), ("x floor", "x_floor"),
           ("e2e s", "e2e_s"), ("RTF", "rtf"), ("tok/s", "tok_s"),
           ("vs ref e2e", "speedup_e2e"), ("vs ref decode", "speedup_decode")]


def fmt(key, row) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key in ("case", "mode", "engine"):
        return str(v)
    if key in ("speedup_e2e", "speedup_decode"):
        s = f"{v:.2f}x"
        return s + (f" (vs ref {row['ref_mode']})" if row.get("ref_mode") != row["mode"] else "")
    if key == "x_floor":
        return f"{v:.2f}"
    if key == "rtf":
        return f"{v:.3f}"
    if key in ("e2e_s", "load_s", "peak_rss_gb"):
        return f"{v:.2f}"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def markdown(rows, meta) -> str:
    head = "| " + " | ".join(h for h, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" if k in ("case", "mode", "engine") else "---:"
                         for _, k in COLUMNS) + "|"
    lines = [head, sep]
    notes = []
    for r in rows:
        if "e2e_s" not in r:
            cells = [r["case"], r["mode"], r["engine"], "failed"] + ["-"] * (len(COLUMNS) - 4)
            notes.append(f"- {r['engine']} {r['mode']} {r['case']}: {r.get('error')}")
        else:
            cells = [fmt(k, r) for _, k in COLUMNS]
            if not r["tokens_ok"]:
                notes.append(f"- {r['engine']} {r['mode']} {r['case']}: generated token counts "
                             f"were not exactly {meta['tokens']}")
            if r.get("error"):
                notes.append(f"- {r['engine']} {r['mode']} {r['case']}: {r['error']}")
        lines.append("| " + " | ".join(cells) + " |")
    for s in meta.get("skipped", []):
        notes.append(f"- {s}")
    return "\n".join(lines + ([""] + ["Errors and notes:"] + notes if notes else []))


def floor_lines(rows, meta) -> str:
    """The memory floor of each engine and mode: bytes one decode step reads / bandwidth."""
    bw = (meta.get("bandwidth") or {}).get("copy_gbps")
    seen, lines = set(), []
    for r in rows:
        key = (r["engine"], r["mode"])
        if key in seen or not r.get("weight_bytes"):
            continue
        seen.add(key)
        floor = f", floor {r['weight_bytes'] / (bw * 1e9) * 1e3:.1f} ms" if bw else ""
        lines.append(f"- {r['engine']} {r['mode']}: {r['weight_bytes'] / 1e6:.0f} MB read per "
                     f"decode step{floor}")
    if not lines:
        return ""
    return (f"Memory floor (bytes of weights read per decode step / {bw or float('nan'):.1f} "
            "GB/s copy bandwidth):\n\n" + "\n".join(lines))


def agreement(rows) -> str:
    """Every mode's texts (64 forced tokens per sequence, last repeat) against ours in fp32:
    sequences with the same text, and the character error rate between the two."""
    base = {r["case"]: r["texts"] for r in rows
            if r["engine"] == "ours" and r["mode"] == "fp32" and r.get("texts")}
    lines = ["| case | engine | mode | same text as ours fp32 | CER vs ours fp32 |",
             "|---|---|---|---:|---:|"]
    for r in rows:
        ref = base.get(r["case"])
        if not ref or not r.get("texts") or (r["engine"], r["mode"]) == ("ours", "fp32"):
            continue
        same = sum(a == b for a, b in zip(ref, r["texts"]))
        rate = cer(ref, r["texts"])
        r["same_as_fp32"], r["cer_vs_fp32"] = f"{same}/{len(ref)}", rate
        lines.append(f"| {r['case']} | {r['engine']} | {r['mode']} | {same}/{len(ref)} | "
                     f"{rate * 100:.1f}% |")
    if len(lines) == 2:
        return ""
    return ("Agreement (outputs of the timed runs; random weights give nearly flat logits, so "
            "any rounding flips tokens far more often than trained weights would):\n\n"
            + "\n".join(lines))


def header(meta) -> str:
    m = meta["machine"]
    bw = meta.get("bandwidth") or {}
    dev = m.get("gpu") or f"{m.get('cpu')} ({m.get('cpu_count')} logical CPUs, " \
                          f"{', '.join(m.get('cpu_flags', [])) or 'no AVX flags found'})"
    la = meta.get("loadavg", {})
    lines = [
        f"Machine: {m['host']}: {dev}, {m.get('ram_gib', '?')} GiB RAM, {m['platform']}; "
        f"torch {m.get('torch')}, funasr {m.get('funasr', '-')}, "
        f"transformers {m.get('transformers', '-')}.",
        f"Run: {meta['started']} .. {meta['finished']}; device {meta['device']}, "
        f"{meta['threads']} threads; model {meta['model_dir']}; {meta['tokens']} new tokens per "
        f"sequence (end token ignored); medians of {meta['repeats']} repeats, engines in turns.",
        f"Memory bandwidth (1 GiB torch copy, read+write): "
        f"{bw.get('copy_gbps', float('nan')):.1f} GB/s (read-only sum: "
        f"{bw.get('read_gbps', float('nan')):.1f} GB/s), best of {len(bw.get('samples', []))} "
        "probes (before each mode and at the end); floor = decode weight bytes / copy bandwidth.",
        f"Load average (1/5/15 min): start {la.get('start')}, end {la.get('end')}.",
    ]
    return "\n".join(lines)


def merge_results(paths, out_stem=None) -> str:
    """Recompute the table from saved JSON results (this version's summary rules), merging
    several runs: a later file replaces the same (engine, mode, case) of earlier ones."""
    import types
    docs = [json.loads(Path(p).read_text()) for p in paths]
    meta = dict(docs[0]["meta"])
    entries, cases, bws, skipped = {}, [], [], []
    for d in docs:
        for key, ent in d["load"].items():
            runs = dict(entries[key]["runs"]) if key in entries else {}
            runs.update(d["runs"].get(key, {}))  # per case: a later run replaces that case only
            entries[key] = dict(ent, runs=runs)
        cases += [c for c in d["meta"]["cases"] if c not in cases]
        bws += (d["meta"].get("bandwidth") or {}).get("samples", [])
        skipped += [x for x in d["meta"].get("skipped", []) if x not in skipped]
        if d["meta"]["tokens"] != meta["tokens"]:
            raise SystemExit(f"{paths}: runs with different --tokens cannot be merged")
    meta.update(cases=cases, skipped=skipped, merged_from=[str(p) for p in paths],
                started=min(d["meta"]["started"] for d in docs),
                finished=max(d["meta"]["finished"] for d in docs),
                repeats=max(d["meta"]["repeats"] for d in docs),
                modes=list(dict.fromkeys(e["mode"] for e in entries.values())),
                loadavg={"start": docs[0]["meta"]["loadavg"].get("start"),
                         "end": docs[-1]["meta"]["loadavg"].get("end"),
                         "per_run": [d["meta"]["loadavg"] for d in docs]})
    meta["bandwidth"] = ({k: max(b[k] for b in bws) for k in ("copy_gbps", "read_gbps")}
                         | {"samples": bws}) if bws else None
    rows = summarize(entries, cases, types.SimpleNamespace(tokens=meta["tokens"]),
                     meta["bandwidth"])
    text = header(meta) + "\n\n" + markdown(rows, meta)
    floors = floor_lines(rows, meta)
    text += "\n\n" + floors if floors else ""
    agree = agreement(rows)
    text += "\n\n" + agree if agree else ""
    if out_stem:
        Path(out_stem).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out_stem}.md").write_text(
            f"# Benchmark {Path(out_stem).name}\n\nMerged from: "
            + ", ".join(f"`{Path(p).name}`" for p in paths) + f"\n\n{text}\n")
        Path(f"{out_stem}.json").write_text(json.dumps(
            {"meta": meta, "rows": rows,
             "load": {k: {kk: v for kk, v in e.items() if kk != "runs"}
                      for k, e in entries.items()},
             "runs": {k: e["runs"] for k, e in entries.items()}}, indent=1))
    return text


def _quietly(fn, *a, **k):
    try:
        fn(*a, **k)
    except Exception as e:  # noqa: BLE001 - a failed checkpoint write must not stop the run
        print(f"[bench] could not write intermediate results: {e}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model-dir", help="official-layout model dir (built there if missing)")
    p.add_argument("--size", choices=("full", "tiny"), default="full",
                   help="random model size when building (default full)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--modes", default="all",
                   help="comma list (fp32,bf16,int8,...); 'all' = every mode the engine offers "
                        "plus the reference's (fp32,bf16)")
    p.add_argument("--engines", default="ours,reference",
                   help="comma list of ours,reference (reference skipped without funasr)")
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"default {DEFAULT_CASES}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64, help="new tokens per sequence, exactly")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads in every child (reference ncpu); default: all CPUs")
    p.add_argument("--no-interleave", action="store_true",
                   help="one engine resident at a time (less memory, no turns)")
    p.add_argument("--results-dir", default=str(REPO / "bench/results"))
    p.add_argument("--no-save", action="store_true", help="print only, write no result files")
    p.add_argument("--json", help="also write the JSON results to this path")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only rebuild the table from saved results (several runs merged; later "
                        "files win for the same engine and mode); --out-stem to save it")
    p.add_argument("--out-stem", help="with --merge: write OUT_STEM.md and OUT_STEM.json")
    p.add_argument("--bw-bytes", type=float, default=GIB, help=argparse.SUPPRESS)
    # child-process plumbing
    p.add_argument("--child", choices=("ours", "reference", "bandwidth"), help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    return p


def _stop_on_sigterm() -> None:
    import signal

    def on_term(signum, _frame):
        print(f"[bench] stopped by signal {signum}; results so far are in the result files",
              file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)


def plan(args, p: argparse.ArgumentParser) -> tuple[list[str], list[str], list[str], list[str]]:
    """The cases, engines and modes to run, and what is skipped (and why)."""
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        parse_case(c)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = set(engines) - {"ours", "reference"}
    if bad:
        p.error(f"unknown engine(s): {', '.join(sorted(bad))}")
    skipped = []
    if "reference" in engines and not funasr_available():
        engines.remove("reference")
        skipped.append("reference: funasr is not installed, only this engine was measured")
        print(f"[bench] {skipped[-1]}", file=sys.stderr)
    if args.modes == "all":
        modes = our_modes() if "ours" in engines else []
        modes += [m for m in REFERENCE_MODES if m not in modes and "reference" in engines]
    else:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "reference" in engines:
        skipped += [f"reference {m}: the reference has no such mode" for m in modes
                    if m not in REFERENCE_MODES]
    return cases, engines, modes, skipped


def write_results(meta: dict, args, cases: list[str], stem: Path, entries, bws, logdir,
                  partial: bool) -> str:
    """The table (and, unless --no-save, the .md and .json result files) from what has run so far."""
    # The best sample: other work on the machine only ever lowers what a probe sees, and
    # the floor is what the hardware allows.
    meta["bandwidth"] = ({k: max(b[k] for b in bws) for k in ("copy_gbps", "read_gbps")}
                         | {"samples": bws}) if bws else None
    meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    meta["loadavg"]["end"] = loadavg()
    meta["partial"] = partial
    rows = summarize(entries, cases, args, meta["bandwidth"])
    text = header(meta) + "\n\n" + markdown(rows, meta)
    floors = floor_lines(rows, meta)
    text += "\n\n" + floors if floors else ""
    agree = agreement(rows)
    text += "\n\n" + agree if agree else ""
    logs = {k: (Path(logdir) / f"{k.replace('/', '-')}.log").read_text(errors="replace")
            [-4000:] for k, e in entries.items() if e.get("load_error") or e.get("errors")}
    result = {"meta": meta, "rows": rows,
              "load": {k: {kk: v for kk, v in e.items() if kk != "runs"}
                       for k, e in entries.items()},
              "runs": {k: e["runs"] for k, e in entries.items()}, "child_logs": logs}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.no_save:
        stem.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{stem}.md").write_text(
            f"# Benchmark {stem.name}{' (partial: the run was still going or was stopped)' if partial else ''}\n\n"
            f"Command: `python bench/{meta['command']}`\n\n{text}\n")
        Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    return text


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    args.threads = args.threads or os.cpu_count() or 1
    if args.merge:
        print(merge_results(args.merge, args.out_stem))
        return
    if args.device == "auto":
        try:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            args.device = "cpu"
    if args.child == "bandwidth":
        return bandwidth_main(args)
    if args.child:
        return child_main(args)
    _stop_on_sigterm()
    cases, engines, modes, skipped = plan(args, p)

    args.model_dir = str(resolve_model_dir(args))
    started = _dt.datetime.now()
    meta = {"started": started.isoformat(timespec="seconds"), "device": args.device,
            "threads": args.threads, "model_dir": args.model_dir, "tokens": args.tokens,
            "repeats": args.repeats, "cases": cases, "modes": modes, "engines": engines,
            "machine": machine_info(args.device), "loadavg": {"start": loadavg()},
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None
                                                             else sys.argv[1:])),
            "skipped": skipped}
    host = re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname()) or "host"
    stem = Path(args.results_dir) / f"{host}-{started.strftime('%Y%m%d-%H%M')}"

    def finish(entries, bws, logdir, partial):
        return write_results(meta, args, cases, stem, entries, bws, logdir, partial)

    with tempfile.TemporaryDirectory(prefix="funasr-bench-") as tmp:
        import numpy as np
        waves, meta["inputs"] = build_inputs(cases)
        arrays = {f"{case}_{i}": w for case, ws in waves.items() for i, w in enumerate(ws)}
        arrays["warmup_0"] = build_inputs(["1x10s"])[0]["1x10s"][0]
        inputs_path = Path(tmp) / "inputs.npz"
        np.savez(inputs_path, **arrays)
        bws = []

        def probe(_mode=None):
            b = measure_bandwidth(args)
            if b:
                bws.append(b | {"loadavg": loadavg()})
        entries = run_all(args, inputs_path, cases, engines, modes, tmp,
                          checkpoint=lambda ent: _quietly(finish, ent, bws, tmp, partial=True),
                          before_mode=probe)
        probe()
        text = finish(entries, bws, tmp, partial=False)
    print(text)
    if not args.no_save:
        print(f"\n[bench] wrote {stem}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
