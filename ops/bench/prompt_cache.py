"""Replay: a 4,000-token static system prompt shared by every request of one feature.

    python -m ops.bench.prompt_cache [--n 50] [--model claude-sonnet-4-6] [--gemini-scale 0.25]

Sends the same feature's requests through the real Anthropic and OpenAI adapters (official SDKs)
against the stand-in, which emulates both providers' prompt caching, and prints what the static
part's input cost per request, against the same requests sent with no caching (the floor).
Gemini rows (ops/bench/prompt_cache_gemini.py) send the prefix every second, minute and ten
minutes of simulated time with implicit caching, an explicit cache (its storage included) and
the worker's rule choosing; they need Redis (SLUICE_BENCH_REDIS_URL, default db 15 locally).
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from models.domain.catalogue import ModelSpec, load_catalogue
from models.domain.cost import cost_of
from models.domain.request import parse_request
from models.domain.usage import Usage
from ops.workload import style_guide
from workers.providers.base import ProviderCall
from workers.providers.shaping import static_tokens

_M = Decimal(1_000_000)


def component_prompt(target_tokens: int = 4000) -> str:
    """A UI-component generator's static system prompt of about ``target_tokens`` tokens."""
    from models.domain.tokens import count_text

    text, repeat = "", 1
    while count_text(text) < target_tokens:
        repeat += 4
        text = ("You generate React components that follow our design system.\n"
                + style_guide(repeat))
    return text


def static_input_cost(usage: Usage, static: int, model: ModelSpec) -> Decimal:
    """The input cost of the static prefix's tokens within ``usage``."""
    p = model.price
    read = min(usage.cache_read, static)
    write5 = min(usage.cache_write_5m, static - read)
    write1 = min(usage.cache_write_1h, static - read - write5)
    rest = static - read - write5 - write1
    return (read * p.cache_read + write5 * p.cache_write_5m + write1 * p.cache_write_1h
            + rest * p.input) / _M


def replay(provider: Any, model: ModelSpec, system: str, n: int, cached: bool) -> list[Usage]:
    """``n`` requests of one feature, differing only in the user turn."""
    out = []
    for i in range(n):
        data: dict[str, Any] = {"team": "web", "feature": "ui-components", "max_tokens": 200,
                                "model": model.name, "static": {"system": system},
                                "messages": [{"role": "user", "content":
                                              f"Build a pricing card component, variant {i}."}]}
        if not cached:  # the anti-pattern: a per-request id before the static part
            data["static"] = {"system": f"[request {i}]\n{system}"}
        call = ProviderCall(request=parse_request(data), model=model, cache_scope="org/web/ui")
        out.append(provider.complete(call).usage)
    return out


def run(n: int, anthropic_model: str, openai_model: str) -> list[dict[str, Any]]:
    """Replay against both providers; one row of figures per provider."""
    from workers.providers.anthropic_messages import AnthropicMessagesProvider
    from workers.providers.openai_chat import OpenAIChatProvider
    from workers.providers.standin import StandIn

    cat = load_catalogue()
    system = component_prompt()
    rows = []
    with StandIn() as standin:
        for name, model_name in (("anthropic", anthropic_model), ("openai", openai_model)):
            model = cat.get(model_name)
            prov: Any = (AnthropicMessagesProvider(api_key="bench",
                                                   base_url=standin.anthropic_base_url)
                         if name == "anthropic" else
                         OpenAIChatProvider(api_key="bench", base_url=standin.openai_base_url))
            static = static_tokens(parse_request({"team": "w", "feature": "u",
                                                  "static": {"system": system},
                                                  "messages": [{"role": "user",
                                                                "content": "x"}]}).static)
            with_cache = replay(prov, model, system, n, cached=True)
            floor = replay(prov, model, system, n, cached=False)
            prov.close()
            uncached_static = static * model.price.input / _M
            first = static_input_cost(with_cache[0], static, model)
            steady = [static_input_cost(u, static, model) for u in with_cache[n // 2:]]
            steady_avg = sum(steady) / len(steady)
            floor_avg = sum(static_input_cost(u, static, model) for u in floor) / len(floor)
            total_cached = sum(cost_of(u, model) for u in with_cache)
            total_floor = sum(cost_of(u, model) for u in floor)
            rows.append({"provider": name, "model": model_name, "static_tokens": static,
                         "first_vs_uncached": first / uncached_static,
                         "steady_vs_uncached": steady_avg / uncached_static,
                         "floor_vs_uncached": floor_avg / uncached_static,
                         "static_saving": 1 - steady_avg / uncached_static,
                         "bill_ratio": total_cached / total_floor})
    return rows


def main() -> None:
    """Print the static part's cost per request, first and steady state, against the floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--model", default="claude-sonnet-4-6")
    parser.add_argument("--openai-model", default="gpt-4o")
    parser.add_argument("--gemini-models", default="gemini-2.5-flash,gemini-2.5-pro",
                        help="comma-separated; empty for none")
    parser.add_argument("--gemini-scale", type=float, default=0.25,
                        help="fraction of each Gemini run's requests (1: 600 / 240 / 48, "
                             "about 5 minutes here; 0.25: about 1 minute)")
    args = parser.parse_args()
    rows = run(args.n, args.model, args.openai_model)
    table = Table(title=f"static-prefix input cost, {args.n} requests per run "
                        "(1.00 = the same tokens uncached)")
    for col in ("provider", "model", "static tokens", "first request", "steady state",
                "volatile prefix", "static input saved", "bill vs volatile"):
        table.add_column(col, justify="left" if col in ("provider", "model") else "right")
    for r in rows:
        table.add_row(r["provider"], r["model"], str(r["static_tokens"]),
                      f"{r['first_vs_uncached']:.2f}x", f"{r['steady_vs_uncached']:.2f}x",
                      f"{r['floor_vs_uncached']:.2f}x", f"{r['static_saving'] * 100:.1f}%",
                      f"{r['bill_ratio']:.2f}x")
    Console(width=140).print(table)
    print("steady state = mean of the second half; volatile prefix = the same requests with a "
          "per-request id placed before the static part (the anti-pattern), which defeats "
          "caching and, on Anthropic, pays the 1.25x write on every request")
    if args.gemini_models:
        gemini_table(args.gemini_models.split(","), args.gemini_scale)


def gemini_table(names: list[str], scale: float) -> None:
    """Print the Gemini rows: per reuse interval, implicit vs explicit (storage in) vs rule."""
    from ops.bench.prompt_cache_gemini import rows as gemini_rows

    cat = load_catalogue()
    found = gemini_rows([cat.get(n) for n in names], component_prompt(), scale)
    table = Table(title="Gemini static-prefix cost per request at steady state (1.00 = "
                        "uncached), by reuse interval")
    for col in ("model", "reused every", "mode", "static tokens", "steady state",
                "whole run", "storage share", "explicit from request"):
        table.add_column(col, justify="left" if col in ("model", "reused every", "mode")
                         else "right")
    for r in found:
        table.add_row(r["model"], r["interval"], r["mode"], str(r["static_tokens"]),
                      f"{r['steady_vs_uncached']:.3f}x", f"{r['run_vs_uncached']:.3f}x",
                      f"{r['storage_share'] * 100:.1f}%",
                      "-" if r["explicit_from"] is None else str(r["explicit_from"] + 1))
    Console(width=140).print(table)
    print("implicit = Gemini's automatic caching only (the stand-in keeps an implicit entry "
          "300 s, an assumption: Google publishes no lifetime); explicit = a cachedContents "
          "entry from the first request (1 h TTL, renewed), its storage per token-hour "
          "included; rule = the worker's decision from the reuse it sees (README: explicit "
          "context caching); whole run = every request, creation and storage included")


if __name__ == "__main__":
    main()
