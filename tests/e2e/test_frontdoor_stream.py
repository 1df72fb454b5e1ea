"""``stream=true`` through the front door: relayed as the provider generates it, errors before
the first piece as HTTP errors, the async SDK too."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from tests.e2e.frontdoor_support import SYSTEM, row, user

pytestmark = pytest.mark.integration


def test_stream_true_relays_text_as_the_provider_generates_it(client: openai.OpenAI,
                                                               sessions: Any,
                                                               standin: Any) -> None:
    # The provider generates slowly (40 ms a token): the first piece must come long before
    # the last, through the worker, Redis and the door.
    standin.script_faults(["slow=40"], path="openai", model="gpt-4o-mini")
    messages = [{"role": "system", "content": SYSTEM}, user("Title: oak shelf")]
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="cheap", messages=messages, max_tokens=24, stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-sluice-feature": "streamed"})
    assert raw.headers["content-type"].startswith("text/event-stream")
    arrivals: list[tuple[float, Any]] = [(time.monotonic() - t0, c) for c in raw.parse()]
    chunks = [c for _, c in arrivals]
    texts = [(t, c.choices[0].delta.content) for t, c in arrivals
             if c.choices and c.choices[0].delta.content]
    text = "".join(piece for _, piece in texts)
    assert len(texts) >= 3, texts
    total = arrivals[-1][0]
    assert texts[0][0] < 0.6 * total, f"first text at {texts[0][0]:.3f} s of {total:.3f} s"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert (r.feature, r.outcome) == ("streamed", "ok") and r.cost > 0
    assert chunks[-1].usage.completion_tokens == r.output
    # The same prompt streamed again comes whole from the response cache, same text...
    cached = client.chat.completions.with_raw_response.create(
        model="cheap", messages=messages, max_tokens=24, stream=True,
        extra_headers={"x-sluice-feature": "streamed"})
    assert cached.headers["x-sluice-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in cached.parse()) == text
    # ...and not streamed, too.
    again = client.chat.completions.with_raw_response.create(
        model="cheap", messages=messages, max_tokens=24,
        extra_headers={"x-sluice-feature": "streamed"})
    assert again.headers["x-sluice-cache"] == "hit"
    assert again.parse().choices[0].message.content == text


def test_a_stream_that_fails_before_its_first_piece_is_an_ordinary_http_error(
        client: openai.OpenAI, standin: Any) -> None:
    standin.script_faults(["400"], path="openai", model="gpt-4o-mini")
    with pytest.raises(openai.APIStatusError) as exc:
        list(client.chat.completions.create(model="cheap", messages=[user("Title: lamp")],
                                            max_tokens=8, stream=True))
    assert exc.value.status_code == 502 and exc.value.code == "provider_permanent"


def test_async_sdk_streams_too(door: str, team_key: str) -> None:
    async def run() -> tuple[str, int]:
        async with openai.AsyncOpenAI(api_key=team_key, base_url=door + "/v1",
                                      max_retries=0, timeout=30) as ac:
            stream = await ac.chat.completions.create(
                model="gpt-4o-mini", max_tokens=12, messages=[user("Rephrase: jug")],
                stream=True)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return "".join(parts), len(parts)

    text, n = asyncio.run(run())
    assert text and n >= 2  # the role chunk, the content, the finish
