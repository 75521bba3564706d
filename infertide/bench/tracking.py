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
    """The cost per frame at ``n`` boxes with ``streams`` streams interleaved: CPU time (``thread_time``:
    what the step costs, not counting time the scheduler gave to other processes) and wall time
    (p50, p99), for tracking alone and for the whole video step; and the snapshot's bytes and time."""
    frames_of = {f: boxes_on_grid(n, f) for f in range(frames)}
    trackers, video = StreamTrackers(VIDEO.tracker), VideoStreams(VIDEO, window_s=10)
    cpu: dict[str, list[float]] = {"track": [], "full": []}
    wall: dict[str, list[float]] = {"track": [], "full": []}
    for f in range(frames):
        pts = f * 40
        for s in range(streams):
            sid = f"cam-{s}"
            c0, t0 = time.thread_time(), time.perf_counter()
            trackers.update(sid, f, pts, frames_of[f])
            c1, t1 = time.thread_time(), time.perf_counter()
            video.process(sid, f, pts, 1_700_000_000_000 + pts, frames_of[f])
            c2, t2 = time.thread_time(), time.perf_counter()
            if f >= 10:  # past warm-up
                cpu["track"].append((c1 - c0) * 1e6)
                cpu["full"].append((c2 - c1) * 1e6)
                wall["track"].append((t1 - t0) * 1e6)
                wall["full"].append((t2 - t1) * 1e6)
    c0 = time.thread_time()
    snap = video.snapshot("cam-0")
    c1 = time.thread_time()
    VideoStreams(VIDEO, window_s=10).restore("cam-0", snap)
    c2 = time.thread_time()
    out: dict[str, float] = {"boxes": n, "streams": streams, "snapshot_bytes": len(snap),
                             "snapshot_us": (c1 - c0) * 1e6, "restore_us": (c2 - c1) * 1e6}
    for k in ("track", "full"):
        out[f"{k}_cpu_us"] = statistics.mean(cpu[k])
        out[f"{k}_p50_us"] = statistics.median(wall[k])
        out[f"{k}_p99_us"] = statistics.quantiles(wall[k], n=100)[98]
    out["track_cpu_us_per_box"] = out["track_cpu_us"] / max(n, 1)
    return out


def main() -> None:
    rows = [measure(n) for n in (0, 1, 5, 10, 25, 50, 100)] + [measure(5, frames=100, streams=100)]
    print("| boxes/frame | streams | tracking: CPU µs/frame | CPU µs/box | wall p50 / p99 µs "
          "| + line, zone, windows: CPU µs/frame | wall p50 / p99 µs | snapshot bytes | snapshot / restore CPU µs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['boxes']} | {r['streams']} | {r['track_cpu_us']:.0f} | {r['track_cpu_us_per_box']:.0f} "
              f"| {r['track_p50_us']:.0f} / {r['track_p99_us']:.0f} | {r['full_cpu_us']:.0f} "
              f"| {r['full_p50_us']:.0f} / {r['full_p99_us']:.0f} | {r['snapshot_bytes']:,} "
              f"| {r['snapshot_us']:.0f} / {r['restore_us']:.0f} |")


if __name__ == "__main__":
    main()
