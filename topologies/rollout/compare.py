"""The rollout comparison, folded per analytics window: per variant and for each shadow against live.

Shaped like the other analytics (``topologies.state.analytics``): each micro-batch adds a few additive sums
(:class:`RolloutDeltas`, metric ``rollout``, key ``<route>/<model>``); a window's value is the sum of
its batches' deltas, so it adds up the same whichever worker folded which batch, and across
crashes; :func:`finalize_rollout` derives the rates, means and percentiles when the window closes,
and :func:`report` gives the nested view for ``/api/rollout`` and ``infertide rollout status``.

Per variant (``variant|<name>|...``): ``count``, ``errors``, latency histogram (``le_<ms>``, ``sum_ms``;
p50 / p99 derived), ``label|<top label>`` counts, ``score_sum`` / ``score_count`` (mean score, where the
task has a score).

Per shadow, on the events both it and live answered (``shadow|<name>|...``): ``pairs``, ``agree``
(same top label), ``abs_diff_sum`` / ``abs_diff_count`` (mean absolute difference of the top label's
scores), ``confusion|<json [live, shadow]>`` counts, and ``shed`` (events the shadow's full queue
dropped) and ``errors``.

The top label and score of a result are the task's (``schemas.tasks.TaskSpec.labels`` first entry,
``TaskSpec.score``): sentiment's label and score, classification's top class, tagging's first tag,
detection's first box. A result with no label counts as ``(none)``.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from schemas.tasks import TASKS
from topologies.state.analytics import FINALIZERS, LATENCY_BUCKETS_MS, percentile

__all__ = ["METRIC", "NO_LABEL", "RolloutDeltas", "finalize_rollout", "fold", "metric_key", "report", "top"]

METRIC = "rollout"
NO_LABEL = "(none)"
_LE = (*(f"le_{b}" for b in LATENCY_BUCKETS_MS), "le_inf")

Result = dict[str, Any]


def metric_key(route: str, model: str) -> str:
    """The analytics key of one model's rollout on one route."""
    return f"{route}/{model}"


def top(task: str, result: Result) -> tuple[str, float | None]:
    """``(top label, its score or None)`` of one result payload of ``task``."""
    spec = TASKS[task]
    labels = spec.labels(result)
    return (labels[0] if labels else NO_LABEL), spec.score(result)


class RolloutDeltas:
    """One micro-batch's rollout sums for one route and model: ``{field: amount}``, added into the window."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.data: defaultdict[str, float] = defaultdict(float)

    def answered(self, variant: str, result: Result | None, latency_ms: float) -> None:
        """A live variant's answer to one event (``result`` ``None``: the item failed)."""
        d, p = self.data, f"variant|{variant}|"
        if result is None:
            d[p + "errors"] += 1
            return
        d[p + "count"] += 1
        d[p + _LE[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)]] += 1
        d[p + "sum_ms"] += latency_ms
        label, score = top(self.task, result)
        d[p + "label|" + label] += 1
        if score is not None:
            d[p + "score_sum"] += score
            d[p + "score_count"] += 1

    def paired(self, shadow: str, live: Result, mirror: Result) -> None:
        """A shadow's answer to an event, beside the live answer to the same event."""
        d, p = self.data, f"shadow|{shadow}|"
        (ll, ls), (sl, ss) = top(self.task, live), top(self.task, mirror)
        d[p + "pairs"] += 1
        if ll == sl:
            d[p + "agree"] += 1
        if ls is not None and ss is not None:
            d[p + "abs_diff_sum"] += abs(ls - ss)
            d[p + "abs_diff_count"] += 1
        d[p + "confusion|" + orjson.dumps([ll, sl]).decode()] += 1

    def shed(self, shadow: str, n: int = 1) -> None:
        """Shadow work dropped because its queue was full (never compared)."""
        self.data[f"shadow|{shadow}|shed"] += n

    def shadow_error(self, shadow: str, n: int = 1) -> None:
        self.data[f"shadow|{shadow}|errors"] += n

    def as_dict(self) -> dict[str, float]:
        return dict(self.data)


def _split(values: Mapping[str, float]) -> dict[tuple[str, str], dict[str, float]]:
    """``{(kind, name): {rest: value}}`` from ``kind|name|rest`` fields (labels may hold ``|``: split twice)."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for k, v in values.items():
        kind, _, rest = k.partition("|")
        name, _, field = rest.partition("|")
        if kind in ("variant", "shadow") and field:
            out[(kind, name)][field] = v
    return out


def report(values: Mapping[str, float]) -> dict[str, Any]:
    """A window's rollout sums as ``{"variants": {name: {...}}, "shadows": {name: {...}}}``."""
    variants: dict[str, Any] = {}
    shadows: dict[str, Any] = {}
    for (kind, name), f in sorted(_split(values).items()):
        if kind == "variant":
            count = f.get("count", 0.0)
            hist = {k: v for k, v in f.items() if k.startswith("le_")}
            n_score = f.get("score_count", 0.0)
            variants[name] = {
                "count": count,
                "errors": f.get("errors", 0.0),
                "latency_p50_ms": percentile(hist, 0.50),
                "latency_p99_ms": percentile(hist, 0.99),
                "latency_mean_ms": f.get("sum_ms", 0.0) / count if count else 0.0,
                "labels": {k.removeprefix("label|"): v for k, v in sorted(f.items()) if k.startswith("label|")},
                "mean_score": f.get("score_sum", 0.0) / n_score if n_score else None,
            }
        else:
            pairs = f.get("pairs", 0.0)
            n_diff = f.get("abs_diff_count", 0.0)
            confusion = []
            for k, v in sorted(f.items()):
                if k.startswith("confusion|"):
                    live, mirror = orjson.loads(k.removeprefix("confusion|"))
                    confusion.append({"live": live, "shadow": mirror, "count": v})
            shadows[name] = {
                "pairs": pairs,
                "agreement_rate": f.get("agree", 0.0) / pairs if pairs else None,
                "mean_abs_score_diff": f.get("abs_diff_sum", 0.0) / n_diff if n_diff else None,
                "confusion": confusion,
                "shed": f.get("shed", 0.0),
                "errors": f.get("errors", 0.0),
            }
    return {"variants": variants, "shadows": shadows}


def finalize_rollout(values: Mapping[str, float]) -> dict[str, float]:
    """What a closed window reports on the ``analytics`` topic (flat floats, as ``analytics.v1`` wants):
    the sums as they are, plus per variant ``latency_p50_ms``, ``latency_p99_ms``, ``mean_score`` and per
    shadow ``agreement_rate``, ``mean_abs_score_diff`` (left out where nothing was counted)."""
    out = dict(values)
    rep = report(values)
    for name, v in rep["variants"].items():
        if v["count"]:
            out[f"variant|{name}|latency_p50_ms"] = v["latency_p50_ms"]
            out[f"variant|{name}|latency_p99_ms"] = v["latency_p99_ms"]
        if v["mean_score"] is not None:
            out[f"variant|{name}|mean_score"] = v["mean_score"]
    for name, s in rep["shadows"].items():
        if s["agreement_rate"] is not None:
            out[f"shadow|{name}|agreement_rate"] = s["agreement_rate"]
        if s["mean_abs_score_diff"] is not None:
            out[f"shadow|{name}|mean_abs_score_diff"] = s["mean_abs_score_diff"]
    return out


def fold(task: str, answers: Iterable[tuple[str, Result | None, float]] = (),
         pairs: Iterable[tuple[str, Result, Result]] = ()) -> dict[str, float]:
    """The sums of many answers ``(variant, result, latency_ms)`` and pairs ``(shadow, live, shadow result)``
    at once (offline checks, tests): the same as adding them batch by batch."""
    d = RolloutDeltas(task)
    for variant, result, ms in answers:
        d.answered(variant, result, ms)
    for shadow, live, mirror in pairs:
        d.paired(shadow, live, mirror)
    return d.as_dict()


FINALIZERS[METRIC] = finalize_rollout  # closed windows of metric ``rollout`` report the derived figures too
