"""What tracking costs on this CPU: per frame and per box, tracking alone and with a line, a zone and
the window fold; and a stream snapshot's size and time. ``python -m infertide.bench.tracking``.

Synthetic boxes (no detector): ``n`` squares on a grid, each swinging left and right (at most 2 px a
frame), none overlapping, scored 0.9, so every box is matched to its track every frame: the common case. Prints a Markdown table
(docs/video.md keeps the numbers measured on a build machine).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from schemas.video import VideoConfig
from topologies.video import StreamTrackers, VideoStreams

__all__ = ["boxes_on_grid", "main", "measure"]

W, H = 1920, 1080


def boxes_on_grid(n: int, frame: int) -> list[dict[str, Any]]:
    """``n`` 40 x 40 boxes on a 100 px grid, each swinging 30 px either side of its cell's centre."""
    cols = W // 100
    swing = round(30 * math.sin(2 * math.pi * frame / 100))
    out = []
    for i in range(n):
        x = (i % cols) * 100 + 30 + swing
        y = (i // cols) * 100 % (H - 100)
        out.append({"xyxy": [float(x), float(y), float(x + 40), float(y + 40)], "label": "box", "class_id": 0,
                    "score": 0.9})
    return out


VIDEO = VideoConfig.model_validate({"tracker": {"frame_rate": 25}, "streams": {"*": {
    "lines": {"door": {"start": [0, 540], "end": [1920, 540]}},
    "zones": {"queue": {"polygon": [[0, 0], [960, 0], [960, 540], [0, 540]]}},
}}})


def measure(n: int, frames: int = 300, streams: int = 1) -> dict[str, float]:
    """Microseconds per frame (mean, p99) for tracking alone and for the whole video step, at ``n`` boxes,
    with ``streams`` streams interleaved; and the snapshot's bytes and microseconds at the end."""
    frames_of = {f: boxes_on_grid(n, f) for f in range(frames)}
    trackers, video = StreamTrackers(VIDEO.tracker), VideoStreams(VIDEO, window_s=10)
    track_us: list[float] = []
    full_us: list[float] = []
    for f in range(frames):
        pts = f * 40
        for s in range(streams):
            sid = f"cam-{s}"
            t0 = time.perf_counter()
            trackers.update(sid, f, pts, frames_of[f])
            t1 = time.perf_counter()
            video.process(sid, f, pts, 1_700_000_000_000 + pts, frames_of[f])
            t2 = time.perf_counter()
            if f >= 10:  # past warm-up
                track_us.append((t1 - t0) * 1e6)
                full_us.append((t2 - t1) * 1e6)
    t0 = time.perf_counter()
    snap = video.snapshot("cam-0")
    t1 = time.perf_counter()
    VideoStreams(VIDEO, window_s=10).restore("cam-0", snap)
    t2 = time.perf_counter()
    q = statistics.quantiles
    return {"boxes": n, "streams": streams,
            "track_us": statistics.mean(track_us), "track_p99_us": q(track_us, n=100)[98],
            "track_us_per_box": statistics.mean(track_us) / max(n, 1),
            "full_us": statistics.mean(full_us), "full_p99_us": q(full_us, n=100)[98],
            "snapshot_bytes": len(snap), "snapshot_us": (t1 - t0) * 1e6, "restore_us": (t2 - t1) * 1e6}


def main() -> None:
    rows = [measure(n) for n in (0, 1, 5, 10, 25, 50, 100)] + [measure(5, frames=100, streams=100)]
    print("| boxes/frame | streams | track µs/frame (p99) | µs/box | + line, zone, windows µs/frame (p99) "
          "| snapshot bytes | snapshot µs | restore µs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['boxes']} | {r['streams']} | {r['track_us']:.0f} ({r['track_p99_us']:.0f}) "
              f"| {r['track_us_per_box']:.0f} | {r['full_us']:.0f} ({r['full_p99_us']:.0f}) "
              f"| {r['snapshot_bytes']:,} | {r['snapshot_us']:.0f} | {r['restore_us']:.0f} |")


if __name__ == "__main__":
    main()
