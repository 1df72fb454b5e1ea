"""Which deployments are cooling down or past their own budget, shared by every worker (Redis)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.deployments import deployment_name
from models.domain.errors import ProviderError

log = logging.getLogger(__name__)
_PICO = Decimal("1e12")  # spend is counted in integer pico-dollars: exact, and INCRBY-able
#: Statuses that say the deployment (not the request) is in trouble: cool it down.
_COOL_STATUSES = frozenset({401, 403, 404, 408, 409, 429})


class DeploymentHealth:
    """Cooldowns and daily spend per deployment.

    Workers are many processes, so the state lives in Redis (one MGET per routing decision,
    only for models with several deployments); without Redis, in this process. A Redis error
    never fails a request: the deployment counts as healthy and its spend as unknown.
    """

    def __init__(self, redis: Any = None, *, prefix: str = "", cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.prefix, self.cooldown_s, self.clock = redis, prefix, cooldown_s, clock
        self._local: dict[str, float | int] = {}

    def _cool_key(self, name: str) -> str:
        return f"{self.prefix}sluice:deploy:cool:{name}"

    def _spend_key(self, name: str) -> str:
        day = datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y%m%d")
        return f"{self.prefix}sluice:deploy:spend:{name}:{day}"

    def _get(self, keys: Sequence[str]) -> list[Any]:
        if self.redis is None:
            return [self._local.get(k) for k in keys]
        try:
            return list(self.redis.mget(keys))
        except Exception as exc:  # noqa: BLE001 - routing goes on without the shared view
            log.warning("deployment health unreadable (treating all as healthy): %s", exc)
            return [None] * len(keys)

    def cooling(self, names: Iterable[str]) -> set[str]:
        """The deployments among ``names`` cooling down now."""
        names = list(names)
        now = self.clock()
        values = self._get([self._cool_key(n) for n in names])
        return {n for n, v in zip(names, values) if v is not None and float(v) > now}

    def cool(self, name: str, err: ProviderError) -> None:
        """Skip ``name`` for its retry-after, else the configured cooldown."""
        retry_after = getattr(err, "retry_after", None)
        seconds = float(retry_after) if retry_after else self.cooldown_s
        until = self.clock() + seconds
        key = self._cool_key(name)
        log.warning("deployment %s cooled down for %.0f s: %s", name, seconds, err.message)
        if self.redis is None:
            self._local[key] = until
            return
        try:
            # The key's own TTL cleans it up; the value (a deadline) is what is compared, so
            # a test clock can move past it.
            self.redis.set(key, repr(until), px=max(int(seconds * 1000), 1) + 60_000)
        except Exception as exc:  # noqa: BLE001 - best effort, as reads are
            log.warning("could not record the cooldown of %s: %s", name, exc)

    def spent_out(self, specs: Sequence[ModelSpec]) -> set[str]:
        """The deployments among ``specs`` past their own daily budget."""
        limited = [s for s in specs if s.deployment is not None
                   and s.deployment.daily_budget is not None]
        if not limited:
            return set()
        values = self._get([self._spend_key(deployment_name(s)) for s in limited])
        out = set()
        for spec, value in zip(limited, values):
            budget = spec.deployment.daily_budget if spec.deployment else None
            if value is not None and budget is not None and Decimal(int(value)) / _PICO >= budget:
                out.add(deployment_name(spec))
        return out

    def add_spend(self, spec: ModelSpec, cost: Decimal) -> None:
        """Count ``cost`` against ``spec``'s deployment's day (only one with a budget)."""
        if spec.deployment is None or spec.deployment.daily_budget is None or cost <= 0:
            return
        key, amount = self._spend_key(deployment_name(spec)), int(cost * _PICO)
        if self.redis is None:
            self._local[key] = int(self._local.get(key, 0)) + amount
            return
        try:
            pipe = self.redis.pipeline()
            pipe.incrby(key, amount)
            pipe.expire(key, 2 * 86400)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the ledger still has it; routing is softer
            log.warning("could not count spend on deployment %s: %s", deployment_name(spec), exc)


def cools(err: ProviderError) -> bool:
    """Does ``err`` say the deployment is in trouble (rate limit, outage, bad key or model on
    it), rather than the request (a 400 would fail on every deployment)?"""
    status = err.status
    return status is None or status >= 500 or status in _COOL_STATUSES
