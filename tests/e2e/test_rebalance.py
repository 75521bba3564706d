"""Workers killed, started and stopped while events flow: partitions move again and again, nothing is lost.

The issue's scenario, harder: two ``infertide worker`` processes share the route partitions,
and while a producer writes at a bounded rate the test repeatedly SIGKILLs one, starts a new
one, and stops one gracefully (each a rebalance of the routes' consumer group). At the end
every event has a result (or a dead letter), and the group's committed offsets reach the end
of every input partition (no partition stuck), and the analytics windows count every event exactly
once. Duplicates are counted and reported at-least-once and fail the test in exactly-once. Both
guarantees run side by side (topics, groups and workers of their own).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from infertide.clients.produce import now_ms, produce_events
from infertide.local.runtime import WorkerProcess
from schemas.events import TextEvent
from tests.e2e.conftest import (Stack, analytics_events, guarantee_edit, peak_rss_mb, read_on, read_topic, short,
                                side_by_side, tally)

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

N = 6000
CYCLES = 3
GRACE_S = 60.0  # k8s/base/faust.yaml's terminationGracePeriodSeconds: a stop in a rebalance may take a while


def _committed_ends(stack: Stack, topology: object) -> tuple[dict[int, int], dict[int, int]]:
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=topology.kafka.routes_group,  # type: ignore[attr-defined]
                           enable_auto_commit=False)
    try:
        topic = topology.topics.text  # type: ignore[attr-defined]
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        ends = reader.end_offsets(tps)
        return ({tp.partition: reader.committed(tp) or 0 for tp in tps}, {tp.partition: ends[tp] for tp in tps})
    finally:
        reader.close()


def _scenario(stack: Stack, guarantee: str) -> dict[str, Any]:
    g = short(guarantee)
    # Killed workers are replaced by new ones (new ids): their open transactions wait out the timeout.
    quick = (lambda d: d["kafka"].update(transaction_timeout_s=15))  # noqa: E731
    topology, path = stack.topology(f"rebal-{g}", edit=guarantee_edit(guarantee, then=quick),
                                    text={"batch_size": 32, "max_in_flight": 4})
    events = [TextEvent(event_id=f"rb-{i}", ts=now_ms(), text=f"{'good' if i % 2 else 'bad'} thing {i}")
              for i in range(N)]
    names = iter(f"rebal-{g}-worker-{i}" for i in range(100))
    workers: list[WorkerProcess] = [stack.worker(topology, path, next(names), own_port=True).start() for _ in range(2)]
    for w in workers:
        w.wait_ready()

    def produce() -> None:  # about 36 s of traffic: every move below happens while events flow
        for i in range(0, N, 200):
            produce_events(topology, "text", events[i:i + 200])
            time.sleep(1.2)

    producer = threading.Thread(target=produce)
    producer.start()
    moves: list[str] = []
    restarts_exit: list[int | None] = []
    stop_s: list[float] = []
    try:
        for cycle in range(CYCLES):
            time.sleep(4)
            victim = workers.pop(0)
            victim.kill()
            moves.append(f"kill {victim.log_path.stem}")
            workers.append(stack.worker(topology, path, next(names), own_port=True).start())
            time.sleep(4)
            graceful = workers.pop(0)
            began = time.monotonic()
            restarts_exit.append(graceful.stop(timeout=GRACE_S))
            stop_s.append(time.monotonic() - began)
            moves.append(f"stop {graceful.log_path.stem}")
            workers.append(stack.worker(topology, path, next(names), own_port=True).start())
            workers[-1].wait_ready()
        producer.join(180)
        assert not producer.is_alive()
        ids = {e.event_id for e in events}

        def complete(records: list) -> bool:
            return ids <= {v["event_id"] for _, _, v in records}

        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=240, until=complete)
        deadline = time.monotonic() + 60
        while True:  # commits follow acks within commit_interval_s; then every partition is at its end
            committed, ends = _committed_ends(stack, topology)
            if all(committed[p] >= ends[p] for p in ends) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=N)
        rss = max(peak_rss_mb(w) for w in workers)
    finally:
        for w in workers:
            w.stop()
    if guarantee == "exactly-once":  # a duplicate committed after the last id arrived would show here
        results = read_on(stack.bootstrap, topology.topics.sentiment, results)
    dlq = read_topic(stack.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False)
    lost, duplicates = tally(ids, results, dlq)
    stuck = {p: (committed[p], ends[p]) for p in ends if committed[p] < ends[p]}
    return {"moves": moves, "results": len(results), "lost": lost, "duplicates": duplicates, "stuck": stuck,
            "dlq": len(dlq), "analytics": analytics, "rss": rss, "restarts_exit": restarts_exit, "stop_s": stop_s}


def test_workers_killed_started_and_stopped_while_events_flow(stack: Stack) -> None:
    runs = side_by_side(lambda g: _scenario(stack, g))
    for g, r in runs.items():
        a, moves = r["analytics"], r["moves"]
        print(f"\n[rebalance {g}] {N} events, {len(moves)} moves ({', '.join(moves)}): {r['results']} results, "
              f"{len(r['lost'])} lost, {r['duplicates']} duplicates ({r['duplicates'] / N:.1%}), stuck partitions "
              f"{r['stuck'] or 'none'}; analytics in/out {a.get('in', 0):.0f}/{a.get('out', 0):.0f} of {N}; "
              f"surviving workers' peak RSS {r['rss']:.0f} MB; {len(moves) // 2} kills + {len(moves) // 2} graceful "
              f"stops, each replaced (stops took {', '.join(f'{t:.1f}' for t in r['stop_s'])} s)")
    for g, r in runs.items():
        assert not r["lost"], f"{g}: {len(r['lost'])} events lost, e.g. {sorted(r['lost'])[:5]}"
        assert not r["stuck"], f"{g}: partitions stuck (committed, end): {r['stuck']}"
        assert not r["dlq"], "no event should need the dead-letter topic here"
        assert all(code == 0 for code in r["restarts_exit"]), f"graceful stops must exit 0: {r['restarts_exit']}"
        # Each event counted once in the analytics windows, whoever processed it and however often.
        a = r["analytics"]
        assert (a.get("in"), a.get("out"), a.get("dlq", 0)) == (N, N, 0), (g, a)
    assert runs["exactly-once"]["duplicates"] == 0 and runs["exactly-once"]["results"] == N
