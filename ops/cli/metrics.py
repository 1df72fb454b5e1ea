"""``sluice metrics serve | dump``: expose the ledger's figures to Prometheus."""

from __future__ import annotations

import base64
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Optional

import typer

metrics_app = typer.Typer(help="Prometheus metrics: requests, cost and savings, cache hit "
                               "rates, budgets, queue depth, latency.", no_args_is_help=True)

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def guarded(app: Wsgi, *, basic_auth: str | None = None, token: str | None = None) -> Wsgi:
    """``app`` behind HTTP basic auth and/or a bearer token (either one lets a request in)."""
    accepted = []
    if basic_auth:
        accepted.append("Basic " + base64.b64encode(basic_auth.encode()).decode())
    if token:
        accepted.append("Bearer " + token)
    if not accepted:
        return app

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "")
        # compare_digest on every candidate: the time taken does not reveal which one is close.
        ok = [hmac.compare_digest(given.encode(), a.encode()) for a in accepted]
        if any(ok):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                            ("WWW-Authenticate", 'Basic realm="sluicegate"')])
        return [b"unauthorized\n"]

    return wrapper


def check_bind(host: str, basic_auth: str | None, token: str | None) -> str | None:
    """Why binding ``host`` is refused, or None when it is allowed."""
    if basic_auth is not None and ":" not in basic_auth:
        return "--basic-auth takes user:password"
    if not is_loopback(host) and not (basic_auth or token):
        return (f"refusing to serve metrics on {host} without authentication: spend per team "
                "and feature is not public. Add --basic-auth user:password or --token TOKEN "
                "(or SLUICE_METRICS_BASIC_AUTH / SLUICE_METRICS_TOKEN), or keep the default "
                "--host 127.0.0.1")
    return None


@metrics_app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9464,
    host: Annotated[str, typer.Option(help="Address; beyond loopback needs --basic-auth or "
                                      "--token.")] = "127.0.0.1",
    basic_auth: Annotated[Optional[str], typer.Option(
        envvar="SLUICE_METRICS_BASIC_AUTH", help="user:password required from scrapers.")] = None,
    token: Annotated[Optional[str], typer.Option(
        envvar="SLUICE_METRICS_TOKEN", help="Bearer token required from scrapers.")] = None,
    cache_seconds: Annotated[float, typer.Option(
        help="Reuse one read of the ledger for this long.")] = 5.0,
) -> None:
    """Serve /metrics (prometheus_client's WSGI app) until interrupted.

    Exit codes: 0 stopped, 1 the port could not be bound, 2 bad usage or an unauthenticated
    non-loopback address.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    from models.domain.settings import load_settings
    from ops.cli.main import err_console
    from ops.cli.spend import EXIT_FAILED, EXIT_USAGE, fail
    from ops.metrics import registry_for

    refused = check_bind(host, basic_auth, token)
    if refused:
        raise fail(err_console, refused, EXIT_USAGE)

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass  # one line per scrape would drown the logs

    registry = registry_for(load_settings(), cache_s=cache_seconds)
    app = guarded(make_wsgi_app(registry), basic_auth=basic_auth, token=token)
    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    except OSError as exc:
        raise fail(err_console, f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick "
                   "another --port", EXIT_FAILED) from None
    auth = "basic auth" if basic_auth else "bearer token" if token else "no auth (loopback)"
    err_console.print(f"serving metrics on http://{host}:{port}/metrics ({auth}); Ctrl-C stops",
                      highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@metrics_app.command("dump")
def dump() -> None:
    """Print the metrics once in the Prometheus text format (what a scrape would get)."""
    from prometheus_client import generate_latest

    from models.domain.settings import load_settings
    from ops.metrics import registry_for

    typer.echo(generate_latest(registry_for(load_settings(), cache_s=0)).decode(), nl=False)
