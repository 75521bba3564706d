"""Windowed analytics: per-batch deltas (combined in the route agent) and the values a closed
window reports (counts, mean scores, latency percentiles).

Route agents pre-aggregate each micro-batch into a few delta records (one per
metric key) instead of one record per event, so the windowed Faust table sees
tens of updates per second, not thousands: the combiner-before-shuffle pattern.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any


__all__ = ["FINALIZERS", "LATENCY_BUCKETS_MS", "Deltas", "EventDeltas", "finalize", "merge", "now_ms", "percentile"]


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (event and window timestamps)."""
    return int(time.time() * 1000)


# Upper bounds (ms) of the latency histogram; the last bucket is open-ended. Bounds are only ever
# added (a window written with fewer bounds still reads right), never removed.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 15, 20, 25, 35, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 750,
                      1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 20000, 30000, 60000)
_BUCKET_FIELDS = (*(f"le_{b}" for b in LATENCY_BUCKETS_MS), "le_inf")


class Deltas:
    """Accumulates metric deltas for one micro-batch: ``{"metric|key": {field: amount}}``.

    Kept as flat ``(metric, key, field)`` sums while the batch is processed (no string building
    per event) and shaped into the summary's nested form once, by :meth:`as_dict`.
    """

    def __init__(self) -> None:
        self.data: defaultdict[tuple[str, str, str], float] = defaultdict(float)

    def add(self, metric: str, key: str, fld: str, amount: float = 1.0, at: int | None = None) -> None:
        """Add ``amount``; ``at`` (the event's ts, ms) matters only to :class:`EventDeltas`."""
        self.data[(metric, key, fld)] += amount

    def latency(self, route: str, ms: float, at: int | None = None) -> None:
        self.latencies(route, (ms,), at)

    def latencies(self, route: str, values: Iterable[float], at: int | None = None) -> None:
        """Latency samples (ms) into the route's histogram: bucket counts, count and sum."""
        buckets: defaultdict[str, float] = defaultdict(float)
        count, total = 0, 0.0
        for ms in values:
            i = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
            buckets[_BUCKET_FIELDS[i]] += 1
            count += 1
            total += ms
        data = self.data
        for fld, n in buckets.items():
            data[("latency", route, fld)] += n
        if count:
            data[("latency", route, "count")] += count
            data[("latency", route, "sum_ms")] += total

    def as_dict(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (metric, key, fld), amount in self.data.items():
            out.setdefault(f"{metric}|{key}", {})[fld] = amount
        return out


class EventDeltas(Deltas):
    """A batch's deltas filed by event time too: each ``add`` under the ``step``-long pane of its ``at``
    (the event's ts; None: ``default_at``), so :meth:`as_windows` can put it in every window of that ts.

    :meth:`as_dict` still gives the batch's totals (the log-order readers: totals, the dashboard).
    ``size_ms`` is a multiple of ``step_ms``, so every ts of a pane falls in the same windows.
    """

    def __init__(self, size_ms: int, step_ms: int, default_at: int = 0) -> None:
        super().__init__()
        self.size_ms, self.step_ms, self.default_at = size_ms, step_ms, default_at
        self.panes: defaultdict[int, Deltas] = defaultdict(Deltas)
        self.by_window: defaultdict[int, Deltas] = defaultdict(Deltas)  # deltas that name their window

    def add(self, metric: str, key: str, fld: str, amount: float = 1.0, at: int | None = None) -> None:
        self.data[(metric, key, fld)] += amount
        ts = self.default_at if at is None else at
        self.panes[ts - ts % self.step_ms].data[(metric, key, fld)] += amount

    def latencies(self, route: str, values: Iterable[float], at: int | None = None) -> None:
        values = list(values)
        super().latencies(route, values)
        ts = self.default_at if at is None else at
        Deltas.latencies(self.panes[ts - ts % self.step_ms], route, values)

    def add_window(self, start: int, metric: str, key: str, fld: str, amount: float) -> None:
        """A delta that belongs to one window (``start``), not to every window of a ts (the video fold's)."""
        self.data[(metric, key, fld)] += amount
        self.by_window[start].data[(metric, key, fld)] += amount

    def as_windows(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{"<window start>": {"metric|key": {field: amount}}}``: each pane's deltas in every window holding it."""
        sums: defaultdict[int, defaultdict[tuple[str, str, str], float]] = defaultdict(lambda: defaultdict(float))
        for pane, deltas in self.panes.items():
            for start in range(max(pane - self.size_ms + self.step_ms, 0), pane + 1, self.step_ms):
                into = sums[start]
                for k, v in deltas.data.items():
                    into[k] += v
        for start, deltas in self.by_window.items():
            into = sums[start]
            for k, v in deltas.data.items():
                into[k] += v
        out: dict[str, dict[str, dict[str, float]]] = {}
        for start in sorted(sums):
            window = out[str(start)] = {}
            for (metric, key, fld), amount in sums[start].items():
                window.setdefault(f"{metric}|{key}", {})[fld] = amount
        return out


def merge(into: dict[str, float] | None, delta: dict[str, float]) -> dict[str, float]:
    """A new window value with ``delta`` added (tables need a new object to record a change)."""
    out = dict(into or {})
    for k, v in delta.items():
        out[k] = out.get(k, 0.0) + v
    return out


def percentile(buckets: dict[str, float], q: float) -> float:
    """The q-th quantile (0..1) of a latency histogram, interpolated linearly inside its bucket
    (as Prometheus' ``histogram_quantile``), so quantiles within one bucket still differ."""
    total = sum(v for k, v in buckets.items() if k.startswith("le_"))
    if total <= 0:
        return 0.0
    target = q * total
    seen, lower = 0.0, 0.0
    for bound in LATENCY_BUCKETS_MS:
        n = buckets.get(f"le_{bound}", 0.0)
        if n > 0 and seen + n >= target:
            return round(lower + (bound - lower) * (target - seen) / n, 1)
        seen, lower = seen + n, float(bound)
    return float(LATENCY_BUCKETS_MS[-1])  # in the open-ended bucket: its lower bound


def finalize(metric: str, value: dict[str, float]) -> dict[str, float]:
    """What a window reports: derived values (means, percentiles) from the accumulated sums."""
    if metric == "latency":
        count = value.get("count", 0.0)
        return {
            "count": count,
            "mean_ms": value.get("sum_ms", 0.0) / count if count else 0.0,
            "p50_ms": percentile(value, 0.50),
            "p90_ms": percentile(value, 0.90),
            "p99_ms": percentile(value, 0.99),
        }
    if metric == "sentiment":
        out: dict[str, float] = {}
        for k, v in value.items():
            if k.startswith("count."):
                label = k.removeprefix("count.")
                out[f"{label}.count"] = v
                out[f"{label}.mean_score"] = value.get(f"score_sum.{label}", 0.0) / v if v else 0.0
        return out
    if metric == "video":  # per stream: tracks, lines and zones (topologies/video/fold.py), with their means
        out = dict(value)
        frames = value.get("frames", 0.0)
        for k, v in value.items():
            if k.endswith(".occupancy_sum"):
                out[k.removesuffix("_sum") + "_mean"] = v / frames if frames else 0.0
            elif k.endswith(".dwell_ms_sum"):
                visits = value.get(k.removesuffix(".dwell_ms_sum") + ".visits", 0.0)
                out[k.removesuffix("_sum") + "_mean"] = v / visits if visits else 0.0
        return out
    fin = FINALIZERS.get(metric)
    if fin is not None:
        return fin(value)
    return dict(value)


# Finalizers of metrics folded by the engine's pure wings, which import this module (so it cannot import
# them): ``{metric: fn(sums) -> values}``; ``topologies.rollout`` registers ``rollout`` when imported.
FINALIZERS: dict[str, Callable[[dict[str, float]], dict[str, float]]] = {}


def split_key(table_key: Any) -> tuple[str, str]:
    """``"metric|key"`` -> ``(metric, key)``."""
    metric, _, key = str(table_key).partition("|")
    return metric, key
