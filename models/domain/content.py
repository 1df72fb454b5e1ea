"""Content parts of a turn: text and images (an https URL, or bytes carried as base64)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.domain.image_tokens import MEDIA_TYPES, sniff

#: Base64 characters of image data one request may carry (the front door's body limit).
MAX_IMAGE_CHARS = 16 * 1024 * 1024
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*?;base64,(?P<data>.*)$",
                       re.DOTALL)


class TextPart(BaseModel):
    """A piece of text inside a turn that also holds images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text"] = "text"
    text: str = Field(max_length=2_000_000)


class ImagePart(BaseModel):
    """An image: an https ``url`` the provider fetches, or ``data`` (base64) with its type.

    ``sha256`` (of the bytes, or of the URL) is what the response cache keys on; the bytes
    themselves are never logged (``repr`` leaves them out) or stored. ``width``/``height``
    come from the image's header; for a URL they are unknown and the image is counted at the
    largest size the provider bills.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["image"] = "image"
    url: str | None = Field(default=None, max_length=8192)
    data: str | None = Field(default=None, repr=False, max_length=MAX_IMAGE_CHARS)
    media_type: str | None = None
    detail: Literal["auto", "low", "high"] = "auto"
    width: int | None = Field(default=None, ge=1, le=100_000)
    height: int | None = Field(default=None, ge=1, le=100_000)
    sha256: str = ""

    @model_validator(mode="before")
    @classmethod
    def _read(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = dict(raw)
        url = out.get("url")
        if isinstance(url, str) and url.startswith("data:"):
            found = _DATA_URL.match(url)
            if found is None:
                raise ValueError("an image data URL must look like data:image/png;base64,...")
            out.update(url=None, data=found.group("data"), media_type=found.group("type"))
        if (out.get("url") is None) == (out.get("data") is None):
            raise ValueError("an image needs exactly one of url (https) or data (base64)")
        if out.get("url") is not None:
            if not str(out["url"]).startswith("https://"):
                raise ValueError("an image url must be https:// or a data: URL")
            # Nothing a caller says about an image is taken on trust: the size and hash are
            # what reservations and the cache key rest on.
            out.update(sha256=hashlib.sha256(str(out["url"]).encode()).hexdigest(),
                       width=None, height=None, media_type=None)
            return out
        out.update(_decoded(str(out["data"]), out.get("media_type")))
        return out

    def __repr__(self) -> str:
        return (f"ImagePart({'url' if self.url else self.media_type}, "
                f"{self.width}x{self.height}, sha256={self.sha256[:12]})")

    def data_url(self) -> str:
        """The image as OpenAI takes it: its URL, or a ``data:`` URL of its bytes."""
        return self.url or f"data:{self.media_type};base64,{self.data}"


def _decoded(data: str, declared: Any) -> dict[str, Any]:
    if len(data) > MAX_IMAGE_CHARS:
        raise ValueError(f"an image's data is over {MAX_IMAGE_CHARS} base64 characters")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image's data is not valid base64") from None
    found = sniff(raw)
    if found is None:
        raise ValueError(f"an image's data is not a PNG, JPEG, GIF or WebP image "
                         f"(those are {', '.join(MEDIA_TYPES)})")
    media_type, width, height = found
    if declared not in (None, media_type):
        raise ValueError(f"an image declared as {declared} holds {media_type} data")
    return {"media_type": media_type, "width": width, "height": height,
            "sha256": hashlib.sha256(raw).hexdigest()}


ContentPart = TextPart | ImagePart
