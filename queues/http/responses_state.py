"""The Responses door's state: ``store``, ``previous_response_id`` and the stored-response
endpoints (``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``).

A kept response is prompt and answer text, which sluicegate keeps only for features that
opted in (``SLUICE_PRIVACY__STORE_TEXT_FEATURES``) and only for their retention: elsewhere
``store: true`` is answered ``"store": false`` (as OpenAI answers zero-retention orgs) and a
``previous_response_id`` is a 400 saying how to turn it on. Responses are scoped by org and
team: another team's id is a 404, as an unknown one.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.db import stored_responses
from models.db.api_keys import KeyInfo
from models.domain.errors import NotFound, ValidationError
from models.domain.result import ChatResult
from queues.http.context import FrontDoor
from queues.http.pipeline import door, guarded
from queues.http.wire import openai_responses_items as items
from queues.http.wire import openai_responses_render as render
from queues.http.wire.base import Parsed
from queues.http.wire.openai_responses import OpenAIResponses

log = logging.getLogger(__name__)
PREFIX = "resp_"


class ResponsesDoor(OpenAIResponses):
    """The Responses wire format with its state: the pipeline calls ``prepare`` before it
    submits and ``finish`` (or the stream encoder's ``keep``) once the answer is in."""

    async def prepare(self, fd: FrontDoor, parsed: Parsed, key: KeyInfo) -> None:
        """Storage as the privacy settings allow, and the earlier turns of a continuation."""
        echo, data = parsed.options["echo"], parsed.data
        store, previous = echo["store_asked"], echo["previous_response_id"]
        keeps = fd.settings.privacy.stores_text(data["feature"])
        prior: list[dict[str, Any]] = []
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise ValidationError("previous_response_id must be a response id",
                                      field="previous_response_id")
            if not keeps:
                raise ValidationError(_storage_off(data["feature"]),
                                      field="previous_response_id")
            kept = await run_in_threadpool(_read, fd, key, previous)
            if kept is None:
                raise NotFound(f"Previous response with id '{previous}' not found.",
                               field="previous_response_id")
            prior = kept.context
            system, turns = items.input_turns(prior + as_items(parsed.options["input"]))
            data["messages"] = items.close(turns)
            prompt = "\n\n".join(p for p in (parsed.options["instructions"], *system) if p)
            static = dict(data.get("static") or {})
            static.pop("system", None)
            data["static"] = {**static, **({"system": prompt} if prompt else {})}
        echo["store"] = bool(store and keeps)
        if echo["store"]:
            parsed.options["keep"] = functools.partial(_keep, fd, parsed, key, prior)

    async def finish(self, fd: FrontDoor, parsed: Parsed, result: ChatResult
                     ) -> dict[str, Any]:
        """The response body, kept when storage is on."""
        body = render.response_body(result, parsed.options["echo"])
        keep = parsed.options.get("keep")
        return await keep(result, body) if keep is not None else body


def _storage_off(feature: str) -> str:
    return (f"Stored responses are off for feature '{feature}': sluicegate keeps prompt and "
            "answer text only for features listed in SLUICE_PRIVACY__STORE_TEXT_FEATURES (for "
            "SLUICE_PRIVACY__RETENTION_DAYS). Add it there, or send the whole conversation "
            "in input instead of previous_response_id.")


def as_items(raw: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(raw, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": raw}]}]
    return list(raw)


def listed(raw: Any, request_id: str) -> list[dict[str, Any]]:
    """This request's input items as ``/input_items`` lists them: each with an id."""
    out = []
    for i, item in enumerate(as_items(raw)):
        shown = dict(item)
        shown.setdefault("type", "message")
        if shown["type"] == "message" and isinstance(shown.get("content"), str):
            kind = "output_text" if shown.get("role") == "assistant" else "input_text"
            shown["content"] = [{"type": kind, "text": shown["content"]}]
        shown.setdefault("id", f"item_{request_id}_{i}")
        shown.setdefault("status", "completed")
        out.append(shown)
    return out


async def _keep(fd: FrontDoor, parsed: Parsed, key: KeyInfo, prior: list[dict[str, Any]],
                result: ChatResult, body: dict[str, Any]) -> dict[str, Any]:
    """Store ``body`` and the conversation it ends; a failed write answers ``store: false``
    (the answer is paid for and good: it is not lost because it could not be kept)."""
    raw = parsed.options["input"]
    context = prior + as_items(raw) + items.output_items(result, encrypted=True)
    privacy = fd.settings.privacy

    def write() -> None:
        with fd.sessions() as s:
            stored_responses.keep(s, org=key.org, team=key.team,
                                  feature=parsed.data["feature"],
                                  response_id=result.request_id, body=body,
                                  input_items=listed(raw, result.request_id),
                                  context=context, retention_days=privacy.retention_days)
            s.commit()

    try:
        await run_in_threadpool(write)
    except Exception:  # noqa: BLE001 - the answer stands; only its keeping failed
        log.warning("could not keep response %s", result.request_id, exc_info=True)
        return {**body, "store": False}
    return body


def _read(fd: FrontDoor, key: KeyInfo, response_id: str) -> stored_responses.Kept | None:
    with fd.sessions() as s:
        return stored_responses.read(s, org=key.org, team=key.team,
                                     response_id=response_id.removeprefix(PREFIX))


async def _kept(request: Request) -> tuple[FrontDoor, KeyInfo, str, stored_responses.Kept]:
    fd = door(request)
    key = await fd.keys.principal(request)
    response_id = request.path_params["response_id"]
    kept = await run_in_threadpool(_read, fd, key, response_id)
    if kept is None:
        raise NotFound(f"Response with id '{response_id}' not found (kept responses are "
                       "this key's team's, for the feature's retention).", field="response_id")
    return fd, key, response_id, kept


async def _get(request: Request) -> Response:
    """``GET /v1/responses/{id}``: a kept response, as it was answered."""
    _, _, _, kept = await _kept(request)
    return JSONResponse(kept.body)


async def _delete(request: Request) -> Response:
    """``DELETE /v1/responses/{id}``: forget a kept response."""
    fd, key, response_id, _ = await _kept(request)

    def forget() -> None:
        with fd.sessions() as s:
            stored_responses.forget(s, org=key.org, team=key.team,
                                    response_id=response_id.removeprefix(PREFIX))
            s.commit()

    await run_in_threadpool(forget)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def _input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items``: the items it answered (``order``, ``limit``,
    ``after`` as OpenAI pages them; newest first by default)."""
    _, _, _, kept = await _kept(request)
    q = request.query_params
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValidationError("order must be 'asc' or 'desc'", field="order")
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ValidationError("limit must be an integer from 1 to 100", field="limit")
    data = kept.input_items if order == "asc" else kept.input_items[::-1]
    after = q.get("after")
    if after is not None:
        ids = [i.get("id") for i in data]
        data = data[ids.index(after) + 1:] if after in ids else []
    page = data[:limit]
    return JSONResponse({"object": "list", "data": page,
                         "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None,
                         "has_more": len(data) > limit})


get_response = guarded(_get)
delete_response = guarded(_delete)
input_items = guarded(_input_items)
