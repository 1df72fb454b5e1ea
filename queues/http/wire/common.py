"""What every door reads the same way: the ``x-sluice-*`` headers, and the answer's headers."""

from __future__ import annotations

import math
from typing import Any, NoReturn

from models.domain.errors import ValidationError
from models.domain.request import MAX_TIMEOUT_S
from models.domain.result import ChatResult

#: Request headers carrying sluicegate attribution and options.
H_FEATURE, H_USER, H_LANE = "x-sluice-feature", "x-sluice-user", "x-sluice-lane"
H_REQUEST_ID, H_CACHE, H_BATCH = "x-sluice-request-id", "x-sluice-cache-mode", "x-sluice-batch"
H_TIMEOUT = "x-sluice-timeout"
#: The caller's task type, for a feature with a ladder (scheduler/router/ladder.py).
H_TASK = "x-sluice-task-type"
#: Opt-in: drop what the routed model cannot honour instead of refusing (LiteLLM's
#: drop_params); the answer's x-sluice-dropped-params header lists what was dropped.
H_DROP, H_DROPPED = "x-sluice-drop-params", "x-sluice-dropped-params"
#: Timeouts the official SDKs announce on each request (openai: read timeout; anthropic: the
#: whole call). A request still queued when its client has given up is not worth running.
SDK_TIMEOUT_HEADERS = ("x-stainless-timeout", "x-stainless-read-timeout")


def bad(param: str, message: str) -> NoReturn:
    """Refuse the request with a 400 naming ``param`` (the door's own name for it)."""
    raise ValidationError(message, field=param)


def base_request(headers: Any, *, team: str, org: str, key_id: str, model: Any,
                 default_feature: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The ChatRequest fields every door takes from the key and the ``x-sluice-*`` headers,
    and where each came from (a header name, for a 400 that names it).

    ``default_feature`` is the key's own feature: ``x-sluice-feature`` wins when sent.
    """
    origin: dict[str, str] = {"feature": H_FEATURE, "lane": H_LANE, "request_id": H_REQUEST_ID,
                              "drop_params": H_DROP}
    data: dict[str, Any] = {"team": team, "org": org, "model": model,
                            "feature": headers.get(H_FEATURE) or default_feature or "default",
                            "lane": headers.get(H_LANE) or "interactive",
                            "tags": {"key": key_id}}
    if headers.get(H_USER):
        data["user"], origin["user"] = headers[H_USER], H_USER
    if headers.get(H_REQUEST_ID):
        data["request_id"] = headers[H_REQUEST_ID]
    if headers.get(H_CACHE):
        data["cache"] = {"mode": headers[H_CACHE]}
        origin["cache"] = H_CACHE
    if headers.get(H_BATCH):
        data["tags"]["batch"] = headers[H_BATCH].strip().lower()
    if headers.get(H_TASK):
        data["tags"]["task_type"], origin["task_type"] = headers[H_TASK].strip(), H_TASK
    if headers.get(H_DROP) is not None:
        data["drop_params"] = flag(headers[H_DROP], H_DROP)
    timeout = caller_timeout(headers, sdk=data["lane"] != "async")
    if timeout is not None:
        data["timeout_s"], origin["timeout_s"] = timeout, H_TIMEOUT
    return data, origin


def flag(value: str, name: str) -> bool:
    """A true/false header's value; a 400 naming it otherwise."""
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        bad(name, f"{name} must be true or false")
    return text in ("true", "1", "yes")


def caller_timeout(headers: Any, *, sdk: bool) -> float | None:
    """Seconds the caller will wait: ``x-sluice-timeout``, else (``sdk``: an interactive
    request, whose HTTP call waits for the answer) what its SDK announced. An async request's
    HTTP call ends at once with a job id: its SDK timeout says nothing about the job."""
    given = headers.get(H_TIMEOUT)
    if given is not None:
        try:
            value = float(given)
        except ValueError:
            value = math.nan
        if not 0 < value <= MAX_TIMEOUT_S:  # also refuses NaN
            bad(H_TIMEOUT, f"{H_TIMEOUT} must be a number of seconds in "
                f"(0, {MAX_TIMEOUT_S:g}], not {given[:40]!r}")
        return value
    for name in SDK_TIMEOUT_HEADERS if sdk else ():
        try:
            value = float(headers.get(name) or "nan")
        except ValueError:
            continue  # an SDK's hint we cannot read is no reason to refuse the request
        if 0 < value <= MAX_TIMEOUT_S:
            return value
    return None


def param_for(field: str, origin: dict[str, str]) -> str:
    """The door's parameter (or header) a ChatRequest validation error is about."""
    head = field.split(".", 1)[0]
    if field.startswith("static.tools"):
        return origin.get("tools", "tools")
    if field.startswith("static.system"):
        return origin.get("system", origin.get("static", "static"))
    return origin.get(head, head)


def sluice_headers(result: ChatResult) -> dict[str, str]:
    """What the levers did, in ``x-sluice-*`` response headers."""
    r = result.route
    headers = {"x-sluice-request-id": result.request_id,
               "x-sluice-cost": format(result.cost, "f"),
               "x-sluice-baseline-cost": format(result.baseline_cost, "f"),
               "x-sluice-route": f"tier={r.tier}; model={result.model}; queue={r.queue}",
               "x-sluice-cache": "hit" if result.cache_hit else "miss"}
    if r.dropped:
        headers[H_DROPPED] = ", ".join(r.dropped)
    t = result.timings
    # The W3C Server-Timing header: browsers' dev tools and tracing proxies show it, so a
    # slow answer says whether it waited in the queue or at the provider.
    headers["server-timing"] = (f"queue;dur={t.queued_ms:.1f}, provider;dur={t.provider_ms:.1f}, "
                                f"total;dur={t.total_ms:.1f}")
    return headers
