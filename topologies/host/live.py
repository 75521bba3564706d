"""Live, bounded, in-memory state of one worker for the dashboard: rates, latencies, latest results.

The route pipelines report each finished batch through :meth:`LiveState.observe`;
``/api/summary`` reads :meth:`LiveState.snapshot`. Everything is bounded
(per-second buckets over a short horizon, fixed-size deques), so a long run
never grows memory.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from schemas.tasks import TASKS

__all__ = ["LiveState"]

_MAX_LABELS = 200


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[i], 1)


class _Route:
    def __init__(self, horizon_s: int) -> None:
        self.totals = {"in": 0, "out": 0, "dlq": 0}
        self.buckets: deque[list[float]] = deque(maxlen=horizon_s)  # [second, in, out, dlq]
        self.latency_ms: deque[float] = deque(maxlen=2000)
        self.latest: deque[dict[str, Any]] = deque(maxlen=10)
        self.labels: dict[str, Counter[str]] = {}  # task -> label counts (at most _MAX_LABELS each)

    def add(self, n_in: int, n_out: int, n_dlq: int, now: float) -> None:
        sec = int(now)
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0, 0, 0])
        b = self.buckets[-1]
        b[1] += n_in
        b[2] += n_out
        b[3] += n_dlq
        self.totals["in"] += n_in
        self.totals["out"] += n_out
        self.totals["dlq"] += n_dlq


class LiveState:
    """What the dashboard shows, kept by one worker.

    Args:
        horizon_s: seconds of per-second throughput history kept.
        rate_window_s: seconds the reported rates average over.
        max_detections: detection results kept with their input image.
        max_image_chars: larger images (base64 characters) are kept without their pixels.
    """

    def __init__(self, *, horizon_s: int = 60, rate_window_s: int = 5, max_detections: int = 4,
                 max_image_chars: int = 400_000) -> None:
        self.horizon_s = horizon_s
        self.rate_window_s = rate_window_s
        self.max_image_chars = max_image_chars
        self.routes: dict[str, _Route] = {}
        self.detections: deque[dict[str, Any]] = deque(maxlen=max_detections)

    def route(self, name: str) -> _Route:
        if name not in self.routes:
            self.routes[name] = _Route(self.horizon_s)
        return self.routes[name]

    def observe(self, route: str, n_in: int, n_dlq: int, results: list[tuple[str, Any, dict[str, Any]]]) -> None:
        """One finished batch: ``results`` are ``(task, event, result)`` of the successful model calls."""
        now = time.time()
        r = self.route(route)
        events_out = {id(ev) for _, ev, _ in results}
        r.add(n_in, len(events_out), n_dlq, now)
        seen: set[int] = set()
        keep_from = len(results) - (r.latest.maxlen or 0)  # only the newest few are kept: build only those
        for i, (task, ev, result) in enumerate(results):
            spec = TASKS[task]
            if id(ev) not in seen:
                seen.add(id(ev))
                r.latency_ms.append(max(0.0, now * 1000 - ev.ts))
            if i >= keep_from:
                r.latest.append({"task": task, "event_id": ev.event_id, "item_id": getattr(ev, "item_id", None),
                                 "user_id": getattr(ev, "user_id", None), "result": spec.brief(result)})
            counts = r.labels.setdefault(task, Counter())
            for label in spec.labels(result):
                if label in counts or len(counts) < _MAX_LABELS:
                    counts[label] += 1
            if spec.shows_image:
                self._keep_detection(route, ev, result)

    def _keep_detection(self, route: str, ev: Any, result: dict[str, Any]) -> None:
        image = getattr(ev, "image", None)
        data = getattr(image, "data", None)
        if data is not None and len(data) > self.max_image_chars:
            data = None
        self.detections.append({
            "route": route, "event_id": ev.event_id, "item_id": getattr(ev, "item_id", None),
            "stream_id": getattr(ev, "stream_id", None), "frame_index": getattr(ev, "frame_index", None),
            "ts": ev.ts, "boxes": result.get("boxes", [])[:50], "image_size": result.get("image_size"),
            "image": {"data": data, "mime": getattr(image, "mime", None) or "image/jpeg"} if data else None,
        })

    def snapshot(self) -> dict[str, Any]:
        """Per-route totals, rates, latency percentiles and throughput series; latest detections."""
        now = int(time.time())
        routes = {}
        for name, r in self.routes.items():
            recent = [b for b in r.buckets if now - b[0] < self.rate_window_s]
            lat = sorted(r.latency_ms)
            series = {b[0]: b for b in r.buckets}
            routes[name] = {
                **r.totals,
                "in_per_s": round(sum(b[1] for b in recent) / self.rate_window_s, 2),
                "out_per_s": round(sum(b[2] for b in recent) / self.rate_window_s, 2),
                "latency_ms": {"p50": _percentile(lat, 0.5), "p90": _percentile(lat, 0.9),
                               "p99": _percentile(lat, 0.99), "samples": len(lat)},
                "series": [[s, *(series[s][1:] if s in series else [0, 0, 0])]
                           for s in range(now - self.horizon_s + 1, now + 1)],
                "latest": list(r.latest)[-5:],
                "labels": {task: dict(c.most_common(10)) for task, c in r.labels.items()},
            }
        return {"ts": time.time(), "routes": routes, "detections": list(self.detections)}

