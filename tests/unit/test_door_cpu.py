"""The door path's CPU savings keep their answers: the lone-surrogate check of a body, long
texts' token counts remembered, the Anthropic reply read from its raw JSON."""

from __future__ import annotations

import asyncio
import threading

import pytest

from models.domain.errors import ValidationError
from models.domain import tokens
from queues.http.pipeline import _may_hold_surrogates, read_json
from workers.providers.anthropic_messages import reply_of


def _read(raw: bytes) -> dict[str, object]:
    from starlette.requests import Request

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-length", str(len(raw)).encode())]}
    return asyncio.run(read_json(Request(scope, receive)))


@pytest.mark.parametrize("raw", [
    b'{"a": "\\ud800"}',                      # an escaped lone high surrogate
    b'{"a": "x\\uDC00y"}',                    # an escaped lone low surrogate
    b'{"a": "\xed\xa0\x80"}',                 # an encoded surrogate (not strict UTF-8)
    '{"a": "\ud800"}'.encode("utf-16", "surrogatepass"),  # UTF-16 JSON, lone surrogate
])
def test_a_lone_surrogate_is_refused_as_before(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        _read(raw)


@pytest.mark.parametrize("raw, expected", [
    (b'{"a": "plain"}', "plain"),
    ('{"a": "caf\u00e9 \U0001f600"}'.encode(), "caf\u00e9 \U0001f600"),
    (b'{"a": "\\ud83d\\ude00"}', "\U0001f600"),  # a pair: one character
    (b'{"a": "\\\\ud800"}', "\\ud800"),           # an escaped backslash, no surrogate
])
def test_bodies_without_a_lone_surrogate_parse(raw: bytes, expected: str) -> None:
    assert _read(raw) == {"a": expected}


def test_only_a_body_that_can_hold_a_surrogate_is_re_encoded() -> None:
    assert not _may_hold_surrogates(b'{"a": "x' + b"y" * 100_000 + b'"}')
    assert not _may_hold_surrogates('{"a": "\u00e9\\u00e9"}'.encode())
    assert _may_hold_surrogates(b'{"a": "\\uD83D\\uDE00"}')
    assert _may_hold_surrogates(b'{"a": "\xed\xa0\x80"}')
    assert _may_hold_surrogates('{"a": 1}'.encode("utf-16"))
    assert _may_hold_surrogates(b'\xef\xbb\xbf{"a": 1}')  # a BOM: not plain UTF-8


def test_a_long_text_is_counted_once_with_the_same_count(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    enc = tokens.encoding()
    if enc is None:
        pytest.skip("no o200k encoding here")
    memo = tokens._CountMemo(tokens.MEMO_BUDGET_CHARS)
    monkeypatch.setattr(tokens, "_MEMO", memo)
    text = "You are a coding agent. " + " ".join(f"rule {i}: read the file" for i in range(900))
    exact = len(enc.encode(text, disallowed_special=()))
    assert tokens.count_text(text) == exact
    calls = []
    real = type(enc).encode
    monkeypatch.setattr(type(enc), "encode", lambda self, *a, **k: calls.append(1)
                        or real(self, *a, **k))
    assert tokens.count_text(str(text)) == exact and tokens.count_text(text[:]) == exact
    assert not calls  # remembered
    short = "a short user turn"
    assert tokens.count_text(short) == len(real(enc, short, disallowed_special=()))
    assert calls and short not in memo._counts  # short texts are not kept


def test_the_memo_keeps_its_character_budget() -> None:
    memo = tokens._CountMemo(budget=3000)
    for i in range(5):
        memo.put(str(i) * 1000, i)
    assert memo.chars <= 3000 and len(memo._counts) == 3
    assert memo.get("0" * 1000) is None and memo.get("4" * 1000) == 4
    memo.put("x" * 5000, 1)  # larger than the budget: not kept, nothing evicted for it
    assert memo.get("x" * 5000) is None and memo.chars == 3000


def test_the_memo_is_safe_across_threads() -> None:
    memo = tokens._CountMemo(budget=50_000)

    def work(k: int) -> None:
        for i in range(300):
            memo.put(f"{k}-{i}-" + "z" * 600, i)
            memo.get(f"{k}-{i - 1}-" + "z" * 600)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert memo.chars == sum(len(t) for t in memo._counts) <= 50_000


def test_the_anthropic_reply_is_read_from_its_json_body() -> None:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Hello "}, {"type": "text", "text": "there"},
                        {"type": "tool_use", "id": "tu_1", "name": "read",
                         "input": {"path": "a.py"}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 50, "cache_read_input_tokens": 7,
                      "cache_creation_input_tokens": 3}}
    reply = reply_of(body)
    assert reply.text == "Hello there" and reply.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("tu_1", "read", '{"path":"a.py"}')]
    assert reply.thinking[0].thinking == "hmm" and reply.thinking[0].signature == "sig"
    u = reply.usage
    assert (u.input_uncached, u.cache_read, u.cache_write_5m, u.output) == (10, 7, 3, 50)
    assert u.reasoning > 0  # thinking is billed inside output_tokens
    assert reply.provider_model == "claude-haiku-4-5" and reply.provider_request_id == "msg_1"
    stopped = reply_of({**body, "content": [{"type": "text", "text": "x"}],
                        "stop_reason": "stop_sequence", "stop_sequence": "END"})
    assert stopped.stop_sequence == "END" and stopped.finish_reason == "stop"
    with pytest.raises(KeyError):
        reply_of({"id": "msg_2"})  # complete() turns this into an unparseable retry
