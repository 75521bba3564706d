"""The broker restarts mid-stream (same data directory): the worker reconnects by itself, nothing is lost.

A broker of its own (the session's broker is shared), the module's Ray Serve app, one worker.
Half the events are produced, the broker is stopped while the worker is busy with them, started
again on the same folder and port, and the other half produced. Every event must get its result,
with no dead letter and no worker restart; duplicates (a batch produced but not yet committed when
the broker went) are counted and reported.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from infertide.clients.admin import ensure_topics
from infertide.local.broker import LocalKafka
from infertide.clients.produce import now_ms, produce_events
from schemas.events import TextEvent
from schemas.topology import parse_topology
from tests.e2e.conftest import Stack, analytics_events, peak_rss_mb, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]

N = 4000


def test_broker_restart_mid_stream_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka").start()
    worker = None
    try:
        shared, _ = stack.topology("brestart", text={"batch_size": 64, "max_in_flight": 4})
        data = {**shared.model_dump(exclude_none=True), "kafka": {**shared.kafka.model_dump(exclude_none=True),
                                                                  "bootstrap_servers": broker.bootstrap}}
        topology = parse_topology(data)
        path = tmp_path / "brestart.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        ensure_topics(topology)
        events = [TextEvent(event_id=f"br-{i}", ts=now_ms(), text=f"{'good' if i % 2 else 'bad'} {i}")
                  for i in range(N)]
        worker = stack.worker(topology, path, "brestart-worker").start()
        worker.wait_ready()
        produce_events(topology, "text", events[: N // 2])
        seen = read_topic(broker.bootstrap, topology.topics.sentiment, timeout=120, until=lambda r: len(r) >= N // 8)
        assert len(seen) < N // 2, "the broker must stop while the worker still has work"
        t0 = time.monotonic()
        broker.stop()
        time.sleep(3)
        broker.start()
        down_s = time.monotonic() - t0
        produce_events(topology, "text", events[N // 2:])
        ids = {e.event_id for e in events}
        results = read_topic(broker.bootstrap, topology.topics.sentiment, timeout=240,
                             until=lambda r: ids <= {v["event_id"] for _, _, v in r})
        assert worker.alive(), f"the worker must ride out a broker restart:\n{worker.tail()}"
        dlq = read_topic(broker.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
        analytics = analytics_events(broker.bootstrap, topology, "text", expect_in=N)
        rss = peak_rss_mb(worker)
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    out = Counter(v["event_id"] for _, _, v in results)
    lost = ids - set(out)
    duplicates = sum(c - 1 for c in out.values() if c > 1)
    print(f"\n[broker restart] down {down_s:.1f}s (stop, 3 s, start); {N} events: {len(results)} results, "
          f"{len(lost)} lost, {duplicates} duplicates, {len(dlq)} dead letters; analytics in/out "
          f"{analytics.get('in', 0):.0f}/{analytics.get('out', 0):.0f} of {N}; worker peak RSS {rss:.0f} MB; 0 restarts")
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not dlq
