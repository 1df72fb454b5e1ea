"""Images in both wire formats, read and counted by each provider's published rule."""

from __future__ import annotations

from typing import Any

import pydantic

from models.domain.content import ImagePart
from models.domain.image_tokens import MEDIA_TYPES, ImageRule, image_tokens
from workers.providers.standin.errors import RequestInvalid

_AREA = ImageRule(kind="area")


def _part(fields: dict[str, Any], where: str) -> ImagePart:
    try:
        return ImagePart.model_validate(fields)
    except pydantic.ValidationError as exc:
        raise RequestInvalid(f"{where}: {exc.errors()[0].get('msg', 'invalid image')}",
                             param=where) from None


def openai_image_tokens(image_url: Any, rule: ImageRule, where: str) -> int:
    """Tokens of an ``image_url`` part (an https URL is never fetched here: it counts at the
    largest size the rule bills, as the gateway reserves it)."""
    if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
        raise RequestInvalid(f"{where}.image_url.url is required", param=where)
    detail = image_url.get("detail", "auto")
    if detail not in ("auto", "low", "high"):
        raise RequestInvalid(f"{where}.image_url.detail must be auto, low or high", param=where)
    part = _part({"url": image_url["url"], "detail": detail}, where)
    return image_tokens(rule, part.width, part.height, detail)


def anthropic_image_tokens(source: Any, where: str) -> int:
    """Tokens of an ``image`` block's source: base64 bytes, or a URL (counted at the largest)."""
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        raise RequestInvalid(f"{where}.source: type must be 'base64' or 'url'")
    if source["type"] == "url":
        part = _part({"url": source.get("url")}, f"{where}.source")
    else:
        if source.get("media_type") not in MEDIA_TYPES:
            raise RequestInvalid(f"{where}.source.media_type: must be one of "
                                 f"{', '.join(MEDIA_TYPES)}")
        part = _part({"data": source.get("data"), "media_type": source["media_type"]},
                     f"{where}.source")
    return image_tokens(_AREA, part.width, part.height)
