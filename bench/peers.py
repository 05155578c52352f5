#!/usr/bin/env python3
"""Speed against the peers: this engine against llama.cpp (decoder) and sherpa-onnx (end to end)
on the same weights.

    python bench/peers.py                          # full-size random model, 3 repeats
    python bench/peers.py --repeats 5 --modes int8
    python bench/peers.py --peers sherpa --modes fp32,int8
    python bench/peers.py --size tiny --dry-run    # seconds: the plumbing only (CI)

What it does
  * Model: the random-weight checkpoint of bench/benchmark.py (tools/make_random_model.py,
    ``--size full --seed 1``; the test fixture ``cached_random_model("full", 1)``).
  * llama.cpp: the llama.cpp that the ``llama-cpp-python`` sdist (pinned below, fetched from
    PyPI with pip) vendors (0c1e570), configured with cmake (native CPU, no GPU, OpenMP) and
    built with ninja under ``nice -n 19``, 2 jobs, into .cache/peers/ (never committed): its
    library only (libllama + ggml), driven by bench/llama_step.cpp, a ~100-line copy of the
    timing loop of llama.cpp's tools/batched-bench without that tool's dependency on llama.cpp's
    "common" library (half the build). ``--llama-step PATH`` takes an already built driver.
  * GGUF: the checkpoint's ``llm.*`` tensors written as a Hugging Face Qwen3 folder (the
    model's own config.json and tokenizer) and converted with the sdist's own
    ``convert_hf_to_gguf.py`` to F32, BF16 and Q8_0 (cached beside the build).
  * Pairs: our fp32 / bf16 / int8 against llama.cpp's F32 / BF16 / Q8_0.
  * One run, interleaved: per repeat, our child (resident, loaded once) runs the workload,
    then llama_step runs the same one, so other work on the machine hits both
    alike; medians over ``--repeats``.
  * Workload (both sides): N sequences (1 and 8) of a ``--prompt`` (150) token prompt of random
    tokens, prefilled together, then ``--tokens`` (64) decode steps, each a token for every
    sequence. llama_step times the prefill and the generation steps as batched-bench does
    (``-npp 150 -ntg 64 -npl 1,8``, random tokens, synchronised decode calls); ours: the loop of ``engine.batching.greedy_generate``
    (its BatchDecoder) on the prompts' embeddings with ``ignore_eos``, timed inside: prefill =
    ``add`` (prompts in, first token picked), decode ms per step = the T - 1 ``step`` calls / (T - 1).
  * Peak RSS: ours from getrusage in the child (the whole model: audio encoder included, which
    llama.cpp does not load); llama.cpp's from wait4() on its process.
  * Memory floor: bytes one decode step reads (ours: decode_weight_bytes of benchmark.py;
    llama.cpp: the GGUF's tensor bytes, its tied embedding counted once as the output matrix)
    over the memory bandwidth (benchmark.py's 1 GiB torch copy, same threads, best probe):
    "x floor". A probe runs between every two turns, and "x read floor" divides each turn's
    step by its bytes at the read-only bandwidth (a torch sum of the same GiB) of the probes
    on either side of that turn: a decode step only reads, and the 2-core EPYC VM's bandwidth
    moves between about 30 and 54 GB/s within minutes, so a floor from the run's best probe
    alone says more about when the turns ran than about the kernels.

  * sherpa-onnx (``--peers sherpa``): the pinned wheel's Fun-ASR-Nano runtime
    (``OfflineRecognizer.from_funasr_nano``) on an ONNX export of the same checkpoint made by
    bench/sherpa_export.py (its docstring: layout, faithfulness, int8), cached in
    .cache/peers/sherpa/. Pairs: our fp32 / int8 against the fp32 / int8 export. End to end,
    the 1 x 10 s and 8 x 10 s clips of benchmark.py, ``--tokens`` tokens per clip on both
    sides (ours ``ignore_eos``; the export bans the same two stop tokens): wall time of
    ``transcribe`` against stream creation + ``decode_streams`` (it decodes the streams one
    by one), each side in its own resident child, in turns; peak RSS of each child. Before
    timing, once per export, sherpa_export.check: encoder+adaptor output against ours, texts.

Cells give both values and ours / peer: for ms lower is better (ratio < 1: ours faster); for
tok/s higher is better (ratio > 1: ours faster); for RSS lower is better.

Results: a markdown table on stdout and, unless ``--no-save``, bench/results/<host>-peers-<date>.md
and .json. A peer that cannot be built or run here is reported in the table with the reason;
the rest of the run goes on.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

from bench import benchmark as B  # helpers: machine info, bandwidth probe, weight bytes

REPO = Path(__file__).resolve().parents[1]

LLAMA_CPP_PYTHON = "0.3.36"  # its sdist vendors llama.cpp 0c1e570 (the measurement)
SHERPA_ONNX = "2.0.1"        # requirements-dev.txt pins the same wheel
E2E_CASES = ("1x10s", "8x10s")
SHERPA_MODES = ("fp32", "int8")
CACHE = REPO / ".cache/peers"
PAIRS = {"fp32": "F32", "bf16": "BF16", "int8": "Q8_0"}  # our mode -> GGUF type
MARK = B.MARK


# =============================================================================== llama.cpp
def llama_src(cache: Path) -> Path:
    """The llama.cpp tree vendored by the pinned llama-cpp-python sdist (downloaded once)."""
    root = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    src = root / "vendor/llama.cpp"
    if (src / "CMakeLists.txt").is_file():
        return src
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(cache)],
                       check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(cache, filter="data")
    return src


# ggml's native build uses AMX tiles for Q8_0 where the CPU lists them, and a VM may list them
# without letting a guest run them (this project's Sapphire Rapids VM: SIGILL on `tilezero` in
# ggml's AMX Q8_0 kernel, although the kernel granted the tile permission). There llama.cpp is
# built for the same CPU without AMX: its AVX-512 kernels, VNNI and BF16 included.
NO_AMX = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
          "-DGGML_F16C=ON", "-DGGML_BMI2=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON",
          "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON"]


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def llama_build_dir(cache: Path) -> Path:
    return cache / ("build-noamx" if "amx_int8" in _cpu_flags() else "build")


def llama_build(cache: Path, jobs: int = 2) -> Path:
    """Path of the llama_step driver (bench/llama_step.cpp) linked against libllama and ggml
    as built from llama_src() (target ``llama`` only: not llama.cpp's "common" library);
    rebuilt when the driver's source is newer than the binary."""
    build = llama_build_dir(cache)
    native = NO_AMX if build.name == "build-noamx" else ["-DGGML_NATIVE=ON"]
    driver_src = REPO / "bench/llama_step.cpp"
    binary = build / "bin/llama_step"
    if binary.is_file() and binary.stat().st_mtime >= driver_src.stat().st_mtime:
        return binary
    src = llama_src(cache)
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    if not (build / "build.ninja").is_file():
        subprocess.run(nice + ["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja",
                               "-DCMAKE_BUILD_TYPE=Release", *native,
                               "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                               "-DBUILD_SHARED_LIBS=OFF", "-DGGML_OPENMP=ON"],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(nice + ["ninja", "-C", str(build), f"-j{jobs}", "llama"], check=True,
                   stdout=subprocess.DEVNULL)
    libs = [next(build.rglob(name)) for name in
            ("libllama.a", "libggml.a", "libggml-cpu.a", "libggml-base.a")]
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(nice + ["g++", "-O2", "-std=c++17", "-I", str(src / "include"),
                           "-I", str(src / "ggml/include"), str(driver_src), "-o", str(binary),
                           *map(str, libs), "-fopenmp", "-lpthread", "-ldl", "-lm"],
                   check=True)
    return binary


def export_hf_decoder(model_dir: Path, out: Path) -> Path:
    """The checkpoint's Qwen3 decoder as a Hugging Face folder (config, tokenizer, safetensors
    of the llm.* tensors as stored, bf16), the input of llama.cpp's converter."""
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from safetensors.torch import save_file
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in (model_dir / "Qwen3-0.6B").iterdir():
        shutil.copy(f, tmp / f.name)
    state = torch.load(model_dir / "model.pt", map_location="cpu", mmap=True)["state_dict"]
    tensors = {k[len("llm."):]: v.contiguous() for k, v in state.items() if k.startswith("llm.")}
    cfg = json.loads((tmp / "config.json").read_text())
    if cfg.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)  # tied: the converter writes token_embd once
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tmp.rename(out)
    return out


def ensure_gguf(model_dir: Path, cache: Path, gtype: str) -> Path:
    name = model_dir.name
    out = cache / "gguf" / f"{name}-{gtype}.gguf"
    if out.is_file():
        return out
    hf = export_hf_decoder(model_dir, cache / "gguf" / f"{name}-hf")
    src = llama_src(cache)
    tmp = out.with_suffix(".tmp")
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"))  # the converter's own gguf-py
    r = subprocess.run(["nice", "-n", "19", sys.executable, str(src / "convert_hf_to_gguf.py"),
                        str(hf), "--outtype", gtype.lower(), "--outfile", str(tmp)],
                       env=env, capture_output=True, text=True, check=False)  # logs every tensor
    if r.returncode:
        raise RuntimeError(f"convert_hf_to_gguf.py --outtype {gtype.lower()} failed: "
                           + " | ".join(r.stderr.strip().splitlines()[-4:]))
    tmp.rename(out)
    return out


def gguf_step_bytes(path: Path) -> int:
    """Bytes of the tensors a decode step reads: all but the token embedding (one row), plus
    the output matrix, which is the token embedding when tied."""
    from gguf import GGUFReader   # PyPI's gguf, the version the pinned sdist vendors
    r = GGUFReader(str(path))
    names = {t.name: int(t.n_bytes) for t in r.tensors}
    total = sum(v for k, v in names.items() if k != "token_embd.weight")
    if "output.weight" not in names:
        total += names.get("token_embd.weight", 0)
    return total


def run_llama(binary: Path, gguf: Path, prompt: int, tokens: int, batches: list[int],
              threads: int) -> dict:
    """One llama_step run; {N: {prefill_tok_s, decode_ms}} and its peak RSS."""
    cmd = [str(binary), str(gguf), str(threads), str(prompt), str(tokens),
           ",".join(map(str, batches))]
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        # wait4, not Popen.wait: it also gives this process's own peak RSS
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    res = {}
    for line in (out + "\n" + err).splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_pp"' in line:
            d = json.loads(line)
            res[int(d["pl"])] = {"prefill_tok_s": d["speed_pp"],
                                 "decode_ms": d["t_tg"] / d["tg"] * 1e3}
    if proc.returncode or not res:
        raise RuntimeError(f"llama_step failed (exit {proc.returncode}): "
                           + " | ".join(err.strip().splitlines()[-4:]))
    return {"by_n": res, "peak_rss": ru.ru_maxrss * 1024}


# =============================================================================== ours
def _send(obj) -> None:
    """One message of a child to this script (B.Child reads the lines marked MARK)."""
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _send_error(e: BaseException) -> None:
    _send({"event": "error", "error": f"{type(e).__name__}: {e}",
           "traceback": traceback.format_exc()})


def _serve(handle) -> None:
    """A child's request loop: each line of stdin is a JSON request, answered with
    ``{"event": "result", **handle(request)}`` or the error; {"cmd": "quit"} ends it."""
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            _send({"event": "result", **handle(req)})
        except BaseException as e:  # noqa: BLE001  (reported to the parent, which goes on)
            _send_error(e)


def child_main(args) -> None:
    """Our engine in one mode: load once, then answer {"n": N} with the workload's timings."""
    import torch
    B._exit_with_parent()
    torch.set_num_threads(args.threads)
    try:
        import model as ours_mod
        from engine.batching import BatchDecoder
        t0 = time.perf_counter()
        asr = ours_mod.FunASRNano.from_pretrained(args.model_dir, device="cpu", dtype=args.mode)
        load_s = time.perf_counter() - t0
        llm, eos = asr.llm, asr.tokenizer.im_end
        gen = torch.Generator().manual_seed(0)
        vocab = llm.model.embed_tokens.weight.shape[0]
        ids = torch.randint(0, min(vocab, 150000), (max(args.batches), args.prompt),
                            generator=gen)
        with torch.inference_mode():
            prompts = [llm.embed(ids[i]) for i in range(ids.shape[0])]

        def run(n, t):
            """(prefill s, decode s per step) of one greedy_generate-equivalent call: the
            decoder's own prefill (add: prompts in, first token picked), then t - 1 steps."""
            with torch.inference_mode():
                dec = BatchDecoder(llm, eos, (), rows=n)
                t0 = time.perf_counter()
                seqs = dec.add(prompts[:n], t, True, stop_loops=False)
                t1 = time.perf_counter()
                while dec.active:
                    dec.step()
                t2 = time.perf_counter()
            counts = [len(q.generation().tokens) for q in seqs]
            if counts != [t] * n:
                raise RuntimeError(f"generated {counts} tokens, expected {t} each")
            return t1 - t0, (t2 - t1) / (t - 1)
        run(1, 2)  # warm-up
        _send({"event": "ready", "load_s": load_s, "weight_bytes": B.decode_weight_bytes(llm)})
    except BaseException as e:  # noqa: BLE001
        return _send_error(e)

    def handle(req):
        by_n = {}
        for n in req["batches"]:
            prefill_s, step_s = run(n, args.tokens)
            by_n[n] = {"prefill_tok_s": n * args.prompt / prefill_s, "decode_ms": step_s * 1e3}
        return {"by_n": by_n, "peak_rss": B.peak_rss_bytes()}
    _serve(handle)


class OursChild(B.Child):
    """A child of this script (B.Child's protocol): ``kind`` "decoder" (child_main), "e2e"
    (ours end to end) or "sherpa" (e2e_child_main)."""

    def __init__(self, mode, args, logdir, kind="decoder", extra=()):
        self.engine, self.mode = ("sherpa" if kind == "sherpa" else "ours"), mode
        self.log_path = Path(logdir) / f"peers-{kind}-{mode}.log"
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--mode", mode,
               "--model-dir", str(args.model_dir), "--threads", str(args.threads),
               "--prompt", str(args.prompt), "--tokens", str(args.tokens),
               "--batches", ",".join(map(str, args.batches)), *extra]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=str(REPO), env=env)


# =============================================================================== end to end
def e2e_child_main(args) -> None:
    """One side end to end, loaded once: ours (model.py transcribe, ``ignore_eos``) or
    sherpa-onnx's recognizer on the export in ``--export``; answers {"case", "n"} with the wall
    time of decoding those clips (``--tokens`` tokens each), the texts and the peak RSS."""
    import numpy as np
    import torch
    B._exit_with_parent()
    torch.set_num_threads(args.threads)
    inputs = np.load(args.inputs)
    try:
        t0 = time.perf_counter()
        if args.child == "sherpa":
            import sherpa_onnx

            from bench.sherpa_export import recognizer_args
            rec = sherpa_onnx.OfflineRecognizer.from_funasr_nano(
                **recognizer_args(Path(args.export), args.mode), num_threads=args.threads,
                max_new_tokens=args.tokens)

            def decode(waves):
                streams = []
                for w in waves:
                    st = rec.create_stream()
                    st.accept_waveform(16000, w)
                    streams.append(st)
                rec.decode_streams(streams)  # the runtime decodes them one after the other
                return [(st.result.text, len(st.result.tokens)) for st in streams]
        else:
            import model as ours_mod
            asr = ours_mod.FunASRNano.from_pretrained(args.model_dir, device="cpu",
                                                      dtype=args.mode)

            def decode(waves):
                res = asr.transcribe(list(waves), batch_size=len(waves),
                                     max_new_tokens=args.tokens, ignore_eos=True)
                errors = [r["error"] for r in res if r.get("error")]
                if errors:
                    raise RuntimeError("; ".join(errors))
                return [(r["text"], r["num_tokens"]) for r in res]
        load_s = time.perf_counter() - t0
        decode([inputs["warmup"]])
        _send({"event": "ready", "load_s": load_s})
    except BaseException as e:  # noqa: BLE001
        return _send_error(e)

    def handle(req):
        waves = [inputs[f"{req['case']}_{i}"] for i in range(req["n"])]
        t0 = time.perf_counter()
        out = decode(waves)
        return {"wall_s": time.perf_counter() - t0, "texts": [t for t, _ in out],
                "tokens": [n for _, n in out], "peak_rss": B.peak_rss_bytes(),
                "loadavg": B.loadavg()}
    _serve(handle)


def prepare_sherpa(args, modes, model_dir: Path, cache: Path, notes: list) -> dict:
    """{mode: export folder} for the modes sherpa-onnx pairs with (fp32, int8), exported (once)
    in a child process, and the faithfulness check of the fp32 export (once, kept beside it as
    check.json) noted; a failure is noted and the sherpa side left out."""
    want = [m for m in modes if m in SHERPA_MODES]
    if not want:
        notes.append(f"sherpa-onnx: not measured: it pairs with {', '.join(SHERPA_MODES)} only")
        return {}
    try:
        from importlib.metadata import version
        have = version("sherpa-onnx")
        if have != SHERPA_ONNX:
            raise RuntimeError(f"sherpa-onnx {have} is installed, this script pins {SHERPA_ONNX} "
                               f"(pip install sherpa-onnx=={SHERPA_ONNX})")
        base = cache / "sherpa" / model_dir.name
        cmd = [sys.executable, "-m", "bench.sherpa_export", "--model-dir", str(model_dir),
               "--out", str(base / "fp32")] + (["--int8", str(base / "int8")]
                                               if "int8" in want else [])
        print(f"[peers] sherpa-onnx: ONNX export of {model_dir.name} (cached in {base}) ...",
              file=sys.stderr, flush=True)
        r = subprocess.run(["nice", "-n", "19"] + cmd, cwd=str(REPO), capture_output=True,
                           text=True, check=False)
        if r.returncode:
            raise RuntimeError("bench/sherpa_export.py failed: "
                               + " | ".join(r.stderr.strip().splitlines()[-4:]))
        folders = {m: base / m for m in want}
        notes.append(_sherpa_check(base / "fp32", model_dir, args))
        return folders
    except Exception as e:  # noqa: BLE001  (the peer is reported missing; the rest goes on)
        notes.append(f"sherpa-onnx: not measured: {type(e).__name__}: {e}")
        print(f"[peers] {notes[-1]}", file=sys.stderr)
        return {}


def _sherpa_check(fp32: Path, model_dir: Path, args) -> str:
    """sherpa_export.check on the first benchmark clip, run once per export (check.json)."""
    out = fp32 / "check.json"
    if not out.is_file() or "runtime_equals_graphs" not in out.read_text():
        from bench._common import FIRST_CLIP, speech_dir
        clip = speech_dir() / "en" / FIRST_CLIP
        r = subprocess.run([sys.executable, "-m", "bench.sherpa_export", "--model-dir",
                            str(model_dir), "--out", str(fp32), "--check", str(clip),
                            "--tokens", str(args.tokens), "--threads", str(args.threads)],
                           cwd=str(REPO), capture_output=True, text=True, check=False)
        if r.returncode:
            return "sherpa-onnx export check failed: " + " | ".join(
                r.stderr.strip().splitlines()[-3:])
        out.write_text(r.stdout)
    c = json.loads(out.read_text())
    enc, yes = c["encoder"], {True: "yes", False: "NO"}
    return (f"sherpa-onnx fp32 export, checked on the first benchmark clip ({c['clip_seconds']} "
            f"s, {c['tokens']} tokens): encoder+adaptor output {enc['rows'][0]} x "
            f"{enc['rows'][1]}, max |ONNX - ours fp32| {enc['max_abs_diff']:.2g} "
            f"({enc['rel_diff']:.2g} of max |ours|); the exported graphs (onnxruntime) on our "
            f"features give our tokens: {yes[c['graphs_equal_ours']]}; on sherpa-onnx's features "
            f"with its decode positions they give its text: {yes[c['runtime_equals_graphs']]}; "
            f"sherpa-onnx's text equals ours: {yes[c['text']['equal']]} (first differing token: "
            f"{c['first_differing_token']}; its front end and positions, docs/peers.md)")


def measure_e2e(mode, args, logdir: Path, inputs_path: Path, export: Path, notes: list) -> dict:
    """Ours and sherpa-onnx end to end in ``mode``, each in its resident child, in turns."""
    ent = {"ours": {}, "sherpa": {}}
    kids = {}
    for side, kind, extra in (("ours", "e2e", ()), ("sherpa", "sherpa", ("--export",
                                                                          str(export)))):
        child = OursChild(mode, args, logdir, kind, ("--inputs", str(inputs_path), *extra))
        ready = child.read()
        if ready["event"] != "ready":
            notes.append(f"{side} {mode} end to end: failed to load: {ready['error']}")
            child.close()
            continue
        ent[f"{side}_load_s"] = ready["load_s"]
        kids[side] = child
    try:
        for case in args.e2e_cases:
            n, _ = B.parse_case(case)
            for rep in range(args.repeats):
                for side, child in kids.items():
                    res = child.request(cmd="run", case=case, n=n)
                    if res["event"] == "result":
                        ent[side].setdefault(case, []).append(res)
                    else:
                        notes.append(f"{side} {mode} {case}: {res['error']}")
                print(f"[peers] {mode} end to end {case} repeat {rep + 1}/{args.repeats} done "
                      f"(load avg {B.loadavg()})", file=sys.stderr, flush=True)
    finally:
        for child in kids.values():
            child.close()
    return ent


# =============================================================================== table
def _by(run, n):
    return run["by_n"].get(n, run["by_n"].get(str(n)))


def summarize(results, args, bw_gbps) -> list[dict]:
    """Per (mode, N): medians of both sides; each side's floor, its bytes per step over the
    best copy probe's bandwidth (``bw_gbps``); and each side's step over its read floor, per
    turn (the read probes next to that turn: measure_mode), median over the turns."""
    rows = []
    for mode, ent in results.items():
        ours, peer = ent.get("ours", []), ent.get("llama", [])
        for n in args.batches:
            row = {"mode": mode, "peer": f"llama.cpp {PAIRS[mode]}", "n": n}
            for side, runs in (("ours", ours), ("peer", peer)):
                runs = [r for r in runs if _by(r, n)]
                if runs:
                    row[f"{side}_decode_ms"] = statistics.median(_by(r, n)["decode_ms"]
                                                                 for r in runs)
                    row[f"{side}_prefill_tok_s"] = statistics.median(
                        _by(r, n)["prefill_tok_s"] for r in runs)
                    rss = [r["peak_rss"] for r in runs if r.get("peak_rss")]
                    row[f"{side}_rss_gb"] = max(rss) / B.GIB if rss else None
                    wb = ent.get(f"{side}_weight_bytes")
                    xr = [_by(r, n)["decode_ms"] / (wb / (r["read_gbps"] * 1e9) * 1e3)
                          for r in runs if wb and r.get("read_gbps")]
                    if xr:
                        row[f"{side}_x_read_floor"] = statistics.median(xr)
                    row[f"{side}_turns"] = [(_by(r, n)["decode_ms"], r.get("read_gbps"))
                                            for r in runs]
            for side in ("ours", "peer"):
                wb = ent.get(f"{side}_weight_bytes")
                if wb and bw_gbps:
                    row[f"{side}_floor_ms"] = wb / (bw_gbps * 1e9) * 1e3
                    row[f"{side}_step_mb"] = wb / 1e6
            rows.append(row)
    return rows


def _cell(a, b, fmt="{:.1f}"):
    if a is None and b is None:
        return "-"
    s = f"{fmt.format(a) if a is not None else '-'} / {fmt.format(b) if b is not None else '-'}"
    if a is not None and b:
        s += f" (**{a / b:.2f}**)"
    return s


def markdown(rows) -> str:
    head = ("| mode (ours / peer) | N | decode ms/step, ours / peer (ratio) | "
            "x floor (ours) | x read floor, ours / peer | prefill tok/s, ours / peer (ratio) | "
            "peak RSS GB, ours / peer (ratio) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]

    def fmt(x):
        return "-" if x is None else f"{x:.2f}"
    for r in rows:
        xf = (r["ours_decode_ms"] / r["ours_floor_ms"]
              if r.get("ours_decode_ms") and r.get("ours_floor_ms") else None)
        lines.append(
            f"| {r['mode']} / {r['peer']} | {r['n']} | "
            f"{_cell(r.get('ours_decode_ms'), r.get('peer_decode_ms'))} | {fmt(xf)} | "
            f"{fmt(r.get('ours_x_read_floor'))} / {fmt(r.get('peer_x_read_floor'))} | "
            f"{_cell(r.get('ours_prefill_tok_s'), r.get('peer_prefill_tok_s'), '{:.0f}')} | "
            f"{_cell(r.get('ours_rss_gb'), r.get('peer_rss_gb'), '{:.2f}')} |")
    floors = []
    seen = set()
    for r in rows:
        if r["mode"] in seen:
            continue
        seen.add(r["mode"])
        for side, label in (("ours", f"ours {r['mode']}"), ("peer", r["peer"])):
            if r.get(f"{side}_step_mb"):
                floors.append(f"- {label}: {r[f'{side}_step_mb']:.0f} MB read per decode step, "
                              f"floor {r[f'{side}_floor_ms']:.1f} ms at the best copy probe")
    turns = []  # each turn's step next to its read probe: how much the bandwidth explains
    for r in rows:
        parts = [f"{'ours' if side == 'ours' else r['peer']} "
                 + ", ".join(f"{ms:.1f}" + (f" @ {gb:.0f}" if gb else "")
                             for ms, gb in r[f"{side}_turns"])
                 for side in ("ours", "peer") if r.get(f"{side}_turns")]
        if parts:
            turns.append(f"- {r['mode']}, N = {r['n']}: " + "; ".join(parts))
    turns = (["", "Each turn in order, decode ms/step @ its read probe's GB/s:", ""] + turns
             if turns else [])
    return "\n".join(lines + ["", "Memory floor (bytes per step / bandwidth):", ""] + floors
                     + turns)


def summarize_e2e(e2e, args) -> list[dict]:
    """Per (mode, case): medians of the wall times, the children's peak RSS, the token counts
    per clip and how many clips got the same text on both sides."""
    rows = []
    for mode, ent in e2e.items():
        for case in args.e2e_cases:
            row = {"mode": mode, "peer": f"sherpa-onnx {mode}", "case": case}
            for side in ("ours", "sherpa"):
                runs = ent.get(side, {}).get(case, [])
                if runs:
                    row[f"{side}_wall_s"] = statistics.median(r["wall_s"] for r in runs)
                    row[f"{side}_rss_gb"] = max(r["peak_rss"] for r in runs) / B.GIB
                    row[f"{side}_tokens"] = sorted({t for r in runs for t in r["tokens"]})
                    row[f"{side}_texts"] = runs[-1]["texts"]
            if "ours_texts" in row and "sherpa_texts" in row:
                row["same_texts"] = sum(a == b for a, b in zip(row["ours_texts"],
                                                               row["sherpa_texts"]))
            rows.append(row)
    return rows


def e2e_markdown(rows) -> str:
    lines = ["| mode (ours / peer) | clips | wall s, ours / peer (ratio) | peak RSS GB, ours / "
             "peer (ratio) | tokens per clip, ours / peer | same text |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        toks = " / ".join(",".join(map(str, r[k])) if r.get(k) else "-"
                          for k in ("ours_tokens", "sherpa_tokens"))
        same = f"{r['same_texts']}/{len(r['ours_texts'])}" if "same_texts" in r else "-"
        lines.append(f"| {r['mode']} / {r['peer']} | {r['case']} | "
                     f"{_cell(r.get('ours_wall_s'), r.get('sherpa_wall_s'), '{:.2f}')} | "
                     f"{_cell(r.get('ours_rss_gb'), r.get('sherpa_rss_gb'), '{:.2f}')} | "
                     f"{toks} | {same} |")
    return "\n".join(lines)


def header(meta) -> str:
    m, bw = meta["machine"], meta.get("bandwidth") or {}
    machine = (f"Machine: {m['host']}: {m.get('cpu')} ({m.get('cpu_count')} logical CPUs, "
               f"{', '.join(m.get('cpu_flags', []))}), {m.get('ram_gib', '?')} GiB RAM; "
               f"torch {m.get('torch')}; llama.cpp {meta.get('llama_cpp', '-')}; sherpa-onnx "
               f"{meta.get('sherpa_onnx', '-')}.")
    run = (f"Run: {meta['started']} .. {meta['finished']}; {meta['threads']} threads; model "
           f"{meta['model_dir']}; prompt {meta['prompt']} random tokens per sequence, "
           f"{meta['tokens']} decode steps; medians of {meta['repeats']} repeats, ours and the "
           f"peer in turns; load average start {meta['loadavg'].get('start')}, end "
           f"{meta['loadavg'].get('end')}.")
    bandwidth = (f"Memory bandwidth (1 GiB torch copy, read+write, best probe): "
                 f"{bw['copy_gbps']:.1f} GB/s" if bw else "Memory bandwidth: not probed.")
    if bw and bw.get("probes"):
        bandwidth += ("; all probes, copy / read-only (a torch sum of the same GiB), in order: "
                      + ", ".join(f"{c:.1f} / {r:.1f}" for c, r in bw["probes"]) + " GB/s. "
                      "x floor: our step over our bytes at the best copy; x read floor: each "
                      "side's step over its bytes at the better read probe next to each turn, "
                      "median over the turns.")
    elif bw:
        bandwidth += "."
    cells = ("Cells: ours / peer (**ours / peer**): ms and GB lower is better (ratio < 1: ours "
             "ahead), tok/s higher is better (ratio > 1: ours ahead). Our peak RSS is the whole "
             "model's (audio encoder too), llama.cpp's the decoder's alone. End to end: "
             f"{', '.join(meta.get('e2e_cases', []))} of benchmark.py's clips, {meta['tokens']} "
             "tokens per clip on both sides, wall time per run and each side's peak RSS.")
    return "\n".join([machine, run, bandwidth, cells])


# =============================================================================== main
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model-dir", help="official-layout model dir (built there if missing)")
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--modes", default="fp32,bf16,int8", help="ours: fp32,bf16,int8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt", type=int, default=150, help="prompt tokens per sequence")
    p.add_argument("--tokens", type=int, default=64, help="decode steps")
    p.add_argument("--batches", default="1,8", help="sequences decoded together")
    p.add_argument("--threads", type=int, default=None, help="default: all CPUs")
    p.add_argument("--llama-step", help="a built bench/llama_step.cpp (else built in "
                                        ".cache/peers from the llama-cpp-python sdist)")
    p.add_argument("--no-build", action="store_true",
                   help="never build llama.cpp: use --llama-cpp or the cached build, else skip it")
    p.add_argument("--dry-run", action="store_true",
                   help="1 repeat, 8-token prompt, 4 steps, end to end 1x10s only: the plumbing "
                        "only, no usable numbers")
    p.add_argument("--results-dir", default=str(REPO / "bench/results"))
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--cache", default=str(CACHE), help=argparse.SUPPRESS)
    p.add_argument("--bw-bytes", type=float, default=B.GIB, help=argparse.SUPPRESS)
    p.add_argument("--peers", default="llama,sherpa",
                   help="comma list: llama (decoder), sherpa (end to end); default both")
    p.add_argument("--e2e-cases", default=",".join(E2E_CASES),
                   help="end-to-end cases (sherpa-onnx), as benchmark.py's --cases")
    p.add_argument("--child", choices=("decoder", "e2e", "sherpa"), help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--export", help=argparse.SUPPRESS)
    return p


def prepare_peer(args, modes, model_dir: Path, cache: Path, notes: list):
    """(llama_step binary or None, {mode: GGUF path}): the peer built (or found) and the
    weights converted before anything is timed; a failure is noted, and ours still runs."""
    llama_bin, gguf = None, {}
    try:
        if args.llama_step:
            llama_bin = Path(args.llama_step)
        elif args.no_build:
            cand = llama_build_dir(cache) / "bin/llama_step"
            llama_bin = cand if cand.is_file() else None
            if llama_bin is None:
                raise RuntimeError("not built here yet and --no-build was given")
        else:
            print("[peers] building llama.cpp (once; nice -n 19, 2 jobs) ...", file=sys.stderr)
            llama_bin = llama_build(cache)
        for mode in modes:
            gguf[mode] = ensure_gguf(model_dir, cache, PAIRS[mode])
    except Exception as e:  # noqa: BLE001  (the peer is reported missing; ours still runs)
        notes.append(f"llama.cpp: not measured: {type(e).__name__}: {e}")
        print(f"[peers] {notes[-1]}", file=sys.stderr)
        llama_bin = None
    return llama_bin, gguf


def measure_mode(mode, args, logdir: Path, llama_bin, gguf: dict, notes: list) -> dict:
    """One mode: ours (in a child process) and the peer run in turn, ``args.repeats`` times,
    so other work on the machine hits both."""
    ent = {"ours": [], "llama": []}
    child = OursChild(mode, args, logdir)
    ready = child.read()
    if ready["event"] != "ready":
        notes.append(f"ours {mode}: failed to load: {ready['error']}")
        child.close()
        return ent
    ent["ours_weight_bytes"] = ready["weight_bytes"]
    peer = llama_bin and mode in gguf
    if peer:
        ent["peer_weight_bytes"] = gguf_step_bytes(gguf[mode])
    # a bandwidth probe between every two turns: each turn's read floor is taken from the
    # probes on either side of it (the best read), since the machine's bandwidth can move
    # between runs (30 and 54 GB/s within minutes on the 2-core EPYC VM)
    probes = ent["probes"] = [B.measure_bandwidth(args)]

    def probed(run):
        probes.append(B.measure_bandwidth(args))
        reads = [p_["read_gbps"] for p_ in probes[-2:] if p_]
        run["read_gbps"] = max(reads) if reads else None
        return run
    try:
        for rep in range(args.repeats):
            res = child.request(cmd="run", batches=args.batches)
            if res["event"] == "result":
                ent["ours"].append(probed(res))
            else:
                notes.append(f"ours {mode}: {res['error']}")
            if peer:
                try:
                    ent["llama"].append(probed(run_llama(llama_bin, gguf[mode], args.prompt,
                                                         args.tokens, args.batches,
                                                         args.threads)))
                except Exception as e:  # noqa: BLE001
                    notes.append(f"llama.cpp {PAIRS[mode]}: {e}")
            print(f"[peers] {mode} repeat {rep + 1}/{args.repeats} done "
                  f"(load avg {B.loadavg()})", file=sys.stderr, flush=True)
    finally:
        child.close()
    return ent


def save(text: str, meta: dict, rows, results, args, argv, started, extra=None) -> None:
    """The table (.md) and everything measured (.json) in --results-dir."""
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    stem = Path(args.results_dir) / (f"{meta['machine']['host']}-peers-"
                                     f"{started.strftime('%Y%m%d-%H%M')}")
    stem.with_suffix(".md").write_text(
        f"# Peers: `python bench/peers.py {' '.join(argv or sys.argv[1:])}`\n\n{text}\n")
    stem.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "raw": results, **(extra or {})}, indent=1, default=str))
    print(f"[peers] wrote {stem}.md and .json", file=sys.stderr)


def main(argv=None) -> None:
    p = parser()
    args = p.parse_args(argv)
    args.threads = args.threads or os.cpu_count() or 1
    args.batches = [int(x) for x in str(args.batches).split(",") if x.strip()]
    args.e2e_cases = [c.strip() for c in args.e2e_cases.split(",") if c.strip()]
    if args.dry_run:
        args.repeats, args.prompt, args.tokens, args.bw_bytes = 1, 8, 4, 64 * 2 ** 20
        args.e2e_cases = args.e2e_cases[:1]
    if args.tokens < 2:
        p.error("--tokens must be at least 2 (a prefill and at least one decode step)")
    if args.child == "decoder":
        return child_main(args)
    if args.child:
        return e2e_child_main(args)
    args.device = "cpu"
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in PAIRS]
    if bad:
        p.error(f"unknown mode(s) {bad}: choose from {', '.join(PAIRS)}")
    peers = {x.strip() for x in args.peers.split(",") if x.strip()}
    if not peers <= {"llama", "sherpa"}:
        p.error(f"unknown peer(s) {sorted(peers - {'llama', 'sherpa'})}: llama, sherpa")
    args.model_dir = str(B.resolve_model_dir(args))
    notes = []
    started = _dt.datetime.now()
    model_dir, cache = Path(args.model_dir), Path(args.cache)
    llama_bin, gguf = (prepare_peer(args, modes, model_dir, cache, notes) if "llama" in peers
                       else (None, {}))
    exports = prepare_sherpa(args, modes, model_dir, cache, notes) if "sherpa" in peers else {}

    import tempfile
    logdir = Path(tempfile.mkdtemp(prefix="funasr-peers-"))  # child stderr; tails in errors
    la_start = B.loadavg()
    probes, results, e2e = [], {}, {}
    if "llama" in peers:
        for mode in modes:
            results[mode] = measure_mode(mode, args, logdir, llama_bin, gguf, notes)
            probes += results[mode].get("probes", [])
    if exports:
        inputs_path = write_inputs(args.e2e_cases, logdir)
        for mode, folder in exports.items():
            e2e[mode] = measure_e2e(mode, args, logdir, inputs_path, folder, notes)
    shutil.rmtree(logdir, ignore_errors=True)
    probes = [x for x in probes if x]
    bw = dict(max(probes, key=lambda x: x["copy_gbps"])) if probes else None
    if bw:  # the best copy: the floor is the hardest this run's probes allow
        bw["probes"] = [(x["copy_gbps"], x["read_gbps"]) for x in probes]
    rows = summarize(results, args, bw and bw["copy_gbps"])
    e2e_rows = summarize_e2e(e2e, args)
    meta = {"started": started.isoformat(timespec="seconds"),
            "finished": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": B.machine_info("cpu"), "threads": args.threads,
            "model_dir": args.model_dir, "prompt": args.prompt, "tokens": args.tokens,
            "repeats": args.repeats, "bandwidth": bw, "notes": notes, "peers": sorted(peers),
            "loadavg": {"start": la_start, "end": B.loadavg()},
            "llama_cpp": f"0c1e570 (llama-cpp-python {LLAMA_CPP_PYTHON} sdist)"
            if llama_bin and not args.llama_step else (args.llama_step or "not measured"),
            "sherpa_onnx": SHERPA_ONNX if exports else "not measured",
            "e2e_cases": args.e2e_cases, "dry_run": args.dry_run}
    parts = [header(meta)]
    if "llama" in peers:
        parts.append("Decoder (llama.cpp):\n\n" + markdown(rows))
    if "sherpa" in peers:
        parts.append("End to end (sherpa-onnx):\n\n" + e2e_markdown(e2e_rows))
    if notes:
        parts.append("\n".join(["Notes:", ""] + [f"- {n}" for n in notes]))
    text = "\n\n".join(parts)
    print(text)
    if not args.no_save:
        save(text, meta, rows, results, args, argv, started,
             {"e2e_rows": e2e_rows, "e2e_raw": e2e})


def write_inputs(cases, logdir: Path) -> Path:
    """benchmark.py's clips for ``cases`` (bench._common.build_inputs) as one .npz for the
    children, plus a warm-up clip (the first case's first)."""
    import numpy as np

    from bench._common import build_inputs
    waves, _ = build_inputs(cases)
    arrays = {f"{case}_{i}": w for case, ws in waves.items() for i, w in enumerate(ws)}
    arrays["warmup"] = waves[cases[0]][0]
    path = logdir / "inputs.npz"
    np.savez(path, **arrays)
    return path


if __name__ == "__main__":
    main()
