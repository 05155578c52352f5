"""Watch terms go to the decoder as hotwords, after the user's own and within the hotword caps,
on a random-weight checkpoint of the official layout (trained with hotword prompts, as its
config declares); the prompt that reaches the model is compared exactly with the reference's
prompt building (funasr 1.4.16). The demo checkpoint declares it was trained without hotword
prompts: nothing is added to its prompt."""
from __future__ import annotations

from pathlib import Path

import pytest

from compliance import Detector, WatchList
from compliance import service
from compliance.cli import hotwords as cli_hotwords
from compliance.live import LiveMonitor
from engine.prompt import MAX_HOTWORD_TOKENS, check_hotwords
from model import FunASRNano
from serving.model_holder import ModelHolder
from serving.pipeline import Options, transcribe_items
from tests import reference as ref

ROOT = Path(__file__).resolve().parents[1]
WATCH = ("minor thing\tconfidential\tlow\n"
         "project falcon\tconfidential\thigh\n"
         "机密文件\tconfidential\tcritical\n"
         "alpha\tconfidential\tmedium\n")        # also one of the user's: sent once
USER = ["alpha", "beta"]
MERGED = ["alpha", "beta", "机密文件", "project falcon", "minor thing"]   # most severe first
CLIP = "en/lhotse_ljspeech_LJ002-0020.wav"


@pytest.fixture(scope="module")
def ours(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def detector():
    return Detector(watch=WatchList.parse(WATCH, source="terms.tsv"), pii=True)


def _reference_ids(tiny_reference, path, hotwords) -> list[int]:
    """The reference's decoder input ids for English, ITN on, with the audio slots cut out."""
    want = ref.reference_prompt(tiny_reference, str(path), "英文", True, hotwords)
    a, n = want["audio_start"], want["audio_len"]
    return want["ids"][:a] + want["ids"][a + n:]


def _record_hotwords(model, monkeypatch) -> list:
    """The hotword lists ``model``'s prompts are built with, in order (a list filled as they
    come); the real prompt_ids stays reachable as ``model.prompt_ids.__wrapped__``."""
    seen, real = [], model.prompt_ids

    def recording(language=None, itn=True, hotwords=()):
        seen.append(list(hotwords))
        return real(language, itn, hotwords)
    recording.__wrapped__ = real
    monkeypatch.setattr(model, "prompt_ids", recording)
    return seen


def test_every_path_merges_watch_terms_after_the_users_hotwords(ours, detector):
    assert ours.hotword_prompts and ours.describe()["hotword_prompts"] is True
    # the CLI (transcribe.py), the API (Options.watch_hotwords, merged by the pipeline with the
    # model) and a realtime session (LiveMonitor.hotwords before each decode): one rule
    assert cli_hotwords(detector, list(USER), ours) == MERGED
    assert ours.hotwords_with(USER, service.watch_hotwords(detector)) == MERGED
    monitor = LiveMonitor(detector, lambda alert: None, "sess_test")
    assert monitor.hotwords(USER, ours) == MERGED
    assert monitor.hotwords([], ours) == MERGED[2:3] + ["project falcon", "alpha", "minor thing"]
    # no watch list: the user's hotwords unchanged
    assert cli_hotwords(Detector(pii=True), list(USER), ours) == USER


def test_the_pipeline_prompt_holds_the_terms_exactly_as_the_reference_builds_it(
        ours, detector, tiny_reference, speech_dir, monkeypatch):
    """A real transcription through serving.pipeline (what the API and the page call): the
    prompt the model is given holds the user's hotwords and the watch terms, and its ids are
    the reference's for that list."""
    seen = _record_hotwords(ours, monkeypatch)
    real = ours.prompt_ids.__wrapped__
    holder = ModelHolder("tiny", "cpu", "fp32", loader=lambda *a: ours)
    try:
        path = speech_dir / CLIP
        opts = Options(language="en", hotwords=list(USER), max_new_tokens=4,
                       watch_hotwords=service.watch_hotwords(detector))
        [row] = transcribe_items(holder, [(path.name, path.read_bytes())], opts)
        assert not row["error"], row
    finally:
        holder.close()
    assert seen and all(h == MERGED for h in seen), seen
    prefix, suffix = real("英文", True, MERGED)
    assert prefix + suffix == _reference_ids(tiny_reference, path, MERGED)
    text = ours.tokenizer.decode(prefix)
    assert all(term in text for term in MERGED)


def test_watch_terms_stay_within_the_caps_and_never_push_out_the_users(ours):
    """A long list in a script of many tokens per character: the merged list passes the
    model's own check (token count included), the user's hotwords come first and whole, and
    the watch terms fill what is left."""
    terms = "\n".join(f"ᚠᚢᚦᚨᚱᚲ{i:04d}ᚷᚹᚺᚾ\tconfidential\thigh" for i in range(300))
    det = Detector(watch=WatchList.parse(terms))
    user = [f"name{i}" for i in range(20)]
    merged = cli_hotwords(det, list(user), ours)
    assert merged[:20] == user and len(merged) > 20
    check_hotwords(merged, ours.tokenizer.encode)          # raises over any cap
    one_more = merged + [t for t in det.watch.hotwords() if t not in merged][:1]
    assert len(ours.tokenizer.encode(", ".join(one_more))) > MAX_HOTWORD_TOKENS or \
        len(one_more) == len(merged)


def test_the_demo_checkpoint_declares_no_hotword_prompts_and_gets_no_watch_terms(detector):
    demo = FunASRNano.from_pretrained(str(ROOT / "models" / "demo"), device="cpu",
                                      dtype="fp32")
    assert demo.hotword_prompts is False and demo.describe()["hotword_prompts"] is False
    assert cli_hotwords(detector, list(USER), demo) == USER
    assert LiveMonitor(detector, lambda alert: None, "s").hotwords([], demo) == []
    assert demo.hotwords_with([], service.watch_hotwords(detector)) == []


def test_the_page_offers_its_watch_box_to_the_decoder(ours, speech_dir, monkeypatch):
    """The Files tab's Transcribe (serving.files_tab's handler, as the named /transcribe
    endpoint calls it): the Compliance box's terms reach the prompt after the user's hotwords;
    a watch list with a bad line costs neither the transcription nor the user's hotwords."""
    from serving.files_tab import page_transcriber
    from serving.settings import parse_settings
    seen = _record_hotwords(ours, monkeypatch)
    settings = parse_settings(["--max-new-tokens", "4"], environ={})
    holder = ModelHolder("tiny", "cpu", "fp32", loader=lambda *a: ours)
    try:
        transcribe = page_transcriber(settings, holder, speech_dir)   # files it may read
        path = str(speech_dir / CLIP)
        quiet = lambda *a, **k: None   # noqa: E731  (gr.Progress outside a request)
        table, text, *_ = transcribe([path], None, "en", True, ", ".join(USER), "off", None,
                                     None, WATCH, progress=quiet)
        assert seen and seen[-1] == MERGED, seen
        seen.clear()
        transcribe([path], None, "en", True, ", ".join(USER), "off", None, None,
                   "a term\tconfidential\tnot-a-severity\n", progress=quiet)
        assert seen and seen[-1] == USER, seen
    finally:
        holder.close()
