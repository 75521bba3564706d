"""``infertide bench --shadow``'s pure parts: the three route configs, the round order, the per-event answer
check and the ratios against the same round's no-shadow drain."""

from __future__ import annotations

from pathlib import Path

import pytest

from infertide.bench import shadow as sb
from infertide.bench import topology as bt
from infertide.bench.drive import answer_digest
from infertide.bench.options import BenchOptions
from schemas.rollout import rollout_topics
from schemas.topology import parse_topology


def _data(tmp_path: Path, opts: BenchOptions) -> dict:
    return bt.for_run(bt.builtin_dict(opts, tmp_path), opts, "127.0.0.1:1", "bench-x", 7001)


def test_each_scenario_is_a_valid_topology_differing_only_in_the_shadow(tmp_path: Path) -> None:
    opts = BenchOptions(model="echo", shadow=True, shadow_delay_ms=750, batch_size=32)
    data = _data(tmp_path, opts)
    assert data["models"]["echo_slow"]["options"] == {"delay_ms": 750}  # deployed from the start
    assert data["models"]["echo_slow"]["batching"] == data["models"]["echo"]["batching"]
    topos = {sc: parse_topology(sb.scenario_data(data, sc, opts, "bench-x")) for sc in sb.SCENARIOS}
    assert not topos["none"].routes[0].rollout and rollout_topics(topos["none"]) == []
    for sc, model in (("same", "echo"), ("slow", "echo_slow")):
        ro = topos[sc].routes[0].rollout["echo"]
        (s,) = ro.shadows
        assert (s.name, s.model, s.percent, s.queue_size) == (sc, model, 100, 4 * 4 * 32)
        assert rollout_topics(topos[sc]) == [f"bench-x.shadow-{sc}"]
        assert not ro.variants  # live answers stay the base model's
        same_route = topos[sc].routes[0].model_copy(update={"rollout": {}})
        assert same_route == topos["none"].routes[0]
    assert data["routes"][0].get("rollout") in (None, {})  # the input is not changed


def test_no_slow_model_without_shadow_and_unknown_scenario_refused(tmp_path: Path) -> None:
    data = _data(tmp_path, BenchOptions(model="echo"))
    assert set(data["models"]) == {"echo"}
    with pytest.raises(ValueError, match="scenario must be one of"):
        sb.scenario_data(data, "fast", BenchOptions(model="echo"), "bench-x")


def test_rounds_rotate_so_each_scenario_takes_each_position() -> None:
    rounds = [sb.order(r) for r in range(3)]
    assert rounds[0] == ("none", "same", "slow")
    for pos in range(3):
        assert {r[pos] for r in rounds} == set(sb.SCENARIOS)
    assert sb.order(3) == rounds[0]


def test_answers_compare_without_ids_times_or_variant() -> None:
    a = {"event_id": "run1-7", "ts": 1, "timings": {"e2e_ms": 3.0}, "produced_ts": 4, "model": {"name": "echo"},
         "label": "echo", "score": 1.0}
    b = {**a, "event_id": "run2-7", "ts": 9, "timings": {"e2e_ms": 80.0}, "produced_ts": 99,
         "variant": {"name": "echo", "role": "base"}}
    assert answer_digest(a) == answer_digest(b)
    assert answer_digest(a) != answer_digest({**a, "score": 0.5})
    ref = {("t", i): answer_digest(a) for i in range(4)}
    got = {("t", 0): answer_digest(b), ("t", 1): answer_digest({**a, "label": "x"}), ("t", 2): answer_digest(a)}
    assert sb.compare_answers(ref, got) == {"compared": 4, "identical": 2, "differ": 1, "missing": 1}


def test_ratios_are_against_the_same_rounds_no_shadow_drain_and_noise_is_their_spread() -> None:
    rates = {(0, "none"): 1000.0, (0, "same"): 600.0, (0, "slow"): 950.0,
             (1, "same"): 900.0, (1, "slow"): 1200.0, (1, "none"): 1200.0}
    runs = [{"round": rd, "scenario": sc, "drain": {"events_per_s": v},
             "worker_cpu": {"live_us_per_event": 100.0 if sc == "none" else 180.0 if sc == "same" else 110.0}}
            for (rd, sc), v in rates.items()]
    s = sb.summarize(runs)
    assert s["scenarios"]["same"]["ratio_to_none"] == pytest.approx([0.6, 0.75])
    assert s["scenarios"]["slow"]["ratio_to_none"] == pytest.approx([0.95, 1.0])
    assert s["scenarios"]["slow"]["mean_ratio"] == pytest.approx(0.975)
    assert s["scenarios"]["none"]["mean_events_per_s"] == pytest.approx(1100.0)
    assert s["noise"] == pytest.approx(200 / 1100)
    assert s["scenarios"]["same"]["cpu_ratio_to_none"] == pytest.approx([1.8, 1.8])
    assert s["scenarios"]["slow"]["mean_cpu_ratio"] == pytest.approx(1.1)
    one = sb.summarize(runs[:3])
    assert one["noise"] is None and one["scenarios"]["same"]["ratio_to_none"] == pytest.approx([0.6])
