"""``sluice serve``: the OpenAI-compatible HTTP front door under uvicorn (``--factory``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

#: The zero-argument factory uvicorn calls in each worker process; it reads SLUICE_* there.
FACTORY = "queues.http.app:from_env"
#: The same, on embedded defaults: an in-process worker, the stand-in when no provider is set.
EMBEDDED_FACTORY = "ops.cli.serve:embedded_from_env"


def serve(
    host: Annotated[str, typer.Option(help="Listen address (loopback unless behind a proxy).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve POST /v1/chat/completions (point the openai SDK's base_url at http://HOST:PORT/v1)."""
    import uvicorn

    from models.domain.settings import load_settings

    factory = FACTORY
    if load_settings().broker.url.startswith("memory://"):
        # No broker server: tasks can only reach a worker inside this very process.
        factory, workers = EMBEDDED_FACTORY, 1
        typer.echo("embedded defaults (memory:// broker): one process with its own worker",
                   err=True)
    typer.echo(f"sluicegate front door: base_url http://{host}:{port}/v1, "
               f"schema http://{host}:{port}/openapi.json", err=True)
    uvicorn.run(factory, factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log, lifespan="on")


def embedded_from_env() -> Any:
    """The front door with an in-process api worker, a migrated SQLite ledger and, for providers
    with neither a key nor a base URL, the local stand-in (what ``sluice demo`` runs on)."""
    from models.domain.settings import load_settings
    from ops.db import upgrade
    from ops.embedded import embedded_worker
    from queues.http.app import create_app
    from queues.names import queues_of

    settings = load_settings()
    upgrade(settings.database.url)
    p = settings.providers
    if not all(key or url for key, url in ((p.openai_api_key, p.openai_base_url),
                                           (p.anthropic_api_key, p.anthropic_base_url),
                                           (p.google_api_key, p.google_base_url))):
        from workers.providers.standin import StandIn

        # Lives as long as the process: a daemon thread, like the worker below.
        standin = StandIn().start()
        updates = {}
        if not (p.openai_api_key or p.openai_base_url):
            updates["openai_base_url"] = standin.openai_base_url
        if not (p.anthropic_api_key or p.anthropic_base_url):
            updates["anthropic_base_url"] = standin.anthropic_base_url
        if not (p.google_api_key or p.google_base_url):
            updates["google_base_url"] = standin.gemini_base_url
        settings = settings.model_copy(update={"providers": p.model_copy(update=updates)})
    return create_app(settings, on_start=lambda door: embedded_worker(
        door.gateway.app, queues_of(backend="api")))
