"""This engine against the reference (funasr 1.4.16) on identical random weights.

Tolerances are fp32 ones: features are computed by the same FBank code, so they agree exactly;
the encoder (70 blocks at full size) and adaptor differ only by summation order in matmuls.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("funasr")

from engine.audio import load_audio  # noqa: E402
from model import FunASRNano  # noqa: E402
from tests import reference as ref  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# 16 kHz clips and clips the front end must resample (22.05 kHz mono, 44.1 kHz stereo).
CLIPS = ["zh/funasr_sample.wav", "en/wenet_librispeech_1995-1837-0001.wav",
         "zh/firered_BAC009S0764W0121.wav", "en/lhotse_ljspeech_LJ002-0020.wav",
         "en/whisper_jfk.flac"]
PROMPTS = [dict(language=None, itn=True, hotwords=()),
           dict(language="英文", itn=False, hotwords=()),
           dict(language="中文", itn=True, hotwords=("阿里巴巴", "FunASR"))]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return ref.build_reference(str(tiny_model_dir))


@pytest.fixture(scope="module")
def ours(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6))


@pytest.mark.parametrize("clip", CLIPS)
def test_features_match(reference, ours, speech_dir, clip):
    path = str(speech_dir / clip)
    wave = load_audio(path)
    fbank = ours.frontend.fbank(wave)
    ref_fbank = torch.as_tensor(ref.reference_fbank(reference, path))
    assert fbank.shape == ref_fbank.shape
    assert (fbank - ref_fbank).abs().max() < 1e-3
    lfr = ours.frontend(wave)
    ref_lfr = torch.as_tensor(ref.reference_lfr(reference, path))
    assert lfr.shape == ref_lfr.shape and lfr.shape[1] == 560
    assert (lfr - ref_lfr).abs().max() < 1e-3


@pytest.mark.parametrize("clip", CLIPS[:3])
def test_encoder_and_adaptor_match(reference, ours, speech_dir, clip):
    lfr = torch.as_tensor(ref.reference_lfr(reference, str(speech_dir / clip)))
    n = torch.tensor([lfr.shape[0]])
    with torch.inference_mode():
        enc, _ = ours.audio_encoder(lfr[None].clone(), n)
        ad, _ = ours.audio_adaptor(enc, n)
    ref_enc = torch.as_tensor(ref.reference_encoder(reference, lfr.clone()))
    ref_ad = torch.as_tensor(ref.reference_adaptor(reference, ref_enc))
    assert _rel(enc.reshape(ref_enc.shape), ref_enc) < 1e-4
    assert _rel(ad.reshape(ref_ad.shape), ref_ad) < 1e-4


def _first_logits(asr: FunASRNano, path: str, language, itn, hotwords) -> torch.Tensor:
    """Logits of the first generated token through this engine's own prompt and cache."""
    with torch.inference_mode():
        ad, lens, _, _ = asr.encode([load_audio(path)])
        from engine.adaptor import low_frame_rate_length
        prefix, suffix = asr.prompt_ids(language, itn, hotwords)
        x = asr._embed_prompt(prefix, suffix, ad[0, :low_frame_rate_length(int(lens[0]))])
        return asr.llm(x[None])[0]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["plain", "en-noitn", "hotwords"])
def test_first_decoder_logits_match(reference, ours, speech_dir, prompt):
    path = str(speech_dir / CLIPS[0])
    logits = _first_logits(ours, path, **prompt)
    ref_logits = torch.as_tensor(ref.reference_first_logits(reference, path, **prompt)).reshape(-1)
    assert logits.shape == ref_logits.shape
    assert _rel(logits, ref_logits) < 1e-4
    assert int(logits.argmax()) == int(ref_logits.argmax())


@pytest.mark.parametrize("prompt", PROMPTS, ids=["plain", "en-noitn", "hotwords"])
def test_single_file_transcripts_identical(reference, ours, speech_dir, prompt):
    for clip in CLIPS:
        path = str(speech_dir / clip)
        want = ref.reference_transcribe(reference, [path], max_length=MAX_TOKENS, **prompt)[0]
        got = ours.transcribe([path], max_new_tokens=MAX_TOKENS, **prompt)[0]
        assert got["error"] is None
        assert (got["text"], got["text_tn"]) == (want["text"], want["text_tn"]), clip


def test_batch_of_four_identical(reference, ours, speech_dir):
    paths = [str(speech_dir / c) for c in CLIPS[:4]]  # 6.0, 8.7, 4.2 and 1.5 s
    for prompt in PROMPTS:
        want = ref.reference_transcribe(reference, paths, batch_size=4, max_length=MAX_TOKENS,
                                        **prompt)
        got = ours.transcribe(paths, batch_size=4, max_new_tokens=MAX_TOKENS, **prompt)
        assert [g["text"] for g in got] == [w["text"] for w in want]
        alone = [ours.transcribe([p], max_new_tokens=MAX_TOKENS, **prompt)[0]["text"]
                 for p in paths]
        assert alone == [g["text"] for g in got]


def test_prompt_token_ids_match_reference_tokenizer(ours, tiny_model_dir):
    """Our tokenizers-based prompt equals what the reference's AutoTokenizer produces, and the
    default prompt equals the ids published by ports tested against funasr (spec 8.2)."""
    from transformers import AutoTokenizer

    from engine.prompt import chatml_pieces

    hf = AutoTokenizer.from_pretrained(str(Path(tiny_model_dir) / "Qwen3-0.6B"))
    for prompt in PROMPTS + [dict(language="韩文", itn=False, hotwords=("x",))]:
        prefix, suffix = ours.prompt_ids(**prompt)
        p_text, s_text = chatml_pieces(**prompt)
        assert prefix == hf.encode(p_text) and suffix == hf.encode(s_text)
    prefix, suffix = ours.prompt_ids()
    assert prefix == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644,
                      872, 198, 105761, 46670, 61443, 5122]
    assert suffix == [151645, 198, 151644, 77091, 198]
    rng = np.random.default_rng(0)
    for _ in range(20):  # random ids, special ones included, decode as transformers does
        ids = rng.integers(0, 151669, size=30).tolist() + [151645, 151643, 151667]
        assert ours.tokenizer.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_prompt_text_matches_reference_get_prompt(reference):
    from engine.languages import LANGUAGES, model_language_name
    from engine.prompt import instruction

    for lang in LANGUAGES:
        for value in (lang.code, lang.english, lang.english.lower(), lang.model_name):
            name = model_language_name(value)
            assert name == lang.model_name
            for itn in (True, False):
                assert instruction(name, itn, ["a", "b"]) == reference.model.get_prompt(
                    ["a", "b"], name, itn)
    assert instruction(model_language_name("auto")) == reference.model.get_prompt([], None, True)


def test_reference_inserts_language_verbatim(reference):
    """Spec 12.2.8, checked against the code: the reference has no language mapping and no
    "auto"; we map both (see test above)."""
    assert reference.model.get_prompt([], "auto", True) == "语音转写成auto："
    assert reference.model.get_prompt([], "en", True) == "语音转写成en："


def test_funasr_automodel_builds_this_class(tiny_model_dir, speech_dir, tmp_path):
    """AutoModel(remote_code=model.py) builds our class and gives our engine's texts. Run in a
    subprocess: registering the class replaces funasr's built-in one for the whole process."""
    paths = [str(speech_dir / c) for c in CLIPS[:3]]
    script = f"""
import json, sys
from funasr import AutoModel
am = AutoModel(model={str(tiny_model_dir)!r}, trust_remote_code=True,
               remote_code={str(ROOT / 'model.py')!r}, device="cpu", disable_update=True,
               disable_pbar=True)
out = am.generate(input={paths!r}, language="en", itn=False, batch_size=3, max_length={MAX_TOKENS})
print(json.dumps({{"cls": type(am.model).__module__ + "." + type(am.model).__name__,
                  "texts": [r["text"] for r in out]}}, ensure_ascii=False))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cls"] == "model.FunASRNano"
    asr = FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu")
    want = [r["text"] for r in asr.transcribe(paths, language="en", itn=False,
                                              max_new_tokens=MAX_TOKENS)]
    assert result["texts"] == want
