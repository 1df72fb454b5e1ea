"""Images: sizes read from their headers, each provider's token rule, and what is never kept."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from models.domain.catalogue import load_catalogue
from models.domain.errors import ValidationError
from models.domain.image_tokens import ImageRule, image_tokens, sniff
from models.domain.request import parse_request
from models.domain.tokens import count_request

CAT = load_catalogue()
TILES = ImageRule(kind="tiles", base=85, tile=170)
PATCHES = ImageRule(kind="patches", multiplier=1.62)
AREA = ImageRule(kind="area")


def encoded(width: int, height: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "media"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                             ("GIF", "image/gif"), ("WEBP", "image/webp")])
def test_sizes_come_from_the_header_of_each_format(fmt: str, media: str) -> None:
    assert sniff(encoded(640, 333, fmt)) == (media, 640, 333)
    assert sniff(b"not an image at all") is None


@pytest.mark.parametrize(("rule", "size", "detail", "tokens"), [
    # OpenAI's published examples: 1024 px square high = 765; 2048 x 4096 high = 1105; low = 85.
    (TILES, (1024, 1024), "high", 765), (TILES, (2048, 4096), "high", 1105),
    (TILES, (4096, 8192), "low", 85), (TILES, (512, 512), "auto", 255),
    # Patches: 1024 px square is 1024 patches; 1800 x 2400 shrinks to 1452 (x the multiplier).
    (PATCHES, (1024, 1024), "auto", 1659), (PATCHES, (1800, 2400), "auto", 2353),
    # Anthropic: width x height / 750, after resizing to at most 1568 px and ~1.15 MP.
    (AREA, (1092, 1092), "auto", 1590), (AREA, (200, 200), "auto", 54),
    (AREA, (4000, 3000), "auto", 1598), (AREA, (1568, 400), "auto", 837),
])
def test_each_providers_published_rule(rule: ImageRule, size: tuple[int, int], detail: str,
                                       tokens: int) -> None:
    assert image_tokens(rule, *size, detail) == tokens


def test_an_unknown_size_counts_as_the_largest_the_rule_bills() -> None:
    for rule in (TILES, PATCHES, AREA):
        worst = image_tokens(rule, None, None)
        assert all(image_tokens(rule, w, h) <= worst
                   for w, h in [(64, 64), (768, 2048), (2048, 768), (1568, 1568), (8000, 300),
                                (5000, 5000), (1024, 1024)])


def image_request(data: bytes, detail: str = "auto") -> dict[str, object]:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"team": "t", "feature": "f", "messages": [{"role": "user", "parts": [
        {"type": "text", "text": "Describe the product"},
        {"type": "image", "url": url, "detail": detail}]}]}


def test_a_data_url_is_read_hashed_and_counted_by_the_routed_models_rule() -> None:
    r = parse_request(image_request(encoded(1024, 1024)))
    (image,) = r.messages[0].images
    assert (image.width, image.height, image.media_type) == (1024, 1024, "image/png")
    assert len(image.sha256) == 64 and r.messages[0].content == "Describe the product"
    text_only = count_request(parse_request({**image_request(b""), "messages": [
        {"role": "user", "content": "Describe the product"}]}))
    assert count_request(r, CAT.get("gpt-4o")) == text_only + 765
    assert count_request(r, CAT.get("claude-haiku-4-5")) == text_only + 1399


def test_image_bytes_never_show_in_a_repr_or_an_error() -> None:
    data = encoded(64, 64)
    r = parse_request(image_request(data))
    secret = base64.b64encode(data).decode()
    assert secret[20:60] not in repr(r) and secret[20:60] not in str(r.messages[0])
    with pytest.raises(ValidationError) as exc:
        parse_request(image_request(b"\x89PNG but broken" + data[30:]))
    assert secret[40:80] not in exc.value.message and exc.value.field.startswith("messages")


def test_what_a_caller_says_about_an_image_is_not_taken_on_trust() -> None:
    data = base64.b64encode(encoded(2000, 1000)).decode()
    r = parse_request({"team": "t", "feature": "f", "messages": [{"role": "user", "parts": [
        {"type": "image", "data": data, "width": 1, "height": 1, "sha256": "0" * 64}]}]})
    (image,) = r.messages[0].images
    assert (image.width, image.height) == (2000, 1000) and image.sha256 != "0" * 64
    # Off the queue and read again, the same image.
    again = parse_request(r.model_dump(mode="json"))
    assert again.messages[0].images == r.messages[0].images


@pytest.mark.parametrize("part", [
    {"type": "image", "url": "http://plain.example/x.png"},
    {"type": "image", "url": "data:image/png;base64,!!notbase64!!"},
    {"type": "image", "data": base64.b64encode(b"GIF89a" + b"\0" * 8).decode(),
     "media_type": "image/png"},
    {"type": "image"},
])
def test_bad_images_are_refused_naming_messages(part: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_request({"team": "t", "feature": "f",
                       "messages": [{"role": "user", "parts": [part]}]})
    assert exc.value.field.startswith("messages.0")


def test_images_count_toward_the_request_size_limit() -> None:
    big = "A" * (9 * 1024 * 1024)  # two of these pass the per-image check, not together
    with pytest.raises(ValidationError) as exc:
        parse_request({"team": "t", "feature": "f", "messages": [{"role": "user", "parts": [
            {"type": "image", "data": big}, {"type": "image", "data": big}]}]})
    assert exc.value.field.startswith("messages")
