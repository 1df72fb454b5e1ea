"""Answer text as it is generated: the worker appends pieces to a Redis stream, the door relays.

One stream per task (``<prefix>sluice:tokens:<task id>``), kept a few minutes. The worker
coalesces pieces (the first goes at once: that is the time to first token; later ones at most
every ``FLUSH_S``), so a long answer costs tens of Redis writes, not one per token. The door
reads with ``XREAD BLOCK`` and ends on the task's result, which stays the source of truth:
anything the stream missed is sent from the result.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)
#: Pieces after the first are written at most this often.
FLUSH_S = 0.02
#: A stream outlives any answer's generation by far, and then goes.
TTL_S = 300
#: Entries kept per stream (approximate trim): far more than any answer has pieces.
MAX_ENTRIES = 10_000
#: The kind of an answer's text pieces (entries without a kind are text).
TEXT = "text"
#: Kinds whose consecutive pieces are one piece of text (a signature is whole on its own).
_JOINED = frozenset({TEXT, "thinking"})


def token_key(key_prefix: str, task_id: str) -> str:
    """The stream of the task ``task_id``."""
    return f"{key_prefix}sluice:tokens:{task_id}"


class TokenWriter:
    """The worker's side: call it with each piece; ``close`` sends what is left and the end
    mark (blocking). It never raises: a Redis error switches it off, and the caller gets the
    text from the task's result instead, as from a model that does not stream."""

    def __init__(self, client: Any, key: str, flush_s: float = FLUSH_S) -> None:
        self.client = client
        self.key = key
        self.flush_s = flush_s
        #: Some text reached the caller's stream (a retry would then write a second answer).
        self.sent = False
        self.broken = False
        self._buffer: list[tuple[str, str]] = []
        self._last = 0.0

    def __call__(self, piece: str) -> None:
        self.part(TEXT, piece)

    def part(self, kind: str, piece: str) -> None:
        """A piece of ``kind``: answer text, or thinking, its signature, redacted thinking
        (Anthropic's), which the Messages door relays as their own blocks."""
        if not piece or self.broken:
            return
        self._buffer.append((kind, piece))
        if not self.sent or time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self, end: bool = False) -> None:
        """Write the buffered pieces, one entry per run of one kind (and the end mark: the
        door stops reading)."""
        if self.broken or not (self._buffer or end):
            return
        runs: list[tuple[str, str]] = []
        for kind, piece in self._buffer:
            # Signatures and redacted blocks are whole each: never joined to the next one.
            if runs and runs[-1][0] == kind and kind in _JOINED:
                runs[-1] = (kind, runs[-1][1] + piece)
            else:
                runs.append((kind, piece))
        self._buffer = []
        try:
            pipe = self.client.pipeline(transaction=False)
            for kind, text in runs:
                fields = {"t": text.encode()} if kind == TEXT else \
                    {"t": text.encode(), "k": kind.encode()}
                pipe.xadd(self.key, fields, maxlen=MAX_ENTRIES, approximate=True)
            if end:
                pipe.xadd(self.key, {"end": b"1"}, maxlen=MAX_ENTRIES, approximate=True)
            # Every write renews it: a key that expired mid-answer would come back without one.
            pipe.expire(self.key, TTL_S)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the result carries the whole answer anyway
            self.broken = True
            log.warning("streaming to %s stopped, the rest comes with the result: %s",
                        self.key, exc)
            return
        self.sent = self.sent or bool(runs)
        self._last = time.monotonic()

    def close(self) -> None:
        """Send what is buffered, then the end mark."""
        self.flush(end=True)


class TokenReader:
    """The door's side (asyncio): follow one task's stream until told to stop."""

    def __init__(self, client: Any, key_prefix: str) -> None:
        self.client = client
        self.key_prefix = key_prefix

    async def read(self, task_id: str, after: str, block_ms: int | None
                   ) -> tuple[str, str, bool]:
        """Text written after entry ``after`` (``"0"``: from the start), the last entry's id,
        and whether the end mark came; waits up to ``block_ms`` for something to arrive
        (None: does not wait)."""
        parts, last, ended = await self.read_parts(task_id, after, block_ms)
        return "".join(p for k, p in parts if k == TEXT), last, ended

    async def read_parts(self, task_id: str, after: str, block_ms: int | None
                         ) -> tuple[list[tuple[str, str]], str, bool]:
        """As :meth:`read`, with each piece's kind (``text``, ``thinking``, ...) in order."""
        found = await self.client.xread({token_key(self.key_prefix, task_id): after},
                                        block=block_ms)
        parts: list[tuple[str, str]] = []
        last, ended = after, False
        for _key, entries in found or ():
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                ended = ended or b"end" in fields or "end" in fields
                raw = fields.get(b"t", fields.get("t"))
                if raw is None:
                    continue
                kind = fields.get(b"k", fields.get("k", TEXT))
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                parts.append((kind, raw.decode() if isinstance(raw, bytes) else str(raw)))
        return parts, last, ended

    async def close(self) -> None:
        """Release connections."""
        await self.client.aclose()


def _redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def token_client_for(url: str) -> Any:
    """A worker's (blocking) client for writing streams: None for a broker that is not Redis."""
    if not _redis(url):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0)


def token_reader_for(url: str, key_prefix: str) -> TokenReader | None:
    """A reader on a Redis broker (None for other brokers: answers come whole there)."""
    if not _redis(url):
        return None
    import redis.asyncio as aioredis

    return TokenReader(aioredis.from_url(url, socket_timeout=5.0), key_prefix)
