"""Poll a provider batch until it ends or the task's wait runs out (then BatchPending)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from models.domain.errors import BatchPending

T = TypeVar("T")


def poll(fetch: Callable[[], T], ended: Callable[[T], bool], *, wait_s: float, poll_s: float,
         pending: Callable[[float], BatchPending]) -> T:
    """``fetch()`` until ``ended``; past ``wait_s``, raise ``pending(wait_s)``. Polls back off
    from 50 ms to ``poll_s``: a small batch often ends in seconds, a large one in hours."""
    deadline = time.time() + wait_s
    job = fetch()
    step = 0.05
    while not ended(job):
        if time.time() > deadline:
            raise pending(wait_s)
        time.sleep(min(step, poll_s, max(deadline - time.time(), 0.01)))
        step *= 2
        job = fetch()
    return job
