"""The local Apache Kafka launcher: ``LocalKafka`` start/stop, and ``infertide kafka start/status/stop``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from infertide.local.broker import LocalKafka, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

CLI = str(Path(sys.executable).with_name("infertide"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_local_kafka_start_and_stop(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "k")
    t0 = time.monotonic()
    broker.start(timeout=90)
    try:
        started = time.monotonic() - t0
        print(f"LocalKafka format+start until metadata answers: {started:.2f}s")
        pid = broker.proc.pid
        assert broker.pid_file.read_text() == str(pid)
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
        try:
            admin.create_topics({"probe": {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
            assert "probe" in admin.list_topics()
        finally:
            admin.close()
    finally:
        broker.stop()
    assert not _alive(pid)
    assert not broker.pid_file.exists()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "kafka", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_kafka_start_status_stop(tmp_path: Path) -> None:
    run_dir, port = tmp_path / "run", free_port()
    pid_file = run_dir / "broker.pid"
    try:
        start = _cli("start", "--port", str(port), "--dir", str(run_dir))
        assert start.returncode == 0, start.stdout + start.stderr
        assert f"127.0.0.1:{port}" in start.stdout
        pid = int(pid_file.read_text())
        assert _alive(pid)

        again = _cli("start", "--port", str(port), "--dir", str(run_dir))
        assert again.returncode == 1 and "already running" in again.stderr

        status = _cli("status", "--dir", str(run_dir))
        assert status.returncode == 0 and "answers" in status.stdout and str(pid) in status.stdout

        stop = _cli("stop", "--dir", str(run_dir))
        assert stop.returncode == 0 and f"pid {pid}" in stop.stdout
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)

        after = _cli("status", "--dir", str(run_dir))
        assert after.returncode == 1 and "not running" in after.stdout
    finally:
        if pid_file.is_file():  # the test failed midway: stop only the broker this test started
            from infertide.local.broker import stop_pid_file

            stop_pid_file(pid_file)


def test_cli_kafka_cluster_of_three_start_status_stop(tmp_path: Path) -> None:
    """``--brokers 3``: three nodes on consecutive ports, each answering, all stopped together."""
    run_dir, port = tmp_path / "run", free_port()
    pid_files = [run_dir / f"node-{i}" / "broker.pid" for i in (1, 2, 3)]
    try:
        start = _cli("start", "--brokers", "3", "--port", str(port), "--dir", str(run_dir), timeout=150)
        assert start.returncode == 0, start.stdout + start.stderr
        out = " ".join(start.stdout.split())
        assert ",".join(f"127.0.0.1:{port + i}" for i in range(3)) in out.replace(", ", ",")
        assert "min.insync.replicas 2" in out
        pids = [int(f.read_text()) for f in pid_files]
        assert all(_alive(p) for p in pids)

        single = _cli("start", "--dir", str(run_dir), "--port", str(port))
        assert single.returncode == 1 and "already running" in single.stderr

        status = _cli("status", "--dir", str(run_dir))
        assert status.returncode == 0, status.stdout
        assert " ".join(status.stdout.split()).count("running, answers") == 3

        stop = _cli("stop", "--dir", str(run_dir))
        assert stop.returncode == 0 and all(str(p) in stop.stdout for p in pids)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids)

        resized = _cli("start", "--brokers", "2", "--dir", str(run_dir), "--port", str(port))
        assert resized.returncode == 1 and "--brokers 3" in resized.stderr  # a quorum keeps its size
    finally:
        if any(f.is_file() for f in pid_files):  # the test failed midway: stop only what this test started
            from infertide.local.broker import stop_pid_files

            stop_pid_files(pid_files)
