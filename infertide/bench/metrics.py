"""What the bench reads off each worker's ``/metrics``: counters, batch fill, and which partitions it held.

Parsed with ``prometheus_client.parser``. Held partitions come from
``infertide_assigned_partitions{topic,partition}`` (1 while held) when the
worker exports it; otherwise from the partitions labelled on
``infertide_consumer_lag`` / ``infertide_committed_offset``, which say a worker
held the partition at some point (gauges stay after a rebalance, so two workers
can both show one, and they appear on a 2 s timer): the report names the source.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

__all__ = ["ASSIGNED", "FALLBACK", "Samples", "delta", "held_partitions", "parse", "scrape", "total"]

ASSIGNED = "infertide_assigned_partitions"
FALLBACK = ("infertide_consumer_lag", "infertide_committed_offset")

# (metric sample name, frozenset of label items) -> value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every ``infertide_*`` sample of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("infertide_"):
                out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def scrape(worker: Any) -> Samples:
    """One worker's samples (empty when it does not answer)."""
    try:
        status, body = worker.get("/metrics", timeout=5.0)
    except OSError:
        return {}
    return parse(body.decode()) if status == 200 else {}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def held_partitions(samples: Samples, topics: list[str]) -> tuple[dict[str, list[int]], str]:
    """Partitions of ``topics`` this worker held, and which gauge(s) said so (``ASSIGNED`` or ``FALLBACK``)."""
    assigned = any(n == ASSIGNED for n, _ in samples)
    names = (ASSIGNED,) if assigned else FALLBACK
    held: dict[str, set[int]] = defaultdict(set)
    for (n, lab), v in samples.items():
        d = dict(lab)
        if n in names and d.get("topic") in topics and (v >= 1 or not assigned):
            held[d["topic"]].add(int(d["partition"]))
    return {t: sorted(held[t]) for t in topics if held.get(t)}, " + ".join(names)
