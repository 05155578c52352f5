"""Qwen3 causal LM with a preallocated KV cache (gpt-fast style, plain PyTorch).

Names match the official checkpoint's ``llm.*`` tensors (a standard HF Qwen3ForCausalLM).
Grouped-query attention, RMSNorm on q and k per head before RoPE (NeoX rotate-half over the
full head_dim), SwiGLU MLP, tied embeddings. Every sequence owns one row of the KV cache and fills
it from column 0 at its own RoPE positions: a prefill writes a batch's prompts (right-padded; the
causal mask keeps the padding out of real positions), a decode step one column per sequence at
that sequence's own length. So a sequence's numbers never depend on its batch neighbours, and
sequences can join and leave a running batch (engine.batching).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Qwen3Config:
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 40960
    eos_token_id: int | None = 151645

    @classmethod
    def from_json(cls, path: str | Path) -> "Qwen3Config":
        raw = json.loads(Path(path).read_text())
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        if rope and rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            raise ValueError(f"{path}: RoPE scaling {rope!r} is not supported")
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        fields.setdefault("head_dim", raw["hidden_size"] // raw["num_attention_heads"])
        if "rope_theta" not in raw and "rope_theta" in rope:
            fields["rope_theta"] = rope["rope_theta"]
        if isinstance(fields.get("eos_token_id"), list):
            fields["eos_token_id"] = fields["eos_token_id"][0]
        return cls(**fields)


class RMSNorm(nn.Module):
    fast = None  # the CPU kernels (engine.kernels), set by pack_for_cpu

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        if self.fast is not None and x.dtype == torch.float32 and not torch.is_grad_enabled():
            return self.fast.rms_norm(x.contiguous(), self.weight, self.eps)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # the same formula in one fused op: a decode step runs ~113 of these
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x32 = x.float()  # HF: normalise in fp32, cast back, then scale
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    fast = None  # the CPU kernels (engine.kernels), set by pack_for_cpu
    # the bf16 mode on AVX512_BF16 CPUs: a prompt's causal attention with q, k, v and the
    # weights rounded to bf16, fp32 sums (csrc/prefill_attention.cpp), set by pack_for_cpu
    prefill_bf16 = None

    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.h, self.kv, self.d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.h * self.d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv * self.d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv * self.d, bias=False)
        self.o_proj = nn.Linear(self.h * self.d, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.d, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, cache=None, rows=None, pos=None):
        """x: (B, T, C); cos/sin: (B, T, D); cache: (k, v), each (cache rows, KV, capacity, D);
        rows: (B,) int64 cache row of each batch row (None: rows 0..B-1).

        ``pos`` None (prefill): the B sequences start here; their T positions (right-padded) go
        into columns 0..T-1 of their cache rows (no cache: training) and attend causally among
        themselves. ``pos`` (B,) int64 (decode, T == 1): batch row b's token goes into column
        pos[b] of its cache row and attends over that row's columns 0..pos[b]."""
        b, t, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.fast is not None and not torch.is_grad_enabled():
            # CPU kernels: q/k norm and RoPE in one call (in place on the fresh contiguous
            # projections) and, for one new token, the cache write and attention in another; a
            # decode step otherwise spends more time dispatching ~30 small ops per layer than
            # computing them
            self.fast.qk_norm_rope_(q, k, self.q_norm.weight, self.k_norm.weight,
                                    cos.contiguous(), sin.contiguous(), self.q_norm.eps)
            if pos is not None:
                out = self.fast.decode_attention(q, k, v, *cache, _rows(rows, b), pos)
                return self.o_proj(out.view(b, 1, self.h * self.d))
            if self.prefill_bf16 is not None:
                out = self.prefill_bf16(q, k, v, self.h, self.kv)  # (B, T, H * D)
                if cache is not None:
                    self._write_prompt(cache, rows, k.view(b, t, self.kv, self.d).transpose(1, 2),
                                       v.view(b, t, self.kv, self.d).transpose(1, 2))
                return self.o_proj(out)
            q = q.view(b, t, self.h, self.d).transpose(1, 2)
            k = k.view(b, t, self.kv, self.d).transpose(1, 2)
        else:
            q = self.q_norm(q.view(b, t, self.h, self.d)).transpose(1, 2)
            k = self.k_norm(k.view(b, t, self.kv, self.d)).transpose(1, 2)
            cos, sin = cos[:, None], sin[:, None]
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        v = v.view(b, t, self.kv, self.d).transpose(1, 2)
        if pos is not None:
            out = self._attend_rows(q, k, v, cache, _rows(rows, b), pos)
        else:
            if cache is not None:
                self._write_prompt(cache, rows, k, v)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, x.device),
                                                 enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.d))

    @staticmethod
    def _write_prompt(cache, rows, k, v):
        """A prompt's k and v (B, KV, T, D) into columns 0..T-1 of cache rows ``rows`` (None:
        0..B-1)."""
        k_cache, v_cache = cache
        b, t = k.shape[0], k.shape[2]
        index = slice(0, b) if rows is None else rows
        k_cache[index, :, :t] = k.to(k_cache.dtype)  # a bf16 cache: rounded to nearest even
        v_cache[index, :, :t] = v.to(v_cache.dtype)

    @staticmethod
    def _attend_rows(q, k, v, cache, rows, pos):
        """One new token per row without the kernels (CUDA, or no compiler): each row attends
        over its own cache columns, one SDPA call per row (no padding, no gathered copy)."""
        k_cache, v_cache = cache
        outs = []
        for i, (r, p) in enumerate(zip(rows.tolist(), pos.tolist())):
            k_cache[r, :, p] = k[i, :, 0]
            v_cache[r, :, p] = v[i, :, 0]
            outs.append(F.scaled_dot_product_attention(
                q[i:i + 1], k_cache[r:r + 1, :, :p + 1].to(q.dtype),
                v_cache[r:r + 1, :, :p + 1].to(q.dtype), enable_gqa=True))
        return torch.cat(outs)


def _rows(rows, b: int) -> torch.Tensor:
    return torch.arange(b) if rows is None else rows


def causal_mask(t: int, device) -> torch.Tensor | None:
    """Lower-triangular boolean mask for ``t`` positions (None for one position)."""
    return None if t == 1 else torch.ones(t, t, dtype=torch.bool, device=device).tril()


class MLP(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    step = None  # AVX-512 CPUs: the whole one-token step in two kernel calls (engine.kernels.decode_step)

    def forward(self, x, cos, sin, cache=None, rows=None, pos=None):
        """As Attention.forward: prefill when ``pos`` is None, else one token per row."""
        step = self.step
        if step is not None and step.takes(x, pos):
            return step(x, cos, sin, cache, _rows(rows, x.shape[0]), pos)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, rows, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    def __init__(self, cfg: Qwen3Config):
        super().__init__()
        # _weight: no random init. Under the meta device, Embedding's normal_ goes through
        # torch._refs, whose first use imports torch._dynamo: ~2 s of every load for a table
        # that model.pt overwrites anyway.
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class KVCache:
    """Keys and values of every decoder layer for up to ``rows`` sequences: per layer (k, v),
    each (rows, KV heads, capacity, head_dim). A sequence owns one row and fills it from column
    0, so sequences join and leave without moving anyone else's cache. Allocated with
    torch.empty: pages are only committed as columns are written, so a generous capacity costs
    no memory until used."""

    def __init__(self, cfg: Qwen3Config, rows: int, capacity: int, dtype, device):
        shape = (rows, cfg.num_key_value_heads, capacity, cfg.head_dim)
        self.layers = [(torch.empty(shape, dtype=dtype, device=device),
                        torch.empty(shape, dtype=dtype, device=device))
                       for _ in range(cfg.num_hidden_layers)]
        self.rows, self.capacity = rows, capacity

    def grow(self, capacity: int, used: int) -> None:
        """More columns per row, keeping columns 0..used-1 of every row (only those are copied,
        so the new tensors' untouched pages stay uncommitted)."""
        layers = []
        for k, v in self.layers:
            nk = torch.empty(k.shape[:2] + (capacity,) + k.shape[3:], dtype=k.dtype,
                             device=k.device)
            nv = torch.empty_like(nk)
            nk[:, :, :used] = k[:, :, :used]
            nv[:, :, :used] = v[:, :, :used]
            layers.append((nk, nv))
        self.layers, self.capacity = layers, capacity


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen3Config, rope_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = cfg
        # funasr builds the LLM and casts it to llm_conf.llm_dtype (bf16 for the official model),
        # which rounds the RoPE frequencies too; training and the reference rotate with those.
        self.rope_dtype = rope_dtype
        self.model = Qwen3Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    compute_dtype = None  # None: the embedding's dtype; CPU packing sets fp32
    # The KV cache's dtype where it is not the compute dtype: bf16 for the bf16 mode on CPUs whose
    # decode steps read it (half the memory; fp32 stays exact, int8 keeps its texts); None: ``dtype``
    kv_dtype = None

    def pack_for_cpu(self, mode: str, fast=False, prepared=None) -> None:
        """Replace the Linears by CPU ones and keep norms in fp32. "fp32" packs only weights
        stored as bf16 into PackedLinears (bf16 storage, fp32 arithmetic: exact, the official
        checkpoint's case) and leaves fp32 ones as they are; "bf16" rounds every weight to bf16;
        "int8" quantises every weight for fbgemm's int8 GEMM (engine.kernels.int8), or, without
        fbgemm, to int8 storage with fp32 arithmetic in the PackedLinear kernel. ``fast``: the
        compiled CPU kernels (default: engine.kernels.kernels()) or None for plain PyTorch; one
        value for the whole model, so that a build finishing meanwhile cannot leave it half on
        each path. ``prepared``: int8 tensors by parameter name (engine.kernels.prepared)."""
        from .kernels import int8, kernels
        from .kernels.loader import avx512_kernels
        from .kernels.packed import PackedLinear

        if fast is False:
            fast = kernels()
        q8 = None
        if mode == "int8" and int8.available():
            # on VNNI CPUs every product goes through the VNNI kernels (decode steps through
            # the fused layer steps below, prefill through q8_gemm); elsewhere fbgemm, and
            # one-row calls may go through the weight-only kernel
            q8 = int8.vnni_kernels(fast)
            one_row = fast if q8 is None and int8.one_row_kernel_helps() else None
            int8.quantize_linears(self.model, one_row=one_row, q8=q8, prepared=prepared,
                                  prefix="llm.model.")
            # what is left: lm_head
            int8.quantize_linears(self, one_row=one_row, q8=q8, prepared=prepared, prefix="llm.")
        else:
            for module in list(self.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.Linear):
                        w = child.weight.detach()
                        if mode == "fp32" and w.dtype != torch.bfloat16:
                            child.float()
                            continue
                        setattr(module, name,
                                PackedLinear(w, "bf16" if mode == "fp32" else mode, fast,
                                             round_acts=mode == "bf16"))
        # the bf16 mode's prompts: attention in bf16 products too (fp32 keeps PyTorch's SDPA)
        att16 = avx512_kernels(need_bf16=True, module=fast) if mode == "bf16" else None
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.weight.data = module.weight.data.float()
            if isinstance(module, (RMSNorm, Attention)) and fast is not None:
                # fp32 CPU inference only: training and CUDA keep the plain PyTorch ops
                module.fast = fast
            if isinstance(module, Attention) and att16 is not None and module.d % 16 == 0 \
                    and module.d <= 128:
                module.prefill_bf16 = att16.prefill_attention_bf16
        # one-token steps in two kernel calls per layer, after the norms went fp32 (the steps
        # hold these very modules)
        from .kernels.decode_step import fuse_decode_steps
        avx512 = avx512_kernels(module=fast)
        if q8 is not None:
            fused = fuse_decode_steps(self, q8, "int8")
        elif mode in ("fp32", "bf16") and avx512 is not None:
            fused = fuse_decode_steps(self, avx512, "bf16")
        else:
            fused = False
        if fused and mode == "bf16" and fast is not None:
            # every decode path then reads the cache through the kernels (the steps, and
            # decode_attention for bigger batches), which take bf16: 115 KB per position for the
            # full model instead of 229. The same texts on bench/agreement.py's 252 clips. int8
            # would gain 1-8% per step too, but two of its 252 texts change (docs/peers.md)
            self.kv_dtype = torch.bfloat16
        head = self.lm_head
        vnni = avx512_kernels(need_vnni=True, module=fast)
        if mode in ("fp32", "bf16") and vnni is not None and isinstance(head, PackedLinear) \
                and head.mode == "bf16":
            from .kernels.exact_argmax import ExactArgmax
            # the greedy pick reads an int8 copy of the lm_head and computes the few rows that
            # could win exactly: the same token, from half the bytes
            self.exact_argmax = ExactArgmax(head.weight, vnni)
        self.compute_dtype = torch.float32

    def tie_weights(self):
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _inv_freq(self, device) -> torch.Tensor:
        """RoPE frequencies, made once per device (a decode step would otherwise spend ~6 small
        ops on them)."""
        cache = self.__dict__.setdefault("_inv_freq_cache", {})
        if device not in cache:
            d = self.config.head_dim
            steps = torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d
            cache[device] = (1.0 / (self.config.rope_theta ** steps)).to(self.rope_dtype).float()
        return cache[device]

    def rope(self, positions: torch.Tensor, dtype):
        """cos/sin for integer positions (B, T), computed in fp32 as HF does, then cast."""
        freqs = positions.float()[..., None] * self._inv_freq(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model.embed_tokens(ids)
        return out if self.compute_dtype is None else out.to(self.compute_dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.model.embed_tokens.weight.dtype

    @property
    def cache_dtype(self) -> torch.dtype:
        """The KV cache's dtype (``kv_dtype``, else ``dtype``)."""
        return self.kv_dtype or self.dtype

    exact_argmax = None  # engine.kernels.exact_argmax.ExactArgmax where pack_for_cpu made one

    decode_stack = None  # engine.kernels.decode_step.DecodeStack where pack_for_cpu made one

    def _layers(self, x, positions, cache, rows, pos, taps=None):
        cos, sin = self.rope(positions, x.dtype)
        stack = self.decode_stack
        if stack is not None and taps is None and cache is not None and stack.takes(x, pos):
            return stack(x, cos, sin, cache, _rows(rows, x.shape[0]), pos)
        caches = cache.layers if cache is not None else [None] * len(self.model.layers)
        for l, (layer, layer_cache) in enumerate(zip(self.model.layers, caches)):
            if taps is not None and l in taps:  # the layer's input, for word timings
                taps[l] = x
            x = layer(x, cos, sin, layer_cache, rows, pos)
        return x

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                cache: KVCache | None = None, rows: torch.Tensor | None = None,
                last_only: bool = True, taps: dict | None = None) -> torch.Tensor:
        """Prompts x (B, T, C) of input embeddings, right-padded, real lengths ``lengths`` (None:
        all T), into cache rows ``rows`` (None: 0..B-1; no cache: nothing kept). Returns the
        final-normed hidden state the lm_head takes at each prompt's last position (B, C), or at
        every position (B, T, C) with ``last_only=False``. ``taps``: {layer: None}, filled with
        each of those layers' input (B, T, C) (word timings, engine.alignment)."""
        b, t, _ = x.shape
        positions = torch.arange(t, device=x.device)[None].expand(b, t)
        h = self._layers(x, positions, cache, rows, None, taps)
        if last_only:
            h = h[:, -1] if lengths is None else h[torch.arange(b, device=x.device), lengths - 1]
        return self.model.norm(h)

    def decode(self, x: torch.Tensor, cache: KVCache, rows: torch.Tensor,
               pos: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        """One token per sequence: x (B, 1, C) embeddings, batch row b at column (and RoPE
        position) pos[b] of cache row rows[b]. Returns the final-normed hidden states (B, C).
        ``taps``: as ``prefill``'s."""
        return self.model.norm(self._layers(x, pos[:, None], cache, rows, pos, taps)[:, 0])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                cache: KVCache | None = None, rows: torch.Tensor | None = None,
                last_only: bool = True) -> torch.Tensor:
        """Prefill logits (fp32): (B, V) at each prompt's last position, or (B, T, V)."""
        return self.lm_head(self.prefill(x, lengths, cache, rows, last_only)).float()

    def pick(self, h: torch.Tensor, banned: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy pick from final-normed hidden states (B, C): argmax of the logits (first index
        on ties), ``banned`` token ids never picked. (B,) int64."""
        if self.exact_argmax is not None and h.device.type == "cpu":
            tok = self.exact_argmax(h, banned)
            if tok is not None:
                return tok
        logits = self.lm_head(h).float()
        if banned is not None and banned.numel():
            logits[..., banned] = float("-inf")
        return logits.argmax(-1)
