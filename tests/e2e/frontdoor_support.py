"""Serve the front door with uvicorn on a free loopback port, and mint keys, for e2e tests."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def serve_frontdoor(settings: Any, **gateway_overrides: Any) -> Iterator[str]:
    """``create_app(settings)`` under a real uvicorn server (lifespan on); yields its URL."""
    from queues.http.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, **gateway_overrides),
                                           lifespan="on", log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"frontdoor-{port}")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the front door failed to start")
        if server.started:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
        time.sleep(0.02)
    else:
        server.should_exit = True
        raise RuntimeError("the front door did not start in 30 s")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def mint(db_url: str, team: str, *, org: str = "default", role: str = "team",
         **options: Any) -> str:
    """A fresh key for ``team`` written straight to the ledger database (``options``: the
    features and users it may bill, ``all_orgs``; see models.db.api_keys.create_key)."""
    from models.db.api_keys import create_key
    from models.db.engine import make_engine, session_factory

    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            token, _ = create_key(s, team=team, org=org, role=role, name="e2e", **options)
            s.commit()
    finally:
        engine.dispose()
    return token


#: A system prompt long enough to be a cacheable prefix's start.
SYSTEM = "You write short product titles for a homeware store."


def row(sessions: Any, request_id: str) -> Any:
    """The ledger row of ``request_id`` (it must exist), once billed."""
    from tests.billed import wait_row

    found = wait_row(sessions, request_id)  # billed just after the answer (change 12)
    assert found is not None, f"no ledger row for {request_id}"
    return found


def user(text: str) -> dict[str, str]:
    """A user turn made unique, so no other test's answer is cached for it."""
    return {"role": "user", "content": f"{text} ({uuid.uuid4().hex[:8]})"}
