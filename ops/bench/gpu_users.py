"""How many concurrent users one engine serves under a p99 latency bound, batched or serial."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass
class UsersAt:
    """The most users whose requests stayed under the bound, and what they were served."""

    users: int
    p99_ms: float
    tokens_per_s: float
    ladder: list[tuple[int, float]]  # (users, p99 ms) for every level tried


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(0.99 * len(ordered) + 0.5) - 1))] * 1000


def level(one: Callable[[int], int], users: int, rounds: int,
          gate: threading.Lock | None) -> tuple[float, float]:
    """p99 (ms) and tokens/s of ``users`` closed-loop users sending ``rounds`` requests each."""
    latencies: list[float] = []
    tokens = [0]

    def user(u: int) -> None:
        for r in range(rounds):
            t0 = time.perf_counter()
            if gate is not None:
                with gate:
                    out = one(u * rounds + r)
            else:
                out = one(u * rounds + r)
            latencies.append(time.perf_counter() - t0)
            tokens[0] += out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    return _p99(latencies), tokens[0] / (time.perf_counter() - t0)


def users_at(one: Callable[[int], int], *, bound_ms: float, max_users: int, rounds: int = 3,
             serial: bool = False) -> UsersAt:
    """Closed-loop users (each sends ``rounds`` requests back to back) at 1, 2, 4, ... up to
    ``max_users``, then halving the gap between the last level under ``bound_ms`` and the first
    over it. ``serial``: the engine takes one request at a time (the users queue for it), as a
    server without continuous batching does.
    """
    gate = threading.Lock() if serial else None
    best = UsersAt(0, 0.0, 0.0, [])

    def passes(users: int) -> bool:
        p99, tps = level(one, users, rounds, gate)
        best.ladder.append((users, round(p99, 1)))
        if p99 < bound_ms and users > best.users:
            best.users, best.p99_ms, best.tokens_per_s = users, p99, tps
        return p99 < bound_ms

    users = 1
    while users <= max_users and passes(users):
        users *= 2
    low, high = best.users, min(users, max_users + 1)
    while high - low > max(1, low // 8):
        mid = (low + high) // 2
        low, high = (mid, high) if passes(mid) else (low, mid)
    return best
