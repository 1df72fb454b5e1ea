"""Prompt-cache shaping: static part first and byte-stable, breakpoints only where they pay."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from models.domain.catalogue import load_catalogue
from models.domain.request import parse_request
from workers.providers.shaping import (MAX_BREAKPOINTS, anthropic_payload, count_breakpoints,
                                       openai_cache_key, openai_messages, static_tokens)

CAT = load_catalogue()
SONNET, HAIKU = CAT.get("claude-sonnet-4-6"), CAT.get("claude-haiku-4-5")
BIG = " ".join(f"Guideline {i}: keep it short and kind." for i in range(300))  # ~3k tokens


def req(static: dict[str, Any] | None = None, text: str = "hello", **kw: Any) -> Any:
    return parse_request({"team": "t", "feature": "f", "static": static or {},
                          "messages": [{"role": "user", "content": text}], **kw})


def test_openai_static_part_comes_first_then_dynamic() -> None:
    msgs = openai_messages(req({"system": "S", "few_shot": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "now"))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "S" and msgs[-1]["content"] == "now"


def test_static_prefix_bytes_do_not_depend_on_the_dynamic_part() -> None:
    a = anthropic_payload(req({"system": BIG}, "first question"), SONNET)
    b = anthropic_payload(req({"system": BIG}, "a different, longer second question"), SONNET)
    assert json.dumps(a["system"], sort_keys=True) == json.dumps(b["system"], sort_keys=True)
    oa = openai_messages(req({"system": BIG}, "x"))[0]
    ob = openai_messages(req({"system": BIG}, "y"))[0]
    assert oa == ob


def test_no_breakpoint_below_the_model_minimum() -> None:
    short = anthropic_payload(req({"system": "Be brief."}), SONNET)
    assert count_breakpoints(short) == 0
    # ~3k tokens: enough for Sonnet (1,024) but not for Haiku 4.5 (4,096)
    assert count_breakpoints(anthropic_payload(req({"system": BIG}), SONNET)) == 1
    assert count_breakpoints(anthropic_payload(req({"system": BIG}), HAIKU)) == 0


def test_breakpoint_closes_the_static_part_never_the_dynamic() -> None:
    p = anthropic_payload(req({"system": BIG, "few_shot": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}), SONNET)
    assert "cache_control" in p["system"][-1]          # the system alone is reusable
    assert "cache_control" in p["messages"][1]["content"][-1]   # end of few-shot
    assert isinstance(p["messages"][-1]["content"], str)        # dynamic turn: no marker


def test_tools_system_and_few_shot_each_get_a_breakpoint_at_most_four() -> None:
    tools = [{"name": f"tool_{i}", "description": BIG[:3000]} for i in range(3)]
    p = anthropic_payload(req({"system": BIG, "tools": tools, "few_shot": [
        {"role": "user", "content": BIG}, {"role": "assistant", "content": "ok"}]}), SONNET)
    assert count_breakpoints(p) == 3 <= MAX_BREAKPOINTS
    assert "cache_control" in p["tools"][-1] and "cache_control" not in p["tools"][0]


def test_one_hour_ttl_is_marked() -> None:
    p = anthropic_payload(req({"system": BIG}), SONNET, ttl="1h")
    assert p["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    p5 = anthropic_payload(req({"system": BIG}), SONNET, ttl="5m")
    assert p5["system"][-1]["cache_control"] == {"type": "ephemeral"}


def test_openai_cache_key_follows_prefix_and_scope() -> None:
    a = openai_cache_key(req({"system": BIG}, "x"), "org/t/f")
    assert a == openai_cache_key(req({"system": BIG}, "y"), "org/t/f")
    assert a != openai_cache_key(req({"system": BIG}, "x"), "org/t/other")
    assert a != openai_cache_key(req({"system": BIG + "!"}, "x"), "org/t/f")
    assert openai_cache_key(req(), "org/t/f") is None


@given(st.text(min_size=1, max_size=300), st.sampled_from(["5m", "1h"]))
def test_breakpoints_never_exceed_four(system: str, ttl: str) -> None:
    if not system.strip():
        return
    p = anthropic_payload(req({"system": system * 20}), SONNET, ttl)
    assert count_breakpoints(p) <= MAX_BREAKPOINTS
    assert count_breakpoints(p) == (1 if static_tokens(req({"system": system * 20}).static)
                                    >= SONNET.min_cacheable_tokens else 0)


def _loop() -> Any:
    return parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "content": "Price and stock of SKU 42?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "c1", "name": "price", "arguments": '{"sku":"42"}'},
            {"id": "c2", "name": "stock", "arguments": '{"sku":"42"}'}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12.50"},
        {"role": "tool", "tool_call_id": "c2", "content": "7"},
        {"role": "user", "content": "And in euros?"}]})


def test_a_tool_loop_in_openai_shape() -> None:
    msgs = openai_messages(_loop())
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "user"]
    assert [c["id"] for c in msgs[1]["tool_calls"]] == ["c1", "c2"]
    assert msgs[2]["tool_call_id"] == "c1" and msgs[3]["content"] == "7"


def test_a_tool_loop_in_anthropic_shape_puts_results_in_one_user_turn() -> None:
    turns = anthropic_payload(_loop(), SONNET)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "c1", "name": "price", "input": {"sku": "42"}},
        {"type": "tool_use", "id": "c2", "name": "stock", "input": {"sku": "42"}}]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "12.50"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "7"},
        {"type": "text", "text": "And in euros?"}]


def test_hashes_of_plain_prompts_did_not_move_when_turns_gained_tool_fields() -> None:
    """Pinned from the release before tool loops: ledger prompt hashes and OpenAI's
    prompt_cache_key must not change for prompts that have no tool turns."""
    from queues.producer import prompt_hash
    from workers.providers.shaping import static_fingerprint

    r = parse_request({"team": "t", "feature": "f", "static": {
        "system": "S \u00fc", "few_shot": [{"role": "user", "content": "q"},
                                       {"role": "assistant", "content": "a"}],
        "tools": [{"name": "x"}]}, "messages": [{"role": "user", "content": "hi"}]})
    assert prompt_hash(r) == "4b8f1b1db93b169d6457fae1ee57a05b8c52340e4170a9e52015d37de90afa0c"
    assert static_fingerprint(r.static) == (
        "760770dcb6330180eb92d9a60d5128e021470bc19d7e1fd7caac0d110e602a5c")


def test_self_hosted_models_get_a_tool_loop_as_text_with_no_two_user_turns_in_a_row() -> None:
    from workers.providers.vllm_engine import render_messages

    turns = render_messages(_loop())
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"].splitlines() == [
        "Looking.", '{"arguments":{"sku":"42"},"tool":"price"}',
        '{"arguments":{"sku":"42"},"tool":"stock"}']
    assert turns[2]["content"] == ("Result of tool call c1:\n12.50\n\nResult of tool call c2:\n7"
                                   "\n\nAnd in euros?")
    # Plain turns go verbatim, consecutive user turns included, as before.
    plain = parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "content": " one "}, {"role": "user", "content": "two"}]})
    assert render_messages(plain) == [{"role": "user", "content": " one "},
                                      {"role": "user", "content": "two"}]


def _thinking_loop(signed: bool) -> Any:
    turn: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "name": "price", "arguments": '{"sku":"42"}'}]}
    if signed:
        turn["thinking"] = [{"thinking": "SKU 42: ask the tool", "signature": "sig"}]
    return parse_request({"team": "t", "feature": "f", "max_tokens": 4000,
                          "thinking_budget": 2048, "temperature": 1.0,
                          "static": {"tools": [{"name": "price"}]}, "messages": [
                              {"role": "user", "content": "Price of SKU 42?"}, turn,
                              {"role": "tool", "tool_call_id": "c1", "content": "12.50"}]})


def test_a_thinking_tool_loop_sends_the_thinking_back_first_unchanged() -> None:
    from workers.providers.base import ProviderCall
    from workers.providers.shaping import anthropic_message_params

    params = anthropic_message_params(ProviderCall(_thinking_loop(True), SONNET))
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert params["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "SKU 42: ask the tool", "signature": "sig"},
        {"type": "tool_use", "id": "c1", "name": "price", "input": {"sku": "42"}}]
    # Without thinking on, earlier thinking is not sent (Anthropic would ignore it).
    assert anthropic_payload(_thinking_loop(True), SONNET)["messages"][1]["content"][0][
        "type"] == "tool_use"


def test_a_thinking_tool_loop_that_lost_its_thinking_goes_on_without_thinking() -> None:
    from workers.providers.base import ProviderCall
    from workers.providers.shaping import anthropic_message_params

    # The chat door cannot carry signed thinking: Anthropic would refuse the turn with
    # thinking on, and advises turning it off for it.
    params = anthropic_message_params(ProviderCall(_thinking_loop(False), SONNET))
    assert "thinking" not in params and params["temperature"] == 1.0
