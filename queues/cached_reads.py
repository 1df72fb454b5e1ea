"""Reading a value kombu's ``cached_property`` already cached takes no lock.

kombu's ``cached_property`` (used across Celery and kombu: ``app.tasks``, ``app.amqp``, a
request's ``_payload``, the Redis result store's ``retry_policy``...) defines ``__set__``, so
it is a data descriptor: every read of the attribute runs its ``__get__``, which takes one
``RLock`` per property *shared by every instance*, on every read, cached or not. In a
``--pool threads`` worker dozens of threads read the same few properties for every task; a
thread that loses the GIL while holding the lock stalls all the others behind it (a lock
convoy). Sampled in the GPU worker at 64 concurrent requests: 31 % of the task threads'
samples stood in that ``__get__`` (``ops.bench.gpu_batching --profile``). Python 3.12 drops
the lock from ``functools.cached_property`` altogether; here a value already in the
instance's ``__dict__`` is returned without it (a dict read is atomic), and only the first
computation, ``__set__`` and ``__delete__`` still take it.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()
_INSTALLED = False


def install() -> bool:
    """Give kombu's ``cached_property`` its lock-free read of a cached value; True the first
    time (idempotent; a kombu without the locked read is left alone)."""
    global _INSTALLED
    with _LOCK:
        if _INSTALLED:
            return False
        from kombu.utils import objects

        cls = objects.cached_property
        locked_get = cls.__get__
        if getattr(locked_get, "_sluice_lock_free", False):
            _INSTALLED = True
            return False

        def __get__(self: Any, instance: Any, owner: Any = None) -> Any:
            if instance is not None:
                try:
                    return instance.__dict__[self.attrname]
                except (KeyError, AttributeError):
                    pass  # not computed yet (or no __dict__): the locked path computes it
            return locked_get(self, instance, owner)

        __get__._sluice_lock_free = True  # type: ignore[attr-defined]
        cls.__get__ = __get__  # type: ignore[method-assign]
        _INSTALLED = True
        return True
