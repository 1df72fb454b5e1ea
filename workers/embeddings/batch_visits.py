"""Embedding packs in provider batches across task runs: record each member's place, take it up.

A member whose pack went into a provider batch is paid for once the provider accepted it. The
leader records every member's intent before it submits, and its place once the provider
answered (workers/embeddings/placements.py). A later run of a
member's task (a redelivery after its worker died, or the task back to poll a batch slower
than its wait) takes up the attempt its place names, instead of charging it as lost, and
collects its vectors from that batch instead of submitting its items again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from models.db.attempts import AttemptRow
from models.domain.catalogue import ModelSpec
from models.domain.embedding_pack import chunks, split_tokens
from models.domain.embedding import Item
from models.domain.errors import BatchPending, ProviderError
from queues.batch_wait import cancel_asked
from queues.embedding_envelope import EmbeddingEnvelope
from queues.envelope import task_id_for
from workers.batch.pending import PENDING
from workers.batch.seam import retry_in_s
from workers.embeddings.batch import batch_api
from workers.embeddings.packer import Member
from workers.embeddings.placements import PackPlacement, PackPlacements, pack_placements_for
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)
#: The key suffix of a member's intent (its place before the provider named the batch).
INTENT = ":intent"


@dataclass(frozen=True)
class Taken:
    """A chunk of this request already in a provider batch, and its attempt: taken up by this
    run (``attempt_id``), or None when it was already ended (billed: collect, charge nothing)."""

    place: PackPlacement
    attempt_id: int | None


def placements_of(rt: WorkerRuntime) -> PackPlacements:
    """This process's placement store, built on first use."""
    found: PackPlacements | None = rt.__dict__.get("_embed_placements")
    if found is None:
        found = rt.__dict__["_embed_placements"] = pack_placements_for(
            rt.settings.broker.state_url(), rt.settings.broker.key_prefix)
    return found


def place_key(env: EmbeddingEnvelope, chunk: int) -> str:
    """The placement key of one chunk (one provider call) of the request."""
    return f"{task_id_for(env.request)}:{chunk}"  # type: ignore[arg-type]


def placed(rt: WorkerRuntime, env: EmbeddingEnvelope, model: ModelSpec
           ) -> dict[int, PackPlacement]:
    """The chunks of this request an earlier run placed in a provider batch."""
    limits = model.embedding
    if limits is None:
        return {}
    store = placements_of(rt)
    out: dict[int, PackPlacement] = {}
    n = sum(1 for _ in chunks(env.item_tokens, limits.max_items, limits.max_call_tokens))
    for c in range(n):
        try:
            # The store is the broker's Redis: down, it redelivers nothing either, so this run
            # is a first one.
            found = store.get(place_key(env, c))
            # An intent newer than the place (or with none): its batch may be at the provider
            # with no record of its id (its run died between the submit and the record).
            intent = store.get(place_key(env, c) + INTENT)
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("could not read the batch placement of %s: %s", env.request.request_id,
                        exc)
            return {}
        if intent is not None and intent.pack and (found is None or intent.at > found.at):
            found = _resolve(rt, place_key(env, c), intent, model.provider) or found
        if found is not None:
            out[c] = found
    return out


def take_up(rt: WorkerRuntime, env: EmbeddingEnvelope, model: ModelSpec, run: str, *,
            dead: bool) -> dict[int, Taken]:
    """Take up, under ``run``, the attempts of this request's placed chunks: a visit back to
    poll takes those a visit left ``pending``; a run taking over a dead one (``dead``) also
    takes its ``sent`` ones, which are in flight at the provider, not lost. A poll that finds
    one held by another visit comes back later (BatchPending) rather than pay again."""
    out: dict[int, Taken] = {}
    states = (PENDING, "sent") if dead else (PENDING,)
    for c, place in placed(rt, env, model).items():
        try:
            with rt.session() as s:
                got = s.execute(update(AttemptRow)
                                .where(AttemptRow.id == place.attempt_id,
                                       AttemptRow.request_id == env.request.request_id,
                                       AttemptRow.outcome.in_(states))
                                .values(outcome="sent", run=run)
                                .returning(AttemptRow.id)).scalars().all()
                row = None if got else s.get(AttemptRow, place.attempt_id)
                ended = row is not None and row.outcome not in (PENDING, "sent")
        except SQLAlchemyError as exc:
            log.warning("could not take up the batch attempt of %s: %s",
                        env.request.request_id, exc)
            continue
        if got:
            out[c] = Taken(place, int(got[0]))
        elif ended:
            out[c] = Taken(place, None)
        elif not dead:
            raise BatchPending(f"embedding request {env.request.request_id} is being polled "
                               "by another visit; this one comes back later",
                               request_id=env.request.request_id,
                               retry_in=retry_in_s(rt.settings))
    return out


def pend(rt: WorkerRuntime, attempt_ids: Sequence[int]) -> None:
    """Leave this visit's collected but unbilled batch attempts pending for the next visit
    (one of its chunks is still in its batch: the request is billed when all are in)."""
    if not attempt_ids:
        return
    try:
        with rt.session() as s:
            s.execute(update(AttemptRow).where(AttemptRow.id.in_(list(attempt_ids)),
                                               AttemptRow.outcome == "sent")
                      .values(outcome=PENDING))
    except SQLAlchemyError as exc:
        log.warning("could not leave batch attempts %s pending: %s", attempt_ids, exc)


def send_pack(rt: WorkerRuntime, provider: Any, model: ModelSpec, items: list[Item],
              members: Sequence[Member], dimensions: int | None, left_s: float) -> Any:
    """Send a pack through the Batch API: each member's intent recorded before the submit
    (tagged with a fresh pack id the batch's metadata carries), its place once the provider
    answered with the batch id; a run that dies in between leaves a batch :func:`placed`
    finds by its tag, not one its redelivery pays for again."""
    pack, at = uuid.uuid4().hex, time.time()
    record(rt, "", members, len(items), pack=pack, at=at)
    return provider.embed(model, items, dimensions, timeout_s=left_s, pack=pack,
                          placed=lambda bid: record(rt, bid, members, len(items), pack=pack,
                                                    at=at))


def record(rt: WorkerRuntime, batch_id: str, members: Sequence[Member], items: int, *,
           pack: str = "", at: float = 0.0) -> None:
    """The provider accepted the pack as batch ``batch_id`` (``""``: it is about to be
    submitted, tagged ``pack``): record each member's place before anything else (a kill
    from here on must not send the pack again)."""
    tokens = tuple(m.tokens for m in members)
    # An intent is kept apart from the place: what reads a place (a cancel, a poll) sees a
    # batch only once the provider named it.
    suffix = "" if batch_id else INTENT
    placed_now = {m.key + suffix: PackPlacement(batch_id=batch_id, start=m.start, size=m.size,
                                       tokens=tokens, index=i, items=items,
                                       attempt_id=int(m.attempt_id), pack=pack, at=at)
                  for i, m in enumerate(members) if m.key is not None and m.attempt_id is not None}
    if not placed_now:
        return
    try:
        placements_of(rt).put(placed_now)
    except Exception as exc:  # noqa: BLE001 - the batch is out; only a crash would need it
        log.warning("could not record where %d embedding requests of batch %s went: %s",
                    len(placed_now), batch_id or f"(pack {pack})", exc)


def _resolve(rt: WorkerRuntime, key: str, place: PackPlacement, provider: str
             ) -> PackPlacement | None:
    """An intent's place once the provider's batch list names the batch tagged with its
    pack (recorded for the next look), or None: the submit never reached the provider."""
    try:
        found = batch_api(rt, provider).find(place.pack, place.at)
    except ProviderError as exc:
        # Unknown: as before intents, the items are sent again (a batch may be paid twice).
        log.warning("could not look up embedding pack %s at the provider: %s", place.pack,
                    exc.message)
        return None
    if found is None:
        return None
    place = replace(place, batch_id=found)
    try:
        placements_of(rt).put({key: place})
    except Exception as exc:  # noqa: BLE001 - the next look asks the provider again
        log.debug("could not record the found batch %s: %s", found, exc)
    return place


def collect(provider: Any, place: PackPlacement, left_s: float,
            guessed: list[bool] | None = None) -> tuple[list[str], int, int]:
    """This member's vectors and billed tokens from its batch (BatchPending while it runs)."""
    # ``guessed[0]``: set when the provider reported no count (its attempt billed estimated).
    reply = provider.collect(place.batch_id, place.items, left_s)
    if guessed is not None:
        guessed[0] = not reply.exact
    # No count reported (Gemini): each member is billed its own count, as the leader's was.
    billed = reply.prompt_tokens if reply.exact else sum(place.tokens)
    share = split_tokens(billed, list(place.tokens))[place.index]
    return reply.vectors[place.start:place.start + place.size], share, len(place.tokens)


def cancel_if_asked(rt: WorkerRuntime, env: EmbeddingEnvelope, place: PackPlacement,
                    provider: Any) -> bool:
    """Has the caller of this member, waiting in its pack's provider batch, cancelled it?
    Count it; once every member of the pack has, cancel the batch at the provider (as chat
    batches are, workers/batch/seam.py). True when this caller cancelled."""
    if rt.cancels is None:
        return False
    key = task_id_for(env.request)  # type: ignore[arg-type]
    try:
        # Asked through the door or Gateway.cancel (queues/batch_wait.py), or a plain mark
        # (embedding workers set no "started" mark, so a cancel is always a plain mark too).
        if not (cancel_asked(rt.cancels.client, rt.cancels.key_prefix, key)
                or rt.cancels.state(key) == "cancelled"):
            return False
    except Exception as exc:  # noqa: BLE001 - unreadable: the batch runs on, billed as usual
        log.warning("could not read the cancel mark of %s: %s", env.request.request_id, exc)
        return False
    try:
        if placements_of(rt).cancel(place) >= len(place.tokens):
            provider.cancel(place.batch_id)
            log.info("every caller of embedding batch %s cancelled: cancelled it at the "
                     "provider", place.batch_id)
    except Exception as exc:  # noqa: BLE001 - still cancelled: the batch's end decides the bill
        log.warning("could not cancel embedding batch %s: %s", place.batch_id, exc)
    return True
