"""The bench's topology: a user's file kept but moved onto bench topics; --tiny said plainly; missing checkpoints named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infertide.bench import topology as bt
from infertide.bench.options import BenchOptions
from schemas.topology import default_topology_path, parse_topology


def test_default_config_without_checkpoints_names_them_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(bt.MissingCheckpoints) as err:
        bt.config_dict(default_topology_path(), tiny=False, models_dir=tmp_path)
    msg = str(err.value)
    assert "detection (detection: 'yolo11n.pt')" in msg and "--tiny" in msg


def test_tiny_swaps_checkpoints_keeps_batching_and_says_so(tiny_models_dir: Path) -> None:
    data, notes = bt.config_dict(default_topology_path(), tiny=True, models_dir=tiny_models_dir)
    original = yaml.safe_load(default_topology_path().read_text())
    for name, m in data["models"].items():
        assert m["model"] != original["models"][name]["model"]
        assert original["models"][name]["batching"].items() <= m["batching"].items()
        assert any(f"model {name!r}" in n and "random weights" in n for n in notes)
    video = next(r for r in data["routes"] if r["kind"] == "video")
    assert video["sampling"] is None and any("video sampling off" in n for n in notes)


def test_for_run_moves_every_topic_group_and_port(tmp_path: Path) -> None:
    data = bt.builtin_dict(BenchOptions(model="echo", workers=6), tmp_path)
    run = bt.for_run(data, BenchOptions(model="echo", workers=6), "127.0.0.1:1", "bench-x", 7001)
    topo = parse_topology(run)
    assert all(t.startswith("bench-x.") for t in topo.topics.names())
    assert topo.topics.partitions == 6  # max(4, workers): every worker can hold one
    assert (topo.kafka.bootstrap_servers, topo.kafka.consumer_group, topo.web_port) == \
        ("127.0.0.1:1", "bench-x-group", 7001)


def test_builtin_rejects_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--model must be sentiment or echo"):
        bt.builtin_dict(BenchOptions(model="gpt"), tmp_path)
