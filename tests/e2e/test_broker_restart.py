"""The broker restarts, or freezes, mid-stream: the worker rides it out, nothing is lost or counted twice.

A broker of its own (the session's broker is shared), the module's Ray Serve app, one worker.
Half the events are produced; while the worker is busy with them the broker is either stopped and
started again on the same folder and port ("restart"), or frozen with SIGSTOP for 20 s, past the
groups' session timeout, and thawed with SIGCONT ("pause": every member is expired and rejoins,
with batches in flight). Then the other half is produced. Every event must get its result, with no
dead letter and no worker restart, and the analytics windows must count each event once;
duplicate results (a batch produced but not yet committed) are counted and reported.
"""

from __future__ import annotations

import os
import signal
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


PAUSE_S = 20


@pytest.mark.parametrize("fault", ["restart", "pause"])
def test_broker_fault_mid_stream_loses_nothing(stack: Stack, tmp_path: Path, fault: str) -> None:
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
        if fault == "restart":
            broker.stop()
            time.sleep(3)
            broker.start()
        else:
            assert broker.proc is not None
            os.kill(broker.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(PAUSE_S)
            finally:
                os.kill(broker.proc.pid, signal.SIGCONT)
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
    how = "stop, 3 s, start" if fault == "restart" else f"SIGSTOP, {PAUSE_S} s, SIGCONT"
    print(f"\n[broker {fault}] down {down_s:.1f}s ({how}); {N} events: {len(results)} results, "
          f"{len(lost)} lost, {duplicates} duplicates, {len(dlq)} dead letters; analytics in/out "
          f"{analytics.get('in', 0):.0f}/{analytics.get('out', 0):.0f} of {N}; worker peak RSS {rss:.0f} MB; 0 restarts")
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not dlq
    assert (analytics.get("in"), analytics.get("out"), analytics.get("dlq", 0)) == (N, N, 0), analytics
