"""Operators' side: the admin CLI, the demo, Flower and Prometheus wiring, benchmarks."""
