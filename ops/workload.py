"""A synthetic product-description workload: many short rephrasings, a few long articles."""

from __future__ import annotations

import random
from typing import Any

_ADJ = ["wireless", "organic", "stainless", "compact", "ergonomic", "waterproof", "vintage",
        "smart", "lightweight", "handmade", "heavy-duty", "portable", "eco-friendly", "premium"]
_NOUN = ["headphones", "coffee grinder", "yoga mat", "desk lamp", "backpack", "water bottle",
         "chef knife", "phone stand", "garden hose", "running shoes", "blender", "tent",
         "keyboard", "throw blanket", "air fryer", "drill set"]
_CATEGORIES = ["electronics", "kitchen", "sports", "home", "garden", "tools", "apparel"]
_STYLE_RULES = [
    "Write in a warm, confident and concrete voice; never use superlatives you cannot back up.",
    "Mention the primary material and one measurable benefit in every description.",
    "Avoid medical, legal or safety claims unless they appear in the product data verbatim.",
    "Use American English spelling, sentence case for titles, and no trailing punctuation.",
    "Prefer short words; keep sentences under twenty words; avoid exclamation marks.",
    "Never mention competitors, prices, discounts or shipping times.",
    "Keep brand names exactly as given, including capitalization and trademarks.",
]


def style_guide(repeat: int = 12) -> str:
    """A long, static system prompt: the part provider prompt caching makes cheap."""
    lines = ["You are the copywriter of an online store. Follow the style guide strictly."]
    for i in range(repeat):
        for j, rule in enumerate(_STYLE_RULES):
            lines.append(f"Rule {i * len(_STYLE_RULES) + j + 1}: {rule}")
    return "\n".join(lines)


def product(rng: random.Random) -> str:
    """A product title drawn from a small vocabulary, so some titles repeat."""
    return f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"


def demo_requests(n: int = 200, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` request dicts: 80 % short rephrase/classify work, 20 % long SEO articles."""
    rng = random.Random(seed)
    guide = style_guide()
    out: list[dict[str, Any]] = []
    for i in range(n):
        roll = rng.random()
        item = product(rng)
        if roll < 0.45:
            out.append({"team": "catalog", "feature": "title-rephrase", "lane": "interactive",
                        "static": {"system": guide}, "max_tokens": 40, "model": "auto",
                        "messages": [{"role": "user", "content":
                                      f"Rephrase this product title in under ten words: {item}"}]})
        elif roll < 0.70:
            out.append({"team": "catalog", "feature": "category-classify", "lane": "interactive",
                        "static": {"system": "Classify the product into exactly one category: "
                                   + ", ".join(_CATEGORIES) + ". Answer with the category only."},
                        "max_tokens": 8, "model": "auto",
                        "messages": [{"role": "user", "content": f"Product: {item}"}]})
        elif roll < 0.80:
            out.append({"team": "support", "feature": "support-faq", "lane": "interactive",
                        "static": {"system": guide + "\nAnswer customer questions briefly."},
                        "max_tokens": 120, "model": "claude-haiku-4-5",
                        "messages": [{"role": "user", "content":
                                      f"Is the {item} easy to clean?"}]})
        else:
            out.append({"team": "marketing", "feature": "seo-article", "lane": "async",
                        "static": {"system": guide}, "max_tokens": 900, "model": "auto",
                        "messages": [{"role": "user", "content":
                                      f"Write a 600-word SEO article about the {item}. Analyze "
                                      "the buyer's needs step by step, design an outline with "
                                      "headings, then write every section in detail."}]})
        out[-1]["user"] = f"u{rng.randrange(40)}"
        out[-1]["request_id"] = f"demo-{seed}-{i:05d}"
    return out
