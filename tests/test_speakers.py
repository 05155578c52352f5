"""Speaker diarization (engine.speakers) on real speech, and speakers on every output path.

The conversation: two real voices from the shared clips taking turns (JFK, a LibriSpeech
reader), A B A B with 0.6 s pauses; its true turns are known by construction.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio import load_audio
from engine.speakers import models
from engine.speakers.diarize import (
    Diarization,
    Turn,
    diarize,
    letters,
    reference_embedding,
)
from engine.speakers.options import (
    SpeakerError,
    SpeakerRequest,
    known_speakers,
    parse_count,
)
from engine.speakers.transcript import (
    by_speaker,
    label_segments,
    speaker_spans,
    to_rttm,
)

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
PAUSE = np.zeros(int(0.6 * SR), np.float32)


@pytest.fixture(scope="module")
def voices(speech_dir):
    jfk = load_audio(str(speech_dir / "en" / "whisper_jfk.flac"))
    libri = load_audio(str(speech_dir / "en" / "lhotse_librispeech_2412-153948-0000.flac"))
    return jfk, libri


@pytest.fixture(scope="module")
def conversation(voices, tmp_path_factory):
    """(path, true turns [(start, end, voice)]) for JFK / LibriSpeech taking turns."""
    jfk, libri = voices
    parts = [("jfk", jfk[:88000]), ("libri", libri[:96000]), ("jfk", jfk[88000:]),
             ("libri", libri[96000:])]
    audio, truth, t = [], [], 0.0
    for i, (who, x) in enumerate(parts):
        if i:
            audio.append(PAUSE)
            t += len(PAUSE) / SR
        audio.append(x)
        truth.append((t, t + len(x) / SR, who))
        t += len(x) / SR
    path = tmp_path_factory.mktemp("speakers") / "two_voices.wav"
    sf.write(path, np.concatenate(audio), SR)
    return path, truth


def _agreement(d: Diarization, truth) -> float:
    """Share of the labelled time inside the true turns (0.25 s collar at each edge) that has
    the right label, under the best mapping of voices to labels (the clips' own pauses are
    inside the true turns, so this scores who, not whether)."""
    from itertools import permutations
    voices = sorted({w for _, _, w in truth})
    best = 0.0
    for labels in permutations(d.speakers, len(voices)) if len(d.speakers) >= len(voices) else [()]:
        m = dict(zip(voices, labels))
        ok = tot = 0.0
        for s, e, w in truth:
            s, e = s + 0.25, e - 0.25
            for t in d.turns:
                o = max(0.0, min(e, t.end) - max(s, t.start))
                tot += o
                ok += o if t.speaker == m.get(w) else 0.0
        best = max(best, ok / max(tot, 1e-9))
    return best


def test_two_voices_taking_turns(conversation):
    path, truth = conversation
    d = diarize(str(path))
    assert d.speakers == ["A", "B"]                      # two voices, letters by first speech
    assert d.turns[0].speaker == "A" and d.turns[0].start < 1.0
    assert _agreement(d, truth) >= 0.95
    inside = sum(max(0.0, min(e, t.end) - max(s, t.start)) for s, e, _ in truth for t in d.turns)
    assert inside >= 0.6 * sum(e - s for s, e, _ in truth)     # most of the speech is labelled
    spans = speaker_spans(d)
    # the voices' order (JFK pauses over 1 s inside his first turn: two spans there)
    order = [s for i, (_, _, s) in enumerate(spans) if i == 0 or spans[i - 1][2] != s]
    assert order == ["A", "B", "A", "B"]
    assert all(b[0] >= a[1] for a, b in zip(spans[:-1], spans[1:]))   # not overlapping
    again = diarize(str(path))                           # deterministic
    assert [t.as_dict() for t in again.turns] == [t.as_dict() for t in d.turns]


def test_count_given_and_bounded(conversation):
    path, _ = conversation
    assert diarize(str(path), num_speakers=1).speakers == ["A"]
    assert len(diarize(str(path), num_speakers=3).speakers) <= 3
    assert len(diarize(str(path), min_speakers=1, max_speakers=1).speakers) == 1


def test_silence_has_no_speakers():
    d = diarize(np.zeros(5 * SR, np.float32))
    assert d.turns == [] and d.speakers == []


def test_known_speakers_by_name(conversation, voices):
    path, truth = conversation
    jfk, libri = voices
    known = known_speakers(["John", "Reader"], [jfk[-4 * SR:], libri[-4 * SR:]],
                           reference_embedding)
    d = diarize(str(path), known=known)
    assert d.speakers == ["John", "Reader"]
    assert [d.speaker_at(s, e) for s, e, _ in truth] == ["John", "Reader", "John", "Reader"]


@pytest.mark.parametrize("value,expect", [("auto", (None, None, None)), ("2", (2, None, None)),
                                          ("2-4", (None, 2, 4)), ("3-3", (3, None, None))])
def test_parse_count(value, expect):
    assert parse_count(value) == expect


@pytest.mark.parametrize("value,words", [("0", "out of range"), ("1000", "out of range"),
                                         ("4-2", "empty"), ("two", "not auto")])
def test_parse_count_errors_name_the_field(value, words):
    with pytest.raises(SpeakerError) as e:
        parse_count(value)
    assert e.value.param == "speakers" and words in str(e.value)


def test_bad_references(voices):
    jfk, _ = voices
    with pytest.raises(SpeakerError, match="under 1 s of speech") as e:
        known_speakers(["Quiet"], [np.zeros(3 * SR, np.float32)], reference_embedding)
    assert e.value.param == "known_speaker_references[]"
    with pytest.raises(SpeakerError, match="2-10 s"):
        known_speakers(["Short"], [jfk[:SR]], reference_embedding)
    with pytest.raises(SpeakerError, match="not a usable name") as e:
        known_speakers(["<b>x</b>"], [jfk[:3 * SR]], reference_embedding)
    assert e.value.param == "known_speaker_names[]"
    with pytest.raises(SpeakerError, match="pair up"):
        known_speakers(["A1", "B1"], [jfk[:3 * SR]], reference_embedding)


def test_onnx_embedding_model_of_wespeaker_kind(conversation, tmp_path):
    """The --speaker-model path: an ONNX file with WeSpeaker's interface (feats [B, T, 80] ->
    embs [B, D]), built here from a small torch module, loads and diarizes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.proj = torch.nn.Parameter(torch.randn(160, 32, generator=g))

        def forward(self, feats):      # mean and std of each bin over time -> projection
            stats = torch.cat([feats.mean(1), feats.std(1)], dim=1)
            return stats @ self.proj

    path = tmp_path / "tiny_wespeaker.onnx"
    torch.onnx.export(Tiny(), (torch.randn(1, 50, 80),), str(path), input_names=["feats"],
                      output_names=["embs"], dynamic_axes={"feats": {0: "B", 1: "T"},
                                                           "embs": {0: "B"}}, dynamo=False)
    m = models.get_embedding(str(path))
    assert isinstance(m, models.OnnxEmbedding) and m.bins == 80 and m.dim == 32
    e = m.embed_many([m.features(np.random.default_rng(0).standard_normal(SR).astype(np.float32)
                                 * 0.1)])
    assert e.shape == (1, 32) and abs(np.linalg.norm(e) - 1) < 1e-5
    d = diarize(str(conversation[0]), embedding_model=str(path), num_speakers=2)
    assert d.speakers == ["A", "B"] and d.turns
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(models.ModelMissing, match="not a loadable ONNX"):
        models.get_embedding(str(broken))


def test_words_carry_speakers_and_cut_segments():
    d = Diarization([Turn(0.0, 2.0, "A"), Turn(2.2, 4.0, "B")], ["A", "B"], 4.0)
    seg = {"start": 0.0, "end": 4.0, "text": "hello there general kenobi",
           "words": [{"word": "hello", "start": 0.1, "end": 0.5},
                     {"word": "there", "start": 0.6, "end": 1.0},
                     {"word": "general", "start": 2.3, "end": 2.9},
                     {"word": "kenobi", "start": 3.0, "end": 3.6}]}
    out = label_segments([seg], d)
    assert [(s["speaker"], s["text"], s["start"], s["end"]) for s in out] == [
        ("A", "hello there", 0.1, 1.0), ("B", "general kenobi", 2.3, 3.6)]
    assert [w["speaker"] for w in out[1]["words"]] == ["B", "B"]
    assert by_speaker(out) == "A: hello there\n\nB: general kenobi"


def test_output_formats_show_speakers():
    from engine.longform.subtitles import to_srt, to_tsv, to_vtt
    segs = [{"start": 0.0, "end": 1.5, "text": "hi there", "speaker": "A"},
            {"start": 1.8, "end": 3.0, "text": "hello <you>", "speaker": "Ann Lee"}]
    srt = to_srt(segs)
    assert "A: hi there" in srt and "Ann Lee: hello <you>" in srt
    vtt = to_vtt(segs)
    assert "<v A>hi there" in vtt and "<v Ann Lee>hello &lt;you&gt;" in vtt
    import webvtt
    cues = webvtt.from_buffer(io.StringIO(vtt))
    assert [c.voice for c in cues] == ["A", "Ann Lee"]
    assert to_tsv(segs).splitlines() == ["start\tend\tspeaker\ttext", "0.000\t1.500\tA\thi there",
                                         "1.800\t3.000\tAnn Lee\thello <you>"]
    d = Diarization([Turn(0.0, 1.5, "A"), Turn(1.0, 3.0, "Ann Lee")], ["A", "Ann Lee"], 3.0)
    assert to_rttm(d, "my file").splitlines() == [
        "SPEAKER my_file 1 0.000 1.500 <NA> <NA> A <NA> <NA>",
        "SPEAKER my_file 1 1.000 2.000 <NA> <NA> Ann_Lee <NA> <NA>"]
    assert [letters(i) for i in (0, 25, 26, 27)] == ["A", "Z", "AA", "AB"]


def test_transcript_survives_failed_diarization(conversation, tmp_path):
    """A diarization that fails (here: an embedding model file that is not ONNX) costs the
    speakers, never the transcript: it is transcribed as without speakers and says why."""
    from serving.diarized import transcribe_with_speakers
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    calls = []

    def run_long(spans):
        calls.append(spans)
        return {"text": "hello", "segments": [{"start": 0.0, "end": 1.0, "text": "hello"}],
                "duration": 1.0, "error": None}

    res = transcribe_with_speakers(str(conversation[0]), "two_voices.wav",
                                   SpeakerRequest(embedding_model=str(broken)), run_long)
    assert calls == [None] and res["text"] == "hello" and res["speakers"] == []
    assert res["speakers_error"].startswith("speaker diarization failed")
    res = transcribe_with_speakers(str(conversation[0]), "two_voices.wav", SpeakerRequest(),
                                   run_long)
    assert calls[1] and res["speakers"] == ["A", "B"] and res["speakers_error"] is None


def _data_url(audio) -> str:
    buf = io.BytesIO()
    sf.write(buf, audio, SR, format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def test_http_diarized_json_with_the_openai_sdk(conversation, voices, tmp_path):
    """The real app; OpenAI's own client asks for diarized_json with two known speakers."""
    from openai import BadRequestError, OpenAI

    from tests._app_server import start_app
    from bench._live_audio import DEMO_MODEL
    jfk, libri = voices
    app = start_app(str(DEMO_MODEL), tmp_path, "--max-new-tokens", "64")
    try:
        client = OpenAI(base_url=app.url + "/v1", api_key="none")
        path, _ = conversation
        with open(path, "rb") as f:
            r = client.audio.transcriptions.create(
                model="x", file=f, response_format="diarized_json",
                known_speaker_names=["John", "Reader"],
                known_speaker_references=[_data_url(jfk[-4 * SR:]), _data_url(libri[-4 * SR:])])
        assert r.task == "transcribe" and r.segments
        assert {s.type for s in r.segments} == {"transcript.text.segment"}
        said = [s.speaker for s in r.segments]          # a pause over 1 s cuts a turn in two
        assert [x for i, x in enumerate(said) if i == 0 or said[i - 1] != x] == \
            ["John", "Reader", "John", "Reader"]
        assert all(s.end > s.start for s in r.segments)
        with open(path, "rb") as f:       # letters without known speakers; verbose_json too
            v = client.audio.transcriptions.create(
                model="x", file=f, response_format="verbose_json",
                extra_body={"speakers": "auto"})
        v = v.model_dump()
        assert v["speakers"] == ["A", "B"] and v["segments"][0]["speaker"] == "A"
        for extra, param in [({"speakers": "0"}, "speakers"), ({"speakers": "1000"}, "speakers"),
                             ({"known_speaker_names": ["<script>"],
                               "known_speaker_references": [_data_url(jfk[:3 * SR])]},
                              "known_speaker_names[]"),
                             ({"known_speaker_names": ["Quiet"],
                               "known_speaker_references": [_data_url(np.zeros(3 * SR))]},
                              "known_speaker_references[]"),
                             ({"known_speaker_names": ["Brief"],
                               "known_speaker_references": [_data_url(jfk[:SR])]},
                              "known_speaker_references[]")]:
            with open(path, "rb") as f, pytest.raises(BadRequestError) as e:
                client.audio.transcriptions.create(model="x", file=f,
                                                   response_format="diarized_json",
                                                   extra_body=extra)
            body = e.value.response.json()["error"]
            assert body["param"] == param, body
        # the page: the Speakers menu, the transcript grouped by speaker, an RTTM download
        from gradio_client import Client, handle_file
        page = Client(app.url, verbose=False)
        _, transcript, downloads, rows, _ = page.predict(
            [handle_file(str(path))], None, "auto", True, "", "auto", api_name="/transcribe")
        assert rows[0]["speakers"] == ["A", "B"]
        paragraphs = transcript.split("\n\n")
        assert [p.split(":")[0] for p in paragraphs][:4] == ["A", "B", "A", "B"]
        rttm = next(Path(d) for d in downloads if str(d).endswith(".rttm"))
        assert {line.split()[7] for line in rttm.read_text().splitlines()} == {"A", "B"}
        _, plain, _, rows, _ = page.predict(      # without the new argument: no speakers
            [handle_file(str(path))], None, "auto", True, "", api_name="/transcribe")
        assert "speakers" not in rows[0] and not plain.startswith("A: ")
    finally:
        app.stop()


def test_realtime_two_voices_get_two_consistent_labels(voices, tmp_path):
    """/v1/realtime?speakers=auto: a real WebSocket client streams two voices taking turns at
    24 kHz; every completed utterance carries the label of its voice, two labels in all."""
    import threading

    from tests._app_server import start_app
    from bench._live_audio import DEMO_MODEL
    from test_realtime import append_all, recv, ws_connect

    jfk, libri = voices
    gap = np.zeros(int(1.5 * SR), np.float32)
    parts = [("jfk", jfk[:88000]), ("libri", libri[:96000]), ("jfk", jfk[88000:]),
             ("libri", libri[96000:])]
    audio, truth, t = [gap], [], len(gap) / SR
    for who, x in parts:
        audio += [x, gap]
        truth.append((t, t + len(x) / SR, who))
        t += (len(x) + len(gap)) / SR
    pcm16k = np.concatenate(audio)
    pcm = load_audio((pcm16k, SR), 24000)
    pcm = np.clip(np.round(pcm * 32768), -32768, 32767).astype(np.int16)
    app = start_app(str(DEMO_MODEL), tmp_path, "--max-new-tokens", "32")
    try:
        url = app.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription&speakers=auto"
        ws = ws_connect(url)
        assert recv(ws)["type"] == "session.created"
        sender = threading.Thread(target=append_all, args=(ws, pcm, 24000), kwargs={"pace": 0.3})
        sender.start()
        done = []
        deadline = t - 1.0            # the last utterance ends here (session seconds)
        while not done or done[-1]["end"] < deadline - 2.0:
            e = recv(ws, 120)
            assert e["type"] != "error", e
            if e["type"].endswith(".completed"):
                done.append(e)
        sender.join()
        ws.close()
    finally:
        app.stop()
    voice_of = {}
    for e in done:
        mid = (e["start"] + e["end"]) / 2
        who = next(w for s, en, w in truth if s - 0.5 <= mid <= en + 0.5)
        if e["end"] - e["start"] >= 1.0:      # long enough to be sure whose voice it is
            voice_of.setdefault(who, set()).add(e["speaker"])
    assert set(voice_of) == {"jfk", "libri"}
    assert all(len(v) == 1 for v in voice_of.values()), voice_of     # consistent
    assert voice_of["jfk"] != voice_of["libri"]
    assert {e["speaker"] for e in done} <= {"A", "B"}


def test_the_estimated_count_does_not_grow_with_the_length(conversation):
    """The two-voice conversation three times over (73 s): still two speakers. (Ward's merge
    distance grows with the clusters' sizes; before the cut followed it, this gave 3, and 20
    repeats gave 10.)"""
    audio = load_audio(str(conversation[0]))
    d = diarize(np.tile(audio, 3))
    assert d.speakers == ["A", "B"]


def test_windows_streamed_in_blocks_hold_the_files_own_audio():
    """The 10 s windows cut from a stream of blocks are the file's samples at their offsets,
    the last one (aligned on the file's end, before the next step) included: it used to be
    cut from the wrong part of the buffer, which garbled the last 10 s of every file."""
    from engine.speakers.diarize import _windows
    from engine.speakers.models import WINDOW_SAMPLES
    audio = np.random.default_rng(0).standard_normal(int(34.3 * SR)).astype(np.float32)
    for block in (SR, 7 * SR, 30 * SR, len(audio)):
        items = list(_windows((audio[i:i + block] for i in range(0, len(audio), block)), 39960))
        assert items[-1] == len(audio)
        wins = items[:-1]
        last = (len(audio) - WINDOW_SAMPLES) // 270 * 270          # on the frame grid
        assert [s for s, _ in wins][-2:] == [359640, last] and last > 359640 + 270
        for s, w in wins:
            want = audio[s:s + WINDOW_SAMPLES]
            assert np.array_equal(w[:len(want)], want) and not w[len(want):].any()
