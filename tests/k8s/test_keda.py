"""KEDA's own operator reads the routes' real consumer lag on a real Kafka broker and scales the workers.

The dev overlay's Deployment and ScaledObject go into a namespace of their own, the ScaledObject with
three test settings (the local broker's address, ``minReplicaCount: 0`` so that KEDA itself does the
0 -> 1 activation, and short polling and cooldown periods); its triggers (topics, consumer group,
thresholds, offset policy) are the manifest's. With lag committed for group ``infertide-routes``:

- the lag KEDA reads (``keda_scaler_metrics_value``, per trigger) equals the lag computed from the
  group's committed offsets (kafka-python's admin client) and the topics' end offsets (kcat);
- the ScaledObject becomes Ready and Active, the Deployment goes 0 -> 1, and the HPA KEDA creates names
  each trigger's external metric with the manifest's threshold;
- with the lag gone, KEDA scales the Deployment back to 0 after the cooldown;
- re-applying the manifest after KEDA scaled leaves KEDA's replica count alone (a manifest that set
  ``replicas`` would reset it: the reason base/faust.yaml sets none).

Not covered: replicas beyond 1. The HPA controller (kube-controller-manager) and KEDA's metrics
adapter, which would drive them from the same metric, are not run here.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from infertide.k8s.operators import metrics
from tests.k8s.kube import apply, get, kubectl, not_kept, wait_for

pytestmark = pytest.mark.kafka

NS = "infertide-keda"
GROUP = "infertide-routes"
PARTITIONS = 4
# Per trigger topic: (records produced per partition, committed offset per partition); lag is the difference.
PLAN = {
    "events.text": ([40, 40, 40, 40], [10, 25, 40, 3]),     # lag 30 + 15 + 0 + 37 = 82
    "events.image": ([6, 6, 6, 6], [6, 2, 6, 6]),          # lag 4
    "events.video": ([3, 3, 3, 3], [3, 3, 3, 3]),          # lag 0
}


def _scaled_docs(rendered: dict[str, list[dict[str, Any]]], bootstrap: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = copy.deepcopy(next(d for d in rendered["dev"] if d["kind"] == "Deployment"))
    so = copy.deepcopy(next(d for d in rendered["dev"] if d["kind"] == "ScaledObject"))
    for doc in (dep, so):
        doc["metadata"]["namespace"] = NS
    so["spec"].update(minReplicaCount=0, pollingInterval=2, cooldownPeriod=5)
    for trigger in so["spec"]["triggers"]:
        trigger["metadata"]["bootstrapServers"] = bootstrap
    return dep, so


@pytest.fixture(scope="module")
def lagging(kafka_bootstrap: str) -> Iterator[dict[str, int]]:
    """The three route topics with records and the group's committed offsets as in PLAN."""
    from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    existing = set(admin.list_topics())
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in PLAN if t not in existing])
    # the broker is the session's: a topic another test made must have the partitions PLAN expects
    found = {d.get("name") or d.get("topic"): len(d["partitions"]) for d in admin.describe_topics(list(PLAN))}
    assert found == dict.fromkeys(PLAN, PARTITIONS), f"route topics on the session broker: {found}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    ends = end_offsets(kafka_bootstrap)
    offsets = {}
    for topic, (produced, committed) in PLAN.items():
        for p in range(PARTITIONS):
            for i in range(produced[p]):
                producer.send(topic, b'{"probe": %d}' % i, partition=p)
            # relative to what the topic held already (the broker is shared by the session)
            offsets[TopicPartition(topic, p)] = OffsetAndMetadata(ends.get((topic, p), 0) + committed[p], "", -1)
    producer.flush()
    producer.close()
    commit(admin, offsets)
    yield {t: sum(p - c for p, c in zip(*PLAN[t], strict=True)) for t in PLAN}
    admin.close()


def commit(admin: Any, offsets: dict[Any, Any]) -> None:
    """Set the group's committed offsets (retried while the broker creates ``__consumer_offsets``)."""
    from kafka.errors import CoordinatorNotAvailableError, NotCoordinatorError

    def attempt() -> bool:
        try:
            errors = admin.alter_group_offsets(GROUP, offsets)
        except (CoordinatorNotAvailableError, NotCoordinatorError):
            return False
        assert all(e.__name__ == "NoError" for e in errors.values()), errors
        return True

    wait_for(f"committing offsets for {GROUP}", attempt, timeout_s=60, every_s=1)


def end_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    """The topics' end offsets, read with kcat (librdkafka: a client that is not ours)."""
    args = ["kcat", "-b", bootstrap, "-Q"]
    for topic in PLAN:
        args += [arg for p in range(PARTITIONS) for arg in ("-t", f"{topic}:{p}:-1")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "Unknown topic" in proc.stderr + proc.stdout:
        return {}
    out = {}
    for m in re.finditer(r"^(\S+) \[(\d+)\] offset (-?\d+)$", proc.stdout, re.M):
        out[m[1], int(m[2])] = int(m[3])
    return out


def group_lag(bootstrap: str) -> dict[str, int]:
    """Per topic: end offset (kcat) minus the group's committed offset (kafka-python admin), summed over partitions."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets({GROUP: None})[GROUP]
    finally:
        admin.close()
    ends = end_offsets(bootstrap)
    lag = dict.fromkeys(PLAN, 0)
    for tp, meta in committed.items():
        if tp.topic in lag:
            lag[tp.topic] += ends[tp.topic, tp.partition] - meta.offset
    return lag


def keda_view(url: str) -> dict[str, float]:
    """What KEDA's operator last read per trigger: ``keda_scaler_metrics_value`` of our ScaledObject."""
    out = {}
    for line in metrics(url).splitlines():
        if line.startswith("keda_scaler_metrics_value{") and f'namespace="{NS}"' in line:
            metric = re.search(r'metric="([^"]+)"', line)[1]  # type: ignore[index]
            out[metric] = float(line.rsplit(" ", 1)[1])
    return out


def replicas(cp: Any) -> int:
    return get(cp, "deployments.apps", "infertide-faust", NS)["spec"].get("replicas", 0)


@pytest.fixture(scope="module")
def scaled(control_plane: Any, keda: str, applied: Any, kafka_bootstrap: str, lagging: dict[str, int]) -> dict:
    dep, so = _scaled_docs(applied, kafka_bootstrap)
    kubectl(control_plane, "create", "namespace", NS)
    apply(control_plane, [dep])
    kubectl(control_plane, "scale", "deployment/infertide-faust", "-n", NS, "--replicas=0")
    apply(control_plane, [so])
    return {"deployment": dep, "scaledobject": so, "keda": keda}


def test_keda_reads_the_groups_lag(kafka_bootstrap: str, scaled: dict, lagging: dict[str, int]) -> None:
    assert group_lag(kafka_bootstrap) == lagging == {"events.text": 82, "events.image": 4, "events.video": 0}
    want = {f"s{i}-kafka-{t['metadata']['topic'].replace('.', '-')}": float(lagging[t["metadata"]["topic"]])
            for i, t in enumerate(scaled["scaledobject"]["spec"]["triggers"])}
    seen = wait_for(f"KEDA's metrics to read {want}", lambda: (v := keda_view(scaled["keda"])) == want and v,
                    timeout_s=60)
    assert seen == want


def test_the_scaledobject_activates_and_keda_scales_0_to_1(control_plane: Any, scaled: dict) -> None:
    def conditions() -> dict[str, str]:
        so = get(control_plane, "scaledobjects.keda.sh", "infertide-faust", NS)
        return {c["type"]: c["status"] for c in so.get("status", {}).get("conditions", [])}

    wait_for("ScaledObject Ready and Active", lambda: (c := conditions()).get("Ready") == "True"
             and c.get("Active") == "True" and c, timeout_s=60)
    wait_for("KEDA to scale the Deployment 0 -> 1", lambda: replicas(control_plane) == 1, timeout_s=60)


def test_the_hpa_keda_made_names_each_triggers_metric(control_plane: Any, scaled: dict) -> None:
    so = scaled["scaledobject"]
    hpa = wait_for("KEDA's HPA", lambda: get(control_plane, "horizontalpodautoscalers.autoscaling",
                                             "keda-hpa-infertide-faust", NS))
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "infertide-faust"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, so["spec"]["maxReplicaCount"])
    got = {m["external"]["metric"]["name"]: m["external"]["target"] for m in hpa["spec"]["metrics"]}
    want = {f"s{i}-kafka-{t['metadata']['topic'].replace('.', '-')}":
            {"type": "AverageValue", "averageValue": t["metadata"]["lagThreshold"]}
            for i, t in enumerate(so["spec"]["triggers"])}
    assert got == want
    for m in hpa["spec"]["metrics"]:
        assert m["external"]["metric"]["selector"] == {"matchLabels": {"scaledobject.keda.sh/name": "infertide-faust"}}
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert not not_kept(behavior, hpa["spec"]["behavior"]), not_kept(behavior, hpa["spec"]["behavior"])


def test_no_lag_scales_back_to_0_and_reapplying_keeps_kedas_count(
    control_plane: Any, scaled: dict, kafka_bootstrap: str
) -> None:
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.structs import OffsetAndMetadata

    wait_for("KEDA to scale the Deployment 0 -> 1", lambda: replicas(control_plane) == 1, timeout_s=60)
    ends = end_offsets(kafka_bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        commit(admin, {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in ends.items()})
    finally:
        admin.close()
    wait_for("KEDA to read no lag", lambda: set(keda_view(scaled["keda"]).values()) == {0.0}, timeout_s=60)
    wait_for("KEDA to scale the Deployment 1 -> 0 after the cooldown", lambda: replicas(control_plane) == 0,
             timeout_s=60)
    proc = apply(control_plane, [scaled["deployment"]], check=False)
    assert proc.returncode == 0, f"re-applying the Deployment after KEDA scaled it conflicts:\n{proc.stderr}"
    assert replicas(control_plane) == 0
    # Why base/faust.yaml sets no replicas: a manifest that does overrides KEDA's count on every apply,
    # server-side too (KEDA writes through the scale subresource and owns no field to conflict on).
    # (A dry run: KEDA would scale a real write straight back within a poll.)
    with_replicas = copy.deepcopy(scaled["deployment"])
    with_replicas["spec"]["replicas"] = 1
    proc = apply(control_plane, [with_replicas], "--dry-run=server", "-o", "json")
    assert json.loads(proc.stdout)["spec"]["replicas"] == 1
