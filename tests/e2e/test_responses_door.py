"""``/v1/responses`` with the official openai SDK against the real door and real workers.

Plain, instructions, images, a function-tool loop to its answer, streaming (event order and
sequence numbers), chaining with ``previous_response_id`` where the feature keeps text, the
400 where it does not, another team's id as a 404, reasoning items passed back with their
encrypted content, a Claude-routed request translated to Messages, and the async client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.billed import wait_all_billed
from tests.e2e.frontdoor_support import mint, row

pytestmark = pytest.mark.integration
KEPT = "responses-kept"  # the feature that keeps text (tests/conftest.py's integration_env)
MINI, REASONER, CLAUDE = "gpt-4o-mini", "gpt-5-mini", "claude-haiku-4-5"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
#: A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def said(text: str) -> str:
    """``text`` made unique, so the response cache never answers it."""
    return f"{text} ({uuid.uuid4().hex[:10]})"


def sent_to_openai(standin: Any, marker: str) -> dict[str, Any]:
    """The Responses body the stand-in received whose JSON holds ``marker``."""
    found = [r["body"] for r in standin.received(marker) if "input" in r["body"]]
    assert found, f"no /v1/responses call carried {marker!r}"
    return found[-1]


@pytest.fixture(scope="module")
def kept(door: str, pg_url: str) -> Any:
    """A client of a team whose key bills the feature that keeps text."""
    key = mint(pg_url, "resp-keepers", feature=KEPT)
    with openai.OpenAI(api_key=key, base_url=door + "/v1", max_retries=0, timeout=30) as c:
        yield c


def test_plain_answer_is_a_response_billed_in_the_ledger(client: Any, sessions: Any,
                                                         standin: Any) -> None:
    ask = said("Name a teapot")
    raw = client.responses.with_raw_response.create(model=MINI, input=ask)
    r = raw.parse()
    rid = raw.headers["x-sluice-request-id"]
    assert r.id == f"resp_{rid}" and r.object == "response" and r.status == "completed"
    assert r.output_text and r.output[0].type == "message"
    ledger = row(sessions, rid)
    assert ledger.outcome == "ok" and ledger.cost > 0
    # usage as OpenAI's: input_tokens counts cached tokens in; the ledger keeps them apart.
    assert r.usage.input_tokens == ledger.input_uncached + ledger.cache_read
    assert r.usage.input_tokens_details.cached_tokens == ledger.cache_read
    assert r.usage.output_tokens == ledger.output
    # Routed to an OpenAI model: sent to the provider's Responses API, not chat completions.
    assert sent_to_openai(standin, ask)["store"] is False


def test_instructions_are_the_system_prompt_and_store_is_off_without_opt_in(
        client: Any, standin: Any) -> None:
    ask = said("Title for a mug")
    r = client.responses.create(model=MINI, instructions="Answer in five words.", input=ask,
                                max_output_tokens=40, temperature=0.2, metadata={"k": "v"})
    body = sent_to_openai(standin, ask)
    assert body["instructions"] == "Answer in five words."
    assert body["max_output_tokens"] == 40 and body["metadata"] == {"k": "v"}
    # The default feature keeps no text: store is answered false, as for a ZDR org.
    assert r.store is False and r.instructions == "Answer in five words."


def test_an_image_reaches_the_model(client: Any, standin: Any) -> None:
    ask = said("What is in this picture?")
    r = client.responses.create(model=MINI, input=[{"role": "user", "content": [
        {"type": "input_text", "text": ask},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])
    assert r.output_text
    parts = sent_to_openai(standin, ask)["input"][0]["content"]
    assert [p["type"] for p in parts] == ["input_text", "input_image"]


def test_a_function_tool_loop_runs_to_its_answer(client: Any, sessions: Any) -> None:
    ask = said("use tool get_weather for Paris")
    first = client.responses.create(model=MINI, input=ask, tools=[WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    history = [{"role": "user", "content": ask}, *[o.model_dump(exclude_none=True)
                                                   for o in first.output],
               {"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "18C and sunny"}]
    raw = client.responses.with_raw_response.create(model=MINI, input=history, tools=[WEATHER])
    final = raw.parse()
    assert final.output_text and not [o for o in final.output if o.type == "function_call"]
    assert row(sessions, raw.headers["x-sluice-request-id"]).outcome == "ok"


EXPECTED_TEXT = ["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done",
                 "response.output_item.done", "response.completed"]


def _collapsed(kinds: list[str]) -> list[str]:
    return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]


def test_streaming_sends_the_semantic_events_in_order(client: Any) -> None:
    with client.responses.stream(model=MINI, input=said("Describe a lamp")) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert _collapsed(kinds) == EXPECTED_TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text and final.usage.output_tokens > 0


def test_a_streamed_function_call_has_its_argument_events(client: Any) -> None:
    with client.responses.stream(model=MINI, input=said("use tool get_weather in Oslo"),
                                 tools=[WEATHER]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds.index("response.function_call_arguments.delta") \
        < kinds.index("response.function_call_arguments.done") \
        < kinds.index("response.completed")
    assert final.output[-1].type == "function_call"


def test_previous_response_id_chains_and_reads_back_where_text_is_kept(
        kept: Any, standin: Any) -> None:
    first_ask = said("Remember the word marmalade")
    first = kept.responses.create(model=MINI, input=first_ask)
    assert first.store is True
    second_ask = said("Which word did I ask you to remember?")
    second = kept.responses.create(model=MINI, input=second_ask,
                                   previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # The provider read the whole conversation: the first turn and its answer.
    sent = sent_to_openai(standin, second_ask)["input"]
    assert first_ask in str(sent) and first.output_text in str(sent)
    got = kept.responses.retrieve(first.id)
    assert (got.id, got.output_text) == (first.id, first.output_text)
    items = kept.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == second_ask
    kept.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        kept.responses.retrieve(first.id)


def test_previous_response_id_is_a_400_that_says_how_where_text_is_not_kept(
        client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MINI, input="and then?", previous_response_id="resp_x")
    assert err.value.body["param"] == "previous_response_id"
    assert "SLUICE_PRIVACY__STORE_TEXT_FEATURES" in err.value.body["message"]


def test_another_teams_response_is_not_found(kept: Any, door: str, pg_url: str) -> None:
    mine = kept.responses.create(model=MINI, input=said("A secret of ours"))
    other = mint(pg_url, "resp-others", feature=KEPT)
    with openai.OpenAI(api_key=other, base_url=door + "/v1", max_retries=0) as theirs:
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.create(model=MINI, input="go on", previous_response_id=mine.id)
    assert kept.responses.retrieve(mine.id).id == mine.id  # still there for its own team


def test_reasoning_items_round_trip_with_their_encrypted_content(client: Any,
                                                                 standin: Any) -> None:
    ask = said("use tool get_weather for Rome")
    first = client.responses.create(model=REASONER, input=ask, tools=[WEATHER],
                                    reasoning={"effort": "low", "summary": "auto"},
                                    include=["reasoning.encrypted_content"])
    thought = first.output[0]
    assert thought.type == "reasoning" and thought.encrypted_content and thought.summary
    assert first.usage.output_tokens_details.reasoning_tokens > 0
    call = next(o for o in first.output if o.type == "function_call")
    history = [{"role": "user", "content": ask},
               *[o.model_dump(exclude_none=True) for o in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "21C"}]
    final = client.responses.create(model=REASONER, input=history, tools=[WEATHER],
                                    include=["reasoning.encrypted_content"])
    assert final.output_text
    # The stand-in verifies what comes back (a 400 otherwise): the item went on opaque.
    sent = [i for i in sent_to_openai(standin, thought.encrypted_content)["input"]
            if i.get("type") == "reasoning"]
    assert sent and sent[0]["encrypted_content"] == thought.encrypted_content


def test_without_include_the_encrypted_reasoning_stays_with_the_door(kept: Any) -> None:
    first = kept.responses.create(model=REASONER, input=said("use tool get_weather for Lima"),
                                  tools=[WEATHER])
    assert first.output[0].type == "reasoning" and first.output[0].encrypted_content is None
    call = next(o for o in first.output if o.type == "function_call")
    # Chained: the door sends its kept copy (with the encrypted content) on.
    final = kept.responses.create(model=REASONER, previous_response_id=first.id, tools=[WEATHER],
                                  input=[{"type": "function_call_output",
                                          "call_id": call.call_id, "output": "25C"}])
    assert final.output_text


def test_routed_to_claude_it_is_translated_to_messages(client: Any, standin: Any) -> None:
    ask = said("use tool get_weather for Bern")
    r = client.responses.create(model=CLAUDE, input=ask, tools=[WEATHER],
                                reasoning={"effort": "low"}, max_output_tokens=2048)
    assert r.output[-1].type == "function_call" and r.output[-1].name == "get_weather"
    body = next(x["body"] for x in reversed(standin.received(ask)) if x["family"] == "anthropic")
    assert body["tools"][0]["name"] == "get_weather" and body["thinking"]["type"] == "enabled"


def test_unknown_parameters_and_hosted_tools_are_openai_shaped_400s(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MINI, input="hi", tools=[{"type": "web_search"}])
    assert err.value.body["param"] == "tools" and "function tools" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MINI, input="hi", extra_body={"bogus": 1})
    assert err.value.body["param"] == "bogus"


def test_the_async_client_creates_and_streams(door: str, team_key: str) -> None:
    async def run() -> tuple[str, str, list[str]]:
        async with openai.AsyncOpenAI(api_key=team_key, base_url=door + "/v1",
                                      max_retries=0) as c:
            whole = await c.responses.create(model=MINI, input=said("Name a chair"))
            async with c.responses.stream(model=MINI, input=said("Name a desk")) as stream:
                kinds = [e.type async for e in stream]
                final = await stream.get_final_response()
        return whole.output_text, final.output_text, kinds

    whole, streamed, kinds = asyncio.run(run())
    assert whole and streamed and _collapsed(kinds) == EXPECTED_TEXT


def test_an_async_lane_job_answers_as_a_response(client: Any, door: str,
                                                 team_key: str) -> None:
    import time

    import httpx

    raw = client.responses.with_raw_response.create(
        model=MINI, input=said("Name a stool"), extra_headers={"x-sluice-lane": "async"})
    assert raw.status_code == 202
    job = raw.http_response.json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        polled = httpx.get(f"{door}/v1/jobs/{job['id']}",
                           headers={"authorization": f"Bearer {team_key}"}).json()
        if polled["status"] == "completed":
            break
        time.sleep(0.1)
    result = polled["result"]
    assert result["object"] == "response" and result["output"][0]["type"] == "message"
    assert result["id"] == f"resp_{job['id']}" and result["usage"]["output_tokens"] > 0


def test_a_stream_that_breaks_after_its_first_text_ends_with_an_error_event(
        door: str, team_key: str, standin: Any) -> None:
    import json

    import httpx

    # The stand-in's stream drops after its first text deltas (a model of its own here, so
    # no other test's call takes the scripted fault).
    standin.script_faults(["cut=4"], path="openai", model="gpt-4.1-mini")
    events = []
    with httpx.stream("POST", f"{door}/v1/responses", timeout=30,
                      headers={"authorization": f"Bearer {team_key}"},
                      json={"model": "gpt-4.1-mini", "input": said("Tell a long story"),
                            "stream": True}) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds and kinds[-1] == "error"
    assert "response.completed" not in kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["message"]


ANSWER = {"type": "object", "properties": {"title": {"type": "string"}},
          "required": ["title"], "additionalProperties": False}


def test_cache_key_truncation_parallel_tool_calls_and_a_json_schema_reach_openai(
        client: Any, standin: Any) -> None:
    """The request fields a Responses client sets for caching, context and output shape are
    what OpenAI's Responses API receives upstream, the schema whole."""
    ask = said("use tool get_weather for Turin")
    client.responses.create(
        model=MINI, input=ask, tools=[WEATHER], parallel_tool_calls=False,
        prompt_cache_key="agent-session-42", truncation="auto",
        text={"format": {"type": "json_schema", "name": "answer", "schema": ANSWER,
                         "strict": True}})
    body = sent_to_openai(standin, ask)
    assert body["prompt_cache_key"] == "agent-session-42"
    assert body["truncation"] == "auto"
    assert body["parallel_tool_calls"] is False
    assert body["text"]["format"] == {"type": "json_schema", "name": "answer",
                                      "schema": ANSWER, "strict": True}
    assert [t["name"] for t in body["tools"]] == ["get_weather"]


def test_a_stream_relays_text_as_the_provider_generates_it(client: Any, sessions: Any,
                                                           standin: Any) -> None:
    with client.responses.stream(model=MINI, input=said("Hi"),
                                 max_output_tokens=16) as warm:  # warm the stream path
        list(warm)
    standin.script_faults(["slow=40"], path="openai", model=MINI)
    t0 = time.monotonic()
    arrivals: list[float] = []
    with client.responses.with_streaming_response.create(
            model=MINI, input=said("Title: desk"), max_output_tokens=24, stream=True,
            extra_headers={"x-sluice-feature": "responses-stream"}) as raw:
        rid = raw.headers["x-sluice-request-id"]
        events = []
        for line in raw.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
                if events[-1]["type"] == "response.output_text.delta":
                    arrivals.append(time.monotonic() - t0)
    total = time.monotonic() - t0
    assert len(arrivals) >= 3 and arrivals[0] < 0.6 * total, (arrivals, total)
    done = events[-1]  # incomplete when the answer reached max_output_tokens, as OpenAI's
    assert done["type"] in ("response.completed", "response.incomplete")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text and text == done["response"]["output"][0]["content"][0]["text"]
    r = row(sessions, rid)
    assert (r.feature, r.outcome, r.model) == ("responses-stream", "ok", MINI)
    assert done["response"]["usage"]["output_tokens"] == r.output


def test_shedding_is_an_openai_shaped_503_and_nothing_is_billed(
        small_door: str, pg_url: str, sessions: Any, standin: Any) -> None:
    from models.db import ledger, spend

    team = f"shed-resp-{uuid.uuid4().hex[:6]}"
    sdk = openai.OpenAI(api_key=mint(pg_url, team), base_url=small_door + "/v1",
                        max_retries=0, timeout=60)
    standin.script_faults(["timeout=3", "timeout=3"], path="openai", model=MINI)

    def ask(tag: str) -> Any:
        return sdk.responses.with_raw_response.create(
            model=MINI, max_output_tokens=16, input=f"{tag} {uuid.uuid4().hex}")

    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(ask, "slow") for _ in range(2)]
        time.sleep(1.0)  # both are in flight, held by the slow provider
        before = standin.stats()["requests"]
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as exc:
            ask("shed")
        took = time.monotonic() - t0
        assert standin.stats()["requests"] == before  # never sent upstream
        answers = [f.result(timeout=60) for f in slow]
    err = exc.value
    assert err.status_code == 503 and took < 2.5
    body = err.body
    assert isinstance(body, dict) and body["code"] == "overloaded"
    assert body["type"] == "server_error" and body["message"]
    assert err.response.json() == {"error": body}  # OpenAI's envelope
    assert err.response.headers["x-should-retry"] == "true"
    assert err.response.headers["retry-after"] == "1"
    assert all(a.http_response.status_code == 200 for a in answers)
    # Only the two admitted requests are in the ledger: the refused one was never billed.
    # Their answers come before their settle: read the team's spend once both are billed.
    wait_all_billed(a.headers["x-sluice-request-id"] for a in answers)
    with sessions() as s:
        lines = spend.spend_by(s, "team", team=team)
        for a in answers:
            assert ledger.get(s, a.headers["x-sluice-request-id"]).outcome == "ok"
    assert sum(line.requests for line in lines) == 2
    assert sum(line.cost for line in lines) == sum(
        row(sessions, a.headers["x-sluice-request-id"]).cost for a in answers)
    sdk.close()
