"""``sluice flower``: Flower for the project's Celery app, on loopback unless basic auth is set."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer


def flower_command(host: str, port: int, basic_auth: str | None,
                   extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``celery flower`` command line and the environment changes it runs with."""
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "flower",
           f"--address={host}", f"--port={port}"]
    env: dict[str, str] = {}
    if basic_auth:
        # Passed through the environment, not argv, so `ps` does not show the password.
        env["FLOWER_BASIC_AUTH"] = basic_auth
    else:
        # Loopback only (checked by the caller): the HTTP API answers without credentials,
        # which is what `curl localhost:5555/api/queues/length` and local scripts need.
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    return cmd + extra, env


def flower(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address; beyond loopback needs --basic-auth.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5555,
    basic_auth: Annotated[Optional[str], typer.Option(
        envvar="SLUICE_FLOWER_BASIC_AUTH", help="user:password (comma-separate several).")
    ] = None,
) -> None:
    """Start Flower for sluicegate's Celery app (broker from SLUICE_BROKER__URL).

    Flower switches task events on in the workers it sees (SLUICE_BROKER__TASK_EVENTS sends
    them from the start), so tasks of both lanes show up; the Broker tab lists every queue
    the running workers consume (interactive.* and async.*), or all four queues when no
    worker runs. Extra arguments after `--` go to Flower.
    Exit codes: Flower's own, or 2 for an unauthenticated non-loopback address.
    """
    from ops.cli.main import err_console
    from ops.cli.metrics import is_loopback
    from ops.cli.spend import EXIT_USAGE, fail

    if basic_auth is not None and ":" not in basic_auth:
        raise fail(err_console, "--basic-auth takes user:password", EXIT_USAGE)
    if not is_loopback(host) and not basic_auth:
        raise fail(err_console, f"refusing to start Flower on {host} without --basic-auth "
                   "user:password (or SLUICE_FLOWER_BASIC_AUTH): Flower can revoke tasks and "
                   "shut workers down. Keep the default --host 127.0.0.1 otherwise", EXIT_USAGE)
    cmd, env = flower_command(host, port, basic_auth, list(ctx.args))
    err_console.print(f"Flower on http://{host}:{port}/ "
                      f"({'basic auth' if basic_auth else 'loopback, API unauthenticated'})",
                      highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # Become Flower rather than wrap it: a supervisor's SIGTERM then reaches Flower itself
    # instead of leaving it running as an orphan, and its exit code is ours.
    os.execve(cmd[0], cmd, {**os.environ, **env})
