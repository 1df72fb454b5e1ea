"""A LiteLLM proxy (from PyPI, in its own virtualenv outside the repo) in front of the stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


from ops.bench.harness import wait_healthy
from ops.bench.procs import stop

#: The version measured in the environment notes; it is installed only into ``venv``.
LITELLM_VERSION = "1.108.7"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "litellm-venv"
MASTER_KEY = "sk-bench-litellm"


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The ``litellm`` executable of ``venv``, creating the venv and installing it if missing."""
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                        f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return exe


def _config(standin_url: str, model: str, provider: str = "openai") -> str:
    # LiteLLM's Anthropic route appends /v1/messages to the base itself.
    base = standin_url if provider == "anthropic" else f"{standin_url}/v1"
    return (f"model_list:\n"
            f"  - model_name: {model}\n"
            f"    litellm_params:\n"
            f"      model: {provider}/{model}\n"
            f"      api_base: {base}\n"
            f"      api_key: sk-standin\n"
            f"litellm_settings:\n"
            f"  drop_params: true\n"
            f"  telemetry: false\n"
            f"general_settings:\n"
            f"  master_key: {MASTER_KEY}\n")


@contextmanager
def litellm_process(standin_url: str, port: int, *, model: str = "gpt-4o-mini",
                    workers: int = 1, venv: Path = DEFAULT_VENV, provider: str = "openai"
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``litellm --config ...`` on ``127.0.0.1:port``; yields its URL and process once up
    (``provider``: the stand-in API LiteLLM calls, ``openai`` or ``anthropic``)."""
    exe = ensure_venv(venv)
    folder = Path(tempfile.mkdtemp(prefix="sluice-litellm-"))
    cfg = folder / "config.yaml"
    cfg.write_text(_config(standin_url, model, provider))
    log = folder / "litellm.log"
    # The local cost map: no fetch from the internet at start-up (there is no route to it here).
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "PYTHONUNBUFFERED": "1"}
    # Each worker imports litellm for tens of seconds on a busy 2-core machine: past uvicorn's
    # default worker health-check timeout it would be killed and respawned for ever.
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", str(workers), "--timeout_worker_healthcheck", "300"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url + "/health/liveliness", timeout=300, interval=0.5,
                     failure=lambda: "litellm did not start:\n" + log.read_text()[-3000:])
        yield url, proc
    finally:
        stop(proc)
