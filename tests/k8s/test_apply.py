"""The overlays meet a real API server (kube-apiserver + etcd, the operators' own CRDs installed).

Server-side apply with strict field validation, then every object read back: whatever the manifests
ask for (serveConfigV2, resources, probes, env, securityContext, ...) must still be there, neither
pruned by a CRD's structural schema nor defaulted over. A topology change regenerated and re-applied
by the same field manager goes through without conflicts; broken objects are refused with the
server's own message; the Faust pod passes the namespace's ``restricted`` Pod Security admission.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infertide.k8s import generate as k8s_gen
from schemas.topology import default_topology_path
from tests.k8s.conftest import K8S, OVERLAYS
from tests.k8s.kube import apply, get, kubectl, not_kept

Rendered = dict[str, list[dict[str, Any]]]


def one(docs: list[dict[str, Any]], kind: str, name_prefix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{kind} {name_prefix!r}: {len(found)} documents"
    return found[0]


def test_the_operators_crds_are_established(control_plane: Any) -> None:
    names = set(kubectl(control_plane, "get", "crd", "-o", "name").stdout.split())
    for crd in ("rayservices.ray.io", "rayclusters.ray.io", "scaledobjects.keda.sh", "kafkatopics.kafka.strimzi.io",
                "podmonitors.monitoring.coreos.com"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_reads_back_as_applied(control_plane: Any, applied: Rendered, overlay: str) -> None:
    docs = applied[overlay]
    read = json.loads(kubectl(control_plane, "get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(docs)).stdout)
    got_by_key = {(d["kind"], d["metadata"]["name"]): d for d in read["items"]}
    problems = []
    for doc in docs:
        got = got_by_key.get((doc["kind"], doc["metadata"]["name"]), {})
        problems += [f"{doc['kind']}/{doc['metadata']['name']}{p}" for p in not_kept(doc, got)]
    assert not problems, f"{overlay}: the server did not keep what the manifests ask for:\n" + "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_fields_the_project_relies_on_survive(control_plane: Any, applied: Rendered, overlay: str) -> None:
    """Spelled out (the check above covers them too): what the workers and KubeRay read."""
    docs = applied[overlay]
    ns = docs[0]["metadata"]["name"] if docs[0]["kind"] == "Namespace" else None
    rs_doc = one(docs, "RayService")
    rs = get(control_plane, "rayservices.ray.io", "infertide", ns)
    assert rs["spec"]["serveConfigV2"] == rs_doc["spec"]["serveConfigV2"]
    assert yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    for group_got, group_want in zip([rs["spec"]["rayClusterConfig"]["headGroupSpec"],
                                      *rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]],
                                     [rs_doc["spec"]["rayClusterConfig"]["headGroupSpec"],
                                      *rs_doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]], strict=True):
        got_c, want_c = group_got["template"]["spec"]["containers"][0], group_want["template"]["spec"]["containers"][0]
        for key in ("image", "resources", "env", "securityContext", "volumeMounts"):
            assert got_c[key] == want_c[key], f"RayService {key} changed"
        assert group_got["rayStartParams"] == group_want["rayStartParams"]
    dep_doc = one(docs, "Deployment", "infertide-faust")
    dep = get(control_plane, "deployments.apps", "infertide-faust", ns)
    got_c, want_c = dep["spec"]["template"]["spec"]["containers"][0], dep_doc["spec"]["template"]["spec"]["containers"][0]
    for key in ("image", "resources", "env", "securityContext", "startupProbe", "livenessProbe", "readinessProbe"):
        assert not not_kept(want_c[key], got_c[key]), f"Deployment {key}: {not_kept(want_c[key], got_c[key])}"
    so = get(control_plane, "scaledobjects.keda.sh", "infertide-faust", ns)
    assert so["spec"]["triggers"] == one(docs, "ScaledObject")["spec"]["triggers"]


def test_a_pruned_field_would_be_caught(control_plane: Any, applied: Rendered) -> None:
    """The read-back check is not vacuous: a plain create without field validation (what a client-side
    ``kubectl apply --validate=false`` or an old client does) has an unknown field of a custom resource
    pruned silently by the CRD's structural schema, and ``not_kept`` names it. (Server-side apply
    always refuses it: see the ``maxReplica`` case below.)"""
    so = copy.deepcopy(one(applied["dev"], "ScaledObject"))
    so["metadata"]["name"] = "pruning-probe"
    so["spec"]["maxReplica"] = 3
    kubectl(control_plane, "create", "--validate=false", "-f", "-", input=yaml.safe_dump(so))
    got = get(control_plane, "scaledobjects.keda.sh", "pruning-probe", so["metadata"]["namespace"])
    assert not_kept(so, got) == [".spec.maxReplica: missing (pruned?)"]
    kubectl(control_plane, "delete", "scaledobjects.keda.sh", "pruning-probe", "-n", so["metadata"]["namespace"])


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


BROKEN = [
    # (kind, name prefix, path, value, what the server says)
    ("ScaledObject", "infertide-faust", "spec.maxReplica", 3, ".spec.maxReplica: field not declared in schema"),
    ("ScaledObject", "infertide-faust", "spec.scaleTargetRef", None, "spec.scaleTargetRef: Required value"),
    ("RayService", "infertide", "spec.rayClusterConfig.workerGroupSpecs.0.replicas", "two",
     ".spec.rayClusterConfig.workerGroupSpecs[0].replicas: expected numeric (int or float), got string"),
    ("KafkaTopic", "events.text", "spec.partitions", 0, "spec.partitions: Invalid value: 0"),
    ("Deployment", "infertide-faust", "spec.selector.matchLabels", {"app.kubernetes.io/name": "other"},
     "field is immutable"),
    ("Deployment", "infertide-faust", "spec.template.spec.containers.0.resources.limits.cpu", "one",
     "quantities must match the regular expression"),
]


@pytest.mark.parametrize(("kind", "name", "path", "value", "message"), BROKEN, ids=[f"{b[0]}:{b[2]}" for b in BROKEN])
def test_a_broken_object_is_refused_with_the_servers_message(
    control_plane: Any, applied: Rendered, kind: str, name: str, path: str, value: Any, message: str
) -> None:
    doc = _set(one(applied["dev"], kind, name), path, value)
    proc = apply(control_plane, [doc], check=False)
    assert proc.returncode != 0, f"{kind} with {path}={value!r} was accepted"
    assert message in proc.stderr, proc.stderr


def _pod_from(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    tpl = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"], **tpl["metadata"]},
            "spec": tpl["spec"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_faust_pod_passes_restricted_pod_security(control_plane: Any, applied: Rendered, overlay: str) -> None:
    """No controller makes the Deployment's pods here: a server-side dry run of one goes through the same
    admission (PodSecurity ``restricted``, enforced by the overlay's namespace), and a privileged variant
    is refused, so the check bites."""
    dep = one(applied[overlay], "Deployment", "infertide-faust")
    pod = _pod_from(dep, "faust-dry-run")
    kubectl(control_plane, "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))
    bad = _set(pod, "spec.containers.0.securityContext.allowPrivilegeEscalation", True)
    proc = kubectl(control_plane, "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0 and 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr


def _render_with_topology(tmp_path: Path, kustomize: str, change: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The overlays as ``infertide k8s generate`` would make them for the default topology with ``change``
    merged in: a copy of k8s/ regenerated and rendered."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("tools"))
    topology = tmp_path / "topology.yaml"
    raw = k8s_gen.merge(yaml.safe_load(default_topology_path().read_text()), change)
    topology.write_text(yaml.safe_dump(raw, sort_keys=False))
    for f in k8s_gen.generated_files(topology, k8s=tree):
        f.path.write_text(f.render())
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run([kustomize, "build", str(tree / "overlays" / overlay)], capture_output=True, text=True,
                              timeout=120, check=True)
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def test_a_topology_change_reapplies_without_conflicts(
    control_plane: Any, applied: Rendered, kustomize: str, tmp_path: Path
) -> None:
    change = {"topics": {"partitions": 6},
              "models": {"sentiment": {"batching": {"max_batch_size": 128}, "options": {"max_length": 128}}}}
    new = _render_with_topology(tmp_path, kustomize, change)
    for overlay in OVERLAYS:
        proc = apply(control_plane, new[overlay], check=False)
        assert proc.returncode == 0, f"{overlay}: re-apply after a topology change failed:\n{proc.stderr}"
        ns = new[overlay][0]["metadata"]["name"]
        rs = get(control_plane, "rayservices.ray.io", "infertide", ns)
        assert rs["spec"]["serveConfigV2"] == one(new[overlay], "RayService")["spec"]["serveConfigV2"]
        assert rs["spec"]["serveConfigV2"] != one(applied[overlay], "RayService")["spec"]["serveConfigV2"]
        cm = one(new[overlay], "ConfigMap", "infertide-topology-")["metadata"]["name"]
        assert cm != one(applied[overlay], "ConfigMap", "infertide-topology-")["metadata"]["name"]
        dep = get(control_plane, "deployments.apps", "infertide-faust", ns)
        assert {v["configMap"]["name"] for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v} == {cm}
        head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["volumes"]
        assert {v["configMap"]["name"] for v in head if "configMap" in v} == {cm}
        topic = get(control_plane, "kafkatopics.kafka.strimzi.io", "events.text", ns)
        assert topic["spec"]["partitions"] == 6
    # and back: the committed manifests re-apply over the changed ones just as cleanly
    for overlay in OVERLAYS:
        apply(control_plane, applied[overlay])

