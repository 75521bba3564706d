"""RestartPolicy: capped exponential backoff, reset after a healthy stretch, N bad /healthz in a row (fake clock)."""

from __future__ import annotations

import sys

from infertide.local.supervise import RestartPolicy, die_with_parent


def test_backoff_doubles_to_the_cap_then_gives_up() -> None:
    p = RestartPolicy(max_restarts=8)
    delays = []
    now = 0.0
    for _ in range(8):
        delays.append(p.failed(now))
        now += 5.0  # each replacement dies 5 s after it starts: never healthy for a minute
        p.restarted(now)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert p.failed(now) is None


def test_a_healthy_minute_resets_the_backoff() -> None:
    p = RestartPolicy()
    assert p.failed(0.0) == 1
    p.restarted(1.0)
    assert p.failed(10.0) == 2
    p.restarted(12.0)
    p.healthy(71.9)
    assert p.failed(71.9) == 4  # 59.9 s since the restart: not yet a minute
    p.restarted(76.0)
    p.healthy(136.0)
    assert p.failures == 0
    assert p.failed(140.0) == 1


def test_a_long_run_resets_even_without_health_checks() -> None:
    p = RestartPolicy(max_restarts=2)
    assert p.failed(0.0) == 1
    p.restarted(1.0)
    assert p.failed(2.0) == 2
    p.restarted(4.0)
    assert p.failed(100.0) == 1  # ran 96 s before dying: a fresh start, not a give-up


def test_three_bad_checks_in_a_row_make_one_failure() -> None:
    p = RestartPolicy()
    assert [p.unhealthy(), p.unhealthy()] == [False, False]
    p.healthy(1.0)  # one good answer clears the run
    assert [p.unhealthy(), p.unhealthy(), p.unhealthy()] == [False, False, True]
    assert p.failed(2.0) == 1
    assert p.unhealthy() is False  # the count starts over for the replacement


def test_die_with_parent_only_on_linux() -> None:
    hook = die_with_parent()
    assert (hook is not None) == sys.platform.startswith("linux")


def test_health_reason_is_read_from_the_json_body() -> None:
    from infertide.local.stack import _reason

    assert _reason(503, b'{"ok": false, "reason": "stalled: lag 40, no commit for 30 s"}') == \
        "stalled: lag 40, no commit for 30 s"
    assert _reason(0, b"timed out") == "no answer (timed out)"
    assert _reason(500, b"oops") == "HTTP 500 oops"
