"""Declared normalization: NFC, whitespace, case, volatile fields; each reported when it fires."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.domain import normalize
from models.domain.errors import ConfigError
from models.domain.normalize import (NormalizationReport, NormalizationSpec, canonical_whitespace,
                                     compile_normalizer)


def norm(text: str, **spec: object) -> tuple[str, NormalizationReport]:
    report = NormalizationReport()
    out = compile_normalizer(NormalizationSpec(**spec))(text, report)  # type: ignore[arg-type]
    return out, report


def test_nfc_makes_composed_and_decomposed_accents_equal() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert composed != decomposed
    out, report = norm(decomposed)
    assert out == composed and "nfc" in report.steps
    assert norm(composed)[1].steps == set()


def test_standard_whitespace_keeps_line_structure_and_indentation() -> None:
    text = "  def f(x):\r\n    return   x\t+ 1   \r\n\n\n\nprint(f(2))  "
    assert canonical_whitespace(text, "standard") == "def f(x):\n    return x + 1\n\nprint(f(2))"


def test_standard_whitespace_does_not_merge_different_indentation() -> None:
    # Python: the second line belongs to the loop in one and not in the other.
    a = "for i in x:\n    a()\n    b()"
    b = "for i in x:\n    a()\nb()"
    assert canonical_whitespace(a, "standard") != canonical_whitespace(b, "standard")


def test_odd_spaces_and_invisible_characters() -> None:
    text = "Hello\u00a0world\u200b, how\u3000are you\ufeff?"
    assert canonical_whitespace(text, "standard") == "Hello world, how are you?"


def test_collapse_joins_everything_and_none_keeps_everything() -> None:
    text = " a \n\n b\tc "
    assert canonical_whitespace(text, "collapse") == "a b c"
    assert canonical_whitespace(text, "none") == text


def test_lowercase_is_off_unless_declared() -> None:
    assert norm("Reset My Password")[0] == "Reset My Password"
    out, report = norm("Reset My Password", lowercase=True)
    assert out == "reset my password" and "lowercase" in report.steps


@pytest.mark.parametrize("name, text, expected", [
    ("iso_timestamp", "at 2026-01-05T10:22:31.123Z ok", "at <iso_timestamp> ok"),
    ("iso_timestamp", "at 2026-01-05 10:22:31+02:00 ok", "at <iso_timestamp> ok"),
    ("date", "on 2026-01-05 and 5/1/2026 and 05.01.2026", "on <date> and <date> and <date>"),
    ("date", "due March 3rd, 2026 or 3 Mar 2026", "due <date> or <date>"),
    ("time", "meet at 10:30 pm today", "meet at <time> today"),
    ("uuid", "id 123e4567-e89b-12d3-a456-426614174000.", "id <uuid>."),
    ("request_id", "trace: req-9f8e7d6c failed", "trace: <request_id> failed"),
    ("request_id", "request_id=abc123def done", "<request_id> done"),
    ("order_id", "where is order #A12345?", "where is <order_id>?"),
    ("order_id", "Order number: 99887766 shipped", "<order_id> shipped"),
    ("unix_timestamp", "ts 1767607351 and 1767607351123",
     "ts <unix_timestamp> and <unix_timestamp>"),
])
def test_builtin_patterns(name: str, text: str, expected: str) -> None:
    out, report = norm(text, patterns=(name,))
    assert out == expected
    assert report.fired[name] == expected.count(f"<{name}>")


def test_ids_need_a_digit_so_words_survive() -> None:
    out, report = norm("please request payment and order pizza",
                       patterns=("request_id", "order_id"))
    assert out == "please request payment and order pizza" and not report.fired


def test_timestamp_applies_before_the_date_inside_it() -> None:
    # Declared in the "wrong" order: the built-in precedence still strips the whole timestamp.
    out, report = norm("sent 2026-01-05T10:22:31Z", patterns=("date", "time", "iso_timestamp"))
    assert out == "sent <iso_timestamp>"
    assert dict(report.fired) == {"iso_timestamp": 1}


def test_patterns_only_fire_when_declared() -> None:
    text = "sent 2026-01-05T10:22:31Z"
    assert norm(text)[0] == text


def test_custom_patterns_and_report() -> None:
    out, report = norm("Ticket TKT-4411 and TKT-9", custom=(("ticket", r"TKT-\d+"),))
    assert out == "Ticket <ticket> and <ticket>" and report.fired["ticket"] == 2
    assert report.as_dict() == {"patterns": {"ticket": 2}, "steps": []}


def test_volatile_requests_become_equal() -> None:
    spec = {"lowercase": True, "patterns": ("iso_timestamp", "request_id")}
    a = norm("Where is my parcel?  (sent 2026-01-05T10:22:31Z, req-77aa88bb)", **spec)[0]
    b = norm("where is my parcel? (sent 2026-02-11T08:00:00Z, req-12cd34ef)", **spec)[0]
    assert a == b


@pytest.mark.parametrize("spec, match", [
    (NormalizationSpec(patterns=("nope",)), "unknown normalization pattern"),
    (NormalizationSpec(custom=(("bad", "(unclosed"),)), "not a valid regex"),
    (NormalizationSpec(custom=(("Bad Name", "x"),)), "lower_snake_case"),
    (NormalizationSpec(custom=(("uuid", "x"),)), "built-in"),
])
def test_bad_specs_raise_config_errors(spec: NormalizationSpec, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compile_normalizer(spec)


def test_fingerprint_differs_when_the_declaration_does() -> None:
    base = NormalizationSpec()
    assert base.fingerprint() == NormalizationSpec().fingerprint()
    for other in (NormalizationSpec(lowercase=True), NormalizationSpec(whitespace="collapse"),
                  NormalizationSpec(patterns=("uuid",)), NormalizationSpec(custom=(("t", "x"),))):
        assert other.fingerprint() != base.fingerprint()


def test_long_texts_are_remembered_with_their_report() -> None:
    n = compile_normalizer(NormalizationSpec(patterns=("uuid",)))
    system = "Rules.  " * 100 + "id 123e4567-e89b-12d3-a456-426614174000"
    first, second = NormalizationReport(), NormalizationReport()
    assert n(system, first) == n(system, second)
    assert first.fired == second.fired == {"uuid": 1}
    assert first.steps == second.steps == {"whitespace"}
    assert len(n._memo) == 1 and n("short  text") == "short text" and len(n._memo) == 1


_texts = st.text(alphabet=st.sampled_from(list("ab é\u0301\t\r\n\u00a0\u200b\u3000x1:-")),
                 max_size=40)


@settings(max_examples=500)
@given(_texts)
def test_normalization_is_idempotent(text: str) -> None:
    n = compile_normalizer(NormalizationSpec(lowercase=True, patterns=("time",)))
    once = n(text)
    assert n(once) == once


@given(_texts)
def test_fast_path_equals_full_path(text: str) -> None:
    fast = canonical_whitespace(text, "standard")
    saved = normalize._DIRTY
    normalize._DIRTY = re.compile("")  # matches everything: always the full path
    try:
        assert canonical_whitespace(text, "standard") == fast
    finally:
        normalize._DIRTY = saved
