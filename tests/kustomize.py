"""Rendering a kustomization for the manifest tests: ``kubectl kustomize`` where kubectl is
installed, otherwise this module's own rendering of the few kustomize features the Seedbed
manifests use (no maintained Python library renders kustomize).

The features, as the kustomization reference documents them: ``resources`` (files, and
directories holding a kustomization, rendered first), ``namespace`` (set on every namespaced
object), ``labels`` with ``includeSelectors: false`` (added to metadata and, with
``includeTemplates``, to pod templates), ``images`` (``newName``/``newTag`` for containers whose
image has that name) and ``patches`` holding an inline JSON 6902 patch (add, replace, remove)
with a ``target`` of kind and optional name. Anything else in a kustomization is refused, so the
fallback can never quietly render something different from kustomize; when kubectl is present,
the tests check both renderings agree.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Where each workload kind keeps its pod template.
POD_TEMPLATES = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
}


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization directory renders to."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return render_with_kubectl(kubectl, directory)
    return render_here(directory)


def render_with_kubectl(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_here(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise NotImplementedError(f"{directory}: kustomization fields this renderer does not know: {unknown}")
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            objects.extend(render_here(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    namespace = kustomization.get("namespace")
    for obj in objects:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        for label_set in kustomization.get("labels", []):
            if label_set.get("includeSelectors"):
                raise NotImplementedError("labels with includeSelectors")
            _add_labels(obj, label_set["pairs"], label_set.get("includeTemplates", False))
        for image in kustomization.get("images", []):
            _set_image(obj, image)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"target", "patch"}:
            raise NotImplementedError(f"patch form {sorted(patch)}")
        operations = yaml.safe_load(patch["patch"])
        for obj in objects:
            if _targets(patch["target"], obj):
                for operation in operations:
                    _apply(obj, operation)
    return objects


def _add_labels(obj: dict[str, Any], pairs: dict[str, str], templates: bool) -> None:
    obj["metadata"].setdefault("labels", {}).update(pairs)
    if templates and obj["kind"] in POD_TEMPLATES:
        template = obj
        for key in POD_TEMPLATES[obj["kind"]]:
            template = template[key]
        template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_image(obj: dict[str, Any], image: dict[str, str]) -> None:
    if obj["kind"] not in POD_TEMPLATES:
        return
    pod = obj["spec"]["template"]["spec"]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"


def _targets(target: dict[str, str], obj: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise NotImplementedError(f"patch targets by {unknown}")
    return (
        obj["kind"] == target["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
    )


def _apply(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    """One JSON 6902 operation (RFC 6902: add, replace, remove) on a JSON pointer (RFC 6901)."""
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[index]
        else:
            raise NotImplementedError(op)
        return
    if op in ("replace", "remove") and last not in node:
        raise KeyError(f"{operation['path']} is not there to {op}")
    if op in ("add", "replace"):
        node[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del node[last]
    else:
        raise NotImplementedError(op)
