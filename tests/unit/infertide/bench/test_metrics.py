"""Reading worker /metrics: counters summed by label, held partitions from the assigned gauge or the lag gauges."""

from __future__ import annotations

from infertide.bench import metrics as mx

TODAY = """# HELP infertide_events_in_total Input records consumed
# TYPE infertide_events_in_total counter
infertide_events_in_total{route="text"} 120.0
infertide_events_in_total{route="image"} 7.0
# TYPE infertide_consumer_lag gauge
infertide_consumer_lag{partition="1",topic="b.text"} 0.0
infertide_consumer_lag{partition="3",topic="b.text"} 4.0
# TYPE infertide_committed_offset gauge
infertide_committed_offset{partition="3",topic="b.text"} 40.0
infertide_committed_offset{partition="0",topic="b.image"} 5.0
"""

NEW_ENGINE = TODAY + """# TYPE infertide_assigned_partitions gauge
infertide_assigned_partitions{partition="0",topic="b.text"} 1.0
infertide_assigned_partitions{partition="2",topic="b.text"} 1.0
infertide_assigned_partitions{partition="3",topic="b.text"} 0.0
"""


def test_counters_sum_by_label_and_delta() -> None:
    before, after = mx.parse(TODAY), mx.parse(TODAY.replace("120.0", "170.0"))
    assert mx.total(after, "infertide_events_in_total") == 177.0
    assert mx.total(after, "infertide_events_in_total", route="image") == 7.0
    assert mx.delta(before, after, "infertide_events_in_total", route="text") == 50.0
    assert mx.delta(before, after, "infertide_events_in_total", route="video") == 0.0


def test_held_partitions_fall_back_to_lag_and_committed_gauges() -> None:
    held, source = mx.held_partitions(mx.parse(TODAY), ["b.text", "b.video"])
    assert held == {"b.text": [1, 3]}
    assert source == "infertide_consumer_lag + infertide_committed_offset"


def test_held_partitions_prefer_the_assigned_gauge_and_its_value() -> None:
    held, source = mx.held_partitions(mx.parse(NEW_ENGINE), ["b.text"])
    assert held == {"b.text": [0, 2]}  # partition 3 reads 0: released
    assert source == mx.ASSIGNED


def test_scrape_of_a_silent_worker_is_empty() -> None:
    class Down:
        def get(self, path: str, timeout: float) -> tuple[int, bytes]:
            raise ConnectionRefusedError(path)

    assert mx.scrape(Down()) == {}
