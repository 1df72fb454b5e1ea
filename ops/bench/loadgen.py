"""An open-loop HTTP/1.1 load generator on asyncio: requests leave on schedule, come what may.

Latency is measured from each request's *scheduled* send time, so a server that falls behind
is charged for the queueing it causes (no coordinated omission). Connections are kept alive
and reused; loopback only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Target:
    """Where to send: base URL, path, headers; ``body(i)`` builds request ``i``'s JSON."""

    name: str
    url: str
    path: str
    headers: dict[str, str]
    body: Callable[[int], dict[str, object]]


@dataclass
class RunResult:
    """What one open-loop run measured."""

    target: str
    rate: float
    sent: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    #: CPU seconds the target's processes used during the run (filled in by the caller).
    cpu_s: float = 0.0
    #: Which repeat of an interleaved benchmark this run was (0 when not repeated).
    repeat: int = 0

    @property
    def ok(self) -> int:
        """Requests answered 200 within the timeout."""
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        """Answered requests per second over the run."""
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0


class _Pool:
    """Idle keep-alive connections to one host:port."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def take(self, fresh: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle and not fresh:
            return self.idle.pop()
        return await asyncio.open_connection(self.host, self.port)

    def give(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.idle.append(conn)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _exchange(pool: _Pool, head: bytes, payload: bytes) -> int:
    reused = bool(pool.idle)
    reader, writer = await pool.take()
    try:
        writer.write(head + payload)
        try:
            status_line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            # The server closed this idle keep-alive connection first: send again, once.
            writer.close()
            reader, writer = await pool.take(fresh=True)
            writer.write(head + payload)
            status_line = await reader.readuntil(b"\r\n")
        header_block = await reader.readuntil(b"\r\n\r\n")
        length, chunked, close = 0, False, False
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await reader.readexactly(length)
    except BaseException:
        writer.close()
        raise
    if close:
        writer.close()
    else:
        pool.give((reader, writer))
    return int(status_line.split(b" ", 2)[1])


async def run_open_loop(target: Target, rate: float, seconds: float, *, timeout_s: float = 10.0,
                        max_inflight: int = 2000, offset: int = 0) -> RunResult:
    """Send ``rate`` requests per second for ``seconds``; wait at most ``timeout_s`` for each."""
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pool = _Pool(host, port)
    count = int(rate * seconds)
    result = RunResult(target=target.name, rate=rate, sent=0)
    base = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
    inflight = asyncio.Semaphore(max_inflight)

    async def one(i: int, due: float) -> None:
        payload = json.dumps(target.body(offset + i)).encode()
        head = (f"POST {target.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"{base}\r\n").encode()
        try:
            status = await asyncio.wait_for(_exchange(pool, head, payload), timeout_s)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            key = type(exc).__name__
            result.errors[key] = result.errors.get(key, 0) + 1
            return
        finally:
            inflight.release()
        if status == 200:
            result.latencies_ms.append((time.perf_counter() - due) * 1000)
        else:
            result.errors[str(status)] = result.errors.get(str(status), 0) + 1

    tasks = []
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if inflight.locked():  # past the cap the client, not the server, would be measured
            result.errors["client-cap"] = result.errors.get("client-cap", 0) + 1
            continue
        await inflight.acquire()
        tasks.append(asyncio.create_task(one(i, due)))
        result.sent += 1
    await asyncio.gather(*tasks, return_exceptions=True)
    result.elapsed_s = time.perf_counter() - start
    pool.close()
    return result
