"""The manifests agree with the code: generated files are current, and the hand-written
ones name the topics, consumer group, ports and entry points the topology and the
workers define."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infertide.k8s import generate as k8s_gen
from schemas.topology import Topology, default_topology_path
from tests.k8s.conftest import REPO
from tests.k8s.helpers import docs_of

Rendered = dict[str, list[dict[str, Any]]]


def default_topology() -> Topology:
    # Not load_topology(): the manifests must not depend on KAFKA_BOOTSTRAP_SERVERS in the shell.
    return Topology.model_validate(yaml.safe_load(default_topology_path().read_text()))


def overlay_topology(overlay: str) -> Topology:
    path = REPO / "k8s" / "overlays" / overlay / "topology.yaml"
    return Topology.model_validate(yaml.safe_load(path.read_text())) if path.is_file() else default_topology()


def test_serve_builder_exists() -> None:
    """Without it the generator cannot write serveConfigV2; say so instead of skipping those files."""
    from workers import app

    assert hasattr(app, "serve_deploy_config"), "workers.app.serve_deploy_config(topology, config_path) is missing"


@pytest.mark.parametrize("generated", k8s_gen.generated_files(), ids=lambda f: str(f.path.relative_to(REPO)))
def test_generated_file_is_current(generated: k8s_gen.GeneratedFile) -> None:
    assert generated.path.is_file(), f"{generated.path} is missing: run `python -m infertide.k8s.generate`"
    assert generated.path.read_text() == generated.render(), (
        f"{generated.path.relative_to(REPO)} differs from the topology: run `python -m infertide.k8s.generate` and commit"
    )


def test_configmap_carries_the_default_topology(rendered: Rendered) -> None:
    for overlay, cm in docs_of(rendered, "ConfigMap"):
        if cm["metadata"]["name"].startswith("infertide-topology"):
            text = cm["data"]["topology.yaml"]
            expected = (REPO / "k8s" / "overlays" / overlay / "topology.yaml")
            if overlay == "dev":
                assert text == default_topology_path().read_text(), "dev ConfigMap is not topologies/default.yaml"
            else:
                assert text == expected.read_text()


def test_serve_config_equals_the_workers_builder(rendered: Rendered) -> None:
    from ray.serve.schema import ServeDeploySchema
    from workers.app import serve_deploy_config

    for overlay, rs in docs_of(rendered, "RayService"):
        serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
        # What KubeRay hands to Serve's REST API must parse as Serve's own deploy schema.
        ServeDeploySchema.model_validate(serve)
        assert serve == serve_deploy_config(overlay_topology(overlay), k8s_gen.CONFIG_PATH), overlay
        app = serve["applications"][0]
        assert app["import_path"] == "workers.app:build_app"
        assert app["args"] == {"config": "/etc/infertide/topology.yaml"}
        names = {d["name"] for d in app["deployments"]}
        assert set(default_topology().models) <= names


def test_gpu_overlay_gives_every_model_a_gpu_share(rendered: Rendered) -> None:
    topo = overlay_topology("gpu")
    assert all(m.num_gpus > 0 for m in topo.models.values())
    # One GPU per worker pod: one replica of every model must fit on it.
    assert sum(m.num_gpus for m in topo.models.values()) <= 1
    (rs,) = [d for o, d in docs_of(rendered, "RayService") if o == "gpu"]
    worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["nodeSelector"] and worker["tolerations"]


def test_every_topic_has_a_kafkatopic(rendered: Rendered) -> None:
    topo = default_topology()
    for overlay, docs in rendered.items():
        topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
        assert set(topo.topics.names()) <= set(topics), overlay
        for name in topo.topics.names():
            assert topics[name]["partitions"] == topo.topics.partitions
            assert topics[name]["replicas"] == topo.topics.replication_factor
            assert topics[name]["config"]["retention.ms"] == topo.topics.retention_ms
        # The Faust app's own topics, with the partition count it declares (Faust refuses a mismatch).
        for name, partitions, _ in k8s_gen.faust_internal_topics(topo):
            assert topics[name]["partitions"] == partitions, name
        # State topics (the recommendations fold's; no Faust table changelogs since it replaced them) compact.
        state = [s for n, s in topics.items() if n.endswith(("-changelog", "-state"))]
        assert state and all("compact" in s["config"]["cleanup.policy"] for s in state)


def faust_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_scaledobject_follows_the_topology(rendered: Rendered) -> None:
    topo = default_topology()
    inputs = {topo.input_topic(r) for r in topo.routes}
    deployments = {o: d for o, d in docs_of(rendered, "Deployment")}
    for overlay, so in docs_of(rendered, "ScaledObject"):
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == deployments[overlay]["metadata"]["name"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= topo.topics.partitions
        kafka = [t["metadata"] for t in spec["triggers"] if t["type"] == "kafka"]
        assert {t["topic"] for t in kafka} == inputs
        env = {e["name"]: e.get("value") for e in faust_container(deployments[overlay])["env"]}
        for trigger in kafka:
            assert trigger["consumerGroup"] == topo.kafka.routes_group
            assert trigger["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
            assert int(trigger["lagThreshold"]) > 0


def test_faust_worker_entry_point_and_probes(rendered: Rendered) -> None:
    topo = default_topology()
    rayservices = {o: d for o, d in docs_of(rendered, "RayService")}
    for overlay, dep in docs_of(rendered, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        c = faust_container(dep)
        assert c["command"] == ["infertide", "worker", "--config", k8s_gen.CONFIG_PATH]
        (port,) = c["ports"]
        assert port["containerPort"] == topo.web_port and port["name"] == "web"
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
        assert pod["terminationGracePeriodSeconds"] >= 60
        env = {e["name"]: e for e in c["env"]}
        assert env["INFERTIDE_CONFIG"]["value"] == k8s_gen.CONFIG_PATH
        # The Faust web server binds 127.0.0.1 by default: kubelet probes and Prometheus need the pod IP.
        assert env["INFERTIDE_WEB_HOST"]["value"] == "0.0.0.0"
        assert env["RAY_ADDRESS"]["value"] == f"{rayservices[overlay]['metadata']['name']}-head-svc:6379"
        assert "secretKeyRef" in env["KAFKA_SASL_PASSWORD"]["valueFrom"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/etc/infertide"]]["configMap"]["name"].startswith("infertide-topology-")


def ray_pod_specs(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]
    ]


def test_ray_pods_mount_the_same_topology_and_expose_metrics(rendered: Rendered) -> None:
    configmaps = {o: d["metadata"]["name"] for o, d in docs_of(rendered, "ConfigMap")
                  if d["metadata"]["name"].startswith("infertide-topology")}
    for overlay, rs in docs_of(rendered, "RayService"):
        for pod in ray_pod_specs(rs):
            volumes = {v["name"]: v for v in pod["volumes"]}
            (c,) = pod["containers"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert volumes[mounts["/etc/infertide"]]["configMap"]["name"] == configmaps[overlay]
            assert {"name": "metrics", "containerPort": 8080} in c["ports"]
            assert c["image"] == faust_container(dict(docs_of(rendered, "Deployment"))[overlay])["image"]


def test_monitors_select_pods_with_those_ports(rendered: Rendered) -> None:
    for overlay, pm in docs_of(rendered, "PodMonitor"):
        labels = pm["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in pm["spec"]["podMetricsEndpoints"]}
        pods = [d["spec"]["template"] for o, d in docs_of(rendered, "Deployment") if o == overlay]
        pods += [{"metadata": {"labels": p_labels}, "spec": spec}
                 for o, rs in docs_of(rendered, "RayService") if o == overlay
                 for p_labels, spec in zip(
                     [rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]]
                     + [g["template"]["metadata"]["labels"] for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]],
                     ray_pod_specs(rs))]
        matched = [p for p in pods if labels.items() <= p["metadata"]["labels"].items()]
        assert matched, f"{overlay}: PodMonitor {pm['metadata']['name']} selects no pod"
        for p in matched:
            names = {port.get("name") for c in p["spec"]["containers"] for port in c.get("ports", [])}
            assert ports <= names
