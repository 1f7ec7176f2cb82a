"""The KubeRay manifests of ``docker/k8s/`` validate: every Kubernetes object and every pod
template against the Kubernetes API models (the official ``kubernetes`` client's, strictly: an
unknown or misspelt field fails, so does a missing required one), the RayCluster and RayJob
fields against KubeRay's ``ray.io/v1`` API, and every reference between the files (Secrets and
their keys, volume claims, ConfigMaps) resolves. The RayJob's sweep spec is parsed by hpsearch
itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "docker" / "k8s"

# Fields of KubeRay's ray.io/v1 Go types (ray-operator/apis/ray/v1/*_types.go): what the CRDs
# accept. The pod templates inside are core PodTemplateSpecs, checked with the k8s models.
RAY_CLUSTER_SPEC = {"suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
                    "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec",
                    "rayVersion", "workerGroupSpecs", "authOptions"}
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas",
                "idleTimeoutSeconds", "rayStartParams", "template", "scaleStrategy",
                "numOfHosts"}
RAY_JOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec",
                "submitterPodTemplate", "metadata", "clusterSelector", "submitterConfig",
                "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML", "jobId",
                "submissionMode", "entrypointResources", "entrypointNumCpus",
                "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes",
                "suspend"}
CORE = {"Deployment": "V1Deployment", "Service": "V1Service", "Secret": "V1Secret",
        "PersistentVolumeClaim": "V1PersistentVolumeClaim", "ConfigMap": "V1ConfigMap"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}#{i}", doc) for path in sorted(K8S.glob("*.yaml"))
            for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc is not None]


DOCS = _documents()


def _strict(data: Any, type_name: str, where: str) -> list[str]:
    """Problems of ``data`` as the k8s model ``type_name``: unknown fields, wrong types."""
    from kubernetes import client

    if (m := re.fullmatch(r"[Ll]ist\[(.+)\]", type_name)) is not None:
        if not isinstance(data, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(data) for p in _strict(item, m[1], f"{where}[{i}]")]
    if (m := re.fullmatch(r"[Dd]ict[\[(]\w+, (.+)[\])]", type_name)) is not None:
        if not isinstance(data, dict):
            return [f"{where}: expected a mapping"]
        return [p for k, v in data.items() for p in _strict(v, m[1], f"{where}.{k}")]
    if type_name in ("object", "datetime", "date"):
        return []
    if type_name in ("str", "bytes", "int", "bool", "float"):  # bytes: base64 text in YAML
        ok = {"str": str, "bytes": str, "int": int, "bool": bool,
              "float": (int, float)}[type_name]
        return [] if isinstance(data, ok) else [f"{where}: expected {type_name}, got {data!r}"]
    model = getattr(client.models, type_name)
    if not isinstance(data, dict):
        return [f"{where}: expected a {type_name} mapping"]
    by_json = {j: a for a, j in model.attribute_map.items()}
    problems = [f"{where}.{k}: not a field of {type_name}" for k in data if k not in by_json]
    for key, value in data.items():
        if key in by_json and value is not None:
            problems += _strict(value, model.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


def _validate(data: dict[str, Any], type_name: str, where: str) -> None:
    """Strict field check, then the client's own model validation (required fields, enums)."""
    from kubernetes import client

    assert _strict(data, type_name, where) == []
    client.ApiClient()._ApiClient__deserialize(data, type_name)  # raises on a missing field


def _pod_templates(kind: str, spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    cluster = spec["rayClusterSpec"] if kind == "RayJob" else spec
    yield "headGroupSpec.template", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"workerGroupSpecs[{group['groupName']}].template", group["template"]
    if kind == "RayJob" and "submitterPodTemplate" in spec:
        yield "submitterPodTemplate", spec["submitterPodTemplate"]


@pytest.mark.parametrize("where, doc", DOCS, ids=[w for w, _ in DOCS])
def test_each_object_validates(where: str, doc: dict[str, Any]) -> None:
    assert {"apiVersion", "kind", "metadata"} <= set(doc), where
    assert doc["metadata"].get("name"), f"{where}: metadata.name"
    kind = doc["kind"]
    if kind in CORE:
        _validate(doc, CORE[kind], where)
        return
    assert kind in ("RayCluster", "RayJob") and doc["apiVersion"] == "ray.io/v1", where
    spec = doc["spec"]
    if kind == "RayJob":
        assert set(spec) <= RAY_JOB_SPEC, set(spec) - RAY_JOB_SPEC
        cluster = spec["rayClusterSpec"]
    else:
        cluster = spec
    assert set(cluster) <= RAY_CLUSTER_SPEC, set(cluster) - RAY_CLUSTER_SPEC
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP and {"template", "rayStartParams"} <= set(head)
    for group in cluster.get("workerGroupSpecs", []):
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= \
            set(group)
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    for params in [head["rayStartParams"], *(g["rayStartParams"]
                                             for g in cluster.get("workerGroupSpecs", []))]:
        assert all(isinstance(v, str) for v in params.values()), "rayStartParams are strings"
    import ray

    assert cluster["rayVersion"] == ray.__version__  # the Ray the image installs
    for name, template in _pod_templates(kind, spec):
        _validate(template, "V1PodTemplateSpec", f"{where}.{name}")


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_references_between_the_files_resolve() -> None:
    secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
               for _, d in DOCS if d["kind"] == "Secret"}
    claims = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    maps = {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == "ConfigMap"}
    services = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "Service"}
    seen = 0
    for where, doc in DOCS:
        for node in _walk(doc):
            if "secretKeyRef" in node:
                ref = node["secretKeyRef"]
                seen += 1
                assert ref["name"] in secrets, f"{where}: Secret {ref['name']}"
                assert ref["key"] in secrets[ref["name"]] or ref.get("optional"), \
                    f"{where}: key {ref['key']} of Secret {ref['name']}"
            if "persistentVolumeClaim" in node:
                assert node["persistentVolumeClaim"]["claimName"] in claims, where
            if "configMap" in node and isinstance(node["configMap"], dict):
                assert node["configMap"]["name"] in maps, where
            for value in node.values():
                if isinstance(value, str) and (m := re.search(r"http://([\w-]+):\d+", value)):
                    assert m[1] in services | {"localhost", "127"}, f"{where}: {value}"
    assert seen >= 5  # the token, MLflow's database and S3 credentials are all wired


def test_the_rayjob_sweep_spec_is_a_valid_hpsearch_spec() -> None:
    from hpsearch.search.spec import parse_spec

    job = next(d for _, d in DOCS if d["kind"] == "RayJob")
    spec_path = job["spec"]["entrypoint"].split()[2]  # hpsearch sweep <path> --address auto
    mounts = [m for t in _pod_templates("RayJob", job["spec"])
              for c in t[1]["spec"]["containers"] for m in c.get("volumeMounts", [])
              if spec_path.startswith(m["mountPath"])]
    assert mounts, f"{spec_path} is not on a mounted volume of the head"
    config_maps = [d for _, d in DOCS if d["kind"] == "ConfigMap"]
    text = next(d["data"][Path(spec_path).name] for d in config_maps
                if Path(spec_path).name in d.get("data", {}))
    spec = parse_spec(yaml.safe_load(text), source=spec_path)
    assert spec.name and spec.budget.trials > 0
