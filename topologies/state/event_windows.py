"""Event-time analytics windows folded from the summary log: by each event's ``ts``, closed by a watermark.

Route workers file each counted event's deltas under every window its ``ts`` falls in (the summary's
``windows``: ``{"<start ms>": {"<metric>|<key>": {field: amount}}}``) and say, per input partition,
the largest event ``ts`` their batch saw (``max_ts``). :class:`EventWindowFold` turns that log into
``analytics.v1`` records. It is pure (no Kafka, no clock): the same log gives the same records.

Contract:

- **Windows** are ``[start, start + size)``, starts at multiples of ``step`` (tumbling when
  ``step == size``, hopping when smaller; ``size`` a multiple of ``step``).
- **Watermark, per route**: the smallest, over the route's input partitions (all of them: a
  partition with no summary yet holds it at "nothing seen"), of the largest ``ts`` seen, less
  ``grace``. It never goes back. With ``idle_ms`` set, a partition whose largest ``ts`` is more than
  ``idle_ms`` behind the route's largest is left out (decided from the log, not a clock, so a
  restart decides the same); without it the watermark waits for every partition.
- **A summary is judged by the watermark before it** (a batch's own events never make each other
  late). Its deltas for a window whose end the watermark has passed are **late**: never folded into
  that window; the window's events (``events|<route>`` field ``in``) are counted in metric ``late``,
  key ``<route>``, under the route's earliest open window (the one the watermark is in), fields
  ``events`` (all late (event, window) pairs) and ``events@<start ms>`` (per window they missed).
  So late counts are ordinary sums of an open window: exact across restarts like every other.
- **A window is emitted when the watermark passes its end**: one record per metric key, ``ts`` the
  closing summary's ``ts``. ``(metric|key, window_start)`` identifies a window: read the analytics
  topic as "latest per window wins".
- **Restart**: :meth:`EventWindowFold.state` is everything the fold holds after the record at
  ``upto``; a fold :meth:`load`-ed with it and fed the records after ``upto`` emits exactly what
  the first one did (:mod:`topologies.state.windows` stores it in the summary log).
- A summary without ``windows`` (written in log mode) is filed under the windows of its ``ts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.events import AnalyticsRecord
from topologies.state.analytics import finalize, merge, split_key

__all__ = ["LATE", "EventWindowFold", "window_starts"]

LATE = "late"
Sums = dict[str, dict[str, float]]  # "metric|key" -> {field: amount}


def window_starts(ts_ms: int, size_ms: int, step_ms: int) -> list[int]:
    """Starts of the windows ``[start, start + size)`` that hold ``ts_ms``, oldest first (hopping when
    ``step < size``, tumbling when equal)."""
    last = ts_ms - ts_ms % step_ms
    first = last - ((size_ms - 1) // step_ms) * step_ms
    return [s for s in range(max(first, 0), last + 1, step_ms) if s <= ts_ms < s + size_ms]


class EventWindowFold:
    """Every open event-time window of every route, folded from the summary log in order.

    Args:
        size_ms: window length.
        step_ms: hop between window starts (``size_ms``: tumbling).
        grace_ms: how far behind the largest ``ts`` an event may be and still count.
        partitions: per route, how many input partitions it has (all count toward its watermark);
            a route not named here counts the partitions its summaries have shown.
        idle_ms: leave a partition this far behind its route's largest ``ts`` out of the watermark
            (None: wait for it).
    """

    def __init__(self, size_ms: int, step_ms: int | None = None, grace_ms: int = 0, *,
                 partitions: Mapping[str, int] | None = None, idle_ms: int | None = None) -> None:
        step_ms = step_ms or size_ms
        if size_ms <= 0 or not 0 < step_ms <= size_ms or size_ms % step_ms or grace_ms < 0:
            raise ValueError(f"window size {size_ms} ms, step {step_ms} ms, grace {grace_ms} ms: need "
                             "0 < step <= size, size a multiple of step, grace >= 0")
        self.size_ms, self.step_ms, self.grace_ms, self.idle_ms = size_ms, step_ms, grace_ms, idle_ms
        self.partitions = dict(partitions or {})
        self.upto: int | None = None  # offset of the last record folded
        self.maxima: dict[str, dict[int, int]] = {}  # route -> partition -> largest ts
        self.floor: dict[str, int] = {}  # route -> watermark reached (it never goes back)
        self.open: dict[str, dict[int, Sums]] = {}  # route -> window start -> sums

    # -- the watermark -------------------------------------------------------------------

    def watermark(self, route: str) -> int | None:
        """The route's watermark (ms), or None while a partition it waits for has shown nothing."""
        seen = self.maxima.get(route, {})
        count = self.partitions.get(route)
        parts = range(count) if count is not None else seen.keys()
        maxima = [seen.get(p) for p in parts]
        if self.idle_ms is not None and seen:
            top = max(seen.values())
            maxima = [m for m in maxima if m is not None and m >= top - self.idle_ms]
        if not maxima or any(m is None for m in maxima):
            return self.floor.get(route)
        mark = min(m for m in maxima if m is not None) - self.grace_ms
        floor = self.floor.get(route)
        return mark if floor is None or mark > floor else floor

    def earliest_open(self, watermark: int) -> int:
        """The start of the first window whose end is past ``watermark``."""
        return ((watermark - self.size_ms) // self.step_ms + 1) * self.step_ms

    # -- folding -------------------------------------------------------------------------

    def add(self, summary: Mapping[str, Any], offset: int | None = None) -> list[AnalyticsRecord]:
        """Fold one summary (its log ``offset``, for :meth:`state`); returns the windows it closed."""
        if offset is not None:
            self.upto = offset
        route = summary.get("route")
        if not isinstance(route, str):
            return []
        windows = summary.get("windows")
        if windows is None:  # a log-mode summary: its deltas belong to the windows of its ts
            metrics = summary.get("metrics") or {}
            ts = int(summary.get("ts", 0))
            windows = {s: metrics for s in window_starts(ts, self.size_ms, self.step_ms)} if metrics else {}
        mark = self.watermark(route)
        open_ = self.open.setdefault(route, {})
        for start_key, sums in windows.items():
            start = int(start_key)
            if mark is not None and start + self.size_ms <= mark:
                self._late(route, start, sums, open_, mark)
                continue
            window = open_.setdefault(start, {})
            for key, delta in sums.items():
                window[key] = merge(window.get(key), delta)
        maxima = self.maxima.setdefault(route, {})
        for part, ts in (summary.get("max_ts") or {}).items():
            p = int(part)
            if ts > maxima.get(p, -1):
                maxima[p] = int(ts)
        if (mark := self.watermark(route)) is None:
            return []
        self.floor[route] = mark
        return self._close(route, mark, int(summary.get("ts", 0)))

    def _late(self, route: str, start: int, sums: Sums, open_: dict[int, Sums], mark: int) -> None:
        n = float((sums.get(f"events|{route}") or {}).get("in", 0.0))
        if not n:
            return
        into = open_.setdefault(self.earliest_open(mark), {})
        into[f"{LATE}|{route}"] = merge(into.get(f"{LATE}|{route}"), {"events": n, f"events@{start}": n})

    def _close(self, route: str, mark: int, ts: int) -> list[AnalyticsRecord]:
        open_ = self.open.get(route, {})
        out: list[AnalyticsRecord] = []
        for start in sorted(s for s in open_ if s + self.size_ms <= mark):
            out += self.records(start, open_.pop(start), ts)
        return out

    def records(self, start: int, sums: Sums, ts: int) -> list[AnalyticsRecord]:
        """The ``analytics.v1`` records of one window's sums."""
        out = []
        for table_key, value in sorted(sums.items()):
            metric, sub = split_key(table_key)
            out.append(AnalyticsRecord(metric=metric, key=sub or None, window_start=start,
                                       window_end=start + self.size_ms, values=finalize(metric, value), ts=ts))
        return out

    def current(self, ts: int) -> list[AnalyticsRecord]:
        """Every open window's records as they stand (the dashboard's view)."""
        return [r for windows in self.open.values() for start in sorted(windows)
                for r in self.records(start, windows[start], ts)]

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the fold holds, as JSON-able data (keys are strings)."""
        return {"upto": self.upto,
                "maxima": {r: {str(p): ts for p, ts in m.items()} for r, m in self.maxima.items()},
                "floor": dict(self.floor),
                "open": {r: {str(s): w for s, w in windows.items()} for r, windows in self.open.items() if windows}}

    def load(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` (the next record to fold follows ``state["upto"]``)."""
        self.upto = state.get("upto")
        self.maxima = {r: {int(p): int(ts) for p, ts in m.items()} for r, m in state.get("maxima", {}).items()}
        self.floor = {r: int(v) for r, v in state.get("floor", {}).items()}
        self.open = {r: {int(s): {k: dict(v) for k, v in w.items()} for s, w in windows.items()}
                     for r, windows in state.get("open", {}).items()}
