"""Watch lists: terms and phrases to find in transcripts, with a category and a severity.

File format (UTF-8, one entry a line, fields separated by a TAB; see docs/compliance.md)::

    # comments and blank lines are ignored
    !category  insider        <- declares a category of your own (letters, digits, _ and -)
    term<TAB>category<TAB>severity
    password                  <- category "watch", severity "medium"
    project falcon<TAB>confidential<TAB>high
    salasana*<TAB>confidential   <- a trailing * matches the beginning of a word (inflections)

Severities: low, medium, high, critical. Built-in categories: see ``CATEGORIES``. Matching is
case-insensitive, ignores punctuation, reads number words as digits (``flight four one five``
finds ``Flight 415``), needs word boundaries in scripts written with spaces and none in CJK,
Japanese, Thai and Korean. A bad file raises ``WatchListError`` naming the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES = ("watch", "profanity", "harassment", "threat", "confidential", "competitor",
              "fraud", "compliance", "product", "person")
SEVERITIES = ("low", "medium", "high", "critical")
MAX_TERMS = 100_000
MAX_TERM_CHARS = 200
MAX_LINE_CHARS = 1000
MAX_FILE_BYTES = 8 * 1024 * 1024
# Watch terms offered to the decoder as hotwords take at most this share of the hotword caps
# (engine.prompt: 100 words, 1,000 characters, 256 tokens); the model trims them further to what
# its caps still allow after the user's own hotwords (FunASRNano.hotwords_with).
HOTWORD_CHARS = 400
HOTWORD_COUNT = 40
_CATEGORY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


class WatchListError(ValueError):
    """A watch list that cannot be used; the message names the source and the line."""


@dataclass(frozen=True)
class Term:
    term: str          # as written in the list (without a trailing *)
    category: str
    severity: str
    prefix: bool       # a trailing *: the term may continue into a longer word
    line: int


@dataclass
class WatchList:
    terms: list[Term]
    source: str = "<watch list>"
    categories: tuple[str, ...] = CATEGORIES
    _compiled: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def load(cls, path) -> "WatchList":
        p = Path(path)
        try:
            size = p.stat().st_size
        except OSError as e:
            raise WatchListError(f"{p.name}: cannot read the watch list ({e.strerror})") from None
        if size > MAX_FILE_BYTES:
            raise WatchListError(f"{p.name}: the watch list is {size} bytes; at most "
                                 f"{MAX_FILE_BYTES} are accepted")
        return cls.parse(p.read_bytes(), source=p.name)

    @classmethod
    def parse(cls, data: str | bytes, source: str = "watch list") -> "WatchList":
        if isinstance(data, bytes):
            if len(data) > MAX_FILE_BYTES:
                raise WatchListError(f"{source}: the watch list is {len(data)} bytes; at most "
                                     f"{MAX_FILE_BYTES} are accepted")
            try:
                data = data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                line = data[:e.start].count(b"\n") + 1
                raise WatchListError(f"{source}, line {line}: not UTF-8 text") from None
        elif len(data) > MAX_FILE_BYTES:
            raise WatchListError(f"{source}: the watch list is {len(data)} characters; at most "
                                 f"{MAX_FILE_BYTES} are accepted")
        categories = list(CATEGORIES)
        terms: list[Term] = []
        seen: set[tuple[str, str]] = set()
        for n, raw in enumerate(data.splitlines(), 1):
            where = f"{source}, line {n}"
            if len(raw) > MAX_LINE_CHARS:
                raise WatchListError(f"{where}: the line is {len(raw)} characters long; at most "
                                     f"{MAX_LINE_CHARS} are accepted (a term: {MAX_TERM_CHARS})")
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("!category"):
                name = line[len("!category"):].strip()
                if not _CATEGORY_NAME.match(name):
                    raise WatchListError(f"{where}: '!category' needs one name of letters, "
                                         f"digits, _ or - (got {name[:40]!r})")
                if name.lower() not in categories:
                    categories.append(name.lower())
                continue
            if line.startswith("!"):
                raise WatchListError(f"{where}: unknown directive {line.split()[0][:40]!r} "
                                     "(only !category)")
            fields = [f.strip() for f in raw.split("\t")]
            if len(fields) > 3:
                raise WatchListError(f"{where}: {len(fields)} TAB-separated fields; expected "
                                     "term[<TAB>category[<TAB>severity]]")
            term = fields[0]
            category = (fields[1] if len(fields) > 1 and fields[1] else "watch").lower()
            severity = (fields[2] if len(fields) > 2 and fields[2] else "medium").lower()
            if not term:
                raise WatchListError(f"{where}: the term is empty")
            prefix = term.endswith("*")
            term = term.rstrip("*").strip()
            if not term:
                raise WatchListError(f"{where}: the term is only '*'")
            if len(term) > MAX_TERM_CHARS:
                raise WatchListError(f"{where}: the term is {len(term)} characters long; at most "
                                     f"{MAX_TERM_CHARS} are accepted")
            if any(ord(c) < 32 for c in term):
                raise WatchListError(f"{where}: the term holds a control character")
            if category not in categories:
                raise WatchListError(f"{where}: unknown category {category[:40]!r}; known: "
                                     f"{', '.join(categories)} (declare others with "
                                     "'!category NAME')")
            if severity not in SEVERITIES:
                raise WatchListError(f"{where}: unknown severity {severity[:40]!r}; one of "
                                     f"{', '.join(SEVERITIES)}")
            if (term.casefold(), category) in seen:
                continue
            seen.add((term.casefold(), category))
            terms.append(Term(term, category, severity, prefix, n))
            if len(terms) > MAX_TERMS:
                raise WatchListError(f"{where}: more than {MAX_TERMS} terms")
        if not terms:
            raise WatchListError(f"{source}: the watch list holds no terms")
        return cls(terms, source, tuple(categories))

    @classmethod
    def from_terms(cls, terms, category: str = "watch", severity: str = "medium",
                   source: str = "terms") -> "WatchList":
        """A list from plain strings (the API's ``watch_terms``, Python callers)."""
        lines = [f"{t}\t{category}\t{severity}" for t in terms]
        return cls.parse("\n".join(lines), source)

    def hotwords(self, budget_chars: int = HOTWORD_CHARS,
                 budget_count: int = HOTWORD_COUNT) -> list[str]:
        """Terms for the decoder's hotword prompt, most severe first, within the budgets."""
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        out, used = [], 0
        for t in sorted(self.terms, key=lambda t: (order[t.severity], t.line)):
            cost = len(t.term) + 2
            if len(out) >= budget_count or used + cost > budget_chars:
                break
            out.append(t.term)
            used += cost
        return out

    def automaton(self, langs: tuple[str, ...]):
        """The terms' Aho-Corasick automaton over the watch view for these languages (number
        words are read per language, so terms are compiled once per language set)."""
        auto = self._compiled.get(langs)
        if auto is None:
            import ahocorasick

            from .textview import watch_key
            auto = ahocorasick.Automaton()
            for i, t in enumerate(self.terms):
                key = watch_key(t.term, langs)
                if not key:
                    continue
                if key in auto:
                    auto.get(key).append((i, len(key)))
                else:
                    auto.add_word(key, [(i, len(key))])
            auto.make_automaton()
            self._compiled[langs] = auto
        return auto
