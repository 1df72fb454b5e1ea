"""An in-process Celery worker on a thread, for the embedded default (no broker server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.worker import WorkController


class _Worker(WorkController):  # type: ignore[misc]
    """A WorkController that signals once its consumer is ready to take tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready_event = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready_event.set()


@contextmanager
def embedded_worker(app: Celery, queues: Sequence[str], *, concurrency: int = 8,
                    pool: str = "threads", name: str = "embedded@localhost",
                    ready_timeout: float = 30.0) -> Iterator[WorkController]:
    """Run a real Celery worker for ``queues`` on a background thread for the block's duration."""
    # Pool threads trace tasks with Celery's current app, which is thread-local and falls back
    # to the process default: make this app the default so every pool thread sees it.
    app.set_default()
    app.loader.import_default_modules()
    worker = _Worker(app=app, concurrency=concurrency, pool=pool, queues=list(queues),
                     hostname=name, loglevel="WARNING", without_heartbeat=True,
                     without_mingle=True, without_gossip=True, redirect_stdouts=False)
    thread = threading.Thread(target=worker.start, name="sluice-embedded-worker", daemon=True)
    thread.start()
    if not worker.ready_event.wait(ready_timeout):
        raise RuntimeError(f"the embedded Celery worker did not start within {ready_timeout} s")
    try:
        yield worker
    finally:
        worker.stop(in_sighandler=False)
        thread.join(timeout=10)
