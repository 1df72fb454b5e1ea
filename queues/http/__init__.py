"""The OpenAI-compatible HTTP front door (ASGI, Starlette): the same pipeline as ``submit()``."""
