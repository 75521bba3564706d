"""LocalStack's supervision pass with fake workers (no processes): restart with backoff, give up, health runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from infertide.local.stack import LocalStack, StackError, port_free
from infertide.local.supervise import RestartPolicy


@dataclass
class FakeWorker:
    web_port: int = 1
    live: bool = True
    health: tuple[int, bytes] = (200, b'{"ok": true}')
    stopped: int = 0
    log_path: str = "w.log"
    proc: Any = field(default_factory=lambda: type("P", (), {"pid": 7, "returncode": 3})())

    def alive(self) -> bool:
        return self.live

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        return self.health

    def stop(self, timeout: float = 30.0) -> int:
        self.stopped += 1
        self.live = False
        return 0

    def start(self) -> FakeWorker:
        self.live = True
        return self

    def tail(self, n: int = 40) -> str:
        return "boom"


@pytest.fixture
def stack(tiny_topology: Any) -> LocalStack:
    s = LocalStack(tiny_topology, max_restarts=2)
    s.procs = [FakeWorker()]
    s.policies = [RestartPolicy(max_restarts=2)]
    s._worker = lambda i, port: FakeWorker(web_port=port)  # type: ignore[method-assign]
    return s


def test_a_dead_worker_is_restarted_after_the_backoff(stack: LocalStack) -> None:
    stack.procs[0].live = False
    events = stack.check(now=0.0)
    assert len(events) == 1 and "exited (code 3: boom)" in events[0] and "restarting in 1 s" in events[0]
    assert stack.check(now=0.5) == []  # not due yet
    assert stack.check(now=1.0) == ["worker 0 restarted (pid 7)"] and stack.procs[0].alive()


def test_three_bad_health_checks_in_a_row_cost_a_restart(stack: LocalStack) -> None:
    stack.procs[0].health = (503, b'{"reason": "agent stalled"}')
    assert stack.check(now=0.0) == [] and stack.check(now=1.0) == []
    events = stack.check(now=2.0)
    assert len(events) == 1 and "unhealthy (3 failed /healthz checks: agent stalled)" in events[0]


def test_it_gives_up_after_max_restarts_in_a_row(stack: LocalStack) -> None:
    now = 0.0
    for _ in range(2):
        stack.procs[0].live = False
        stack.check(now=now)
        now += 30
        stack.check(now=now)  # restarted
    stack.procs[0].live = False
    with pytest.raises(StackError, match="restarted 2 times in a row"):
        stack.check(now=now + 1)


def test_port_free() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert not port_free(s.getsockname()[1])
