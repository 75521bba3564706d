"""``infertide kafka fetch / start / stop / status``: a real single-node Apache Kafka (KRaft) on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from infertide.cli.options import console, fail

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="A real single-node Apache Kafka (KRaft) on 127.0.0.1, from jars.")

RunDir = Annotated[Path | None, typer.Option("--dir", help=(
    "Broker data/log/pid folder (default <cache>/kafka-run; <cache>: $INFERTIDE_CACHE, "
    ".cache/ of a source checkout, else the user cache folder)."))]


def _run_dir(path: Path | None) -> Path:
    from infertide.local.broker import project_cache

    return path or project_cache() / "kafka-run"


def _broker_pid(run_dir: Path) -> int | None:
    """PID from the pid file, if that process is alive and is a Kafka broker (never a recycled PID)."""
    pid_file = run_dir / "broker.pid"
    if not pid_file.is_file():
        return None
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return None
    return pid if b"kafka.Kafka" in cmdline else None


@app.command("fetch")
def kafka_fetch() -> None:
    """Download the Apache Kafka jars with Maven (once) and print the cached folder.

    Example: infertide kafka fetch
    """
    from infertide.local.broker import KAFKA_VERSION, BrokerError, ensure_jars

    try:
        with console.status(f"fetching Apache Kafka {KAFKA_VERSION} jars..."):
            libs = ensure_jars()
    except BrokerError as err:
        raise fail(str(err)) from None
    console.print(str(libs))


@app.command("start")
def kafka_start(port: Annotated[int, typer.Option(help="Client port on 127.0.0.1.")] = 9092, dir: RunDir = None,
                foreground: Annotated[bool, typer.Option(help="Stay attached; Ctrl-C stops the broker.")] = False,
                timeout: Annotated[float, typer.Option(help="Seconds to wait until it answers.")] = 60.0) -> None:
    """Start a single-node Kafka (KRaft) on 127.0.0.1 and wait until it answers metadata requests.

    Detached by default (the PID goes to DIR/broker.pid; stop it with [b]infertide kafka stop[/b]).

    Examples: infertide kafka start; infertide kafka start --port 19092 --dir /tmp/k --foreground
    """
    from infertide.local.broker import BrokerError, LocalKafka

    run_dir = _run_dir(dir)
    if (pid := _broker_pid(run_dir)) is not None:
        raise fail(f"a broker is already running from {run_dir} (pid {pid}); infertide kafka stop first")
    broker = LocalKafka(run_dir, port=port, tie_to_parent=foreground)  # detached: outlives us
    t0 = time.monotonic()
    try:
        with console.status(f"starting Kafka {broker.version} on 127.0.0.1:{port}..."):
            broker.start(timeout=timeout)
    except BrokerError as err:
        raise fail(str(err)) from None
    pid = broker.proc.pid
    (run_dir / "broker.json").write_text(json.dumps({"pid": pid, "bootstrap": broker.bootstrap}))
    console.print(f"[green]Kafka {broker.version}[/green] ready in {time.monotonic() - t0:.1f}s: "
                  f"bootstrap [b]{broker.bootstrap}[/b] pid {pid} (logs {broker.log_file})")
    if not foreground:
        broker.proc = None  # detach: the broker runs in its own session and outlives us
        return
    def _on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    try:
        while broker.proc.poll() is None:
            time.sleep(0.5)
        raise fail(f"Kafka exited with {broker.proc.returncode}; see {broker.log_file}")
    except KeyboardInterrupt:
        console.print("stopping Kafka...")
    finally:
        broker.stop()


@app.command("stop")
def kafka_stop(dir: RunDir = None) -> None:
    """Stop the broker that [b]infertide kafka start[/b] left running (by its recorded PID).

    Example: infertide kafka stop
    """
    from infertide.local.broker import stop_pid_file

    run_dir = _run_dir(dir)
    pid = _broker_pid(run_dir)
    if pid is None:
        (run_dir / "broker.pid").unlink(missing_ok=True)
        console.print(f"no broker running from {run_dir}")
        return
    stop_pid_file(run_dir / "broker.pid")
    console.print(f"stopped Kafka (pid {pid})")


@app.command("status")
def kafka_status(dir: RunDir = None) -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not.

    Example: infertide kafka status
    """
    from infertide.local.broker import answers_metadata

    run_dir = _run_dir(dir)
    pid = _broker_pid(run_dir)
    if pid is None:
        console.print(f"[yellow]not running[/yellow] (no live broker pid in {run_dir})")
        raise typer.Exit(1)
    info = json.loads((run_dir / "broker.json").read_text()) if (run_dir / "broker.json").is_file() else {}
    bootstrap = info.get("bootstrap", "?")
    try:
        ok = answers_metadata(bootstrap)
    except Exception:  # noqa: BLE001 - any failure means it does not answer
        ok = False
    state = "[green]running, answers[/green]" if ok else "[yellow]running, not answering yet[/yellow]"
    console.print(f"{state}: bootstrap [b]{bootstrap}[/b] pid {pid} dir {run_dir}")
    if not ok:
        raise typer.Exit(1)


