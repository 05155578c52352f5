"""bf16 prefill of the Qwen3 decoder, its paths side by side in one process, interleaved, on the
same random full-size weights (Fun-ASR-Nano's decoder shapes: 28 layers, hidden 1024, MLP 3072,
vocabulary 151,936): ``bf16dot+attention`` (the bf16 mode on AVX512_BF16 CPUs: the products
and the prompt's attention with bf16-rounded operands, vdpbf16ps, fp32 sums), ``bf16dot`` (the
same products, PyTorch's fp32 attention: the bf16 mode before the attention kernel; both absent
on CPUs without AVX512_BF16), ``gemm`` (bf16 weights widened in registers, fp32
FMAs: the bf16 mode on other CPUs and the path before bf16dot) and ``sgemm`` (an fp32 copy of each
weight per call, then MKL's sgemm: the path before gemm).

    PYTHONPATH=$PWD python bench/prefill.py [--prompt 150] [--repeats 5] [--threads 2]

Each repeat times one prefill of ``--prompt`` positions (the decoder's layers, the final norm and
the lm_head at the last position, as BatchDecoder.add does) with each path, alternating which
goes first. Also checks whether the paths pick the same token and how far their hidden states
differ from gemm's. Writes ``bench/results/<host>-prefill-<date>.md`` (and ``.json``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types

from bench._common import RESULTS, loadavg, machine_info


def _model():
    import torch
    from engine.qwen3 import Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config()
    with torch.device("meta"):
        m = Qwen3ForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():  # random bf16 weights, norms at 1 (as a checkpoint would give)
        for name, p in list(mod.named_parameters(recurse=False)):
            w = (torch.randn(p.shape, generator=g) * 0.02).to(torch.bfloat16) if p.dim() > 1 \
                else torch.ones(p.shape, dtype=torch.bfloat16)
            setattr(mod, name, torch.nn.Parameter(w, requires_grad=False))
    m.tie_weights()
    m.pack_for_cpu("bf16")
    return m.eval(), cfg


def _without(m, names):
    """{layer: a kernel module without ``names``} for every PackedLinear (its decode-row kernel
    is bound already and unchanged), or {layer: the real module} when ``names`` is empty."""
    from engine.kernels.packed import PackedLinear
    table = {}
    for mod in m.modules():
        if isinstance(mod, PackedLinear) and mod._k is not None:
            k = getattr(mod, "_real_k", mod._k)
            mod._real_k = k
            table[mod] = k if not names else types.SimpleNamespace(
                **{n: getattr(k, n) for n in dir(k) if not n.startswith("_") and n not in names})
    return table


def _use(table) -> None:
    """Put each PackedLinear on the kernel module in ``table`` (its GEMM choice is redone)."""
    for mod, k in table.items():
        mod._k = k
        mod.__dict__.pop("_gemm", None)


def _attention_kernel(m):
    """The prompt attention kernel pack_for_cpu gave the bf16 mode's layers (None: none)."""
    from engine.qwen3 import Attention
    found = {a.prefill_bf16 for a in m.modules() if isinstance(a, Attention)}
    return found.pop() if len(found) == 1 else None


def _use_attention(m, kernel) -> None:
    """Every layer's prompt attention on ``kernel`` (None: PyTorch's SDPA)."""
    from engine.qwen3 import Attention
    for a in m.modules():
        if isinstance(a, Attention):
            a.prefill_bf16 = kernel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--prompt", type=int, default=150)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch
    from engine.kernels import kernels
    from engine.kernels.loader import avx512_kernels
    from engine.qwen3 import KVCache
    torch.set_num_threads(args.threads)
    if kernels() is None or not hasattr(kernels(), "gemm_bf16"):
        sys.exit("the CPU kernels are not available (python -m engine.kernels)")
    m, cfg = _model()
    ids = torch.randint(0, 150000, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    x = m.embed(ids)
    # path: (the PackedLinears' kernels, the prompt attention kernel or None: PyTorch's SDPA)
    attention = _attention_kernel(m)
    tables = {"bf16dot": (_without(m, ()), None), "gemm": (_without(m, ("gemm_bf16dot",)), None),
              "sgemm": (_without(m, ("gemm_bf16dot", "gemm_bf16")), None)}
    if attention is not None:
        tables = {"bf16dot+attention": (tables["bf16dot"][0], attention), **tables}
    if avx512_kernels(need_bf16=True) is None:
        del tables["bf16dot"]  # this CPU would take gemm: no third path to time

    def run(path):
        table, att = path
        _use(table)
        _use_attention(m, att)
        cache = KVCache(cfg, 1, args.prompt + 8, torch.float32, "cpu")
        with torch.inference_mode():
            t0 = time.perf_counter()
            h = m.prefill(x, cache=cache)
            tok = m.pick(h)
            return time.perf_counter() - t0, h, int(tok)

    for table in tables.values():  # warm-up
        run(table)
    load0 = loadavg()
    times, out = {k: [] for k in tables}, {}
    names = list(tables)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each goes first in turn
            s, h, tok = run(tables[name])
            times[name].append(s)
            out[name] = (h, tok)
    load1 = loadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    tok_s = {k: args.prompt / v for k, v in med.items()}
    h_ref, tok_ref = out["gemm"]
    rel = {k: float((h - h_ref).norm() / h_ref.norm()) for k, (h, _) in out.items()}
    same = {k: tok == tok_ref for k, (_, tok) in out.items()}
    speedup = {k: statistics.median(o / n for n, o in zip(times[k], times["gemm"]))
               for k in times}  # gemm's time / this path's, per repeat
    res = {"machine": machine_info(), "threads": args.threads, "prompt": args.prompt,
           "repeats": args.repeats, "load_before": load0, "load_after": load1,
           "seconds": times, "tok_s": tok_s, "speedup_vs_gemm": speedup,
           "same_token_as_gemm": same, "hidden_rel_diff_vs_gemm": rel}
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
    host = res["machine"]["host"].split(".")[0] or "host"
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"{host}-prefill-{stamp}"
    gain = None  # the prompt attention kernel: bf16dot+attention's speed over bf16dot's
    if "bf16dot+attention" in times and "bf16dot" in times:
        gain = statistics.median(o / n for n, o in zip(times["bf16dot+attention"],
                                                       times["bf16dot"]))
        res["attention_kernel_speedup"] = gain
    base.with_suffix(".json").write_text(json.dumps(res, indent=1))
    mi = res["machine"]
    md = [f"# bf16 prefill, {args.prompt} positions: {', '.join(tables)}",
          "", f"`python bench/prefill.py --prompt {args.prompt} --repeats {args.repeats} "
          f"--threads {args.threads}`, {stamp} UTC",
          f"machine: {mi.get('cpu')} ({', '.join(mi.get('cpu_flags', []))}), "
          f"{mi.get('cpu_count')} cores, torch {mi.get('torch')}; load average before "
          f"{load0}, after {load1}", "",
          "| path | median s | tok/s | speedup vs gemm (median of per-repeat ratios) | "
          "same first token as gemm | hidden state rel. diff vs gemm | every repeat (s) |",
          "|---|---:|---:|---:|---|---:|---|"]
    for k in tables:
        md.append(f"| {k} | {med[k]:.3f} | {tok_s[k]:.1f} | {speedup[k]:.2f}x | {same[k]} | "
                  f"{rel[k]:.2e} | {', '.join(f'{s:.3f}' for s in times[k])} |")
    if gain is not None:
        md += ["", f"The prompt attention kernel: bf16dot+attention {gain:.3f}x bf16dot's speed "
               "(median of per-repeat ratios)."]
    base.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"written {base}.md")


if __name__ == "__main__":
    main()
