"""A bench's running system: Kafka (its own unless given), topics, Ray + Serve and N workers, and one route run.

:class:`BenchStack` wraps :class:`infertide.local.stack.LocalStack` (the same stack
``infertide up`` runs) and keeps the broker apart from it, so the pipeline can
be stopped (freeing the CPUs) while the baselines still use the broker.
:func:`measure` is one measured pass of one route: counters and partitions
from every worker's ``/metrics`` before and after, Serve batch stats reset
before and read after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infertide.bench import metrics as mx
from infertide.bench import topology as bt
from infertide.bench.drive import LINGER_MS, RoutePlan, plans, run_drive
from infertide.bench.options import BenchOptions, Reporter, percentile

__all__ = ["BenchStack", "drain", "measure", "phase"]


def phase(report: Reporter | None, name: str) -> None:
    if report:
        report(name, None, None)


@dataclass
class BenchStack:
    """Start with :meth:`start`; :meth:`stop_pipeline` stops workers and Ray; :meth:`close` stops everything."""

    opts: BenchOptions
    report: Reporter | None = None
    workdir: Path = field(init=False)
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    notes: list[str] = field(default_factory=list)
    topology: Any = None
    plans: list[RoutePlan] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    kafka: Any = None
    stack: Any = None
    bootstrap: str = ""

    def start(self) -> BenchStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        from infertide.local.broker import LocalKafka, free_port, project_cache
        from infertide.local.stack import LocalStack
        from infertide.demo.tiny_models import offline_env
        from schemas.topology import parse_topology

        self.workdir = Path(self.opts.workdir or tempfile.mkdtemp(prefix="infertide-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = offline_env(project_cache() / "tiny-models" / "env")
        # The bare-model baseline runs in this process, and transformers / huggingface_hub / ultralytics read
        # their offline switches and cache folders only from os.environ (some at import). Ray's replicas get
        # the same env through LocalStack's runtime_env, not through this.
        os.environ.update(self.env)
        models_dir = project_cache() / "tiny-models"
        if self.opts.config:
            data, self.notes = bt.config_dict(self.opts.config, self.opts.tiny, models_dir)
        else:
            data = bt.builtin_dict(self.opts, models_dir)
        phase(self.report, "kafka")
        if self.opts.bootstrap:
            self.bootstrap = self.opts.bootstrap
        else:
            self.kafka = LocalKafka(self.workdir / "kafka").start()
            self.bootstrap = self.kafka.bootstrap
        data = bt.for_run(data, self.opts, self.bootstrap, self.prefix, free_port())
        self.topology = parse_topology(data, str(bt.write(data, self.workdir / "bench-topology.yaml")))
        self.plans = [p for p in plans(self.topology) if self.opts.route in (None, p.name)]
        if not self.plans:
            known = [r.name for r in self.topology.routes]
            raise bt.BenchSetupError(f"--route {self.opts.route!r} is not a route of the topology; "
                                     f"pick one of {known}")
        phase(self.report, "ray")
        for name in ("ray", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.stack = LocalStack(self.topology, workers=self.opts.workers, bootstrap=self.bootstrap,
                                workdir=self.workdir / "stack", env=self.env, num_cpus=os.cpu_count() or 2,
                                say=self._say)
        self.stack.start(ready_timeout=180)
        self.topology = self.stack.topology

    def _say(self, msg: str) -> None:
        if msg.startswith("starting") and "worker" in msg:  # LocalStack's line for the workers' start
            phase(self.report, "worker")

    def warm_up(self) -> None:
        """A few events through every route (model load, first batches, group settled); raises if none come."""
        phase(self.report, "warmup")
        for p in self.plans:
            n = self.opts.warmup_events
            warm = run_drive(self.topology, p, n, 0, f"{self.prefix}w{p.name}", 120, None)
            if warm["results"] + warm["dlq"] < n:
                tails = "\n".join(w.tail() for w in self.stack.procs)
                raise RuntimeError(f"warm-up of route {p.name!r}: {warm['results']} of {n} results:\n{tails}")

    @property
    def description(self) -> dict[str, Any]:
        return {"broker": "existing" if self.opts.bootstrap else "local Apache Kafka (KRaft, 1 node)",
                "bootstrap": self.bootstrap, "workdir": str(self.workdir), "notes": self.notes,
                "partitions": self.topology.topics.partitions if self.topology else None,
                "routes": [p.name for p in self.plans]}

    def stop_pipeline(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    def close(self) -> None:
        try:
            self.stop_pipeline()
        finally:
            if self.kafka is not None:
                self.kafka.stop()
                self.kafka = None


async def _serve_stats(app: str, models: tuple[str, ...], reset: bool) -> dict[str, Any]:
    from ray import serve

    out = {}
    for m in models:
        h = serve.get_deployment_handle(m, app_name=app)
        out[m] = await (h.reset_stats.remote() if reset else h.stats.remote())
    return out


def _held(worker: Any, samples: mx.Samples, topic: str, busy: bool) -> tuple[list[int], str]:
    """The worker's partitions of ``topic``; a worker that consumed but shows none yet is asked again (2 s gauges)."""
    deadline = time.monotonic() + 5
    held, source = mx.held_partitions(samples, [topic])
    while busy and not held and time.monotonic() < deadline:
        time.sleep(0.5)
        held, source = mx.held_partitions(mx.scrape(worker), [topic])
    return held.get(topic, []), source


def measure(bs: BenchStack, plan: RoutePlan, n: int, rate: float, tag: str, report: Reporter | None = None,
            max_s: float | None = None, timeout_s: float | None = None, linger_ms: int = LINGER_MS) -> dict[str, Any]:
    """One measured pass of ``plan``: ``n`` events at ``rate`` (produced with ``linger_ms``); the pipeline
    section of the result."""
    app = bs.topology.serve_app_name
    workers = list(bs.stack.procs)
    asyncio.run(_serve_stats(app, plan.models, reset=True))
    before = [mx.scrape(w) for w in workers]
    run = run_drive(bs.topology, plan, n, rate, f"{bs.prefix}{tag}", timeout_s or bs.opts.timeout_s, report, max_s,
                    bs.opts.image_size, linger_ms=linger_ms)
    after = [mx.scrape(w) for w in workers]
    sstats = asyncio.run(_serve_stats(app, plan.models, reset=False))
    span_s = max(max(run["last_result_ms"], run["last_ack_ms"]) - run["first_send_ms"], 1) / 1000
    ack_s = max(run["last_ack_ms"] - run["first_send_ms"], 1) / 1000
    e2e = run["e2e_ms"]

    def delta(name: str) -> float:
        return sum(mx.delta(b, a, name, route=plan.name) for b, a in zip(before, after, strict=True))

    mb_count, mb_sum = delta("infertide_microbatch_size_count"), delta("infertide_microbatch_size_sum")
    mb_mean = mb_sum / mb_count if mb_count else 0.0
    per_worker = []
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        ein = mx.delta(b, a, "infertide_events_in_total", route=plan.name)
        held, source = _held(workers[i], a, plan.input_topic, busy=ein > 0)
        per_worker.append({"worker": i, "events_in": int(ein), "events_per_s": ein / span_s,
                           "partitions": held, "partitions_source": source})
    serve = {}
    for m, s in sstats.items():
        cap = bs.topology.models[m].batching.max_batch_size
        serve[m] = {"batches": s.get("batches", 0), "items": s.get("items", 0), "mean": s.get("mean", 0.0),
                    "max": s.get("max", 0), "max_batch_size": cap, "fill": s.get("mean", 0.0) / cap}
    return {
        "route": plan.name, "kind": plan.kind, "models": list(plan.models), "offered_rate": rate,
        "sent": run["sent"], "results": run["results"], "dlq": run["dlq"], "partial": run["partial"],
        "missing": run["sent"] - run["results"] - run["dlq"],
        "dlq_rate": run["dlq"] / run["sent"] if run["sent"] else 0.0,
        "seconds": round(span_s, 3), "events_per_s": run["results"] / span_s,
        "produce_events_per_s": run["sent"] / ack_s,
        "latency_ms": {"p50": percentile(e2e, 50), "p90": percentile(e2e, 90), "p99": percentile(e2e, 99),
                       "max": max(e2e, default=0.0), "mean": sum(e2e) / len(e2e) if e2e else 0.0},
        # p50 of each stage (infertide.bench.drive.result_stages): to the Serve call, the call, result to read.
        "stages_ms": {name: percentile([s[i] for s in run["stages_ms"]], 50)
                      for i, name in enumerate(("to_serve", "serve_call", "to_reader"))},
        "microbatch": {"batches": int(mb_count), "events": int(mb_sum), "mean": mb_mean,
                       "batch_size": plan.batch_size, "fill": mb_mean / plan.batch_size},
        "serve_batch": serve,
        "workers": per_worker,
        "worker_metrics": {"events_in": delta("infertide_events_in_total"),
                           "results_out": delta("infertide_results_out_total"),
                           "dlq": delta("infertide_dlq_total")},
        "at": time.time(),
    }


def drain(bs: BenchStack, plan: RoutePlan, n: int, tag: str, report: Reporter | None = None,
          answers: dict[tuple[str, int], bytes] | None = None,
          on_ready: Callable[[], None] | None = None) -> dict[str, Any]:
    """The workers' drain rate: stop them, fill the input topic with ``n`` events, start them, time the results.

    Measured like the passthrough baseline (a topic already full, nothing producing beside it), from the
    first result's ``produced_ts`` to the last one's, so the workers' start and group join are not in it.
    The workers start with their ``config_path`` as it is then (``--shadow`` points it at another route
    config). ``answers``: see :func:`infertide.bench.drive.drive`; ``on_ready()`` runs once the restarted
    workers are ready, before any result is read.
    """
    workers = list(bs.stack.procs)
    for w in workers:
        w.stop()  # graceful: commits what it acknowledged, leaves the group

    def restart() -> None:
        phase(report, f"drain ({plan.name})")
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready()
        if on_ready is not None:
            on_ready()

    run = run_drive(bs.topology, plan, n, 0, f"{bs.prefix}{tag}", bs.opts.timeout_s, report, None,
                    bs.opts.image_size, hold=restart, answers=answers)
    span_s = max(run["last_result_ms"] - run["first_result_ms"], 1) / 1000
    return {"sent": run["sent"], "results": run["results"], "dlq": run["dlq"],
            "missing": run["sent"] - run["results"] - run["dlq"], "seconds": round(span_s, 3),
            "events_per_s": (run["results"] - 1) / span_s if run["results"] > 1 else 0.0}
