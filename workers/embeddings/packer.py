"""Pack the items of concurrent requests on one model into shared provider calls."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from models.domain.catalogue import ModelSpec
from models.domain.embedding import Item
from models.domain.embedding_pack import split_tokens
from models.domain.errors import BatchPending, ProviderError, ProviderRetryable
from workers.embeddings.adapters import EmbedReply


@dataclass
class Share:
    """One member's part of a shared call: its vectors and the tokens it is billed."""

    vectors: list[str]
    tokens: int
    #: Requests whose items went out in the same call.
    members: int
    #: False: the provider reported no count (the tokens are ours, billed estimated).
    exact: bool = True


@dataclass
class Member:
    """One request's part of a pack: where its items sit, its own tokens, its task and
    attempt (so a placement can name them)."""

    start: int
    size: int
    tokens: int
    key: str | None = None
    attempt_id: int | None = None


@dataclass
class _Pack:
    items: list[Item] = field(default_factory=list)
    tokens: int = 0
    members: list[Member] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    reply: EmbedReply | None = None
    error: ProviderError | BatchPending | None = None


class Packer:
    """Per worker process: the first request on a (model, dimensions) opens a pack and waits
    up to ``wait_s`` (the lane's batch timeout) for others, or until the pack is full at the
    model's item or token limit; then it sends one call for all and hands each its share.

    Every member's attempt row is written (``sent``) before it joins, so all of them exist
    before the shared call goes out; each member is billed its own items' tokens.
    """

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int | None], _Pack] = {}

    def share(self, model: ModelSpec, dimensions: int | None, items: Sequence[Item],
              tokens: int, send: Callable[[list[Item], list[Member]], EmbedReply],
              left_s: float, *, place: str | None = None, attempt_id: int | None = None
              ) -> Share:
        """Embed ``items`` (``tokens`` by our count) in a shared call: ``send(items,
        members)``; raises the call's error (BatchPending too, for a slow provider batch)."""
        limits = model.embedding
        assert limits is not None
        key = (model.name, dimensions)
        with self._lock:
            pack = self._open.get(key)
            if pack is not None and (len(pack.items) + len(items) > limits.max_items
                                     or pack.tokens + tokens > limits.max_call_tokens):
                self._open.pop(key)
                pack.full.set()  # its leader sends it now; this request opens the next
                pack = None
            leader = pack is None
            if pack is None:
                pack = self._open[key] = _Pack()
            member = Member(start=len(pack.items), size=len(items), tokens=tokens, key=place,
                            attempt_id=attempt_id)
            pack.items.extend(items)
            pack.tokens += tokens
            pack.members.append(member)
            if len(pack.items) >= limits.max_items or pack.tokens >= limits.max_call_tokens:
                self._open.pop(key, None)
                pack.full.set()
        if leader:
            pack.full.wait(min(self.wait_s, max(left_s, 0.0)))
            with self._lock:
                if self._open.get(key) is pack:
                    self._open.pop(key)
            try:
                pack.reply = send(list(pack.items), list(pack.members))
            except (ProviderError, BatchPending) as err:
                pack.error = err
            finally:
                pack.done.set()
        elif not pack.done.wait(max(left_s, 0.0)):
            raise ProviderRetryable(f"{model.provider}: the shared call carrying these items "
                                    "did not answer within the run's time limit",
                                    provider=model.provider, billed="unknown")
        if pack.error is not None:
            err = pack.error
            raise type(err)(err.message, **err.details)  # each member raises its own copy
        reply = pack.reply
        assert reply is not None
        shares = split_tokens(reply.prompt_tokens, [m.tokens for m in pack.members])
        return Share(vectors=reply.vectors[member.start:member.start + member.size],
                     tokens=shares[pack.members.index(member)], members=len(pack.members),
                     exact=reply.exact)
