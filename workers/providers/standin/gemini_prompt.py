"""A Gemini ``generateContent`` body (or a ``cachedContents`` body) read into the stand-in's prompt.

Counting follows :func:`models.domain.tokens.count_request`, as the other wire formats do: the
system instruction and each content count 4 framing tokens, tools count name + description +
``str(parameters)``, a function call its name and compact JSON arguments, a function response
its ``content`` text; 3 for the reply primer. Images by Gemini's published rule: 258 tokens
up to 384 px a side, else 258 for each 768 px crop (a URL, not fetched, at the rule's bound).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from models.domain.tokens import PER_MESSAGE, count_text
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.prompt import Prompt, _Builder, tool_tokens

ROLES = frozenset({"user", "model", "function"})
IMAGE_TOKENS = 258


def pick(obj: Any, camel: str) -> Any:
    """``obj[camel]`` or its snake_case twin: the SDK sends some nested keys in either."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake)


def read_prefix(b: _Builder, body: dict[str, Any]) -> None:
    """Tools, then the system instruction, then the contents: the order Gemini caches in."""
    for t, tool in enumerate(body.get("tools") or []):
        decls = pick(tool, "functionDeclarations")
        if not isinstance(decls, list):
            raise RequestInvalid(f"tools[{t}]: only functionDeclarations are served here")
        for i, fn in enumerate(decls):
            if not isinstance(fn, dict) or not fn.get("name"):
                raise RequestInvalid(f"tools[{t}].function_declarations[{i}].name is required")
            params = pick(fn, "parametersJsonSchema") or pick(fn, "parameters")
            b.add("tool", fn, tool_tokens(fn.get("name"), fn.get("description"), params))
    system = pick(body, "systemInstruction")
    if system is not None:
        text = "".join(str(p.get("text", "")) for p in (system.get("parts") or [])
                       if isinstance(p, dict))
        b.add("system", text, PER_MESSAGE + count_text(text))
    b.mark_prefix()


def read_contents(b: _Builder, contents: Any, *, required: bool) -> str:
    """Each content in order, a prefix mark after each; returns the last user text."""
    if contents is None and not required:
        return ""
    if not isinstance(contents, list) or (required and not contents):
        raise RequestInvalid("contents must be a non-empty array")
    last_user = ""
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ROLES:
            raise RequestInvalid(f"contents[{i}].role must be 'user' or 'model'")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise RequestInvalid(f"contents[{i}].parts must be a non-empty array")
        tokens, texts = PER_MESSAGE, []
        for j, part in enumerate(parts):
            n, text = _part(part, f"contents[{i}].parts[{j}]")
            tokens += n
            texts.append(text)
        b.add(str(content.get("role", "user")), parts, tokens)
        b.mark_prefix()
        if content.get("role", "user") == "user" and any(texts):
            last_user = "\n".join(t for t in texts if t)
    return last_user


def _part(part: Any, where: str) -> tuple[int, str]:
    if not isinstance(part, dict):
        raise RequestInvalid(f"{where} must be an object")
    if part.get("thought"):
        return 0, ""  # thoughts sent back are not billed again as input here
    if isinstance(part.get("text"), str):
        return count_text(part["text"]), part["text"]
    call = pick(part, "functionCall")
    if isinstance(call, dict):
        args = json.dumps(call.get("args") or {}, separators=(",", ":"))
        return count_text(str(call.get("name", ""))) + count_text(args), ""
    result = pick(part, "functionResponse")
    if isinstance(result, dict):
        response = result.get("response")
        inner = response.get("content") if isinstance(response, dict) else None
        if not isinstance(inner, str):
            inner = json.dumps(response, separators=(",", ":"))
        return count_text(inner), ""
    inline = pick(part, "inlineData")
    if isinstance(inline, dict):
        return _image_tokens(inline.get("data")), ""
    if pick(part, "fileData") is not None:
        return _image_tokens(None), ""  # a URL is not fetched: counted at the bound
    raise RequestInvalid(f"{where}: a part needs text, functionCall, functionResponse or data")


def _image_tokens(data: Any) -> int:
    """Gemini's rule: 258 tokens up to 384 px a side, else 258 per 768 px crop."""
    from models.domain.image_tokens import ImageRule, image_tokens, sniff

    size = None
    if isinstance(data, str):
        try:
            size = sniff(base64.b64decode(data))
        except ValueError:
            raise RequestInvalid("inline_data.data is not valid base64") from None
    width, height = (size[1], size[2]) if size else (None, None)
    return image_tokens(ImageRule(kind="crops", tile=IMAGE_TOKENS), width, height)


def gemini_prompt(body: dict[str, Any], cached: Prompt | None = None) -> Prompt:
    """Read a generateContent body; with ``cached`` (an explicit cache) it extends that prefix."""
    b = _Builder()
    if cached is not None:
        if body.get("systemInstruction") or body.get("tools") or body.get("toolConfig"):
            raise RequestInvalid("CachedContent can not be used with GenerateContent request "
                                 "setting system_instruction, tools or tool_config. Proposed "
                                 "fix: move those values to CachedContent from GenerateContent "
                                 "request.")
        b.add("cached", cached.digest, cached.total)
        b.mark_prefix()
    else:
        read_prefix(b, body)
    last_user = read_contents(b, body.get("contents"), required=True)
    return b.finish(last_user)


def cache_prompt(body: dict[str, Any]) -> Prompt:
    """Read a cachedContents body: its tokens (no reply primer) and digest."""
    b = _Builder()
    read_prefix(b, body)
    read_contents(b, body.get("contents"), required=False)
    prompt = b.finish("")
    prompt.total = b.tokens
    return prompt
