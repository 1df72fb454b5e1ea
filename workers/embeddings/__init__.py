"""Embedding execution: the task, the service, packing and the embedding adapters."""
