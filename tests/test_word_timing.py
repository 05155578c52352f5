"""Word timings (engine.alignment) on real audio through the real pipeline: the demo model on the
example clips, the CLI's VTT on the issue's 3-minute recording (the clips joined by 3 s pauses),
and the ``openai`` SDK's ``timestamp_granularities`` against the running app.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"
sys.path.insert(0, str(ROOT))

from tests._fixtures import missing  # noqa: E402

if not (DEMO / "model.pt").is_file():
    missing(f"no demo checkpoint: {DEMO / 'model.pt'} is missing", module_level=True)

from bench import timing  # noqa: E402  (the recording and the cue report)

CLIPS = sorted((ROOT / "example").glob("*.wav"))


@pytest.fixture(scope="module")
def demo():
    from model import FunASRNano
    return FunASRNano.from_pretrained(str(DEMO), device="cpu")


def _squash(s: str) -> str:
    return "".join(s.split())


def _check_words(r: dict) -> None:
    words = r["words"]
    assert words, r["key"]
    assert _squash("".join(w["word"] for w in words)) == _squash(r["text"]), r
    prev = 0.0
    for w in words:
        assert set(w) <= {"word", "start", "end", "estimated"}
        assert prev <= w["start"] <= w["end"] <= r["duration"] + 1e-6, (r["key"], w)
        prev = w["start"]


def test_words_on_every_example_clip(demo):
    res = demo.transcribe([str(c) for c in CLIPS], words=True)
    plain = demo.transcribe([str(c) for c in CLIPS])
    for r, p in zip(res, plain):
        assert r["text"] == p["text"]          # word timings never change the transcript
        assert "words" not in p                # opt-in
        _check_words(r)
        # the first word starts at the speech (the clip's first loud 10 ms frame)
        audio, _ = sf.read(str(ROOT / "example" / f"{r['key']}.wav"), dtype="float32")
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        db = 10 * np.log10((frames ** 2).mean(1) + 1e-12)
        onset = np.flatnonzero(db >= db.max() - 30)[0] * 0.01
        assert abs(r["words"][0]["start"] - onset) <= 0.3, (r["key"], r["words"][0], onset)


def test_a_word_per_cjk_character(demo):
    [r] = demo.transcribe([str(ROOT / "example" / "zh.wav")], words=True)
    assert [w["word"] for w in r["words"]] == ["这", "本", "书", "有", "9", "页。"]


def test_attention_path_same_with_and_without_kernels_and_in_batches(demo, monkeypatch):
    """The model's own alignment (forced on: the demo's heads are below the trust bar) gives
    the same words with the CPU kernels and without, alone and in a batch."""
    import engine.alignment as alignment
    from engine.kernels import kernels
    from model import FunASRNano

    monkeypatch.setattr(alignment, "MIN_SCORE", 0.0)
    files = [str(c) for c in CLIPS[:5]]
    batched = demo.transcribe(files, words=True, batch_size=5)
    alone = [demo.transcribe([f], words=True)[0] for f in files[:2]]
    assert [r["words"] for r in batched[:2]] == [r["words"] for r in alone]
    assert not any(w.get("estimated") for r in batched for w in r["words"])
    import engine.kernels
    monkeypatch.setattr(engine.kernels, "kernels", lambda: None)  # as FUNASR_NANO_NO_KERNELS=1
    plain = FunASRNano.from_pretrained(str(DEMO), device="cpu")
    assert not plain.describe()["kernels"]
    assert all(layer.step is None and layer.self_attn.fast is None
               for layer in plain.llm.model.layers)
    plain._alignment_heads = demo._alignment_heads  # the heads are chosen once per checkpoint
    other = plain.transcribe(files, words=True, batch_size=5)
    assert [r["text"] for r in other] == [r["text"] for r in batched]
    for a, b in zip(other, batched):
        assert [w["word"] for w in a["words"]] == [w["word"] for w in b["words"]]
        for wa, wb in zip(a["words"], b["words"]):
            assert abs(wa["start"] - wb["start"]) <= 0.002 and abs(wa["end"] - wb["end"]) <= 0.002
    if kernels() is None:
        pytest.skip("no CPU kernels here: only the plain path ran")


def test_the_decode_keeps_what_the_alignment_reads(demo, monkeypatch):
    """With words the decode keeps the alignment layers' inputs and keys (engine.batching
    align_layers), and the weights made from them are the full second pass's: sequences that
    ended with the end token, stopped at their limit (the last row made from the kept cache),
    both in one batch, one token only. A transcription with words then runs no second pass."""
    import engine.alignment as alignment
    import engine.alignment.attention as attention
    from engine.audio import load_audio
    prepared = demo.prepare([load_audio(str(c)) for c in CLIPS[:4]], demo.prompt_ids())
    layers = (0, 2)
    heads = [(l, h) for l in layers for h in range(4)]
    for limit, forced, reasons in ((60, False, {"stop"}), (8, False, {"stop", "length"}),
                                   (5, True, {"length"}), (1, True, {"length"})):
        gens = demo._generate([p.embeds for p in prepared], limit, forced, True, layers)
        assert {g.finish_reason for g in gens} == reasons
        args = ([p.embeds for p in prepared], [p.audio_span for p in prepared],
                [g.tokens for g in gens], heads)
        full = attention.audio_attention(demo.llm, *args)
        kept = attention.audio_attention(demo.llm, *args, [g.captured for g in gens])
        for a, b in zip(full, kept):
            assert a.shape == b.shape
            assert (a - b).abs().max() < 1e-5
    monkeypatch.setattr(alignment, "MIN_SCORE", 0.0)

    def no_second_pass(*a, **k):
        raise AssertionError("the alignment ran prompt and tokens again")

    monkeypatch.setattr(attention, "_head_weights", no_second_pass)
    for r in demo.transcribe([str(c) for c in CLIPS[:3]], words=True, batch_size=3):
        assert r["words"] and not any(w.get("estimated") for w in r["words"]), r
    # the server's shared batch: only the sequences that asked for words keep anything
    from serving.scheduler import Scheduler
    dec = demo.new_decoder(4)
    seqs = dec.add([p.embeds for p in prepared[:2]], 8, align=[True, False])
    while dec.active:
        dec.step()
    assert seqs[0].generation().captured is not None
    assert seqs[1].generation().captured is None
    sched = Scheduler(demo, batch_size=4)
    try:
        res = sched.transcribe([str(c) for c in CLIPS[:3]], words=True)
    finally:
        sched.close()
    for r in res:
        assert r["words"] and not any(w.get("estimated") for w in r["words"]), r


def test_heads_chosen_by_monotonicity_and_sharpness(demo):
    from engine.alignment.heads import choose_for_model, head_scores
    import torch
    heads = choose_for_model(demo)
    assert heads and all(0 <= l < 3 and 0 <= h < 4 for l, h in heads)
    # the criterion itself: a sharp diagonal scores near 1, a uniform or a fixed spot near 0
    diag = torch.eye(20)[None]
    assert head_scores(diag)[0] > 0.9
    assert head_scores(torch.full((1, 20, 20), 1 / 20))[0] < 0.05
    spot = torch.zeros(1, 20, 20)
    spot[..., 3] = 1
    assert head_scores(spot)[0] < 0.05


# token -> audio positions (0.12 s each) it was "spoken" over, then the end token's
_BUILT = [("Please", 0, 7), (" close", 7, 13), (" the", 13, 16), (" door", 16, 22),
          (" before", 22, 29), (" noon", 29, 35), (".", 35, 37), (None, 37, 44)]


def _aligning_case():
    """A demo copy whose layer-0 head 0 attends, from each token's query, to the audio positions
    built for that token, and a prompt whose audio positions say which token they belong to.
    The demo's own heads do not align (docs/timing.md), so this one is made to: each group g
    (a token, or the end) is a phase g*pi/8 in embedding dims 0-1, which q_proj/k_proj copy into
    the head's last pair of dims (the slowest RoPE pair: nearly free of position) and the q/k
    norms scale up; the layer's other heads attend uniformly (their queries are zero)."""
    import torch
    from model import FunASRNano, Prepared
    m = FunASRNano.from_pretrained(str(DEMO), device="cpu")
    tokens = m.tokenizer.encode("Please close the door before noon.")
    assert [m.tokenizer.decode([t]) for t in tokens] == [w for w, _, _ in _BUILT[:-1]]
    layer = m.llm.model.layers[0]
    attn, d = layer.self_attn, layer.self_attn.d
    hidden = m.llm.config.hidden_size
    with torch.no_grad():
        layer.input_layernorm.weight[:2] = 1.0
        for proj, rows in ((attn.q_proj, attn.h), (attn.k_proj, attn.kv)):
            proj.weight.zero_()
            proj.weight[d // 2 - 1, 0] = proj.weight[d - 1, 1] = 1.0  # head 0 (kv head 0)
        attn.q_norm.weight[[d // 2 - 1, d - 1]] = 8.0
        attn.k_norm.weight[[d // 2 - 1, d - 1]] = 8.0

        def phase(g):
            v = torch.zeros(hidden)
            v[0], v[1] = np.cos(g * np.pi / 8), np.sin(g * np.pi / 8)
            return v
        n_audio = _BUILT[-1][2]
        audio = torch.stack([phase(next(g for g, (_, a, b) in enumerate(_BUILT) if a <= j < b))
                             for j in range(n_audio)])
        # 3 prefix positions, the audio, then the suffix whose last query predicts token 0
        prompt = torch.cat([torch.zeros(3, hidden), audio, torch.zeros(1, hidden), phase(0)[None]])
        for k, t in enumerate(tokens):  # token k's position predicts token k+1 (or the end)
            m.llm.model.embed_tokens.weight[t] = phase(k + 1)
    prepared = Prepared(embeds=prompt, audio_span=(3, 3 + n_audio), seconds=n_audio * 0.12)
    return m, prepared, tokens, m.tokenizer.decode(tokens)


def test_attention_path_reads_the_times_where_attention_aligns():
    """Where a head's attention does align, the head criterion picks it, it passes the trust
    bar, and the words come from it (not estimated) at the times it marks, to the rounding;
    with a head that does not align (uniform attention) the words are estimated instead."""
    import types
    import engine.alignment as alignment
    from engine.alignment.attention import audio_attention
    from engine.alignment.heads import head_scores, pick
    m, p, tokens, text = _aligning_case()
    cfg = m.llm_config
    heads = [(l, h) for l in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    [w] = audio_attention(m.llm, [p.embeds], [p.audio_span], [tokens], heads)
    scores = head_scores(w)
    assert pick(scores, heads)[0] == (0, 0), scores
    assert scores[0] >= alignment.MIN_SCORE > max(scores[1:4]), scores
    model = types.SimpleNamespace(llm=m.llm, tokenizer=m.tokenizer, _alignment_heads=[(0, 0)],
                                  _alignment_score=float(scores[0]))
    [words] = alignment.align(model, [(p, tokens, text)])
    built = [(w.strip(), a * 0.12, b * 0.12) for w, a, b in _BUILT[:-1]]
    built[-2:] = [("noon.", built[-2][1], built[-1][2])]  # the full stop joins its word
    assert [x["word"] for x in words] == [b[0] for b in built]
    assert not any(x.get("estimated") for x in words)
    for x, (_, start, end) in zip(words, built):
        assert x["start"] == pytest.approx(start, abs=1e-3), (x, start)
        assert x["end"] == pytest.approx(end, abs=1e-3), (x, end)
    model._alignment_heads = [(0, 1)]  # a head whose attention is uniform
    [words] = alignment.align(model, [(p, tokens, text)])
    assert [x["word"] for x in words] == [b[0] for b in built]
    assert all(x["estimated"] for x in words)


def test_the_server_chooses_the_heads_when_it_loads_the_model(demo, monkeypatch):
    """The server's loader chooses the alignment heads with the model (engine.alignment.prepare),
    the same ones a words request would choose, so no request waits for them; a choice that
    fails costs the load nothing (the first request for words tries again)."""
    import engine.alignment as alignment
    from engine.alignment.heads import choose_for_model
    from serving.model_holder import ModelHolder
    model = ModelHolder(str(DEMO), "cpu", "fp32").get()
    assert model._alignment_heads == choose_for_model(demo)
    assert model._alignment_score == demo._alignment_score

    def broken(m):
        raise RuntimeError("no clips")

    monkeypatch.setattr(alignment, "choose_for_model", broken)
    loaded = ModelHolder(str(DEMO), "cpu", "fp32").get()
    assert getattr(loaded, "_alignment_heads", None) is None


def test_failed_alignment_keeps_the_text_with_estimated_words(demo, monkeypatch):
    import engine.alignment as alignment

    def broken(*a, **k):
        raise RuntimeError("attention went wrong")

    monkeypatch.setattr(alignment, "MIN_SCORE", 0.0)
    monkeypatch.setattr(alignment, "audio_attention", broken)
    [r] = demo.transcribe([str(ROOT / "example" / "en.wav")], words=True)
    assert r["text"] == "The ticket costs $57.50."
    assert r["error"] is None
    assert [w["word"] for w in r["words"]] == ["The", "ticket", "costs", "$57.50."]
    assert all(w["estimated"] is True for w in r["words"])
    _check_words(r)


def test_long_audio_runs_the_vad_once_with_words(demo, monkeypatch):
    """A long recording with words runs the VAD once: the estimated words of its segments are
    spread over the speech regions of the file's own VAD pass (engine.longform), not over a
    second pass per segment; through the engine and through the server's model holder and
    scheduler (what the API, corpus runs and live finals call)."""
    from engine.audio import vad
    from engine.longform import transcribe_long
    from serving.model_holder import ModelHolder
    audio, spans = timing.example_recording(seconds=40.0)
    calls = []
    real = vad.speech_probabilities

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(vad, "speech_probabilities", counted)
    holder = ModelHolder(str(DEMO), "cpu", "fp32")
    holder.get()
    try:
        for model in (demo, holder.client("bulk")):
            calls.clear()
            res = transcribe_long(model, (audio, 16000), words=True)
            assert len(calls) == 1, (model, len(calls))
            assert len(res["segments"]) == len(spans)
            regions = vad.speech_regions(*real(audio))
            for seg in res["segments"]:
                assert seg["words"] and all(w["estimated"] for w in seg["words"]), seg
                assert _squash("".join(w["word"] for w in seg["words"])) == _squash(seg["text"])
                for w in seg["words"]:  # on the file's speech
                    assert any(a - 1e-3 <= w["start"] and w["end"] <= b + 1e-3
                               for a, b in regions), (w, seg)
    finally:
        holder.close()


def test_cues_split_at_pauses_and_start_at_words():
    from engine.longform.subtitles import shape_cues, to_tsv
    seg = {"start": 0.0, "end": 9.0, "text": "one two three four",
           "words": [{"word": "one", "start": 0.5, "end": 0.9},
                     {"word": "two", "start": 1.0, "end": 1.4},
                     {"word": "three", "start": 3.0, "end": 3.5},   # after a 1.6 s pause
                     {"word": "four", "start": 3.6, "end": 4.0}]}
    cues = shape_cues([seg])
    assert [(c["start"], c["end"], c["lines"]) for c in cues] == [
        (0.5, 1.4, ["one two"]), (3.0, 4.0, ["three four"])]
    assert to_tsv([seg]) == "start\tend\ttext\n0.500\t1.400\tone two\n3.000\t4.000\tthree four\n"
    # without words: as before, the segment's span
    assert shape_cues([{k: seg[k] for k in ("start", "end", "text")}])[0]["start"] == 0.0


_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})")


def _parse_vtt(text: str) -> list[dict]:
    cues = []
    for m in _CUE.finditer(text):
        g = [int(x) for x in m.groups()]
        cues.append({"start": g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000,
                     "end": g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000})
    return cues


def test_cli_vtt_cues_start_at_the_speech_of_every_clip(tmp_path):
    """The issue's recording: the 12 example clips joined by 3 s pauses (3 minutes, 29 clips),
    CLI defaults, --format vtt."""
    audio, spans = timing.example_recording()
    path = tmp_path / "joined.wav"
    sf.write(str(path), audio, 16000)
    out = subprocess.run([sys.executable, str(ROOT / "transcribe.py"), "--model", str(DEMO),
                          "--format", "vtt", "--quiet", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    cues = _parse_vtt(out.stdout)
    rep = timing.cue_report(cues, spans)
    assert rep["with_cue"] == rep["clips"] == len(spans), rep
    assert rep["max_abs"] <= 0.3, rep
    assert rep["median_abs"] <= 0.15, rep
    assert rep["cues_spanning_pause"] == 0, rep


def test_cli_json_words_only_when_asked(tmp_path):
    import json
    base = [sys.executable, str(ROOT / "transcribe.py"), "--model", str(DEMO), "--quiet",
            str(ROOT / "example" / "sv.wav")]
    plain = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=200)
    timed = subprocess.run(base + ["--word-timestamps"], cwd=ROOT, capture_output=True,
                           text=True, timeout=200)
    assert plain.returncode == 0 and timed.returncode == 0, plain.stderr + timed.stderr
    a, b = json.loads(plain.stdout), json.loads(timed.stdout)
    assert "words" not in a and a["text"] == b["text"] == "Jag köpte 53 böcker."
    assert [w["word"] for w in b["words"]] == ["Jag", "köpte", "53", "böcker."]
    assert b["segments"][0]["words"] == b["words"]


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    from tests._app_server import start_app
    app = start_app(str(DEMO), tmp_path_factory.mktemp("words_app"), "--max-new-tokens", "96")
    yield app
    app.stop()


def test_openai_sdk_word_granularity_inside_segments(demo_app, tmp_path):
    from openai import OpenAI
    client = OpenAI(base_url=f"{demo_app.url}/v1", api_key="unused")
    # one short clip (one utterance) and a 40 s recording (the long-form path, 12 segments)
    audio, spans = timing.example_recording(seconds=40.0)
    long_path = tmp_path / "long.wav"
    sf.write(str(long_path), audio, 16000)
    for path in (ROOT / "example" / "pt.wav", long_path):
        with open(path, "rb") as f:
            r = client.audio.transcriptions.create(
                model="demo", file=f, response_format="verbose_json",
                timestamp_granularities=["word", "segment"])
        assert r.words, path
        assert _squash("".join(w.word for w in r.words)) == _squash(r.text)
        for w in r.words:
            seg = [s for s in r.segments if s.start <= w.start and w.end <= s.end]
            assert seg, (path, w, [(s.start, s.end) for s in r.segments])
        if path == long_path:
            assert len(r.segments) == len(spans)   # one segment per clip: pauses of 3 s split
    with open(ROOT / "example" / "pt.wav", "rb") as f:
        r = client.audio.transcriptions.create(model="demo", file=f,
                                               response_format="verbose_json")
    assert getattr(r, "words", None) is None       # segment granularity only: no words


def test_api_rejects_bad_granularities(demo_app):
    import httpx
    data = (ROOT / "example" / "pt.wav").read_bytes()
    for fields, needle in ((
            {"response_format": "verbose_json", "timestamp_granularities[]": "letter"},
            "'letter' is not one of word, segment"),
            ({"response_format": "json", "timestamp_granularities[]": "word"},
             "needs response_format verbose_json")):
        r = httpx.post(f"{demo_app.url}/v1/audio/transcriptions", data=fields,
                       files={"file": ("pt.wav", data, "audio/wav")}, timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert needle in err["message"] and err["param"] == "timestamp_granularities"
