"""Which of the model's 31 languages a transcript is in, and how sure: for results decoded with
no language given (the model then writes what it hears but never says which language).

Two sources, combined:

1. The text: py3langid's naive-Bayes byte n-gram classifier (its model ships inside the PyPI
   package; nothing is downloaded), restricted to our 31 languages, probabilities normalised.
   Cantonese and Mandarin share one script, so text written in Chinese characters is called
   Cantonese (yue) when it carries the characters only written Cantonese uses (嘅 咗 唔 喺 佢 哋 ...)
   and Mandarin (zh) otherwise. Filipino is langid's ``tl``.
2. The audio, where the text is not sure (short texts, digits and symbols: ``Custa 89,20 €.``
   reads as Finnish): the same audio is decoded once more with ITN off, and the spoken form
   (``Custa oitenta e nove euros e vinte cêntimos``) is classified too; the more confident
   answer stands. We tried the model's own likelihoods first (its transcript scored under each
   language name in the prompt's language slot, ``语音转写成{language}：``): on the demo model they
   differ by under 0.01 nats between languages, so the slot says nothing the audio has not
   already said, and they are not used.

The result is spelled as faster-whisper does (``language``, ``language_probability``) next to
this project's ``language_name``; a result whose language was given keeps it, with no
probability.
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata

from .languages import LANGUAGES, describe_language

log = logging.getLogger(__name__)

# Below this text probability the audio is decoded once more with ITN off (label_all). Chosen
# on bench/language_id.py's sentences (whole and cut to 3 words): every wrong text answer that
# 0.9 would send to the second decode, 0.75 sends too, with 40% fewer second decodes.
AUDIO_CHECK_BELOW = 0.75
# The spoken form needs only enough text to be told; the second decode stops here.
SPOKEN_TOKENS = 64
# Characters of written Cantonese that Mandarin text (almost) never uses ...
CANTONESE_MARKERS = frozenset("嘅咗唔喺佢哋冇嘢睇啲嚟乜嗰噉咩畀搵攞諗谂㗎喎囉啩嘥冚咁嚿唞咋噃冧")
# ... and uses of shared characters that are Cantonese: 呢 as "this" (呢個; Mandarin's 呢 is a
# final particle), 係 as "to be" (not 關係), 喇 as a particle (not 喇叭), 蚊 after a number
# (dollars; Mandarin's 蚊 is a mosquito).
CANTONESE_PATTERNS = re.compile(r"呢(?=[個个本件度啲排位隻只張张架部間间條条次])|(?<![關关聯联])係"
                                r"|喇(?!叭)|(?<=[0-9零一二三四五六七八九十百千萬万两兩])蚊")
_TO_LANGID = {"fil": "tl", "yue": "zh"}
_FROM_LANGID = {"tl": "fil"}

_identifier = None
_lock = threading.Lock()


def _classifier():
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
            ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            ident.set_languages(sorted({_TO_LANGID.get(x.code, x.code) for x in LANGUAGES}))
            _identifier = ident
        return _identifier


def preload() -> None:
    """Load the classifier in the background (about 3 s on first use: its model is stored
    xz-compressed), so that it overlaps the decoding whose text it will label."""
    if _identifier is None:
        threading.Thread(target=_classifier, name="language-id-load", daemon=True).start()


def _han_count(text: str) -> int:
    return sum(1 for c in text if "CJK UNIFIED" in unicodedata.name(c, ""))


def is_cantonese(text: str) -> bool:
    """Chinese-script text that reads as written Cantonese: two marker characters, or one per
    twenty Chinese characters."""
    han = _han_count(text)
    marks = (sum(1 for c in text if c in CANTONESE_MARKERS)
             + len(CANTONESE_PATTERNS.findall(text)))
    return marks >= 2 or (marks >= 1 and marks * 20 >= han)


def _has_letters(text: str) -> bool:
    return any(unicodedata.category(c)[0] == "L" for c in text)


def text_scores(text: str) -> list[tuple[str, float]]:
    """Our codes with their text probabilities, best first (empty for text without letters)."""
    if not text or not _has_letters(text):
        return []
    ranked = _classifier().rank(text)
    out = [(_FROM_LANGID.get(code, code), float(p)) for code, p in ranked]
    if out and out[0][0] == "zh" and is_cantonese(text):
        out[0] = ("yue", out[0][1])
    return out


def _spell(code: str, probability: float) -> dict:
    return {**describe_language(code), "language_probability": round(float(probability), 3)}


def detect(text: str, spoken=None) -> dict | None:
    """``{"language", "language_name", "language_probability"}`` for ``text``, or None when it
    has no letters. ``spoken``: the same audio's spoken-form transcript (ITN off), if one was
    made; the more confident of the two answers stands."""
    scores = text_scores(text)
    if not scores:
        return None
    best = scores[0]
    second = text_scores(spoken or "")
    if second and second[0][1] > best[1]:
        best = second[0]
    return _spell(*best)


def unsure(scores: list[tuple[str, float]]) -> bool:
    return bool(scores) and scores[0][1] < AUDIO_CHECK_BELOW


def label_all(results: list[dict], waves: dict, itn: bool = True, respeak=None) -> None:
    """Set the detected language on each result decoded with no language given
    (``language == "auto"``) that has text; the others are left as they are. ``waves``: index ->
    16 kHz samples. ``respeak(list of waves) -> list of texts``: decodes them once more with ITN
    off; asked only for the results whose text answer is unsure and were decoded with ITN on.
    A failing second decode is logged and the text answers stand: the transcript never pays."""
    todo, again = {}, []
    for i, r in enumerate(results):
        if r.get("language") != "auto" or r.get("error") or not r.get("text"):
            continue
        scores = text_scores(r["text"])
        if not scores:
            continue
        todo[i] = r
        if itn and respeak is not None and unsure(scores) and i in waves:
            again.append(i)
    spoken = {}
    if again:
        try:
            spoken = dict(zip(again, respeak([waves[i] for i in again])))
        except Exception:  # noqa: BLE001 - an optional stage never costs the transcript
            log.exception("the spoken-form decode for the language failed; text answers stand")
    for i, r in todo.items():
        r.update(detect(r["text"], spoken.get(i)))


def summarize(segments: list[dict], text: str) -> dict | None:
    """A long recording's language: the text classifier over the whole transcript, with each
    segment's own answer (``segments[i]["language"]``, set where it was detected) as
    ``languages``: the codes heard, most text first. None when nothing has letters."""
    share: dict[str, int] = {}
    for s in segments:
        code = s.get("language")
        if code and code != "auto":
            share[code] = share.get(code, 0) + len(s.get("text") or "")
    whole = detect(text)
    if whole is None:
        return None
    if share:
        # the segments' answers (checked against the audio where unsure) outvote the text
        best = max(share, key=share.get)
        if best != whole["language"]:
            probs = [s.get("language_probability", 0.0) for s in segments
                     if s.get("language") == best]
            whole = _spell(best, sum(probs) / len(probs) * share[best] / sum(share.values()))
    whole["languages"] = sorted(share, key=share.get, reverse=True) or [whole["language"]]
    return whole


def language_fields(result: dict) -> dict:
    """The language as results are spelled everywhere: ``language`` and ``language_name``, and
    ``language_probability`` where it was detected."""
    out = describe_language(result.get("language"))
    if result.get("language_probability") is not None and out["language"] != "auto":
        out["language_probability"] = result["language_probability"]
    return out


def openai_languages(result: dict) -> list[dict] | None:
    """OpenAI's ``languages`` field (``[{"code"}]``, the languages detected) for a result whose
    language was detected: every segment's, most text first; None where it was given."""
    if result.get("language_probability") is None:
        return None
    return [{"code": c} for c in (result.get("languages") or [result["language"]])]
