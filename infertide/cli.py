"""The ``infertide`` command line: a local Kafka, topics, producers and ``tail``.

Other command groups live in their own modules and register themselves on
:data:`app` (see the bottom of this file). Shared helpers for them:
:func:`topology_from` (the ``--config`` topology, with ``--bootstrap`` applied)
and :data:`console`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.topology import ConfigError, Topology, default_topology_path, load_topology

__all__ = ["Bootstrap", "app", "console", "err_console", "main", "topology_from"]

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(name="infertide", no_args_is_help=True, rich_markup_mode="rich",
                  help="Streaming inference: Kafka -> Faust agents -> Ray Serve models -> Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="A real single-node Apache Kafka (KRaft) on 127.0.0.1, from jars.")
topics_app = typer.Typer(no_args_is_help=True, help="Create and list the topics the topology config names.")
produce_app = typer.Typer(no_args_is_help=True, help="Send input events (validated by the codec first).")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(produce_app, name="produce")

Bootstrap = Annotated[str | None, typer.Option(
    "--bootstrap", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers (host:port,...); overrides the config's kafka.bootstrap_servers.")]
TopicOpt = Annotated[str | None, typer.Option("--topic", "-t", help="Send to this topic instead of the config's.")]


@app.callback()
def _root(ctx: typer.Context, config: Annotated[Path, typer.Option(
        "--config", "-c", envvar="INFERTIDE_CONFIG", dir_okay=False,
        help="Topology YAML (default: the packaged topologies/default.yaml).")] = default_topology_path()) -> None:
    """infertide: streaming inference with pretrained models.

    [b]Quick start[/b]: infertide kafka start; infertide topics create; infertide produce text "great film";
    infertide tail events.text --from-beginning --max 1
    """
    ctx.obj = {"config": config}


def topology_from(ctx: typer.Context, bootstrap: str | None = None) -> Topology:
    """The topology of ``--config``, pointed at ``bootstrap`` when given; exits 2 on a bad config."""
    root = ctx.find_root()
    path = (root.obj or {}).get("config") or default_topology_path()
    try:
        topology = load_topology(path)
        return topology.with_bootstrap(bootstrap) if bootstrap else topology
    except ConfigError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


# ---------------------------------------------------------------- kafka
RunDir = Annotated[Path | None, typer.Option("--dir", help=(
    "Broker data/log/pid folder (default <cache>/kafka-run; <cache>: $INFERTIDE_CACHE, "
    ".cache/ of a source checkout, else the user cache folder)."))]


def _run_dir(path: Path | None) -> Path:
    from infertide.broker import project_cache

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


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Download the Apache Kafka jars with Maven (once) and print the cached folder.

    Example: infertide kafka fetch
    """
    from infertide.broker import KAFKA_VERSION, BrokerError, ensure_jars

    try:
        with console.status(f"fetching Apache Kafka {KAFKA_VERSION} jars..."):
            libs = ensure_jars()
    except BrokerError as err:
        raise _fail(str(err)) from None
    console.print(str(libs))


@kafka_app.command("start")
def kafka_start(port: Annotated[int, typer.Option(help="Client port on 127.0.0.1.")] = 9092, dir: RunDir = None,
                foreground: Annotated[bool, typer.Option(help="Stay attached; Ctrl-C stops the broker.")] = False,
                timeout: Annotated[float, typer.Option(help="Seconds to wait until it answers.")] = 60.0) -> None:
    """Start a single-node Kafka (KRaft) on 127.0.0.1 and wait until it answers metadata requests.

    Detached by default (the PID goes to DIR/broker.pid; stop it with [b]infertide kafka stop[/b]).

    Examples: infertide kafka start; infertide kafka start --port 19092 --dir /tmp/k --foreground
    """
    from infertide.broker import BrokerError, LocalKafka

    run_dir = _run_dir(dir)
    if (pid := _broker_pid(run_dir)) is not None:
        raise _fail(f"a broker is already running from {run_dir} (pid {pid}); infertide kafka stop first")
    broker = LocalKafka(run_dir, port=port, tie_to_parent=foreground)  # detached: outlives us
    t0 = time.monotonic()
    try:
        with console.status(f"starting Kafka {broker.version} on 127.0.0.1:{port}..."):
            broker.start(timeout=timeout)
    except BrokerError as err:
        raise _fail(str(err)) from None
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
        raise _fail(f"Kafka exited with {broker.proc.returncode}; see {broker.log_file}")
    except KeyboardInterrupt:
        console.print("stopping Kafka...")
    finally:
        broker.stop()


@kafka_app.command("stop")
def kafka_stop(dir: RunDir = None) -> None:
    """Stop the broker that [b]infertide kafka start[/b] left running (by its recorded PID).

    Example: infertide kafka stop
    """
    from infertide.broker import stop_pid_file

    run_dir = _run_dir(dir)
    pid = _broker_pid(run_dir)
    if pid is None:
        (run_dir / "broker.pid").unlink(missing_ok=True)
        console.print(f"no broker running from {run_dir}")
        return
    stop_pid_file(run_dir / "broker.pid")
    console.print(f"stopped Kafka (pid {pid})")


@kafka_app.command("status")
def kafka_status(dir: RunDir = None) -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not.

    Example: infertide kafka status
    """
    from infertide.broker import answers_metadata

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


# ---------------------------------------------------------------- topics
@topics_app.command("create")
def topics_create(ctx: typer.Context, bootstrap: Bootstrap = None) -> None:
    """Create every topic of the config that is missing (idempotent).

    Example: infertide topics create --bootstrap 127.0.0.1:9092
    """
    from kafka.errors import KafkaError

    from infertide.admin import ensure_topics

    topology = topology_from(ctx, bootstrap)
    try:
        created = ensure_topics(topology)
    except KafkaError as err:
        raise _fail(f"{topology.kafka.bootstrap_servers}: {err}") from None
    existing = [n for n in topology.topics.names() if n not in created]
    console.print(f"created {len(created)}: {', '.join(created) or '-'}; already there {len(existing)}")


@topics_app.command("list")
def topics_list(ctx: typer.Context, bootstrap: Bootstrap = None) -> None:
    """Show the config's topics, their partitions on the cluster, and which are missing (exit 1 if any).

    Example: infertide topics list
    """
    from kafka.errors import KafkaError

    from infertide.admin import describe_topics, schema_for_topic

    topology = topology_from(ctx, bootstrap)
    try:
        found = describe_topics(topology)
    except KafkaError as err:
        raise _fail(f"{topology.kafka.bootstrap_servers}: {err}") from None
    table = Table("topic", "schema", "partitions", title=f"topics at {topology.kafka.bootstrap_servers}")
    for name, parts in found.items():
        table.add_row(name, schema_for_topic(topology, name) or "-",
                      str(parts) if parts is not None else "[red]missing[/red]")
    console.print(table)
    missing = [n for n, p in found.items() if p is None]
    if missing:
        console.print(f"[yellow]missing:[/yellow] {', '.join(missing)} (run: infertide topics create)")
        raise typer.Exit(1)


# ---------------------------------------------------------------- produce
def _run_producer(label: str, total: int | None, send) -> None:  # noqa: ANN001 - send(progress) -> ProduceStats
    from kafka.errors import KafkaError as SyncKafkaError
    from aiokafka.errors import KafkaError

    from schemas.codec import EventDecodeError

    columns = [TextColumn(f"[b]{label}[/b]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}")]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(label, total=total, rate="")
        t0 = time.perf_counter()

        def progress(sent: int, nbytes: int) -> None:
            dt = max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=sent, rate=f"{sent / dt:,.0f} ev/s {nbytes / 1e6 / dt:.1f} MB/s")

        try:
            stats = send(progress)
        except EventDecodeError as err:
            raise _fail(f"invalid event, not sent: {err}") from None
        except (KafkaError, SyncKafkaError, OSError, ValueError) as err:
            raise _fail(f"{type(err).__name__}: {err}") from None
    console.print(f"sent [b]{stats.count}[/b] {label} events, {stats.nbytes / 1e6:.2f} MB in {stats.seconds:.2f}s: "
                  f"[b]{stats.events_per_s:,.0f}[/b] events/s, {stats.mb_per_s:.2f} MB/s")


@produce_app.command("text")
def produce_text(ctx: typer.Context,
                 texts: Annotated[list[str] | None, typer.Argument(help="Texts, one event each.")] = None,
                 file: Annotated[Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                                           help="A file of lines, one event per line.")] = None,
                 user: Annotated[str | None, typer.Option("--user", help="user_id of every event.")] = None,
                 item: Annotated[str | None, typer.Option("--item", help="item_id (also the key).")] = None,
                 count: Annotated[int, typer.Option("--count", "-n", min=1, help="Send the texts N times.")] = 1,
                 topic: TopicOpt = None, bootstrap: Bootstrap = None) -> None:
    """Send [b]text.v1[/b] events, keyed by item_id (or event_id).

    Examples: infertide produce text "loved it" "meh" --user u1;
    infertide produce text --file reviews.txt --count 100
    """
    from infertide.produce import produce_texts

    items = list(texts or [])
    if file is not None:
        items += file.read_text().splitlines()
    items = [t for t in items if t.strip()]
    if not items:
        raise _fail("no text given: pass TEXT arguments or --file FILE", 2)
    topology = topology_from(ctx, bootstrap)
    _run_producer("text", len(items) * count, lambda p: produce_texts(
        topology, items, topic=topic, user_id=user, item_id=item, repeat=count, progress=p))


@produce_app.command("image")
def produce_image(ctx: typer.Context,
                  paths: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
                  uri: Annotated[bool, typer.Option("--uri", help="Send file:// references, not inline data.")] = False,
                  user: Annotated[str | None, typer.Option("--user", help="user_id of every event.")] = None,
                  topic: TopicOpt = None, bootstrap: Bootstrap = None) -> None:
    """Send one [b]image.v1[/b] event per image (inline base64, or file:// with --uri), keyed by file name.

    Examples: infertide produce image cat.jpg photos/; infertide produce image photos/ --uri
    """
    from infertide.produce import image_paths, produce_images

    try:
        files = image_paths(paths)
    except FileNotFoundError as err:
        raise _fail(str(err), 2) from None
    topology = topology_from(ctx, bootstrap)
    _run_producer("image", len(files), lambda p: produce_images(
        topology, files, topic=topic, uri=uri, user_id=user, progress=p))


@produce_app.command("video")
def produce_video_cmd(ctx: typer.Context,
                      path: Annotated[Path, typer.Argument(exists=True, help="A video file or a folder of frames.")],
                      fps: Annotated[float | None, typer.Option(min=0.001, help="Sample at most F frames/s.")] = None,
                      stream_id: Annotated[str | None, typer.Option(help="Stream id and key (default: name).")] = None,
                      source_fps: Annotated[float, typer.Option(help="Frame rate of a frame folder.")] = 30.0,
                      max_frames: Annotated[int | None, typer.Option(min=1, help="Stop after N frames.")] = None,
                      user: Annotated[str | None, typer.Option("--user", help="user_id of every event.")] = None,
                      topic: TopicOpt = None, bootstrap: Bootstrap = None) -> None:
    """Send a video as [b]video_frame.v1[/b] events (JPEG frames, frame_index/pts_ms), keyed by stream_id.

    Examples: infertide produce video clip.mp4 --fps 5; infertide produce video frames/ --stream-id cam1
    """
    from infertide.produce import produce_video, video_frame_count

    topology = topology_from(ctx, bootstrap)
    total = video_frame_count(path)
    if total is not None and fps is None and max_frames is not None:
        total = min(total, max_frames)
    elif fps is not None:
        total = None  # the sampled count is known only once the stream's rate is read
    _run_producer("video", total, lambda p: produce_video(
        topology, path, topic=topic, stream_id=stream_id, fps=fps, source_fps=source_fps, max_frames=max_frames,
        user_id=user, progress=p))


# ---------------------------------------------------------------- tail
@app.command("tail")
def tail(ctx: typer.Context, topic: Annotated[str, typer.Argument(help="Topic name or alias (text, dlq...).")],
         from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the earliest offset.")] = False,
         max: Annotated[int | None, typer.Option("--max", min=1, help="Exit after N records.")] = None,
         timeout: Annotated[float, typer.Option("--timeout", help="Exit after S seconds with no record.")] = 10.0,
         raw: Annotated[bool, typer.Option("--raw", help="One JSON object per line on stdout: the event.")] = False,
         bootstrap: Bootstrap = None) -> None:
    """Print a topic's records, decoded with the codec when the config knows the topic's schema.

    Records that fail to decode are reported on stderr (with the field and reason).

    Examples: infertide tail events.text --from-beginning --max 10;
    infertide tail inference.sentiment --raw | jq .label
    """
    import asyncio

    import orjson
    from aiokafka.errors import KafkaError

    from infertide.tail import atail

    topology = topology_from(ctx, bootstrap)
    out = sys.stdout.buffer

    async def run() -> int:
        n = 0
        async for rec in atail(topology, topic, from_beginning=from_beginning, max_records=max,
                               idle_timeout_s=timeout):
            n += 1
            where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
            if rec.error is not None:
                err_console.print(f"[red]{where} undecodable:[/red] {rec.error}")
                continue
            if raw:
                out.write(orjson.dumps(rec.as_json()) + b"\n")
                continue
            key = rec.key.decode("utf-8", "replace") if rec.key else "-"
            console.print(f"[dim]{where} key={key}[/dim]", JSON.from_data(_short(rec.as_json()), indent=None))
        out.flush()
        return n

    try:
        n = asyncio.run(run())
    except (LookupError, KafkaError) as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        return
    if not raw:
        err_console.print(f"[dim]{n} records[/dim]")


def _short(value: object) -> object:
    """Long strings (inline images) cut for the eye; ``--raw`` prints them whole."""
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, str) and len(value) > 120:
        return f"{value[:60]}...({len(value)} chars)"
    return value


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


# ---------------------------------------------------------------- more commands
# Other modules add their commands here, e.g. `from infertide import commands_up  # noqa: E402,F401`,
# where commands_up does `from infertide.cli import app` and `@app.command("up")`.
from infertide import commands_run  # noqa: E402,F401
from infertide import commands_up  # noqa: E402,F401
from infertide import commands_bench  # noqa: E402,F401
from infertide import commands_demo  # noqa: E402,F401
from infertide import commands_models  # noqa: E402,F401
