"""The heuristic router: easy work scores above hard work, scores stay in [0, 1], and it is fast."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.domain.request import ChatRequest, Message
from scheduler.router.base import RouteInput
from scheduler.router.heuristic import HeuristicRouter

EASY = [
    "Rephrase this sentence to sound friendlier: we cannot process your order.",
    "Classify the sentiment of this review as positive or negative: great value, fast delivery.",
    "Extract the email address from: contact jane at jane@example.com for details.",
    "Translate 'good morning' into French.",
    "Fix the typos: teh quick brwon fox.",
]
HARD = [
    "Design a distributed system for a global payments ledger with strong consistency across "
    "regions. Analyze the trade-offs between consensus protocols and explain your architecture "
    "step by step, including failure handling.",
    "Prove that there are infinitely many primes p such that p = 4k + 3, and derive a bound "
    "on their density. Give a rigorous proof.",
    "```python\nclass Cache:\n    def get(self, key):\n        return self._d[key]\n```\n"
    "Refactor this code to be thread-safe, implement LRU eviction, optimize it, and write "
    "unit tests in Python for every method.",
    "Write a detailed 3000-word essay that compares three economic theories of inflation, "
    "evaluates the evidence for each, and gives a comprehensive research plan.",
]


def test_easy_prompts_score_above_hard_ones() -> None:
    router = HeuristicRouter()
    easy = [router.score_text(p) for p in EASY]
    hard = [router.score_text(p) for p in HARD]
    assert min(easy) > max(hard), (easy, hard)


def test_signals_fire_on_what_they_name() -> None:
    router = HeuristicRouter()
    code = router.signals(RouteInput(HARD[2]))
    assert code["code"] == 1.0 and code["hard_verb"] == 1.0
    assert router.signals(RouteInput("Solve x^2 - 4 = 0"))["math"] == 1.0
    assert router.signals(RouteInput("Rephrase: hello there"))["easy_verb"] == 1.0
    plain = router.signals(RouteInput("hello there"))
    assert plain["code"] == plain["math"] == plain["easy_verb"] == 0.0


def test_longer_prompts_and_outputs_and_deeper_conversations_lower_the_score() -> None:
    router = HeuristicRouter()
    base = "Tell me about the history of the bicycle."
    assert router.score_text(base * 20) < router.score_text(base)
    assert router.score_text(base, max_tokens=16_000) < router.score_text(base, max_tokens=256)
    assert router.score_text(base, history_turns=8) < router.score_text(base, history_turns=0)


def test_scores_a_chat_request_by_its_last_turn_and_depth() -> None:
    router = HeuristicRouter()
    turns = (Message(role="user", content="hi"), Message(role="assistant", content="hello"),
             Message(role="user", content=EASY[0]))
    request = ChatRequest(team="t", feature="f", messages=turns)
    assert RouteInput.from_request(request).history_turns == 1
    assert router.score(request) == pytest.approx(router.score_text(EASY[0], 1, 512))
    assert router.score_many([request, request]) == [router.score(request)] * 2


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000), st.integers(0, 1000), st.one_of(st.none(), st.integers(1, 10**6)))
def test_score_is_always_a_probability(prompt: str, turns: int, max_tokens: int | None) -> None:
    score = HeuristicRouter().score_text(prompt, turns, max_tokens)
    assert 0.0 <= score <= 1.0


def test_decision_is_fast_even_on_huge_prompts() -> None:
    router = HeuristicRouter()
    prompts = EASY + HARD + ["word " * 50_000]
    for p in prompts:  # warm up
        router.score_text(p)
    best = []
    for p in prompts:
        runs = []
        for _ in range(20):
            t = time.perf_counter()
            router.score_text(p)
            runs.append(time.perf_counter() - t)
        best.append(min(runs))
    # The best of 20 runs hides scheduler noise; the budget is 0.1 ms at p99 (see the bench),
    # so even a loaded CI machine must stay well under 1 ms here.
    assert max(best) < 1e-3, best
