"""OpenAI request bodies to ChatRequest fields and back; the parameter each refusal names."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from models.domain.errors import ValidationError
from models.domain.request import parse_request
from models.domain.result import ChatResult, Route, Timings
from models.domain.usage import Usage
from queues.http.translate import (completion_body, param_for, sluice_headers, stream_mode,
                                   to_request)


def translate(body: dict[str, Any], **headers: str) -> tuple[dict[str, Any], dict[str, str]]:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return to_request({"model": "cheap", **body}, hdrs, team="t", org="o", key_id="k1")


def test_leading_system_turns_become_the_cacheable_prefix_and_tools_join_it() -> None:
    data, _ = translate({
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                     {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"sku": {"type": "string"}}}}}],
        "max_completion_tokens": 40, "stop": "END", "response_format": {"type": "json_object"},
        "top_p": 0.5}, x_sluice_feature="titles", x_sluice_lane="async", x_sluice_batch="TRUE")
    request = parse_request(data)
    assert request.static.system == "Be brief.\n\nNo emoji."
    assert [t.name for t in request.static.tools] == ["lookup"]
    assert [m.role for m in request.messages] == ["user"]
    assert (request.team, request.org, request.feature, request.lane) == ("t", "o", "titles",
                                                                          "async")
    assert request.max_tokens == 40 and request.stop == ("END",)
    assert request.response_format == "json" and request.tags == {"key": "k1", "batch": "true"}


def test_the_user_header_wins_over_the_body_and_is_named_when_wrong() -> None:
    data, origin = translate({"messages": [{"role": "user", "content": "x"}], "user": "body"},
                             x_sluice_user="header")
    assert data["user"] == "header" and origin["user"] == "x-sluice-user"
    data, origin = translate({"messages": [{"role": "user", "content": "x"}], "user": "a b"})
    with pytest.raises(ValidationError) as exc:
        parse_request(data)
    assert param_for(exc.value.field, origin) == "user"


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "always"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}],
      "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "functions": [{}]}, "functions"),
    ({"messages": [{"role": "user", "content": "x"}], "web_search_options": {}},
     "web_search_options"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "stream": True},
     "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "prediction": {"type": "x"}},
     "prediction"),
    ({"messages": [{"role": "user", "content": "x"}], "audio": {}}, "audio"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]},
     "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema"}}, "response_format"),
])
def test_unsupported_or_malformed_input_names_its_parameter(body: dict[str, Any],
                                                             param: str) -> None:
    with pytest.raises(ValidationError) as exc:
        translate(body)
    assert exc.value.field == param


@pytest.mark.parametrize(("field", "param"), [
    ("static.system", "messages"), ("static.tools.0.name", "tools"),
    ("messages.0.content", "messages"),
    ("max_tokens", "max_completion_tokens"), ("lane", "x-sluice-lane"),
    ("feature", "x-sluice-feature"), ("temperature", "temperature"), ("stop.1", "stop"),
])
def test_internal_fields_map_back_to_what_the_client_sent(field: str, param: str) -> None:
    _, origin = translate({"messages": [{"role": "user", "content": "x"}],
                           "max_completion_tokens": 5})
    assert param_for(field, origin) == param


def test_usage_counts_cached_tokens_inside_prompt_tokens() -> None:
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    result = ChatResult(request_id="r1", text="ok", provider="openai", model="gpt-4o-mini",
                        route=route, usage=Usage(input_uncached=100, cache_read=1024,
                                                 cache_write_5m=0, output=7, reasoning=2),
                        cost=Decimal("0.000123400"), baseline_cost=Decimal("0.01"),
                        finish_reason="weird")
    body = completion_body(result, created=1)
    assert body["usage"] == {"prompt_tokens": 1124, "completion_tokens": 7,
                             "total_tokens": 1131, "prompt_tokens_details": {"cached_tokens": 1024},
                             "completion_tokens_details": {"reasoning_tokens": 2}}
    assert body["id"] == "chatcmpl-r1" and body["choices"][0]["finish_reason"] == "stop"
    headers = sluice_headers(result)
    assert headers["x-sluice-cost"] == "0.000123400" and headers["x-sluice-cache"] == "miss"
    assert headers["x-sluice-route"] == "tier=cheap; model=gpt-4o-mini; queue=interactive.api"
    timed = result.model_copy(update={"timings": Timings(queued_ms=3.04, provider_ms=41.26,
                                                         total_ms=44.3)})
    assert sluice_headers(timed)["server-timing"] == ("queue;dur=3.0, provider;dur=41.3, "
                                                      "total;dur=44.3")


def test_the_callers_timeout_comes_from_our_header_or_its_sdk() -> None:
    msgs = {"messages": [{"role": "user", "content": "hi"}]}
    assert translate(msgs, x_sluice_timeout="2.5")[0]["timeout_s"] == 2.5
    # The official SDKs announce their timeouts; ours wins over theirs.
    assert translate(msgs, x_stainless_read_timeout="600")[0]["timeout_s"] == 600
    assert translate(msgs, x_stainless_timeout="30", x_sluice_timeout="4")[0]["timeout_s"] == 4
    assert "timeout_s" not in translate(msgs, x_stainless_read_timeout="soon")[0]
    assert parse_request(translate(msgs, x_sluice_timeout="9")[0]).timeout_s == 9
    # An async request's HTTP call ends at once with a job: its SDK timeout says nothing.
    assert "timeout_s" not in translate(msgs, x_sluice_lane="async",
                                        x_stainless_read_timeout="600")[0]
    assert translate(msgs, x_sluice_lane="async", x_sluice_timeout="900")[0]["timeout_s"] == 900
    for bad in ("0", "-1", "nan", "1e9", "soon"):
        with pytest.raises(ValidationError) as exc:
            translate(msgs, x_sluice_timeout=bad)
        assert exc.value.field == "x-sluice-timeout" and "seconds" in exc.value.message


@pytest.mark.parametrize(("body", "mode"), [
    ({}, (False, False)), ({"stream": False}, (False, False)), ({"stream": None}, (False, False)),
    ({"stream": True}, (True, False)),
    ({"stream": True, "stream_options": {"include_usage": True}}, (True, True)),
    ({"stream": True, "stream_options": {"include_obfuscation": False}}, (True, False)),
])
def test_stream_mode_reads_stream_and_include_usage(body: dict[str, Any],
                                                    mode: tuple[bool, bool]) -> None:
    assert stream_mode(body) == mode
    translate({"messages": [{"role": "user", "content": "x"}], **body})  # and translates


@pytest.mark.parametrize(("body", "param"), [
    ({"stream": 1}, "stream"), ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # stream not set
    ({"stream": False, "stream_options": {}}, "stream_options"),
    ({"stream": True, "stream_options": ["include_usage"]}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": "true"}}, "stream_options"),
])
def test_malformed_stream_params_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as exc:
        stream_mode(body)
    assert exc.value.field == param
