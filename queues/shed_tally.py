"""How many requests the front doors refused as overloaded, summed across processes in Redis.

Each front-door process sheds on its own (scheduler/shedding.py); Prometheus scrapes
`sluice metrics`, not the doors, so each door adds what it refused since its last flush to one
Redis hash, at most once a second (never on the refusal path itself, whose CPU is the point).
"""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings

#: The hash's field per lane; only the interactive lane sheds today.
LANE = "interactive"


def tally_key(key_prefix: str) -> str:
    """The hash holding the all-time refusal counts per lane."""
    return f"{key_prefix}sluice:shed"


class ShedTally:
    """Adds one process's refusals to the shared count (``flush`` from a background loop)."""

    def __init__(self, client: Any, key_prefix: str = "") -> None:
        self.client = client
        self.key = tally_key(key_prefix)
        self._flushed = 0

    def flush(self, shed_total: int) -> int:
        """Add what was refused since the last flush (``shed_total`` is this process's
        all-time count); returns the amount added. Raises the client's errors (the caller
        logs them; the next flush carries the amount over)."""
        delta = shed_total - self._flushed
        if delta > 0:
            self.client.hincrby(self.key, LANE, delta)
            self._flushed = shed_total
        return max(delta, 0)

    def read(self) -> dict[str, int]:
        """All-time refusals per lane, every front door's summed."""
        return _per_lane(self.client.hgetall(self.key))


def tally_for(settings: Settings) -> ShedTally | None:
    """The shared tally on ``settings``' state Redis (None without one: nothing sums refusals
    across processes there)."""
    url = settings.broker.state_url() or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return ShedTally(redis.Redis.from_url(url, socket_timeout=2), settings.broker.key_prefix)


def read_tally(client: Any, key_prefix: str = "") -> dict[str, int]:
    """All-time refusals per lane."""
    return _per_lane(client.hgetall(tally_key(key_prefix)))


def _per_lane(raw: dict[Any, Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
