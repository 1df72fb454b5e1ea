"""The thin Celery task of embedding requests: decode, hand to the service, return its reply."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from models.domain.errors import BatchPending
from queues.embedding_envelope import TASK_EMBED, EmbeddingEnvelope
from workers import log_privacy
from workers.batch.seam import max_visits
from workers.embeddings.service import execute_embedding
from workers.runtime import get_runtime
from workers.redelivery import ClaimBusy
from workers.rate_wait import admit_deferred, settle_tokens
from workers.tasks import BUSY_RETRIES, RATE_WAITS, _previous, _Stash, ignored_if_superseded


@shared_task(name=TASK_EMBED, bind=True, acks_late=True, reject_on_worker_lost=True,
             resultrepr_maxsize=log_privacy.REPR_CHARS)
def execute_embed(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Embed one request's missing items on a hosted or self-hosted embedding model."""
    rt = get_runtime(self.app)
    message, wait = admit_deferred(rt.limiter, message, EmbeddingEnvelope)
    if wait is not None:
        # Over a rate limit, the async lane waits in its queue instead of failing.
        raise self.retry(args=[message], countdown=wait, max_retries=RATE_WAITS)
    reply = ignored_if_superseded(execute_embedding(message, rt, previous=_previous(self),
                                                    stash=_Stash(self)))
    settle_tokens(rt.limiter, message, reply)
    details = (reply.get("error") or {}).get("details") or {}
    if (reply.get("error") or {}).get("code") == BatchPending.code:
        # Still in its provider batch: come back to poll it, claim and reservation kept (the
        # reply names the reservation the next visit settles).
        if isinstance(message, dict):
            message = {**message, "reservation_id": details.get("reservation_id")}
        raise self.retry(args=[message], countdown=float(details.get("retry_in", 30)),
                         max_retries=max_visits(get_runtime(self.app).settings))
    retries = int(details.get("retries", BUSY_RETRIES))
    if (reply.get("error") or {}).get("code") == ClaimBusy.code and self.request.retries < retries:
        # A live run renews its claim: wait for it (the answer is then the first run's).
        raise self.retry(countdown=float(details.get("retry_in", 60)), max_retries=retries)
    return reply
