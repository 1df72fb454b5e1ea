"""Run the stand-in on loopback in a daemon thread, for tests, benchmarks and the demo."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from workers.providers.standin.app import create_app
from workers.providers.standin.config import StandInConfig
from workers.providers.standin.state import StandInState


class StandIn:
    """A stand-in server on a free loopback port, in a daemon thread.

    ``with StandIn() as s: openai.OpenAI(base_url=s.openai_base_url, ...)``
    """

    def __init__(self, config: StandInConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config if config is not None else StandInConfig()
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._state: StandInState | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._thread is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``openai.OpenAI`` (its paths are relative to ``/v1``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``anthropic.Anthropic`` (its paths already start with ``/v1``)."""
        return self.url

    def start(self, timeout_s: float = 10.0) -> StandIn:
        """Serve in a daemon thread and return once ``/healthz`` answers."""
        if self._thread is not None:
            return self
        # Bind here, not in uvicorn, so port=0 yields the real port before the thread starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        app = create_app(self.config)
        self._state = app.state.standin
        config = uvicorn.Config(app, http="h11", lifespan="off",
                                access_log=False, log_level="warning",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"standin-{self.port}", daemon=True)
        self._thread.start()
        self._client = httpx.Client(base_url=self.url, trust_env=False, timeout=10.0)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"the stand-in on {self.host}:{self.port} failed to start")
            if self._server.started:
                try:
                    if self._control().get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"the stand-in on {self.host}:{self.port} did not answer "
                           f"within {timeout_s} s")

    def stop(self) -> None:
        """Shut the server down and wait for its thread (a no-op when not running)."""
        if self._state is not None:
            self._state.closing = True  # read by the event loop thread; a plain flag suffices
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._client is not None:
            self._client.close()
        self._server = self._thread = self._client = self._state = None

    def _control(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return self._client

    def stats(self) -> dict[str, Any]:
        """The server's counters (see ``GET /_standin/stats``)."""
        response = self._control().get("/_standin/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def received(self, contains: str | None = None) -> list[dict[str, Any]]:
        """Model-call bodies received, ``{"family", "body"}``, whose JSON holds ``contains``."""
        params = {"contains": contains} if contains is not None else {}
        response = self._control().get("/_standin/received", params=params)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    def reset(self) -> None:
        """Clear counters, prompt caches and fault scripts."""
        self._control().post("/_standin/reset").raise_for_status()

    def script_faults(self, faults: Sequence[str], *, model: str | None = None,
                      path: str | None = None) -> int:
        """Queue fault specs for the next matching requests; returns how many are pending."""
        body = {"faults": list(faults), "model": model, "path": path}
        response = self._control().post("/_standin/faults", json=body)
        if response.status_code != 200:
            raise ValueError(response.json().get("error", response.text))
        pending: int = response.json()["pending"]
        return pending

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
