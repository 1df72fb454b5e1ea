"""Fuzzing the producer API: malformed requests get a typed error naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.domain.errors import ValidationError
from models.domain.request import ChatRequest, parse_request

pytestmark = pytest.mark.chaos
FIELDS = list(ChatRequest.model_fields)
VALID = {"team": "t", "feature": "f", "messages": [{"role": "user", "content": "hi"}]}
junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _check(data: Any) -> None:
    try:
        parse_request(data)
    except ValidationError as err:  # the only acceptable failure, and it names a field
        assert err.field and err.field in err.message, err.message
        assert err.field.split(".")[0] in FIELDS + ["request"], err.field


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), junk)
def test_one_bad_field_gets_a_typed_error_naming_it(field: str, value: Any) -> None:
    _check({**VALID, field: value})


@settings(max_examples=200, deadline=None)
@given(junk)
def test_any_shape_at_all_never_raises_anything_untyped(data: Any) -> None:
    _check(data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS + ["bogus", "Team"]), junk, max_size=6))
def test_random_field_sets_never_raise_anything_untyped(data: dict[str, Any]) -> None:
    _check(data)
