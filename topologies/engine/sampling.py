"""Video frame sampling per ``stream_id``: every Nth frame, at most F frames/s by ``pts_ms``,
and frames older than a configured lag dropped (and counted by the caller)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from schemas.topology import SamplingConfig

__all__ = ["FrameSampler", "SampleDecision"]

SampleDecision = Literal["keep", "skip", "lag"]


class FrameSampler:
    """Decides for each frame whether to keep it; state is per stream, bounded in size.

    The state lives in the worker that owns the stream's partition (frames are keyed
    by ``stream_id``); after a rebalance a stream's state restarts, which at worst
    keeps one extra frame.

    Args:
        cfg: the route's sampling settings.
        max_streams: streams remembered at once (least recently seen are forgotten).
    """

    def __init__(self, cfg: SamplingConfig, max_streams: int = 100_000) -> None:
        self.cfg = cfg
        self.max_streams = max_streams
        self._last_pts: OrderedDict[str, int] = OrderedDict()
        self._min_gap_ms = 1000.0 / cfg.max_fps if cfg.max_fps else 0.0

    def decide(self, stream_id: str, frame_index: int, pts_ms: int, ts_ms: int, now_ms: int) -> SampleDecision:
        cfg = self.cfg
        if cfg.max_lag_ms is not None and now_ms - ts_ms > cfg.max_lag_ms:
            return "lag"
        if frame_index % cfg.every_n != 0:
            return "skip"
        if self._min_gap_ms:
            last = self._last_pts.get(stream_id)
            if last is not None and 0 <= pts_ms - last < self._min_gap_ms:
                return "skip"
        self._last_pts[stream_id] = pts_ms
        self._last_pts.move_to_end(stream_id)
        if len(self._last_pts) > self.max_streams:
            self._last_pts.popitem(last=False)
        return "keep"
