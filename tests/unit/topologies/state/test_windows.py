"""Analytics windows folded from the summary log: membership by marker, exact sums, identical replays."""

from __future__ import annotations

import random
from typing import Any

import orjson

from topologies.state.windows import WindowFold, is_marker, marker


def summary(n_in: int, n_out: int = 0) -> dict[str, Any]:
    return {"route": "text", "metrics": {"events|text": {"in": float(n_in), "out": float(n_out)}}}


def fold_all(log: list[tuple[dict[str, Any], int]], size_ms: int = 1000) -> list[Any]:
    fold, closed = WindowFold(size_ms), []
    for value, ts in log:
        closed.extend(fold.add(value, ts) or [])
    return closed


def test_a_marker_closes_the_window_it_follows() -> None:
    log = [(orjson.loads(marker(10_000)), 10_000), (summary(3, 2), 10_100), (summary(4, 4), 10_900),
           (orjson.loads(marker(11_000)), 11_001)]
    [window] = fold_all(log)
    assert (window.metric, window.key, window.window_start, window.window_end) == ("events", "text", 10_000, 11_000)
    assert window.values == {"in": 7.0, "out": 6.0}


def test_a_marker_not_later_than_the_open_window_changes_nothing() -> None:
    """A second owner's marker for the same boundary, or a skewed clock's older one."""
    log = [(orjson.loads(marker(10_000)), 0), (summary(1), 0), (orjson.loads(marker(10_000)), 0),
           (summary(2), 0), (orjson.loads(marker(9_000)), 0), (summary(3), 0), (orjson.loads(marker(11_000)), 0)]
    [window] = fold_all(log)
    assert window.values == {"in": 6.0, "out": 0.0}


def test_summaries_before_any_marker_open_the_window_of_their_timestamp() -> None:
    [window] = fold_all([(summary(5), 12_345), (orjson.loads(marker(13_000)), 13_000)])
    assert (window.window_start, window.window_end, window.values["in"]) == (12_000, 13_000, 5.0)


def test_an_empty_window_emits_nothing_and_other_records_are_ignored() -> None:
    fold = WindowFold(1000)
    assert fold.add(orjson.loads(marker(1_000)), 0) == []
    assert fold.add({"route": "text", "metrics": {}}, 0) is None
    assert fold.add([1, 2], 0) is None
    assert fold.add(orjson.loads(marker(2_000)), 0) == []


def test_windows_add_up_to_every_summary_and_a_replay_emits_the_same_values() -> None:
    rng = random.Random(7)
    log: list[tuple[dict[str, Any], int]] = []
    boundary, expected = 0, 0.0
    for _ in range(500):
        if rng.random() < 0.1:
            boundary += 1000
            log.append((orjson.loads(marker(boundary)), boundary))
        else:
            n = rng.randint(1, 50)
            expected += n
            log.append((summary(n, n - 1), boundary + 1))
    boundary += 1000
    log.append((orjson.loads(marker(boundary)), boundary))
    closed = fold_all(log)
    assert sum(w.values["in"] for w in closed) == expected
    # A new owner re-reads from some committed marker: the windows from there are emitted again, equal.
    marker_at = [i for i, (v, _) in enumerate(log) if is_marker(v)]
    restart = marker_at[len(marker_at) // 2]
    again = fold_all(log[restart:])
    first = {(w.key, w.window_start): (w.window_end, w.values) for w in closed}
    for w in again:
        assert first[(w.key, w.window_start)] == (w.window_end, w.values)
