"""This engine against the reference (funasr 1.4.16) on identical random weights.

Features are computed by the same decoding, resampling and FBank code, so they are compared for
exact equality; elsewhere tolerances are fp32 ones: the encoder (70 blocks at full size) and adaptor differ only by summation order in matmuls.
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

from tests._fixtures import require_funasr

require_funasr(module_level=True)

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
FULL_MAX_TOKENS = 8


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return ref.build_reference(str(tiny_model_dir))


@pytest.fixture(scope="module")
def ours(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6))


# every rate and container of the shared clips: 16, 22.05, 24, 44.1 (stereo) and 48 kHz; wav,
# flac, mp3
FEATURE_CLIPS = CLIPS + ["zh/cosyvoice_zero_shot_prompt.wav", "en/common_voice_en_651325.mp3",
                         "en/lhotse_librispeech_2412-153948-0000.flac"]


@pytest.mark.parametrize("clip", FEATURE_CLIPS)
def test_features_match(reference, ours, speech_dir, clip):
    path = str(speech_dir / clip)
    wave = load_audio(path)
    fbank = ours.frontend.fbank(wave)
    ref_fbank = torch.as_tensor(ref.reference_fbank(reference, path))
    # the same decoding, resampler and kaldi-native-fbank call: bit for bit, not "close"
    assert fbank.dtype == ref_fbank.dtype == torch.float32
    assert torch.equal(fbank, ref_fbank)
    lfr = ours.frontend(wave)
    ref_lfr = torch.as_tensor(ref.reference_lfr(reference, path))
    assert lfr.shape[1] == 560 and torch.equal(lfr, ref_lfr)


def test_stock_automodel_dithers_at_inference(ours, tiny_model_dir, speech_dir):
    """The spec (3.2) and funasr 1.4.16's code disagree; the code wins. A plain
    AutoModel(model=...) keeps WavFrontend's default dither=1.0 (config.yaml has no dither key)
    and nothing on FunASRNano's inference path turns it off, so noise is added to every frame
    at inference. The spec says torch.manual_seed makes it reproducible; without torchaudio the
    noise comes from kaldi-native-fbank's own RNG, so it does not. Ours: dither 0, the same
    features every call, bit-equal to the reference built with dither 0 (test above)."""
    from funasr.utils import fbank as funasr_fbank

    stock = ref.build_reference(str(tiny_model_dir), stock_frontend=True)
    assert stock.kwargs["frontend"].dither == 1.0
    path = str(speech_dir / CLIPS[0])
    torch.manual_seed(0)
    first = ref.reference_fbank(stock, path)
    torch.manual_seed(0)
    second = ref.reference_fbank(stock, path)
    mine = ours.frontend.fbank(load_audio(path))
    assert torch.equal(mine, ours.frontend.fbank(load_audio(path)))
    assert first.shape == mine.shape and not torch.equal(first, mine)
    # torchaudio's fbank draws the noise from torch's RNG, kaldi-native-fbank from its own
    assert torch.equal(first, second) == funasr_fbank._HAS_TORCHAUDIO
    # where it matters: frames of digital silence, log(energy floor) vs log(noise), not speech
    diff = (first - mine).abs().amax(dim=1)
    loud = mine.mean(dim=1) > mine.mean(dim=1).median()
    assert float(diff[loud].max()) < float(diff.max())
    # and for parity: on the tiny random-weight model the stock texts are not the dither-0 ones
    # (4 of these 5 clips differed when measured), so a stock AutoModel is no reference
    plain = ref.build_reference(str(tiny_model_dir))
    paths = [str(speech_dir / c) for c in CLIPS]
    noisy = [r["text"] for r in ref.reference_transcribe(stock, paths, batch_size=len(paths),
                                                         max_length=MAX_TOKENS)]
    clean = [r["text"] for r in ref.reference_transcribe(plain, paths, batch_size=len(paths),
                                                         max_length=MAX_TOKENS)]
    assert noisy != clean


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


def test_prompt_ids_match_reference_construction_for_every_language(reference, ours, speech_dir):
    """The decoder's input ids for each of the 31 languages (chosen by ISO code, as users do),
    automatic, ITN on and off, with and without hotwords: ours (prefix, audio slots, suffix)
    against the reference's own chain, get_prompt -> generate_chatml -> data_load_speech with
    its AutoTokenizer, which marks the audio slots with id 0."""
    from engine.adaptor import low_frame_rate_length
    from engine.languages import LANGUAGES, model_language_name

    path = str(speech_dir / "en/lhotse_ljspeech_LJ002-0020.wav")   # 1.5 s: a cheap encoder run
    _, lens, _, _ = ours.encode([load_audio(path)])
    n_audio = low_frame_rate_length(int(lens[0]))
    checked = 0
    for code in [None] + [lang.code for lang in LANGUAGES]:
        name = model_language_name(code)       # None (automatic) or the trained name, 英文 ...
        for itn in (True, False):
            for hotwords in ((), ("阿里巴巴", "FunASR")):
                want = ref.reference_prompt(reference, path, name, itn, hotwords)
                prefix, suffix = ours.prompt_ids(name, itn, hotwords)
                assert want["audio_start"] == len(prefix) and want["audio_len"] == n_audio
                assert want["ids"] == prefix + [0] * n_audio + suffix, (code, itn, hotwords)
                checked += 1
    assert checked == 32 * 4


def test_tokenizer_decodes_as_transformers_and_default_prompt_ids(ours, tiny_model_dir):
    """Decoding matches the reference's AutoTokenizer, and the default prompt equals the ids
    published by ports tested against funasr (spec 8.2)."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(Path(tiny_model_dir) / "Qwen3-0.6B"))
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


def test_funasr_automodel_builds_this_class(reference, ours, tiny_model_dir, speech_dir, tmp_path):
    """AutoModel(remote_code=model.py) builds our class, sets up the same CPU kernels as
    from_pretrained, and gives the reference's texts (funasr's built-in class, given the model's
    own language name). Run in a subprocess: registering the class replaces funasr's built-in
    one for the whole process."""
    from tests._fixtures import kernels_or_missing

    paths = [str(speech_dir / c) for c in CLIPS[:3]]
    script = f"""
import json, sys
from funasr import AutoModel
am = AutoModel(model={str(tiny_model_dir)!r}, trust_remote_code=True,
               remote_code={str(ROOT / 'model.py')!r}, device="cpu", disable_update=True,
               disable_pbar=True)
out = am.generate(input={paths!r}, language="en", itn=False, batch_size=3, max_length={MAX_TOKENS})
print(json.dumps({{"cls": type(am.model).__module__ + "." + type(am.model).__name__,
                  "packed": sum(type(m).__name__ == "PackedLinear" for m in am.model.modules()),
                  "texts": [r["text"] for r in out]}}, ensure_ascii=False))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cls"] == "model.FunASRNano"
    # the decoder's Linears packed for the kernel, as ours are (under CI=true, on an AVX2 CPU,
    # kernels_or_missing fails instead of letting this run without them)
    if kernels_or_missing() is not None:
        from engine.kernels.packed import PackedLinear
        assert result["packed"] == sum(isinstance(m, PackedLinear) for m in ours.modules()) > 0
    want = ref.reference_transcribe(reference, paths, language="英文", itn=False, batch_size=3,
                                    max_length=MAX_TOKENS)
    assert result["texts"] == [w["text"] for w in want]
    got = ours.transcribe(paths, language="en", itn=False, max_new_tokens=MAX_TOKENS)
    assert result["texts"] == [g["text"] for g in got]


def test_full_size_checkpoint_transcripts_identical(full_model_dir, speech_dir):
    """The official shapes at full size (random weights, 1.97 GB, 70 encoder blocks, 28
    decoder layers): one clip alone, then a batch of three of different lengths, the same texts
    as the reference. Both engines are freed before the next test (several GB)."""
    import gc

    # short clips: at full size the 70-block encoder costs most of the time
    one = str(speech_dir / "en/lhotse_ljspeech_LJ002-0035.wav")            # 1.6 s
    batch3 = [str(speech_dir / c) for c in ("en/lhotse_ljspeech_LJ002-0020.wav",   # 1.5 s
                                            "en/common_voice_en_651325.mp3",       # 2.4 s
                                            "zh/cosyvoice_zero_shot_prompt.wav")]  # 3.5 s
    reference = ref.build_reference(str(full_model_dir))
    ours = FunASRNano.from_pretrained(str(full_model_dir), device="cpu", dtype="fp32")
    try:
        for batch, prompt in (([one], PROMPTS[0]), (batch3, PROMPTS[1])):
            want = ref.reference_transcribe(reference, batch, batch_size=len(batch),
                                            max_length=FULL_MAX_TOKENS, **prompt)
            got = ours.transcribe(batch, batch_size=len(batch), max_new_tokens=FULL_MAX_TOKENS,
                                  **prompt)
            assert all(g["error"] is None and g["num_tokens"] > 0 for g in got)
            assert [g["text"] for g in got] == [w["text"] for w in want]
    finally:
        del reference, ours
        gc.collect()


def extended_tiktoken(src: Path, dst: Path, size: int = 58836) -> int:
    """Whisper's 50257 ranks grown to ``size`` (58836 + 1679 specials = 60515, the official CTC
    vocabulary's size) the way a BPE vocabulary grows: each added token is the merge of the two
    tokens a CJK character falls into under the existing ranks, ranked after all of them, so
    BPE reaches every added token. The official file's added tokens are not public; its size
    and layout (ranks, then the same specials) are. Returns the number of added tokens."""
    import base64

    from engine.tokenizer import CTCTokenizer

    lines = [ln for ln in src.read_text().splitlines() if ln]
    base = CTCTokenizer(src)
    added = []
    for cp in range(0x4E00, 0x9FFF):
        if len(lines) + len(added) == size:
            break
        pieces = base.enc.encode_ordinary(chr(cp))
        if len(pieces) == 2:
            added.append(chr(cp).encode("utf-8"))
    start = len(lines)
    dst.write_text("\n".join(lines + [f"{base64.b64encode(tok).decode()} {start + i}"
                                      for i, tok in enumerate(added)]) + "\n")
    return len(added)


def test_extended_ctc_vocabulary_of_60515(tiny_ctc_model_dir, speech_dir, tmp_path):
    """A model directory with the official CTC vocabulary size: an extended
    multilingual.tiktoken (58836 ranks) and config.yaml without ctc_vocab_size (code default
    60515, as in the official file). Our tokenizer encodes and decodes as the reference's
    SenseVoiceTokenizer on the same file, and our CTC text is the reference's greedy CTC
    decoded by its own tokenizer."""
    import shutil

    import yaml

    d = tmp_path / "ext"
    shutil.copytree(tiny_ctc_model_dir, d)
    assert extended_tiktoken(d / "multilingual.tiktoken", d / "multilingual.tiktoken") == 8579
    cfg = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
    assert cfg.pop("ctc_vocab_size") == 51936
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True),
                                   encoding="utf-8")
    ckpt = torch.load(d / "model.pt", weights_only=True)
    sd = ckpt["state_dict"]
    g = torch.Generator().manual_seed(5)
    for name in ("ctc.ctc_lo.weight", "ctc.ctc_lo.bias"):   # new output rows for new tokens
        w = sd[name]
        extra = torch.randn((60515 - w.shape[0], *w.shape[1:]), generator=g) * w.float().std()
        sd[name] = torch.cat([w, extra.to(w.dtype)])
    torch.save(ckpt, d / "model.pt")

    reference = ref.build_reference(d)
    theirs = reference.model.ctc_tokenizer
    assert reference.model.ctc.ctc_lo.weight.shape[0] == 60515
    ours = FunASRNano.from_pretrained(str(d), device="cpu")
    mine = ours.ctc_tokenizer
    assert mine.n_vocab == theirs.encoding.n_vocab == 60515
    assert mine.timestamp_begin == theirs.timestamp_begin
    texts = ["我想问我在滨海新区有房", "甚至出现交易几乎停滞的情况。", "广州市房地产中介协会分析 and Mr. Smith's 3 cats",
             "希望你以后能够做的比我还好呦"]
    used = set()
    for text in texts:
        ids = mine.encode(text)
        assert ids == theirs.encode(text), text
        assert mine.decode(ids) == theirs.decode(ids) == text
        used |= {i for i in ids if i >= 50257}
    assert used, "no text used an added token"
    ids = list(range(50200, 50300)) + [58835, 58836, mine.timestamp_begin, 60514]
    assert mine.decode(ids) == theirs.decode(ids)              # timestamps dropped alike

    clip = str(speech_dir / CLIPS[0])
    logp = ref.reference_ctc_logprobs(reference, ref.reference_encoder(
        reference, ref.reference_lfr(reference, clip)))
    best = torch.unique_consecutive(logp.argmax(-1))
    best = best[best != reference.model.blank_id].tolist()
    want = theirs.decode(best).replace("<|nospeech|>", "")
    got = ours.transcribe(clip, max_new_tokens=2)[0]
    assert got["error"] is None and got["ctc_text"] == want and any(i >= 50257 for i in best)
