"""Build a Kustomize folder in Python (resources, namespace, images, patches): no kubectl needed.

Covers what ``ops/k8s`` uses and no more. Patches merge as kustomize does: strategic merge for
Kubernetes' own kinds (lists of named items such as containers merge by name), JSON merge patch
for custom resources (a list in the patch replaces the list).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

#: Lists that Kubernetes' strategic merge patch merges by their items' ``name``.
MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes", "ports"}
#: Kinds that live in no namespace.
CLUSTER_KINDS = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                 "PersistentVolume", "StorageClass", "ClusterTriggerAuthentication"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def is_builtin(api_version: str) -> bool:
    """Whether a kind is Kubernetes' own (strategic merge) rather than a custom resource."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


def merge(target: dict[str, Any], patch: dict[str, Any], *, strategic: bool) -> None:
    """Merge ``patch`` into ``target`` in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, strategic=strategic)
        elif (strategic and key in MERGE_BY_NAME and isinstance(value, list)
              and isinstance(target.get(key), list)):
            by_name = {item.get("name"): item for item in target[key]}
            for item in value:
                if item.get("name") in by_name:
                    merge(by_name[item["name"]], item, strategic=True)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _set_image(container: dict[str, Any], images: list[dict[str, Any]]) -> None:
    name, _, tag = container["image"].partition(":")
    for img in images:
        if img["name"] == name:
            container["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"


def build(folder: Path) -> list[dict[str, Any]]:
    """The resources ``kustomize build folder`` would print (order aside)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in spec.get("resources", []):
        path = folder / res
        docs += build(path) if path.is_dir() else load_docs(path)
    for entry in spec.get("patches", []):
        for patch in load_docs(folder / entry["path"]):
            found = [d for d in docs if d["kind"] == patch["kind"]
                     and d["metadata"]["name"] == patch["metadata"]["name"]]
            assert len(found) == 1, f"patch {entry['path']} matches {len(found)} resources"
            merge(found[0], patch, strategic=is_builtin(patch["apiVersion"]))
    namespace = spec.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] not in CLUSTER_KINDS:
            doc["metadata"]["namespace"] = namespace
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            _set_image(container, spec.get("images", []))
    return docs
