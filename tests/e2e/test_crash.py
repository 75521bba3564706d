"""At-least-once under a crash: SIGKILL the Faust worker mid-run, restart it, lose nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from infertide.clients.produce import now_ms, produce_events
from schemas.events import TextEvent
from tests.e2e.conftest import Stack, analytics_events, peak_rss_mb, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

N = 4000


def test_sigkill_mid_run_loses_no_event(stack: Stack) -> None:
    # Several calls in flight and small batches: the most uncommitted work at the moment of the kill.
    topology, path = stack.topology("crash", text={"batch_size": 32, "max_in_flight": 4})
    events = [TextEvent(event_id=f"c-{i}", ts=now_ms(), text=f"{'good' if i % 2 else 'bad'} thing {i}")
              for i in range(N)]
    worker = stack.worker(topology, path, "crash-worker-1").start()
    worker.wait_ready()
    # Produce while the worker runs, at a bounded rate, so the kill lands with work in flight.
    producer = threading.Thread(target=lambda: [produce_events(topology, "text", events[i:i + 200]) or time.sleep(0.1)
                                                for i in range(0, N, 200)])
    producer.start()
    seen = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=120, until=lambda r: len(r) >= N // 5)
    assert N // 5 <= len(seen) < N, "the kill must land mid-run"
    worker.kill()
    killed_at = len(seen)
    producer.join(60)

    restarted = stack.worker(topology, path, "crash-worker-2").start()
    try:
        restarted.wait_ready()
        ids = {e.event_id for e in events}

        def complete(records: list) -> bool:
            return ids <= {v["event_id"] for _, _, v in records}

        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=180, until=complete)
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=N)
        rss = peak_rss_mb(restarted)
    finally:
        assert restarted.stop() == 0, restarted.tail()
    dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
    out = Counter(v["event_id"] for _, _, v in results) + Counter(v.get("event_id") for _, _, v in dlq)
    lost = ids - set(out)
    duplicates = sum(c - 1 for c in out.values() if c > 1)
    print(f"\n[crash] killed after {killed_at} results; {len(results)} results after restart, "
          f"{len(lost)} lost, {duplicates} duplicates ({duplicates / N:.1%}); analytics in/out "
          f"{analytics.get('in', 0):.0f}/{analytics.get('out', 0):.0f} of {N}; "
          f"restarted worker's peak RSS {rss:.0f} MB; 1 restart")
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not dlq, "no event should need the dead-letter topic here"
    # Replays are results again, never counts again: analytics see each event once.
    assert (analytics.get("in"), analytics.get("out"), analytics.get("dlq", 0)) == (N, N, 0), analytics
