"""The OpenAI Agents SDK (``openai-agents``) through ``/v1/responses``: an agent with two
function tools, over ``OpenAIResponsesModel`` and an ``AsyncOpenAI`` client pointed at the
door, runs to its final answer; every model call it made is a ledger row of its feature."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import openai
import pytest

from tests.e2e.frontdoor_support import mint, row

agents = pytest.importorskip("agents")

pytestmark = pytest.mark.integration
FEATURE = "agents-sdk"


def test_an_agent_with_two_tools_runs_to_its_answer_and_every_step_is_billed(
        door: str, pg_url: str, sessions: Any) -> None:
    agents.set_tracing_disabled(True)  # its traces would go to OpenAI's servers
    key = mint(pg_url, "agent-builders", feature=FEATURE)
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append("get_weather")
        return f"18C and sunny in {city}"

    @agents.function_tool
    def get_time(city: str) -> str:
        """The local time in a city."""
        ran.append("get_time")
        return f"It is 14:05 in {city}"

    async def run() -> Any:
        client = openai.AsyncOpenAI(api_key=key, base_url=door + "/v1", max_retries=0,
                                    timeout=60)
        try:
            agent = agents.Agent(
                name="concierge", instructions="Answer travellers' questions briefly.",
                model=agents.OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
                tools=[get_weather, get_time])
            ask = (f"Trip {uuid.uuid4().hex[:8]}: use tool get_weather for Paris, then use "
                   "tool get_time for Paris, and tell me both.")
            return await agents.Runner.run(agent, ask, max_turns=6)
        finally:
            await client.close()

    result = asyncio.run(run())
    assert ran == ["get_weather", "get_time"]  # each tool once, in the order asked
    assert isinstance(result.final_output, str) and result.final_output
    # Three model calls: weather, time, the answer; each a ledger row of the agent's feature.
    ids = [r.response_id for r in result.raw_responses]
    assert len(ids) == 3 and all(i and i.startswith("resp_") for i in ids)
    for response_id in ids:
        ledger = row(sessions, response_id.removeprefix("resp_"))
        assert (ledger.feature, ledger.team, ledger.outcome) == (FEATURE, "agent-builders",
                                                                  "ok")
        assert ledger.cost > 0 and ledger.output > 0
