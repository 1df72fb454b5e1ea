"""Trace files: JSON Lines of requests as ``submit()`` takes them, with shared texts defined once.

A line is either a request object (the fields of :class:`models.domain.request.ChatRequest`;
``request_id`` is optional and replaced at replay) or a definition line
``{"define": {"style-guide": "long text", ...}}``. Anywhere a request needs a string, the
object ``{"$ref": "style-guide"}`` stands for a text defined on an earlier line, so a
5,000-token system prompt is stored once, not once per request. A recorded trace may simply
spell every text out. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from models.domain.errors import SluiceError, ValidationError
from models.domain.request import parse_request


class TraceError(SluiceError):
    """A trace file cannot be read: the message names the file, the line and the fix."""

    code = "bad_trace"


def resolve(value: Any, texts: Mapping[str, str], where: str) -> Any:
    """``value`` with every ``{"$ref": name}`` replaced by its defined text."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            name = value["$ref"]
            if name not in texts:
                raise TraceError(f"{where}: $ref {name!r} is not defined on an earlier line; "
                                 f"add {{\"define\": {{\"{name}\": \"...\"}}}} above it")
            return texts[name]
        return {k: resolve(v, texts, where) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, texts, where) for v in value]
    return value


def load_trace(path: Path) -> list[dict[str, Any]]:
    """Every request of the trace at ``path``, refs resolved and validated, in file order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    texts: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not JSON ({exc.msg}); each line holds one request "
                             "object") from None
        if not isinstance(item, dict):
            raise TraceError(f"{where}: a line must be a JSON object, not {type(item).__name__}")
        if "define" in item:
            defs = item["define"]
            if not isinstance(defs, dict) or not all(isinstance(v, str) for v in defs.values()):
                raise TraceError(f"{where}: define must map names to strings")
            texts.update(defs)
            continue
        request = resolve(item, texts, where)
        request.pop("request_id", None)
        try:
            parse_request(dict(request, request_id="trace-check"))
        except ValidationError as err:
            raise TraceError(f"{where}: {err.message}") from None
        out.append(request)
    if not out:
        raise TraceError(f"trace {path} holds no requests; see ops/traces/make_trace.py for "
                         "the format")
    return out


def write_trace(path: Path, texts: Mapping[str, str], requests: Iterable[Mapping[str, Any]],
                header: str = "") -> int:
    """Write a trace: an optional ``#`` header, one define line, then one line per request."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for line in header.splitlines():
            fh.write(f"# {line}\n")
        if texts:
            fh.write(json.dumps({"define": dict(texts)}, ensure_ascii=False) + "\n")
        for request in requests:
            fh.write(json.dumps(request, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    return n
