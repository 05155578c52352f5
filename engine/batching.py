"""Continuous batching for greedy decoding: sequences join a running batch between decode steps
and leave it as they finish.

A ``BatchDecoder`` holds one KV cache with a row per sequence (engine.qwen3.KVCache). A newcomer
takes a free row and is prefilled into it from column 0; a decode step feeds each of the chosen
sequences its last token at its own column; a finished sequence gives its row back. Nobody's
cache moves when others join or leave, and a sequence's numbers do not depend on its neighbours:
the decode-step kernels read each row's own columns, and a batched prefill right-pads (the causal
mask keeps padding out of real positions). Which sequences to add and to step is the caller's
decision (serving.scheduler decides it per step, by priority and fairness):

    dec = BatchDecoder(llm, eos_id, rows=16)
    seqs = dec.add(prompts, max_new_tokens=64)        # one prefill, first token of each
    while dec.active:
        finished = dec.step(dec.active)                 # or any subset: the others wait

``greedy_generate`` (a fixed batch decoded to the end) is this loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .qwen3 import KVCache, Qwen3ForCausalLM
from .repetition import loop_at

CAPACITY_STEP = 256  # cache columns are added in these steps (pages commit only when written)


@dataclass
class Captured:
    """What a decode asked to (``align_layers``) keeps for word timings (engine.alignment), so
    that they need no second pass over prompt and tokens. ``inputs``: per tapped layer, its
    input hidden states (rows, C): the last prompt position, then each token fed back.
    ``cache``: per layer up to the deepest tapped one, its (k, v) of the sequence's columns
    0..n-1 (KV heads, n, D) as the decode wrote them (the prompt, then the tokens fed back);
    None for layers not kept (a sequence that ended with the end token keeps only the tapped
    layers' keys: its rows are complete)."""
    inputs: dict
    cache: list


@dataclass
class Generation:
    tokens: list[int]
    finish_reason: str  # "stop" (end token), "length" (token limit) or "repetition" (a loop)
    captured: Captured | None = None  # for word timings, where the decoder was asked to


@dataclass(eq=False)
class Sequence:
    """One prompt being decoded. ``tag`` is the caller's (the decoder never looks at it)."""
    row: int
    prompt_length: int
    max_new_tokens: int
    ignore_eos: bool = False
    tag: object = None
    stop_loops: bool = True  # the repetition guard (engine.repetition); never with ignore_eos
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    length: int = 0  # cache columns written: the prompt, then every token fed back
    taps: dict | None = None  # tapped layer -> its input rows so far (Captured.inputs)
    kept: list | None = None  # Captured.cache, copied as the sequence finishes

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def generation(self) -> Generation:
        captured = None
        if self.taps is not None and self.kept is not None:
            captured = Captured({l: torch.stack(rows) for l, rows in self.taps.items()},
                                self.kept)
        return Generation(list(self.tokens), self.finish_reason or "length", captured)


def new_sequences(lengths, limits, forced, tags, loops) -> tuple[list[Sequence], list[int]]:
    """Sequences for prompts of ``lengths`` (row -1: not in the batch yet) and the indices of
    those that decode at all; one with a limit of 0 tokens is finished at once ("length")."""
    seqs = [Sequence(-1, int(n), int(limit), bool(f), tag, stop_loops=bool(g))
            for n, limit, f, tag, g in zip(lengths, limits, forced, tags, loops)]
    for s in seqs:
        if s.max_new_tokens <= 0:
            s.finish_reason = "length"
    return seqs, [i for i, s in enumerate(seqs) if s.max_new_tokens > 0]


def check_room(n: int, free: list[int]) -> None:
    """ValueError unless ``n`` prompts fit the ``free`` rows (both loops' ``add``)."""
    if n > len(free):
        raise ValueError(f"{n} prompts for {len(free)} free rows")


def leave(s: Sequence, active: list[Sequence], free: list[int]) -> None:
    """Takes ``s`` out of ``active`` and gives its row back to ``free`` (kept sorted, so new
    sequences take the lowest rows); nothing when it has left already. Both loops' rows."""
    if s in active:
        active.remove(s)
        free.append(s.row)
        free.sort()


class BatchDecoder:
    """Greedy decoding of up to ``rows`` sequences at once, any of which may join or leave
    between steps. ``end_ids`` are banned with ``eos_id`` for sequences added with
    ``ignore_eos`` (benchmarks: exactly ``max_new_tokens`` tokens, as HF ``min_new_tokens``).
    A sequence added with ``stop_loops`` (the default; off with ``ignore_eos``) ends as soon
    as its tokens loop (engine.repetition.loop_at), ``finish_reason="repetition"``, keeping one
    copy of what repeated. ``align_layers``: each sequence keeps the inputs of these layers at
    its positions and, as it finishes, its keys and values up to the deepest of them
    (``Generation.captured``): word timings then cost no second pass."""

    def __init__(self, llm: Qwen3ForCausalLM, eos_id: int, end_ids: tuple[int, ...] = (),
                 rows: int = 8, align_layers: tuple[int, ...] = ()):
        if rows < 1:
            raise ValueError("a BatchDecoder needs at least one row")
        self.llm, self.eos_id, self.rows = llm, eos_id, rows
        self.align_layers = tuple(sorted(set(align_layers)))
        self.device = llm.model.embed_tokens.weight.device
        self._banned = torch.tensor(sorted({eos_id, *end_ids}), device=self.device)
        self.cache: KVCache | None = None  # made on the first add, dropped when all are done
        self._free = list(range(rows))
        self.active: list[Sequence] = []

    @property
    def free_rows(self) -> int:
        return len(self._free)

    # ------------------------------------------------------------------ joining
    def add(self, prompts: list[torch.Tensor], max_new_tokens: int | list[int] = 512,
            ignore_eos: bool | list[bool] = False, tags: list | None = None,
            stop_loops: bool | list[bool] = True,
            align: bool | list[bool] | None = None) -> list[Sequence]:
        """Prefill ``prompts`` ((L_i, C) input embeddings) together into free rows and pick each
        one's first token. Returns their Sequences in order; a sequence that is already done
        (end token first, or a limit of one token) has left the batch again. On an exception
        no row is taken. ``align`` (per sequence): keep what word timings read (the decoder's
        ``align_layers``; None: every sequence, where the decoder has such layers)."""
        n = len(prompts)
        if n == 0:
            return []
        check_room(n, self._free)
        limits = _per_item(max_new_tokens, n)
        forced = _per_item(ignore_eos, n)
        loops = _per_item(stop_loops, n)
        keep = _per_item(True if align is None else align, n)
        tags = list(tags) if tags is not None else [None] * n
        lengths = [int(p.shape[0]) for p in prompts]
        seqs, live = new_sequences(lengths, limits, forced, tags,
                                   [bool(g) and not f for g, f in zip(loops, forced)])
        if not live:
            return seqs
        self._reserve(max(lengths[i] + seqs[i].max_new_tokens for i in live))
        rows = [self._free.pop(0) for _ in live]
        try:
            dtype = self.llm.dtype
            t = max(lengths[i] for i in live)
            x = torch.zeros(len(live), t, prompts[live[0]].shape[-1], dtype=dtype,
                            device=self.device)
            for j, i in enumerate(live):
                x[j, :lengths[i]] = prompts[i].to(dtype)
            lens = torch.tensor([lengths[i] for i in live], device=self.device)
            taps = dict.fromkeys(self.align_layers) if self.align_layers and any(
                keep[i] for i in live) else None
            h = self.llm.prefill(x, lens, self.cache, torch.tensor(rows), taps=taps)
            toks = self._pick(h, [seqs[i] for i in live])
        except BaseException:
            self._free = sorted(self._free + rows)
            self._release_cache_if_idle()
            raise
        for j, i in enumerate(live):
            s = seqs[i]
            s.row, s.length = rows[j], lengths[i]
            if taps and keep[i]:
                s.taps = {l: [t[j, lengths[i] - 1].clone()] for l, t in taps.items()}
            self.active.append(s)
        for j, i in enumerate(live):  # all joined first: one finishing keeps the cache alive
            self._advance(seqs[i], toks[j])
        return seqs

    def _reserve(self, columns: int) -> None:
        """A cache with at least ``columns`` columns per row (grown in CAPACITY_STEP steps,
        copying only the columns in use)."""
        columns = -(-columns // CAPACITY_STEP) * CAPACITY_STEP
        if self.cache is None:
            self.cache = KVCache(self.llm.config, self.rows, columns, self.llm.cache_dtype,
                                 self.device)
        elif columns > self.cache.capacity:
            used = max((s.length for s in self.active), default=0)
            self.cache.grow(max(columns, self.cache.capacity * 3 // 2), used)

    # ------------------------------------------------------------------ decoding
    def step(self, seqs: list[Sequence] | None = None) -> list[Sequence]:
        """One token for each of ``seqs`` (active sequences; default all). Returns those that
        finished with it (they have left the batch). On an exception nothing has changed, so
        the step can be retried (with fewer sequences)."""
        seqs = list(self.active if seqs is None else seqs)
        if not seqs:
            return []
        for s in seqs:
            if s.done or s.row < 0:
                raise ValueError("step() got a sequence that is not in the batch")
        rows = torch.tensor([s.row for s in seqs])
        pos = torch.tensor([s.length for s in seqs])
        emb = self.llm.embed(torch.tensor([s.tokens[-1] for s in seqs], device=self.device))
        taps = dict.fromkeys(self.align_layers) if any(s.taps is not None for s in seqs) \
            else None
        h = self.llm.decode(emb[:, None], self.cache, rows, pos, taps)
        toks = self._pick(h, seqs)
        finished = []
        for j, (s, tok) in enumerate(zip(seqs, toks)):
            if taps and s.taps is not None:
                for l, t in taps.items():
                    s.taps[l].append(t[j, 0].clone())
            s.length += 1
            if self._advance(s, tok):
                finished.append(s)
        return finished

    def _pick(self, h: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        forced = [s.ignore_eos for s in seqs]
        if not any(forced):
            return self.llm.pick(h).tolist()
        if all(forced):
            return self.llm.pick(h, self._banned).tolist()
        out = [0] * len(seqs)  # a mixed batch: one pick for each kind of row
        for want in (False, True):
            idx = [i for i, f in enumerate(forced) if f == want]
            toks = self.llm.pick(h[idx], self._banned if want else None).tolist()
            for i, tok in zip(idx, toks):
                out[i] = tok
        return out

    def _advance(self, s: Sequence, tok: int) -> bool:
        """Take the picked token; True when the sequence finished (and left)."""
        if tok == self.eos_id and not s.ignore_eos:
            self._finish(s, "stop")
            return True
        s.tokens.append(tok)
        cut = loop_at(s.tokens) if s.stop_loops else None
        if cut is not None:
            del s.tokens[cut:]
            self._finish(s, "repetition")
            return True
        if len(s.tokens) >= s.max_new_tokens:
            self._finish(s, "length")
            return True
        return False

    # ------------------------------------------------------------------ leaving
    def _finish(self, s: Sequence, reason: str) -> None:
        s.finish_reason = reason
        if s.taps is not None and self.cache is not None:
            # its columns are copied (in the compute dtype) before the row is given back; with
            # the end token its rows are complete and only the tapped layers' keys are read, else
            # the last token's row is run against these columns (engine.alignment)
            s.kept = [(k[s.row, :, :s.length].to(self.llm.dtype, copy=True),
                       v[s.row, :, :s.length].to(self.llm.dtype, copy=True))
                      if reason != "stop" or l in s.taps else None
                      for l, (k, v) in enumerate(self.cache.layers[:self.align_layers[-1] + 1])]
        self.release(s)

    def release(self, s: Sequence) -> None:
        """Take ``s`` out of the batch (finished, or given up by the caller) and free its row."""
        leave(s, self.active, self._free)
        if s.finish_reason is None:
            s.finish_reason = "cancelled"
        self._release_cache_if_idle()

    def _release_cache_if_idle(self) -> None:
        if not self.active:
            self.cache = None  # hand the memory back while nothing is decoding


def _per_item(value, n: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{len(value)} values for {n} prompts")
        return list(value)
    return [value] * n


@torch.inference_mode()
def greedy_generate(llm: Qwen3ForCausalLM, prompts: list[torch.Tensor], eos_id: int,
                    max_new_tokens: int = 512, ignore_eos: bool = False,
                    end_ids: tuple[int, ...] = (), stop_loops: bool = True,
                    align_layers: tuple[int, ...] = ()) -> list[Generation]:
    """Decode each prompt (L_i, C) of input embeddings until ``eos_id`` or the token limit, all
    in one batch from one prefill; sequences leave the batch as they finish, so the rest decode
    at the smaller batch's cost. ``ignore_eos`` (benchmarks only) forces exactly
    ``max_new_tokens`` tokens the way HF ``min_new_tokens`` does in the reference: ``eos_id``
    and ``end_ids`` can never be picked. ``stop_loops``: the repetition guard, ``align_layers``:
    what to keep for word timings (BatchDecoder)."""
    if not prompts:
        return []
    dec = BatchDecoder(llm, eos_id, end_ids, rows=len(prompts), align_layers=align_layers)
    seqs = dec.add(prompts, max_new_tokens, ignore_eos, stop_loops=stop_loops)
    while dec.active:
        dec.step()
    return [s.generation() for s in seqs]
