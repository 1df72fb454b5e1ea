"""The baseline: a seeded random score per prompt, the same on every call and every worker."""

from __future__ import annotations

import hashlib

from scheduler.router.base import Router, RouteInput


class RandomRouter(Router):
    """Uniform scores from a hash of the seed and the prompt, so runs are reproducible."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.version = f"seed{seed}"

    def score_input(self, item: RouteInput) -> float:
        digest = hashlib.blake2b(item.prompt.encode("utf-8"), digest_size=8,
                                 key=str(self.seed).encode()).digest()
        return int.from_bytes(digest, "big") / 2.0**64
