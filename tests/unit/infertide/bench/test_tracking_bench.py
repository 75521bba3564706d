"""The tracking cost script runs and reports sane numbers (the measured ones are in docs/video.md)."""

from __future__ import annotations

from infertide.bench.tracking import boxes_on_grid, measure


def test_grid_boxes_do_not_overlap_and_stay_in_frame() -> None:
    boxes = boxes_on_grid(100, 25)
    assert len(boxes) == 100
    assert all(0 <= b["xyxy"][0] and b["xyxy"][2] <= 1920 and b["xyxy"][3] <= 1080 for b in boxes)
    spans = {(b["xyxy"][0] // 100, b["xyxy"][1]) for b in boxes}
    assert len(spans) == 100


def test_measure_reports_costs_and_snapshot() -> None:
    r = measure(3, frames=30, streams=2)
    assert r["boxes"] == 3 and r["track_cpu_us"] > 0 and r["full_p50_us"] > 0 and r["track_cpu_us_per_box"] > 0
    assert 3 * 500 < r["snapshot_bytes"] < 3 * 1600 + 2000  # 0.7-1.5 KB per live track (digits of its floats)
