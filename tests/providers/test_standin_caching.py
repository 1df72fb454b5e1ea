"""Prompt-cache accounting of the stand-in, checked to the token through the real SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from models.domain.tokens import count_text
from workers.providers.standin.prompt import TOOL_PROMPT, claude_text
from workers.providers.standin import ManualClock, StandIn, StandInConfig
from workers.providers.standin.replies import WORDS

# The SDK warns that these catalogue models near end-of-life; that is the price table's concern.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

SONNET = "claude-sonnet-4-5"  # caches from 1,024 tokens
HAIKU = "claude-haiku-4-5"  # caches from 4,096 tokens


def long_text(words: int, salt: int = 0) -> str:
    """About ``words`` tokens of plain text; ``salt`` makes a different text of the same size."""
    return " ".join(WORDS[(i * 7 + salt) % len(WORDS)] for i in range(words)) + f" ({salt})"


def msg_tokens(text: str) -> int:
    """One message's tokens under the shared counting rule (4 framing tokens)."""
    return 4 + count_text(text)


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def standin(clock: ManualClock) -> Iterator[StandIn]:
    with StandIn(StandInConfig(clock=clock)) as server:
        yield server


@pytest.fixture
def ant(standin: StandIn, request: pytest.FixtureRequest) -> anthropic.Anthropic:
    # One API key per test: caches are scoped by key, so tests cannot see each other's entries.
    return anthropic.Anthropic(base_url=standin.anthropic_base_url, max_retries=0,
                               api_key=f"sk-ant-{request.node.name}")


@pytest.fixture
def oai(standin: StandIn, request: pytest.FixtureRequest) -> openai.OpenAI:
    return openai.OpenAI(base_url=standin.openai_base_url, max_retries=0,
                         api_key=f"sk-{request.node.name}")


def cached_system(text: str, ttl: str | None = None) -> list[dict[str, Any]]:
    mark: dict[str, str] = {"type": "ephemeral"}
    if ttl:
        mark["ttl"] = ttl
    return [{"type": "text", "text": text, "cache_control": mark}]


def ask(client: anthropic.Anthropic, system: Any, user: str = "Summarise.", model: str = SONNET,
        **kw: Any) -> anthropic.types.Usage:
    messages = kw.pop("messages", [{"role": "user", "content": user}])
    m = client.messages.create(model=model, max_tokens=5, system=system, messages=messages, **kw)
    u = m.usage
    assert u.cache_creation is not None
    # The three input buckets are disjoint and cover the whole prompt.
    total = u.input_tokens + u.cache_read_input_tokens + (u.cache_creation_input_tokens or 0)
    assert u.cache_creation_input_tokens == (u.cache_creation.ephemeral_5m_input_tokens
                                             + u.cache_creation.ephemeral_1h_input_tokens)
    assert total == expected_total(system, messages, kw.get("tools", []))
    return u


def expected_total(system: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
    texts = system if isinstance(system, str) else "".join(b["text"] for b in system)
    total = msg_tokens(texts) + 3
    for m in messages:
        content = m["content"]
        total += msg_tokens(content if isinstance(content, str)
                            else "".join(b["text"] for b in content))
    if tools:
        total += TOOL_PROMPT["auto"]  # Claude's tool-use system prompt
    for t in tools:
        total += claude_tool(t)
    return total


def claude_tool(t: dict[str, Any]) -> int:
    """A tool definition as the stand-in's Claude counts it: its schema as JSON."""
    schema = json.dumps(t["input_schema"], sort_keys=True, separators=(",", ":"))
    return 4 + claude_text(t["name"]) + claude_text(t.get("description", "")) + claude_text(schema)


# --- Anthropic ---------------------------------------------------------------------------------

def test_write_then_read_with_5m_ttl_and_expiry(ant: anthropic.Anthropic,
                                                clock: ManualClock) -> None:
    system = cached_system(long_text(1500))
    prefix = msg_tokens(system[0]["text"])
    first = ask(ant, system, "First question?")
    assert first.cache_creation_input_tokens == prefix
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix  # type: ignore[union-attr]
    assert first.cache_read_input_tokens == 0
    assert first.input_tokens == msg_tokens("First question?") + 3

    second = ask(ant, system, "Another question?")
    assert second.cache_read_input_tokens == prefix and second.cache_creation_input_tokens == 0
    clock.advance(299)
    assert ask(ant, system).cache_read_input_tokens == prefix  # and the read refreshed it
    clock.advance(299)
    assert ask(ant, system).cache_read_input_tokens == prefix
    clock.advance(301)
    expired = ask(ant, system)
    assert expired.cache_read_input_tokens == 0 and expired.cache_creation_input_tokens == prefix


def test_1h_ttl_outlives_five_minutes(ant: anthropic.Anthropic, clock: ManualClock) -> None:
    system = cached_system(long_text(1200, salt=1), ttl="1h")
    prefix = msg_tokens(system[0]["text"])
    first = ask(ant, system)
    assert first.cache_creation.ephemeral_1h_input_tokens == prefix  # type: ignore[union-attr]
    assert first.cache_creation.ephemeral_5m_input_tokens == 0  # type: ignore[union-attr]
    clock.advance(1800)
    assert ask(ant, system).cache_read_input_tokens == prefix
    clock.advance(3601)
    assert ask(ant, system).cache_creation_input_tokens == prefix


def test_two_breakpoints_split_writes_by_ttl_and_read_the_longest(ant: anthropic.Anthropic) -> None:
    head, tail = long_text(1100, salt=2), long_text(1100, salt=3)
    system = [cached_system(head, "1h")[0], cached_system(tail, "5m")[0]]
    bp1 = msg_tokens(head)
    bp2 = bp1 + count_text(tail)
    first = ask(ant, system)
    assert first.cache_creation.ephemeral_1h_input_tokens == bp1  # type: ignore[union-attr]
    assert first.cache_creation.ephemeral_5m_input_tokens == bp2 - bp1  # type: ignore[union-attr]
    assert ask(ant, system).cache_read_input_tokens == bp2
    # Change the second block: the first breakpoint is read, the new tail written.
    other_tail = long_text(1000, salt=4)
    changed = ask(ant, [system[0], cached_system(other_tail)[0]])
    assert changed.cache_read_input_tokens == bp1
    split = changed.cache_creation
    assert split is not None
    assert split.ephemeral_5m_input_tokens == count_text(other_tail)
    assert split.ephemeral_1h_input_tokens == 0


def test_conversation_breakpoints_grow_the_cached_prefix(ant: anthropic.Anthropic) -> None:
    turn1 = long_text(1300, salt=5)
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": turn1,
                                      "cache_control": {"type": "ephemeral"}}]}]
    system = "You are a helpful assistant."
    first = ask(ant, system, messages=msgs)
    bp1 = msg_tokens(system) + msg_tokens(turn1)
    assert first.cache_creation_input_tokens == bp1
    msgs += [{"role": "assistant", "content": "Noted."},
             {"role": "user", "content": [{"type": "text", "text": "And then?",
                                           "cache_control": {"type": "ephemeral"}}]}]
    second = ask(ant, system, messages=msgs)
    assert second.cache_read_input_tokens == bp1
    assert second.cache_creation_input_tokens == msg_tokens("Noted.") + msg_tokens("And then?")
    assert second.input_tokens == 3


def test_a_breakpoint_that_moved_on_reads_the_previous_one_by_looking_back(
        ant: anthropic.Anthropic) -> None:
    # An agent keeps one breakpoint on its newest turn: Anthropic finds the entry the last
    # turn wrote within 20 blocks before the new breakpoint.
    turn1 = long_text(1300, salt=9)
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": turn1,
                                      "cache_control": {"type": "ephemeral"}}]}]
    system = "You are a coding agent."
    first = ask(ant, system, messages=msgs)
    bp1 = msg_tokens(system) + msg_tokens(turn1)
    assert first.cache_creation_input_tokens == bp1
    msgs[0] = {"role": "user", "content": [{"type": "text", "text": turn1}]}  # mark moved on
    msgs += [{"role": "assistant", "content": "Noted."},
             {"role": "user", "content": [{"type": "text", "text": "And then?",
                                           "cache_control": {"type": "ephemeral"}}]}]
    second = ask(ant, system, messages=msgs)
    assert second.cache_read_input_tokens == bp1
    assert second.cache_creation_input_tokens == msg_tokens("Noted.") + msg_tokens("And then?")


def test_small_tool_breakpoint_folds_into_the_next_eligible_one(ant: anthropic.Anthropic) -> None:
    tools = [{"name": "lookup", "description": "Find a thing.",
              "cache_control": {"type": "ephemeral"},
              "input_schema": {"type": "object", "properties": {}}}]
    system = cached_system(long_text(1100, salt=6))
    first = ask(ant, system, tools=tools)
    # The tool-use system prompt leads the prefix, so it is cached with the tools.
    tool_tokens = TOOL_PROMPT["auto"] + claude_tool(tools[0])
    assert first.cache_creation_input_tokens == tool_tokens + msg_tokens(system[0]["text"])


def test_below_the_model_minimum_nothing_is_cached(ant: anthropic.Anthropic) -> None:
    system = cached_system(long_text(2000, salt=7))  # >= 1,024 but < haiku's 4,096
    for _ in range(2):
        u = ask(ant, system, model=HAIKU)
        assert u.cache_creation_input_tokens == 0 and u.cache_read_input_tokens == 0
    # The same prefix is long enough for sonnet.
    assert ask(ant, system, model=SONNET).cache_creation_input_tokens > 0


def test_cache_is_scoped_by_api_key_and_model(standin: StandIn, ant: anthropic.Anthropic) -> None:
    system = cached_system(long_text(1100, salt=8))
    ask(ant, system)
    other = anthropic.Anthropic(base_url=standin.anthropic_base_url, api_key="sk-ant-other",
                                max_retries=0)
    assert ask(other, system).cache_read_input_tokens == 0
    assert ask(ant, system, model="claude-opus-4-5").cache_read_input_tokens == 0  # below 4,096
    assert ask(ant, system).cache_read_input_tokens > 0


def test_more_than_four_breakpoints_is_refused(ant: anthropic.Anthropic) -> None:
    system = [cached_system(f"part {i}")[0] for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        ant.messages.create(model=SONNET, max_tokens=5, system=system,  # type: ignore[arg-type]
                            messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        ant.messages.create(model=SONNET, max_tokens=5,
                            system=cached_system("x", ttl="2h"),  # type: ignore[arg-type]
                            messages=[{"role": "user", "content": "hi"}])


def test_reset_clears_the_caches(standin: StandIn, ant: anthropic.Anthropic) -> None:
    system = cached_system(long_text(1100, salt=9))
    ask(ant, system)
    assert standin.stats()["cache_entries"]["anthropic"] > 0
    standin.reset()
    assert standin.stats()["cache_entries"]["anthropic"] == 0
    assert ask(ant, system).cache_read_input_tokens == 0


# --- OpenAI ------------------------------------------------------------------------------------

def chat(client: openai.OpenAI, system: str, user: str = "Go.", model: str = "gpt-4o-mini",
         key: str | None = None) -> tuple[int, int]:
    extra = {"prompt_cache_key": key} if key else {}
    r = client.chat.completions.create(model=model, max_tokens=5, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": user}], **extra)
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens == msg_tokens(system) + msg_tokens(user) + 3
    return r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens or 0


def steps(tokens: int) -> int:
    return 0 if tokens < 1024 else 1024 + (tokens - 1024) // 128 * 128


def test_openai_below_1024_is_never_cached(oai: openai.OpenAI) -> None:
    system = long_text(900, salt=10)
    assert chat(oai, system)[1] == 0
    assert chat(oai, system)[1] == 0


def test_openai_repeat_is_cached_in_128_token_steps(oai: openai.OpenAI, clock: ManualClock) -> None:
    system = long_text(1500, salt=11)
    total, cached = chat(oai, system, key="team-a")
    assert cached == 0
    total, cached = chat(oai, system, key="team-a")
    assert cached == steps(total - 3) and cached % 128 == 0 and 1024 <= cached <= total
    # Same system prompt, new user turn: the system message is the matched prefix.
    _, cached = chat(oai, system, "Something else entirely.", key="team-a")
    assert cached == steps(msg_tokens(system))
    assert chat(oai, system, key="team-b")[1] == 0  # another prompt_cache_key
    assert chat(oai, system, key="team-a", model="gpt-4o")[1] == 0  # another model
    clock.advance(601)
    assert chat(oai, system, key="team-a")[1] == 0  # expired after 10 minutes
