"""SIGKILL of a process that started a LocalKafka and a worker-style child leaves neither running.

Both children get PR_SET_PDEATHSIG through :func:`infertide.local.supervise.die_with_parent`, the helper that
``infertide up`` / ``demo`` use for the broker JVM and the worker processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infertide.local.stack import port_free

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

PARENT = """
import json, subprocess, sys, time
from pathlib import Path
from infertide.local.broker import LocalKafka
from infertide.local.supervise import die_with_parent
work = Path(sys.argv[1])
kafka = LocalKafka(work / "kafka").start(timeout=60)
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                           preexec_fn=die_with_parent())
(work / "started.json").write_text(json.dumps({"port": kafka.port, "pids": [kafka.proc.pid, sleeper.pid]}))
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purpose (its parent died; init reaps it).
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_sigkill_of_the_parent_takes_its_children_down(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], env={**os.environ})
    started = tmp_path / "started.json"
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not started.exists():
            assert parent.poll() is None, f"the parent exited with {parent.returncode}"
            assert time.monotonic() < deadline, "LocalKafka did not start within 90 s"
            time.sleep(0.2)
        info = json.loads(started.read_text())
        pids = info["pids"]
        assert not port_free(info["port"])
        parent.kill()
        parent.wait(10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and not (port_free(info["port"]) and all(_gone(p) for p in pids)):
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert port_free(info["port"]), f"Kafka port {info['port']} still held {took:.1f}s after SIGKILL of its parent"
        assert all(_gone(p) for p in pids), f"children {pids} still running {took:.1f}s after SIGKILL of their parent"
        print(f"children gone and port free {took:.1f}s after SIGKILL")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid in pids:  # only the PIDs we started, if the assertion above failed
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
