"""Number words -> digits, per language, so detection sees the same digits with ITN on or off.

With ITN off the model writes numbers as words (``four one five``, ``neljäkymmentäkaksi``,
``一三八``). Each language gets a lexicon ``phrase -> value``: num2words' own spelling of 0..2099
where num2words knows the language (20 of the 31), digit words written here for the rest, and
extras people say for digits (English ``oh``, Korean ``공``). Chinese and Japanese numerals
(``一百三十五``, ``一三八``) are parsed by ``parse_cjk``. Lexicons are built on first use of a
language and cached (num2words: about 35 ms per language).
"""
from __future__ import annotations

import functools
import unicodedata

# num2words' code for our language code, where it has one.
_N2W = {"en": "en", "ja": "ja", "ko": "ko", "vi": "vi", "id": "id", "th": "th", "ar": "ar",
        "cs": "cs", "da": "da", "nl": "nl", "fi": "fi", "hu": "hu", "lv": "lv", "lt": "lt",
        "pl": "pl", "pt": "pt", "ro": "ro", "sk": "sk", "sl": "sl", "sv": "sv"}

# Digit words 0..9 for languages num2words lacks (and alternatives people say for a digit).
_DIGITS = {
    "ms": "kosong satu dua tiga empat lima enam tujuh lapan sembilan",
    "fil": "sero isa dalawa tatlo apat lima anim pito walo siyam",
    "hi": "शून्य एक दो तीन चार पाँच छह सात आठ नौ",
    "bg": "нула едно две три четири пет шест седем осем девет",
    "hr": "nula jedan dva tri četiri pet šest sedam osam devet",
    "et": "null üks kaks kolm neli viis kuus seitse kaheksa üheksa",
    "el": "μηδέν ένα δύο τρία τέσσερα πέντε έξι επτά οκτώ εννέα",
    "ga": "náid aon dó trí ceathair cúig sé seacht ocht naoi",
    "mt": "żero wieħed tnejn tlieta erbgħa ħamsa sitta sebgħa tmienja disgħa",
}
_EXTRA = {
    "en": {"oh": 0},
    "ms": {"sifar": 0, "kosong": 0, "sepuluh": 10},
    "id": {"kosong": 0, "nol": 0},
    "hi": {"पांच": 5, "छः": 6, "छे": 6},
    "el": {"εφτά": 7, "οχτώ": 8, "εννιά": 9, "τέσσερις": 4, "τρεις": 3},
    "hr": {"jedna": 1, "jedno": 1, "dvije": 2},
    "bg": {"един": 1, "една": 1, "два": 2},
    "ga": {"a náid": 0, "a haon": 1, "a dó": 2, "a trí": 3, "a ceathair": 4, "a cúig": 5,
           "a sé": 6, "a seacht": 7, "a hocht": 8, "a naoi": 9},
    "pt": {"dois": 2, "duas": 2, "meia": 6},
    "th": {"โท": 2},
    "vi": {"không": 0, "linh": 0, "lẻ": 0},
    "cs": {"jedna": 1, "jedno": 1, "dvě": 2},
    "sk": {"jedna": 1, "jedno": 1, "dve": 2},
    "pl": {"jedna": 1, "jedno": 1, "dwie": 2},
    "lt": {"nulis": 0},
    "sv": {"ett": 1, "nolla": 0},
    "da": {"nul": 0, "et": 1},
    "ar": {"صفر": 0, "واحد": 1, "اثنان": 2, "اثنين": 2},
}

# Languages written without spaces between words: number words may sit inside a word.
NO_SPACES = {"zh", "yue", "ja", "th"}
CJK = {"zh", "yue", "ja"}

_CJK_DIGIT = {c: i for i, c in enumerate("零一二三四五六七八九")}
_CJK_DIGIT.update({"〇": 0, "两": 2, "兩": 2, "幺": 1, "壹": 1, "贰": 2, "叁": 3, "肆": 4,
                   "伍": 5, "陆": 6, "柒": 7, "捌": 8, "玖": 9})
_CJK_UNIT = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_CJK_BIG = {"万": 10_000, "萬": 10_000, "亿": 100_000_000, "億": 100_000_000}
CJK_NUMERAL_CHARS = set(_CJK_DIGIT) | set(_CJK_UNIT) | set(_CJK_BIG)
# Sino-Korean numerals in hangul: the same structure as Chinese.
_KO_DIGIT = {c: i for i, c in enumerate("영일이삼사오육칠팔구")}
_KO_DIGIT["공"] = 0
_KO_UNIT = {"십": 10, "백": 100, "천": 1000}
_KO_BIG = {"만": 10_000, "억": 100_000_000}
KO_NUMERAL_CHARS = set(_KO_DIGIT) | set(_KO_UNIT) | set(_KO_BIG)


def norm(text: str) -> str:
    """The spelling lexicon keys and views share: NFKC, lower case, hyphens as spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("-", " ").replace(",", " ")
    return " ".join(text.split())


@functools.lru_cache(maxsize=None)
def lexicon(lang: str) -> dict[str, int]:
    """phrase (``norm`` spelling) -> value for ``lang``; empty for CJK (see ``parse_cjk``)."""
    out: dict[str, int] = {}
    code = _N2W.get(lang)
    if code and lang not in CJK and lang != "ko":
        from num2words import num2words
        for n in list(range(1000)) + list(range(1000, 2100)):   # and years
            try:
                phrase = norm(num2words(n, lang=code))
            except Exception:  # noqa: BLE001 - a spelling num2words lacks is left out
                continue
            out.setdefault(phrase, n)
            if lang == "en" and " and " in phrase:      # "four hundred fifteen" is said too
                out.setdefault(phrase.replace(" and ", " "), n)
    if lang in _DIGITS:
        for i, wd in enumerate(_DIGITS[lang].split()):
            out.setdefault(norm(wd), i)
    for wd, n in _EXTRA.get(lang, {}).items():
        out.setdefault(norm(wd), n)
    return out


def parse_cjk(run: str) -> str | None:
    """A run of Chinese/Japanese (or Sino-Korean hangul) numerals -> digits: with unit
    characters as a value (一百三十五 -> 135), without them digit by digit (一三八 -> 138)."""
    digit = {**_CJK_DIGIT, **_KO_DIGIT}
    unit = {**_CJK_UNIT, **_KO_UNIT}
    big = {**_CJK_BIG, **_KO_BIG}
    if not any(c in unit or c in big for c in run):
        if all(c in digit for c in run):
            return "".join(str(digit[c]) for c in run)
        return None
    total, section, pending = 0, 0, None
    for c in run:
        if c in digit:
            pending = digit[c]
        elif c in unit:
            section += (1 if pending is None else pending) * unit[c]
            pending = None
        elif c in big:
            section += pending or 0
            total += (section or 1) * big[c]
            section, pending = 0, None
        else:
            return None
    return str(total + section + (pending or 0))


def digit_value(ch: str) -> str | None:
    """Any script's decimal digit (Arabic-Indic, Devanagari, fullwidth) as an ASCII digit."""
    if "0" <= ch <= "9":
        return ch
    if unicodedata.category(ch) == "Nd":
        try:
            return str(unicodedata.digit(ch))
        except (TypeError, ValueError):
            return None
    return None
