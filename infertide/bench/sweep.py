"""``infertide bench --sweep``: latency against throughput, from light load up to saturation, with a chart.

One stack, one route (the first, or ``--route``). First an unthrottled run
finds the saturation throughput; then each step offers a fixed rate (a
fraction of it, :data:`~infertide.bench.options.SWEEP_FRACTIONS` by default)
for about ``--step-seconds`` (at most ``--events`` events) and records achieved
throughput and p50/p99 latency. The chart (matplotlib, Agg backend: no
display needed) plots p50 and p99 latency against achieved throughput.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from infertide.bench.core import conditions
from infertide.bench.options import BenchOptions, Reporter
from infertide.bench.stack import BenchStack, measure, phase

__all__ = ["run_sweep", "write_chart"]

MIN_STEP_EVENTS = 50


def write_chart(result: dict[str, Any], path: Path) -> Path:
    """p50 and p99 latency (ms, log scale) against achieved events/s; PNG or SVG by the suffix of ``path``."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s in result["steps"] if s["label"] != "saturation"]
    x = [s["pipeline"]["events_per_s"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for q, style in (("p50", "o-"), ("p99", "s--")):
        y = [s["pipeline"]["latency_ms"][q] for s in steps]
        ax.plot(x, y, style, label=f"{q} latency")
        for s, xi, yi in zip(steps, x, y, strict=True):
            if q == "p99":
                ax.annotate(s["label"], (xi, yi), textcoords="offset points", xytext=(4, 6), fontsize=7)
    sat = result["saturation_events_per_s"]
    ax.axvline(sat, color="grey", linestyle=":", label=f"saturation {sat:,.0f}/s")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 200, not 2x10^2
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("achieved throughput (events/s)")
    ax.set_ylabel("latency, event ts to result produce (ms)")
    c = result["conditions"]
    models = ", ".join(steps[0]["pipeline"]["models"]) if steps else ""
    ax.set_title(f"infertide: route {result['route']} ({models}), {c['workers']} worker(s), {c['cpus']} CPUs",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_sweep(opts: BenchOptions, report: Reporter | None = None) -> dict[str, Any]:
    """Saturation run, then one bounded step per offered rate; writes the chart; the JSON-able result."""
    started = time.time()
    bs = BenchStack(opts, report)
    try:
        bs.start()
        bs.warm_up()
        plan = bs.plans[0]
        phase(report, "saturation")
        sat = measure(bs, plan, opts.events, 0, "sat", report)
        rate = sat["events_per_s"]
        steps = [{"label": "saturation", "fraction": None, "pipeline": sat}]
        for f in opts.sweep_fractions:
            offered = max(rate * f, 1.0)
            n = max(MIN_STEP_EVENTS, min(opts.events, int(offered * opts.step_s)))
            phase(report, f"{f:.0%} of saturation ({offered:,.0f}/s)")
            p = measure(bs, plan, n, offered, f"s{int(f * 100)}", report, max_s=opts.step_s * 1.5,
                        timeout_s=min(opts.timeout_s, opts.step_s * 2 + 30))
            steps.append({"label": f"{f:.0%}", "fraction": f, "pipeline": p})
        result = {"conditions": conditions(opts, bs), "route": plan.name, "saturation_events_per_s": rate,
                  "steps": steps}
    finally:
        bs.close()
    chart = opts.chart or (bs.workdir / "sweep.png")
    result["chart"] = str(write_chart(result, chart))
    result["wall_s"] = round(time.time() - started, 1)
    return result
