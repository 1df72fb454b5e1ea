"""The error tree: one base, stable codes, and errors that survive a trip across the queue."""

from __future__ import annotations

import json

import pytest

from models.domain import errors as E
from queues.handle import decode_reply


def all_errors() -> list[type[E.SluiceError]]:
    out, stack = [], [E.SluiceError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


@pytest.mark.parametrize("cls", all_errors())
def test_every_error_has_a_docstring_and_a_code(cls: type[E.SluiceError]) -> None:
    assert cls.__doc__ and cls.code


def test_codes_are_unique() -> None:
    codes = [c.code for c in all_errors() if c.__module__ == "models.domain.errors"]
    assert len(codes) == len(set(codes))


def test_errors_round_trip_through_json() -> None:
    err = E.ProviderRetryable("slow down", provider="openai", status=429, retry_after=2.5)
    back = E.from_dict(json.loads(json.dumps(err.to_dict())))
    assert type(back) is E.ProviderRetryable and back.retryable
    assert back.provider == "openai" and back.status == 429 and back.retry_after == 2.5
    v = E.from_dict(E.ValidationError("bad", field="lane").to_dict())
    assert isinstance(v, E.ValidationError) and v.field == "lane"


def test_task_replies_decode_to_results_or_typed_errors() -> None:
    err = decode_reply({"ok": False, "error": E.BudgetExceeded("over", budget="b1").to_dict()})
    assert isinstance(err, E.BudgetExceeded) and err.details["budget"] == "b1"
    assert isinstance(decode_reply("garbage"), E.SluiceError)
