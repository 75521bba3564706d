"""``infertide up --tiny`` as a user runs it: reaches "up", serves ``produce`` / ``tail``, prints no Ray/Serve
log lines (they go to files in the run folder), and stops cleanly on SIGTERM with no warnings."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from schemas.topology import default_topology_path

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
# A Ray/Serve log record, a raylet/worker line forwarded to the driver, or a Python warning.
LOG_LINE = re.compile(r"^(INFO|WARNING|WARN|ERROR|DEBUG) \d{4}-\d\d-\d\d|^\[\d{4}-\d\d-\d\d .*\] \[|\((raylet|pid=|"
                      r"ServeController|ServeReplica|ProxyActor)|Warning:|Traceback", re.MULTILINE)


def _config(tmp_path: Path) -> Path:
    """The default topology, cut to the text route, on topics unique to this test."""
    data = yaml.safe_load(default_topology_path().read_text())
    prefix = f"t{uuid.uuid4().hex[:8]}"
    aliases = ["text", "image", "video", "sentiment", "detections", "tags", "recommendations", "analytics", "dlq"]
    data["topics"] = {**{a: f"{prefix}.{a}" for a in aliases}, "partitions": 1}
    data["kafka"].update(consumer_group=prefix, session_timeout_s=6, heartbeat_interval_s=2)
    data["models"] = {"sentiment": data["models"]["sentiment"]}
    data["routes"] = [r for r in data["routes"] if r["name"] == "text"]
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "infertide", "--config", str(config), *args]


def test_up_tiny_serves_produce_and_tail_quietly(tmp_path: Path, kafka_bootstrap: str) -> None:
    config = _config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out_file = tmp_path / "up.out"
    with out_file.open("w") as out:
        up = subprocess.Popen(_cli(config, "up", "--tiny", "--bootstrap", kafka_bootstrap), stdout=out,
                              stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while "infertide is up" not in out_file.read_text():
            assert up.poll() is None, f"up exited {up.returncode}:\n{out_file.read_text()}"
            assert time.monotonic() < deadline, out_file.read_text()
            time.sleep(0.5)
        sent = subprocess.run(_cli(config, "produce", "text", "a great film", "--bootstrap", kafka_bootstrap),
                              capture_output=True, text=True, env=env, timeout=60)
        assert sent.returncode == 0, sent.stderr
        got = subprocess.run(_cli(config, "tail", "sentiment", "--from-beginning", "--raw", "--max", "1",
                                  "--timeout", "60", "--bootstrap", kafka_bootstrap),
                             capture_output=True, text=True, env=env, timeout=90)
        records = [orjson.loads(line) for line in got.stdout.splitlines() if line.strip()]
        assert len(records) == 1, got.stderr
        assert records[0]["label"] in ("POSITIVE", "NEGATIVE")
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGTERM)
        code = up.wait(60)
    text = out_file.read_text()
    assert code == 0, text
    assert "stopped." in text
    assert not LOG_LINE.search(text), f"Ray/Serve log lines or warnings in the CLI output:\n{text}"
    run_dir = Path(re.search(r"logs: (\S+)", text).group(1))
    assert "Started Serve" in (run_dir / "ray-driver.log").read_text()
    assert (run_dir / "ray-logs").is_symlink()
