"""``infertide bench --shadow``: does a shadow cost the live route throughput? Three drains side by side.

One run, one stack (Kafka, Ray with the echo model and a slow echo model, the workers), the same
text route drained from a filled topic (as :func:`infertide.bench.stack.drain` measures it) in three
settings, the route's config switched between them by restarting only the workers:

- ``none``: no rollout (the route as it runs without one);
- ``same``: a 100% shadow of the live model itself (its replicas, queue and CPU are shared: the cost
  of a shadow that keeps up);
- ``slow``: a 100% shadow on its own deployment, an echo model sleeping ``--shadow-delay-ms`` per
  model batch, far slower than live: its bounded queue fills and sheds; live should not notice (measured in
  docs/performance.md, "A shadow beside live": it does).

Each round runs the three in another order (rotated), and every ratio is against the ``none`` drain of
the same round; with two rounds or more, the spread of the ``none`` drains is the run's noise. Per drain
it reports the live events/s, the shadow's counts read off each worker (``/api/rollout``'s queue stats,
``infertide_shadow_results_total``) when live finished and again once its queue emptied (or
``BenchOptions.shadow_settle_s``, 30 s, passed), the workers' CPU per live event, the load average, the
mean Serve call per model, and whether every live answer equals the first ``none`` drain's
(per event, ids, times and the ``variant`` field aside). Speed is reported, never asserted.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from infertide.bench import metrics as mx
from infertide.bench import topology as bt
from infertide.bench.options import BenchOptions, Reporter
from infertide.bench.stack import BenchStack, drain, phase

__all__ = ["SCENARIOS", "compare_answers", "order", "run_shadow", "scenario_data", "summarize"]

SCENARIOS = ("none", "same", "slow")


def order(round_: int) -> tuple[str, ...]:
    """The scenarios of round ``round_``, rotated so each takes each position once in three rounds."""
    k = round_ % len(SCENARIOS)
    return SCENARIOS[k:] + SCENARIOS[:k]


def scenario_data(data: dict[str, Any], scenario: str, opts: BenchOptions, prefix: str) -> dict[str, Any]:
    """Topology ``data`` (one route, live model ``opts.model``) with the route's rollout for ``scenario``.

    The shadows sample every event (``percent: 100``), write to a topic of their own per scenario, and queue
    at most ``opts.shadow_queue_size`` events."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, not {scenario!r}")
    data = copy.deepcopy(data)
    route = data["routes"][0]
    route["rollout"] = {}
    if scenario != "none":
        model = opts.model if scenario == "same" else bt.SLOW_SHADOW_MODEL
        shadow = {"name": scenario, "model": model, "percent": 100, "queue_size": opts.shadow_queue_size,
                  "output": f"{prefix}.shadow-{scenario}"}
        route["rollout"] = {opts.model: {"sticky_key": "event_id", "shadows": [shadow]}}
    return data


def compare_answers(ref: dict[Any, bytes], got: dict[Any, bytes]) -> dict[str, int]:
    """Per event (key), whether ``got``'s answer digest equals ``ref``'s."""
    same = sum(1 for k, v in got.items() if ref.get(k) == v)
    return {"compared": len(ref), "identical": same, "differ": sum(1 for k in got if k in ref) - same,
            "missing": sum(1 for k in ref if k not in got)}


def _use(bs: BenchStack, scenario: str) -> None:
    """Point every worker at the route config of ``scenario`` (taken at its next start) and create its topics."""
    from infertide.clients.admin import ensure_topics
    from schemas.topology import parse_topology

    data = scenario_data(bs.stack.topology.model_dump(mode="json"), scenario, bs.opts, bs.prefix)
    path = bt.write(data, bs.workdir / f"topology-shadow-{scenario}.yaml")
    ensure_topics(parse_topology(data, str(path)))  # the shadow topic and the rollout control topic
    for w in bs.stack.procs:
        w.config_path = path


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0.0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _workers_cpu_s(bs: BenchStack) -> float:
    return sum(_cpu_s(w.proc.pid if w.proc else None) for w in bs.stack.procs)


def _live_metrics(bs: BenchStack, route: str) -> dict[str, Any]:
    """At the live drain's end: micro-batches and their mean size, and the mean Serve call per model (ms)."""
    samples = [mx.scrape(w) for w in bs.stack.procs]

    def tot(name: str, **labels: str) -> float:
        return sum(mx.total(s, name, route=route, **labels) for s in samples)

    batches, events = tot("infertide_microbatch_size_count"), tot("infertide_microbatch_size_sum")
    calls = {}
    for m in bs.topology.models:
        n = tot("infertide_serve_call_seconds_count", model=m)
        if n:
            calls[m] = {"calls": int(n), "mean_ms": round(tot("infertide_serve_call_seconds_sum", model=m) / n * 1000, 1)}
    return {"microbatches": int(batches), "mean_microbatch": round(events / batches, 1) if batches else 0.0,
            "serve_calls": calls}


def _shadow_counts(bs: BenchStack, route: str, scenario: str) -> dict[str, int]:
    """The shadow's queue stats and results, summed over the workers (fresh since the drain restarted them)."""
    out = dict.fromkeys(("offered", "accepted", "shed", "taken", "queued", "dropped", "results"), 0)
    for w in bs.stack.procs:
        status, body = w.get("/api/rollout", timeout=5.0)
        queues = orjson.loads(body).get("shadow_queues", {}) if status == 200 else {}
        q = queues.get(f"{route}/{bs.opts.model}/{scenario}", {})
        for k in ("offered", "accepted", "shed", "taken", "queued", "dropped"):
            out[k] += int(q.get(k, 0))
        out["results"] += int(mx.total(mx.scrape(w), "infertide_shadow_results_total", route=route, shadow=scenario))
    return out


def _settle(bs: BenchStack, route: str, scenario: str, at_end: dict[str, int]) -> dict[str, Any]:
    """Wait (at most ``shadow_settle_s``) until the queue is empty and every event taken from it is answered."""
    t0 = time.monotonic()
    now = at_end
    while now["queued"] or now["results"] < now["taken"]:
        if time.monotonic() - t0 >= bs.opts.shadow_settle_s:
            return {**now, "settled": False, "settle_s": round(time.monotonic() - t0, 1)}
        time.sleep(0.5)
        now = _shadow_counts(bs, route, scenario)
    return {**now, "settled": True, "settle_s": round(time.monotonic() - t0, 1)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario: live events/s of each round, its ratio to the same round's ``none``, means; the same for the
    workers' CPU per live event (when measured); and the noise: the ``none`` drains' (max - min) / mean (None
    with one round)."""
    def per(value: Any) -> dict[str, Any]:
        got = {(r["round"], r["scenario"]): value(r) for r in runs}
        out: dict[str, Any] = {}
        for sc in SCENARIOS:
            mine = sorted((rd, v) for (rd, s), v in got.items() if s == sc)
            ratios = [v / got[(rd, "none")] for rd, v in mine if got.get((rd, "none"))]
            out[sc] = {"values": [v for _, v in mine], "mean": statistics.fmean(v for _, v in mine) if mine else 0.0,
                       "ratio_to_none": ratios, "mean_ratio": statistics.fmean(ratios) if ratios else 0.0}
        return out

    rate = per(lambda r: r["drain"]["events_per_s"])
    cpu = per(lambda r: r.get("worker_cpu", {}).get("live_us_per_event", 0.0))
    scenarios = {sc: {"events_per_s": rate[sc]["values"], "mean_events_per_s": rate[sc]["mean"],
                      "ratio_to_none": rate[sc]["ratio_to_none"], "mean_ratio": rate[sc]["mean_ratio"],
                      "cpu_us_per_event": cpu[sc]["values"], "cpu_ratio_to_none": cpu[sc]["ratio_to_none"],
                      "mean_cpu_ratio": cpu[sc]["mean_ratio"]} for sc in SCENARIOS}
    none = scenarios["none"]["events_per_s"]
    noise = (max(none) - min(none)) / statistics.fmean(none) if len(none) > 1 and statistics.fmean(none) else None
    return {"scenarios": scenarios, "noise": noise}


def run_shadow(opts: BenchOptions, report: Reporter | None = None) -> dict[str, Any]:
    """The three drains for ``opts.shadow_rounds`` rounds; the JSON-able result (``shadow.runs``, ``.summary``)."""
    from infertide.bench.core import conditions

    if opts.model != "echo" or opts.config is not None:
        raise bt.BenchSetupError("--shadow runs the built-in echo route (its slow shadow is echo's delay_ms "
                                 "option); fix: use --model echo and no --config")
    started = time.time()
    bs = BenchStack(opts, report)
    runs: list[dict[str, Any]] = []
    answers: list[dict[Any, bytes]] = []
    try:
        bs.start()
        bs.warm_up()
        plan = bs.plans[0]
        for rd in range(opts.shadow_rounds):
            for pos, sc in enumerate(order(rd)):
                phase(report, f"round {rd + 1}/{opts.shadow_rounds}: {sc} shadow")
                _use(bs, sc)
                answers.append({})
                cpu: dict[str, float] = {}
                d = drain(bs, plan, opts.events, f"s{rd}{sc}", report, answers=answers[-1],
                          on_ready=lambda cpu=cpu: cpu.update(ready=_workers_cpu_s(bs)))
                cpu["live_end"] = _workers_cpu_s(bs)
                run: dict[str, Any] = {"round": rd, "position": pos, "scenario": sc, "drain": d,
                                       "load_average": os.getloadavg()[0], "at_live_end": _live_metrics(bs, plan.name)}
                if sc != "none":
                    at_end = _shadow_counts(bs, plan.name, sc)
                    run["shadow"] = {"at_live_end": at_end, "settled": _settle(bs, plan.name, sc, at_end)}
                cpu["settled"] = _workers_cpu_s(bs)
                # The workers' CPU (they were restarted, so this is the drain's): ready to the last live result,
                # and to the shadow's queue emptied; per live event, as a load-independent reading.
                run["worker_cpu"] = {"live_s": round(cpu["live_end"] - cpu["ready"], 2),
                                     "with_shadow_settled_s": round(cpu["settled"] - cpu["ready"], 2),
                                     "live_us_per_event": round((cpu["live_end"] - cpu["ready"]) / opts.events * 1e6,
                                                                1)}
                runs.append(run)
        ref = next(i for i, r in enumerate(runs) if r["scenario"] == "none")  # every live answer against it
        for i, run in enumerate(runs):
            run["answers"] = {"reference": f"round {runs[ref]['round'] + 1}, none",
                              **compare_answers(answers[ref], answers[i])}
        result = {"conditions": {**conditions(opts, bs), "shadow_queue_size": opts.shadow_queue_size,
                                 "slow_model": bt.SLOW_SHADOW_MODEL},
                  "shadow": {"runs": runs, "summary": summarize(runs)}}
    finally:
        bs.close()
    result["wall_s"] = round(time.time() - started, 1)
    return result
