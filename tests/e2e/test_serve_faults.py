"""Serve faults: a replica killed mid-stream, a model that raises for some inputs, a model that is slow.

- Replica killed (``ray.kill``) while events flow: the calls it held fail, are retried, and
  wait for the replica Serve starts again; every event gets its result, nothing is dead-lettered.

- Raises for some inputs (the echo model's ``fail_on``): the replica splits the failed forward
  until the breaking inputs fail alone; those go to the dead-letter topic with the model's
  error, every other event gets its result, nothing is lost.
- Slow (``delay_ms``): lag grows while the worker's memory stays bounded (it stops fetching:
  backpressure), nothing is dead-lettered for slowness alone, and once the model is fast again
  (a live ``user_config`` change) the backlog drains completely.

Each runs a Serve application of its own (an echo deployment) beside the module's tiny one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from ray import serve

from infertide.clients.produce import now_ms, produce_events
from infertide.local.runtime import WorkerProcess
from schemas.events import TextEvent
from schemas.topology import Topology
from tests.e2e.conftest import GUARANTEES, Stack, analytics_events, peak_rss_mb, read_on, read_topic, rss_mb, short
from workers.app import build_application

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]


def _echo_route(options: dict[str, Any], app: str, guarantee: str = "at-least-once") -> Any:
    def edit(d: dict[str, Any]) -> None:
        d["delivery"] = {"processing_guarantee": guarantee}
        echo = d["models"]["echo"]
        d["models"] = {"echo": echo | {"options": options, "batching": {"max_batch_size": 32,
                                                                         "batch_wait_timeout_s": 0.01}}}
        d["routes"] = [{"name": "text", "input": "text", "kind": "text", "models": ["echo"], "batch_size": 64,
                        "batch_within_s": 0.05, "max_in_flight": 4, "call_timeout_s": 30}]
        d["serve_app_name"] = app
    return edit


def _deploy(topology: Topology) -> None:
    serve.run(build_application(topology), name=topology.serve_app_name,
              route_prefix=f"/{topology.serve_app_name}")


@contextmanager
def _echo_worker(stack: Stack, prefix: str, options: dict[str, Any], guarantee: str = "at-least-once"
                 ) -> Iterator[tuple[Topology, WorkerProcess]]:
    """A Serve app ``faults-<prefix>`` with one echo deployment (``options``), and a ready worker routing to it."""
    topology, path = stack.topology(prefix, edit=_echo_route(options, f"faults-{prefix}", guarantee))
    _deploy(topology)
    worker = stack.worker(topology, path, f"{prefix}-worker").start()
    try:
        worker.wait_ready()
        yield topology, worker
    finally:
        assert worker.stop() == 0, worker.tail()
        serve.delete(topology.serve_app_name)


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_replica_killed_mid_stream_costs_nothing(stack: Stack, guarantee: str) -> None:
    import ray

    n = 3000
    prefix = f"kill-{short(guarantee)}"
    with _echo_worker(stack, prefix, {"delay_ms": 5}, guarantee) as (topology, worker):
        events = [TextEvent(event_id=f"rk-{i}", ts=now_ms(), text=f"text {i}") for i in range(n)]
        producer = threading.Thread(target=lambda: [produce_events(topology, "text", events[i:i + 150])
                                                    or time.sleep(0.1) for i in range(0, n, 150)])
        producer.start()
        seen = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=60, until=lambda r: len(r) >= n // 5)
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith(f"SERVE_REPLICA::faults-{prefix}#echo#")]
        assert len(replicas) == 1, replicas
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
        killed_at = len(seen)
        producer.join(60)
        ids = {e.event_id for e in events}
        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=120,
                             until=lambda r: ids <= {v["event_id"] for _, _, v in r})
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=n)
        results = read_on(stack.bootstrap, topology.topics.sentiment, results)
        dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
        rss = peak_rss_mb(worker)
    out = Counter(v["event_id"] for _, _, v in results)
    lost = ids - set(out)
    print(f"\n[replica kill {guarantee}] killed after {killed_at} results; {n} events: {len(results)} results, {len(lost)} lost, "
          f"{sum(c - 1 for c in out.values())} duplicates, {len(dlq)} dead letters; analytics in/out "
          f"{analytics.get('in', 0):.0f}/{analytics.get('out', 0):.0f}; worker peak RSS {rss:.0f} MB; "
          "0 worker restarts, 1 replica restart")
    assert not lost and not dlq
    assert analytics.get("in") == n and analytics.get("out") == n
    if guarantee == "exactly-once":
        assert len(results) == n, "exactly-once: every result committed once"


def test_a_model_that_raises_for_some_inputs_dead_letters_only_those(stack: Stack) -> None:
    n, poison = 2000, set(range(7, 2000, 97))  # 21 events that break the model, spread over batches
    events = [TextEvent(event_id=f"p-{i}", ts=now_ms(), text=("POISON " if i in poison else "fine ") + str(i))
              for i in range(n)]
    with _echo_worker(stack, "poison", {"fail_on": "POISON"}) as (topology, worker):
        produce_events(topology, "text", events)
        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=120,
                             until=lambda r: len(r) >= n - len(poison))
        dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=30, until=lambda r: len(r) >= len(poison))
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=n)
        rss = peak_rss_mb(worker)
    ok = Counter(v["event_id"] for _, _, v in results)
    dead = {v["event_id"]: v for _, _, v in dlq}
    print(f"\n[poison] {n} in, {len(ok)} results, {len(dead)} dead letters; analytics in/out/dlq "
          f"{analytics.get('in', 0):.0f}/{analytics.get('out', 0):.0f}/{analytics.get('dlq', 0):.0f}; "
          f"worker peak RSS {rss:.0f} MB; 0 restarts")
    assert (analytics.get("in"), analytics.get("out"), analytics.get("dlq")) == (n, n - len(poison), len(poison))
    assert set(dead) == {f"p-{i}" for i in poison}
    assert set(ok) == {f"p-{i}" for i in range(n) if i not in poison} and max(ok.values()) == 1
    assert all(v["stage"] == "infer" and v["error_class"] == "RuntimeError" and "fail_on" in v["error"]
               for v in dead.values())


def test_a_slow_model_grows_lag_not_memory_and_the_backlog_drains_when_it_recovers(stack: Stack) -> None:
    n = 20_000
    with _echo_worker(stack, "slow", {"delay_ms": 250}) as (topology, worker):
        pad = "x" * 4000  # ~4 KB events: the backlog below is 80 MB
        produce_events(topology, "text", [TextEvent(event_id=f"w-{i}", ts=now_ms(), text=pad) for i in range(64)])
        read_topic(stack.bootstrap, topology.topics.sentiment, timeout=60, until=lambda r: len(r) >= 64)
        base_rss = rss_mb(worker)  # warm: Serve handle and clients made, first batches done
        produce_events(topology, "text", (TextEvent(event_id=f"s-{i}", ts=now_ms(), text=f"{i} {pad}")
                                          for i in range(n)))
        peak, t0, series = base_rss, time.monotonic(), []
        while time.monotonic() - t0 < 15:
            series.append(rss_mb(worker))
            peak = max(peak, series[-1])
            time.sleep(0.5)
        early = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=3, until=lambda r: False)
        slow_rate = len(early) / (time.monotonic() - t0)
        assert len(early) < n / 2, "the model was meant to be slower than the backlog"

        fast = _echo_route({"delay_ms": 0}, "faults-slow")
        fixed, _ = stack.topology("slow", edit=fast)
        _deploy(fixed)  # a user_config change: the live replica is reconfigured, not restarted
        t1 = time.monotonic()
        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=180,
                             until=lambda r: len({v["event_id"] for _, _, v in r}) >= n + 64)
        drained_s = time.monotonic() - t1
        lagging_peak, peak = peak, max(peak, peak_rss_mb(worker))
        dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=n + 64)
    ids = {v["event_id"] for _, _, v in results if v["event_id"].startswith("s-")}
    print(f"\n[slow] {n} events of 4 KB; slow model: {slow_rate:.0f} results/s, {len(early)} in 15 s; "
          f"worker RSS {base_rss:.0f} MB warm -> {series[-1]:.0f} MB after 15 s of lag (peak {lagging_peak:.0f}) -> peak "
          f"{peak:.0f} MB draining; recovered: backlog drained in {drained_s:.1f} s "
          f"({(n - len(early)) / drained_s:.0f} results/s); dead letters {len(dlq)}; analytics in/out "
          f"{analytics.get('in', 0):.0f}/{analytics.get('out', 0):.0f} of {n + 64}")
    assert ids == {f"s-{i}" for i in range(n)}
    assert not dlq, "slowness alone must not dead-letter anything"
    assert (analytics.get("in"), analytics.get("out")) == (n + 64, n + 64), analytics
    # While lagging, memory must not follow the 80 MB backlog; while draining at full speed it holds
    # max_in_flight batches of 4 KB events with their outputs (~4 x 1,024 x 4 KB, twice), not the backlog.
    assert lagging_peak - base_rss < 40, f"worker memory grew {lagging_peak - base_rss:.0f} MB with an 80 MB backlog"
    assert peak - base_rss < 60, f"worker memory grew {peak - base_rss:.0f} MB draining an 80 MB backlog"
    # Growth with the lag, measured after the first third of the window: the first seconds of a backlog fill
    # librdkafka's bounded prefetch and the allocator's arenas in ~5 MB steps (10.1 MB over the whole window
    # once, on a machine loaded by three test workers; 5.3 MB of it in the later two thirds).
    later = series[len(series) // 3:]
    assert later[-1] - later[0] < 10, f"worker memory kept growing with the lag: {series}"
