"""The 31 languages of Fun-ASR-MLT-Nano-2512 and how user input maps to the name the model expects.

The reference inserts the language string verbatim into the prompt (``语音转写成{language}：``), and
the model was trained on the Chinese names below (note 英文/日文/韩文 with 文, the rest with 语).
Users type ``en``, ``English`` or ``english``; we map all of those to ``英文``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1 where one exists (yue and fil have none)
    english: str
    native: str  # the language's own name, for menus
    model_name: str  # the exact string the model was trained with


LANGUAGES: tuple[Language, ...] = (
    Language("zh", "Chinese", "中文", "中文"),
    Language("en", "English", "English", "英文"),
    Language("yue", "Cantonese", "粵語", "粤语"),
    Language("ja", "Japanese", "日本語", "日文"),
    Language("ko", "Korean", "한국어", "韩文"),
    Language("vi", "Vietnamese", "Tiếng Việt", "越南语"),
    Language("id", "Indonesian", "Bahasa Indonesia", "印尼语"),
    Language("th", "Thai", "ไทย", "泰语"),
    Language("ms", "Malay", "Bahasa Melayu", "马来语"),
    Language("fil", "Filipino", "Filipino", "菲律宾语"),
    Language("ar", "Arabic", "العربية", "阿拉伯语"),
    Language("hi", "Hindi", "हिन्दी", "印地语"),
    Language("bg", "Bulgarian", "Български", "保加利亚语"),
    Language("hr", "Croatian", "Hrvatski", "克罗地亚语"),
    Language("cs", "Czech", "Čeština", "捷克语"),
    Language("da", "Danish", "Dansk", "丹麦语"),
    Language("nl", "Dutch", "Nederlands", "荷兰语"),
    Language("et", "Estonian", "Eesti", "爱沙尼亚语"),
    Language("fi", "Finnish", "Suomi", "芬兰语"),
    Language("el", "Greek", "Ελληνικά", "希腊语"),
    Language("hu", "Hungarian", "Magyar", "匈牙利语"),
    Language("ga", "Irish", "Gaeilge", "爱尔兰语"),
    Language("lv", "Latvian", "Latviešu", "拉脱维亚语"),
    Language("lt", "Lithuanian", "Lietuvių", "立陶宛语"),
    Language("mt", "Maltese", "Malti", "马耳他语"),
    Language("pl", "Polish", "Polski", "波兰语"),
    Language("pt", "Portuguese", "Português", "葡萄牙语"),
    Language("ro", "Romanian", "Română", "罗马尼亚语"),
    Language("sk", "Slovak", "Slovenčina", "斯洛伐克语"),
    Language("sl", "Slovenian", "Slovenščina", "斯洛文尼亚语"),
    Language("sv", "Swedish", "Svenska", "瑞典语"),
)

# Other spellings people use for the same language.
_ALIASES = {
    "cmn": "zh", "zho": "zh", "chi": "zh", "mandarin": "zh", "zh-cn": "zh", "zh-hans": "zh",
    "zh-tw": "zh", "zh-hant": "zh", "汉语": "zh", "普通话": "zh", "中文普通话": "zh",
    "eng": "en", "en-us": "en", "en-gb": "en", "英语": "en",
    "zh-hk": "yue", "zh-yue": "yue", "广东话": "yue", "粤语": "yue", "粵語": "yue",
    "jpn": "ja", "日语": "ja", "日本语": "ja",
    "kor": "ko", "韩语": "ko", "韓國語": "ko", "朝鲜语": "ko",
    "tl": "fil", "tagalog": "fil", "in": "id", "bahasa": "id",
    "slovene": "sl",
}

_AUTO = {"", "auto", "automatic", "none", "detect", "自动"}
_LONGEST_NAME = 100   # characters: any name or alias below, with room for spaces around it

_LOOKUP: dict[str, Language] = {}
for _lang in LANGUAGES:
    for _key in (_lang.code, _lang.english, _lang.native, _lang.model_name):
        _LOOKUP[_key.lower()] = _lang
for _alias, _code in _ALIASES.items():
    _LOOKUP[_alias] = next(lang for lang in LANGUAGES if lang.code == _code)


def resolve_language(value: str | None) -> Language | None:
    """Map a user's language choice to a Language; None means "let the model decide".

    Raises ValueError for a name we do not know rather than sending the model a string it was
    never trained on (the reference would insert it verbatim and the output degrades silently).
    """
    if value is None:
        return None
    text = str(value)
    # a name longer than any we know (the longest is 16 characters) is not lowered and
    # split first: a client's 1 MB "language" cost four copies of itself on every request
    key = text.strip().lower().replace("_", "-") if len(text) <= _LONGEST_NAME else None
    if key in _AUTO:
        return None
    lang = key and (_LOOKUP.get(key) or _LOOKUP.get(key.split("-")[0]))
    if not lang:
        known = ", ".join(f"{x.code} ({x.english})" for x in LANGUAGES)
        # the value quoted cut short: a client's 1 MB "language" is not echoed whole
        shown = repr(value) if len(text) <= 40 else f"{text[:40]!r}... ({len(text):,} characters)"
        raise ValueError(f"unknown language {shown}; use 'auto' or one of: {known}")
    return lang


def model_language_name(value: str | None) -> str | None:
    """The exact prompt string for a user's choice, or None for automatic."""
    lang = resolve_language(value)
    return None if lang is None else lang.model_name


AUTO = "auto"


def describe_language(value: str | None) -> dict:
    """How every result spells the language: ``{"language": ISO code, "language_name": English
    name}``, or ``{"language": "auto", "language_name": "automatic"}`` when the model was not
    told one. On automatic the model writes the text in whatever language it hears and does not
    say which, so "auto" is all there is to report, never a guess."""
    lang = resolve_language(value)
    if lang is None:
        return {"language": AUTO, "language_name": "automatic"}
    return {"language": lang.code, "language_name": lang.english}


def language_label(value: str | None) -> str:
    """The short form for tables and logs: ``en (English)``, or ``auto``."""
    d = describe_language(value)
    return AUTO if d["language"] == AUTO else f"{d['language']} ({d['language_name']})"
