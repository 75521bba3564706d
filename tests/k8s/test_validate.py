"""Every document of every rendered overlay is valid: native kinds against the Kubernetes
OpenAPI schemas (kubernetes-validate), custom resources against the operators' own CRDs
(``make k8s-crds``), the same files test_apply.py installs into a real API server."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s.conftest import OVERLAYS

# The oldest Kubernetes this project supports (KubeRay 1.x, KEDA 2.x and Strimzi
# 0.4x all run on it); kubernetes-validate ships its schemas.
K8S_VERSION = "1.33.0"

# Kinds that must be checked against a CRD schema, by apiVersion group.
CRD_GROUPS = {"ray.io", "keda.sh", "kafka.strimzi.io", "monitoring.coreos.com"}


def strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever it lists the known ones.

    A CRD's structural schema prunes unknown fields silently at apply time, so a
    misspelt key (``maxReplica``) would vanish without an error; forbidding them
    here turns that into a test failure, as the API server's strict field
    validation would.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas(crds_dir: Path) -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> the openAPIV3Schema of every served version of every CRD in ``crds_dir``."""
    out = {}
    for path in sorted(crds_dir.glob("*.yaml")):
        # libyaml when present: the pure-Python loader takes about 30 s over these 4 MB of schemas
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                out[f"{spec['group']}/{version['name']}", spec["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


@cache
def crd_validator(crds_dir: Path, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = crd_schemas(crds_dir).get((api_version, kind))
    if schema is None:
        served = sorted(v for v, k in crd_schemas(crds_dir) if k == kind)
        pytest.fail(f"no CRD in {crds_dir} serves {kind} {api_version} (served: {served or 'none'})", pytrace=False)
    schema = strict(schema)
    return jsonschema.Draft7Validator(schema)


def test_overlays_render(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert set(rendered) == {"dev", "gpu"}, f"overlays found: {OVERLAYS}"
    for overlay, docs in rendered.items():
        kinds = {d["kind"] for d in docs}
        expected = {
            "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "RayService", "ScaledObject",
            "KafkaTopic", "NetworkPolicy", "PodDisruptionBudget", "PodMonitor",
        }
        assert expected <= kinds, f"{overlay} lacks {expected - kinds}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_native_documents_match_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    native = [d for d in rendered[overlay] if d["apiVersion"].split("/")[0] not in CRD_GROUPS]
    assert native
    for doc in native:
        name = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name} is invalid for Kubernetes {K8S_VERSION}: {err.message} at {list(err.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_crd_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, crds_dir: Path
) -> None:
    custom = [d for d in rendered[overlay] if d["apiVersion"].split("/")[0] in CRD_GROUPS]
    assert {d["kind"] for d in custom} == {"RayService", "ScaledObject", "KafkaTopic", "PodMonitor"}
    for doc in custom:
        validator = crd_validator(crds_dir, doc["apiVersion"], doc["kind"])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{overlay}: {doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(
            f"  {'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10]
        )


def test_strict_schema_catches_an_unknown_field(crds_dir: Path) -> None:
    """The CRD check is not vacuous: a misspelt field fails it."""
    validator = crd_validator(crds_dir, "keda.sh/v1alpha1", "ScaledObject")
    doc = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "maxReplica": 3, "triggers": []},
    }
    assert any("maxReplica" in e.message for e in validator.iter_errors(doc))
