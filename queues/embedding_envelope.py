"""The message an embedding producer queues: the items to send, their tokens, the reservation."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.domain.embedding import EmbeddingRequest
from models.domain.result import Route

#: The Celery task that executes embedding requests (workers/embeddings/tasks.py).
TASK_EMBED = "sluice.embed"


class EmbeddingEnvelope(BaseModel):
    """A request whose ``inputs`` are only the items the cache lacked, each sent once."""

    model_config = ConfigDict(frozen=True)

    v: int = 1
    request: EmbeddingRequest
    route: Route
    #: Our count of each input's tokens (the reservation's basis, and the pack's split).
    item_tokens: tuple[int, ...] = ()
    prompt_tokens: int = 0
    reservation_id: str | None = None
    enqueued_at: float = Field(default_factory=time.time)
    deadline: float | None = None
    #: The vector size the items are cached under (the model's own when none was asked).
    dimensions: int = 0
    #: The rate-limit grant its admission added (scheduler.ratelimit.Grant.to_json): the
    #: worker corrects its token estimate to the tokens billed.
    rate_grant: dict[str, Any] | None = None
    #: Over a rate limit on the async lane: the worker admits it after its countdown.
    rate_wait: bool = False

    def to_message(self) -> dict[str, Any]:
        """JSON-safe form for the broker; a request without a key's policy leaves its fields
        out (a worker of the previous release refuses fields it does not know)."""
        out = self.model_dump(mode="json")
        for name in ("api_key", "allowed_models"):
            if out["request"].get(name) is None:
                out["request"].pop(name, None)
        return out
