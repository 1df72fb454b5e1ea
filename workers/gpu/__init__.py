"""The GPU worker's engine side: one in-process vLLM engine, lanes, lifecycle and Celery hooks."""
