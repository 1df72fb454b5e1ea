"""Pure rules of packing: cut a request into provider calls, split a call's bill by caller."""

from __future__ import annotations

from collections.abc import Sequence


def chunks(tokens: Sequence[int], max_items: int, max_tokens: int) -> list[range]:
    """Consecutive ranges of items, each within a call's item and token limits (one item over
    the token limit alone gets a call of its own: the provider judges it)."""
    out: list[range] = []
    start, used = 0, 0
    for i, n in enumerate(tokens):
        if i > start and (i - start >= max_items or used + n > max_tokens):
            out.append(range(start, i))
            start, used = i, 0
        used += n
    if start < len(tokens):
        out.append(range(start, len(tokens)))
    return out


def split_tokens(billed: int, counts: Sequence[int]) -> list[int]:
    """Each member's share of a shared call's ``billed`` tokens: its own count when the
    provider agrees with ours (the usual case), else ``billed`` in proportion to the counts
    (largest remainder, so the shares add up to exactly what the provider billed)."""
    total = sum(counts)
    if total == billed or not counts:
        return list(counts)
    if total == 0:
        shares = [billed // len(counts)] * len(counts)
        for i in range(billed - sum(shares)):
            shares[i] += 1
        return shares
    shares = [billed * c // total for c in counts]
    # Integer arithmetic: the remainders decide who gets the tokens the floors left over.
    order = sorted(range(len(counts)), key=lambda i: (-(billed * counts[i] % total), i))
    for i in order[:billed - sum(shares)]:
        shares[i] += 1
    return shares
