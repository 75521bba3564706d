"""A worker SIGKILLed mid-run and restarted, in both guarantees side by side: nothing lost; in exactly-once,
nothing repeated either (every count read as a ``read_committed`` consumer reads)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from infertide.clients.produce import now_ms, produce_events
from schemas.events import TextEvent
from tests.e2e.conftest import (Stack, analytics_events, guarantee_edit, peak_rss_mb, read_on, read_topic, short,
                                side_by_side, tally)

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

N = 4000


def _scenario(stack: Stack, guarantee: str) -> dict[str, Any]:
    g = short(guarantee)
    # Several calls in flight and small batches: the most uncommitted work at the moment of the kill.
    topology, path = stack.topology(f"crash-{g}", edit=guarantee_edit(guarantee),
                                    text={"batch_size": 32, "max_in_flight": 4})
    events = [TextEvent(event_id=f"c-{i}", ts=now_ms(), text=f"{'good' if i % 2 else 'bad'} thing {i}")
              for i in range(N)]
    worker = stack.worker(topology, path, f"crash-{g}-worker").start()
    worker.wait_ready()
    # Produce while the worker runs, at a bounded rate, so the kill lands with work in flight.
    producer = threading.Thread(target=lambda: [produce_events(topology, "text", events[i:i + 200]) or time.sleep(0.1)
                                                for i in range(0, N, 200)])
    producer.start()
    seen = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=120, until=lambda r: len(r) >= N // 5)
    worker.kill()
    killed_at = len(seen)
    producer.join(60)
    restarted = stack.worker(topology, path, f"crash-{g}-worker").start()  # the same worker id, restarted
    try:
        restarted.wait_ready()
        ids = {e.event_id for e in events}
        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=180,
                             until=lambda r: ids <= {v["event_id"] for _, _, v in r})
        if guarantee == "exactly-once":  # a duplicate committed after the last id arrived would show here
            results = read_on(stack.bootstrap, topology.topics.sentiment, results)
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=N)
        rss = peak_rss_mb(restarted)
    finally:
        code = restarted.stop()
    dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
    lost, duplicates = tally(ids, results, dlq)
    return {"killed_at": killed_at, "results": len(results), "lost": lost, "duplicates": duplicates, "dlq": len(dlq),
            "analytics": analytics, "rss": rss, "exit": code, "log": restarted.tail()}


def test_sigkill_mid_run_loses_nothing_and_exactly_once_repeats_nothing(stack: Stack) -> None:
    runs = side_by_side(lambda g: _scenario(stack, g))
    for guarantee, r in runs.items():
        a = r["analytics"]
        print(f"\n[crash {guarantee}] killed after {r['killed_at']} results; {r['results']} results after restart, "
              f"{len(r['lost'])} lost, {r['duplicates']} duplicates ({r['duplicates'] / N:.1%}); analytics in/out "
              f"{a.get('in', 0):.0f}/{a.get('out', 0):.0f} of {N}; restarted worker's peak RSS {r['rss']:.0f} MB")
    for guarantee, r in runs.items():
        assert r["exit"] == 0, r["log"]
        assert not r["lost"], f"{guarantee}: {len(r['lost'])} events lost, e.g. {sorted(r['lost'])[:5]}"
        assert r["dlq"] == 0, "no event should need the dead-letter topic here"
        assert N // 5 <= r["killed_at"] < N, "the kill must land mid-run"
        # Replays are results again, never counts again: analytics see each event once.
        a = r["analytics"]
        assert (a.get("in"), a.get("out"), a.get("dlq", 0)) == (N, N, 0), (guarantee, a)
    assert runs["exactly-once"]["duplicates"] == 0, "exactly-once: every result committed once"
    assert runs["exactly-once"]["results"] == N
