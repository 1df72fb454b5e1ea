"""The response-cache key: a hash of a prefix-free encoding of all that changes the answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel

from models.domain.cache_policy import CompiledPolicy
from models.domain.content import ImagePart, TextPart
from models.domain.generation import Prediction, ResponseSchema, ResponsesOptions, ToolChoice
from models.domain.normalize import NormalizationReport
from models.domain.request import (LATE_FIELDS, TIER_POLICIES, CachePolicy, ChatRequest, Message,
                                   StaticPart, ToolCall, ToolDef)
from models.domain.settings import RoutingSettings

#: Bump when the encoding changes: old entries then simply stop matching.
KEY_VERSION = "rc1"
#: Stands in a scope segment that the feature's scope does not include.
UNSCOPED = "~"


class Role(Enum):
    """How a request field takes part in the key."""

    KEYED = "keyed"  # always encoded: a different value may give a different answer
    SCOPE = "scope"  # encoded when the feature's scope includes it: who may share an entry
    EXCLUDED = "excluded"  # never encoded: it does not change the answer


#: Every field of every request model, declared. tests/unit/test_cache_key.py fails when a
#: model gains a field that is not listed here, so a new field cannot be ignored silently.
DECLARED: dict[type[BaseModel], dict[str, tuple[Role, str]]] = {
    ChatRequest: {
        "request_id": (Role.EXCLUDED, "unique per call"),
        "org": (Role.SCOPE, "tenant: always part of the scope"),
        "team": (Role.SCOPE, "scope team, feature, user"),
        "feature": (Role.SCOPE, "scope feature, user"),
        "user": (Role.SCOPE, "scope user only"),
        "lane": (Role.EXCLUDED, "latency class; the same model policy answers either lane"),
        "static": (Role.KEYED, "system prompt, few-shot and tools shape the answer"),
        "messages": (Role.KEYED, "the conversation, normalized"),
        "max_tokens": (Role.KEYED, "may truncate the answer"),
        "temperature": (Role.KEYED, "sampling"),
        "stop": (Role.KEYED, "may cut the answer short (order does not matter)"),
        "response_format": (Role.KEYED, "text or JSON"),
        "model": (Role.KEYED, "model policy, with the models the routing settings resolve it to"),
        "cache": (Role.EXCLUDED, "how the cache treats the request, not what is asked"),
        "tags": (Role.EXCLUDED, "attribution carried to the ledger"),
        "timeout_s": (Role.EXCLUDED, "how long the caller waits, not what it asks"),
        "response_schema": (Role.KEYED, "the shape the answer must take"),
        "top_p": (Role.KEYED, "sampling"),
        "top_k": (Role.KEYED, "sampling"),
        "seed": (Role.KEYED, "sampling"),
        "presence_penalty": (Role.KEYED, "sampling"),
        "frequency_penalty": (Role.KEYED, "sampling"),
        "logit_bias": (Role.KEYED, "sampling"),
        "logprobs": (Role.KEYED, "part of the answer"),
        "top_logprobs": (Role.KEYED, "part of the answer"),
        "tool_choice": (Role.KEYED, "whether and which tool the model calls"),
        "parallel_tool_calls": (Role.KEYED, "how many calls one answer may hold"),
        "reasoning_effort": (Role.KEYED, "how hard the model thinks"),
        "thinking_budget": (Role.KEYED, "how hard the model thinks"),
        "verbosity": (Role.KEYED, "how long the answer is"),
        "prediction": (Role.KEYED, "predicted output steers the answer"),
        "service_tier": (Role.EXCLUDED, "latency class at the provider, same answer"),
        "metadata": (Role.EXCLUDED, "the caller's bookkeeping at the provider"),
        "store": (Role.EXCLUDED, "whether the provider keeps the completion"),
        "safety_identifier": (Role.EXCLUDED, "abuse monitoring at the provider"),
        "prompt_cache_key": (Role.EXCLUDED, "routes the provider's prompt cache, same answer"),
        "drop_params": (Role.EXCLUDED, "refuse or drop: what is sent is keyed already"),
        "cache_marks": (Role.EXCLUDED, "where the provider caches the prompt, not what it says"),
        "provider_headers": (Role.EXCLUDED, "protocol version and beta flags: features that "
                                            "change the answer have fields of their own"),
        "openai_responses": (Role.KEYED, "the answer's reasoning items and summary"),
        "api_key": (Role.EXCLUDED, "who pays and how fast, not what is asked"),
        "allowed_models": (Role.KEYED, "a key's allow-list can change which model answers"),
    },
    StaticPart: {"system": (Role.KEYED, "normalized"), "few_shot": (Role.KEYED, "normalized"),
                 "tools": (Role.KEYED, "canonical JSON, in order")},
    Message: {"role": (Role.KEYED, ""), "content": (Role.KEYED, "normalized"),
              "parts": (Role.KEYED, "images by content hash, in order with the text"),
              "tool_calls": (Role.KEYED, "names and arguments, with the role"),
              "tool_call_id": (Role.EXCLUDED, "an opaque handle, fresh on every call: the "
                                              "position of the call it answers is keyed"),
              "reasoning": (Role.EXCLUDED, "opaque model state, fresh on every call: the turn "
                                           "it led to is keyed"),
              "thinking": (Role.EXCLUDED, "the model's own earlier reasoning, signed anew on "
                                          "every call; the turn's text and calls are keyed")},
    ToolCall: {"id": (Role.EXCLUDED, "an opaque handle, fresh on every call"),
               "name": (Role.KEYED, ""), "arguments": (Role.KEYED, "as sent")},
    ToolDef: {"name": (Role.KEYED, ""), "description": (Role.KEYED, ""),
              "parameters": (Role.KEYED, "canonical JSON")},
    TextPart: {"type": (Role.KEYED, ""), "text": (Role.KEYED, "normalized, as content")},
    ImagePart: {"type": (Role.KEYED, ""), "sha256": (Role.KEYED, "of the bytes, or of the URL"),
                "detail": (Role.KEYED, "the resolution the model sees"),
                "url": (Role.EXCLUDED, "keyed by its hash"),
                "data": (Role.EXCLUDED, "keyed by its hash; never stored"),
                "media_type": (Role.EXCLUDED, "read from the bytes the hash covers"),
                "width": (Role.EXCLUDED, "read from the bytes the hash covers"),
                "height": (Role.EXCLUDED, "read from the bytes the hash covers")},
    ToolChoice: {"mode": (Role.KEYED, ""), "name": (Role.KEYED, "")},
    ResponseSchema: {"name": (Role.KEYED, ""), "description": (Role.KEYED, ""),
                     "schema_": (Role.KEYED, "canonical JSON"), "strict": (Role.KEYED, "")},
    Prediction: {"content": (Role.KEYED, "as sent")},
    ResponsesOptions: {"include": (Role.KEYED, "encrypted reasoning is part of the answer"),
                       "reasoning_summary": (Role.KEYED, "part of the answer"),
                       "truncation": (Role.KEYED, "what the model reads")},
    CachePolicy: {"mode": (Role.EXCLUDED, "read/write control"),
                  "allow_nondeterministic": (Role.EXCLUDED, "cacheability, see cache_policy")},
}

_SCOPE_FIELDS = {"org": ("org",), "team": ("org", "team"), "feature": ("org", "team", "feature"),
                 "user": ("org", "team", "feature", "user")}


def undeclared_fields() -> dict[str, set[str]]:
    """Fields of the request models missing from :data:`DECLARED` (or declared but gone)."""
    out: dict[str, set[str]] = {}
    for model, fields in DECLARED.items():
        diff = set(model.model_fields) ^ set(fields)
        if diff:
            out[model.__name__] = diff
    return out


class CacheKey:
    """A request's key: the scope it lives in and the digest of its canonical encoding."""

    __slots__ = ("scope", "digest", "context", "last_user", "report")

    def __init__(self, scope: str, digest: str, context: str = "", last_user: str = "",
                 report: NormalizationReport | None = None) -> None:
        #: ``org|team|feature|user`` with ``~`` for the parts the feature's scope leaves out.
        self.scope = scope
        self.digest = digest
        #: Digest of everything but the last user turn (semantic neighbours must share it).
        self.context = context
        #: The normalized last user turn (semantic lookups embed it).
        self.last_user = last_user
        #: What normalization did, when a report was asked for.
        self.report = report

    @property
    def id(self) -> str:
        """``scope:digest``: what the store appends to its key prefix."""
        return f"{self.scope}:{self.digest}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheKey) and (self.scope, self.digest) == (other.scope,
                                                                            other.digest)

    def __hash__(self) -> int:
        return hash((self.scope, self.digest))

    def __repr__(self) -> str:
        return f"CacheKey({self.id!r})"


def scope_of(request: ChatRequest, scope: str) -> str:
    """The scope segment of ``request`` under the feature's ``scope`` setting."""
    keep = _SCOPE_FIELDS[scope]
    return "|".join((getattr(request, f) or UNSCOPED) if f in keep else UNSCOPED
                    for f in ("org", "team", "feature", "user"))


def model_fingerprint(policy: str, routing: RoutingSettings, feature: str = "*",
                      artifact_version: Callable[[str], str] = str) -> str:
    """The model policy plus everything that decides which model answers it.

    ``auto``: the tiers' models and the routing rule of ``feature`` (its own policy, else the
    default router with its artifact, named by ``artifact_version``, and threshold), so a
    change of router, policy or artifact never serves another tier's answers. A tier policy:
    the tier's model. A named model: itself.
    """
    if policy == "auto":
        rule = routing_rule(routing, feature)
        if rule.get("artifact"):
            rule["artifact"] = artifact_version(str(rule["artifact"]))
        return (f"auto>{routing.cheap_model}/{routing.flagship_model}/"
                f"{routing.self_hosted_model}@"
                + json.dumps(rule, sort_keys=True, separators=(",", ":"), default=str))
    if policy in TIER_POLICIES:
        return f"{policy}>{routing.model_for(policy)}"
    return policy


def routing_rule(routing: RoutingSettings, feature: str) -> dict[str, Any]:
    """The routing rule ``auto`` follows for ``feature``: its policy as configured, else the
    default router's (queues.wiring builds the same RouterSet from these settings)."""
    for entry in routing.policies:
        if entry.get("feature") == feature:
            return dict(entry)
    return {"router": routing.default_router, "artifact": routing.router_artifact,
            "threshold": routing.cheap_threshold}


def answering_policy(policy: str, routing: RoutingSettings, tier: str, model: str) -> str:
    """The model policy whose key an answer by ``model`` belongs under: ``policy`` itself when
    ``model`` is what it routes to for ``tier``, else the named model (a fallback answered)."""
    if policy == "auto" or policy in TIER_POLICIES:
        try:
            routed = routing.model_for(tier if policy == "auto" else policy)
        except KeyError:
            return model
        return policy if routed == model else model
    return policy if policy == model else model


def _ns(data: str) -> str:
    # Netstrings (`len:text,`) are self-delimiting, so no two field sequences share an encoding;
    # lengths count code points, and the final UTF-8 encoding is injective.
    return f"{len(data)}:{data},"


def encode_request(request: ChatRequest, policy: CompiledPolicy, model: str,
                   report: NormalizationReport | None = None, scope: str = "") -> list[str]:
    """The canonical encoding of ``request`` as tagged netstrings; the last user turn is last."""
    norm = policy.normalizer
    static = request.static
    stops = sorted(set(request.stop))
    parts = [_ns(KEY_VERSION), "scope", _ns(scope or scope_of(request, policy.policy.scope)),
             "policy", _ns(policy.fingerprint), "model", _ns(model),
             "temperature", _ns(repr(float(request.temperature))),
             "max_tokens", _ns(str(request.max_tokens)),
             "stop", _ns(str(len(stops))), *[_ns(x) for x in stops],
             "format", _ns(request.response_format),
             *_params(request),
             "system", _ns(norm(static.system, report) if static.system else ""),
             "tools", _ns(str(len(static.tools))), *[_ns(_tool_json(t)) for t in static.tools],
             "few_shot", _ns(str(len(static.few_shot)))]
    for m in static.few_shot:
        parts += [_ns(m.role), _ns(norm(m.content, report))]
    parts += ["messages", _ns(str(len(request.messages)))]
    positions: dict[str, int] = {}
    for m in request.messages:
        if m.role == "tool":
            # Which call it answers, by position (results may come in any order), and its
            # output raw: a feature's normalizer is for what people type, and would make two
            # results that differ in a date or an order id share one answer.
            at = positions.get(m.tool_call_id or "", -1)
            parts += [_ns(f"tool:{at}"), _ns(m.content)]
            continue
        if m.tool_calls:
            positions = {c.id: i for i, c in enumerate(m.tool_calls)}
        parts += [_ns(_role(m)), _ns(norm(m.content, report))]
    return parts


def keyed_params(request: ChatRequest) -> dict[str, object]:
    """The generation parameters the caller set that take part in the key, as JSON values."""
    roles = DECLARED[ChatRequest]
    data = request.model_dump(mode="json", include=set(LATE_FIELDS))
    return {name: data[name] for name in LATE_FIELDS
            if roles[name][0] is Role.KEYED and data.get(name) is not None}


def _params(request: ChatRequest) -> list[str]:
    # Only when some are set, so the key of a request that sets none stays what it was. The
    # tag cannot be mistaken for the "system" tag that otherwise follows "format".
    found = keyed_params(request)
    if not found:
        return []
    return ["params", _ns(json.dumps(found, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False))]


def _role(m: Message) -> str:
    """The role, with the calls an assistant turn made or the images a user turn holds: a
    plain turn encodes as before, and no plain role contains ':' or '|' so no tool or image
    turn can encode like a plain one."""
    if m.parts:
        parts = ["t" if isinstance(p, TextPart) else [p.sha256, p.detail] for p in m.parts]
        return f"{m.role}|img:" + json.dumps(parts, separators=(",", ":"))
    if not m.tool_calls:
        return m.role
    calls = [[c.name, c.arguments] for c in m.tool_calls]
    return f"{m.role}:" + json.dumps(calls, separators=(",", ":"), ensure_ascii=False)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(request: ChatRequest, policy: CompiledPolicy, model: str, *,
              report: NormalizationReport | None = None, semantic: bool = False) -> CacheKey:
    """The key of ``request`` under ``policy``; ``model`` comes from :func:`model_fingerprint`."""
    scope = scope_of(request, policy.policy.scope)
    parts = encode_request(request, policy, model, report, scope)
    # A turn's images are not in what the semantic cache embeds: such a turn matches exactly.
    if not semantic or request.messages[-1].parts:
        return CacheKey(scope, _digest(parts), report=report)
    # The last netstring is the last user turn; everything before it must match exactly.
    last = policy.normalizer(request.messages[-1].content)
    return CacheKey(scope, _digest(parts), _digest(parts[:-1]), last, report)


def _tool_json(tool: ToolDef) -> str:
    return json.dumps({"name": tool.name, "description": tool.description,
                       "parameters": tool.parameters}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)


def declared_roles(model: type[BaseModel]) -> Mapping[str, Role]:
    """Field name -> role for one request model."""
    return {name: role for name, (role, _why) in DECLARED[model].items()}
