"""A local Apache Kafka cluster of N KRaft nodes on loopback, for fault tests and local runs that need replication.

Every node is broker and controller at once (``process.roles=broker,controller``), with its own client
port, controller port and folder (``workdir/node-<id>``); the controllers form one static quorum
(``controller.quorum.voters``), so the cluster outlives any one node: with 3 nodes, 2 still elect a
controller and lead every partition. Topics default to replication N and ``min.insync.replicas``
``min(2, N - 1)`` (2 for 3 nodes: one node may die and ``acks=all`` writes still succeed); the
transaction log and ``__consumer_offsets`` alike. :meth:`LocalKafkaCluster.leader` says which node
leads a partition, so a test can SIGKILL exactly that one (:meth:`LocalKafka.kill`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from infertide.local.broker import BrokerError, LocalKafka, free_port, new_cluster_id

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = ["LocalKafkaCluster", "default_min_isr"]

log = logging.getLogger(__name__)


def default_min_isr(brokers: int) -> int:
    """``min.insync.replicas`` that lets one node fail with ``acks=all`` writes going on: 1 for 1-2 nodes, else 2."""
    return max(1, min(2, brokers - 1))


@dataclass
class LocalKafkaCluster:
    """N KRaft broker+controller nodes on 127.0.0.1.

    Args:
        workdir: the cluster's folder; node ``i`` lives in ``workdir/node-<i>`` (created).
        brokers: how many nodes (1 is allowed: a single node laid out like a cluster).
        ports: client ports, one per node (None: free ones).
        heap: JVM heap of each node.
        min_isr: ``min.insync.replicas`` (None: :func:`default_min_isr`).
        tie_to_parent: SIGTERM the nodes when the process that started them dies (Linux).
    """

    workdir: Path
    brokers: int = 3
    ports: list[int] | None = None
    heap: str = "384m"
    min_isr: int | None = None
    tie_to_parent: bool = True
    nodes: list[LocalKafka] = field(default_factory=list, repr=False)
    _admin_client: AdminClient | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.brokers < 1:
            raise BrokerError(f"brokers must be at least 1 (got {self.brokers})")
        if self.ports is not None and len(self.ports) != self.brokers:
            raise BrokerError(f"{len(self.ports)} ports given for {self.brokers} brokers: give one port per broker")
        min_isr = self.min_isr if self.min_isr is not None else default_min_isr(self.brokers)
        if not 1 <= min_isr <= self.brokers:
            raise BrokerError(f"min_isr {min_isr} must be between 1 and the number of brokers ({self.brokers})")
        self.min_isr = min_isr

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (clients need only one that answers)."""
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return next(n for n in self.nodes if n.node_id == node_id)

    def _make_nodes(self) -> None:
        """The nodes' fixed facts (ids, ports, quorum, cluster id), kept in ``workdir/cluster.id`` and the
        nodes' own folders so that a start on the same folder finds the same cluster."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        saved = self.workdir / "cluster.id"
        cluster_id = saved.read_text().strip() if saved.is_file() else new_cluster_id()
        saved.write_text(cluster_id)
        ids = range(1, self.brokers + 1)
        dirs = {i: self.workdir / f"node-{i}" for i in ids}
        ctrl = {}
        for i in ids:
            port_file = dirs[i] / "controller.port"
            ctrl[i] = int(port_file.read_text()) if port_file.is_file() and (dirs[i] / "data").exists() else free_port()
        voters = ",".join(f"{i}@127.0.0.1:{ctrl[i]}" for i in ids)
        ports = self.ports or [0] * self.brokers
        self.nodes = [LocalKafka(dirs[i], port=ports[i - 1], heap=self.heap, tie_to_parent=self.tie_to_parent,
                                 node_id=i, controller_port=ctrl[i], voters=voters, cluster_id=cluster_id,
                                 replication=self.brokers, min_isr=self.min_isr or 1) for i in ids]

    def start(self, timeout: float = 90.0) -> LocalKafkaCluster:
        """Launch every node, then wait until each answers and the metadata lists all of them."""
        if not self.nodes:
            self._make_nodes()
        try:
            for n in self.nodes:
                if n.port == 0:
                    n.port = free_port()
                n.launch()
            deadline = time.monotonic() + timeout
            for n in self.nodes:
                n.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_brokers(self.brokers, max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def admin(self) -> AdminClient:
        """One confluent-kafka admin client of the cluster (it finds a live node by itself); its log lines
        (a killed node's refused connections) go to this module's logger, not to stderr."""
        from confluent_kafka.admin import AdminClient

        if self._admin_client is None:
            self._admin_client = AdminClient({"bootstrap.servers": self.bootstrap, "logger": log})
        return self._admin_client

    def brokers_up(self) -> set[int]:
        """The node ids the cluster's metadata lists as live brokers now."""
        return set(self.admin().list_topics(timeout=5).brokers)

    def wait_brokers(self, count: int, timeout: float) -> None:
        """Wait until the metadata lists ``count`` live brokers (after a start, or a node's restart)."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while time.monotonic() < deadline:
            try:
                if len(seen := self.brokers_up()) >= count:
                    return
            except Exception:  # noqa: BLE001 - keep polling until the deadline
                pass
            time.sleep(0.5)
        raise BrokerError(f"only brokers {sorted(seen)} of {count} registered within {timeout:.0f}s; see the "
                          f"broker.log of each node under {self.workdir}")

    def leader(self, topic: str, partition: int, timeout: float = 10.0) -> int:
        """The node id that leads ``topic``'s ``partition`` now (metadata from any live node)."""
        meta = self.admin().list_topics(topic, timeout=timeout)
        part = meta.topics[topic].partitions.get(partition)
        if part is None or part.leader < 0:
            raise BrokerError(f"{topic}[{partition}] has no leader now")
        return part.leader

    def in_sync(self, topic: str, timeout: float = 10.0) -> dict[int, list[int]]:
        """``{partition: in-sync replica ids}`` of ``topic`` now."""
        meta = self.admin().list_topics(topic, timeout=timeout)
        return {p: sorted(m.isrs) for p, m in meta.topics[topic].partitions.items()}

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every node we started (SIGKILL after ``timeout``), all at once, then wait for each."""
        from infertide.local.broker import terminate

        procs = [n for n in self.nodes if n.proc is not None]
        for n in procs:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.terminate()
        for n in procs:
            if n.proc is not None:
                terminate(n.proc, timeout)
                n.pid_file.unlink(missing_ok=True)
                n.proc = None
        self._admin_client = None  # it would keep trying the stopped nodes

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
