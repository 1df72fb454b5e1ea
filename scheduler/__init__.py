"""Decisions: routing, admission, batching plans, and the budget governor's periodic jobs."""
