"""Injected failures: parsed from a header or a control-endpoint script, turned into responses.

A spec is ``<kind>[;key=value...]``: a status code (``429;retry-after=1``, ``500``, ``529``),
``timeout=<seconds>`` (answer only after that long), ``slow=<ms per token>`` (generate that
slowly: a streamed answer arrives piece by piece), ``cut=<events>`` (a streamed answer breaks
off after that many events: the connection drops mid-body), ``malformed`` (200 with a broken
body) or ``incomplete`` (200 with valid JSON that lacks the answer).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from starlette.responses import Response

from workers.providers.standin.errors import provider_error

#: Wire formats, and the platforms whose paths carry one (faults may target either).
FAMILIES: tuple[str, ...] = ("openai", "anthropic", "gemini", "bedrock", "vertex", "azure")
_MESSAGES = {
    429: "Rate limit reached for requests (injected by the stand-in). Please try again later.",
    500: "Internal server error (injected by the stand-in).",
    503: "Service unavailable (injected by the stand-in).",
    529: "Overloaded (injected by the stand-in).",
}


@dataclass(frozen=True)
class Fault:
    """One injected failure."""

    kind: str  # "status" | "timeout" | "slow" | "cut" | "malformed" | "incomplete"
    status: int = 200
    retry_after: float | None = None
    delay_s: float = 0.0
    #: ``cut``: events sent before the connection drops.
    events: int = 0


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec; ValueError with a readable message when it is not one."""
    head, *rest = [part.strip() for part in str(spec).split(";")]
    options: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key.strip().lower() != "retry-after":
            raise ValueError(f"fault {spec!r}: unknown option {part!r} (only retry-after=<s>)")
        options["retry-after"] = value.strip()
    retry_after = float(options["retry-after"]) if "retry-after" in options else None
    if head in ("malformed", "incomplete"):
        return Fault(head)
    if head.startswith("cut="):
        return Fault("cut", events=int(head.partition("=")[2]))
    if head.startswith("slow="):
        return Fault("slow", delay_s=float(head.partition("=")[2]) / 1000)
    if head == "timeout" or head.startswith("timeout="):
        delay = head.partition("=")[2]
        return Fault("timeout", delay_s=float(delay) if delay else 60.0)
    if head.isdigit() and 400 <= int(head) <= 599:
        status = int(head)
        # A 429 always says when to come back, as the real APIs do.
        if status == 429 and retry_after is None:
            retry_after = 1.0
        return Fault("status", status=status, retry_after=retry_after)
    raise ValueError(f"fault {spec!r}: expected a 4xx/5xx status, 'timeout=<s>', "
                     "'slow=<ms per token>', 'cut=<events>', 'malformed' or 'incomplete'")


def fault_response(fault: Fault, family: str) -> Response:
    """The response a status or malformed fault produces, in ``family``'s wire shape."""
    if fault.kind == "incomplete":
        return Response(b'{"id": "standin-incomplete", "object": "chat.completion"}',
                        status_code=200, media_type="application/json")
    if fault.kind == "malformed":
        return Response(b'{"id": "standin-malformed", "choices": [{"mess', status_code=200,
                        media_type="application/json")
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    message = _MESSAGES.get(fault.status, f"Error {fault.status} (injected by the stand-in).")
    return provider_error(family, fault.status, message, headers=headers)


@dataclass
class _Script:
    model: str | None
    family: str | None
    faults: deque[Fault]


class FaultScripts:
    """Queued faults, each consumed by the next request that matches its model and family."""

    def __init__(self) -> None:
        self._scripts: list[_Script] = []

    def add(self, faults: list[Fault], *, model: str | None = None,
            family: str | None = None) -> None:
        """Queue ``faults`` for requests to ``model`` (any if None) on ``family`` (any if None)."""
        if family is not None and family not in FAMILIES:
            raise ValueError(f"path must be one of {', '.join(FAMILIES)}, got {family!r}")
        if faults:
            self._scripts.append(_Script(model, family, deque(faults)))

    def take(self, model: str, family: str) -> Fault | None:
        """The next fault for this request, consumed; None when no script matches."""
        for script in self._scripts:
            if script.model not in (None, model) or script.family not in (None, family):
                continue
            fault = script.faults.popleft()
            if not script.faults:
                self._scripts.remove(script)
            return fault
        return None

    def pending(self) -> int:
        """Faults still queued, over all scripts."""
        return sum(len(s.faults) for s in self._scripts)

    def clear(self) -> None:
        """Drop every queued fault."""
        self._scripts.clear()
