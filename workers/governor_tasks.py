"""Periodic (beat) tasks of the budget governor."""
