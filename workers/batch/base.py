"""The small interface each provider's Batch API adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from models.domain.errors import ProviderError
from workers.providers.base import ProviderCall, ProviderReply

#: Providers with a Batch API (the self-hosted pool batches on its own).
BATCH_PROVIDERS: tuple[str, ...] = ("openai", "anthropic")

#: One request's end in a batch: its reply, or the typed error it ended with.
Outcome = ProviderReply | ProviderError


@dataclass(frozen=True)
class BatchState:
    """Where a submitted batch stands."""

    ended: bool
    #: The provider's own status word (``in_progress``, ``completed``, ``expired``, ...).
    status: str = ""


class BatchAPI(Protocol):
    """Submit many calls as one provider batch, poll it, read its per-request outcomes.

    Each method makes one attempt and raises ProviderRetryable / ProviderPermanent on failure;
    the collector owns retries, as the single-call adapters leave them to the service.
    """

    name: str

    def submit(self, calls: Sequence[tuple[str, ProviderCall]]) -> str:
        """Submit ``(custom_id, call)`` pairs as one batch; returns the provider's batch id."""
        ...

    def poll(self, batch_id: str) -> BatchState:
        """The batch's state."""
        ...

    def results(self, batch_id: str) -> dict[str, Outcome]:
        """Outcome per custom id of an ended batch (ids missing from it got no answer)."""
        ...

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (answers already made are still billed)."""
        ...

    def close(self) -> None:
        """Release the SDK client."""
        ...


def reply_extra(batch_id: str) -> dict[str, object]:
    """``ProviderReply.extra`` of a batched answer: the service bills it at the batch discount."""
    return {"batch": True, "batch_id": batch_id}
