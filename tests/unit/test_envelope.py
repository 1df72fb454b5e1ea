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


def test_new_fields_leave_the_message_while_unset_and_falsy_values_survive() -> None:
    from queues.envelope import LATE_FIELDS

    plain = Envelope(request=parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "content": "hi"}]}), route=ROUTE).to_message()["request"]
    # A worker of the previous release reads this: none of the new fields, no temperature
    # the caller did not set (the same default there).
    assert not set(LATE_FIELDS) & set(plain) and "temperature" not in plain
    falsy = parse_request({"team": "t", "feature": "f", "seed": 0, "store": False,
                           "parallel_tool_calls": False, "logprobs": False, "temperature": 0,
                           "static": {"tools": [{"name": "x"}]},
                           "messages": [{"role": "user", "content": "hi"}]})
    message = Envelope(request=falsy, route=ROUTE).to_message()
    req = message["request"]
    assert (req["seed"], req["store"], req["parallel_tool_calls"], req["logprobs"],
            req["temperature"]) == (0, False, False, False, 0.0)
    back = Envelope.model_validate(message).request
    assert back == falsy and "temperature" in back.model_fields_set


def test_image_parts_round_trip_and_are_read_again() -> None:
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9a"
           "wAAAABJRU5ErkJggg==")
    r = parse_request({"team": "t", "feature": "f", "messages": [{"role": "user", "parts": [
        {"type": "text", "text": "what"}, {"type": "image", "data": png, "detail": "low"}]}]})
    message = Envelope(request=r, route=ROUTE).to_message()
    assert Envelope.model_validate(message).request == r
