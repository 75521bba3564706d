"""``infertide demo``: the whole pipeline on sample photos, a clip and reviews, with a summary table."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from infertide.cli import Bootstrap, app, console, err_console
from schemas.topology import TOPIC_ALIASES, Topology, load_topology, parse_topology

__all__ = ["demo", "demo_topology"]

TINY_NOTICE = ("[b yellow]Using locally built tiny models with random weights: labels are not meaningful.[/b yellow] "
               "The configured checkpoints are not available offline ({missing}). Pass --config with a "
               "topology whose models are local paths or already in the Hugging Face / ultralytics cache "
               "to see real predictions.")


def demo_topology(config: Path | None, cache: Path) -> tuple[Topology, dict[str, str], list[str]]:
    """The topology to run, the env for its models, and the models that did not resolve (tiny models then)."""
    from infertide.commands_models import checkpoint_problems
    from infertide.tiny_models import offline_env, tiny_topology_dict

    if config is not None:
        topology = load_topology(config)
        missing = checkpoint_problems(topology)
        if not missing:
            return topology, {}, []
    else:
        missing = ["topologies/default.yaml models: distilbert SST-2, yolo11n.pt, CLIP ViT-B/32"]
    env = offline_env(cache / "env")
    d = tiny_topology_dict(cache / "models", max_batch_size=16, batch_wait_timeout_s=0.02)
    d["name"] = "infertide-demo"
    d["kafka"] = {"bootstrap_servers": "127.0.0.1:9092", "consumer_group": f"demo-{int(time.time())}",
                  "session_timeout_s": 6, "heartbeat_interval_s": 2, "commit_interval_s": 0.5}
    d["topics"] = {a: f"demo.{a}" for a in TOPIC_ALIASES} | {"partitions": 2}
    d["routes"].append({"name": "video", "input": "video", "kind": "video", "models": ["detection"],
                        "batch_size": 8, "batch_within_s": 0.05, "max_in_flight": 2,
                        "sampling": {"every_n": 2, "max_lag_ms": None}})
    d["analytics"] = {"window_s": 5, "expires_s": 30}
    d["recommendations"] = {"top_k": 3, "item_pool_size": 100}
    return parse_topology(d, "<demo>"), env, missing


def _produce(topology: Topology, cache: Path) -> dict[str, int]:
    from infertide.demo_data import demo_images, demo_texts, demo_video, image_events_for_users
    from infertide.produce import produce_events, video_frame_events

    images = image_events_for_users(demo_images(cache / "demo" / "images"))
    texts = demo_texts()
    frames = list(video_frame_events(demo_video(cache / "demo" / "clip"), stream_id="demo-clip", source_fps=12,
                                     user_id="ana", source="demo"))
    sent = {}
    routes = {r.input: r.name for r in topology.routes}
    for alias, events in (("image", images), ("text", texts), ("video", frames)):
        if alias in routes:
            produce_events(topology, alias, events)
            sent[routes[alias]] = len(events)
    return sent


def _wait(stack: Any, sent: dict[str, int], timeout: float) -> dict[str, Any] | None:
    """Until every route consumed what was sent and answered for it (results, DLQ or sampled out)."""
    deadline = time.monotonic() + timeout
    summary = None
    while time.monotonic() < deadline:
        summary = stack.get_json("/api/summary") or summary
        routes = (summary or {}).get("routes", {})
        if all(routes.get(r, {}).get("in", 0) >= n for r, n in sent.items()) and \
                all(routes[r]["out"] + routes[r]["dlq"] > 0 for r in sent) and (summary or {}).get("recommendations"):
            time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))  # let the last recommendations land
            return stack.get_json("/api/summary") or summary
        time.sleep(0.5)
    return summary


def _tables(summary: dict[str, Any], sent: dict[str, int]) -> None:
    t = Table(title="infertide demo: per route")
    for col in ("route", "sent", "in", "out", "DLQ", "p50 ms", "p99 ms", "top labels"):
        t.add_column(col, justify="left" if col in ("route", "top labels") else "right")
    for name, r in summary["routes"].items():
        labels = "; ".join(f"{task}: " + ", ".join(f"{k} ({v})" for k, v in list(c.items())[:4])
                           for task, c in r.get("labels", {}).items() if c)
        lat = r["latency_ms"]
        t.add_row(name, str(sent.get(name, "-")), str(r["in"]), str(r["out"]), str(r["dlq"]),
                  str(lat["p50"]), str(lat["p99"]), labels or "-")
    console.print(t)
    recs = Table(title="latest recommendations")
    recs.add_column("user")
    recs.add_column("top items")
    seen = set()
    for rec in reversed(summary.get("recommendations", [])):
        if rec["user_id"] in seen:
            continue
        seen.add(rec["user_id"])
        recs.add_row(rec["user_id"], ", ".join(f"{i['item_id']} ({i['score']:.2f})" for i in rec["items"]))
    console.print(recs)


@app.command("demo")
def demo(
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                                help="Topology to demo (default: tiny local models).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Stay up (dashboard live) until Ctrl-C.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for results.")] = 90.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show Ray/Serve logs here.")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """Start everything locally, send sample photos, a short clip and reviews, and summarise the results.

    Works offline: when the config's models are not available locally, tiny
    models with random weights are built under <cache>/models (and the output says so).
    Exits 0 when every route answered, 1 otherwise.

    Examples: infertide demo; infertide demo --keep; infertide demo --config my-local-models.yaml
    """
    from infertide.broker import project_cache
    from infertide.commands_up import install_stop_handlers, print_endpoints
    from infertide.stack import LocalStack

    t0 = time.monotonic()
    cache = project_cache()
    say = lambda m: err_console.print(f"[cyan]>[/cyan] {m}")  # noqa: E731
    with err_console.status("preparing models ..."):
        topology, env, missing = demo_topology(config, cache)
    if missing:
        err_console.print(TINY_NOTICE.format(missing="; ".join(missing)))
    else:
        say(f"using the models of {config}")
    stop = threading.Event()
    install_stop_handlers(stop)
    stack = LocalStack(topology, bootstrap=bootstrap, env=env, num_cpus=2, say=say, verbose=verbose)
    code = 0
    try:
        stack.start()
        install_stop_handlers(stop)  # ray.init replaced our SIGTERM handler with its own (which aborts)
        print_endpoints(stack.url)
        with err_console.status("producing sample photos, clip frames and reviews ..."):
            sent = _produce(stack.topology, cache)
        say("sent " + ", ".join(f"{n} to route {r}" for r, n in sent.items()))
        with err_console.status("waiting for results ..."):
            summary = _wait(stack, sent, timeout)
        if summary is None or not summary.get("routes"):
            err_console.print(f"[red]no results arrived within {timeout:.0f}s; worker log:[/red]\n"
                              f"{stack.procs[0].tail() if stack.procs else ''}")
            code = 1
        else:
            _tables(summary, sent)
            silent = [r for r in sent if summary["routes"].get(r, {}).get("out", 0) == 0]
            if silent:
                err_console.print(f"[red]routes without results: {', '.join(silent)}[/red]")
                code = 1
            if missing:
                err_console.print("[yellow]Reminder: tiny random-weight models; the labels above are not meaningful.[/yellow]")
        err_console.print(f"demo finished in {time.monotonic() - t0:.0f}s")
        if keep and code == 0:
            err_console.print(f"[dim]staying up: dashboard {stack.url}/ ; Ctrl-C to stop.[/dim]")
            stack.supervise(stop)
    except Exception as err:  # noqa: BLE001 - a clear message instead of a traceback
        err_console.print(f"[red]infertide demo failed: {err}[/red]")
        code = 1
    finally:
        stack.stop()
    raise typer.Exit(code)
