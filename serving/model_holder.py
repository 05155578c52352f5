"""One model per process, loaded on first use, shared by the page, the API, long audio and live
sessions through one scheduler (serving.scheduler).

* ``get()`` loads the model once: concurrent first requests wait for the one load instead of
  starting their own. A failed load is remembered for a few seconds (callers arriving meanwhile
  get the same error instead of retrying at once), then the next request tries again.
* ``transcribe(inputs, language=..., itn=..., hotwords=..., max_new_tokens=..., keys=...,
  priority="interactive", caller=None)`` is the one entry point: callable from any thread, it
  blocks until that caller's results are ready (the arguments and result dicts of
  ``FunASRNano.transcribe``). ``priority``: "live", "interactive" or "bulk"; ``caller``: an
  identity for fairness (a request id, a session id).
* ``client(priority, caller)`` is that entry point bound to one priority and caller, with the
  ``transcribe`` of a model: what ``engine.longform.transcribe_long`` takes.
* CPU kernels (engine.kernels): while they compile in the background the model loads on the
  plain PyTorch path; once they are ready (``watch_kernels``) the holder loads a second copy on
  them and swaps it in between requests (calls already running finish on the old copy, which is
  then freed).
"""
from __future__ import annotations

import gc
import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("funasr_nano.app")

RETRY_AFTER_FAILURE_S = 5.0


class ModelUnavailable(RuntimeError):
    """The model could not be loaded (message says why and how to get it)."""


def _default_loader(spec: str, device: str, dtype: str):
    from engine.alignment import prepare as prepare_alignment
    from engine.language_id import preload
    from model import FunASRNano
    model = FunASRNano.from_pretrained(spec, device=device, dtype=dtype)
    preload()   # the language classifier (3 s) now, not in the first live session's way
    prepare_alignment(model)  # the word-timing heads: not in the first words request's way
    return model


def default_device() -> str:
    try:
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


class ModelHolder:
    """``scheduler``: "batch" (one scheduler batching every caller's work) or "serial" (one
    call at a time, the old path, for comparisons). ``bench_tokens`` (benchmarks only): every
    sequence decodes exactly that many tokens, end tokens ignored."""

    def __init__(self, spec: str, device: str | None = None, dtype: str | None = None,
                 demo: bool = False, loader: Callable[[str, str, str], object] | None = None,
                 batch_size: int = 8, scheduler: str = "batch", metrics=None,
                 bench_tokens: int | None = None):
        self.spec = str(spec)
        self.device = device or default_device()
        # None: the device's default (engine.placement: bf16 on GPUs with native bf16, fp32 on
        # older GPUs and on CPU), decided here so that /health can say what will run before
        # the model is loaded.
        self._planned = planned_placement(self.device, dtype)
        self.dtype = (self._planned or {}).get("mode") or (
            {"float32": "fp32", "bfloat16": "bf16"}.get(dtype, dtype)
            or ("bf16" if self.device.startswith("cuda") else "fp32"))
        self.demo = demo
        self._loader = loader or _default_loader
        self._model = None
        self._lock = threading.Lock()
        self.batch_size, self.scheduler_mode = batch_size, scheduler
        self.metrics, self.bench_tokens = metrics, bench_tokens
        self._scheduler = None
        self._loading = False
        self._error: str | None = None          # for the log: paths and exception text
        self._public_error: str | None = None   # for clients
        self._error_at = 0.0
        self._description: dict = {}
        self.load_seconds: float | None = None
        self.loads = 0  # how many loads ran (tests check it is 1)
        self._switching = False
        self.switches = 0  # reloads onto the CPU kernels

    # ------------------------------------------------------------------ state
    @property
    def loaded(self) -> bool:
        return self._model is not None

    def info(self, private: bool = False) -> dict:
        """What /health, /v1/models and the page show; never loads anything. ``model`` is a name
        (a hub id, or the model directory's last component), never a path on this machine, and
        ``load_error`` says what is wrong without exception text; ``private`` (a caller who
        proved to be the operator) adds ``model_dir`` and the full ``load_error_detail``."""
        d = self._description
        out = {
            "model_loaded": self.loaded,
            "loading": self._loading,
            "model": public_model_name(self.spec),
            "device": d.get("device", self.device),
            "dtype": d.get("dtype", self.dtype),
            "demo": bool(d.get("demo", self.demo)),
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 2),
            "load_error": self._public_error,
            # what runs where: device name, compute capability, each part's arithmetic
            "placement": d.get("placement") or self._planned,
            "kernels": self.kernel_info(),
        }
        if private:
            out.update(model_path=self.spec, model_dir=d.get("model_dir"),
                       load_error_detail=self._error)
            if self.device.startswith("cpu"):
                from engine.kernels import loader
                out["kernels"]["detail"] = loader.detail()  # the compiler's own words
        return out

    def kernel_info(self) -> dict:
        """engine.kernels' state plus ``in_use``: whether the loaded model runs on them (None
        before a model is loaded)."""
        in_use = None
        if self.loaded:
            in_use = bool(self._description.get("kernels", False))
        if not self.device.startswith("cpu"):
            return {"state": "disabled", "paths": "none", "seconds": None, "in_use": in_use,
                    "reason": f"the CPU kernels are not used on {self.device}"}
        from engine.kernels import state
        return {**state(), "in_use": in_use}

    def watch_kernels(self) -> None:
        """Start the CPU kernels' background build (when the cache has none) and switch the model
        onto them when it ends."""
        if not self.device.startswith("cpu"):
            return
        from engine.kernels import loader
        loader.add_listener(lambda _state: self._maybe_switch())
        loader.start_background_build()

    def _maybe_switch(self) -> None:
        """A model loaded on the plain path while the kernels compiled is reloaded on them, in
        the background; requests keep the old copy until the new one is ready."""
        d = self._description
        if self._model is None or d.get("kernels", True) or self._switching:
            return
        from engine.kernels import state
        if state()["state"] != "ready":
            return
        self._switching = True
        threading.Thread(target=self._switch, name="model-switch", daemon=True).start()

    def _switch(self) -> None:
        t0 = time.perf_counter()
        log.info("CPU kernels ready: loading the model onto them; requests are served by the "
                 "current copy meanwhile")
        try:
            model = self._loader(self.spec, self.device, self.dtype)
        except Exception as e:  # noqa: BLE001 - the current model keeps serving
            log.error("could not reload the model onto the CPU kernels (%s); it stays on the "
                      "plain PyTorch path", e)
            return
        describe = getattr(model, "describe", None)
        with self._lock:
            self._model = model
            self._description = dict(describe()) if callable(describe) else {}
            self.switches += 1
            if self._scheduler is not None:  # it swaps once the sequences in flight are done
                self._scheduler.replace_model(model)
        del model
        gc.collect()  # the old copy goes as soon as the calls still holding it return
        from engine.checkpoint import release_freed_memory
        release_freed_memory()
        log.info("model switched to the CPU kernels in %.1f s", time.perf_counter() - t0)

    # ------------------------------------------------------------------ loading
    def get(self):
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is not None:
                return self._model
            if self._error and time.monotonic() - self._error_at < RETRY_AFTER_FAILURE_S:
                raise ModelUnavailable(self._public_error)
            self._loading = True
            t0 = time.perf_counter()
            log.info("loading model %s on %s (%s) ...", self.spec, self.device, self.dtype)
            try:
                model = self._loader(self.spec, self.device, self.dtype)
            except Exception as e:  # noqa: BLE001 - reported to every caller, retried later
                self._error = f"cannot load the model {self.spec}: {e}"
                self._public_error = public_load_error(e)
                self._error_at = time.monotonic()
                log.error("%s", self._error)
                raise ModelUnavailable(self._public_error) from e
            finally:
                self._loading = False
            self.loads += 1
            self.load_seconds = time.perf_counter() - t0
            from .scheduler import make_scheduler
            self._scheduler = make_scheduler(model, self.scheduler_mode, self.batch_size,
                                             self.metrics)
            describe = getattr(model, "describe", None)
            self._description = dict(describe()) if callable(describe) else {}
            self.demo = bool(self._description.get("demo", self.demo))
            self._error = self._public_error = None
            self._model = model
            d = self._description
            log.info("model ready: %s on %s (%s) in %.1f s%s", d.get("model", self.spec),
                     d.get("device", self.device), d.get("dtype", self.dtype), self.load_seconds,
                     "" if d.get("kernels", True) else ", plain PyTorch path (no CPU kernels "
                     "yet)")
        self._maybe_switch()  # the build may have ended while this load ran
        return model

    def preload_in_background(self) -> threading.Thread:
        def run():
            try:
                self.get()
            except ModelUnavailable:
                pass
        t = threading.Thread(target=run, name="model-preload", daemon=True)
        t.start()
        return t

    # ------------------------------------------------------------------ running
    def transcribe(self, inputs, *, priority: str = "interactive", caller: str | None = None,
                   **kwargs) -> list[dict]:
        """Transcribe through the scheduler (loading the model first if need be)."""
        self.get()
        if self.bench_tokens:
            kwargs.update(max_new_tokens=self.bench_tokens, ignore_eos=True)
        return self._scheduler.transcribe(inputs, priority=priority, caller=caller, **kwargs)

    def client(self, priority: str = "interactive", caller: str | None = None) -> "Client":
        return Client(self, priority, caller)

    def scheduler_stats(self) -> dict:
        """Sequences waiting and decoding by priority (zeros before the model is loaded)."""
        if self._scheduler is not None:
            return self._scheduler.stats()
        from .scheduler import PRIORITIES
        return {"mode": self.scheduler_mode, "batch_size": self.batch_size,
                "waiting": dict.fromkeys(PRIORITIES, 0), "running": dict.fromkeys(PRIORITIES, 0)}

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()


class Client:
    """The holder's entry point for one caller at one priority, shaped like the engine model's
    ``transcribe`` (engine.longform calls it once per batch of segments)."""

    def __init__(self, holder: ModelHolder, priority: str, caller: str | None):
        self._holder, self.priority, self.caller = holder, priority, caller

    def transcribe(self, inputs, **kwargs) -> list[dict]:
        return self._holder.transcribe(inputs, priority=self.priority, caller=self.caller,
                                       **kwargs)


def planned_placement(device: str, dtype: str | None) -> dict | None:
    """engine.placement's decision for ``device`` before anything loads (None when it cannot be
    made here, e.g. cuda on a machine without a GPU: the load then says why)."""
    try:
        from engine import placement
        return placement.choose(placement.probe(device), dtype).as_dict()
    except Exception:  # noqa: BLE001 - the load reports the real error
        return None


def public_model_name(spec) -> str:
    """A hub id as it is; a directory by its last component (no path of this machine)."""
    spec = str(spec).rstrip("/\\")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not Path(spec).exists():
        return spec
    return Path(spec).name or "model"


def public_load_error(exc: BaseException) -> str:
    """Why the model is unavailable, in words a client may read: how to get the weights when
    files are missing, else a pointer to the server log (which has the details)."""
    from engine.checkpoint import ModelNotFoundError, how_to_download
    if isinstance(exc, (ModelNotFoundError, FileNotFoundError)):
        return ("no model is available on this server (its files are missing or incomplete; "
                "the server log lists them).\n" + how_to_download())
    return "the model could not be loaded; the server log says why"


def is_demo_dir(spec) -> bool:
    try:
        return (Path(str(spec)) / "DEMO.md").is_file()
    except OSError:
        return False
