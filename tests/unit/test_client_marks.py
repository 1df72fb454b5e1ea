"""A caller's own cache_control marks: placed where it put them, ours only around them."""

from __future__ import annotations

from typing import Any

from models.domain.catalogue import load_catalogue
from models.domain.request import parse_request
from workers.providers.shaping import anthropic_payload, count_breakpoints

SONNET = load_catalogue().get("claude-sonnet-4-5")
LONG = "word " * 5000  # past every model's minimum cacheable prefix


def request(**kw: Any) -> Any:
    base: dict[str, Any] = {"team": "t", "feature": "f",
                            "messages": [{"role": "user", "content": "hi"}]}
    return parse_request({**base, **kw})


def test_system_blocks_are_cut_where_the_caller_marked_them_and_ours_is_not_added() -> None:
    system = "Short preamble." + "\n\n" + LONG
    req = request(static={"system": system},
                  cache_marks=[{"at": "system", "index": len("Short preamble.")}])
    blocks = anthropic_payload(req, SONNET)["system"]
    assert [b["text"] for b in blocks] == ["Short preamble.", LONG]
    assert blocks[0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in blocks[1]  # ours would have closed the system prompt here


def test_a_mark_on_a_turn_lands_on_the_block_that_turn_became() -> None:
    req = request(messages=[
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "name": "find", "arguments": "{}"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "and now?"}],
        cache_marks=[{"at": "messages", "index": 0}, {"at": "messages", "index": 2, "ttl": "1h"}])
    turns = anthropic_payload(req, SONNET)["messages"]
    assert turns[0]["content"] == [{"type": "text", "text": "look it up",
                                    "cache_control": {"type": "ephemeral"}}]
    result, text = turns[2]["content"]
    assert result["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in text


def test_ours_give_way_past_four_and_the_callers_are_kept() -> None:
    tools = [{"name": f"t{i}", "description": LONG} for i in range(2)]
    marks = [{"at": "messages", "index": i} for i in range(4)]
    req = request(static={"tools": tools, "system": LONG},
                  messages=[{"role": "user", "content": f"turn {i}"} for i in range(4)],
                  cache_marks=marks)
    payload = anthropic_payload(req, SONNET)
    assert count_breakpoints(payload) == 4
    assert all("cache_control" in t["content"][0] for t in payload["messages"])
    assert "cache_control" not in payload["tools"][-1]
    # With room left, ours stay where the caller marked nothing.
    fewer = anthropic_payload(request(static={"tools": tools, "system": LONG},
                                      cache_marks=[{"at": "messages", "index": 0}]), SONNET)
    assert "cache_control" in fewer["tools"][-1] and "cache_control" in fewer["system"][-1]
    assert count_breakpoints(fewer) == 3
