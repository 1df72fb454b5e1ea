"""Chaos scenarios: worker kills, broker and database outages, provider faults, bad input."""
