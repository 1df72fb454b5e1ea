"""``sluice serve``: the OpenAI-compatible HTTP front door under uvicorn (``--factory``)."""

from __future__ import annotations

from typing import Annotated

import typer

#: The zero-argument factory uvicorn calls in each worker process; it reads SLUICE_* there.
FACTORY = "queues.http.app:from_env"


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

    typer.echo(f"sluicegate front door: base_url http://{host}:{port}/v1, "
               f"schema http://{host}:{port}/openapi.json", err=True)
    uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log, lifespan="on")
