"""``infertide bench`` with tiny numbers (echo model): the table prints and the JSON has every section.

Speed is measured by the benchmark, not asserted here: only presence, positivity
and consistent counts are checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS, NAIVE, BATCH = 300, 200, 32


def test_bench_echo_small(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "infertide", "bench", "--model", "echo", "--events", str(EVENTS),
           "--naive-events", str(NAIVE), "--batch-size", str(BATCH), "--timeout", "90",
           "--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for row in ("pipeline", "bare model", "naive loop", "broker passthrough"):
        assert row in proc.stdout
    r = orjson.loads(out.read_bytes())

    assert set(r) >= {"conditions", "pipeline", "bare_model", "naive_loop", "passthrough", "ratios"}
    c, p = r["conditions"], r["pipeline"]
    assert (c["events"], c["model"], c["batch_size"]) == (EVENTS, "echo", BATCH)

    assert p["sent"] == EVENTS
    assert p["results"] + p["dlq"] + p["missing"] == EVENTS
    assert p["results"] == EVENTS and p["dlq"] == 0 and p["dlq_rate"] == 0
    assert p["events_per_s"] > 0 and p["seconds"] > 0
    lat = p["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    mb, sb = p["microbatch"], p["serve_batch"]
    assert mb["events"] == EVENTS and mb["batches"] >= EVENTS / BATCH
    assert 0 < mb["fill"] <= 1 and 0 < mb["mean"] <= BATCH
    assert sb["items"] == EVENTS and sb["batches"] >= 1 and 0 < sb["fill"] <= 1 and sb["max"] <= BATCH
    assert p["worker_metrics"]["events_in"] == EVENTS and p["worker_metrics"]["results_out"] == EVENTS

    assert r["bare_model"]["items_per_s"] > 0 and r["bare_model"]["batch_size"] == BATCH
    assert r["naive_loop"]["events"] == NAIVE and r["naive_loop"]["events_per_s"] > 0
    assert r["passthrough"]["events"] == EVENTS and r["passthrough"]["events_per_s"] > 0
    assert all(v > 0 for v in r["ratios"].values())
