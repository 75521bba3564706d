"""Bench inputs pass the workers' own decode; the sweep chart and the report tables render from a result."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from infertide.bench import events as ev
from infertide.bench.options import percentile
from infertide.bench.report import markdown, render_sweep, render_tables
from infertide.bench.sweep import write_chart
from schemas.codec import decode, encode


@pytest.mark.parametrize(("kind", "schema"), [("text", "text.v1"), ("image", "image.v1"), ("video", "video_frame.v1")])
def test_events_decode_like_a_worker_reads_them(kind: str, schema: str) -> None:
    for i in range(ev.STREAMS + 2):
        e = ev.event(kind, "p", i, 1_700_000_000_000, image_size=(32, 24))
        back = decode(encode(e), schema)
        assert back.event_id == f"p-{i}"
        item = ev.item_of(kind, back.model_dump())
        assert item == ev.bare_items(kind, i + 1, (32, 24))[i]
    last = ev.event("video", "p", ev.STREAMS + 1, 0)
    assert (last.stream_id, last.frame_index, ev.key_of(last)) == ("p-s1", 1, b"p-s1")


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) == 0.0
    assert [percentile(list(range(1, 101)), q) for q in (50, 99, 100)] == [50, 99, 100]


def _pipeline(rate: float, eps: float, p50: float) -> dict:
    return {"route": "text", "kind": "text", "models": ["echo"], "offered_rate": rate, "sent": 100, "results": 100,
            "dlq": 0, "missing": 0, "dlq_rate": 0.0, "seconds": 1.0, "events_per_s": eps,
            "latency_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3, "max": p50 * 4, "mean": p50},
            "microbatch": {"batches": 4, "events": 100, "mean": 25.0, "batch_size": 32, "fill": 25 / 32},
            "serve_batch": {"echo": {"batches": 4, "items": 100, "mean": 25.0, "max": 32, "max_batch_size": 32,
                                     "fill": 25 / 32}},
            "workers": [{"worker": 0, "events_in": 100, "events_per_s": eps, "partitions": [0, 1],
                         "partitions_source": "infertide_assigned_partitions"}]}


CONDITIONS = {"rate": 0, "workers": 1, "partitions": 2, "cpus": 2, "broker": "local", "notes": []}


def test_sweep_chart_and_table(tmp_path: Path) -> None:
    steps = [{"label": "saturation", "fraction": None, "pipeline": _pipeline(0, 1000, 500)}]
    steps += [{"label": f"{f:.0%}", "fraction": f, "pipeline": _pipeline(1000 * f, 990 * f, 20 + 100 * f)}
              for f in (0.1, 0.5, 1.0)]
    result = {"conditions": CONDITIONS, "route": "text", "saturation_events_per_s": 1000.0, "steps": steps}
    png = write_chart(result, tmp_path / "c" / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(width=200, record=True)
    console.print(render_sweep(result))
    text = console.export_text()  # export clears the record
    assert "50%" in text and "saturation" in text


def test_route_table_and_markdown_label_both_fills() -> None:
    base = {"bare_model": {"items_per_s": 2000.0, "batch_size": 32, "models": {"echo": {"items_per_s": 2000.0}},
                           "threads": None, "batches": 3},
            "naive_loop": {"events": 10, "seconds": 1.0, "events_per_s": 10.0},
            "passthrough": {"events": 100, "seconds": 0.1, "events_per_s": 1000.0},
            "ratios": {"pipeline_over_bare_model": 0.5, "pipeline_over_naive_loop": 100.0,
                       "pipeline_over_passthrough": 1.0}}
    result = {"conditions": CONDITIONS, "routes": [{"pipeline": _pipeline(0, 1000, 50), **base}]}
    console = Console(width=250, record=True)
    for t in render_tables(result):
        console.print(t)
    text = console.export_text()
    assert "micro-batch fill (worker)" in text and "mean 25.0 of batch_size 32 = 78%" in text
    assert "Serve batch fill (echo)" in text and "assigned [0, 1]" in text
    assert "| text (text) | echo | 100/100 | **1,000** | 2,000 | 0.50 |" in markdown(result)


def test_route_table_shows_the_paced_runs_their_stages_and_both_passthroughs() -> None:
    pipeline = _pipeline(0, 1000, 50)
    pipeline["lone"] = {**_pipeline(2, 2, 30), "results": 20,
                        "stages_ms": {"to_serve": 9.0, "serve_call": 12.0, "to_reader": 8.0}}
    base = {"bare_model": {"items_per_s": 2000.0, "batch_size": 32, "models": {"echo": {"items_per_s": 2000.0}},
                           "threads": None, "batches": 3},
            "naive_loop": {"events": 10, "seconds": 1.0, "events_per_s": 10.0},
            "passthrough": {"events": 100, "seconds": 0.1, "events_per_s": 1000.0},
            "passthrough_confluent": {"events": 100, "seconds": 0.05, "events_per_s": 2000.0},
            "ratios": {"pipeline_over_bare_model": 0.5, "pipeline_over_naive_loop": 100.0,
                       "pipeline_over_passthrough": 1.0, "pipeline_over_passthrough_confluent": 0.5}}
    console = Console(width=300, record=True)
    for t in render_tables({"conditions": CONDITIONS, "routes": [{"pipeline": pipeline, **base}]}):
        console.print(t)
    text = console.export_text()
    assert "a lone event, one every 0.5 s" in text and "the call 12 ms" in text and "to read 8 ms" in text
    assert "(confluent-kafka, no model)" in text and "2,000" in text


def test_result_stages_split_a_results_time() -> None:
    from infertide.bench.drive import result_stages

    result = {"ts": 1000, "produced_ts": 1030, "timings": {"inference_ms": 2.0, "queue_ms": 10.0, "e2e_ms": 30.0}}
    assert result_stages(result, read_ms=1041) == (18.0, 12.0, 11.0)
    assert result_stages({"ts": 5}, read_ms=9) == (0.0, 0.0, 0.0)  # no timings: nothing to split
