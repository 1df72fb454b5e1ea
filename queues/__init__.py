"""Transport: the Celery app factory, queue names, message envelopes and the producer API."""
