"""Personal-data detectors over the ``pii`` view (number words already digits).

What each finds and what validates it (libraries, not hand-written rules):
  phone        ``phonenumbers``: valid for the language's region, or any region with a leading +
  email        a conservative address pattern; with ITN off the spoken ``at``/``dot`` words of
               the language (``john dot smith at example dot com``)
  card         13-19 digits passing ``stdnum.luhn`` with a card-network first digit (2-6)
  iban         ``stdnum.iban`` (country format and mod-97 check)
  national_id  ``stdnum``: the Chinese resident ID (``cn.ric``, 18 digits with its check digit)
               and the national ID of the language's country where stdnum validates one

Candidates for the digit detectors are runs of digits joined by single separators (space, -, .,
/, parentheses); a run that is no valid number as a whole is tried group range by group range,
longest first, so ``on the 5th call 030 1234567`` still finds the phone number.
"""
from __future__ import annotations

import functools
import importlib
import re

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.cn import ric as _cn_ric

from .numwords import NO_SPACES as _NO_SPACES

KINDS = ("phone", "email", "card", "iban", "national_id")
LABELS = {"phone": "PHONE", "email": "EMAIL", "card": "CARD", "iban": "IBAN",
          "national_id": "ID"}

# The region whose phone numbers (and national ID) a language's speakers most likely say.
REGION = {"zh": "CN", "en": "US", "yue": "HK", "ja": "JP", "ko": "KR", "vi": "VN", "id": "ID",
          "th": "TH", "ms": "MY", "fil": "PH", "ar": "SA", "hi": "IN", "bg": "BG", "hr": "HR",
          "cs": "CZ", "da": "DK", "nl": "NL", "et": "EE", "fi": "FI", "el": "GR", "hu": "HU",
          "ga": "IE", "lv": "LV", "lt": "LT", "mt": "MT", "pl": "PL", "pt": "PT", "ro": "RO",
          "sk": "SK", "sl": "SI", "sv": "SE"}

# stdnum modules for a region's personal ID number (digits only in speech).
NATIONAL_IDS = {"CN": ["cn.ric"], "HK": ["cn.ric"], "US": ["us.ssn"], "NL": ["nl.bsn"],
                "PL": ["pl.pesel"], "SE": ["se.personnummer"], "FI": ["fi.hetu"],
                "DK": ["dk.cpr"], "CZ": ["cz.rc"], "SK": ["sk.rc"], "EE": ["ee.ik"],
                "LT": ["lt.asmens"], "LV": ["lv.pvn"], "RO": ["ro.cnp"], "BG": ["bg.egn"],
                "HR": ["hr.oib"], "SI": ["si.emso"], "GR": ["gr.amka"],
                "IE": ["ie.pps"], "KR": ["kr.rrn"], "TH": ["th.pin"], "IN": ["in_.aadhaar"],
                "ID": ["id.nik"], "MY": ["my.nric"], "VN": [], "JP": [], "PH": [], "SA": [],
                "MT": [], "HU": [], "PT": []}
# (Portugal's Cartão de Cidadão mixes letters and digits; stdnum's pt.cc took any 7 digits.)

# Schemes whose short forms carry no check digit: only their checked length counts.
ID_LENGTHS = {"cz.rc": (10,), "sk.rc": (10,), "nl.bsn": (9,)}
# A US social security number is only recognisable in its 3-2-4 grouping (any 9 digits pass
# stdnum's check), as written (123-45-6789) or read (five three eight, seven five, ...).
ID_GROUPS = {"us.ssn": [3, 2, 4]}

# Spoken "@" and "." with ITN off, per language (besides the symbols themselves).
_AT_DOT = {
    "en": ("at", "dot"), "zh": ("艾特|at", "点|點|dot"), "yue": ("at|艾特", "dot|點|点"),
    "ja": ("アット|at", "ドット|dot"), "ko": ("골뱅이|앳", "닷|점"), "vi": ("a còng|at", "chấm"),
    "id": ("at", "titik|dot"), "ms": ("at", "titik|dot"), "th": ("แอท", "ดอท|จุด"),
    "fil": ("at", "dot|tuldok"), "ar": ("at|آت", "دوت|نقطة"), "hi": ("एट|at", "डॉट|dot"),
    "bg": ("кльомба|at", "точка"), "hr": ("et|at", "točka"), "cs": ("zavináč", "tečka"),
    "da": ("snabel a|at", "punktum"), "nl": ("apenstaartje|at", "punt"),
    "et": ("ätt|at", "punkt"), "fi": ("ät|at", "piste"), "el": ("παπάκι|at", "τελεία|dot"),
    "hu": ("kukac", "pont"), "ga": ("ag|at", "ponc|dot"), "lv": ("et|at", "punkts"),
    "lt": ("eta|at", "taškas"), "mt": ("at", "dot|tikka"), "pl": ("małpa", "kropka"),
    "pt": ("arroba", "ponto"), "ro": ("a rond|at", "punct"), "sk": ("zavináč", "bodka"),
    "sl": ("afna", "pika"), "sv": ("snabel a|at", "punkt"),
}

# Words that say a phone number follows, for the spaced languages whose region dials without a
# national prefix (nothing then tells a phone number from an order number of the same length
# but its grouping or such a word). Stems: a word starting with one counts.
_PHONE_CUES = {
    "cs": "telefon|tel|čísl|mobil|zavolej|volejte|volat",
    "da": "telefon|tlf|nummer|mobil|ring",
    "et": "telefon|tel|number|numbri|mobiil|helista",
    "el": "τηλ|αριθμ|κινητ|καλέστε|πάρτε",
    "lv": "tālru|tel|numur|mobil|zvan",
    "mt": "telefon|numru|mowbajl|ċempel|cempel",
    "pl": "telefon|tel|numer|komórk|zadzwoń|dzwoń",
    "pt": "telefon|telemóvel|telemovel|tel|número|numero|ligue|contacto",
}
CUE_CHARS = 40      # how far before the number a cue word may stand


@functools.lru_cache(maxsize=64)
def _phone_cue(lang: str):
    stems = _PHONE_CUES.get(lang)
    return re.compile(rf"(?<!\w)(?:{stems}|phone|mobile)", re.IGNORECASE) if stems else None


def needs_grouping(lang: str | None, region: str | None) -> bool:
    """Whether an unbroken run of digits (no separator, no +) is refused as a phone number:
    in languages written with spaces whose region dials without a national prefix (cs, pl, pt,
    da, ...), a phone number is written or said in groups (``603 123 456``, ``šest set tři,
    ...``); ``603123456`` said as one run is as likely an order number."""
    if not region or not lang or lang in _NO_SPACES:
        return False
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return not (meta is not None and meta.national_prefix)


_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]"
                    r"{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                    r"\.[A-Za-z]{2,12}(?![A-Za-z0-9])")
_RUN = re.compile(r"\+?\d(?:(?:[ \-./]|, ?|\) ?|-? ?\()?\d)*(?:[ ]?[Xx](?![\w]))?")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2} ?\d{2}(?:[ ]?[A-Za-z0-9]){11,32}")


@functools.lru_cache(maxsize=64)
def _spoken_email(lang: str):
    if lang not in _AT_DOT:
        return None
    at, dot = _AT_DOT[lang]
    word = r"[^\W_][\w]*"
    return re.compile(rf"(?<!\w)({word}(?:\s*(?:{dot})\s*{word})*)\s*(?:{at})\s*"
                      rf"({word}(?:\s*(?:{dot})\s*{word})*\s*(?:{dot})\s*[^\W\d_]{{2,12}})(?!\w)",
                      re.IGNORECASE)


@functools.lru_cache(maxsize=None)
def _id_modules(region: str):
    mods = []
    for name in NATIONAL_IDS.get(region, []):
        try:
            mods.append((name, importlib.import_module(f"stdnum.{name}")))
        except ImportError:
            pass
    return mods


def _card(d: str) -> bool:
    return 13 <= len(d) <= 19 and d[0] in "23456" and _luhn.is_valid(d)


def _phone(d: str, plus: bool, region: str | None) -> bool:
    """Valid for the region (or, with a leading +, for its country code), and written as the
    region writes it: where numbers are dialled with a national prefix (0 in most of Europe and
    Asia), a number without it or a + is not taken for a phone number (an order number is)."""
    if not 6 <= len(d) <= 15:
        return False
    try:
        num = phonenumbers.parse(("+" if plus else "") + d, None if plus else region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(num):
        return False
    if plus or not region:
        return True
    written = re.sub(r"\D", "", phonenumbers.format_number(
        num, phonenumbers.PhoneNumberFormat.NATIONAL))
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = (meta.national_prefix if meta is not None else None) or ""
    return d == written or (prefix and d == prefix + written)


def _valid(mod, d: str) -> bool:
    """A stdnum validator's answer; its own failure (a table it lacks) counts as invalid."""
    try:
        return bool(mod.is_valid(d))
    except Exception:  # noqa: BLE001
        return False


def _cn_resident_id(d: str) -> bool:
    """stdnum's cn.ric, falling back to its check digit and birth date where its place table
    fails on a valid county code (python-stdnum 2.2 raises KeyError on some)."""
    if _valid(_cn_ric, d):
        return True
    try:
        d = _cn_ric.compact(d)
        _cn_ric.get_birth_date(d)
        return len(d) == 18 and _cn_ric.calc_check_digit(d) == d[-1].upper()
    except Exception:  # noqa: BLE001
        return False


def _phone_grouping(d: str, groups: list[str], region: str | None) -> bool:
    """Whether the digits are grouped as the region writes its phone numbers."""
    try:
        num = phonenumbers.parse(d, region)
    except phonenumbers.NumberParseException:
        return False
    fmt = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
    return re.findall(r"\d+", fmt) == groups


def classify(d: str, plus: bool, region: str | None,
             groups: list[str] | None = None,
             one_run_phone: bool = True) -> tuple[str, str | None] | None:
    """(kind, validator) for one run of digits (``d``: digits, maybe a final X; ``groups``:
    the digit groups as written), or None. A number valid both as the region's national ID and
    as a phone number is a phone number when it is grouped the way the region writes phones.
    ``one_run_phone`` false (``needs_grouping``, no cue word): digits in one group (no
    separator) are a phone number only as ``_one_run_ok`` says."""
    if d.upper().endswith("X"):
        return ("national_id", "cn.ric") if _cn_resident_id(d) else None
    found_id = None
    if not plus:
        if _card(d):
            return "card", "luhn"
        if len(d) == 18 and _cn_resident_id(d):
            return "national_id", "cn.ric"
        for name, mod in _id_modules(region or ""):
            if name in ID_GROUPS and [len(g) for g in groups or []] != ID_GROUPS[name]:
                continue
            if len(d) in ID_LENGTHS.get(name, (len(d),)) and _valid(mod, d):
                found_id = ("national_id", name)
                break
    if _phone(d, plus, region) and (plus or one_run_phone or (groups and len(groups) > 1)
                                    or _one_run_ok(d, region)):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region or "")
        prefix = (meta.national_prefix if meta is not None else None) or ""
        if found_id is None or (groups and len(groups) > 1
                                and _phone_grouping(d, groups, region)) or (
                prefix and d.startswith(prefix) and not _id_grouped(groups, found_id[1])):
            return "phone", "phonenumbers"
    return found_id


def _one_run_ok(d: str, region: str | None) -> bool:
    """A phone number said or written as one unbroken run of digits, where nothing else tells it
    from an order number: taken when it is a mobile number (what people dictate; a random
    number falls in a mobile range far less often than in a fixed-line one) or when the region
    itself writes it in one group."""
    try:
        num = phonenumbers.parse(d, region)
    except phonenumbers.NumberParseException:
        return False
    kind = phonenumbers.number_type(num)
    if kind in (phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return True
    return len(re.findall(r"\d+", phonenumbers.format_number(
        num, phonenumbers.PhoneNumberFormat.NATIONAL))) == 1


def _id_grouped(groups: list[str] | None, scheme: str) -> bool:
    """Digits grouped as an ID is written: the scheme's own grouping (3-2-4 for a US SSN), or
    birth date and serial (6-4: ``850101/1234``)."""
    if not groups or len(groups) == 1:
        return False
    return [len(g) for g in groups] in ([6, 4], ID_GROUPS.get(scheme))


def _runs(text: str):
    for m in _RUN.finditer(text):
        # groups: (start, end) of each digit group inside the run
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+(?:[ ]?[Xx](?!\w))?",
                                                            m.group())]
        yield m.start(), m.group().startswith("+"), groups, m.group()


def find(text: str, lang: str | None, kinds=KINDS) -> list[tuple[int, int, str, str | None]]:
    """(start, end, kind, validator) in ``text`` (the pii view), not overlapping."""
    region = REGION.get(lang or "", None)
    grouping = needs_grouping(lang, region)
    cue = _phone_cue(lang or "")
    hits: list[tuple[int, int, str, str | None]] = []
    if "email" in kinds:
        for m in _EMAIL.finditer(text):
            hits.append((m.start(), m.end(), "email", "pattern"))
        spoken = _spoken_email(lang or "en")
        if spoken is not None:
            for m in spoken.finditer(text):
                if not any(h[0] < m.end() and m.start() < h[1] for h in hits):
                    hits.append((m.start(), m.end(), "email", "spoken"))
    if "iban" in kinds:
        for m in _IBAN.finditer(text):
            raw = m.group()
            # the run may go on past the account number: the longest valid prefix is the IBAN
            for end in range(len(raw), 14, -1):
                cand = raw[:end]
                if cand[-1] == " ":
                    continue
                if _valid(_iban, cand.replace(" ", "").upper()):
                    hits.append((m.start(), m.start() + end, "iban", "stdnum.iban"))
                    break
    digit_kinds = {"phone", "card", "national_id"} & set(kinds)
    if digit_kinds:
        for base, plus, groups, raw in _runs(text):
            k = len(groups)
            done = [False] * k
            # the whole run first, then ever shorter ranges of groups
            for size in range(k, 0, -1):
                for i in range(0, k - size + 1):
                    if any(done[i:i + size]):
                        continue
                    a, b = groups[i][0], groups[i + size - 1][1]
                    d = re.sub(r"[^\dXx]", "", raw[a:b])
                    p = plus and i == 0
                    one_run = not grouping or bool(
                        cue and cue.search(text, max(0, base + a - CUE_CHARS), base + a))
                    got = classify(d, p, region, re.findall(r"\d+", raw[a:b]), one_run)
                    if got and got[0] in digit_kinds:
                        start = base + (0 if p else a)
                        if start > 0 and text[start - 1] == "(" and ")" in raw[a:b]:
                            start -= 1     # "(415) 263-7132": the bracket belongs to it
                        if not any(h[0] < base + b and start < h[1] for h in hits):
                            hits.append((start, base + b, got[0], got[1]))
                        for j in range(i, i + size):
                            done[j] = True
    hits.sort()
    return hits
