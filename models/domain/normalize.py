"""Declared, pure text normalization for cache keys: NFC, whitespace, case, volatile fields."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from models.domain.errors import ConfigError

Whitespace = Literal["standard", "collapse", "none"]
WHITESPACE_MODES: tuple[str, ...] = ("standard", "collapse", "none")

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
# An id must contain a digit: without that, "request payment" would lose "payment".
_ID = r"(?=[A-Za-z_\-]*\d)[A-Za-z0-9][A-Za-z0-9_\-]{3,}"

#: Built-in volatile-field patterns, in the order they apply (longer forms before their parts:
#: a timestamp before the date inside it). Each match becomes ``<name>``.
BUILTIN_PATTERNS: dict[str, tuple[str, int]] = {
    "iso_timestamp": (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
                      r"(?:\s?Z|\s?[+\-]\d{2}:?\d{2}|\s?UTC)?\b", re.IGNORECASE),
    "uuid": (r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b",
             re.IGNORECASE),
    "request_id": (r"\b(?:req(?:uest)?[_\-]?(?:id)?|trace[_\-]?id|correlation[_\-]?id)"
                   r"[\s:#=_\-]*" + _ID + r"\b", re.IGNORECASE),
    "order_id": (r"\border(?:\s*(?:id|number|no\.?|#))?[\s:#=_\-]*" + _ID + r"\b",
                 re.IGNORECASE),
    "date": (r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b\d{1,2}\.\d{1,2}\.\d{4}\b"
             r"|\b" + _MONTH + r"\.? \d{1,2}(?:st|nd|rd|th)?,? \d{4}\b"
             r"|\b\d{1,2}(?:st|nd|rd|th)? " + _MONTH + r"\.?,? \d{4}\b", re.IGNORECASE),
    "time": (r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?=\W|$)", re.IGNORECASE),
    "unix_timestamp": (r"\b1\d{9}(?:\d{3})?\b", 0),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Texts at least this long are remembered (per normalizer, up to MEMO_ENTRIES of them).
MEMO_MIN_CHARS = 512
MEMO_ENTRIES = 64

# Spaces NFC keeps apart (no-break, en/em, ideographic...) and invisible characters.
_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x0b\x0c\x85]")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
# Runs inside a line only: leading indentation carries meaning in code and is kept.
_INNER = re.compile(r"(?<=\S)(?:[ \t]{2,}|\t)(?=\S)")
_BLANKS = re.compile(r"\n{3,}")
_ANY_SPACE = re.compile(r"\s+")
# Anything the standard mode would change; most texts have none, and one search is cheap.
_DIRTY = re.compile(r"[\u00a0\u1680\u2000-\u200d\u202f\u205f\u3000\u2060\ufeff\r\t"
                    r"\u2028\u2029\x0b\x0c\x85]|  | \n|\n\n\n|^\s|\s$")


@dataclass(frozen=True)
class NormalizationSpec:
    """What one feature declares: whitespace mode, lowercasing, volatile-field patterns."""

    whitespace: Whitespace = "standard"
    lowercase: bool = False
    #: Names from :data:`BUILTIN_PATTERNS`.
    patterns: tuple[str, ...] = ()
    #: (name, regex) pairs of the feature's own volatile fields, applied after the built-ins.
    custom: tuple[tuple[str, str], ...] = ()

    def fingerprint(self) -> str:
        """A stable text form of the spec; part of the cache key so specs never share entries."""
        custom = ";".join(f"{n}={r}" for n, r in self.custom)
        return (f"ws={self.whitespace}|lc={int(self.lowercase)}|p={','.join(self.ordered())}"
                f"|c={custom}")

    def ordered(self) -> tuple[str, ...]:
        """The built-in pattern names in the order they apply."""
        return tuple(n for n in BUILTIN_PATTERNS if n in self.patterns)


@dataclass
class NormalizationReport:
    """What normalization did to a request: pattern hits and the other steps that changed text."""

    fired: Counter[str] = field(default_factory=Counter)
    steps: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, object]:
        """JSON-safe form (for ``sluice cache explain``)."""
        return {"patterns": dict(sorted(self.fired.items())), "steps": sorted(self.steps)}


class Normalizer:
    """A compiled :class:`NormalizationSpec`; build once per feature, apply per request."""

    def __init__(self, spec: NormalizationSpec) -> None:
        self.spec = spec
        compiled: list[tuple[str, re.Pattern[str]]] = []
        unknown = [n for n in spec.patterns if n not in BUILTIN_PATTERNS]
        if unknown:
            raise ConfigError(f"unknown normalization pattern(s) {unknown}; built-ins are "
                              f"{', '.join(BUILTIN_PATTERNS)}, or declare a custom regex")
        for name in spec.ordered():
            regex, flags = BUILTIN_PATTERNS[name]
            compiled.append((name, re.compile(regex, flags)))
        for name, regex in spec.custom:
            if not _NAME.match(name) or name in BUILTIN_PATTERNS:
                raise ConfigError(f"custom pattern name {name!r} must be lower_snake_case and "
                                  "not a built-in name")
            try:
                compiled.append((name, re.compile(regex)))
            except re.error as exc:
                raise ConfigError(f"custom pattern {name!r} is not a valid regex: {exc}") from None
        self._patterns = tuple(compiled)
        self._memo: dict[str, tuple[str, NormalizationReport]] = {}

    def __call__(self, text: str, report: NormalizationReport | None = None) -> str:
        """``text`` normalized; when ``report`` is given, record what fired in it."""
        if len(text) < MEMO_MIN_CHARS:
            return self._apply(text, report)
        # Long texts are mostly static prefixes (system prompts) repeated on every request:
        # one dict lookup instead of a regex pass per step.
        done = self._memo.get(text)
        if done is None:
            done = (self._apply(text, mine := NormalizationReport()), mine)
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[text] = done
        if report is not None:
            report.fired.update(done[1].fired)
            report.steps |= done[1].steps
        return done[0]

    def _apply(self, text: str, report: NormalizationReport | None) -> str:
        out = unicodedata.normalize("NFC", text)
        if report is not None and out != text:
            report.steps.add("nfc")
        for name, pattern in self._patterns:
            out, hits = pattern.subn(f"<{name}>", out)
            if hits and report is not None:
                report.fired[name] += hits
        if self.spec.lowercase:
            lowered = out.lower()
            if report is not None and lowered != out:
                report.steps.add("lowercase")
            out = lowered
        before = out
        out = canonical_whitespace(out, self.spec.whitespace)
        if out != before:
            if report is not None:
                report.steps.add("whitespace")
            # Dropping an invisible character can leave a base letter and a combining mark
            # side by side again.
            out = unicodedata.normalize("NFC", out)
        return out


def canonical_whitespace(text: str, mode: Whitespace) -> str:
    """Whitespace in canonical form: ``standard`` keeps line structure, ``collapse`` does not."""
    if mode == "none" or (mode == "standard" and not _DIRTY.search(text)):
        return text
    text = _INVISIBLE.sub("", _ODD_SPACE.sub(" ", text))
    if mode == "collapse":
        return _ANY_SPACE.sub(" ", text).strip()
    text = _NEWLINES.sub("\n", text)
    text = _TRAILING.sub("", text)
    text = _INNER.sub(" ", text)
    return _BLANKS.sub("\n\n", text).strip()


def compile_normalizer(spec: NormalizationSpec) -> Normalizer:
    """Compile ``spec``; raises ConfigError naming an unknown pattern or a bad regex."""
    return Normalizer(spec)
