"""GPU pool tooling: the tiny local model that tests and benchmarks run vLLM with."""
