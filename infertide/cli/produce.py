"""``infertide produce text / image / video``: send input events, validated by the codec first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infertide.cli.options import Bootstrap, ConfigOpt, TopicOpt, console, err_console, fail, topology_from

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Send input events (validated by the codec first).")


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
            raise fail(f"invalid event, not sent: {err}") from None
        except (KafkaError, SyncKafkaError, OSError, ValueError) as err:
            raise fail(f"{type(err).__name__}: {err}") from None
    console.print(f"sent [b]{stats.count}[/b] {label} events, {stats.nbytes / 1e6:.2f} MB in {stats.seconds:.2f}s: "
                  f"[b]{stats.events_per_s:,.0f}[/b] events/s, {stats.mb_per_s:.2f} MB/s")


@app.command("text")
def produce_text(ctx: typer.Context,
                 texts: Annotated[list[str] | None, typer.Argument(help="Texts, one event each.")] = None,
                 file: Annotated[Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                                           help="A file of lines, one event per line.")] = None,
                 user: Annotated[str | None, typer.Option("--user", help="user_id of every event.")] = None,
                 item: Annotated[str | None, typer.Option("--item", help="item_id (also the key).")] = None,
                 count: Annotated[int, typer.Option("--count", "-n", min=1, help="Send the texts N times.")] = 1,
                 topic: TopicOpt = None, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Send [b]text.v1[/b] events, keyed by item_id (or event_id).

    Examples: infertide produce text "loved it" "meh" --user u1;
    infertide produce text --file reviews.txt --count 100
    """
    from infertide.clients.produce import produce_texts

    items = list(texts or [])
    if file is not None:
        items += file.read_text().splitlines()
    items = [t for t in items if t.strip()]
    if not items:
        raise fail("no text given: pass TEXT arguments or --file FILE", 2)
    topology = topology_from(ctx, bootstrap, config)
    _run_producer("text", len(items) * count, lambda p: produce_texts(
        topology, items, topic=topic, user_id=user, item_id=item, repeat=count, progress=p))


@app.command("image")
def produce_image(ctx: typer.Context,
                  paths: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
                  uri: Annotated[bool, typer.Option("--uri", help="Send file:// references, not inline data.")] = False,
                  user: Annotated[str | None, typer.Option("--user", help="user_id of every event.")] = None,
                  topic: TopicOpt = None, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Send one [b]image.v1[/b] event per image (inline base64, or file:// with --uri), keyed by file name.

    Examples: infertide produce image cat.jpg photos/; infertide produce image photos/ --uri
    """
    from infertide.clients.produce import image_paths, produce_images

    try:
        files = image_paths(paths)
    except FileNotFoundError as err:
        raise fail(str(err), 2) from None
    topology = topology_from(ctx, bootstrap, config)
    _run_producer("image", len(files), lambda p: produce_images(
        topology, files, topic=topic, uri=uri, user_id=user, progress=p))


@app.command("video")
def produce_video_cmd(ctx: typer.Context,
                      path: Annotated[Path, typer.Argument(exists=True, help="A video file or a folder of frames.")],
                      fps: Annotated[float | None, typer.Option(min=0.001, help="Sample at most F frames/s.")] = None,
                      stream_id: Annotated[str | None, typer.Option(help="Stream id and key (default: name).")] = None,
                      source_fps: Annotated[float, typer.Option(help="Frame rate of a frame folder.")] = 30.0,
                      max_frames: Annotated[int | None, typer.Option(min=1, help="Stop after N frames.")] = None,
                      user: Annotated[str | None, typer.Option("--user", help="user_id of every event.")] = None,
                      topic: TopicOpt = None, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Send a video as [b]video_frame.v1[/b] events (JPEG frames, frame_index/pts_ms), keyed by stream_id.

    Examples: infertide produce video clip.mp4 --fps 5; infertide produce video frames/ --stream-id cam1
    """
    from infertide.clients.produce import produce_video, video_frame_count

    topology = topology_from(ctx, bootstrap, config)
    total = video_frame_count(path)
    if total is not None and fps is None and max_frames is not None:
        total = min(total, max_frames)
    elif fps is not None:
        total = None  # the sampled count is known only once the stream's rate is read
    _run_producer("video", total, lambda p: produce_video(
        topology, path, topic=topic, stream_id=stream_id, fps=fps, source_fps=source_fps, max_frames=max_frames,
        user_id=user, progress=p))


