"""ops/k8s: every overlay builds, validates against the Kubernetes and KEDA schemas, and says
what the deployment needs (queues, autoscaling, GPUs, probes, requests, secrets)."""

from __future__ import annotations

import shutil
import subprocess
from bisect import bisect
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from models.domain.settings import Settings
from queues.names import QUEUES
from tests.k8s_render import build, load_docs

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "ops" / "k8s"
OVERLAYS = ["base", "overlays/production", "overlays/rabbitmq"]
KUBERNETES = "1.37.0"
WORKERS = {"sluicegate-worker-interactive": ["interactive.api"],
           "sluicegate-worker-async": ["async.api"],
           "sluicegate-worker-gpu": ["interactive.gpu", "async.gpu"]}


def rendered(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in build(K8S / overlay)}


def of_kind(docs: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: d for (k, name), d in docs.items() if k == kind}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def _strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields (the API server would silently prune them: a
    misspelt ``minReplicas`` would be dropped, not refused)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schema(kind: str, version: str) -> dict[str, Any]:
    for path in (K8S / "schemas").glob("*.yaml"):
        for crd in load_docs(path):
            if crd["spec"]["names"]["kind"] == kind:
                for v in crd["spec"]["versions"]:
                    if v["name"] == version:
                        return dict(_strict(v["schema"]["openAPIV3Schema"]))
    raise AssertionError(f"no vendored CRD schema for {kind} {version} in ops/k8s/schemas")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_validates_against_its_schema(overlay: str) -> None:
    docs = rendered(overlay)
    assert docs
    for (kind, _name), doc in docs.items():
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, crd_schema(kind, doc["apiVersion"].split("/")[1]))
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_misspelt_field_is_refused() -> None:
    """The validation is not a formality: it catches the mistakes it is here for."""
    so = dict(of_kind(rendered("base"), "ScaledObject")["sluicegate-worker-async"])
    bad = {**so, "spec": {**so["spec"], "minReplicas": 0}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, crd_schema("ScaledObject", "v1alpha1"))
    deploy = of_kind(rendered("base"), "Deployment")["sluicegate-beat"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deploy, "spec": {**deploy["spec"], "replica": 1}},
                                     KUBERNETES, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_python_build_matches_kustomize(overlay: str) -> None:
    """Where kubectl is installed, its kustomize agrees with the renderer the tests rely on."""
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl is not installed: the Python build stands alone")
    out = subprocess.run([exe, "kustomize", str(K8S / overlay)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    assert theirs == rendered(overlay)


def redis_list_key(queue: str, priority: int) -> str:
    """The Redis list kombu keeps ``queue``'s messages of ``priority`` in."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, priority) - 1]
    return f"{queue}{Channel.sep}{step}" if step else queue


def test_each_queue_scales_its_workers_on_the_list_its_messages_are_in() -> None:
    """A trigger on ``interactive.api`` itself would read 0 for ever: kombu keeps priority-9
    messages in a list of their own."""
    docs = rendered("base")
    scaled = of_kind(docs, "ScaledObject")
    lanes = Settings().lanes
    seen = []
    for deploy, queues in WORKERS.items():
        cmd = containers(of_kind(docs, "Deployment")[deploy])[0]["command"]
        assert cmd[cmd.index("-Q") + 1].split(",") == queues
        so = scaled[deploy]
        assert so["spec"]["scaleTargetRef"]["name"] == deploy
        keys = [t["metadata"]["listName"] for t in so["spec"]["triggers"]]
        assert all(t["type"] == "redis" for t in so["spec"]["triggers"])
        assert keys == [redis_list_key(q, lanes.get(q.split(".")[0]).priority) for q in queues]
        seen += queues
    assert sorted(seen) == sorted(QUEUES)


def test_on_rabbitmq_each_quorum_queue_scales_by_its_length() -> None:
    docs = rendered("overlays/rabbitmq")
    for deploy, queues in WORKERS.items():
        triggers = of_kind(docs, "ScaledObject")[deploy]["spec"]["triggers"]
        assert [(t["type"], t["metadata"]["queueName"], t["metadata"]["mode"])
                for t in triggers] == [("rabbitmq", q, "QueueLength") for q in queues]
    auth = of_kind(docs, "TriggerAuthentication")["sluicegate-broker"]["spec"]
    assert [r["parameter"] for r in auth["secretTargetRef"]] == ["host"]


def test_the_front_door_scales_on_cpu_behind_a_service() -> None:
    docs = rendered("base")
    hpa = of_kind(docs, "HorizontalPodAutoscaler")["sluicegate-frontdoor"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "sluicegate-frontdoor"
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"] and hpa["minReplicas"] >= 2
    door = containers(of_kind(docs, "Deployment")["sluicegate-frontdoor"])[0]
    assert door["command"][:2] == ["sluice", "serve"]
    assert door["readinessProbe"]["httpGet"]["path"] == "/healthz"
    svc = of_kind(docs, "Service")["sluicegate-frontdoor"]["spec"]
    assert svc["selector"] == of_kind(docs, "Deployment")["sluicegate-frontdoor"]["spec"][
        "selector"]["matchLabels"]


def test_autoscaled_deployments_leave_the_count_to_their_autoscaler() -> None:
    docs = rendered("overlays/production")
    targets = {d["spec"]["scaleTargetRef"]["name"] for k in ("ScaledObject",
               "HorizontalPodAutoscaler") for d in of_kind(docs, k).values()}
    for name in targets:
        assert "replicas" not in of_kind(docs, "Deployment")[name]["spec"], \
            f"{name}: an apply would reset what the autoscaler chose"


def test_gpu_workers_ask_for_a_gpu_on_gpu_nodes() -> None:
    pod = of_kind(rendered("base"), "Deployment")["sluicegate-worker-gpu"]["spec"]["template"][
        "spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1" == res["requests"]["nvidia.com/gpu"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "startupProbe" in pod["containers"][0]  # the engine loads for minutes


def test_beat_runs_once_and_is_never_scaled() -> None:
    docs = rendered("overlays/production")
    beat = of_kind(docs, "Deployment")["sluicegate-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    targets = {d["spec"]["scaleTargetRef"]["name"] for k in ("ScaledObject",
               "HorizontalPodAutoscaler") for d in of_kind(docs, k).values()}
    assert "sluicegate-beat" not in targets


def test_workers_get_time_to_finish_their_tasks_on_shutdown() -> None:
    docs = rendered("base")
    lanes = Settings().lanes
    for deploy, queues in WORKERS.items():
        grace = of_kind(docs, "Deployment")[deploy]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"]
        assert grace > max(lanes.get(q.split(".")[0]).time_limit_s for q in queues), deploy


def test_workers_keep_their_outbox_past_a_container_restart() -> None:
    # On the container's own disk, a worker restarted while PostgreSQL was away (an OOM kill,
    # a failed probe) lost the paid answers its outbox held for the ledger.
    docs = rendered("base")
    home = of_kind(docs, "ConfigMap")["sluicegate-config"]["data"]["SLUICE_HOME"]
    for deploy in WORKERS:
        spec = of_kind(docs, "Deployment")[deploy]["spec"]["template"]["spec"]
        (worker,) = spec["containers"]
        mounts = {m["mountPath"]: m["name"] for m in worker.get("volumeMounts", [])}
        assert home in mounts, deploy
        volume = {v["name"]: v for v in spec["volumes"]}[mounts[home]]
        assert "emptyDir" in volume, deploy


def test_serving_pods_are_probed_requested_and_budgeted_for_disruption() -> None:
    docs = rendered("base")
    pdb_selectors = [p["spec"]["selector"]["matchLabels"]
                     for p in of_kind(docs, "PodDisruptionBudget").values()]
    for name, deploy in of_kind(docs, "Deployment").items():
        for c in containers(deploy):
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (name, c["name"])
            if name != "sluicegate-beat":  # beat answers nothing; it exits when it fails
                assert "livenessProbe" in c, name
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        if name in WORKERS or name == "sluicegate-frontdoor":
            assert any(sel.items() <= labels.items() for sel in pdb_selectors), name


def test_the_migration_job_upgrades_to_head() -> None:
    job = of_kind(rendered("base"), "Job")["sluicegate-migrate"]["spec"]
    c = job["template"]["spec"]["containers"][0]
    assert c["command"][-2:] == ["upgrade", "head"]
    assert job["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_secrets_come_from_secret_objects_only() -> None:
    docs = rendered("overlays/rabbitmq")
    assert not of_kind(docs, "Secret"), "real secrets are created apart, never committed"
    config = of_kind(docs, "ConfigMap")["sluicegate-config"]["data"]
    for key, value in config.items():
        assert "@" not in value and not any(w in key for w in ("KEY", "PASSWORD", "TOKEN")), key
    example = {d["metadata"]["name"]: d for d in load_docs(K8S / "secrets.example.yaml")}
    wanted = {"SLUICE_BROKER__URL", "SLUICE_BROKER__RESULT_BACKEND", "SLUICE_CACHE__REDIS_URL",
              "SLUICE_DATABASE__URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert wanted <= set(example["sluicegate-secrets"]["stringData"])
    for doc in example.values():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    for name, deploy in of_kind(docs, "Deployment").items():
        for c in containers(deploy):
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            assert refs == ["sluicegate-secrets"], name
            for env in c.get("env", []):
                if any(w in env["name"] for w in ("KEY", "PASSWORD", "TOKEN", "AUTH")):
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in example[ref["name"]]["stringData"], env["name"]
    auth = of_kind(rendered("base"), "TriggerAuthentication")["sluicegate-broker"]["spec"]
    for ref in auth["secretTargetRef"]:
        assert ref["key"] in example[ref["name"]]["stringData"]
