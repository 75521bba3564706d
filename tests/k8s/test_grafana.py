"""The Grafana dashboard asks only for metrics the code exports, covers what an operator watches, and
ships in the manifests as a ConfigMap the Grafana sidecar picks up."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.conftest import K8S
from tests.k8s.helpers import docs_of

DASHBOARD = K8S / "base" / "grafana" / "infertide-dashboard.json"

# Ray Serve's own metrics the dashboard reads (Ray prefixes "ray_"; counters end in _total, histograms
# in _bucket/_sum/_count). Each must still be defined in the installed Ray's Serve code (checked below).
RAY_SERVE_METRICS = {
    "ray_serve_deployment_request_counter_total",
    "ray_serve_deployment_error_counter_total",
    "ray_serve_deployment_queued_queries",
    "ray_serve_replica_processing_queries",
    "ray_serve_deployment_processing_latency_ms_bucket",
}
_SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
_PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "max", "le", "irate", "avg", "without", "on"}


def _exported_faust() -> set[str]:
    from topologies.metrics import REGISTRY

    return {fam.name + s for fam in REGISTRY.collect() for s in _SUFFIXES.get(fam.type, [""])}


def _exported_replica() -> set[str]:
    """The replicas' own ``ray.serve.metrics`` histogram, as Ray exports it (``ray_`` prefix)."""
    import inspect

    from workers import server

    names = re.findall(r'Histogram\(\s*"([a-z_]+)"', inspect.getsource(server))
    assert names, "workers/server.py no longer defines its batch-size histogram"
    return {f"ray_{n}{s}" for n in names for s in _SUFFIXES["histogram"]}


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    no_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_labels)) - _PROMQL_WORDS
    grouping = set(re.findall(r"by \(([^)]*)\)", expr))
    labels = {x.strip() for g in grouping for x in g.split(",")}
    return {n for n in names - labels if not re.fullmatch(r"\d.*", n)}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_every_query_names_an_exported_metric(dashboard: dict[str, Any]) -> None:
    known = _exported_faust() | _exported_replica() | RAY_SERVE_METRICS
    used = set()
    for expr in _queries(dashboard):
        names = _metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"{expr!r} names {sorted(unknown)}, which nothing exports"
        used |= names
    assert used & RAY_SERVE_METRICS == RAY_SERVE_METRICS, "a listed Ray Serve metric is not used: drop it"


def test_listed_ray_serve_metrics_exist_in_ray() -> None:
    import ray.serve

    source = "\n".join(p.read_text() for p in Path(ray.serve.__file__).parent.rglob("*.py"))
    for name in RAY_SERVE_METRICS:
        base = re.sub(r"^ray_|(_total|_bucket|_sum|_count)$", "", name)
        assert f'"{base}"' in source, f"Ray Serve no longer defines {base} ({name})"


def test_panels_cover_what_an_operator_watches(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(_queries(dashboard))
    for metric in ("infertide_events_in_total", "infertide_consumer_lag", "infertide_e2e_latency_seconds_bucket",
                   "infertide_dlq_total", "infertide_microbatch_size", "ray_infertide_serve_batch_size",
                   "infertide_serve_call_seconds_bucket", "infertide_batch_stage_seconds_sum"):
        assert metric in exprs, f"no panel reads {metric}"
    assert all(t["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] for t in p["targets"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_manifests_provision_it_for_the_grafana_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    found = [(o, cm) for o, cm in docs_of(rendered, "ConfigMap")
             if cm["metadata"]["name"] == "infertide-grafana-dashboard"]
    assert {o for o, _ in found} == set(rendered), "every overlay ships the dashboard"
    for _, cm in found:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"]["infertide-dashboard.json"]) == json.loads(DASHBOARD.read_text())
