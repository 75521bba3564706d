"""``python -m infertide.bench.engine``: the route engine alone drains a pre-filled topic on the session's broker,
in both guarantees. Speed is the benchmark's to report; here only that every input was answered and the
report is complete."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from infertide.bench.engine import main
from topologies.metrics import BATCH_STAGES

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

EVENTS, BATCH = 2000, 256


def test_engine_bench_drains_every_event_in_both_guarantees(kafka_bootstrap: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "engine.json"
    main(["--events", str(EVENTS), "--guarantee", "both", "--batch", str(BATCH), "--bootstrap", kafka_bootstrap,
          "--json", str(out)])
    assert "route engine alone" in capsys.readouterr().out
    rows = orjson.loads(out.read_bytes())
    assert [r["guarantee"] for r in rows] == ["at-least-once", "exactly-once"]
    for row in rows:
        assert row["events"] == EVENTS  # a drain ends only when every input's offset is answered (else it raises)
        assert row["events_per_s"] > 0 and row["seconds"] > 0 and row["cpu_cores"] > 0
        assert row["batches"] >= EVENTS // BATCH  # micro-batches of at most BATCH
        assert set(row["stage_ms"]) == set(BATCH_STAGES)
    assert rows[0]["commit_interval_s"] == 1.0 and rows[1]["commit_interval_s"] == 0.1
