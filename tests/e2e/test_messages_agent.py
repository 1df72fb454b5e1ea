"""An agent-shaped session through ``/v1/messages``: a 12,000-token system prompt with the
client's own ``cache_control``, 15 tools, ten streamed tool-use turns and a final answer.

From the second turn on the ledger shows the prefix read from the provider's cache; every
turn is billed exactly to what the stand-in counted; the session's spend is its feature's.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from sqlalchemy import func, select

from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.tokens import count_text
from models.domain.usage import Usage
from tests.e2e.frontdoor_support import mint, row
from tests.e2e.messages_support import CLAUDE, said, tools

pytestmark = pytest.mark.integration
TURNS = 10
FEATURE = "coding-agent"


def system_prompt(tokens: int) -> str:
    """A coding agent's long instructions, at least ``tokens`` long."""
    rules, i = [], 0
    while count_text(" ".join(rules)) < tokens:
        rules += [f"Rule {i}: when editing file number {i}, keep its style and run its tests."
                  for i in range(i, i + 200)]
        i += 200
    return said("You are a coding agent.") + " " + " ".join(rules)


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def test_an_agent_session_reads_its_prefix_from_cache_and_is_billed_exactly(
        door: str, pg_url: str, sessions: Any, standin: Any) -> None:
    # The agent sends no attribution header: its key's feature bills the session.
    key = mint(pg_url, "agents", feature=FEATURE)
    system = [{"type": "text", "text": system_prompt(12_000),
               "cache_control": {"type": "ephemeral"}}]
    defs = tools(15)
    history: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # the tool result the next user turn carries
    ids: list[str] = []
    read = 0
    spec = load_catalogue().get(CLAUDE)
    with anthropic.Anthropic(api_key=key, base_url=door, max_retries=0, timeout=60) as agent:
        for turn in range(TURNS + 1):
            ask = [] if turn == TURNS else [{"type": "text",
                                             "text": said(f"Next: use tool tool_{turn}")}]
            # Like an agent: the newest user block carries a breakpoint of its own, which
            # moves on with the conversation (at most four marks in all).
            for earlier in history:
                earlier["content"] = [{k: v for k, v in b.items() if k != "cache_control"}
                                      for b in earlier["content"]]
            content = pending + ask
            content[-1] = {**content[-1], "cache_control": {"type": "ephemeral"}}
            history.append({"role": "user", "content": content})
            before = standin.stats()["tokens"]
            # The closing answer gets room: the stand-in's reply (up to ~70 tokens, its length
            # seeded by the random tool-use ids) would hit a 64-token cap about 1 run in 17.
            cap = 64 if turn < TURNS else 256
            with agent.messages.stream(model=CLAUDE, max_tokens=cap, system=system, tools=defs,
                                       messages=history) as stream:
                final = stream.get_final_message()
                rid = stream.response.headers["x-sluice-request-id"]
            spent = deltas(before, standin.stats()["tokens"])
            ids.append(rid)
            r = row(sessions, rid)
            # Billed exactly as the stand-in counted, at the catalogue's prices.
            assert (r.input_uncached + r.cache_read + r.cache_write_5m, r.output,
                    r.cache_read, r.cache_write_5m) == (spent["prompt"], spent["output"],
                                                        spent["cache_read"],
                                                        spent["cache_write_5m"]), turn
            usage = Usage(input_uncached=r.input_uncached, cache_read=r.cache_read,
                          cache_write_5m=r.cache_write_5m, output=r.output)
            assert r.cost == cost_of(usage, spec) > 0
            u = final.usage
            assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens,
                    u.output_tokens) == (r.input_uncached, r.cache_read, r.cache_write_5m,
                                         r.output)
            if turn == 0:
                assert r.cache_write_5m >= 12_000 and r.cache_read == 0
            else:  # the system prompt and every earlier turn come from the cache: the
                # client's moving breakpoint (none of ours) caches the conversation so far
                assert r.cache_read >= 12_000 and r.cache_read > read, (turn, r.cache_read)
            read = r.cache_read
            if turn == TURNS:
                assert final.stop_reason == "end_turn" and final.content[0].type == "text"
                break
            assert final.stop_reason == "tool_use", turn
            call = next(b for b in final.content if b.type == "tool_use")
            assert call.name == f"tool_{turn}"
            history.append({"role": "assistant",
                            "content": [b.model_dump(exclude_none=True) for b in final.content]})
            pending = [{"type": "tool_result", "tool_use_id": call.id,
                        "content": f"fact {turn}: in stock"}]
    with sessions() as s:
        by_feature = dict(s.execute(
            select(LedgerRow.feature, func.count()).where(LedgerRow.request_id.in_(ids))
            .group_by(LedgerRow.feature)).all())
    assert by_feature == {FEATURE: TURNS + 1}
