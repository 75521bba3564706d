"""KubeRay's own operator (built from its module, run out of cluster) reconciles our RayServices.

From each overlay's RayService it makes a RayCluster, the head Service and the head and worker Pods,
in namespaces that enforce the ``restricted`` Pod Security standard. Read back, they are compared
field by field with what the manifests ask for: image, CPU/memory/GPU requests and limits, env,
mounts, security contexts, ``rayStartParams`` turned into ``ray start`` flags, and the probes the
manifests leave to KubeRay. A change of ``serveConfigV2`` keeps the same cluster (KubeRay hands the
new config to the running cluster's Serve); a change of the cluster config prepares a new one.

Not covered (no kubelet, no pod ever runs): the Serve application deployed through the head's
dashboard, the RayService's ``infertide-head-svc``/``serve-svc`` (KubeRay makes them once the Serve
app is healthy), and the switch of traffic to an upgraded cluster.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import OVERLAYS
from tests.k8s.kube import apply, get, get_all, not_kept, wait_for

Rendered = dict[str, list[dict[str, Any]]]


def rayservice_doc(rendered: Rendered, overlay: str) -> dict[str, Any]:
    return next(d for d in rendered[overlay] if d["kind"] == "RayService")


def namespace(rendered: Rendered, overlay: str) -> str:
    return rayservice_doc(rendered, overlay)["metadata"]["namespace"]


def cluster_name(cp: Any, ns: str) -> str | None:
    status = get(cp, "rayservices.ray.io", "infertide", ns).get("status", {})
    return (status.get("pendingServiceStatus", {}).get("rayClusterName")
            or status.get("activeServiceStatus", {}).get("rayClusterName"))


@pytest.fixture(scope="module")
def reconciled(control_plane: Any, applied: Rendered, kuberay: str) -> dict[str, dict[str, Any]]:
    """Per overlay: the RayCluster KubeRay made, its head and worker pods, and its head Service."""
    out = {}
    for overlay in OVERLAYS:
        ns = namespace(applied, overlay)
        name = wait_for(f"{overlay}: a RayCluster for RayService infertide", lambda: cluster_name(control_plane, ns))
        sel = f"ray.io/cluster={name}"

        def pods(node_type: str, sel: str = sel, ns: str = ns) -> list[dict[str, Any]]:
            return get_all(control_plane, "pods", ns, f"{sel},ray.io/node-type={node_type}")

        out[overlay] = {
            "cluster": wait_for(f"{overlay}: RayCluster {name}", lambda n=name, ns=ns: get(
                control_plane, "rayclusters.ray.io", n, ns)),
            "head": wait_for(f"{overlay}: head pod", lambda: pods("head"))[0],
            "worker": wait_for(f"{overlay}: worker pod", lambda: pods("worker"), timeout_s=60)[0],
            "service": wait_for(f"{overlay}: head service",
                                lambda: get_all(control_plane, "services", ns, f"{sel},ray.io/node-type=head")),
        }
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_raycluster_is_the_rayservices_cluster_config(applied: Rendered, reconciled: dict, overlay: str) -> None:
    want = rayservice_doc(applied, overlay)["spec"]["rayClusterConfig"]
    got = reconciled[overlay]["cluster"]["spec"]
    assert not not_kept(want, got), not_kept(want, got)
    owner = reconciled[overlay]["cluster"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("RayService", "infertide", True)


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def _container_matches(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Our container as KubeRay wrote it into a pod: the same image, resources, security context; our env,
    mounts and ports among the ones KubeRay adds."""
    problems = []
    for key in ("image", "imagePullPolicy", "resources", "securityContext"):
        if got.get(key) != want.get(key):
            problems.append(f"{key}: want {want.get(key)!r}, got {got.get(key)!r}")
    for key in ("env", "volumeMounts", "ports"):
        have = _by_name(got.get(key, []))
        for item in want.get(key, []):
            if have.get(item["name"]) is None or not_kept(item, have[item["name"]]):
                problems.append(f"{key} {item['name']}: want {item!r}, got {have.get(item['name'])!r}")
    return problems


def _ray_start(container: dict[str, Any]) -> str:
    return " ".join(container.get("command", []) + container.get("args", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("node", ["head", "worker"])
def test_the_pods_are_what_the_manifests_ask(applied: Rendered, reconciled: dict, overlay: str, node: str) -> None:
    config = rayservice_doc(applied, overlay)["spec"]["rayClusterConfig"]
    group = config["headGroupSpec"] if node == "head" else config["workerGroupSpecs"][0]
    want_spec, pod = group["template"]["spec"], reconciled[overlay][node]
    got_spec = pod["spec"]
    # Created at all means admitted: the overlay's namespace enforces PodSecurity "restricted".
    assert pod["metadata"]["namespace"] == namespace(applied, overlay)
    want_c = want_spec["containers"][0]
    got_c = _by_name(got_spec["containers"])[want_c["name"]]
    assert not _container_matches(want_c, got_c), _container_matches(want_c, got_c)
    assert got_spec["securityContext"] == want_spec["securityContext"]
    for key in ("serviceAccountName", "automountServiceAccountToken", "nodeSelector"):
        if key in want_spec:
            assert got_spec.get(key) == want_spec[key], key
    # admission (DefaultTolerationSeconds) adds the not-ready/unreachable tolerations to ours
    for toleration in want_spec.get("tolerations", []):
        assert toleration in got_spec["tolerations"], toleration
    volumes = _by_name(got_spec["volumes"])
    for v in want_spec["volumes"]:
        assert not not_kept(v, volumes.get(v["name"], {})), v
    for key, value in group["template"]["metadata"]["labels"].items():
        assert pod["metadata"]["labels"].get(key) == value
    # rayStartParams become `ray start` flags
    start = _ray_start(got_c)
    for key, value in group["rayStartParams"].items():
        assert f"--{key}={value}" in start or f"--{key} {value}" in start, f"--{key}={value} not in {start!r}"
    # The manifests leave the probes to KubeRay (checkov waivers CKV_K8S_8/9): it must add them.
    assert got_c.get("livenessProbe") and got_c.get("readinessProbe"), "KubeRay added no probes"
    gpus = want_c["resources"].get("limits", {}).get("nvidia.com/gpu")
    if gpus:
        assert f"--num-gpus={gpus}" in start or f"--num-gpus {gpus}" in start, start
    assert "--num-gpus" not in start or gpus, start


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_autoscaler_sidecar_carries_our_options(applied: Rendered, reconciled: dict, overlay: str) -> None:
    options = rayservice_doc(applied, overlay)["spec"]["rayClusterConfig"]["autoscalerOptions"]
    containers = _by_name(reconciled[overlay]["head"]["spec"]["containers"])
    assert "autoscaler" in containers, list(containers)
    sidecar = containers["autoscaler"]
    assert sidecar["resources"] == options["resources"]
    assert sidecar["securityContext"] == options["securityContext"]
    assert sidecar["imagePullPolicy"] == options["imagePullPolicy"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_head_service_exposes_the_head_ports(applied: Rendered, reconciled: dict, overlay: str) -> None:
    ports = {p["port"] for s in reconciled[overlay]["service"] for p in s["spec"]["ports"]}
    want = rayservice_doc(applied, overlay)["spec"]["rayClusterConfig"]["headGroupSpec"]
    container_ports = {p["containerPort"] for p in want["template"]["spec"]["containers"][0]["ports"]}
    # GCS (RAY_ADDRESS of the Faust workers), dashboard (Serve config), client, serve, metrics
    assert {6379, 8265, 8000} <= ports <= container_ports | {6379, 8265, 10001, 8000, 8080}, ports


def _same_cluster_for(cp: Any, ns: str, name: str, uid: str, generation: int, seconds: float) -> None:
    """For ``seconds`` (several KubeRay reconciles, every 2 s), the RayService keeps cluster ``name`` unchanged."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        clusters = get_all(cp, "rayclusters.ray.io", ns)
        assert [c["metadata"]["name"] for c in clusters] == [name], clusters
        assert (clusters[0]["metadata"]["uid"], clusters[0]["metadata"]["generation"]) == (uid, generation)
        time.sleep(1)


def test_a_serve_config_change_keeps_the_cluster_and_a_cluster_change_prepares_a_new_one(
    control_plane: Any, applied: Rendered, reconciled: dict
) -> None:
    overlay = "dev"
    ns, rs = namespace(applied, overlay), rayservice_doc(applied, overlay)
    cluster = reconciled[overlay]["cluster"]["metadata"]
    name, uid, generation = cluster["name"], cluster["uid"], cluster["generation"]

    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    deployment = serve["applications"][0]["deployments"][0]
    deployment["user_config"] = {**deployment.get("user_config", {}), "probe": "in-place"}
    changed = copy.deepcopy(rs)
    changed["spec"]["serveConfigV2"] = yaml.safe_dump(serve, sort_keys=False)
    apply(control_plane, [changed])
    _same_cluster_for(control_plane, ns, name, uid, generation, seconds=8)
    assert cluster_name(control_plane, ns) == name

    upgraded = copy.deepcopy(changed)
    for c in upgraded["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]:
        c["image"] = c["image"] + "-next"
    apply(control_plane, [upgraded])
    new = wait_for("a new pending RayCluster for the changed cluster config",
                   lambda: (n := cluster_name(control_plane, ns)) != name and n, timeout_s=30)
    # KubeRay names the pending cluster in the RayService's status first, then creates it
    image = wait_for(f"RayCluster {new}", lambda: get(control_plane, "rayclusters.ray.io", new, ns))[
        "spec"]["headGroupSpec"]["template"]["spec"]
    assert image["containers"][0]["image"].endswith("-next")
    apply(control_plane, [rs])  # back to the committed manifest
