"""``python -m infertide.bench.gpu --quick``: the GPU run's code path on CPU (tiny models, three routes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.bench, pytest.mark.timeout(300)]


def test_gpu_bench_quick_on_cpu(kafka_bootstrap: str, tmp_path: Path) -> None:
    out, js = tmp_path / "gpu-bench.md", tmp_path / "gpu-bench.json"
    cmd = [sys.executable, "-m", "infertide.bench.gpu", "--quick", "--events", "60", "--naive-events", "10",
           "--seconds", "0.3", "--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / "work"),
           "--out", str(out), "--json", str(js)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = orjson.loads(js.read_bytes())
    routes = {x["pipeline"]["route"]: x for x in r["bench"]["routes"]}
    assert set(routes) == {"text", "image", "video"}
    for x in routes.values():
        p = x["pipeline"]
        assert p["sent"] == 60 and p["results"] == 60 and p["missing"] == 0, p
        assert x["bare_model"]["items_per_s"] > 0 and x["naive_loop"]["events"] > 0
    assert set(routes["image"]["pipeline"]["serve_batch"]) == {"detection", "tagging"}
    assert {(m["model"], m["batch"]) for m in r["models"]} == {(m, b) for m in ("sentiment", "detection", "tagging")
                                                                for b in (1, 8)}
    text = out.read_text()
    assert "## End to end, per route" in text and "| image (image) | detection, tagging | 60/60 |" in text
