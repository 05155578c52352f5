"""The CUDA decode path: greedy decoding with a static KV cache and fixed-shape steps that are
captured once as CUDA graphs and replayed, finished rows found on the device.

Why each piece (issue 21; the dynamic loop, engine.batching, is the CPU's):

* **Static cache.** One tensor (layers, k/v, rows, kv heads, capacity, head_dim), allocated once;
  a sequence owns a row and fills it from column 0. Nothing is reallocated when rows finish
  (the dynamic loop copies the whole cache into a smaller one then); rows that become free are
  filled again by later sequences, and the last live row moves down into a hole (one copy) so
  the live rows stay at the front.
* **Fixed shapes.** A step runs on the first B rows (B from ``BATCH_BUCKETS``) and attends over
  the first L columns (a multiple of ``LENGTH_BUCKET``), so the ~500 kernels of a step are
  captured once per (B, L) and replayed with one launch: at small batches their launch cost is
  larger than their arithmetic.
* **No host sync per token.** The step also picks the token, writes it into a per-row buffer,
  counts it and clears the row's running flag at the end token or the token limit, all on the
  device. The host uploads the rows' state once, replays ``sync_every`` steps and reads the
  buffer once (one copy each way per ``sync_every`` tokens). A row that finishes inside a
  chunk idles until its end: at most ``sync_every - 1`` wasted steps per row.
* **SDPA's fast kernels.** A decode step has one query position per row, so the G query heads
  that share a KV head are folded into the query-length axis, (B, KV, G, D) against the cache's
  (B, KV, L, D): no ``enable_gqa`` and no repeated keys. Columns past each row's length are
  hidden by an additive float mask (0 / -inf), which the memory-efficient kernel takes (a
  boolean mask, or a mask with ``enable_gqa``, sends SDPA to its math kernel). Prefill is
  right-padded and causal: ``is_causal=True``, the flash kernel in bf16.

The same code runs on CPU, eagerly (``graphs=False``): tests compare its tokens with
engine.batching.greedy_generate's on real audio. ``FUNASR_NANO_STRICT_SDPA=1`` restricts SDPA to
its flash / memory-efficient / cuDNN kernels on CUDA, so that a step that would fall back to
the math kernel fails instead (bench/gpu_check.py sets it).

Interface: that of the continuous-batching decoder (engine side of serving.scheduler, issue
17), so the scheduler drives this one on CUDA unchanged::

    dec = StaticBatchDecoder(llm, eos_id, rows=16)
    seqs = dec.add(prompts, max_new_tokens=64)        # one prefill, first token of each
    while dec.active:
        finished = dec.step(dec.active)                 # or a subset: the others wait

One difference: ``step`` decodes up to ``sync_every`` tokens per sequence (``tokens_per_step``)
before it returns.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from .batching import (Generation, Sequence, _per_item,  # the one Sequence, both loops'
                       check_room, leave, new_sequences)
from .qwen3 import Qwen3ForCausalLM, rotate_half
from .repetition import loop_at

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LENGTH_BUCKET = 128   # attention spans are rounded up to this (few graphs, little waste)
CAPACITY_STEP = 256   # cache columns per row are reserved in these steps
SYNC_EVERY = 8        # decode steps per host sync
# the rows' state on the device: one int64 row of this (6, rows) tensor per field
TOK, POS, RUN, COUNT, LIMIT, EOS_OK = range(6)
IDLE, END = -1, -2    # codes in the token buffer: the row did not run / picked the end token


def bucket(n: int, limit: int) -> int:
    """The smallest batch bucket that holds ``n`` rows (at most ``limit``, the decoder's rows)."""
    return next((b for b in BATCH_BUCKETS if n <= b <= limit), limit)


class StaticBatchDecoder:
    """Greedy decoding of up to ``rows`` sequences that join and leave between steps.
    ``end_ids`` are banned with ``eos_id`` for sequences added with ``ignore_eos`` (benchmarks:
    exactly ``max_new_tokens`` tokens). ``stop_loops``: the repetition guard (engine.repetition)
    for the others. ``graphs``: capture steps as CUDA graphs (default: on CUDA)."""

    def __init__(self, llm: Qwen3ForCausalLM, eos_id: int, end_ids: tuple[int, ...] = (),
                 rows: int = 8, stop_loops: bool = True, sync_every: int = SYNC_EVERY,
                 graphs: bool | None = None):
        if rows < 1 or sync_every < 1:
            raise ValueError("a StaticBatchDecoder needs at least one row and one step per sync")
        self.llm, self.eos_id, self.rows, self.stop_loops = llm, eos_id, rows, stop_loops
        self.device = llm.model.embed_tokens.weight.device
        cuda = self.device.type == "cuda"
        self.graphs = cuda if graphs is None else bool(graphs and cuda)
        self.sync_every = self.tokens_per_step = int(sync_every)
        cfg = llm.config
        self._shape = (cfg.num_hidden_layers, 2, rows, cfg.num_key_value_heads, cfg.head_dim)
        self._banned = torch.tensor(sorted({eos_id, *end_ids}), device=self.device)
        self._state = torch.zeros(6, rows, dtype=torch.long, device=self.device)
        self._host = torch.zeros(6, rows, dtype=torch.long, pin_memory=cuda)
        self._out = torch.full((rows, self.sync_every), IDLE, dtype=torch.long,
                               device=self.device)
        self._i = torch.zeros(1, dtype=torch.long, device=self.device)  # step within a chunk
        self._row_ids = torch.arange(rows, device=self.device)
        self.kv: torch.Tensor | None = None  # (layers, 2, rows, KV, capacity, D), on first add
        self._cols: torch.Tensor | None = None
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = None
        self._free = list(range(rows))
        self.active: list[Sequence] = []
        self.captures = 0  # graphs captured so far (tests and benchmarks read it)

    @property
    def free_rows(self) -> int:
        return len(self._free)

    @property
    def capacity(self) -> int:
        return 0 if self.kv is None else self.kv.shape[4]

    # ------------------------------------------------------------------ joining
    @torch.inference_mode()
    def add(self, prompts: list[torch.Tensor], max_new_tokens: int | list[int] = 512,
            ignore_eos: bool | list[bool] = False, tags: list | None = None,
            stop_loops: bool | list[bool] | None = None,
            align: bool | list[bool] | None = None) -> list[Sequence]:
        """Prefill ``prompts`` ((L_i, C) input embeddings) together into free rows and pick each
        one's first token. Returns their Sequences in order; one that is already done (end token
        first, a limit of one token or of none) has left again. On an exception no row is
        taken. ``stop_loops`` per sequence (the scheduler's callers differ); None: the
        decoder's own. ``align`` is accepted and ignored: this loop keeps nothing for word
        timings (they run prompt and tokens again, engine.alignment)."""
        n = len(prompts)
        if n == 0:
            return []
        check_room(n, self._free)
        limits, forced = _per_item(max_new_tokens, n), _per_item(ignore_eos, n)
        tags = list(tags) if tags is not None else [None] * n
        loops = _per_item(self.stop_loops if stop_loops is None else stop_loops, n)
        seqs, live = new_sequences([int(p.shape[0]) for p in prompts], limits, forced, tags,
                                   loops)
        if not live:
            return seqs
        self._reserve(max(seqs[i].prompt_length + seqs[i].max_new_tokens for i in live))
        rows = self._free[:len(live)]
        dtype = self.llm.dtype
        t = max(seqs[i].prompt_length for i in live)
        x = torch.zeros(len(live), t, prompts[live[0]].shape[-1], dtype=dtype, device=self.device)
        for j, i in enumerate(live):
            x[j, :seqs[i].prompt_length] = prompts[i].to(device=self.device, dtype=dtype)
        lengths = torch.tensor([seqs[i].prompt_length for i in live], device=self.device)
        with self._sdpa():
            h = self._prefill(x, lengths, torch.tensor(rows, device=self.device))
        forced_rows = torch.tensor([seqs[i].ignore_eos for i in live], device=self.device)
        toks = self._pick(self.llm.lm_head(h).float(), forced_rows).tolist()
        del self._free[:len(live)]
        for j, i in enumerate(live):
            s = seqs[i]
            s.row = rows[j]
            self.active.append(s)
            if self._take(s, toks[j]):
                self._leave(s)
        return seqs

    @torch.inference_mode()
    def first_logits(self, prompts: list[torch.Tensor]) -> torch.Tensor:
        """fp32 logits (n, vocab) after each prompt, from the prefill ``add`` runs (through free
        rows, which stay free): for comparing devices (bench/gpu_check.py)."""
        check_room(len(prompts), self._free)
        lengths = [int(p.shape[0]) for p in prompts]
        self._reserve(max(lengths))
        x = torch.zeros(len(prompts), max(lengths), prompts[0].shape[-1], dtype=self.llm.dtype,
                        device=self.device)
        for j, p in enumerate(prompts):
            x[j, :lengths[j]] = p.to(device=self.device, dtype=self.llm.dtype)
        with self._sdpa():
            h = self._prefill(x, torch.tensor(lengths, device=self.device),
                              torch.tensor(self._free[:len(prompts)], device=self.device))
        return self.llm.lm_head(h).float()

    def _reserve(self, columns: int) -> None:
        """A cache of at least ``columns`` columns per row (grown by half at least, keeping
        what is there; graphs captured on the old one are dropped)."""
        columns = -(-columns // CAPACITY_STEP) * CAPACITY_STEP
        if columns <= self.capacity:
            return
        if self.kv is not None:
            columns = max(columns, -(-self.capacity * 3 // 2 // CAPACITY_STEP) * CAPACITY_STEP)
        layers, two, rows, kv, d = self._shape
        # zeros, not empty: masked columns get weight 0, and 0 * a NaN left in uninitialised
        # memory would still be NaN in the attention's sum over values
        new = torch.zeros((layers, two, rows, kv, columns, d), dtype=self.llm.dtype,
                          device=self.device)
        if self.kv is not None:
            new[:, :, :, :, :self.capacity] = self.kv
        self.kv = new
        self._cols = torch.arange(columns, device=self.device)
        self._graphs.clear()

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def step(self, seqs: list[Sequence] | None = None) -> list[Sequence]:
        """Up to ``sync_every`` tokens for each of ``seqs`` (active sequences; default all);
        the other active ones wait. Returns those that finished (they have left the batch). On
        an exception no sequence has changed, so the step can be retried."""
        seqs = list(self.active if seqs is None else seqs)
        if not seqs:
            return []
        for s in seqs:
            if s.done or s not in self.active:
                raise ValueError("step() got a sequence that is not in the batch")
        self._compact()
        b = bucket(max(s.row for s in self.active) + 1, self.rows)
        steps = min(self.sync_every, max(s.max_new_tokens - len(s.tokens) for s in seqs))
        longest = max(s.length for s in self.active) + steps + 1
        span = min(self.capacity, -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET)
        host = self._host
        host.zero_()
        chosen = set(map(id, seqs))
        for s in self.active:
            host[:, s.row] = torch.tensor([s.tokens[-1], s.length, id(s) in chosen,
                                           len(s.tokens), s.max_new_tokens, not s.ignore_eos])
        self._state.copy_(host, non_blocking=True)
        self._i.zero_()
        with self._sdpa():
            for _ in range(steps):
                if self.graphs:
                    self._graph(b, span).replay()
                else:
                    self._decode_step(b, span)
        out = self._out[:b, :steps].tolist()  # the chunk's one sync
        finished = []
        for s in seqs:
            for code in out[s.row]:
                if code == IDLE:
                    break
                if self._take(s, code):
                    break
            if s.done:
                self._leave(s)
                finished.append(s)
        return finished

    def _take(self, s: Sequence, tok: int) -> bool:
        """The host's copy of what the device did with one picked token (the end code or a
        token); also the repetition guard. True when ``s`` finished with it."""
        if tok == END or (tok == self.eos_id and not s.ignore_eos):
            s.finish_reason = "stop"
            return True
        s.tokens.append(tok)
        s.length = s.prompt_length + len(s.tokens) - 1   # columns in the cache (the last token: next step)
        if s.stop_loops and not s.ignore_eos:
            cut = loop_at(s.tokens)
            if cut is not None:
                del s.tokens[cut:]
                s.finish_reason = "repetition"
                return True
        if len(s.tokens) >= s.max_new_tokens:
            s.finish_reason = "length"
            return True
        return False

    def _pick(self, logits: torch.Tensor, forced: torch.Tensor) -> torch.Tensor:
        """Greedy pick (first index on ties); rows where ``forced`` never pick a banned id."""
        ban = self._banned
        logits[:, ban] = torch.where(forced[:, None], float("-inf"), logits[:, ban])
        return logits.argmax(-1)

    def _prefill(self, x: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor):
        """Prompts x (n, T, C), right-padded, into cache rows ``rows`` from column 0. Returns the
        final-normed hidden state at each prompt's last position (n, C). Padding positions sit
        after the real ones, so the causal mask alone keeps them out."""
        llm = self.llm
        n, t, _ = x.shape
        cos, sin = llm.rope(torch.arange(t, device=x.device)[None].expand(n, t), x.dtype)
        cos, sin = cos[:, None], sin[:, None]
        for i, layer in enumerate(llm.model.layers):
            attn, kc, vc = layer.self_attn, self.kv[i, 0], self.kv[i, 1]
            q, k, v = _qkv(attn, layer.input_layernorm(x), cos, sin)
            kc[rows, :, :t] = k
            vc[rows, :, :t] = v
            g = attn.h // attn.kv  # repeated keys: no enable_gqa, so the fast kernels apply
            out = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1),
                                                 v.repeat_interleave(g, 1), is_causal=True)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(n, t, attn.h * attn.d))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return llm.model.norm(x[torch.arange(n, device=x.device), lengths - 1])

    def _decode_step(self, b: int, span: int) -> None:
        """One token for rows 0..b-1 from the state tensor, attending over columns 0..span-1;
        every tensor it reads or writes outside its own temporaries is one of the decoder's
        (so it can be captured). Rows not running still compute (fixed shapes) and write their
        keys at their next column, which their next real step overwrites before reading."""
        llm, st = self.llm, self._state
        tok, pos = st[TOK, :b], st[POS, :b]
        run, eos_ok = st[RUN, :b] > 0, st[EOS_OK, :b] > 0
        x = llm.embed(tok)[:, None]                                   # (b, 1, C)
        cos, sin = llm.rope(pos[:, None], x.dtype)
        cos, sin = cos[:, None], sin[:, None]                         # (b, 1, 1, D)
        hidden = self._cols[None, :span] > pos[:, None]               # (b, span)
        mask = torch.zeros(b, span, dtype=x.dtype, device=x.device).masked_fill_(
            hidden, float("-inf"))[:, None, None]                     # (b, 1, 1, span)
        rows = self._row_ids[:b]
        for i, layer in enumerate(llm.model.layers):
            attn, kc, vc = layer.self_attn, self.kv[i, 0], self.kv[i, 1]
            q, k, v = _qkv(attn, layer.input_layernorm(x), cos, sin)  # (b, H|KV, 1, D)
            kc[rows, :, pos] = k[:, :, 0]
            vc[rows, :, pos] = v[:, :, 0]
            q = q.reshape(b, attn.kv, attn.h // attn.kv, attn.d)  # query heads of a KV head
            out = F.scaled_dot_product_attention(q, kc[:b, :, :span], vc[:b, :, :span],
                                                 attn_mask=mask)
            x = x + attn.o_proj(out.reshape(b, 1, attn.h * attn.d))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        nxt = self._pick(llm.lm_head(llm.model.norm(x[:, 0])).float(), ~eos_ok)
        stop = run & eos_ok & (nxt == self.eos_id)
        emit = run & ~stop
        count = st[COUNT, :b] + emit
        done = stop | (emit & (count >= st[LIMIT, :b]))
        code = torch.where(emit, nxt, torch.where(stop, END, IDLE))
        self._out[:b].index_copy_(1, self._i, code[:, None])
        st[TOK, :b].copy_(torch.where(emit, nxt, tok))
        st[POS, :b].add_(run.long())
        st[COUNT, :b].copy_(count)
        st[RUN, :b].copy_((run & ~done).long())
        self._i.add_(1)

    def _graph(self, b: int, span: int) -> torch.cuda.CUDAGraph:
        graph = self._graphs.get((b, span))
        if graph is not None:
            return graph
        saved, i = self._state.clone(), self._i.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (library handles, kernel choice), then undone
            for _ in range(2):
                self._decode_step(b, span)
                self._state.copy_(saved)
                self._i.copy_(i)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()  # every graph's temporaries, shared
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._decode_step(b, span)
        self._graphs[(b, span)] = graph
        self.captures += 1
        return graph

    def _sdpa(self):
        """SDPA restricted to its fast kernels under FUNASR_NANO_STRICT_SDPA=1 on CUDA."""
        if self.device.type != "cuda" or os.environ.get("FUNASR_NANO_STRICT_SDPA") != "1":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.CUDNN_ATTENTION])

    # ------------------------------------------------------------------ leaving
    def release(self, s: Sequence) -> None:
        """Take ``s`` out of the batch (finished, or given up by the caller); its row is free."""
        if s.finish_reason is None:
            s.finish_reason = "cancelled"
        self._leave(s)

    def _leave(self, s: Sequence) -> None:
        leave(s, self.active, self._free)

    def _compact(self) -> None:
        """Move the highest live rows into free rows below them, so the live rows are
        0..n-1 and a step runs on the smallest bucket (one cache copy per move)."""
        while self._free and self.active:
            top = max(self.active, key=lambda s: s.row)
            if self._free[0] > top.row:
                return
            dst = self._free.pop(0)
            self.kv[:, :, dst, :, :top.length] = self.kv[:, :, top.row, :, :top.length]
            self._free.append(top.row)
            self._free.sort()
            top.row = dst


def _qkv(attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q (B, H, T, D) and k, v (B, KV, T, D) of x (B, T, C): projections, per-head RMSNorm of q
    and k, RoPE (cos/sin (B, 1, T, D)); the arithmetic of engine.qwen3.Attention."""
    b, t, _ = x.shape
    q = attn.q_norm(attn.q_proj(x).view(b, t, attn.h, attn.d)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(b, t, attn.kv, attn.d)).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, attn.kv, attn.d).transpose(1, 2)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v


def static_greedy_generate(llm: Qwen3ForCausalLM, prompts: list[torch.Tensor], eos_id: int,
                           max_new_tokens: int = 512, ignore_eos: bool = False,
                           end_ids: tuple[int, ...] = (), stop_loops: bool = True,
                           decoder: StaticBatchDecoder | None = None) -> list[Generation]:
    """engine.batching.greedy_generate's contract on the static decoder: each prompt (L_i, C)
    decoded until ``eos_id``, the token limit or (``stop_loops``) a loop. ``decoder``: one to
    reuse (its graphs and cache stay between calls; made for the same ``eos_id`` and
    ``end_ids``); it must be idle and have a row per prompt."""
    if not prompts:
        return []
    if decoder is None:
        decoder = StaticBatchDecoder(llm, eos_id, end_ids, rows=len(prompts))
    elif decoder.active or decoder.rows < len(prompts):
        raise ValueError(f"the decoder is busy or has fewer than {len(prompts)} rows")
    decoder.stop_loops = stop_loops
    seqs = decoder.add(prompts, max_new_tokens, ignore_eos)
    try:
        while decoder.active:
            decoder.step()
    finally:
        for s in list(decoder.active):  # an exception: the rows go back, the decoder is reusable
            decoder.release(s)
    return [s.generation() for s in seqs]
