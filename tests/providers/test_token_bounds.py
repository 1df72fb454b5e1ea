"""A reservation is an upper bound of the bill: random prompts with tools, through the official
SDKs, against the stand-in's own counts (issue 16, must-have 7).

The stand-in counts OpenAI prompts as the gateway does (o200k) and Anthropic ones the way Claude
does (another tokenizer, tool schemas as JSON, a tool-use system prompt), so the Anthropic bound
is tested against a count that really is larger than ours.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of, worst_case_cost
from models.domain.request import ChatRequest, parse_request
from models.domain.tokens import count_request, input_bound, prompt_count
from workers.providers.anthropic_messages import AnthropicMessagesProvider
from workers.providers.base import ProviderCall
from workers.providers.openai_chat import OpenAIChatProvider

CAT = load_catalogue()
MODELS = {"openai": ["gpt-4o-mini", "gpt-4o"],
          "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"]}

# Any text a caller may send: English, other scripts, emoji, punctuation, whitespace runs.
texts = st.one_of(
    st.text(alphabet=string.printable, min_size=1, max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=120),
    st.lists(st.sampled_from(["refund", "order", "Berlin", "déjà", "naïve", "’", "—", "日本",
                              "कृपया", "🙂", "42", "{", "}", ":", "\n"]),
             min_size=1, max_size=60).map(" ".join),
).filter(lambda t: t.strip() != "")
names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,30}", fullmatch=True)
tools = st.lists(st.builds(
    lambda name, desc, props: {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": {p: {"type": "string", "description": d}
                                         for p, d in props.items()},
        "required": sorted(props)[:1]}},
    names, texts, st.dictionaries(names, texts, max_size=4)),
    min_size=1, max_size=4, unique_by=lambda t: t["name"])


@st.composite
def requests(draw: Any) -> ChatRequest:
    turns = draw(st.lists(texts, min_size=1, max_size=5))
    if len(turns) % 2 == 0:
        turns.append(draw(texts))  # user, assistant, ..., user
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                for i, t in enumerate(turns)]
    static: dict[str, Any] = {"tools": draw(tools)}
    if draw(st.booleans()):
        static["system"] = draw(texts)
    return parse_request({"team": "t", "feature": "bounds", "max_tokens": draw(
        st.integers(1, 64)), "static": static, "messages": messages})


@pytest.fixture(scope="module")
def providers(standin: Any) -> Iterator[dict[str, Any]]:
    made = {"openai": OpenAIChatProvider(api_key="sk-test", base_url=standin.openai_base_url,
                                         timeout=10),
            "anthropic": AnthropicMessagesProvider(api_key="sk-ant-bounds",
                                                   base_url=standin.anthropic_base_url,
                                                   timeout=10)}
    yield made
    for p in made.values():
        p.close()


@pytest.mark.parametrize("family", ["openai", "anthropic"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests(), which=st.integers(0, 2))
def test_the_reservation_covers_what_the_provider_bills(providers: dict[str, Any], family: str,
                                                        request: ChatRequest, which: int) -> None:
    model = CAT.get(MODELS[family][which % len(MODELS[family])])
    reply = providers[family].complete(ProviderCall(request=request, model=model,
                                                    cache_scope="org/t/bounds"))
    prompt = prompt_count(request)
    billed = reply.usage.input_total
    assert input_bound(prompt, model.bound) >= billed
    assert worst_case_cost(prompt, request.max_tokens, model) >= cost_of(reply.usage, model)
    if family == "anthropic":
        # Claude-shaped: its count exceeds our o200k one, so o200k alone was no bound.
        assert billed > count_request(request)
    else:
        assert billed == count_request(request)
