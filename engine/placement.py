"""The dtype policy: which device runs which part of the model, in which arithmetic.

Faithful by default. What the reference (funasr 1.4.16, model-spec.md section 7.3) does:

* by default every part computes in fp32 (the LLM is upcast at the first call);
* with ``bf16=True`` only the LLM runs in bf16 (its weights cast, autocast on):
  ``inference_prepare`` runs the audio encoder and the adaptor before the autocast block, in
  fp32 ("the audio encoder contains fp32-only ops"), and the adaptor's output is rounded to
  bf16 where it is written into the LLM's input embeddings (tests/test_placement.py watches
  the reference do this).

So on CUDA: ``fp32`` is fp32 everywhere with TF32 off (the CPU engine's numbers); ``bf16`` is
the LLM in bf16 and the audio side in fp32, as the reference's ``bf16=True``. GPUs before
compute capability 8.0 (T4, V100) have no bf16 arithmetic (it is emulated, slower than fp32),
so they default to fp32. fp16 is refused everywhere: the adaptor output reaches ~1200, the
decoder overflows and upstream returns empty text (modelscope/FunASR issue 2976); the vLLM
engine forces bf16 for the same reason. CPU modes are model.py's (fp32, bf16, int8).

``choose`` is a pure function of the device's properties (``DeviceInfo``), so the policy is
tested on machines without a GPU by describing one.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

import torch

PARTS = ("audio_encoder", "audio_adaptor", "llm")
ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
NATIVE_BF16 = (8, 0)  # Ampere: the first compute capability with bf16 tensor-core arithmetic
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FP16_REFUSED = ("fp16 is not supported: the adaptor output reaches ~1200 and the decoder "
                "overflows in fp16 (upstream gives empty text, modelscope/FunASR#2976); use bf16 "
                "on GPUs of compute capability 8.0 or later, fp32 elsewhere")


@dataclass(frozen=True)
class DeviceInfo:
    """What the policy looks at: ``device`` ("cpu", "cuda:0"), a name, and for CUDA the compute
    capability and memory."""
    device: str
    name: str
    capability: tuple[int, int] | None = None
    memory_bytes: int | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def probe(device: str) -> DeviceInfo:
    """The DeviceInfo of a torch device string. RuntimeError for CUDA when torch sees no GPU."""
    device = str(device)
    if not device.startswith("cuda"):
        return DeviceInfo(device, _cpu_name())
    if not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but torch sees no CUDA GPU")
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(f"cuda:{index}", props.name, (props.major, props.minor),
                      props.total_memory)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def normalize(dtype: str | None) -> str | None:
    """"float32" -> "fp32" and so on; None stays None (the device's default)."""
    if dtype is None:
        return None
    return ALIASES.get(str(dtype).lower(), str(dtype).lower())


@dataclass(frozen=True)
class Placement:
    """The decision: ``mode`` (model.py's dtype name), the arithmetic of each part, and why."""
    device: DeviceInfo
    mode: str
    compute: dict = field(default_factory=dict)  # part -> "fp32" | "bf16" | "int8"
    tf32: bool = False
    notes: tuple[str, ...] = ()

    def dtype(self, part: str) -> torch.dtype:
        """The torch dtype a CUDA part's weights and arithmetic use."""
        return DTYPES[self.compute[part]]

    def tensor_dtype(self, name: str) -> torch.dtype:
        """On CUDA, the dtype a checkpoint tensor is loaded in: its part's (``audio_encoder.*``,
        ``audio_adaptor.*``, ``llm.*``); fp32 for the rest (the CTC branch, fp32 in the
        reference too)."""
        part = part_of(name)
        return self.dtype(part) if part else torch.float32

    def as_dict(self) -> dict:
        d = self.device
        return {"device": d.device, "device_name": d.name,
                "capability": None if d.capability is None else "%d.%d" % d.capability,
                "memory_gib": None if d.memory_bytes is None
                else round(d.memory_bytes / 2 ** 30, 1),
                "mode": self.mode, "compute": dict(self.compute), "tf32": self.tf32,
                "notes": list(self.notes)}

    def summary(self) -> str:
        d = self.device
        where = d.device + (f" ({d.name}, compute capability %d.%d)" % d.capability
                            if d.capability else f" ({d.name})")
        parts = ", ".join(f"{p.replace('_', ' ')} {self.compute[p]}" for p in PARTS)
        return f"{where}: {parts}" + "".join(f"; {n}" for n in self.notes)


def choose(device: DeviceInfo, requested: str | None = None) -> Placement:
    """The policy. ``requested``: "fp32", "bf16", "int8" (CPU), an alias, or None for the
    device's default. ValueError for fp16, int8 on CUDA and unknown names."""
    mode = normalize(requested)
    if mode == "fp16":
        raise ValueError(FP16_REFUSED)
    if mode not in (None, "fp32", "bf16", "int8"):
        raise ValueError(f"dtype must be fp32, bf16 or int8, not {requested!r}")
    notes = []
    if device.is_cuda:
        if mode == "int8":
            raise ValueError("int8 is a CPU mode; use bf16 or fp32 on CUDA")
        native = device.capability is not None and tuple(device.capability) >= NATIVE_BF16
        cap = "%d.%d" % device.capability if device.capability else "unknown"
        if mode is None:
            mode = "bf16" if native else "fp32"
            if not native:
                notes.append(f"fp32 by default: no native bf16 on compute capability {cap} "
                             "(8.0 or later has it)")
        elif mode == "bf16" and not native:
            notes.append(f"bf16 asked for on compute capability {cap}: emulated, slower than "
                         "fp32")
        if mode == "bf16":
            notes.append("audio encoder and adaptor in fp32 as the reference's bf16=True; the "
                         "adaptor output rounded to bf16 at the decoder's input")
        notes.append("TF32 off")
        compute = {"audio_encoder": "fp32", "audio_adaptor": "fp32", "llm": mode}
        return Placement(device, mode, compute, False, tuple(notes))
    mode = mode or "fp32"
    if mode == "int8":
        compute = dict.fromkeys(PARTS, "int8")
        notes.append("int8 weights and activations in every Linear (lossy)")
    else:
        compute = dict.fromkeys(PARTS, "fp32")
        notes.append("decoder weights kept as stored (bf16 in the official checkpoint), "
                     "fp32 arithmetic" if mode == "fp32" else
                     "decoder weights rounded to bf16, fp32 arithmetic")
    return Placement(device, mode, compute, False, tuple(notes))


def default_mode(device: str) -> str:
    """The mode ``choose`` picks for ``device`` when none is asked for."""
    return choose(probe(device)).mode


def part_of(name: str) -> str | None:
    """The part a checkpoint tensor belongs to (``audio_encoder.*`` ...), None for others (CTC)."""
    head = name.split(".", 1)[0]
    return head if head in PARTS else None
