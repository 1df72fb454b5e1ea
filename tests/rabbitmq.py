"""A RabbitMQ virtual host of its own for a test run (the machine's broker, port 5672)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.services import need, reachable, run_token


def rabbitmq_admin_url() -> str:
    """The broker a test run uses (SLUICE_TEST_RABBITMQ_URL, default guest on 127.0.0.1)."""
    return os.environ.get("SLUICE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


def _ctl(*args: str) -> str:
    proc = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def scratch_vhost() -> Iterator[str]:
    """A fresh vhost guest may use, deleted afterwards; yields the broker URL of it.

    A vhost per run: queues, exchanges and messages of concurrent runs never meet.
    """
    base = rabbitmq_admin_url().rstrip("/")
    if not reachable(base, 5672):
        need("RabbitMQ", f"nothing listens at {base.split('@')[-1]}")
    if shutil.which("rabbitmqctl") is None:
        need("rabbitmqctl", "a vhost per test run is made with it (Debian's rabbitmq-server)")
    name = f"sluice_test_{run_token()}"
    user = base.split("//", 1)[1].split(":", 1)[0]
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield f"{base}/{name}"
    finally:
        _ctl("delete_vhost", name)


def queue_types(vhost_url: str) -> dict[str, str]:
    """Each queue of the vhost and its type (quorum, classic)."""
    vhost = vhost_url.rsplit("/", 1)[1]
    rows = _ctl("list_queues", "-p", vhost, "--no-table-headers", "name", "type").splitlines()
    return dict(line.split("\t")[:2] for line in rows if "\t" in line)
