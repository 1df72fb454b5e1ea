"""A feature's model ladder and task types, as plain data an operator (or a quality guard) edits.

A ladder is an ordered list of models, weakest (and usually cheapest) first, from any
provider, self-hosted ones included. Each rung has a ``quality`` in [0, 1]: the share of the
requests the cheapest rung fails that it still answers well (0 for the first rung, 1 for the
last, evenly spaced in between unless set). With a router's score ``s`` (the probability the
first rung suffices), a rung's predicted quality is ``s + (1 - s) * quality``; ``auto`` takes
the cheapest rung whose prediction meets the feature's ``target``. With two rungs this is the
old threshold rule: the first rung when ``s >= target``.

Task types (``autocomplete``, ``explain``, ...) each have a fixed rung, a ladder of their own,
or the feature's; a request gets one by the caller's hint (``x-sluice-task-type``), by rules
(a regex on the prompt, its size, tools present) or by a trained classifier.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from models.domain.errors import ConfigError

#: The ``tags`` key (and ``x-sluice-task-type`` header) a caller names its task type with.
TASK_TAG = "task_type"
TIER_NAMES: tuple[str, ...] = ("cheap", "flagship", "self-hosted")


@dataclass(frozen=True)
class Rung:
    """One model of a ladder and the quality it adds over the first rung."""

    model: str
    quality: float


@dataclass(frozen=True)
class TaskRule:
    """When a task type applies: every condition set must hold (none set: never by rule)."""

    prompt_regex: str | None = None
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    #: True: only requests that declare tools; False: only requests without.
    tools: bool | None = None

    @property
    def empty(self) -> bool:
        """True when no condition is set."""
        return all(v is None for v in (self.prompt_regex, self.min_prompt_tokens,
                                       self.max_prompt_tokens, self.tools))

    def matches(self, text: str, prompt_tokens: int, has_tools: bool) -> str | None:
        """Why the rule matches (for the ledger), or None when it does not."""
        if self.empty:
            return None
        why = []
        if self.prompt_regex is not None:
            if not re.search(self.prompt_regex, text):
                return None
            why.append(f"prompt ~ /{self.prompt_regex[:40]}/")
        if self.min_prompt_tokens is not None:
            if prompt_tokens < self.min_prompt_tokens:
                return None
            why.append(f"{prompt_tokens} >= {self.min_prompt_tokens} tokens")
        if self.max_prompt_tokens is not None:
            if prompt_tokens > self.max_prompt_tokens:
                return None
            why.append(f"{prompt_tokens} <= {self.max_prompt_tokens} tokens")
        if self.tools is not None:
            if has_tools != self.tools:
                return None
            why.append("tools" if self.tools else "no tools")
        return ", ".join(why)


@dataclass(frozen=True)
class TaskType:
    """A kind of request within a feature, with the rung or ladder that serves it."""

    name: str
    #: A fixed model for this task type (it must be allowed by capabilities, else it climbs).
    rung: str | None = None
    #: A ladder of its own; empty: the feature's ladder.
    rungs: tuple[Rung, ...] = ()
    #: Its own quality target; None: the feature's.
    target: float | None = None
    #: Output tokens expected, for price-aware ordering (None: the feature's, else max_tokens).
    expected_output_tokens: int | None = None
    when: TaskRule = TaskRule()


@dataclass(frozen=True)
class FeatureLadder:
    """How one feature routes across its own models: the data the CLI shows and sets."""

    feature: str
    rungs: tuple[Rung, ...]
    #: The predicted quality ``auto`` must reach (the quality floor moves it: :meth:`moved`).
    target: float = 0.5
    #: The router that scores requests (None: the feature's routing policy, else the default).
    router: str | None = None
    artifact: str | None = None
    #: Named tiers onto rungs (models); unset: cheap = the cheapest rung for the request,
    #: flagship = the top rung, self-hosted = the first self-hosted rung.
    tiers: dict[str, str] = field(default_factory=dict)
    task_types: tuple[TaskType, ...] = ()
    #: A task-type classifier trained with `sluice router train --task-types`.
    classifier: str | None = None
    #: The task type of a request no hint, rule or classifier placed (None: the ladder itself).
    default_task_type: str | None = None
    #: A rung that keeps failing hands the request to the rungs above it (the reservation
    #: covers the dearest of them).
    escalate: bool = True
    expected_output_tokens: int | None = None

    def __post_init__(self) -> None:
        where = f"ladder of feature {self.feature!r}"
        if not self.rungs:
            raise ConfigError(f"{where}: give at least one rung (a model name)")
        names = [t.name for t in self.task_types]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: task type names must be distinct, got {names}")
        for value, what in [(self.target, "target")] + [
                (t.target, f"task type {t.name} target") for t in self.task_types]:
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where}: {what} must be in [0, 1], not {value}")
        if self.default_task_type is not None and self.default_task_type not in names:
            raise ConfigError(f"{where}: default_task_type {self.default_task_type!r} is not "
                              f"one of its task types {names}")
        bad = sorted(set(self.tiers) - set(TIER_NAMES))
        if bad:
            raise ConfigError(f"{where}: tiers {bad} unknown; map any of {list(TIER_NAMES)}")

    def task(self, name: str) -> TaskType | None:
        """The task type called ``name``."""
        return next((t for t in self.task_types if t.name == name), None)

    def models(self) -> list[str]:
        """Every model the feature may route to (its ladder, task types' rungs and tiers)."""
        out = [r.model for r in self.rungs]
        for t in self.task_types:
            out += [r.model for r in t.rungs] + ([t.rung] if t.rung else [])
        out += list(self.tiers.values())
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        """The config form (what :func:`ladder_from_dict` reads back)."""
        out: dict[str, Any] = {"rungs": [_rung_dict(r) for r in self.rungs],
                               "target": self.target, "escalate": self.escalate}
        for key in ("router", "artifact", "classifier", "default_task_type",
                    "expected_output_tokens"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.tiers:
            out["tiers"] = dict(self.tiers)
        if self.task_types:
            out["task_types"] = [_task_dict(t) for t in self.task_types]
        return out

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the whole config: part of the response-cache identity of ``auto``."""
        data = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def with_target(self, target: float, task_type: str | None = None) -> FeatureLadder:
        """A copy with a new quality target (the feature's, or one task type's)."""
        if task_type is None:
            return replace(self, target=target)
        if self.task(task_type) is None:
            raise ConfigError(f"feature {self.feature!r} has no task type {task_type!r}")
        return replace(self, task_types=tuple(
            replace(t, target=target) if t.name == task_type else t for t in self.task_types))

    def moved(self, target: float) -> FeatureLadder:
        """The ladder under a quality-floor move to ``target``: the feature's target set, each
        task type's own target shifted by as much (clamped to [0, 1])."""
        target = min(max(float(target), 0.0), 1.0)
        if target == self.target:
            return self
        delta = target - self.target
        return replace(self, target=target, task_types=tuple(
            t if t.target is None else replace(t, target=min(max(t.target + delta, 0.0), 1.0))
            for t in self.task_types))


def ladder_from_dict(feature: str, data: dict[str, Any]) -> FeatureLadder:
    """A ladder from config (TOML or JSON), refusing unknown keys with a message naming them."""
    where = f"ladder of feature {feature!r}"
    _known(data, {"rungs", "target", "router", "artifact", "tiers", "task_types", "classifier",
                  "default_task_type", "escalate", "expected_output_tokens", "feature"}, where)
    tasks = tuple(_task(feature, t) for t in data.get("task_types") or ())
    return FeatureLadder(
        feature=feature, rungs=_rungs(data.get("rungs"), where),
        target=float(data.get("target", 0.5)), router=data.get("router"),
        artifact=data.get("artifact"), tiers=dict(data.get("tiers") or {}), task_types=tasks,
        classifier=data.get("classifier"), default_task_type=data.get("default_task_type"),
        escalate=bool(data.get("escalate", True)),
        expected_output_tokens=_opt_int(data.get("expected_output_tokens")))


def _rungs(raw: Any, where: str) -> tuple[Rung, ...]:
    """``["a", "b"]`` or ``[{"model": "a", "quality": 0}, ...]``; qualities default evenly."""
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{where}: rungs must be a list of model names")
    items = [r if isinstance(r, dict) else {"model": str(r)} for r in raw]
    n = len(items)
    out = []
    for i, item in enumerate(items):
        _known(item, {"model", "quality"}, f"{where} rung {i}")
        if not item.get("model"):
            raise ConfigError(f"{where}: rung {i} needs a model")
        quality = float(item.get("quality", i / (n - 1) if n > 1 else 1.0))
        if not 0.0 <= quality <= 1.0:
            raise ConfigError(f"{where}: rung {i} quality must be in [0, 1], not {quality}")
        out.append(Rung(str(item["model"]), quality))
    if [r.quality for r in out] != sorted(r.quality for r in out):
        raise ConfigError(f"{where}: rungs go from the weakest to the strongest; their "
                          f"qualities {[r.quality for r in out]} must not decrease")
    if len({r.model for r in out}) != len(out):
        raise ConfigError(f"{where}: a model may be one rung only")
    return tuple(out)


def _task(feature: str, data: dict[str, Any]) -> TaskType:
    where = f"ladder of feature {feature!r}, task type {data.get('name')!r}"
    _known(data, {"name", "rung", "rungs", "target", "expected_output_tokens", "when"}, where)
    if not data.get("name"):
        raise ConfigError(f"ladder of feature {feature!r}: every task type needs a name")
    when = dict(data.get("when") or {})
    _known(when, set(TaskRule.__dataclass_fields__), f"{where} when")
    if when.get("prompt_regex") is not None:
        try:
            re.compile(when["prompt_regex"])
        except re.error as exc:
            raise ConfigError(f"{where}: prompt_regex does not compile: {exc}") from None
    rule = TaskRule(prompt_regex=when.get("prompt_regex"),
                    min_prompt_tokens=_opt_int(when.get("min_prompt_tokens")),
                    max_prompt_tokens=_opt_int(when.get("max_prompt_tokens")),
                    tools=None if when.get("tools") is None else bool(when["tools"]))
    if data.get("rung") and data.get("rungs"):
        raise ConfigError(f"{where}: give a fixed rung or a ladder of its own, not both")
    return TaskType(name=str(data["name"]), rung=data.get("rung"),
                    rungs=_rungs(data.get("rungs"), where),
                    target=None if data.get("target") is None else float(data["target"]),
                    expected_output_tokens=_opt_int(data.get("expected_output_tokens")),
                    when=rule)


def _known(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use "
                          f"{', '.join(sorted(known))}")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _rung_dict(r: Rung) -> dict[str, Any]:
    return {"model": r.model, "quality": r.quality}


def _task_dict(t: TaskType) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name}
    if t.rung:
        out["rung"] = t.rung
    if t.rungs:
        out["rungs"] = [_rung_dict(r) for r in t.rungs]
    for key in ("target", "expected_output_tokens"):
        if getattr(t, key) is not None:
            out[key] = getattr(t, key)
    when = {k: v for k, v in vars(t.when).items() if v is not None} if not t.when.empty else {}
    if when:
        out["when"] = when
    return out
