"""The local runtime without a cluster: the child env, settings reaching Serve replicas through runtime_env
(not this process's environment), our SIGTERM handler kept across ray.init, and the one private Ray attribute."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infertide.local import runtime
from infertide.local.runtime import RayServe, WorkerProcess, local_env


def test_local_env_keeps_replicas_at_normal_priority_and_the_users_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    env = local_env({"HF_HUB_OFFLINE": "1"})
    assert env["RAY_worker_niceness"] == "0" and env["RAY_AUTH_MODE"] == "disabled"
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.setenv("RAY_worker_niceness", "5")
    assert local_env()["RAY_worker_niceness"] == "5"  # setdefault: the user's own value wins


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import ray
    from ray import serve

    import workers.app

    seen: dict[str, Any] = {}

    def init(**kwargs: Any) -> None:
        seen["init"] = kwargs
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init does, with its own handler

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(gcs_address="127.0.0.1:1"))
    monkeypatch.setattr(serve, "start", lambda **kw: seen.setdefault("serve", kw))
    monkeypatch.setattr(workers.app, "deploy", lambda topology: seen.setdefault("deployed", topology))
    return seen


def test_replicas_get_the_env_through_runtime_env(fake_ray: dict[str, Any], tiny_topology: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERTIDE_TEST_ONLY", raising=False)
    ours = lambda *_: None  # noqa: E731
    before = signal.signal(signal.SIGTERM, ours)
    try:
        serve = RayServe(tiny_topology, num_cpus=1, env={"INFERTIDE_TEST_ONLY": "x"}).start()
        assert signal.getsignal(signal.SIGTERM) is ours, "ray.init must not take our SIGTERM handler"
    finally:
        signal.signal(signal.SIGTERM, before)
    assert fake_ray["init"]["runtime_env"] == {"env_vars": {"INFERTIDE_TEST_ONLY": "x"}}
    assert "INFERTIDE_TEST_ONLY" not in os.environ
    assert serve.address == "127.0.0.1:1" and fake_ray["deployed"] is tiny_topology
    assert fake_ray["serve"]["http_options"]["host"] == "127.0.0.1"


def test_no_env_means_no_runtime_env(fake_ray: dict[str, Any], tiny_topology: Any) -> None:
    RayServe(tiny_topology).start()
    assert fake_ray["init"]["runtime_env"] is None


def test_the_private_ray_attribute_we_read_still_exists() -> None:
    """Ray has no public API for the session's log folder; ray_session_logs_dir reads this one attribute."""
    import ray._private.node
    import ray._private.worker

    assert hasattr(ray._private.worker, "_global_node"), "Ray renamed _global_node: fix ray_session_logs_dir"
    assert callable(getattr(ray._private.node.Node, "get_logs_dir_path", None))


def test_ray_session_logs_dir_says_when_there_is_no_node(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray._private.worker

    monkeypatch.setattr(ray._private.worker, "_global_node", None)
    with pytest.raises(AttributeError, match="ray.init first"):
        runtime.ray_session_logs_dir()
    monkeypatch.setattr(ray._private.worker, "_global_node", SimpleNamespace(get_logs_dir_path=lambda: "/tmp/x"))
    assert runtime.ray_session_logs_dir() == "/tmp/x"


def test_a_worker_log_file_is_not_left_open(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One descriptor per restart would leak if the parent kept its copy of the log file."""
    import subprocess

    opened: list[Any] = []

    class FakePopen:
        def __init__(self, cmd: list[str], stdout: Any, **kw: Any) -> None:
            opened.append(stdout)
            self.pid = 1

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    runtime.WorkerProcess(tmp_path / "t.yaml", "127.0.0.1:1", 1, tmp_path / "w.log").start()
    assert opened and opened[0].closed


def test_dump_stacks_appends_every_threads_native_stack_to_the_log(tmp_path: Path) -> None:
    """A stalled worker's native frames (a call stuck inside librdkafka) land in its log, via py-spy."""
    log = tmp_path / "w.log"
    w = WorkerProcess(tmp_path / "t.yaml", None, 0, log)
    w.proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGUSR1, "
                                "lambda *a: print('usr1', flush=True)); time.sleep(60)"], stdout=log.open("ab"))
    try:
        time.sleep(0.5)
        w.dump_stacks(wait_s=0.2)
    finally:
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(10)
    text = log.read_text()
    assert "usr1" in text
    assert f"--- py-spy dump --native --pid {w.proc.pid}" in text
    assert "sleep" in text, text[-2000:]
