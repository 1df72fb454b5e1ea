"""Execution: thin Celery tasks over plain services, and the provider adapters they call."""
