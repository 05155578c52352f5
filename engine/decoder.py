"""The declared interfaces between the decode loops, the model and the scheduler.

* ``Decoder``: a continuous-batching greedy decoder. Two implement it: the CPU loop
  (``engine.batching.BatchDecoder``) and the CUDA loop (``engine.cuda_decoding.StaticBatchDecoder``:
  static KV cache, CUDA graphs). Both hand out the one ``Sequence`` (``engine.batching``).
* ``DecodingModel``: what ``serving.scheduler`` needs from the model to batch every caller's work
  (``model.FunASRNano`` implements it): prompts, inputs to waveforms, a decoder, the encoder and
  prefill inputs, a result from a finished sequence, and the plain ``transcribe`` of the serial
  path.

Structural types (``typing.Protocol``): nothing inherits from them; tests/test_interfaces.py
checks that the implementations have every member with the same parameters.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .batching import Generation, Sequence

__all__ = ["Decoder", "DecodingModel", "Generation", "Sequence"]


@runtime_checkable
class Decoder(Protocol):
    """Greedy decoding of up to ``rows`` sequences at once; sequences join (``add``) and leave
    (finished, or ``release``) between steps. Which to add and which to step is the caller's
    choice; a sequence's tokens do not depend on its neighbours."""

    active: list[Sequence]   # the sequences in the batch, in the order they joined

    @property
    def free_rows(self) -> int:
        """How many more sequences ``add`` can take now."""
        ...

    def add(self, prompts: list, max_new_tokens: int | list[int] = 512,
            ignore_eos: bool | list[bool] = False, tags: list | None = None,
            stop_loops: Any = True, align: Any = None) -> list[Sequence]:
        """Prefill ``prompts`` ((L_i, C) input embeddings) into free rows and pick each one's
        first token; their Sequences in order (one already done has left again). On an
        exception no row is taken. ``align`` (per sequence): keep what word timings read, where
        the decoder can."""
        ...

    def step(self, seqs: list[Sequence] | None = None) -> list[Sequence]:
        """Decode ``seqs`` (default: all active) by at least one token; those that finished
        (they have left the batch). On an exception nothing changed: retry with fewer."""
        ...

    def release(self, s: Sequence) -> None:
        """Take ``s`` out of the batch (given up by the caller) and free its row."""
        ...


@runtime_checkable
class DecodingModel(Protocol):
    """What the scheduler drives (serving.scheduler.Scheduler and SerialScheduler)."""

    def prompt_ids(self, language=None, itn=True, hotwords=()) -> tuple[list[int], list[int]]:
        """The (prefix, suffix) token ids around the audio; ValueError on a bad option."""
        ...

    def load_inputs(self, inputs, language: str | None = None, keys=None):
        """Every input to 16 kHz: (result dicts with ``error`` where unreadable, {index: wave})."""
        ...

    def new_decoder(self, rows: int) -> Decoder:
        """A ``Decoder`` for up to ``rows`` sequences, on this model's device."""
        ...

    def prepare(self, waves, prompt_ids) -> list:
        """Encoder, adaptor and embedded prompt for a batch of waveforms: what ``add`` takes
        (``.embeds``) and ``finish`` needs back."""
        ...

    def finish(self, prepared, gen: Generation, repetition_guard: bool = True,
               ignore_eos: bool = False) -> dict:
        """The result fields of one decoded input (text, text_tn, finish_reason, ...)."""
        ...

    @staticmethod
    def decode_error(key: str, error: BaseException) -> str:
        """The ``error`` of an input whose decoding failed."""
        ...

    def transcribe(self, inputs, language: str | None = None, itn: bool = True, hotwords=(),
                   batch_size: int = 8, max_new_tokens: int = 512, keys=None,
                   ignore_eos: bool = False, repetition_guard: bool = True) -> list[dict]:
        """The whole path in one call (the serial scheduler's)."""
        ...
