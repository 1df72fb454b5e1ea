"""Generate the shipped synthetic trace of a product-description generator.

    python -m ops.traces.make_trace [--n 500] [--seed 2026] [--out FILE]

About 80 % short work (title rephrasings, category classification, attribute extraction,
yes/no support answers) and 20 % long SEO articles, from four teams and five features. Products
are drawn with a Zipf-like popularity, so popular products come back (the same title rephrased
again, the same article regenerated): the repeats a response cache exists for. The static
prompts (style guide, extraction guide with few-shot examples) are defined once in the file.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from ops.replay.trace import write_trace
from ops.workload import style_guide

DEFAULT_OUT = Path(__file__).resolve().parent / "product_descriptions.jsonl"
_ADJECTIVES = ["wireless", "organic", "stainless", "compact", "ergonomic", "waterproof",
               "vintage", "smart", "lightweight", "handmade", "heavy-duty", "portable"]
_NOUNS = ["headphones", "coffee grinder", "yoga mat", "desk lamp", "backpack", "water bottle",
          "chef knife", "phone stand", "garden hose", "running shoes", "blender", "tent",
          "keyboard", "throw blanket", "air fryer", "drill set"]
_CATEGORIES = ["electronics", "kitchen", "sports", "home", "garden", "tools", "apparel"]
_COLORS = ["black", "white", "sage green", "navy", "terracotta", "graphite", "sand"]
_SIZES = ["small", "medium", "large", "12 inch", "1.5 liter", "XL", "one size"]
_MATERIALS = ["bamboo", "stainless steel", "recycled PET", "oak", "aluminium", "cotton"]
_FIELDS = ["material", "color", "size", "weight", "care instructions", "country of origin",
           "warranty", "power source", "capacity", "dimensions"]


def extraction_guide() -> str:
    """The attribute extractor's static system prompt: field rules, long enough to cache."""
    lines = ["You extract structured attributes from product listings. Reply with JSON only."]
    for rule in range(60):
        field = _FIELDS[rule % len(_FIELDS)]
        lines.append(f"Rule {rule + 1}: report `{field}` exactly as written in the listing; use "
                     f"null when the listing does not state the {field}; never infer it from "
                     "the product category.")
    return "\n".join(lines)


def texts() -> dict[str, str]:
    """The shared static texts every request refers to by name."""
    guide = style_guide()
    return {
        "style-guide": guide,
        "classify-rules": "Classify the product into exactly one category: "
                          + ", ".join(_CATEGORIES) + ". Answer with the category only.",
        "extraction-guide": extraction_guide(),
        "support-guide": guide + "\nYou answer customer questions for the store in one short "
                                 "sentence. Answer yes or no first.",
    }


def catalogue(rng: random.Random, size: int = 192) -> list[str]:
    """``size`` distinct products, most popular first."""
    names = sorted({f"{a} {n}" for a in _ADJECTIVES for n in _NOUNS})
    rng.shuffle(names)
    return names[:size]


def pick(rng: random.Random, products: list[str]) -> str:
    """A product with Zipf-like popularity (weight 1/rank^0.8): the head repeats often."""
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(products))]
    return rng.choices(products, weights=weights, k=1)[0]


def request(rng: random.Random, item: str, roll: float) -> dict[str, Any]:
    """One request of the feature that ``roll`` (uniform in [0, 1)) selects."""
    ref = {"$ref": "style-guide"}
    if roll < 0.30:
        return {"team": "catalog", "feature": "title-rephrase", "lane": "interactive",
                "static": {"system": ref}, "max_tokens": 40, "model": "auto",
                "messages": [{"role": "user", "content":
                              f"Rephrase this product title in under ten words: {item}"}]}
    if roll < 0.50:
        return {"team": "catalog", "feature": "category-classify", "lane": "interactive",
                "static": {"system": {"$ref": "classify-rules"}}, "max_tokens": 8,
                "model": "auto", "messages": [{"role": "user", "content": f"Product: {item}"}]}
    if roll < 0.65:
        listing = (f"{item.title()}, {rng.choice(_COLORS)}, {rng.choice(_SIZES)}, made of "
                   f"{rng.choice(_MATERIALS)}")
        shot = [{"role": "user", "content": "Extract attributes: Oak Cutting Board, sand, large"},
                {"role": "assistant", "content":
                 '{"material": "oak", "color": "sand", "size": "large"}'}]
        return {"team": "merchandising", "feature": "attribute-extract", "lane": "async",
                "static": {"system": {"$ref": "extraction-guide"}, "few_shot": shot},
                "max_tokens": 60, "model": "auto", "response_format": "json",
                "messages": [{"role": "user", "content": f"Extract attributes: {listing}"}]}
    if roll < 0.80:
        question = rng.choice(["dishwasher safe", "easy to clean", "suitable as a gift",
                               "covered by a warranty"])
        return {"team": "support", "feature": "support-faq", "lane": "interactive",
                "static": {"system": {"$ref": "support-guide"}}, "max_tokens": 60,
                "model": "auto", "messages": [{"role": "user", "content":
                                               f"Is the {item} {question}? Yes or no."}]}
    return {"team": "marketing", "feature": "seo-article", "lane": "async",
            "static": {"system": ref}, "max_tokens": 900, "model": "auto",
            "messages": [{"role": "user", "content":
                          f"Write a 600-word SEO article about the {item}. Analyze the buyer's "
                          "needs step by step, design an outline with headings, then write "
                          "every section in detail."}]}


def make_requests(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` trace requests: 80 % short work, 20 % long articles, popular products repeating."""
    rng = random.Random(seed)
    products = catalogue(rng)
    users = [f"u{i:02d}" for i in range(30)]
    out = []
    for _ in range(n):
        data = request(rng, pick(rng, products), rng.random())
        # A few heavy users drive most traffic, as in any internal tool.
        data["user"] = rng.choices(users, weights=[1.0 / (i + 1) for i in range(30)])[0]
        out.append(data)
    return out


def main(argv: list[str] | None = None) -> None:
    """Write the trace and print what it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    requests = make_requests(args.n, args.seed)
    header = (f"synthetic product-description trace: {args.n} requests, seed {args.seed}\n"
              f"regenerate: python -m ops.traces.make_trace --n {args.n} --seed {args.seed}")
    write_trace(args.out, texts(), requests, header=header)
    features: dict[str, int] = {}
    for r in requests:
        features[r["feature"]] = features.get(r["feature"], 0) + 1
    distinct = len({(r["feature"], repr(r["messages"])) for r in requests})
    print(f"wrote {len(requests)} requests to {args.out}: {features}; "
          f"{len(requests) - distinct} exact repeats")


if __name__ == "__main__":
    main()
