#!/usr/bin/env python3
"""The GPU check (issue 21): is the CUDA path faithful, and how fast is it? One prepared run.

    bash bench/gpu_check.sh                            # on a bare GPU machine (see that file)
    python bench/gpu_check.py --device cpu --quick     # dry run: every step, on CPU, in ~1 min

Steps, each timed; a step that fails is reported (with its error) and the others still run:

1. machine: torch, CUDA, the device (name, compute capability, memory) and the placement
   (engine/placement.py) each mode gets there, as the log and /health report it.
2. model: a full-size random-weight checkpoint in the official layout (tools/make_random_model.py;
   names and shapes from model.py when funasr is not installed: the same checkpoint), or
   ``--model-dir``. ``--quick``: the tiny one.
3. fp32 parity: the CPU engine in fp32 (the dynamic loop, plain PyTorch) against the device in
   fp32 (the static loop, CUDA graphs on CUDA) on the parity clips (the 8 x 10 s windows of the
   speed cases and the shared clips, decoded to their end, at most ``--tokens``): texts and tokens
   must be identical, and the first-token logits close (max |diff| / std of the logits).
4. bf16 agreement: the device in bf16 (decoder bf16, audio side fp32) against the device in fp32
   on the same clips: tokens in common, character edit rate. Random weights flip far more tokens
   under rounding than trained ones, so this is reported, not judged.
5. speed: 1 x 10 s, 8 x 10 s, 64 x 10 s (bench/benchmark.py's windows of the English clips),
   exactly ``--tokens`` new tokens each, in bf16 and fp32, the static loop against the dynamic one
   (the old path) side by side: first-token latency (the whole transcribe() with one new token:
   features, encoder, prefill, first pick), ms per decode step ((e2e with T tokens - with 1) /
   (T - 1)), RTFx (audio seconds / e2e seconds), tokens/s, peak GPU memory (allocated), graphs
   captured. Medians over ``--repeats`` after one warm-up run (graphs are captured there).

The "sdpa kernels" steps run the static loop with SDPA restricted to its flash /
memory-efficient / cuDNN kernels (FUNASR_NANO_STRICT_SDPA=1: a call that would need the math
kernel fails that step) and list the attention kernels the profiler saw; the other steps run
unrestricted, so such a failure costs no numbers.

Results: bench/results/gpu-<host>-<time>.md and .json (``--results-dir`` elsewhere), copied to
$OUT when that is set (where the device tool collects files). Exit status 0 when every step ran
and fp32 parity holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench._common import REPO, SR, build_inputs, edit_distance, machine_info, median, parse_case, speech_dir

CASES = "1x10s,8x10s,64x10s"
QUICK_CASES = "1x10s,2x10s"
# The GPU machine's image has torch (with CUDA) and these (the device tool's KINDS.md); the
# engine needs WHEELS beyond them, carried in .whl/ (bench/gpu_prepare.sh downloads them).
# The dry run checks that every distribution it imported is in one of the two lists.
IMAGE_PACKAGES = ("torch", "numpy", "pyyaml", "tokenizers", "tiktoken", "huggingface-hub",
                  "ninja", "onnxruntime", "filelock", "fsspec", "jinja2", "markupsafe",
                  "mpmath", "networkx", "sympy", "typing-extensions", "packaging", "setuptools",
                  "triton", "nvidia-ml-py", "pip", "tqdm")
WHEELS = ("kaldi-native-fbank", "soundfile", "cffi", "pycparser", "soxr",
          "py3langid")  # the language heard (engine/language_id.py), pure Python


class Report:
    """Steps run in order; each records its seconds, status and data, printed as it goes."""

    def __init__(self):
        self.steps: list[dict] = []
        self.t0 = time.perf_counter()

    def run(self, name, fn, *args, summary=None, **kwargs):
        """``fn(*args, **kwargs)``'s value, or None when it raised; the report keeps that value,
        or ``summary(value)`` (for values that are no data: a loaded model)."""
        print(f"[gpu_check] {name} ...", flush=True)
        t0 = time.perf_counter()
        entry = {"step": name}
        value = None
        try:
            value = fn(*args, **kwargs)
            entry["data"] = value if summary is None else summary(value)
            entry["ok"] = True
        except Exception as e:  # noqa: BLE001 - reported; the next steps still run
            entry.update(ok=False, error=f"{type(e).__name__}: {e}",
                         traceback=traceback.format_exc()[-4000:])
            print(entry["traceback"], file=sys.stderr, flush=True)
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"[gpu_check] {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s "
              f"(total {time.perf_counter() - self.t0:.0f} s)", flush=True)
        self.steps.append(entry)
        return value


# ----------------------------------------------------------------------------- steps
def machine(device: str) -> dict:
    import torch

    from engine import placement
    info = machine_info(device)
    info["cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    dev = placement.probe(device)
    info["device"] = {"name": dev.name, "device": dev.device,
                      "capability": None if dev.capability is None else "%d.%d" % dev.capability,
                      "memory_gib": None if dev.memory_bytes is None
                      else round(dev.memory_bytes / 2 ** 30, 1)}
    info["placements"] = {m or "default": placement.choose(dev, m).as_dict()
                          for m in (None, "fp32", "bf16")}
    return info


def model_dir(args) -> str:
    """``--model-dir`` when it holds a model, else a random-weight one built there (or in
    $FUNASR_NANO_MODELS / the temp dir). Shapes from model.py, as on a machine without funasr
    (tests/test_random_model.py: the same checkpoint as funasr's)."""
    size = "tiny" if args.quick else "full"
    out = Path(args.model_dir or Path(os.environ.get("FUNASR_NANO_MODELS")
                                      or tempfile.gettempdir()) / f"gpu-check-{size}-seed1")
    if (out / "model.pt").is_file():
        return str(out)
    from tools import make_random_model as mrm
    mrm.make_random_model(out, size, seed=1, ctc=False, shapes="engine")
    return str(out)


def imported_distributions() -> list[str]:
    """The installed distributions whose modules this process imported: not the standard
    library (a stray backport such as PyPI's ``typing`` claims its names), not this project
    (``pip install -e .``)."""
    from importlib.metadata import packages_distributions
    owners = packages_distributions()
    tops = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
    names = {d for m in tops for d in owners.get(m, ())}
    return sorted({n.lower().replace("_", "-") for n in names} - {"funasr-nano-server"})


def load(path: str, device: str, dtype: str):
    from model import FunASRNano
    return FunASRNano.from_pretrained(path, device=device, dtype=dtype)


def _described(asr) -> dict:
    d = asr.describe()
    return {"load_seconds": round(asr.load_seconds, 2), "placement": d["placement"]}


def decoder_inputs(asr, waves) -> list:
    """Each wave's decoder input (prompt around the audio embeddings), as transcribe() makes it."""
    ids = asr.prompt_ids(None, True, ())
    if callable(getattr(asr, "prepare", None)):  # the batching engine's own step
        return [p.embeds for p in asr.prepare(waves, ids)]
    from engine.adaptor import low_frame_rate_length
    adaptor, lens, _, _ = asr.encode(waves)
    return [asr._embed_prompt(*ids, adaptor[i, :low_frame_rate_length(int(lens[i]))])
            for i in range(len(waves))]


def first_logits(asr, waves):
    import torch

    from engine.cuda_decoding import StaticBatchDecoder
    with torch.inference_mode():
        dec = StaticBatchDecoder(asr.llm, asr.tokenizer.im_end, rows=len(waves))
        return dec.first_logits(decoder_inputs(asr, waves)).cpu()


def transcribe(asr, waves, kind, tokens, ignore_eos=False):
    asr.decoder = kind
    try:
        return asr.transcribe(list(waves), batch_size=len(waves), max_new_tokens=tokens,
                              ignore_eos=ignore_eos, keys=[f"clip{i}" for i in range(len(waves))])
    finally:
        asr.decoder = None


def token_ids(asr, results):
    return [asr.tokenizer.encode(r["text"]) for r in results]


def sdpa_kernels(asr, waves) -> dict:
    """The static loop's SDPA calls (prefill: is_causal; steps: a float mask) restricted to the
    fast kernels (FUNASR_NANO_STRICT_SDPA=1): a call that needs the math kernel raises here.
    On CUDA also the attention kernels the profiler saw run."""
    import torch

    from engine.cuda_decoding import static_greedy_generate
    prompts = decoder_inputs(asr, waves)
    eos = asr.tokenizer.im_end
    out = {"strict": asr.device.type == "cuda"}
    os.environ["FUNASR_NANO_STRICT_SDPA"] = "1"
    try:
        static_greedy_generate(asr.llm, prompts, eos, 4, ignore_eos=True)  # graphs captured
        if asr.device.type == "cuda":
            from torch.profiler import ProfilerActivity, profile
            try:
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    static_greedy_generate(asr.llm, prompts, eos, 4, ignore_eos=True)
                    torch.cuda.synchronize()
                names = {e.key for e in prof.key_averages()}
                out["attention_kernels"] = sorted(
                    n[:90] for n in names if any(w in n.lower() for w in
                                                 ("fmha", "flash", "attention", "cudnn", "sdpa")))
            except Exception as e:  # noqa: BLE001 - the profiler is a nicety
                out["profiler_error"] = f"{type(e).__name__}: {e}"
    finally:
        os.environ.pop("FUNASR_NANO_STRICT_SDPA", None)
    return out


def fp32_parity(cpu, dev, waves, tokens) -> dict:
    a = transcribe(cpu, waves, "dynamic", tokens)
    b = transcribe(dev, waves, "static", tokens)
    errors = [r["error"] for r in a + b if r["error"]]
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    same_text = [x["text"] == y["text"] for x, y in zip(a, b)]
    same_tokens = [(x["num_tokens"], x["finish_reason"]) == (y["num_tokens"], y["finish_reason"])
                   for x, y in zip(a, b)]
    la, lb = first_logits(cpu, waves), first_logits(dev, waves)
    diff = (la - lb).abs().max().item()
    spread = la.std().item()
    top_same = (la.argmax(-1) == lb.argmax(-1)).float().mean().item()
    return {"clips": len(waves), "identical_texts": sum(same_text),
            "identical_counts": sum(same_tokens), "texts_equal": all(same_text),
            "counts_equal": all(same_tokens), "logits_max_abs_diff": diff,
            "logits_std": spread, "logits_rel_diff": diff / spread if spread else None,
            "first_token_same": top_same,
            "reasons": sorted({r["finish_reason"] for r in b}),
            "tokens": [r["num_tokens"] for r in b],
            "mismatches": [{"clip": i, "cpu": x["text"][:120], "device": y["text"][:120]}
                           for i, (x, y, s) in enumerate(zip(a, b, same_text)) if not s][:5]}


def bf16_agreement(fp32, bf16, waves, tokens) -> dict:
    a = transcribe(fp32, waves, "static", tokens, ignore_eos=True)
    b = transcribe(bf16, waves, "static", tokens, ignore_eos=True)
    ta, tb = token_ids(fp32, a), token_ids(bf16, b)
    prefix = [next((i for i, (x, y) in enumerate(zip(p, q)) if x != y), min(len(p), len(q)))
              for p, q in zip(ta, tb)]
    chars = sum(len(x["text"]) for x in a) or 1
    return {"clips": len(waves), "identical_texts": sum(x["text"] == y["text"]
                                                        for x, y in zip(a, b)),
            "same_first_tokens_median": median(prefix),
            "char_edit_rate": sum(edit_distance(x["text"], y["text"]) for x, y in zip(a, b)) / chars}


def speed(asr, mode, inputs, cases, tokens, repeats) -> list[dict]:
    import torch

    cuda = asr.device.type == "cuda"
    rows = []
    for kind in ("static", "dynamic"):
        for case in cases:
            waves = inputs[case]
            n, seconds = parse_case(case)
            row = {"mode": mode, "decoder": kind, "case": case}
            asr._static_decoder = None  # each case's own cache and graphs (and peak memory)
            if cuda:
                torch.cuda.empty_cache()
            try:
                for t in (tokens, 1):  # warm-up: graphs captured, kernels chosen
                    transcribe(asr, waves, kind, t, ignore_eos=True)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                full, first = [], []
                for _ in range(repeats):
                    for t, bucket in ((tokens, full), (1, first)):
                        t0 = time.perf_counter()
                        res = transcribe(asr, waves, kind, t, ignore_eos=True)
                        bucket.append(time.perf_counter() - t0)
                        counts = {r["num_tokens"] for r in res}
                        if counts != {t} or any(r["error"] for r in res):
                            raise RuntimeError(f"expected {t} tokens each, got {counts}: "
                                               f"{[r['error'] for r in res if r['error']][:2]}")
                e2e, ttft = median(full), median(first)
                dec = getattr(asr, "_static_decoder", None)
                row.update(first_token_s=ttft, ms_per_step=1000 * (e2e - ttft) / (tokens - 1),
                           e2e_s=e2e, rtfx=n * seconds / e2e, tok_s=n * tokens / e2e,
                           peak_gpu_gib=torch.cuda.max_memory_allocated() / 2 ** 30
                           if cuda else None,
                           graphs=dec.captures if kind == "static" and dec is not None else None)
            except Exception as e:  # noqa: BLE001 - one failing case is a row, not the end
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            print("[gpu_check]   " + _row_line(row), flush=True)
    return rows


# ----------------------------------------------------------------------------- output
def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def _row_line(r):
    if r.get("error"):
        return f"{r['case']} {r['mode']} {r['decoder']}: failed: {r['error']}"
    return (f"{r['case']} {r['mode']} {r['decoder']}: first token {r['first_token_s'] * 1000:.1f} "
            f"ms, {r['ms_per_step']:.2f} ms/step, RTFx {r['rtfx']:.1f}, peak "
            f"{_f(r['peak_gpu_gib'], '.2f')} GiB")


def _parity_line(par: dict, meta: dict) -> str:
    n = par["clips"]
    facts = [f"texts identical {par['identical_texts']}/{n}",
             f"token counts identical {par['identical_counts']}/{n}",
             f"first-token logits max |diff| {par['logits_max_abs_diff']:.3g} (logit std "
             f"{par['logits_std']:.3g}, ratio {_f(par['logits_rel_diff'], '.2g')})"]
    return f"fp32 parity (CPU dynamic vs {meta['device']} static, {n} clips): " + ", ".join(facts) + "."


def _agreement_line(agr: dict, meta: dict) -> str:
    return (f"bf16 vs fp32 on {meta['device']} ({agr['clips']} clips, {meta['tokens']} forced "
            f"tokens): texts identical {agr['identical_texts']}/{agr['clips']}, median tokens "
            f"in common before the first difference {agr['same_first_tokens_median']}, "
            f"character edit rate {agr['char_edit_rate']:.3f} (random weights: rounding flips "
            "tokens far more often than trained weights would).")


def markdown(meta, report) -> str:
    steps = {s["step"]: s for s in report.steps}
    dev = (steps.get("machine", {}).get("data") or {}).get("device", {})
    lines = [f"# GPU check {meta['started']} on {meta['host']}", "",
             f"Device: {meta['device']} = {dev.get('name', '?')} (compute capability "
             f"{dev.get('capability')}, {dev.get('memory_gib')} GiB); torch {meta.get('torch')}, "
             f"CUDA {meta.get('cuda')}; model {meta.get('model')}; {meta['tokens']} new tokens "
             f"per sequence in the speed table; quick={meta['quick']}.", "",
             "| step | status | seconds |", "|---|---|---|"]
    for s in report.steps:
        lines.append(f"| {s['step']} | {'ok' if s['ok'] else 'FAILED: ' + s['error'][:200]} "
                     f"| {s['seconds']} |")
    par = steps.get("fp32 parity", {}).get("data")
    lines += ["", _parity_line(par, meta)] if par else []
    for mode in ("fp32", "bf16"):
        sd = steps.get(f"sdpa kernels {mode}")
        if sd:
            seen = (sd.get("data") or {}).get("attention_kernels")
            lines += ["", f"SDPA restricted to its fast kernels, {mode}: "
                      + ("ok" if sd["ok"] else "FAILED (" + sd["error"][:200] + ")")
                      + (f"; attention kernels run: {', '.join(seen)}" if seen else "") + "."]
    agr = steps.get("bf16 agreement", {}).get("data")
    lines += ["", _agreement_line(agr, meta)] if agr else []
    rows = [r for s in report.steps if s["step"].startswith("speed") for r in (s.get("data") or [])]
    if rows:
        lines += ["", "| case | mode | decoder | first token ms | ms/step | e2e s | RTFx | tok/s "
                  "| peak GPU GiB | graphs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("error"):
                lines.append(f"| {r['case']} | {r['mode']} | {r['decoder']} | failed: "
                             f"{r['error'][:120]} | | | | | | |")
                continue
            lines.append(f"| {r['case']} | {r['mode']} | {r['decoder']} | "
                         f"{r['first_token_s'] * 1000:.1f} | {r['ms_per_step']:.2f} | "
                         f"{r['e2e_s']:.3f} | {r['rtfx']:.1f} | {r['tok_s']:.0f} | "
                         f"{_f(r['peak_gpu_gib'], '.2f')} | {_f(r['graphs'], 'd')} |")
        lines += ["", "static: engine/cuda_decoding.py (static cache, CUDA graphs on CUDA, one host "
                  "sync per 8 steps); dynamic: engine/batching.greedy_generate (the old path)."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu (dry run)")
    p.add_argument("--quick", action="store_true", help="tiny model, small cases, 1 repeat")
    p.add_argument("--model-dir", default=None, help="reuse (or build into) this directory")
    p.add_argument("--cases", default=None, help=f"speed cases (default {CASES})")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per sequence (64)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (3)")
    p.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--skip-cpu", action="store_true", help="no CPU reference (no fp32 parity)")
    p.add_argument("--wheels", action="store_true",
                   help="print the packages to carry as wheels (bench/gpu_prepare.sh) and exit")
    args = p.parse_args(argv)
    if args.wheels:
        print(" ".join(WHEELS))
        return 0

    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cases = (args.cases or (QUICK_CASES if args.quick else CASES)).split(",")
    tokens = args.tokens or (8 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 3)
    # the CPU reference on the plain PyTorch path: no compiler needed, the same numbers as the
    # kernels (tests/test_cpu_modes.py)
    os.environ.setdefault("FUNASR_NANO_NO_KERNELS", "1")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    started = _dt.datetime.now()
    meta = {"started": started.strftime("%Y-%m-%d %H:%M"), "host": socket.gethostname(),
            "device": device, "cases": cases, "tokens": tokens, "repeats": repeats,
            "quick": args.quick, "torch": torch.__version__, "cuda": torch.version.cuda}
    report = Report()
    report.run("machine", machine, device)
    path = report.run("model", model_dir, args)
    meta["model"] = "tiny random" if args.quick else "full-size random (seed 1)"
    inputs, desc = build_inputs(sorted(set(cases) | {"8x10s" if not args.quick else "2x10s"}))
    meta["inputs"] = desc
    shared = sorted(str(f) for f in speech_dir().glob("*/*")
                    if f.suffix in (".wav", ".flac", ".mp3"))
    from engine.audio import load_audio
    parity_waves = inputs["2x10s" if args.quick else "8x10s"] + [
        load_audio(f, SR) for f in (shared[:3] if args.quick else shared)]
    meta["parity_clips"] = len(parity_waves)

    if path:
        described = {"summary": _described}
        cpu = None if args.skip_cpu else report.run("load the CPU reference (fp32)", load, path,
                                                     "cpu", "fp32", **described)
        dev32 = report.run(f"load {device} fp32", load, path, device, "fp32", **described)
        if dev32 is not None:
            report.run("sdpa kernels fp32", sdpa_kernels, dev32, parity_waves[:2])
        if cpu is not None and dev32 is not None:
            report.run("fp32 parity", fp32_parity, cpu, dev32, parity_waves, tokens)
        del cpu
        if dev32 is not None:
            report.run("speed fp32", speed, dev32, "fp32", inputs, cases, tokens, repeats)
        dev16 = report.run(f"load {device} bf16", load, path, device, "bf16", **described)
        if dev16 is not None:
            report.run("sdpa kernels bf16", sdpa_kernels, dev16, parity_waves[:2])
            report.run("health", health, path, device, dev16)
            if dev32 is not None:
                report.run("bf16 agreement", bf16_agreement, dev32, dev16, parity_waves, tokens)
            del dev32
            report.run("speed bf16", speed, dev16, "bf16", inputs, cases, tokens, repeats)

    parity = next((s.get("data") for s in report.steps if s["step"] == "fp32 parity"), None)
    ok = all(s["ok"] for s in report.steps) and (args.skip_cpu or bool(
        parity and parity["texts_equal"] and parity["counts_equal"]))
    ok = ok and not any(r.get("error") for s in report.steps if s["step"].startswith("speed")
                        for r in s.get("data") or [])
    meta["imported_distributions"] = imported_distributions()
    meta["passed"] = ok
    meta["seconds"] = round(time.perf_counter() - report.t0, 1)
    write(meta, report, Path(args.results_dir), started)
    print(f"[gpu_check] {'PASSED' if ok else 'FAILED'} in {meta['seconds']} s", flush=True)
    return 0 if ok else 1


def health(path, device, asr) -> dict:
    """What /health says about the placement, from the app's own model holder."""
    from serving.model_holder import ModelHolder
    holder = ModelHolder(path, device, "bf16", loader=lambda *a: asr)
    holder.get()
    info = holder.info()
    return {k: info[k] for k in ("device", "dtype", "placement")}


def write(meta, report, folder: Path, started) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"gpu-{meta['host']}-{started.strftime('%Y%m%d-%H%M')}"
    body = {"meta": meta, "steps": report.steps}
    stem.with_suffix(".json").write_text(json.dumps(body, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(meta, report))
    print(stem.with_suffix(".md").read_text(), flush=True)
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        for suffix in (".json", ".md"):
            shutil.copy(stem.with_suffix(suffix), Path(out) / stem.with_suffix(suffix).name)
    print(f"[gpu_check] results: {stem}.md / .json", flush=True)


if __name__ == "__main__":
    sys.exit(main())
