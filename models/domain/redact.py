"""Redact secrets (provider and client keys) from any text before it is logged or returned."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
# Key shapes worth masking even when we do not know the value (someone else's key in a message).
_SHAPES = re.compile(r"\b(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{12,}|sg_[A-Za-z0-9_\-]{16,})\b")


class Redactor:
    """Replaces every known secret, and anything shaped like an API key, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short values would mask ordinary words; real keys are long.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _SHAPES.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message and exception text of each record."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("sluice-redact")
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = self.redactor(str(exc))
            if text != str(exc):
                record.exc_text = f"{type(exc).__name__}: {text}"
                record.exc_info = None
        return True


def install(redactor: Redactor, loggers: Iterable[logging.Logger] | None = None) -> None:
    """Attach the filter to every handler of ``loggers`` (default: the root logger's)."""
    targets = list(loggers) if loggers is not None else [logging.getLogger()]
    for lg in targets:
        for handler in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter(redactor))
