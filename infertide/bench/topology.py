"""The topology a bench run deploys: the built-in one-route topology, or a user's file, on bench-only topics.

Every run gets its own topic names (``<prefix>.<alias>``), consumer group and
Serve app name, so runs never read each other's records. A user's file keeps
its routes, models, batch sizes and Serve settings; the bench changes only
where it runs (broker, topics, ports) and turns video sampling off so that
every frame produced is inferred (and has a result to wait for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infertide.bench.options import BenchOptions
from infertide.demo.topology import on_own_topics

__all__ = ["SLOW_SHADOW_MODEL", "BenchSetupError", "MissingCheckpoints", "builtin_dict", "config_dict", "for_run",
           "write"]

#: ``--shadow``: the slow shadow's deployment, an echo model sleeping ``delay_ms`` per model batch.
SLOW_SHADOW_MODEL = "echo_slow"


class BenchSetupError(ValueError):
    """The bench cannot run as asked (an unknown route, missing checkpoints); the message says the fix."""


class MissingCheckpoints(BenchSetupError):
    """A config names checkpoints this machine cannot load offline."""


def builtin_dict(opts: BenchOptions, models_dir: Path) -> dict[str, Any]:
    """One text route with one model (tiny ``sentiment`` or the null ``echo``) batching ``opts.batch_size``
    items, fed micro-batches of ``opts.route_batch`` events."""
    from infertide.demo.tiny_models import build_tiny_sentiment

    batching = {"max_batch_size": opts.batch_size, "batch_wait_timeout_s": 0.01}
    common = {"device": "auto", "batching": batching, "num_cpus": 0.5, "max_ongoing_requests": 64}
    if opts.model == "sentiment":
        model = {"task": "sentiment", "model": str(build_tiny_sentiment(models_dir / "tiny-sentiment")),
                 "options": {"max_length": 64}, **common}
    elif opts.model == "echo":
        model = {"task": "echo", **common}
    else:
        raise ValueError(f"--model must be sentiment or echo, not {opts.model!r}")
    models = {opts.model: model}
    if opts.shadow:  # deployed from the start, so switching the route's shadow restarts only the workers
        models[SLOW_SHADOW_MODEL] = {"task": "echo", "options": {"delay_ms": opts.shadow_delay_ms}, **common}
    return {
        "name": "infertide-bench",
        "models": models,
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": [opts.model],
                    "outputs": {opts.model: "sentiment"}, "batch_size": opts.route_batch,
                    "batch_within_s": opts.batch_within_s, "max_in_flight": opts.max_in_flight}],
        "analytics": {"enabled": False},
        "recommendations": {"enabled": False},
    }


def _available(task: str, ref: str) -> bool:
    """Whether a checkpoint loads without a network: echo, a local path, a YOLO yaml, or the HF cache."""
    if task == "echo" or (ref and Path(ref).expanduser().exists()):
        return True
    if task == "detection":
        return ref.endswith(".yaml")  # ultralytics builds it from its packaged config (random weights)
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply not available
        return False


def config_dict(path: Path, tiny: bool, models_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The user's topology data ready to bench, and notes saying what the bench changed in it.

    Raises:
        MissingCheckpoints: a model's checkpoint is not loadable offline and ``tiny`` is off.
        schemas.topology.ConfigError: the file is not a valid topology.
    """
    from schemas.topology import load_topology

    data = load_topology(path).model_dump(mode="json")  # validated, defaults filled in
    notes: list[str] = []
    missing = {n: m for n, m in data["models"].items() if not _available(m["task"], m.get("model") or "")}
    if tiny:
        from infertide.demo.tiny_models import tiny_topology_dict

        templates = {m["task"]: m for m in tiny_topology_dict(models_dir, echo=True)["models"].values()}
        for name, m in data["models"].items():
            t = templates[m["task"]]
            notes.append(f"--tiny: model {name!r} ({m['task']}) is {t['model'] or 'echo'} with random weights, "
                         f"not {m.get('model') or 'echo'}; its batching and resources are the config's")
            m.update(model=t.get("model", ""), options=t.get("options", {}), revision=None)
    elif missing:
        names = ", ".join(f"{n} ({m['task']}: {m.get('model')!r})" for n, m in missing.items())
        raise MissingCheckpoints(
            f"{path}: models: {names} cannot be loaded offline on this machine. Fix: download them into the "
            "Hugging Face cache or point `model:` at a local checkpoint, or run with --tiny to benchmark the "
            "same topology with tiny random-weight models of the same tasks (said in the report).")
    for route in data["routes"]:
        if route["kind"] == "video" and route.get("sampling"):
            notes.append(f"route {route['name']!r}: video sampling off (every frame inferred) so each frame "
                         "produced has a result to wait for")
            route["sampling"] = None
    return data, notes


def for_run(data: dict[str, Any], opts: BenchOptions, bootstrap: str, prefix: str, web_port: int) -> dict[str, Any]:
    """``data`` pointed at ``bootstrap`` with bench-only topics, group, web port and Serve app name."""
    data = on_own_topics(data, prefix=prefix, bootstrap=bootstrap, partitions=opts.topic_partitions)
    data["web_port"] = web_port
    data["serve_app_name"] = "infertide-bench"
    data["delivery"] = {**data.get("delivery", {}), "processing_guarantee": opts.guarantee}
    # The guarantee's own commit interval (1 s at-least-once, 0.1 s exactly-once: one transaction each), not the
    # quick local profile's, so exactly-once is measured as it is configured by default.
    data["kafka"] = {**data.get("kafka", {}), "commit_interval_s": None}
    return data


def write(data: dict[str, Any], path: Path) -> Path:
    """Write topology data as YAML (what the workers load)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
