"""When an explicit context cache (Gemini ``cachedContents``) pays: reads plus storage against
what the same prefix costs uncached or through implicit caching.

Over one TTL window of ``T`` hours, a prefix of ``P`` tokens sent ``n`` times costs, per 1M
tokens at input price ``I``, cached price ``C`` and storage ``S`` per hour:

* without an explicit cache: ``n * P * (h*C + (1-h)*I)``, ``h`` the implicit hit rate seen;
* with one: ``n * P * C + P * S * T``, plus ``P * I`` once when the cache is created.

So the cache pays when ``n * (1-h) * (I - C) > S*T (+ I when creating)``; ``break_even`` gives
the ``n`` above which it does. The same rule, without the creation term, decides a renewal,
and a cache whose prefix falls below it has gone cold.
"""

from __future__ import annotations

from decimal import Decimal

from models.domain.catalogue import ModelSpec


def _hours(ttl_s: float) -> Decimal:
    return Decimal(str(ttl_s)) / 3600


def break_even(model: ModelSpec, ttl_s: float, implicit_hit: float, *, creating: bool
               ) -> Decimal | None:
    """Requests per TTL window above which an explicit cache is cheaper; None: never."""
    p = model.price
    gain = (1 - Decimal(str(min(max(implicit_hit, 0.0), 1.0)))) * (p.input - p.cache_read)
    if p.storage_per_hour <= 0 or gain <= 0:
        return None
    cost = p.storage_per_hour * _hours(ttl_s) + (p.input if creating else 0)
    return cost / gain


def pays(model: ModelSpec, tokens: int, requests: int, ttl_s: float, implicit_hit: float, *,
         creating: bool) -> bool:
    """True when ``requests`` per TTL window make an explicit cache of ``tokens`` cheaper."""
    if tokens < model.min_cacheable_tokens:
        return False  # the provider refuses a smaller cache
    needed = break_even(model, ttl_s, implicit_hit, creating=creating)
    return needed is not None and requests > needed


def prefix_cost_per_window(model: ModelSpec, tokens: int, requests: int, ttl_s: float,
                           implicit_hit: float, *, explicit: bool, creating: bool = False
                           ) -> Decimal:
    """USD the prefix costs over one TTL window, with or without an explicit cache."""
    p, million = model.price, Decimal(1_000_000)
    if explicit:
        total = requests * p.cache_read + p.storage_per_hour * _hours(ttl_s)
        total += p.input if creating else 0
    else:
        h = Decimal(str(implicit_hit))
        total = requests * (h * p.cache_read + (1 - h) * p.input)
    return total * tokens / million
