"""The validated chat request an app service submits, with its static prefix kept apart."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.domain.content import MAX_IMAGE_CHARS
from models.domain.errors import ValidationError
from models.domain.generation import (Effort, Prediction, ResponseSchema, ResponsesOptions,
                                      ToolChoice)
# Also where callers have always imported them from.
from models.domain.message import Message
from models.domain.tools import ToolCall, ToolDef, openai_tool_calls  # noqa: F401

Lane = Literal["interactive", "async"]
LANES: tuple[str, ...] = ("interactive", "async")
#: Model policies that are not a model name; anything else must name a catalogue model.
TIER_POLICIES: tuple[str, ...] = ("auto", "cheap", "flagship", "self-hosted")

_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_NAME_PATTERN = r"^[A-Za-z0-9._:\-/]{1,64}$"


#: Fields a turn gained for tool loops; plain turns are serialized without them.
_TOOL_FIELDS = {"tool_calls", "tool_call_id", "parts", "reasoning", "thinking"}
_STABLE = {"few_shot": {"__all__": _TOOL_FIELDS}}


class StaticPart(BaseModel):
    """The part of a prompt that is identical across calls: sent first, as a cacheable prefix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = Field(default="", max_length=2_000_000)
    few_shot: tuple[Message, ...] = ()
    tools: tuple[ToolDef, ...] = ()

    @field_validator("few_shot")
    @classmethod
    def _few_shot_is_text(cls, value: tuple[Message, ...]) -> tuple[Message, ...]:
        if any(m.role == "tool" or m.tool_calls or not m.content for m in value):
            raise ValueError("few-shot examples are user and assistant text turns")
        return value

    def is_empty(self) -> bool:
        """True when there is no static prefix at all."""
        return not (self.system or self.few_shot or self.tools)

    def stable_dump(self) -> dict[str, Any]:
        """The JSON form hashes are taken of: as it was before turns had tool fields (few-shot
        turns never carry them), so prompt hashes and provider cache keys do not move."""
        return self.model_dump(mode="json", exclude=_STABLE)

    def stable_json(self) -> str:
        """:meth:`stable_dump` as compact JSON text, serialized once (the producer's path)."""
        return self.model_dump_json(exclude=_STABLE)


class CachePolicy(BaseModel):
    """How the response cache treats this request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: ``use``: read and write; ``bypass``: neither; ``refresh``: skip the read, overwrite.
    mode: Literal["use", "bypass", "refresh"] = "use"
    #: Cache even when sampling is not deterministic (temperature > 0).
    allow_nondeterministic: bool = False


class CacheMark(BaseModel):
    """A caller's own prompt-cache breakpoint (Anthropic's ``cache_control``), kept as sent.

    ``at`` names the part it closes and ``index`` the place in it: tools, after tool
    ``index``; system, after the system prompt's first ``index`` characters (a block's end);
    messages, at the end of turn ``index``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: Literal["tools", "system", "messages"]
    index: int = Field(ge=0)
    ttl: Literal["5m", "1h"] = "5m"


#: Headers a caller may send on to the provider (a door forwards what its client sent).
PROVIDER_HEADERS = frozenset({"anthropic-beta", "anthropic-version"})

#: Request fields added after the first release, all unset by default: a message leaves them
#: out while unset, so workers of an older release still read it (queues/envelope.py).
LATE_FIELDS: tuple[str, ...] = (
    "response_schema", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "tool_choice", "parallel_tool_calls",
    "reasoning_effort", "thinking_budget", "verbosity", "prediction", "service_tier",
    "metadata", "store", "safety_identifier", "prompt_cache_key", "drop_params",
    "openai_responses", "api_key", "allowed_models")

#: The longest a caller may say it waits (``timeout_s``, ``x-sluice-timeout``): a day.
MAX_TIMEOUT_S = 86_400.0


class ChatRequest(BaseModel):
    """A chat request with its attribution, lane, limits and policies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_ID_PATTERN)
    org: str = Field(default="default", pattern=_NAME_PATTERN)
    team: str = Field(pattern=_NAME_PATTERN)
    feature: str = Field(pattern=_NAME_PATTERN)
    user: str | None = Field(default=None, pattern=_NAME_PATTERN)
    lane: Lane = "interactive"
    static: StaticPart = StaticPart()
    messages: tuple[Message, ...] = Field(min_length=1)
    max_tokens: int = Field(default=512, ge=1, le=200_000)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stop: tuple[str, ...] = Field(default=(), max_length=4)
    #: ``json_schema`` needs ``response_schema``, the schema the answer must follow.
    response_format: Literal["text", "json", "json_schema"] = "text"
    model: str = Field(default="auto", min_length=1, max_length=128)
    cache: CachePolicy = CachePolicy()
    # What follows is unset (None) unless the caller sets it; models/domain/params.py says
    # what each provider gets for each of them, and refuses what the routed model cannot do.
    response_schema: ResponseSchema | None = None
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Sample from the k likeliest tokens only (Anthropic's ``top_k``; OpenAI has none).
    top_k: int | None = Field(default=None, ge=1, le=1000)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    #: Token id (as text) -> bias in [-100, 100].
    logit_bias: dict[str, int] | None = Field(default=None, max_length=1024)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    #: How hard a reasoning model thinks (OpenAI's levels; Anthropic gets a thinking budget).
    reasoning_effort: Effort | None = None
    #: Tokens a model may think for (Anthropic's ``budget_tokens``; OpenAI gets an effort).
    thinking_budget: int | None = Field(default=None, ge=1024, le=200_000)
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: Prediction | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    #: The caller's own key-value pairs for the provider (OpenAI ``metadata``).
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: bool | None = None
    safety_identifier: str | None = Field(default=None, min_length=1, max_length=64)
    #: The caller's own provider prompt-cache key: it wins over the one sluicegate derives.
    prompt_cache_key: str | None = Field(default=None, min_length=1, max_length=1024)
    #: Drop parameters the routed model cannot honour instead of refusing the request (the
    #: front door's ``x-sluice-drop-params``); the result's route lists what was dropped.
    drop_params: bool = False
    #: Set by the Responses door: an OpenAI model is called through its Responses API.
    openai_responses: ResponsesOptions | None = None
    #: How long the caller waits for the answer (seconds). A request still queued after this
    #: (when unset: after its lane's ``queue_timeout_s``) is not run and costs nothing.
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    #: Free-form tags carried to the ledger; never part of the cache key.
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)
    #: The caller's own cache breakpoints (Anthropic allows four); ours fill in around them.
    cache_marks: tuple[CacheMark, ...] = Field(default=(), max_length=4)
    #: Headers for the provider the caller sent (``anthropic-beta``, ``anthropic-version``).
    provider_headers: dict[str, str] = Field(default_factory=dict, max_length=2)
    #: The id of the API key the request came with (its rate limits and budget apply).
    api_key: str | None = Field(default=None, pattern=_NAME_PATTERN)
    #: The models and tiers the key may use (None: any): ``auto`` routes only inside them.
    allowed_models: tuple[str, ...] | None = Field(default=None, max_length=64)

    @field_validator("provider_headers")
    @classmethod
    def _known_headers(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - PROVIDER_HEADERS
        if unknown:
            raise ValueError(f"only {sorted(PROVIDER_HEADERS)} are sent on, not {sorted(unknown)}")
        return value

    @field_validator("messages")
    @classmethod
    def _last_turn_is_user(cls, value: tuple[Message, ...]) -> tuple[Message, ...]:
        if value and value[-1].role not in ("user", "tool"):
            raise ValueError("the last message must have role 'user' (or 'tool': a tool's "
                             "result the model goes on from)")
        _results_follow_their_calls(value)
        data = sum(len(i.data or "") for m in value for i in m.images)
        if data > MAX_IMAGE_CHARS:
            raise ValueError(f"the images' data add up to {data} base64 characters; at most "
                             f"{MAX_IMAGE_CHARS} fit one request: send large images as https "
                             "URLs")
        return value

    @field_validator("response_schema")
    @classmethod
    def _schema_with_its_format(cls, value: ResponseSchema | None,
                                info: pydantic.ValidationInfo) -> ResponseSchema | None:
        if (info.data.get("response_format") == "json_schema") != (value is not None):
            raise ValueError("response_format 'json_schema' goes with a response_schema, and "
                             "a response_schema with response_format 'json_schema'")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: pydantic.ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs=true")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_names_a_tool(cls, value: ToolChoice | None,
                             info: pydantic.ValidationInfo) -> ToolChoice | None:
        static = info.data.get("static")
        names = {t.name for t in static.tools} if isinstance(static, StaticPart) else set()
        if value is not None and value.mode == "function" and value.name not in names:
            raise ValueError(f"tool_choice names {value.name!r}, which is not one of the "
                             "request's tools")
        if value is not None and value.forces and not names:
            raise ValueError("tool_choice forces a tool call, but the request has no tools")
        return value

    @field_validator("thinking_budget")
    @classmethod
    def _one_reasoning_knob(cls, value: int | None, info: pydantic.ValidationInfo) -> int | None:
        if value is not None and info.data.get("reasoning_effort") is not None:
            raise ValueError("set reasoning_effort or thinking_budget, not both")
        return value

    @property
    def has_images(self) -> bool:
        """True when any turn carries an image."""
        return any(m.parts for m in self.messages)

    def prompt_text(self) -> str:
        """Every prompt string in order (static first), for token estimates and routing."""
        parts = [self.static.system]
        parts += [m.content for m in self.static.few_shot]
        parts += [t.name + " " + t.description for t in self.static.tools]
        for m in self.messages:
            parts.append(m.content)
            parts += [c.name + " " + c.arguments for c in m.tool_calls]
        return "\n".join(p for p in parts if p)

    def last_user_text(self) -> str:
        """The newest user turn: what the router mostly looks at (in a tool loop, the user's
        ask rather than a tool's output)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return self.messages[-1].content


def _results_follow_their_calls(messages: tuple[Message, ...]) -> None:
    """Both providers refuse a tool result that answers no call, and a call left unanswered:
    the turns after an assistant's calls are one result per call, before anything else."""
    waiting: set[str] = set()
    for i, m in enumerate(messages):
        if m.role == "tool":
            if m.tool_call_id not in waiting:
                raise ValueError(f"messages[{i}] answers tool call {m.tool_call_id!r}, which the "
                                 "assistant turn before it did not make (or was answered)")
            waiting.discard(m.tool_call_id)
            continue
        if waiting:
            raise ValueError(f"messages[{i}]: tool calls {sorted(waiting)} have no result; send "
                             "one tool message per call right after the assistant's turn")
        waiting = {c.id for c in m.tool_calls}
    if waiting:
        raise ValueError(f"tool calls {sorted(waiting)} have no result; send one tool message "
                         "per call after the assistant's turn")


def parse_request(data: dict[str, Any] | ChatRequest) -> ChatRequest:
    """Validate ``data`` into a :class:`ChatRequest`, raising our typed error naming the field."""
    if isinstance(data, ChatRequest):
        return data
    if not isinstance(data, dict):
        raise ValidationError(
            f"a request must be a mapping of fields, not {type(data).__name__}", field="request")
    try:
        return ChatRequest.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _typed(exc) from None


def _typed(exc: pydantic.ValidationError) -> ValidationError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "request"
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field; remove it or check its spelling"
    elif field == "lane":
        msg = f"unknown lane {first.get('input')!r}; use one of {', '.join(LANES)}"
    return ValidationError(f"invalid request field '{field}': {msg}", field=field,
                           problems=len(exc.errors()))
