"""``infertide kafka fetch / start / stop / status``: a real Apache Kafka (KRaft) on 127.0.0.1, a node or a cluster."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from infertide.cli.options import console, fail

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help=(
    "A real Apache Kafka (KRaft) on 127.0.0.1, from jars: one node, or a cluster of N (--brokers) for replication."))

RunDir = Annotated[Path | None, typer.Option("--dir", help=(
    "Broker data/log/pid folder (default <cache>/kafka-run; <cache>: $INFERTIDE_CACHE, "
    ".cache/ of a source checkout, else the user cache folder)."))]


def _run_dir(path: Path | None) -> Path:
    from infertide.local.broker import project_cache

    return path or project_cache() / "kafka-run"


def _pid_files(run_dir: Path) -> list[Path]:
    """The pid file of a single broker (``DIR/broker.pid``) and of each cluster node (``DIR/node-<id>/broker.pid``)."""
    return [run_dir / "broker.pid", *sorted(run_dir.glob("node-*/broker.pid"))]


def _live_pid(pid_file: Path) -> int | None:
    """PID from the pid file, if that process is alive and is a Kafka broker (never a recycled PID)."""
    if not pid_file.is_file():
        return None
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return None
    return pid if b"kafka.Kafka" in cmdline else None


def _broker_pids(run_dir: Path) -> dict[Path, int]:
    """Each live broker started from ``run_dir``: its pid file -> PID."""
    return {f: pid for f in _pid_files(run_dir) if (pid := _live_pid(f)) is not None}


@app.command("fetch")
def kafka_fetch() -> None:
    """Download the Apache Kafka jars with Maven (once) and print the cached folder; then (once) start and stop
    a broker of its own so its JVM writes a class archive that makes every later local broker start faster.

    Example: infertide kafka fetch
    """
    from infertide.local.broker import KAFKA_VERSION, BrokerError, ensure_class_archive, ensure_jars

    try:
        with console.status(f"fetching Apache Kafka {KAFKA_VERSION} jars..."):
            libs = ensure_jars()
        with console.status("writing the broker's JVM class archive (one broker start and stop)..."):
            archive = ensure_class_archive()
    except BrokerError as err:
        raise fail(str(err)) from None
    console.print(str(libs))
    if archive is None:
        console.print("[yellow]no JVM class archive: local brokers start without it[/yellow]", highlight=False)


@app.command("start")
def kafka_start(port: Annotated[int, typer.Option(help=(
                    "Client port on 127.0.0.1 (with --brokers N: the first node's; the others take the next ports)."))
                ] = 9092,
                brokers: Annotated[int, typer.Option(min=1, max=9, help=(
                    "Number of nodes. 1: a single node (replication 1). N > 1: a cluster of N broker+controller "
                    "nodes (one KRaft quorum) in DIR/node-<id>, topics replicated N times with min.insync.replicas "
                    "2 (1 for 2 nodes), the transaction log and __consumer_offsets too. From 3 nodes on, any "
                    "one may be killed and the cluster goes on. Set topics.replication_factor (and "
                    "topics.min_insync_replicas) to match."))] = 1,
                dir: RunDir = None,
                foreground: Annotated[bool, typer.Option(help="Stay attached; Ctrl-C stops the broker(s).")] = False,
                timeout: Annotated[float, typer.Option(help="Seconds to wait until it answers.")] = 90.0) -> None:
    """Start Kafka (KRaft) on 127.0.0.1 and wait until it answers metadata requests (a cluster: until every
    node has registered).

    Detached by default (PIDs go to DIR/broker.pid, or DIR/node-<id>/broker.pid; stop with
    [b]infertide kafka stop[/b]).

    Examples: infertide kafka start; infertide kafka start --port 19092 --dir /tmp/k --foreground;
    infertide kafka start --brokers 3 (bootstrap 127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094)
    """
    from infertide.local.broker import BrokerError, LocalKafka
    from infertide.local.cluster import LocalKafkaCluster

    run_dir = _run_dir(dir)
    if running := _broker_pids(run_dir):
        raise fail(f"a broker is already running from {run_dir} (pid {', '.join(map(str, running.values()))}); "
                   "infertide kafka stop first")
    have = len(list(run_dir.glob("node-*/data"))) or int((run_dir / "data").exists())
    if have and have != brokers:  # a KRaft quorum cannot change size by a restart
        raise fail(f"{run_dir} holds the data of {have} broker(s); give --brokers {have}, or another --dir "
                   "for a new cluster")
    broker = LocalKafka(run_dir, port=port, tie_to_parent=foreground)  # detached: outlives us
    cluster = LocalKafkaCluster(run_dir, brokers=brokers, ports=[port + i for i in range(brokers)],
                                tie_to_parent=foreground)
    t0 = time.monotonic()
    try:
        with console.status(f"starting Kafka on 127.0.0.1:{port}" + (f" (+{brokers - 1} nodes)" if brokers > 1 else "")
                            + "..."):
            broker.start(timeout=timeout) if brokers == 1 else cluster.start(timeout=timeout)
    except BrokerError as err:
        raise fail(str(err)) from None
    nodes = [broker] if brokers == 1 else cluster.nodes
    version = nodes[0].version
    bootstrap = ",".join(n.bootstrap for n in nodes)
    info = {"pid": nodes[0].proc.pid, "bootstrap": bootstrap,
            "nodes": [{"id": n.node_id, "pid": n.proc.pid, "bootstrap": n.bootstrap} for n in nodes]}
    (run_dir / "broker.json").write_text(json.dumps(info))
    pids = " ".join(str(n.proc.pid) for n in nodes)
    what = f"Kafka {version}" + (f", {brokers} nodes (min.insync.replicas {cluster.min_isr})," if brokers > 1 else "")
    console.print(f"[green]{what}[/green] ready in {time.monotonic() - t0:.1f}s: bootstrap [b]{bootstrap}[/b] "
                  f"pid {pids} (logs {' '.join(str(n.log_file) for n in nodes)})")
    if not foreground:
        for n in nodes:
            n.proc = None  # detach: the brokers run in their own sessions and outlive us
        return
    def _on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    try:
        while all(n.alive for n in nodes):
            time.sleep(0.5)
        gone = next(n for n in nodes if not n.alive)
        raise fail(f"Kafka node {gone.node_id} exited with {gone.proc.returncode}; see {gone.log_file}")
    except KeyboardInterrupt:
        console.print("stopping Kafka...")
    finally:
        cluster.stop() if brokers > 1 else broker.stop()


@app.command("stop")
def kafka_stop(dir: RunDir = None) -> None:
    """Stop the broker, or every node of the cluster, that [b]infertide kafka start[/b] left running (by the
    recorded PIDs; a cluster's nodes all at once).

    Example: infertide kafka stop
    """
    from infertide.local.broker import stop_pid_files

    run_dir = _run_dir(dir)
    running = _broker_pids(run_dir)
    for f in _pid_files(run_dir):
        if f not in running:
            f.unlink(missing_ok=True)
    if not running:
        console.print(f"no broker running from {run_dir}")
        return
    stop_pid_files(list(running))
    console.print(f"stopped Kafka (pid {', '.join(map(str, running.values()))})")


@app.command("status")
def kafka_status(dir: RunDir = None) -> None:
    """Say whether the local broker (every node of a cluster) runs and answers; exit 1 when one does not.

    Example: infertide kafka status
    """
    from infertide.local.broker import answers_metadata

    run_dir = _run_dir(dir)
    running = _broker_pids(run_dir)
    info = json.loads((run_dir / "broker.json").read_text()) if (run_dir / "broker.json").is_file() else {}
    nodes = info.get("nodes") or [{"id": 1, "pid": info.get("pid"), "bootstrap": info.get("bootstrap", "?")}]
    live = set(running.values())
    if not running:
        console.print(f"[yellow]not running[/yellow] (no live broker pid in {run_dir})")
        raise typer.Exit(1)
    healthy = True
    for node in nodes:
        if node.get("pid") not in live:
            console.print(f"[yellow]not running[/yellow]: node {node['id']} bootstrap {node['bootstrap']}")
            healthy = False
            continue
        try:
            ok = answers_metadata(node["bootstrap"])
        except Exception:  # noqa: BLE001 - any failure means it does not answer
            ok = False
        healthy &= ok
        state = "[green]running, answers[/green]" if ok else "[yellow]running, not answering yet[/yellow]"
        label = f"node {node['id']} " if len(nodes) > 1 else ""
        console.print(f"{state}: {label}bootstrap [b]{node['bootstrap']}[/b] pid {node['pid']} dir {run_dir}")
    if len(nodes) > 1:
        console.print(f"bootstrap [b]{info.get('bootstrap')}[/b]")
    if not healthy:
        raise typer.Exit(1)
