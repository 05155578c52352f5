"""The dtype policy (engine/placement.py), tested on CPU by describing GPUs to it: which mode each
device gets by default, what each part computes in, what is refused and why; the reference
(funasr 1.4.16) run with bf16=True keeps exactly the parts in fp32 that the policy keeps; the
loaded model, its log and describe() (what /health shows) say what runs where."""
from __future__ import annotations

import logging

import pytest
import torch

from engine import placement
from engine.placement import DeviceInfo, choose
from model import FunASRNano

T4 = DeviceInfo("cuda:0", "Tesla T4", (7, 5), 15 * 2 ** 30)
V100 = DeviceInfo("cuda:0", "Tesla V100-SXM2-16GB", (7, 0), 16 * 2 ** 30)
A100 = DeviceInfo("cuda:0", "NVIDIA A100-SXM4-40GB", (8, 0), 40 * 2 ** 30)
H200 = DeviceInfo("cuda:1", "NVIDIA H200", (9, 0), 141 * 2 ** 30)
CPU = DeviceInfo("cpu", "AMD EPYC")


@pytest.mark.parametrize("gpu,want", [(T4, "fp32"), (V100, "fp32"), (A100, "bf16"),
                                      (H200, "bf16")], ids=lambda x: getattr(x, "name", x))
def test_default_mode_follows_native_bf16(gpu, want):
    p = choose(gpu)
    assert p.mode == want
    assert p.compute["audio_encoder"] == p.compute["audio_adaptor"] == "fp32"
    assert p.compute["llm"] == want and p.tf32 is False
    if want == "fp32":
        assert any("no native bf16" in n and "%d.%d" % gpu.capability in n for n in p.notes)
    d = p.as_dict()
    assert d["device"] == gpu.device and d["device_name"] == gpu.name
    assert d["capability"] == "%d.%d" % gpu.capability and d["memory_gib"] > 10
    assert gpu.name in p.summary() and "llm " + want in p.summary()


def test_bf16_on_a_gpu_without_it_is_allowed_and_says_so():
    p = choose(T4, "bf16")
    assert p.mode == "bf16" and p.compute["llm"] == "bf16"
    assert any("emulated" in n for n in p.notes)
    assert not any("emulated" in n for n in choose(A100, "bf16").notes)


@pytest.mark.parametrize("name", ["fp16", "float16", "half", "FP16"])
@pytest.mark.parametrize("dev", [A100, T4, CPU], ids=["A100", "T4", "cpu"])
def test_fp16_is_refused_with_the_reason(name, dev):
    with pytest.raises(ValueError, match="1200"):
        choose(dev, name)


def test_int8_is_cpu_only_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="int8 is a CPU mode"):
        choose(H200, "int8")
    assert choose(CPU, "int8").compute == dict.fromkeys(placement.PARTS, "int8")
    with pytest.raises(ValueError, match="not 'fp8'"):
        choose(CPU, "fp8")


def test_cpu_modes_and_aliases():
    assert choose(CPU).mode == "fp32" and choose(CPU, "float32").mode == "fp32"
    assert choose(CPU, "bfloat16").mode == "bf16"
    # CPU bf16 rounds the decoder's weights; its arithmetic stays fp32
    assert choose(CPU, "bf16").compute == dict.fromkeys(placement.PARTS, "fp32")
    assert choose(A100, "bfloat16").mode == "bf16"


def test_each_checkpoint_tensor_loads_in_its_parts_dtype(tiny_ctc_model_dir):
    names = list(torch.load(tiny_ctc_model_dir / "model.pt", map_location="cpu",
                            mmap=True)["state_dict"])
    assert any(n.startswith("ctc") for n in names)
    bf16, fp32 = choose(H200, "bf16"), choose(H200, "fp32")
    for name in names:
        assert fp32.tensor_dtype(name) == torch.float32
        want = torch.bfloat16 if name.startswith("llm.") else torch.float32  # CTC: fp32 too
        assert bf16.tensor_dtype(name) == want, name


def test_probe_describes_this_machine():
    info = placement.probe("cpu")
    assert info.device == "cpu" and info.name and not info.is_cuda
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            placement.probe("cuda")
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            FunASRNano.from_pretrained("unused", device="cuda")


def test_the_reference_keeps_the_audio_side_in_fp32_under_bf16(tiny_model_dir, speech_dir):
    """funasr 1.4.16 with bf16=True: the encoder and adaptor compute in fp32, the LLM in bf16,
    and the adaptor output reaches the LLM as bf16. The policy's bf16 is that, and its fp32 is
    the reference's default."""
    from tests._fixtures import require_funasr
    require_funasr()
    from tests.reference import build_reference

    auto = build_reference(tiny_model_dir)  # its own: bf16=True casts the LLM for good
    seen = {}

    def watch(name):
        def hook(module, args, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            seen[name] = t.dtype
        return hook

    model = auto.model
    handles = [model.audio_encoder.register_forward_hook(watch("audio_encoder")),
               model.audio_adaptor.register_forward_hook(watch("audio_adaptor")),
               model.llm.model.layers[0].register_forward_hook(watch("llm"))]
    generate = model.llm.generate

    def spy(*a, **k):
        seen["llm_input"] = k["inputs_embeds"].dtype
        return generate(*a, **k)

    model.llm.generate = spy
    clip = str(speech_dir / "zh/funasr_sample.wav")
    names = {torch.float32: "fp32", torch.bfloat16: "bf16"}
    try:
        for mode, flags in (("fp32", {}), ("bf16", {"bf16": True})):
            seen.clear()
            auto.generate(input=[clip], max_length=2, **flags)
            observed = {part: names[seen[part]] for part in placement.PARTS}
            assert observed == choose(H200, mode).compute, (mode, observed)
            assert names[seen["llm_input"]] == mode   # the audio rows rounded to bf16 there
    finally:
        for h in handles:
            h.remove()
        model.llm.generate = generate


def test_loaded_model_reports_and_logs_its_placement(tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="funasr_nano"):
        asr = FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="bf16")
    d = asr.describe()["placement"]
    assert d["device"] == "cpu" and d["mode"] == "bf16" and d["decoder"] == "dynamic"
    assert d["compute"] == choose(CPU, "bf16").compute and d["device_name"]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("placement"))
    assert "audio encoder fp32" in line and "llm fp32" in line and "decoder dynamic" in line
    with pytest.raises(ValueError, match="1200"):
        FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp16")
