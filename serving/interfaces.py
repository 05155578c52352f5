"""The declared interface of a model holder: what the API, the page, the pipeline and the live
paths call to reach the model, whoever holds it. Two implement it:

* ``serving.model_holder.ModelHolder``: one model in this process, loaded once, behind the
  scheduler (``app.py``);
* ``serving.ray_serve.ReplicaPool``: the model replicas of a Ray Serve application, from its
  ingress (``python -m serving.ray_serve``).

A structural type (``typing.Protocol``): neither inherits from it; tests/test_interfaces.py
checks that both have every member with the same parameters.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ModelSource(Protocol):
    loaded: bool          # a model answers now (Ray: the replicas load theirs at start)

    def get(self):
        """The model, loaded on first use (once, whoever asks first); ModelUnavailable if it
        cannot be loaded."""
        ...

    def preload_in_background(self):
        """Start loading now, without waiting (``--preload``)."""
        ...

    def transcribe(self, inputs, **options) -> list[dict]:
        """``FunASRNano.transcribe``'s arguments and result dicts, plus ``priority`` and
        ``caller`` for the scheduler; callable from any thread, blocks until done."""
        ...

    def client(self, priority: str = "interactive", caller: str | None = None):
        """A ``transcribe`` bound to one priority and caller (long audio's segments, a live
        session)."""
        ...

    def scheduler_stats(self) -> dict:
        """What is waiting and running, per priority (``/health``'s ``scheduler``)."""
        ...

    def info(self, private: bool = False) -> dict:
        """``/health``'s model fields; ``private`` adds paths and error details for the
        operator (callers with the key)."""
        ...
