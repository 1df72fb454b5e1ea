"""Pure domain types: requests, usage, prices, cost, budgets, errors and settings; no I/O."""
