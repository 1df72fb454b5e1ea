"""The broker message of a request: what a worker of the previous release can still read."""

from __future__ import annotations

from models.domain.request import parse_request
from models.domain.result import Route
from queues.envelope import Envelope

ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive", reason="test")


def test_plain_turns_carry_no_tool_fields_and_tool_turns_round_trip() -> None:
    plain = Envelope(request=parse_request({
        "team": "t", "feature": "f", "static": {"few_shot": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "messages": [{"role": "user", "content": "hi"}]}), route=ROUTE).to_message()
    turns = plain["request"]["messages"] + plain["request"]["static"]["few_shot"]
    # Workers of the previous release forbid unknown fields: plain turns must look as before.
    assert all(set(t) == {"role", "content"} for t in turns)
    loop = parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]})
    message = Envelope(request=loop, route=ROUTE).to_message()
    assert message["request"]["messages"][1]["tool_calls"][0]["id"] == "c1"
    assert "tool_call_id" not in message["request"]["messages"][1]
    assert Envelope.model_validate(message).request == loop


def test_the_messages_doors_fields_are_left_out_unless_sent() -> None:
    plain = Envelope(request=parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "content": "hi"}]}), route=ROUTE).to_message()
    assert not {"cache_marks", "provider_headers"} & set(plain["request"])
    marked = parse_request({"team": "t", "feature": "f",
                            "messages": [{"role": "user", "content": "hi"}],
                            "cache_marks": [{"at": "messages", "index": 0, "ttl": "1h"}],
                            "provider_headers": {"anthropic-beta": "x"}})
    assert Envelope.model_validate(Envelope(request=marked, route=ROUTE).to_message()
                                   ).request == marked
