"""``infertide bench`` with tiny numbers (echo model, 2 workers) and a short ``--sweep``: tables, JSON, chart.

Speed is measured by the benchmark, not asserted here: only presence, positivity,
consistent counts and the spread of partitions over the workers are checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS, NAIVE, BATCH = 300, 200, 32


def _bench(kafka_bootstrap: str, tmp_path: Path, *args: str, timeout_s: float = 220) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "infertide", "bench", "--model", "echo", "--batch-size", str(BATCH),
           "--timeout", "90", "--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / "work"),
           "--json", str(out), *args]
    env = {**os.environ, "COLUMNS": "240"}  # rich wraps table cells at 80 columns without a terminal
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, orjson.loads(out.read_bytes())


def _complete(p: dict, events: int) -> None:
    assert p["sent"] == events
    assert p["results"] == events and p["dlq"] == 0 and p["missing"] == 0 and p["dlq_rate"] == 0
    assert p["events_per_s"] > 0 and p["seconds"] > 0
    lat = p["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_bench_echo_two_workers(kafka_bootstrap: str, tmp_path: Path) -> None:
    stdout, r = _bench(kafka_bootstrap, tmp_path, "--events", str(EVENTS), "--naive-events", str(NAIVE),
                       "--workers", "2")
    for row in ("pipeline", "bare model", "naive loop", "broker passthrough", "worker 0", "worker 1",
                "micro-batch fill", "Serve batch fill (echo)"):
        assert row in stdout
    assert set(r) >= {"conditions", "routes", "pipeline", "bare_model", "naive_loop", "passthrough", "ratios"}
    c, p = r["conditions"], r["pipeline"]
    assert (c["events"], c["model"], c["batch_size"], c["workers"], c["partitions"]) == (EVENTS, "echo", BATCH, 2, 4)
    _complete(p, EVENTS)

    mb, sb = p["microbatch"], p["serve_batch"]["echo"]
    route_batch = 4 * BATCH  # --microbatch's default: four model batches per Serve call
    assert mb["events"] == EVENTS and mb["batch_size"] == route_batch and mb["batches"] >= EVENTS / route_batch
    assert 0 < mb["fill"] <= 1 and 0 < mb["mean"] <= route_batch
    # the replica splits each call into model batches of at most max_batch_size
    assert sb["items"] == EVENTS and sb["batches"] >= 1 and 0 < sb["fill"] <= 1 and sb["max"] <= BATCH
    drain = p["drain"]  # the workers restarted on a filled topic: every event again, timed
    assert drain["sent"] == EVENTS and drain["results"] == EVENTS and drain["missing"] == 0
    assert drain["events_per_s"] > 0 and drain["seconds"] > 0
    assert p["worker_metrics"]["events_in"] == EVENTS and p["worker_metrics"]["results_out"] == EVENTS

    # both workers took partitions, between them every input partition, and their counts add up
    workers = p["workers"]
    assert len(workers) == 2 and all(w["partitions"] for w in workers)
    assert set(workers[0]["partitions"]) | set(workers[1]["partitions"]) == {0, 1, 2, 3}
    assert sum(w["events_in"] for w in workers) == EVENTS

    assert r["bare_model"]["items_per_s"] > 0 and r["bare_model"]["batch_size"] == BATCH
    assert r["naive_loop"]["events"] == NAIVE and r["naive_loop"]["events_per_s"] > 0
    assert r["passthrough"]["events"] == EVENTS and r["passthrough"]["events_per_s"] > 0
    assert all(v > 0 for v in r["ratios"].values())


@pytest.mark.bench  # make test-bench: the sweep's steps and chart, about 40 s
def test_bench_sweep_writes_chart(kafka_bootstrap: str, tmp_path: Path) -> None:
    chart = tmp_path / "sweep.svg"
    stdout, r = _bench(kafka_bootstrap, tmp_path, "--events", "400", "--sweep", "--sweep-percent", "25,100",
                       "--step-seconds", "2", "--chart", str(chart))
    assert "saturation" in stdout and "p99 ms" in stdout
    assert [s["label"] for s in r["steps"]] == ["saturation", "25%", "100%"]
    sat = r["saturation_events_per_s"]
    _complete(r["steps"][0]["pipeline"], 400)
    for step in r["steps"][1:]:
        p = step["pipeline"]
        assert p["offered_rate"] == pytest.approx(sat * step["fraction"])
        assert p["sent"] >= 50 and p["results"] == p["sent"] and p["latency_ms"]["p99"] > 0
    assert r["chart"] == str(chart) and chart.read_text().lstrip().startswith("<?xml")


@pytest.mark.bench  # make test-bench: 100-190 s of a benchmark's own code path
@pytest.mark.timeout(420)  # three worker restarts and the slow shadow's settling: 100 s quiet, 190 s at load 35
def test_bench_shadow_side_by_side(kafka_bootstrap: str, tmp_path: Path) -> None:
    """--shadow: three drains of one route (no shadow, a shadow of the same model, a slow one), every live answer
    the same, the slow shadow's queue (smaller than a micro-batch) shedding, and its counts reported."""
    stdout, r = _bench(kafka_bootstrap, tmp_path, "--events", str(EVENTS), "--shadow", "--shadow-rounds", "1",
                       "--shadow-queue", "50", "--shadow-delay-ms", "2000", timeout_s=400)
    assert "infertide bench --shadow" in stdout and "noise" in stdout
    c, runs = r["conditions"], r["shadow"]["runs"]
    assert c["shadow"] and c["shadow_queue_size"] == 50 and c["slow_model"] == "echo_slow"
    assert [run["scenario"] for run in runs] == ["none", "same", "slow"]
    for run in runs:
        d = run["drain"]
        assert d["results"] == EVENTS and d["missing"] == 0 and d["events_per_s"] > 0
        assert run["answers"]["identical"] == EVENTS and run["answers"]["differ"] == run["answers"]["missing"] == 0
        assert run["worker_cpu"]["live_s"] > 0 and run["load_average"] >= 0
        if run["scenario"] == "none":
            assert "shadow" not in run
            continue
        for counts in (run["shadow"]["at_live_end"], run["shadow"]["settled"]):
            assert counts["offered"] >= EVENTS and counts["offered"] == counts["accepted"] + counts["shed"]
            assert counts["results"] <= counts["taken"] <= counts["accepted"]
    slow = runs[2]["shadow"]
    assert slow["at_live_end"]["shed"] > 0 and slow["settled"]["results"] > 0
    summary = r["shadow"]["summary"]["scenarios"]
    assert set(summary) == {"none", "same", "slow"} and all(len(v["ratio_to_none"]) == 1 for v in summary.values())
