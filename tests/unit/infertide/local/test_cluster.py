"""LocalKafkaCluster's layout, checked without starting a JVM: ids, ports, one quorum, one cluster id,
replication and min.insync.replicas per size (the real cluster: tests/e2e/test_cluster_failover.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infertide.local.broker import BrokerError
from infertide.local.cluster import LocalKafkaCluster, default_min_isr


@pytest.mark.parametrize(("brokers", "min_isr"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_default_min_isr_lets_one_node_fail(brokers: int, min_isr: int) -> None:
    assert default_min_isr(brokers) == min_isr


def test_wrong_sizes_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="at least 1"):
        LocalKafkaCluster(tmp_path, brokers=0)
    with pytest.raises(BrokerError, match="one port per broker"):
        LocalKafkaCluster(tmp_path, brokers=3, ports=[9092])
    with pytest.raises(BrokerError, match="min_isr 4"):
        LocalKafkaCluster(tmp_path, brokers=3, min_isr=4)


def _props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_three_nodes_share_one_quorum_and_replicate_three_times(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster(tmp_path, brokers=3, ports=[19092, 19093, 19094])
    cluster._make_nodes()  # our own: the layout start() launches
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    for n in cluster.nodes:
        n.workdir.mkdir()
    props = [_props(n._write_config(n.controller_port)) for n in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert len({p["controller.quorum.voters"] for p in props}) == 1
    voters = props[0]["controller.quorum.voters"].split(",")
    assert [v.split("@")[0] for v in voters] == ["1", "2", "3"]
    assert len({v.split(":")[-1] for v in voters}) == 3  # a controller port each
    for p in props:
        assert p["offsets.topic.replication.factor"] == p["transaction.state.log.replication.factor"] == "3"
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
    assert len({n.cluster_id for n in cluster.nodes}) == 1
    assert {n.workdir.name for n in cluster.nodes} == {"node-1", "node-2", "node-3"}


def test_a_second_start_on_the_folder_finds_the_same_cluster(tmp_path: Path) -> None:
    first = LocalKafkaCluster(tmp_path, brokers=3)
    first._make_nodes()
    for n in first.nodes:  # as a launch leaves them: formatted data, saved controller port
        (n.workdir / "data").mkdir(parents=True)
        (n.workdir / "controller.port").write_text(str(n.controller_port))
    again = LocalKafkaCluster(tmp_path, brokers=3)
    again._make_nodes()
    assert again.nodes[0].voters == first.nodes[0].voters
    assert again.nodes[0].cluster_id == first.nodes[0].cluster_id
