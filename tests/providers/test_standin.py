"""The provider stand-in through the real openai and anthropic SDKs: shapes, faults, stats."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from models.domain.request import ChatRequest
from models.domain.catalogue import load_catalogue
from models.domain.tokens import count_request, count_text, input_bound, prompt_count
from workers.providers.standin import StandIn, StandInConfig

ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "Hello there, how are you today?"}]
#: Prompt tokens of HI after a "You are terse." system message: 4 per message, 3 for the reply.
TERSE_HI = 4 + count_text("You are terse.") + 4 + count_text(HI[0]["content"]) + 3


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture(scope="module")
def oai(standin: StandIn) -> openai.OpenAI:
    return openai.OpenAI(base_url=standin.openai_base_url, api_key="sk-test", max_retries=0)


@pytest.fixture(scope="module")
def ant(standin: StandIn) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=standin.anthropic_base_url, api_key="sk-ant-test",
                               max_retries=0)


def _ask(ant: anthropic.Anthropic, **kw: object) -> anthropic.types.Message:
    args: dict[str, object] = {"model": "claude-haiku-4-5", "max_tokens": 400, "messages": HI}
    args.update(kw)
    return ant.messages.create(**args)  # type: ignore[call-overload,no-any-return]


# --- reply shape, determinism, token counts ---------------------------------------------------

def test_openai_reply_shape_and_usage(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o-mini", max_tokens=400, messages=[
        {"role": "system", "content": "You are terse."}, *HI])
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini" and len(r.choices) == 1
    text = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant" and text
    assert r.choices[0].finish_reason == "stop"
    u = r.usage
    assert u is not None
    assert u.prompt_tokens == TERSE_HI
    assert u.completion_tokens == count_text(text)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 0
    assert u.completion_tokens_details is not None
    assert u.completion_tokens_details.reasoning_tokens == 0


def test_anthropic_reply_shape_and_usage(ant: anthropic.Anthropic) -> None:
    m = _ask(ant, system="You are terse.")
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude-haiku-4-5" and m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"]
    text = m.content[0].text  # type: ignore[union-attr]
    u = m.usage
    assert u.input_tokens == TERSE_HI
    assert u.output_tokens == count_text(text)
    assert u.cache_creation_input_tokens == 0 and u.cache_read_input_tokens == 0
    assert u.cache_creation is not None
    assert u.cache_creation.ephemeral_5m_input_tokens == 0
    assert u.cache_creation.ephemeral_1h_input_tokens == 0


def test_replies_are_deterministic_per_model_and_prompt(oai: openai.OpenAI) -> None:
    def say(model: str, content: str) -> str:
        r = oai.chat.completions.create(model=model,
                                        messages=[{"role": "user", "content": content}])
        return r.choices[0].message.content or ""

    first = say("gpt-4o-mini", "Name a colour.")
    assert say("gpt-4o-mini", "Name a colour.") == first
    assert say("gpt-4o", "Name a colour.") != first
    assert say("gpt-4o-mini", "Name a fruit.") != first


def test_reply_length_follows_what_is_asked(oai: openai.OpenAI) -> None:
    def tokens(content: str) -> int:
        r = oai.chat.completions.create(model="gpt-4o",
                                        messages=[{"role": "user", "content": content}])
        assert r.usage is not None and r.choices[0].finish_reason == "stop"
        return r.usage.completion_tokens

    assert tokens("Write an essay about rivers.") > 200
    assert tokens("Classify the sentiment of: I love it.") < 20


def test_max_tokens_cuts_the_reply(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    r = oai.chat.completions.create(model="gpt-4o", max_completion_tokens=25, messages=[
        {"role": "user", "content": "Explain rivers in detail."}])
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 25
    assert count_text(r.choices[0].message.content or "") == 25
    m = _ask(ant, max_tokens=25, messages=[{"role": "user", "content": "Write an essay on tea."}])
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 25


def test_stop_sequences_cut_before_the_match(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Tell me about the sea."}]
    full = oai.chat.completions.create(model="gpt-4o", messages=ask).choices[0].message.content
    assert full
    word = " " + full.split(" ")[3]
    cut = oai.chat.completions.create(model="gpt-4o", messages=ask, stop=[word])
    assert cut.choices[0].message.content == full[:full.index(word)]
    assert cut.choices[0].finish_reason == "stop"

    whole = _ask(ant, messages=ask).content[0].text  # type: ignore[union-attr]
    word = " " + whole.split(" ")[2]
    m = _ask(ant, messages=ask, stop_sequences=[word, "zzz-never"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == word
    assert m.content[0].text == whole[:whole.index(word)]  # type: ignore[union-attr]


def test_prompt_count_matches_the_gateway_estimate(oai: openai.OpenAI,
                                                   ant: anthropic.Anthropic) -> None:
    req = ChatRequest(team="t", feature="f", static={
        "system": "You answer questions about invoices.",
        "few_shot": [{"role": "user", "content": "Total?"}, {"role": "assistant", "content": "42"}],
        "tools": [{"name": "lookup", "description": "Find an invoice by id.",
                   "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}],
    }, messages=[{"role": "user", "content": "What is due on invoice 7?"}])
    turns = [{"role": m.role, "content": m.content} for m in (*req.static.few_shot, *req.messages)]
    tool = req.static.tools[0]
    r = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "developer", "content": req.static.system}, *turns],
        tools=[{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                                 "parameters": tool.parameters}}],
        temperature=0.2, response_format={"type": "text"}, user="u1", prompt_cache_key="k")
    assert r.usage is not None and r.usage.prompt_tokens == count_request(req)
    m = _ask(ant, system=[{"type": "text", "text": req.static.system}], messages=turns,
             tools=[{"name": tool.name, "description": tool.description,
                     "input_schema": tool.parameters}], extra_body={"temperature": 0.5})
    # Claude counts more than o200k (its tool-use system prompt alone is 346 tokens); the
    # gateway's bound for it still covers the count.
    haiku = load_catalogue().get("claude-haiku-4-5")
    assert count_request(req) < m.usage.input_tokens
    assert m.usage.input_tokens <= input_bound(prompt_count(req), haiku.bound)


def test_openai_content_parts_count_like_a_string(oai: openai.OpenAI) -> None:
    parts = oai.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": [{"type": "text", "text": "Hello there, how are you today?"}]}])
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert parts.usage is not None and plain.usage is not None
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


# --- refusals ----------------------------------------------------------------------------------

def test_openai_refuses_n(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HI, n=2)


def test_openai_streams_the_same_answer_in_pieces_with_usage_last(oai: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Explain tea brewing in detail, step by step."}]
    whole = oai.chat.completions.create(model="gpt-4o-mini", messages=ask, max_tokens=80)
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=ask, max_tokens=80,
                                              stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 5 and "".join(texts) == whole.choices[0].message.content
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_anthropic_streams_the_same_answer_through_the_sdk(ant: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Explain tea brewing in detail, step by step."}]
    whole = _ask(ant, messages=ask, max_tokens=80)
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=80, messages=ask) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 5 and "".join(pieces) == whole.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.stop_reason == whole.stop_reason == "max_tokens"


def test_anthropic_requires_max_tokens(standin: StandIn) -> None:
    r = httpx.post(f"{standin.url}/v1/messages", json={"model": "claude-haiku-4-5", "messages": HI},
                   headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_missing_key_is_401(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    no_auth = openai.OpenAI(base_url=standin.openai_base_url, api_key="x", max_retries=0,
                            default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as oe:
        no_auth.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert oe.value.status_code == 401
    keyless = anthropic.Anthropic(base_url=standin.anthropic_base_url, api_key=None, max_retries=0,
                                  default_headers={"Authorization": anthropic.Omit()})
    with pytest.raises(anthropic.AuthenticationError) as ae:
        _ask(keyless)
    assert ae.value.type == "authentication_error"


def test_unknown_or_foreign_model_is_404(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.NotFoundError) as oe:
        oai.chat.completions.create(model="gpt-9-imaginary", messages=HI)
    assert oe.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="claude-haiku-4-5", messages=HI)
    with pytest.raises(anthropic.NotFoundError) as ae:
        _ask(ant, model="gpt-4o")
    assert ae.value.type == "not_found_error"


def test_model_lists(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    assert {"gpt-4o", "gpt-4o-mini"} <= {m.id for m in oai.models.list()}
    assert "claude-haiku-4-5" not in {m.id for m in oai.models.list()}
    from models.domain.catalogue import load_catalogue

    anthropic_models = {m.name for m in load_catalogue().models.values()
                        if m.provider == "anthropic"}
    assert {m.id for m in ant.models.list()} == anthropic_models
    assert {"claude-sonnet-4-6", "claude-haiku-4-5"} <= anthropic_models


# --- faults ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "oai_error", "ant_error"), [
    ("429;retry-after=3", openai.RateLimitError, anthropic.RateLimitError),
    ("500", openai.InternalServerError, anthropic.InternalServerError),
    ("529", openai.InternalServerError, anthropic.OverloadedError),
    ("503", openai.InternalServerError, anthropic.ServiceUnavailableError),
    ("400", openai.BadRequestError, anthropic.BadRequestError),
])
def test_header_faults_raise_the_sdk_class(oai: openai.OpenAI, ant: anthropic.Anthropic,
                                           spec: str, oai_error: type[openai.APIStatusError],
                                           ant_error: type[anthropic.APIStatusError]) -> None:
    status = int(spec.split(";")[0])
    header = {"x-standin-fault": spec}
    with pytest.raises(oai_error) as oe:
        oai.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers=header)
    with pytest.raises(ant_error) as ae:
        _ask(ant, extra_headers=header)
    assert oe.value.status_code == ae.value.status_code == status
    assert set(oe.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    assert ae.value.body["type"] == "error"  # type: ignore[index]
    if status == 429:
        for err in (oe.value, ae.value):
            assert err.response.headers["retry-after"] == "3"
        assert ae.value.type == "rate_limit_error" and oe.value.code == "rate_limit_exceeded"
    if status == 529:
        assert ae.value.type == "overloaded_error"


def test_malformed_fault_breaks_json_decoding(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    header = {"x-standin-fault": "malformed"}
    with pytest.raises(json.JSONDecodeError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers=header)
    with pytest.raises(json.JSONDecodeError):
        _ask(ant, extra_headers=header)


def test_timeout_fault_delays_the_answer(oai: openai.OpenAI) -> None:
    impatient = oai.with_options(timeout=0.15)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                          extra_headers={"x-standin-fault": "timeout=5"})
    start = time.perf_counter()
    r = oai.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                    extra_headers={"x-standin-fault": "timeout=0.3"})
    assert time.perf_counter() - start >= 0.3 and r.choices[0].message.content


def test_bad_fault_header_is_a_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="x-standin-fault"):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                    extra_headers={"x-standin-fault": "explode"})


def test_scripted_faults_are_consumed_in_order_by_matching_requests(
        standin: StandIn, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    standin.reset()
    assert standin.script_faults(["429;retry-after=0.5", "500"], model="gpt-4o-mini",
                                 path="openai") == 2
    # Other models and the other API do not consume the script.
    oai.chat.completions.create(model="gpt-4o", messages=HI)
    _ask(ant)
    with pytest.raises(openai.RateLimitError) as first:
        oai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert first.value.response.headers["retry-after"] == "0.5"
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert oai.chat.completions.create(model="gpt-4o-mini", messages=HI).choices[0].message.content
    assert standin.stats()["faults_pending"] == 0
    with pytest.raises(ValueError, match="expected a 4xx/5xx"):
        standin.script_faults(["200"])


def test_latency_header_and_config(standin: StandIn, oai: openai.OpenAI) -> None:
    start = time.perf_counter()
    oai.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                extra_headers={"x-standin-latency-ms": "120"})
    assert time.perf_counter() - start >= 0.12
    with StandIn(StandInConfig(latency_ms=100, per_token_latency_ms=2)) as slow:
        client = openai.OpenAI(base_url=slow.openai_base_url, api_key="k", max_retries=0)
        start = time.perf_counter()
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=20)
        assert r.usage is not None
        assert time.perf_counter() - start >= 0.1 + 0.002 * r.usage.completion_tokens
        assert slow.port != standin.port


# --- introspection and runner ------------------------------------------------------------------

def test_stats_count_requests_and_tokens_then_reset(standin: StandIn, oai: openai.OpenAI,
                                                    ant: anthropic.Anthropic) -> None:
    standin.reset()
    a = oai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    b = _ask(ant)
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4o", messages=HI,
                                    extra_headers={"x-standin-fault": "429"})
    stats = standin.stats()
    assert stats["by_path"] == {"/v1/chat/completions": 2, "/v1/messages": 1}
    assert stats["by_model"] == {"gpt-4o-mini": 1, "claude-haiku-4-5": 1, "gpt-4o": 1}
    assert stats["by_status"] == {"200": 2, "429": 1}
    assert stats["faults_injected"] == 1
    assert a.usage is not None
    assert stats["tokens"]["prompt"] == a.usage.prompt_tokens + b.usage.input_tokens
    assert stats["tokens"]["output"] == a.usage.completion_tokens + b.usage.output_tokens
    standin.script_faults(["500"])
    standin.reset()
    after = standin.stats()
    assert after["requests"] == 0 and after["tokens"]["prompt"] == 0
    assert after["faults_pending"] == 0
    oai.chat.completions.create(model="gpt-4o-mini", messages=HI)  # the scripted 500 is gone


def test_runner_urls_and_health(standin: StandIn) -> None:
    assert standin.url == f"http://127.0.0.1:{standin.port}"
    assert standin.openai_base_url == standin.url + "/v1"
    assert standin.anthropic_base_url == standin.url
    assert httpx.get(standin.url + "/healthz").json() == {"status": "ok"}
    idle = StandIn()
    with pytest.raises(RuntimeError, match="not running"):
        _ = idle.url


def test_module_entry_point_serves(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "workers.providers.standin", "--port",
                             str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
