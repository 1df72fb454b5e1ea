"""Image sizes read from their headers, and each provider's published rule for their tokens."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

#: Media types both providers take.
MEDIA_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")


def sniff(data: bytes) -> tuple[str, int, int] | None:
    """``(media type, width, height)`` from an image's header, or None when unreadable."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return "image/png", w, h
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return "image/gif", w, h
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg(data)
    except (struct.error, IndexError):
        return None
    return None


def _webp(data: bytes) -> tuple[str, int, int] | None:
    kind = data[12:16]
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return "image/webp", w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return "image/webp", w, h
    if kind == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return "image/webp", w, h
    return None


def _jpeg(data: bytes) -> tuple[str, int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        # Start-of-frame markers (baseline, progressive, ...) carry the size; C4/C8/CC do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return "image/jpeg", w, h
        i += 2 + length
    return None


@dataclass(frozen=True)
class ImageRule:
    """How one model counts an image: OpenAI's tiles or patches, or Anthropic's area rule."""

    kind: str = "none"  # tiles | patches | area | none (the model sees no images)
    base: int = 85  # tiles: tokens every image costs (and all a detail=low image costs)
    tile: int = 170  # tiles: tokens per 512 px tile
    multiplier: float = 1.0  # patches: billed tokens per 32 px patch


#: Anthropic: an image is resized to at most 1568 px on its long edge and about 1,600
#: tokens (1.2 megapixels: 1092 x 1092 is their largest square, ~1590 tokens).
_ANTHROPIC_EDGE, _ANTHROPIC_PIXELS = 1568, 1_200_000
_PATCH, _MAX_PATCHES = 32, 1536


def image_tokens(rule: ImageRule, width: int | None, height: int | None,
                 detail: str = "auto") -> int:
    """Tokens one image costs under ``rule``; an unknown size (an https URL we never fetch)
    counts as the largest the rule can bill, so a reservation stays an upper bound."""
    if rule.kind == "tiles":
        if detail == "low":
            return rule.base
        w, h = (width, height) if width and height else (2048, 768)  # the most tiles: 4 x 2
        return rule.base + rule.tile * _tiles(w, h)
    if rule.kind == "patches":
        patches = _patches(width, height) if width and height else _MAX_PATCHES
        return math.ceil(patches * rule.multiplier)
    if rule.kind == "area":
        if not (width and height):
            return _ANTHROPIC_PIXELS // 750
        w, h = _fit_anthropic(width, height)
        return math.ceil(w * h / 750)
    return 0


def _tiles(w: int, h: int) -> int:
    # OpenAI: fit in a 2048 px square, then scale down so the short side is 768 px.
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = int(w * scale), int(h * scale)
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = int(w * scale), int(h * scale)
    return math.ceil(w / 512) * math.ceil(h / 512)


def _patches(w: int, h: int) -> int:
    # OpenAI's patch models: 32 px patches, at most 1536 (the image is scaled down to fit).
    patches = math.ceil(w / _PATCH) * math.ceil(h / _PATCH)
    if patches <= _MAX_PATCHES:
        return patches
    shrink = math.sqrt(_PATCH * _PATCH * _MAX_PATCHES / (w * h))
    sw, sh = w * shrink, h * shrink
    # Then narrowed until a whole number of patches fits across.
    sw_fit = sw * (math.floor(sw / _PATCH) / (sw / _PATCH))
    sh_fit = sh * (sw_fit / sw)
    return min(math.ceil(sw_fit / _PATCH) * math.ceil(sh_fit / _PATCH), _MAX_PATCHES)


def _fit_anthropic(w: int, h: int) -> tuple[int, int]:
    scale = min(1.0, _ANTHROPIC_EDGE / max(w, h), math.sqrt(_ANTHROPIC_PIXELS / (w * h)))
    return max(1, int(w * scale)), max(1, int(h * scale))
