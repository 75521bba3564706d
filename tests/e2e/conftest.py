"""The whole pipeline for end-to-end tests: real Kafka, a real Ray Serve app with the tiny models,
and ``infertide worker`` child processes (the same runtime ``infertide up`` uses)."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from PIL import Image

from infertide.clients.admin import ensure_topics
from infertide.local.broker import free_port
from infertide.local.runtime import RayServe, WorkerProcess
from infertide.demo.tiny_models import tiny_topology_dict
from infertide.demo.topology import on_own_topics, video_route
from schemas.topology import Topology, parse_topology



@dataclass
class Stack:
    bootstrap: str
    ray_address: str
    models_dir: Path
    workdir: Path
    env: dict[str, str]
    limits: dict[str, Any] = field(default_factory=dict)

    def topology(self, prefix: str, edit: Callable[[dict[str, Any]], None] | None = None,
                 **route_overrides: Any) -> tuple[Topology, Path]:
        """A topology with its own topics and consumer group (so tests don't share state); ``edit`` may
        change its data before it is validated."""
        d = on_own_topics(tiny_topology_dict(self.models_dir, shapes=True, finetuned=True), prefix=prefix,
                          bootstrap=self.bootstrap, partitions=4)
        d["routes"].append(video_route(max_in_flight=4))
        for r in d["routes"]:
            r.update(route_overrides.get(r["name"], {}))
        d["analytics"] = {"window_s": 2}
        d["recommendations"] = {"top_k": 3, "item_pool_size": 500}
        d["web_port"] = free_port()
        if self.limits:
            d["limits"] = self.limits
        if edit is not None:
            edit(d)
        path = self.workdir / f"{prefix}.yaml"
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        topology = parse_topology(d, str(path))
        ensure_topics(topology)
        return topology, path

    def worker(self, topology: Topology, path: Path, name: str, *, own_port: bool = False) -> WorkerProcess:
        """An ``infertide worker`` of ``topology``; ``own_port`` gives it a web port of its own (several at once)."""
        port = free_port() if own_port else topology.web_port
        return WorkerProcess(path, self.ray_address, port, self.workdir / f"{name}.log", env=self.env)


#: Modules whose Serve app differs from the shared one (their own ``stack_limits`` / ``stack_env``): they run
#: last, each once, so the shared app starts once for the others (a start costs 20-100 s on these cores).
OWN_SERVE_LAST = ("test_hostile_input.py", "test_tracing.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = [i for i, item in enumerate(items) if item.path.parent == Path(__file__).parent]
    ordered = sorted((items[i] for i in here), key=lambda item: (
        OWN_SERVE_LAST.index(item.path.name) + 1 if item.path.name in OWN_SERVE_LAST else 0))
    for i, item in zip(here, ordered):
        items[i] = item


@pytest.fixture(scope="module")
def stack_limits() -> dict[str, Any]:
    """The ``limits:`` section of the module's Serve app and of every topology its stack makes
    (one config for both halves); a test module overrides this fixture to set its own."""
    return {}


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Environment for the module's Serve replicas and workers (e.g. tracing); a module overrides it."""
    return {}


class SharedServe:
    """One local Ray cluster with the tiny Serve app for all e2e modules: started again only when a
    module asks for other ``limits`` or replica environment (a start costs ~20 s on these cores)."""

    def __init__(self) -> None:
        self.serve: RayServe | None = None
        self.key = ""

    def get(self, models_dir: Path, limits: dict[str, Any], env: dict[str, str]) -> RayServe:
        key = json.dumps([limits, env], sort_keys=True)
        if self.serve is None or key != self.key:
            self.close()
            # shapes: tests/e2e/test_video_tracking.py; finetuned (sentiment_ft): tests/e2e/test_rollout.py
            data = tiny_topology_dict(models_dir, shapes=True, finetuned=True)
            if limits:
                data["limits"] = limits
            self.serve = RayServe(parse_topology(data, "<tiny>"), num_cpus=2, env=dict(env)).start()
            self.key = key
        return self.serve

    def close(self) -> None:
        if self.serve is not None:
            self.serve.stop()
            self.serve = None


@pytest.fixture(scope="package")
def shared_serve() -> Iterator[SharedServe]:
    shared = SharedServe()
    try:
        yield shared
    finally:  # before tests/integration, whose tests start Ray in this process too
        shared.close()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tiny_models_dir: Path, offline_model_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory, stack_limits: dict[str, Any], stack_env: dict[str, str],
          shared_serve: SharedServe) -> Stack:
    serve = shared_serve.get(tiny_models_dir, stack_limits, stack_env)
    return Stack(kafka_bootstrap, serve.address, tiny_models_dir, tmp_path_factory.mktemp("e2e"),
                 dict(offline_model_env) | stack_env, dict(stack_limits))


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[Any]], bool], timeout: float,
               decode: bool = True, **client_kw: Any) -> list[Any]:
    """Every record of ``topic`` from the beginning, read until ``until(records)`` or ``timeout``.

    Records are ``(partition, offset, value)`` with ``value`` decoded from JSON. ``client_kw``: more
    kafka-python settings (security).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id=f"t-{uuid.uuid4().hex[:6]}",
                             isolation_level="read_committed", **client_kw)
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(records):
            for batch in consumer.poll(timeout_ms=200, max_records=500).values():
                records.extend((m.partition, m.offset, orjson.loads(m.value) if decode else m.value) for m in batch)
    finally:
        consumer.close()
    return records


def read_on(bootstrap: str, topic: str, records: list[Any], *, settle_s: float = 2.0) -> list[Any]:
    """``records`` (an earlier :func:`read_topic` of ``topic``) and what the topic holds beyond them when read
    again for ``settle_s``: a duplicate committed after the last awaited record would show here."""
    return records + read_topic(bootstrap, topic, timeout=settle_s, until=lambda r: False)[len(records):]


def jpeg_b64(i: int) -> str:
    """A small solid-colour JPEG, base64 (a different colour per ``i``), for inline image events."""
    img = Image.new("RGB", (64, 48), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def latest_windows(records: list[Any]) -> list[dict[str, Any]]:
    """The analytics windows of ``read_topic`` records, one per (metric, key, start): a window emitted
    again (its owner moved before committing it) replaces the first, as a consumer must read the topic."""
    return list({(w["metric"], w["key"], w["window_start"]): w for _, _, w in records}.values())


def analytics_events(bootstrap: str, topology: Topology, route: str, *, expect_in: int,
                     timeout: float = 15.0) -> dict[str, float]:
    """The ``events`` counters of ``route`` summed over the analytics windows emitted so far
    (``in``, ``out``, ``dlq``...), read until ``in`` reaches ``expect_in`` or ``timeout``.

    Windows emitted twice count once (:func:`latest_windows`)."""

    def totals(records: list[Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in latest_windows(records):
            if w["metric"] == "events" and w["key"] == route:
                for k, v in w["values"].items():
                    out[k] = out.get(k, 0) + v
        return out

    records = read_topic(bootstrap, topology.topics.analytics, timeout=timeout,
                         until=lambda r: totals(r).get("in", 0) >= expect_in)
    return totals(records)


def rss_mb(worker: WorkerProcess, field: str = "VmRSS") -> float:
    """The worker process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), in MB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{worker.proc.pid}/status").read_text() if worker.proc else ""
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(f"{field}:")), 0.0)


def peak_rss_mb(worker: WorkerProcess) -> float:
    return rss_mb(worker, "VmHWM")


GUARANTEES = ("at-least-once", "exactly-once")


def short(guarantee: str) -> str:
    """``alo`` / ``eos``: names topics, groups and worker ids apart per guarantee."""
    return "eos" if guarantee == "exactly-once" else "alo"


def guarantee_edit(guarantee: str, then: Callable[[dict[str, Any]], None] | None = None
                   ) -> Callable[[dict[str, Any]], None]:
    """A ``Stack.topology`` edit that sets ``delivery.processing_guarantee`` (and applies ``then``)."""

    def edit(d: dict[str, Any]) -> None:
        d["delivery"] = {"processing_guarantee": guarantee}
        if then is not None:
            then(d)

    return edit


def side_by_side(scenario: Callable[[str], Any]) -> dict[str, Any]:
    """``scenario(guarantee)`` for both guarantees at once, each on topics, groups and workers of its own
    (threads: a fault scenario mostly waits), so a fault test costs one run's time and compares both."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(GUARANTEES)) as pool:
        futures = {g: pool.submit(scenario, g) for g in GUARANTEES}
        return {g: f.result() for g, f in futures.items()}


def tally(ids: set[str], results: list[Any], dlq: list[Any]) -> tuple[set[str], int]:
    """(lost, duplicates) of ``ids`` over result and dead-letter records (``read_topic`` rows)."""
    from collections import Counter

    out = Counter(v["event_id"] for _, _, v in results) + Counter(v.get("event_id") for _, _, v in dlq)
    return ids - set(out), sum(c - 1 for c in out.values() if c > 1)
