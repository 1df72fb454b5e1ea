"""Worker logs and Flower say how each request ended, never its answer (text stays opt-in)."""

from __future__ import annotations

import logging
import re
from typing import Any

#: Celery's tracer logs each task's return value at INFO ("Task ... succeeded in ...s: <value>").
TRACE_LOGGER = "celery.app.trace"
#: Characters of a reply's repr Celery keeps for its log line and its ``task-succeeded`` event
#: (which Flower shows): enough for ``{'ok': False, 'code': '<code>'``, too few for any text.
REPR_CHARS = 48
_CODE = re.compile(r"'code': '([A-Za-z0-9_]+)'")


class HideReplies(logging.Filter):
    """Replace a logged task return value (our reply, with the answer text) by its outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and "return_value" in args:
            record.args = {**args, "return_value": outcome_of(args["return_value"])}
        return True


def outcome_of(value: Any) -> str:
    """``ok``, or ``error <code>``, from the repr of a task reply; ``<hidden>`` otherwise."""
    text = str(value)
    if text.startswith("{'ok': True"):
        return "ok"
    if text.startswith("{'ok': False"):
        found = _CODE.search(text)
        return f"error {found.group(1)}" if found else "error"
    return "<hidden>"


def install() -> None:
    """Attach the filter to Celery's tracer logger (idempotent; called when a worker starts)."""
    logger = logging.getLogger(TRACE_LOGGER)
    if not any(isinstance(f, HideReplies) for f in logger.filters):
        logger.addFilter(HideReplies())
