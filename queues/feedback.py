"""Callers' outcomes for answered requests: validated, then joined to the request's ledger row."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError

from models.domain.errors import ConfigError, LedgerError, ValidationError

_NAME = r"^[A-Za-z0-9._:\-/]{1,64}$"


class Feedback(BaseModel):
    """One outcome: a thumbs up (1) or down (-1), and/or a named task metric's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    org: str = Field(default="default", pattern=_NAME)
    team: str = Field(pattern=_NAME)
    request_id: str = Field(pattern=r"^[A-Za-z0-9._:\-]{1,128}$")
    thumb: Literal[-1, 1] | None = None
    metric: str | None = Field(default=None, pattern=_NAME)
    value: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _something(self) -> Feedback:
        if self.thumb is None and self.metric is None:
            raise ValueError("give a thumb (1 or -1) or a metric with its value")
        if (self.metric is None) != (self.value is None):
            raise ValueError("a metric goes with its value, and a value with its metric")
        return self


def parse_feedback(data: Any) -> Feedback:
    """A Feedback, or ValidationError naming the first bad field."""
    if isinstance(data, Feedback):
        return data
    try:
        return Feedback.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "feedback"
        raise ValidationError(f"invalid feedback: {field}: {first['msg']}", field=field) from exc


def record(gateway: Any, data: Any) -> bool:
    """Store ``data`` for the request it names (of the same org and team); True when stored."""
    from models.db.quality import record_feedback

    fb = parse_feedback(data)
    sessions = getattr(gateway, "sessions", None)
    if sessions is None:
        raise ConfigError("feedback needs the ledger database: build the Gateway with "
                          "sluicegate.connect() (or pass sessions=)")
    try:
        with sessions() as s:
            found = record_feedback(s, org=fb.org, team=fb.team, request_id=fb.request_id,
                                    thumb=fb.thumb, metric=fb.metric, value=fb.value)
            s.commit()
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not store feedback for {fb.request_id}: {exc}; retry") from exc
    if not found:
        raise ValidationError(f"no answered request {fb.request_id!r} of team {fb.team!r} is in "
                              "the ledger: send feedback with the request id you submitted",
                              field="request_id")
    return True
