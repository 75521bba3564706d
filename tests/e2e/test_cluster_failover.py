"""Partition leaders SIGKILLed mid-stream on a three-broker cluster: nothing lost, nothing repeated in exactly-once.

A cluster of its own (``LocalKafkaCluster``: three KRaft broker+controller nodes on loopback; topics with
replication 3 and ``min.insync.replicas`` 2, the transaction log and ``__consumer_offsets`` alike), the
package's shared Ray Serve app, one worker per guarantee, both guarantees side by side on the one cluster.
While events flow (produced with ``acks=all``, paced):

1. the node that leads an input partition of both topologies is SIGKILLed (the producers are still short
   of N/2); once its partitions have new leaders it is started again on its folder and waited for until
   every partition has 3 in-sync replicas (the producers wait at N/2 meanwhile);
2. the producers resume, and the node that then leads a result partition of both is SIGKILLed (they are
   between N/2 and 3N/4) and left down until the end, so the rest of the run has exactly
   ``min.insync.replicas`` (2) replicas.

A killed node may also be the active controller, a group coordinator or a transaction coordinator: the
workers must ride that out too (no restart). Every event must get its result (no dead letter), the
analytics windows must count each one once, and exactly-once must show no duplicate, all counted as a
``read_committed`` reader counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import ConfigResource

from infertide.clients.produce import now_ms, produce_events
from infertide.local.cluster import LocalKafkaCluster
from infertide.local.runtime import WorkerProcess
from schemas.events import TextEvent
from schemas.topology import Topology
from tests.e2e.conftest import (GUARANTEES, SharedServe, Stack, analytics_events, guarantee_edit, read_on, read_topic,
                                short, tally)

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(480)]

N = 2000
CHUNK = 40  # events per produce call, every PACE_S: about 80 events/s per guarantee
PACE_S = 0.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    c = LocalKafkaCluster(tmp_path_factory.mktemp("cluster"), brokers=3)
    t0 = time.monotonic()
    c.start()
    print(f"\n[cluster] 3 nodes up in {time.monotonic() - t0:.1f}s at {c.bootstrap}")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cluster_stack(cluster: LocalKafkaCluster, tiny_models_dir: Path, offline_model_env: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory, shared_serve: SharedServe) -> Stack:
    """The ``stack`` fixture's pieces against the cluster instead of the session broker (the Serve app is shared)."""
    serve = shared_serve.get(tiny_models_dir, {}, {})
    return Stack(cluster.bootstrap, serve.address, tiny_models_dir, tmp_path_factory.mktemp("e2e-cluster"),
                 dict(offline_model_env))


def _replicated(d: dict[str, Any]) -> None:
    d["topics"]["replication_factor"] = 3
    d["topics"]["min_insync_replicas"] = 2


def _pick(cluster: LocalKafkaCluster, topics: list[str]) -> tuple[int, dict[str, list[int]]]:
    """A node that leads a partition of every one of ``topics`` (else of the last), and which partitions."""
    leaders = {t: {p: cluster.leader(t, p) for p in cluster.in_sync(t)} for t in topics}
    led = {n.node_id: {t: sorted(p for p, lead in ps.items() if lead == n.node_id) for t, ps in leaders.items()}
           for n in cluster.nodes if n.alive}
    both = [n for n, by_topic in led.items() if all(by_topic.values())]
    node = both[0] if both else leaders[topics[-1]][0]
    return node, led[node]


def _failover(cluster: LocalKafkaCluster, node: int, led: dict[str, list[int]], timeout: float = 60) -> float:
    """SIGKILL ``node``; seconds until every partition it led has another leader."""
    t0 = time.monotonic()
    cluster.node(node).kill()
    while time.monotonic() - t0 < timeout:
        try:
            if all(cluster.leader(t, p, timeout=5) != node for t, ps in led.items() for p in ps):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - no leader yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"partitions {led} still had no other leader {timeout}s after node {node} was killed")


def _wait_in_sync(cluster: LocalKafkaCluster, topics: list[str], replicas: int, timeout: float = 90) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            parts = [cluster.in_sync(t) for t in topics]
            if all(parts) and all(len(isr) >= replicas for by_part in parts for isr in by_part.values()):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - metadata not there yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"{topics} not back to {replicas} in-sync replicas within {timeout}s")


def _min_isr(cluster: LocalKafkaCluster, topics: list[str], timeout: float = 60) -> dict[str, str]:
    """Each topic's ``min.insync.replicas``, asked again while a node does not know the topic yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            configs = cluster.admin().describe_configs([ConfigResource("topic", t) for t in topics])
            return {r.name: f.result(timeout=10)["min.insync.replicas"].value for r, f in configs.items()}
        except Exception:  # noqa: BLE001 - e.g. UNKNOWN_TOPIC_OR_PARTITION from a node not caught up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class PacedProducer(threading.Thread):
    """Produces ``events`` in chunks every ``PACE_S``; waits at each gate ``(index, Event)`` until it is set,
    so a fault always lands while events are still to come."""

    def __init__(self, topology: Topology, events: list[TextEvent], gates: list[tuple[int, threading.Event]]) -> None:
        super().__init__(daemon=True)
        self.topology, self.events, self.gates = topology, events, gates
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(0, len(self.events), CHUNK):
                for at, gate in self.gates:
                    if i >= at:
                        gate.wait(240)
                produce_events(self.topology, "text", self.events[i:i + CHUNK])
                self.sent = i + len(self.events[i:i + CHUNK])
                time.sleep(PACE_S)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err


def _results(stack: Stack, topology: Topology, ids: set[str], guarantee: str) -> dict[str, Any]:
    results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=180,
                         until=lambda r: ids <= {v["event_id"] for _, _, v in r})
    if guarantee == "exactly-once":  # a duplicate committed after the last id arrived would show here
        results = read_on(stack.bootstrap, topology.topics.sentiment, results, settle_s=3)
    dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
    lost, duplicates = tally(ids, results, dlq)
    return {"results": len(results), "lost": lost, "duplicates": duplicates, "dlq": len(dlq),
            "analytics": analytics_events(stack.bootstrap, topology, "text", expect_in=len(ids), timeout=60)}


def test_leaders_killed_mid_stream_lose_nothing(cluster: LocalKafkaCluster, cluster_stack: Stack) -> None:
    stack = cluster_stack
    rejoined, after_result_kill = threading.Event(), threading.Event()
    topologies: dict[str, Topology] = {}
    workers: dict[str, WorkerProcess] = {}
    producers: dict[str, PacedProducer] = {}
    events = [TextEvent(event_id=f"cf-{i}", ts=now_ms(), text=f"{'good' if i % 2 else 'bad'} {i}") for i in range(N)]
    ids = {e.event_id for e in events}
    runs: dict[str, dict[str, Any]] = {g: {} for g in GUARANTEES}
    faults: dict[str, Any] = {}
    try:
        for g in GUARANTEES:
            topology, path = stack.topology(f"cfail-{short(g)}", edit=guarantee_edit(g, then=_replicated),
                                            text={"batch_size": 32, "max_in_flight": 4})
            topologies[g] = topology
            workers[g] = stack.worker(topology, path, f"cfail-{short(g)}-worker", own_port=True).start()
        inputs = [topologies[g].topics.text for g in GUARANTEES]
        outputs = [topologies[g].topics.sentiment for g in GUARANTEES]
        _wait_in_sync(cluster, inputs + outputs, 3, timeout=60)  # just created: every node learns them in turn
        isr = {t: cluster.in_sync(t) for t in inputs + outputs}
        min_isr = _min_isr(cluster, inputs + outputs)
        for g in GUARANTEES:
            workers[g].wait_ready()
        for g in GUARANTEES:
            producers[g] = PacedProducer(topologies[g], events, [(N // 2, rejoined), (3 * N // 4, after_result_kill)])
            producers[g].start()
        for g in GUARANTEES:
            runs[g]["seen_before"] = len(read_topic(stack.bootstrap, topologies[g].topics.sentiment, timeout=120,
                                                    until=lambda r: len(r) >= N // 10))

        node_a, led_a = _pick(cluster, inputs)
        faults["a"] = {"node": node_a, "led": led_a, "sent": {g: p.sent for g, p in producers.items()}}
        faults["a"]["failover_s"] = _failover(cluster, node_a, led_a)
        t0 = time.monotonic()
        cluster.node(node_a).start(timeout=90)
        faults["a"]["rejoin_s"] = time.monotonic() - t0 + _wait_in_sync(cluster, inputs + outputs, 3)
        rejoined.set()  # the producers resume from N/2: the second kill lands while they send N/2..3N/4
        deadline = time.monotonic() + 60
        while min(p.sent for p in producers.values()) <= N // 2 and time.monotonic() < deadline:
            time.sleep(0.1)

        node_b, led_b = _pick(cluster, outputs)
        faults["b"] = {"node": node_b, "led": led_b, "sent": {g: p.sent for g, p in producers.items()}}
        faults["b"]["failover_s"] = _failover(cluster, node_b, led_b)
        after_result_kill.set()

        for g in GUARANTEES:
            producers[g].join(240)
            runs[g] |= {"produced": producers[g].sent, "produce_error": producers[g].error}
        for g in GUARANTEES:
            runs[g] |= _results(stack, topologies[g], ids, g)
            runs[g] |= {"alive": workers[g].alive(), "tail": workers[g].tail()}
    finally:
        rejoined.set()
        after_result_kill.set()
        for g, w in workers.items():
            runs[g]["exit"] = w.stop()

    print(f"\n[cluster failover] topics: replicas {sorted({len(r) for t in isr.values() for r in t.values()})}, "
          f"min.insync.replicas {sorted(set(min_isr.values()))}")
    for key, what in (("a", "input"), ("b", "result")):
        f = faults[key]
        print(f"[cluster failover] {what} leader node {f['node']} (led {f['led']}) SIGKILLed after "
              f"{f['sent']} events produced; new leaders in {f['failover_s']:.1f}s"
              + (f"; restarted, 3 in-sync replicas again {f['rejoin_s']:.1f}s later" if key == "a"
                 else "; left down until the end"))
    for g, r in runs.items():
        a = r["analytics"]
        print(f"[cluster failover {g}] {N} events: {r['results']} results, {len(r['lost'])} lost, "
              f"{r['duplicates']} duplicates, {r['dlq']} dead letters; analytics in/out "
              f"{a.get('in', 0):.0f}/{a.get('out', 0):.0f}; worker alive {r['alive']}, exit {r['exit']}")

    assert all(len(r) == 3 for t in isr.values() for r in t.values()), isr
    assert set(min_isr.values()) == {"2"}, min_isr
    for g, r in runs.items():
        assert r["produce_error"] is None, f"{g}: the acks=all producer failed: {r['produce_error']!r}"
        assert r["produced"] == N
        assert r["seen_before"] < N // 2, "the first kill must land while events still flow"
        assert faults["a"]["sent"][g] < N // 2, f"{g}: node {faults['a']['node']} must die mid-stream"
        assert N // 2 < faults["b"]["sent"][g] < 3 * N // 4, f"{g}: node {faults['b']['node']} must die mid-stream"
        assert r["alive"], f"{g}: the worker must ride out both kills:\n{r['tail']}"
        assert not r["lost"], f"{g}: {len(r['lost'])} events lost, e.g. {sorted(r['lost'])[:5]}"
        assert r["dlq"] == 0
        a = r["analytics"]
        assert a.get("in") == N, (g, a)
        assert (a.get("out"), a.get("dlq", 0)) == (N, 0), (g, a)
    assert runs["exactly-once"]["duplicates"] == 0, "exactly-once: every result committed once"
    assert runs["exactly-once"]["results"] == N
